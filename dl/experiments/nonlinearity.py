"""Without nonlinear activations, layers collapse into one linear map.

The claim (source texts): "without nonlinear activation functions, multiple layers would
collapse into a single linear transformation". A deep MLP with and without activations
(ReLU against identity) on two nonlinear tasks (concentric circles; mnist1d), against
logistic regression. Measured: how far the trained linear stack is from the single
linear map its weights multiply out to (and the same for the ReLU net, as the control),
and the test accuracies.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from dl import baselines, data, models
from dl.experiments.common import (
    closed,
    experiment_config,
    prepare,
    pyplot,
    report,
    save_figure,
    seeded_claim,
    summarize_verdicts,  # noqa: F401  (the experiment interface)
    train_classifier,
    verdict,
    write_results,
)

NAME = "nonlinearity"
SETTINGS = {
    "full": dict(seeds=5, depth=8, width=128, epochs={"circles": 60, "mnist1d": 60}),
    "quick": dict(seeds=3, depth=6, width=64, epochs={"circles": 30, "mnist1d": 15}),
}


def circles(seed: int = 0, n: int = 2000):
    """Two concentric noisy circles (scikit-learn): no line separates them."""
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=n, noise=0.08, factor=0.5, random_state=seed)
    x = x.astype(np.float32)
    cut = int(0.75 * n)
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def composed_linear_map(params, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The single affine map (W, b) that the Dense layers of an MLP multiply out to
    when the activations are the identity: x -> x W + b."""
    w = np.eye(params["dense0"]["kernel"].shape[0])
    b = np.zeros(w.shape[1])
    for name in [f"dense{i}" for i in range(depth)] + ["head"]:
        k = np.asarray(params[name]["kernel"], np.float64)
        w, b = w @ k, b @ k + np.asarray(params[name]["bias"], np.float64)
    return w, b


def _collapse_error(model, state, x, depth) -> float:
    """max |f(x) - (x W + b)| / max |f(x)| over the test inputs."""
    from dl import train

    out = train.predict(model, state, x).astype(np.float64)
    w, b = composed_linear_map(state.params, depth)
    lin = baselines.flatten_inputs(x).astype(np.float64) @ w + b
    return float(np.abs(out - lin).max() / np.abs(out).max())


def _datasets():
    ds = data.load("mnist1d")
    return {"circles": circles(), "mnist1d": (ds.train, ds.test)}


Config = experiment_config(NAME, SETTINGS)


