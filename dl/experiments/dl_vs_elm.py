"""Deep learning versus Extreme Learning Machines: measure the ELM claims.

The claim (source texts): "ELMs use a single hidden layer with randomly assigned
weights, solving for optimal output weights analytically in a single step. This
eliminates the iterative training loop entirely, resulting in: training speeds
100-1000x faster than deep networks; no GPU requirements; deterministic results - no
convergence issues or hyperparameter tuning."

Parts (see `run`): (a) accuracy and training time of the ELM (width and ridge by k-fold
CV), MLP, CNN and six scikit-learn baselines over several seeds; (b) deep/ELM time
ratios at the recipe's epoch budget and at matched accuracy; (c) width scaling with a
CV-chosen ridge and the minimum-norm (pseudo-inverse) curve; (d) data scaling on
mnist1d; (e) determinism and the spread over seeds and ridge values; (f) CPU fit time
and its growth in N and L, and accelerator time where one is present. Every verdict is
computed from the numbers and can come out either way.
"""

from __future__ import annotations

import functools
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dl import baselines, data, elm
from dl.experiments.common import Timer, status, verdict, verdict_table, write_results

NAME = "dl_vs_elm"
TABULAR = ("iris", "wine", "breast_cancer")
DATASETS = (*TABULAR, "digits", "mnist5k", "mnist1d")
CNN_DATASETS = ("digits", "mnist5k", "mnist1d")
DETERMINISTIC_BASELINES = ("logreg", "linear_svm", "rbf_svm", "knn")

SETTINGS = {
    "full": dict(
        seeds=5,
        widths=(64, 128, 256, 512, 1024, 2048, 4096),
        ridges=tuple(10.0**k for k in range(-6, 3)),
        folds=5,
        deep_epochs={},  # the recipes' epochs
        width_scan_n=1000,
        width_scan=(64, 128, 256, 512, 768, 1000, 1250, 1500, 2048, 4096, 8192),
        data_sizes=(1000, 2000, 4000, 8000, 16000, 32000, 64000),
        data_width=2048,
    ),
    "quick": dict(
        seeds=3,
        widths=(128, 512, 1024),
        ridges=tuple(10.0**k for k in range(-4, 3)),
        folds=3,
        deep_epochs={
            ("mlp", "mnist5k"): 10,
            ("cnn", "mnist5k"): 3,
            ("mlp", "mnist1d"): 20,
            ("cnn", "mnist1d"): 20,
            ("mlp", "digits"): 20,
            ("cnn", "digits"): 10,
            **{("mlp", t): 40 for t in TABULAR},
        },
        width_scan_n=400,
        width_scan=(32, 64, 128, 256, 400, 512, 1024, 2048),
        data_sizes=(1000, 2000, 4000),
        data_width=1024,
    ),
}


def _elm_score(width, ridge, seed, train, test) -> float:
    model = elm.ELMClassifier(width, ridge, seed=seed).fit(
        baselines.flatten_inputs(train[0]), train[1]
    )
    return model.score(baselines.flatten_inputs(test[0]), test[1])


