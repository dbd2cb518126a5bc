"""A streamed epoch from memory-mapped `.npy` files against the in-memory path of
`dl.train.fit`, per epoch, on the same model, data and batch size.

- in memory: `fit(state, ..., (x, y))`: the data checked once and kept on the device,
  batches gathered there, many steps per compiled call.
- streamed: `fit(state, ..., dl.data.stream.array_source(np.load(path, mmap_mode="r"),
  ...))`: each epoch a permutation is drawn on the host, each batch read from the
  mapped file (rows in file order), checked, and placed on the device by the prefetch
  thread while the step before it runs.

Each timing is one fresh `fit` of 4 epochs, the median of its epochs 2-4 (warm, compile
apart); the two sides alternate, and the row reports medians over repeats and the ratio
of throughputs (in-memory epoch time / streamed epoch time; the target is >= 0.8).

    python experiments/benchmarks/stream.py [--quick]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import optax
from common import interleaved, quick, save

from dl import data, models, train
from dl.data.stream import array_source

CASES = {
    "mlp-128 mnist5k": dict(
        data="mnist5k", model=lambda c: models.get_model("mlp", c, widths=(128,)), batch=64
    ),
    "mlp-512x2 mnist5k": dict(
        data="mnist5k", model=lambda c: models.get_model("mlp", c, widths=(512, 512)), batch=128
    ),
    "lenet5 mnist5k": dict(
        data="mnist5k", model=lambda c: models.get_model("lenet5", c, kernels="cpu"), batch=64
    ),
}


def timed_fit(model, train_data, batch, steps_per_call):
    tx = optax.adam(1e-3)
    x_shape = data.load("mnist5k").input_shape
    state = train.create_state(model, tx, x_shape, seed=0)
    step, evals = train.make_steps(model, tx)

    def epoch() -> float:
        res = train.fit(
            state,
            step,
            evals,
            train_data,
            epochs=4,
            batch_size=batch,
            progress=False,
            steps_per_call=steps_per_call,
            kernels="cpu",
        )
        return float(np.median([h["epoch_time_s"] for h in res.history[1:]]))

    return epoch


def main() -> None:
    repeats = 3 if quick() else 7
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in CASES.items():
            ds = data.load(case["data"])
            x, y = ds.x_train.astype(np.float32), ds.y_train.astype(np.int32)
            np.save(Path(tmp) / "x.npy", x)
            np.save(Path(tmp) / "y.npy", y)
            xm = np.load(Path(tmp) / "x.npy", mmap_mode="r")
            ym = np.load(Path(tmp) / "y.npy", mmap_mode="r")
            model, b = case["model"](ds.num_classes), case["batch"]
            spc = train.default_steps_per_call(model)
            res = interleaved(
                {
                    "memory": timed_fit(model, (x, y), b, spc),
                    "stream": timed_fit(model, array_source(xm, ym, b, seed=0), b, spc),
                },
                repeats,
            )
            med = {k: v["median_s"] for k, v in res.items()}
            rows.append(
                {
                    "model": name,
                    "data": f"{case['data']} ({len(x)} examples), batch {b}, "
                    f"{len(x) // b} steps/epoch",
                    "repeats": repeats,
                    "memory_epoch_ms": 1e3 * med["memory"],
                    "stream_epoch_ms": 1e3 * med["stream"],
                    "stream_throughput_ratio": med["memory"] / med["stream"],
                    **{f"{k}_all_ms": [1e3 * t for t in v["all_s"]] for k, v in res.items()},
                }
            )
            print(name, f"streamed/in-memory throughput {rows[-1]['stream_throughput_ratio']:.2f}")
    save(
        "stream",
        rows,
        notes="Per-epoch times, each the median of epochs 2-4 of a fresh fit; "
        "ratio = in-memory time / streamed time (target >= 0.8).",
    )


if __name__ == "__main__":
    main()