def run(config: Config) -> dict[str, Any]:
    """Run the experiment as `config` says; write results.json, report.md and figures to
    `config.out`."""
    out, s, timer = prepare(config, Config, NAME)
    quick, seed = config.is_quick, config.seed
    rows: dict[str, dict[str, Any]] = {}
    kept = {}
    for name, (train, test) in _datasets().items():
        k = int(max(train[1].max(), test[1].max()) + 1)
        with timer(name):
            r: dict[str, Any] = {a: [] for a in ("logreg", "linear_stack", "relu_stack")}
            r["relu_shallow"] = []  # the control: one hidden ReLU layer of the same width
            r["collapse_error"] = {"linear_stack": [], "relu_stack": []}
            for i in range(s["seeds"]):
                res = baselines.run(
                    baselines.make_baseline("logreg", seed + i),
                    "logreg",
                    train,
                    test,
                    seed=seed + i,
                )
                r["logreg"].append(res.accuracy)
                # (arm, hidden layers, activation); the one-layer ReLU net is the control.
                arms = (
                    ("linear_stack", s["depth"], "identity"),
                    ("relu_stack", s["depth"], "relu"),
                    ("relu_shallow", 1, "relu"),
                )
                for key, depth, act in arms:
                    model = models.get_model("mlp", k, widths=(s["width"],) * depth, activation=act)
                    fit = train_classifier(
                        model,
                        train,
                        epochs=s["epochs"][name],
                        seed=seed + i,
                        eval_data={"test": test},
                    )
                    r[key].append(float(fit.history[-1]["test/accuracy"]))
                    if key not in r["collapse_error"]:
                        continue
                    x = np.asarray(test[0], np.float32)
                    r["collapse_error"][key].append(_collapse_error(model, fit.state, x, depth))
                    if i == 0:
                        kept[(name, key)] = (model, fit.state)
            rows[name] = r

    verdicts = []
    for name, r in rows.items():
        m = {key: statistics.mean(r[key]) for key in ("logreg", "linear_stack", "relu_stack")}
        err_lin = max(r["collapse_error"]["linear_stack"])
        err_relu = min(r["collapse_error"]["relu_stack"])
        verdicts.append(
            verdict(
                f"A stack of linear layers is one linear map ({name})",
                "trained identity-activation MLP equals the product of its weight matrices: "
                "max |f(x) - (xW + b)| / max |f(x)| < 1e-4 (and the ReLU net does not)",
                f"relative error {err_lin:.1e} (linear stack, worst seed) vs "
                f"{err_relu:.2f} (ReLU stack, best seed)",
                err_lin < 1e-4 and err_relu > 1e-2,
                kind="check",
            )
        )
        verdicts.append(
            seeded_claim(
                f"Depth without nonlinearity does not help ({name})",
                f"{s['depth']}-layer linear stack minus logistic regression, test accuracy "
                "(paired by seed), < 0.01",
                [a - b for a, b in zip(r["linear_stack"], r["logreg"], strict=True)],
                threshold=0.01,
                direction="less",
                measured=f"linear stack {100 * m['linear_stack']:.1f}% vs logistic regression "
                f"{100 * m['logreg']:.1f}%",
            )
        )
        verdicts.append(
            seeded_claim(
                f"With a nonlinearity, depth does help ({name})",
                f"fraction of the one-hidden-layer ReLU net's test error that the {s['depth']}-"
                "layer ReLU net (same width, optimizer and epochs) closes, paired by seed, > 0",
                [closed(a, b) for a, b in zip(r["relu_shallow"], r["relu_stack"], strict=True)],
                measured=f"deep ReLU {100 * m['relu_stack']:.1f}% vs one hidden layer "
                f"{100 * statistics.mean(r['relu_shallow']):.1f}%",
            )
        )
        verdicts.append(
            seeded_claim(
                f"The nonlinearity is what depth needs ({name})",
                "fraction of the linear stack's test error that the ReLU stack of the same "
                "shape closes, paired by seed, > 0",
                [closed(a, b) for a, b in zip(r["linear_stack"], r["relu_stack"], strict=True)],
            )
        )
    results = {
        "experiment": NAME,
        "quick": quick,
        "seed": seed,
        "settings": s,
        "accuracy": rows,
        "timings_s": timer.sections,
        "verdicts": verdicts,
    }
    results["figures"] = _figures(out, rows, kept)
    write_results(out, results)
    sections = [
        "## Test accuracy (mean over seeds)",
        "",
        "| dataset | logistic regression | linear stack | ReLU, 1 layer | ReLU stack | "
        "collapse error (lin/ReLU) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        sections.append(
            f"| {name} | {100 * statistics.mean(r['logreg']):.1f} | "
            f"{100 * statistics.mean(r['linear_stack']):.1f} | "
            f"{100 * statistics.mean(r['relu_shallow']):.1f} | "
            f"{100 * statistics.mean(r['relu_stack']):.1f} | "
            f"{max(r['collapse_error']['linear_stack']):.1e} / "
            f"{min(r['collapse_error']['relu_stack']):.2f} |"
        )
    sections += [
        "",
        f"MLPs: {s['depth']} hidden layers of {s['width']} units, Adam, "
        f"{s['seeds']} seeds. The collapse error compares the trained network's outputs "
        "with the affine map obtained by multiplying out its weight matrices and biases.",
    ]
    (out / "report.md").write_text(
        report(
            "Nonlinearity: does depth collapse without activations?",
            "without nonlinear activation functions, multiple layers would collapse into "
            "a single linear transformation.",
            results,
            sections,
        )
    )
    return results


def _figures(out: Path, rows, kept) -> list[str]:
    from dl import train

    plt = pyplot()
    tr, _ = circles()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), layout="constrained")
    g = np.linspace(-1.6, 1.6, 200, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    lr = baselines.make_baseline("logreg", 0).fit(tr[0], tr[1])
    panels = [("logistic regression", lr.predict(grid))]
    for key, title in (("linear_stack", "linear stack"), ("relu_stack", "ReLU stack")):
        model, state = kept[("circles", key)]
        panels.append((title, train.predict(model, state, grid).argmax(1)))
    for ax, (title, pred) in zip(axes, panels, strict=True):
        ax.contourf(gx, gy, pred.reshape(gx.shape), alpha=0.3, cmap="coolwarm")
        ax.scatter(tr[0][:400, 0], tr[0][:400, 1], c=tr[1][:400], s=4, cmap="coolwarm")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("circles: decision regions")
    files = [save_figure(fig, out, "decision_regions.png")]

    fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
    keys = ("logreg", "linear_stack", "relu_stack")
    for j, key in enumerate(keys):
        vals = [100 * statistics.mean(rows[n][key]) for n in rows]
        ax.bar(np.arange(len(rows)) + 0.27 * (j - 1), vals, 0.27, label=key)
    ax.set_xticks(range(len(rows)), list(rows))
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    files.append(save_figure(fig, out, "accuracy.png"))
    return files