def _part_a(s, timer) -> tuple[list[dict], dict, dict]:
    """Accuracy and training time of every model on every dataset and seed. An ELM solve
    that fails (`dl.elm` raises FloatingPointError on NaN/Inf weights) is recorded in
    `solves["failed"]`, not hidden: it is what the "no convergence issues" verdict counts."""
    rows: list[dict] = []
    ridge_spread: dict[str, Any] = {}
    solves: dict[str, Any] = {"total": 0, "failed": []}

    def attempt(what, fn):
        solves["total"] += 1
        try:
            return fn()
        except FloatingPointError as e:
            solves["failed"].append({"fit": what, "error": str(e)})
            return None

    for name in DATASETS:
        ds = data.load(name)
        train, test = ds.train, ds.test
        for seed in range(s["seeds"]):
            with timer(f"elm/{name}"):
                t0 = time.perf_counter()
                sel = elm.select(
                    baselines.flatten_inputs(ds.x_train),
                    ds.y_train,
                    widths=s["widths"],
                    ridges=s["ridges"],
                    folds=s["folds"],
                    seed=seed,
                )
                cv_time = time.perf_counter() - t0
                model = elm.ELMClassifier(sel["width"], sel["ridge"], seed=seed)
                r = attempt(
                    f"{name} seed {seed}",
                    functools.partial(
                        baselines.run, model, "elm", train, test, dataset=name, seed=seed
                    ),
                )
                if r is not None:
                    r.extra.update(
                        cv_time_s=cv_time, cv_accuracy=sel["cv_accuracy"], solver=model.solver_
                    )
                    rows.append(r.to_dict())
                if seed == 0:  # (e): test accuracy over the whole ridge grid at the CV width
                    accs = [
                        attempt(
                            f"{name} ridge {lam:g}",
                            functools.partial(_elm_score, sel["width"], lam, seed, train, test),
                        )
                        for lam in s["ridges"]
                    ]
                    ridge_spread[name] = {
                        "width": sel["width"],
                        "ridges": list(s["ridges"]),
                        "accuracy": accs,
                    }
            for base in baselines.BASELINES:
                if base in DETERMINISTIC_BASELINES and seed > 0:
                    continue
                with timer(f"baselines/{name}"):
                    est = baselines.make_baseline(base, seed=seed)
                    rows.append(
                        baselines.run(est, base, train, test, dataset=name, seed=seed).to_dict()
                    )
            for deep in ("mlp", "cnn") if name in CNN_DATASETS else ("mlp",):
                with timer(f"{deep}/{name}"):
                    epochs = s["deep_epochs"].get((deep, name))
                    clf = baselines.DeepClassifier(
                        deep, name, eval_data=test, seed=seed, epochs=epochs
                    )
                    rows.append(
                        baselines.run(
                            clf, deep, train, test, dataset=name, seed=seed, flatten=False
                        ).to_dict()
                    )
    return rows, ridge_spread, solves


def _summary(rows) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        out.setdefault(r["dataset"], {}).setdefault(r["model"], {"acc": [], "time": []})
        out[r["dataset"]][r["model"]]["acc"].append(r["accuracy"])
        out[r["dataset"]][r["model"]]["time"].append(r["train_time_s"])
    return {
        d: {
            m: {
                "accuracy_mean": float(np.mean(v["acc"])),
                "accuracy_std": float(np.std(v["acc"])),
                "train_time_median_s": float(np.median(v["time"])),
                "runs": len(v["acc"]),
            }
            for m, v in models.items()
        }
        for d, models in out.items()
    }


def _part_b(rows) -> list[dict]:
    """Deep/ELM training-time ratios, per dataset, seed and deep model."""
    elm_rows = {(r["dataset"], r["seed"]): r for r in rows if r["model"] == "elm"}
    out = []
    for r in rows:
        if r["model"] not in ("mlp", "cnn"):
            continue
        e = elm_rows.get((r["dataset"], r["seed"]))
        if e is None:  # that ELM solve failed (counted by the convergence verdict)
            continue
        accs = r["extra"]["test_accuracy_by_epoch"]
        times = r["extra"]["epoch_time_s"]
        reach = next((t for a, t in zip(accs, times, strict=True) if a >= e["accuracy"]), None)
        out.append(
            {
                "dataset": r["dataset"],
                "seed": r["seed"],
                "deep": r["model"],
                "elm_accuracy": e["accuracy"],
                "deep_accuracy": r["accuracy"],
                "elm_fit_s": e["train_time_s"],
                "deep_fit_s": r["train_time_s"],
                "ratio_fixed_budget": r["train_time_s"] / e["train_time_s"],
                "deep_time_to_elm_accuracy_s": reach,
                "ratio_matched_accuracy": None if reach is None else reach / e["train_time_s"],
            }
        )
    return out


