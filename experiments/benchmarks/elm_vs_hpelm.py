"""ELM fit time of `dl.elm` against hpelm (Akusok et al. 2015) at equal accuracy.

Both fit the same model: hpelm receives OUR random hidden layer (its sigmoid is
1 / (1 + exp(XW + B)), so it gets -W and -B) and our standardised inputs, so the fits
differ only in how H^T H is formed and solved. Pairs: float64 against hpelm's "double"
(its default), float32 against its "single", and our float32 against its default. The
accuracy of each side is reported, so "equal accuracy" can be checked.

    python experiments/benchmarks/elm_vs_hpelm.py [--quick]
"""

from __future__ import annotations

import time

import numpy as np
from common import interleaved, quick, save

from dl import baselines, data, elm


def _one_width(width, x, y, xt, yt, ridge, repeats) -> list[dict]:
    import hpelm

    rows = []
    models = {d: elm.ELMClassifier(width, ridge, seed=0, dtype=d) for d in ("float64", "float32")}
    for m in models.values():
        m.fit(x, y)  # compile
    ref = models["float64"]
    xs, xts = (x - ref.mean_) / ref.std_, (xt - ref.mean_) / ref.std_
    w, b = (np.asarray(a, np.float64) for a in (ref.hidden_.weights, ref.hidden_.biases))
    hp_models = {}

    def ours(dtype):
        def run() -> float:
            models[dtype].fit(x, y)
            return models[dtype].fit_time_s_

        return run

    def theirs(precision):
        def run() -> float:
            h = hpelm.ELM(x.shape[1], 10, precision=precision, norm=ridge)
            h.add_neurons(width, "sigm", W=-w, B=-b)
            t0 = time.perf_counter()
            h.train(xs, np.eye(10)[y], "c")
            hp_models[precision] = h
            return time.perf_counter() - t0

        return run

    res = interleaved(
        {
            "ours_float64": ours("float64"),
            "ours_float32": ours("float32"),
            "hpelm_double": theirs("double"),
            "hpelm_single": theirs("single"),
        },
        repeats,
    )
    acc = {f"ours_{d}": models[d].score(xt, yt) for d in models}
    for p, h in hp_models.items():
        acc[f"hpelm_{p}"] = float(np.mean(h.predict(xts).argmax(1) == yt))
    med = {k: v["median_s"] for k, v in res.items()}
    for ours_key, hp_key in (
        ("ours_float64", "hpelm_double"),
        ("ours_float32", "hpelm_single"),
        ("ours_float32", "hpelm_double"),
    ):
        rows.append(
            {
                "width": width,
                "data": f"mnist5k, {len(x)} train x {x.shape[1]} features, ridge {ridge}",
                "ours": ours_key,
                "hpelm": hp_key,
                "ours_s": med[ours_key],
                "hpelm_s": med[hp_key],
                "speedup_vs_hpelm": med[hp_key] / med[ours_key],
                "ours_accuracy": acc[ours_key],
                "hpelm_accuracy": acc[hp_key],
                "repeats": repeats,
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    repeats = 3 if quick() else 7
    ds = data.load("mnist5k")
    x, y = baselines.flatten_inputs(ds.x_train), ds.y_train
    xt, yt = baselines.flatten_inputs(ds.x_test), ds.y_test
    ridge = 1e-2
    rows = []
    for width in (1000,) if quick() else (1000, 2000):
        rows += _one_width(width, x, y, xt, yt, ridge, repeats)
    save("elm_vs_hpelm", rows, notes="Fit time only (hidden layer, Gram, solve).")


if __name__ == "__main__":
    main()