def _part_c(s, seed: int = 0) -> dict[str, Any]:
    """Width scan on n mnist1d training examples: CV(LOO)-chosen ridge, and the
    minimum-norm least-squares (pseudo-inverse) solution whose test error peaks near
    width = n (the interpolation threshold)."""
    ds = data.load("mnist1d")
    n = s["width_scan_n"]
    x, y = baselines.flatten_inputs(ds.x_train[:n]), ds.y_train[:n]
    xt, yt = baselines.flatten_inputs(ds.x_test), ds.y_test
    mean, std = x.mean(0), x.std(0) + 1e-8
    x, xt = (x - mean) / std, (xt - mean) / std
    t = np.eye(10)[y]
    ridges = np.asarray(s["ridges"])
    rows = []
    for width in s["width_scan"]:
        hidden = elm.init_hidden(jax.random.key(seed), x.shape[1], width)
        h = np.asarray(elm.hidden_features(hidden, x), np.float64)
        ht = np.asarray(elm.hidden_features(hidden, xt), np.float64)
        path = elm.ridge_path(h, t, ridges)
        lam = float(ridges[int(np.argmin(path["loo_error"]))])
        beta = elm.solve_primal(h.T @ h, h.T @ t, lam) if width <= n else elm.solve_dual(h, t, lam)
        beta_pinv = np.linalg.pinv(h) @ t  # minimum-norm interpolating solution when width >= n
        rows.append(
            {
                "width": width,
                "ridge": lam,
                "accuracy": float(np.mean(np.argmax(ht @ beta, 1) == yt)),
                "pinv_accuracy": float(np.mean(np.argmax(ht @ beta_pinv, 1) == yt)),
                "pinv_test_mse": float(np.mean((ht @ beta_pinv - np.eye(10)[yt]) ** 2)),
            }
        )
    return {"n": n, "rows": rows}


def _part_d(s, seed: int = 0) -> dict[str, Any]:
    """Data scaling on mnist1d: ELM, MLP, CNN, logistic regression, random forest."""
    rows = []
    for size in s["data_sizes"]:
        ds = data.load("mnist1d", num_samples=int(size / 0.8))
        train, test = ds.train, ds.test
        models: list[tuple[str, Any, bool]] = [
            ("elm", elm.ELMClassifier(s["data_width"], 1e-1, seed=seed), True),
            ("logreg", baselines.make_baseline("logreg", seed=seed), True),
            ("forest", baselines.make_baseline("forest", seed=seed), True),
        ]
        for deep in ("mlp", "cnn"):
            epochs = s["deep_epochs"].get((deep, "mnist1d"))
            models.append(
                (deep, baselines.DeepClassifier(deep, "mnist1d", seed=seed, epochs=epochs), False)
            )
        for name, est, flat in models:
            r = baselines.run(
                est, name, train, test, dataset=f"mnist1d-{size}", seed=seed, flatten=flat
            )
            rows.append(
                {
                    "n": len(train[0]),
                    "model": name,
                    "accuracy": r.accuracy,
                    "train_time_s": r.train_time_s,
                }
            )
    return {"rows": rows}


def _part_e(seed: int = 0) -> dict[str, Any]:
    """Determinism: the same key twice gives bitwise-identical output weights."""
    out = {}
    for name in DATASETS:
        ds = data.load(name)
        a = elm.ELMClassifier(512, 1e-2, seed=seed).fit(
            baselines.flatten_inputs(ds.x_train), ds.y_train
        )
        b = elm.ELMClassifier(512, 1e-2, seed=seed).fit(
            baselines.flatten_inputs(ds.x_train), ds.y_train
        )
        out[name] = a.beta_.tobytes() == b.beta_.tobytes()
    return out


def _median_fit_time(model, x, y, repeats: int = 3) -> float:
    """Median `fit_time_s_` of `repeats` fits after one warm-up fit (compilation)."""
    model.fit(x, y)
    times = []
    for _ in range(repeats):
        model.fit(x, y)
        times.append(model.fit_time_s_)
    return float(np.median(times))


def _device_timing(width: int = 1024, seed: int = 0) -> dict[str, float]:
    """Median ELM fit time on mnist5k on the CPU and, where present, on an accelerator
    (the same code, placed with `jax.default_device`)."""
    ds = data.load("mnist5k")
    x, y = baselines.flatten_inputs(ds.x_train), ds.y_train
    out = {}
    for platform in ("cpu", "gpu", "tpu"):
        try:
            device = jax.devices(platform)[0]
        except RuntimeError:
            continue  # no such backend here
        with jax.default_device(device):
            model = elm.ELMClassifier(width, 1e-1, seed=seed, solver="primal")
            out[platform] = _median_fit_time(model, x, y)
    return out


def _part_f(d) -> dict[str, Any]:
    """Fit-time growth: log-log slope of the ELM's (warm) fit time in N (part d), and the
    fit time per platform present."""
    pts = [(r["n"], r["train_time_s"]) for r in d["rows"] if r["model"] == "elm"]
    slope_n = None
    if len(pts) > 1:
        xs, ts = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
        slope_n = float(np.polyfit(xs, ts, 1)[0])
    platforms = _device_timing()
    return {
        "backend": jax.default_backend(),
        "elm_time_vs_n": pts,
        "slope_time_in_n": slope_n,
        "elm_fit_s_by_platform_mnist5k_w1024": platforms,
        "accelerator": any(p != "cpu" for p in platforms),
    }


def _width_timing(s, seed: int = 0) -> list[tuple[int, float]]:
    ds = data.load("mnist5k")
    x, y = baselines.flatten_inputs(ds.x_train), ds.y_train
    out = []
    for width in s["widths"]:
        model = elm.ELMClassifier(width, 1e-1, seed=seed, solver="primal")
        out.append((width, _median_fit_time(model, x, y)))
    return out


def _figures(out: Path, summary, c, d, rows) -> list[str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    names = []
    fig = Figure(figsize=(13, 7.5), dpi=100)
    FigureCanvasAgg(fig)
    all_models = list(dict.fromkeys(m for d in DATASETS for m in summary[d]))
    colour = {m: f"C{i}" for i, m in enumerate(all_models)}
    marker = {"elm": "*", "mlp": "s", "cnn": "D"}
    for i, ds in enumerate(DATASETS):
        ax = fig.add_subplot(2, 3, i + 1)
        for model, v in summary[ds].items():
            ax.scatter(
                v["train_time_median_s"],
                v["accuracy_mean"],
                label=model,
                s=60 if model in marker else 25,
                c=colour[model],
                marker=marker.get(model, "o"),
            )
        ax.set_xscale("log")
        ax.set_title(ds)
        ax.set_xlabel("training time (s, median)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], ls="", marker=marker.get(m, "o"), color=colour[m], label=m)
        for m in all_models
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(all_models), fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out / "accuracy_vs_time.png")
    names.append("accuracy_vs_time.png")

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    widths = [r["width"] for r in c["rows"]]
    ax.plot(widths, [r["accuracy"] for r in c["rows"]], "o-", label="ridge chosen by LOO")
    ax.plot(
        widths, [r["pinv_accuracy"] for r in c["rows"]], "s-", label="pseudo-inverse (min norm)"
    )
    ax.axvline(c["n"], color="grey", ls="--", label=f"width = N = {c['n']}")
    ax.set_xscale("log")
    ax.set_xlabel("hidden units")
    ax.set_ylabel("test accuracy (mnist1d)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(widths, [r["pinv_test_mse"] for r in c["rows"]], "s-", color="C1")
    ax.axvline(c["n"], color="grey", ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("hidden units")
    ax.set_ylabel("pseudo-inverse test MSE")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "width_curve.png")
    names.append("width_curve.png")

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    for k, key in enumerate(("accuracy", "train_time_s")):
        ax = fig.add_subplot(1, 2, k + 1)
        for model in dict.fromkeys(r["model"] for r in d["rows"]):
            pts = [(r["n"], r[key]) for r in d["rows"] if r["model"] == model]
            ax.plot(*zip(*pts, strict=True), "o-", label=model)
        ax.set_xscale("log")
        if key == "train_time_s":
            ax.set_yscale("log")
        ax.set_xlabel("training examples (mnist1d)")
        ax.set_ylabel(key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "data_curve.png")
    names.append("data_curve.png")
    return names


def _hpelm(seed: int = 0) -> dict[str, Any]:
    """Side by side with hpelm on digits at the same width and ridge (when installed).

    hpelm gets OUR hidden layer (its sigmoid is 1 / (1 + exp(XW + B)), so it receives -W
    and -B) and our standardised inputs, so the two differ only in the solve; hpelm with
    its own random layer is reported too.
    """
    try:
        import hpelm
    except ImportError:
        return {"installed": False}

    ds = data.load("digits")
    x, y, xt, yt = (
        baselines.flatten_inputs(ds.x_train),
        ds.y_train,
        baselines.flatten_inputs(ds.x_test),
        ds.y_test,
    )
    width, ridge = 1000, 1e-2
    ours = elm.ELMClassifier(width, ridge, seed=seed)
    ours.fit(x, y)  # compile once
    xs, xts = (x - ours.mean_) / ours.std_, (xt - ours.mean_) / ours.std_
    w, b = ours.hidden_.weights.astype(np.float64), ours.hidden_.biases.astype(np.float64)
    t_ours, t_hp = [], []
    for _ in range(5):
        ours.fit(x, y)
        t_ours.append(ours.fit_time_s_)
        same = hpelm.ELM(x.shape[1], 10, precision="double", norm=ridge)
        same.add_neurons(width, "sigm", W=-w, B=-b)
        t0 = time.perf_counter()
        same.train(xs, np.eye(10)[y], "c")
        t_hp.append(time.perf_counter() - t0)
    own = hpelm.ELM(x.shape[1], 10, precision="double", norm=ridge)
    own.add_neurons(width, "sigm")
    own.train(xs, np.eye(10)[y], "c")
    pred_same = same.predict(xts).argmax(1)
    return {
        "installed": True,
        "width": width,
        "ridge": ridge,
        "ours_accuracy": ours.score(xt, yt),
        "hpelm_accuracy": float(np.mean(pred_same == yt)),
        "hpelm_own_layer_accuracy": float(np.mean(own.predict(xts).argmax(1) == yt)),
        "same_predictions": float(np.mean(pred_same == ours.predict(xt))),
        "ours_fit_s_median": statistics.median(t_ours),
        "hpelm_fit_s_median": statistics.median(t_hp),
        "speed_ratio_hpelm_over_ours": statistics.median(t_hp) / statistics.median(t_ours),
    }


def run(out: str | Path, *, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run the experiment and write results.json, report.md and figures to `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = dict(SETTINGS["quick" if quick else "full"])
    timer = Timer(log=None if quick else NAME)  # full runs report progress
    with timer("a"):
        rows, ridge_spread, solves = _part_a(s, timer)
    summary = _summary(rows)
    ratios = _part_b(rows)
    with timer("c"):
        c = _part_c(s, seed)
    with timer("d"):
        d = _part_d(s, seed)
    with timer("e"):
        e = _part_e(seed)
    with timer("f"):
        f = _part_f(d)
        f["elm_time_vs_width_mnist5k"] = _width_timing(s, seed)
    with timer("hpelm"):
        hp = _hpelm(seed)

    # ---- verdicts ------------------------------------------------------------------
    verdicts = []
    fixed = [r["ratio_fixed_budget"] for r in ratios]
    matched = [r["ratio_matched_accuracy"] for r in ratios]
    reached = [m for m in matched if m is not None]
    verdicts.append(
        verdict(
            "ELM training is 100-1000x faster than deep networks (fixed epoch budget)",
            "median deep/ELM training-time ratio >= 100",
            f"median {statistics.median(fixed):.1f}x (range {min(fixed):.1f}-{max(fixed):.1f}x, "
            f"{len(fixed)} runs)",
            statistics.median(fixed) >= 100,
        )
    )
    verdicts.append(
        verdict(
            "ELM training is 100-1000x faster than deep networks (matched accuracy)",
            "median time for the deep model to first reach the ELM's test accuracy / ELM fit "
            "time >= 100 (runs that never reach it count as faster ELM)",
            f"median {statistics.median(reached):.1f}x over {len(reached)} runs that reached it; "
            f"{len(matched) - len(reached)} of {len(matched)} never did"
            if reached
            else f"no deep run reached the ELM's accuracy ({len(matched)} runs)",
            (statistics.median(reached) >= 100) if reached else True,
        )
    )
    biggest = max(r["train_time_s"] for r in rows if r["model"] == "elm")
    plat = f["elm_fit_s_by_platform_mnist5k_w1024"]
    verdicts.append(
        verdict(
            "ELMs need no GPU",
            "the slowest ELM fit of part (a) (CV-chosen width) takes < 10 s on the CPU",
            f"{biggest:.2f} s; mnist5k at width 1024: "
            + ", ".join(f"{k} {v:.3f} s" for k, v in plat.items()),
            biggest < 10 if f["backend"] == "cpu" else plat["cpu"] < 10,
        )
    )
    verdicts.append(
        verdict(
            "ELM results are deterministic",
            "the same key gives bitwise-identical output weights on every dataset",
            f"{sum(e.values())}/{len(e)} datasets identical",
            all(e.values()),
        )
    )
    spreads = {
        k: 100 * (max(a) - min(a))
        for k, v in ridge_spread.items()
        if (a := [x for x in v["accuracy"] if x is not None])
    }
    verdicts.append(
        verdict(
            "ELMs need no hyperparameter tuning",
            "test accuracy varies by <= 1 point across the ridge grid at the CV-chosen width, "
            "on every dataset",
            ", ".join(f"{k} {v:.1f}" for k, v in spreads.items()) + " points",
            max(spreads.values()) <= 1.0,
        )
    )
    seed_std = {k: 100 * v["elm"]["accuracy_std"] for k, v in summary.items()}
    n_ok = solves["total"] - len(solves["failed"])
    verdicts.append(
        verdict(
            "ELMs have no convergence issues",
            "every ELM solve of part (a) (CV-chosen fits and the ridge grid) gives finite "
            "weights; `dl.elm` raises FloatingPointError otherwise, counted here as a failure. "
            "The spread over seeds is reported, not judged",
            f"{n_ok}/{solves['total']} solves finite; test-accuracy std over seeds: "
            + ", ".join(f"{k} {v:.2f}" for k, v in seed_std.items())
            + " points",
            not solves["failed"],
        )
    )
    tab_gaps = {}
    for name in TABULAR:
        best = max(
            (v["accuracy_mean"], m) for m, v in summary[name].items() if m in baselines.BASELINES
        )
        tab_gaps[name] = (100 * (best[0] - summary[name]["elm"]["accuracy_mean"]), best[1])
    verdicts.append(
        verdict(
            "On tabular data the ELM is competitive (acceptance check)",
            "ELM within 2 points of the best baseline on iris, wine, breast cancer",
            ", ".join(f"{k} {g:+.1f} vs {m}" for k, (g, m) in tab_gaps.items()),
            all(g <= 2.0 for g, _ in tab_gaps.values()),
        )
    )
    margin = 100 * (
        summary["mnist1d"]["cnn"]["accuracy_mean"] - summary["mnist1d"]["elm"]["accuracy_mean"]
    )
    verdicts.append(
        verdict(
            "On mnist1d the CNN beats the ELM (acceptance check)",
            "CNN mean test accuracy > ELM mean test accuracy",
            f"CNN {100 * summary['mnist1d']['cnn']['accuracy_mean']:.1f}% vs ELM "
            f"{100 * summary['mnist1d']['elm']['accuracy_mean']:.1f}% "
            f"(margin {margin:+.1f} points)",
            margin > 0,
        )
    )
    pinv = c["rows"]
    worst = min(pinv, key=lambda r: r["pinv_accuracy"])
    verdicts.append(
        verdict(
            "The minimum-norm ELM's test accuracy dips near width = N (interpolation threshold)",
            "the worst pseudo-inverse accuracy of the width scan lies within a factor 2 of "
            f"N = {c['n']}",
            f"worst at width {worst['width']} ({100 * worst['pinv_accuracy']:.1f}%)",
            c["n"] / 2 <= worst["width"] <= 2 * c["n"],
        )
    )
    hpelm_claim = (
        "Our ELM matches hpelm (side-by-side check)",
        "accuracy within 0.5 points of hpelm at the same width and ridge",
    )
    if hp.get("installed"):
        verdicts.append(
            verdict(
                *hpelm_claim,
                f"ours {100 * hp['ours_accuracy']:.1f}% vs hpelm "
                f"{100 * hp['hpelm_accuracy']:.1f}%; "
                f"hpelm/ours fit time {hp['speed_ratio_hpelm_over_ours']:.2f}x",
                abs(hp["ours_accuracy"] - hp["hpelm_accuracy"]) <= 0.005,
            )
        )
    else:  # reported, not dropped: `pip install hpelm` (or the test extras) measures it
        verdicts.append(verdict(*hpelm_claim, "hpelm is not installed (pip install hpelm)", None))

    results = {
        "experiment": NAME,
        "quick": quick,
        "settings": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items() if k != "deep_epochs"
        },
        "deep_epochs": {f"{m}/{d}": e_ for (m, d), e_ in s["deep_epochs"].items()},
        "runs": rows,
        "summary": summary,
        "ratios": ratios,
        "ridge_spread": ridge_spread,
        "elm_solves": solves,
        "width_scan": c,
        "data_scaling": d,
        "determinism": e,
        "cost": f,
        "hpelm": hp,
        "timings_s": timer.sections,
        "verdicts": verdicts,
    }
    figures = _figures(out, summary, c, d, rows)
    results["figures"] = figures
    write_results(out, results)
    (out / "report.md").write_text(_report(results))
    return results


def _report(r) -> str:
    lines = [
        f"# Deep learning versus ELM{' (quick mode)' if r['quick'] else ''}",
        "",
        "Claim: ELMs train 100-1000x faster than deep networks, need no GPU, and are "
        "deterministic, with no convergence issues or hyperparameter tuning.",
        "",
        "## Verdicts",
        "",
        verdict_table(r["verdicts"]),
        "",
        "## Accuracy and training time (mean test accuracy +- std over seeds; median time)",
        "",
        "| dataset | model | accuracy | train time (s) | runs |",
        "|---|---|---|---|---|",
    ]
    for ds, models in r["summary"].items():
        for m, v in sorted(models.items(), key=lambda kv: -kv[1]["accuracy_mean"]):
            lines.append(
                f"| {ds} | {m} | {100 * v['accuracy_mean']:.1f} +- {100 * v['accuracy_std']:.1f} "
                f"| {v['train_time_median_s']:.3f} | {v['runs']} |"
            )
    lines += [
        "",
        "Both training times include JIT compilation (a user pays it on every new shape; "
        "for a small ELM it is most of the time). Deep times also include a test "
        "evaluation after every epoch (needed for time-to-accuracy). The ELM's time is one "
        "fit at the CV-chosen width and ridge; the CV search itself (`cv_time_s` in "
        "results.json) is not included, which favours the ELM.",
        "",
        "## Figures",
        "",
        *[f"![{f}]({f})" for f in r["figures"]],
        "",
        "## Run time of this experiment",
        "",
        ", ".join(f"{k}: {v:.0f} s" for k, v in r["timings_s"].items() if "/" not in k),
        "",
    ]
    return "\n".join(lines)


def summarize_verdicts(results) -> str:
    return "\n".join(f"{status(v)}: {v['claim']} ({v['measured']})" for v in results["verdicts"])
