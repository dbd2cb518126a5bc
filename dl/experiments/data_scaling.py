"""Data scaling: does deep learning improve with more data while classical ML suits
small data?

The claim (source texts): "deep learning improves with more data; classical ML suits
small data". Learning curves on mnist1d (generated, so any size is available): the
recipes' CNN and MLP against logistic regression, an RBF SVM, a random forest and k-NN,
on nested training subsets of growing size, all scored on one fixed test set. The deep
models get the same number of optimizer steps at every size (small sets are passed over
more often), so a small set is not also a short training run.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

from dl import baselines, data
from dl.experiments.common import (
    experiment_config,
    prepare,
    pyplot,
    report,
    save_figure,
    summarize_verdicts,  # noqa: F401  (the experiment interface)
    verdict,
    write_results,
)

NAME = "data_scaling"
DEEP = ("cnn", "mlp")
CLASSICAL = ("logreg", "rbf_svm", "forest", "knn")
SETTINGS = {
    "full": dict(sizes=(125, 250, 500, 1000, 2000, 4000, 8000, 16000), steps=3000, seeds=3),
    "quick": dict(sizes=(125, 500, 4000), steps=600, seeds=1),
}
TEST_SIZE = 1000
BATCH = 100  # the mnist1d recipes' batch size


def _pool(max_n: int):
    """One generated mnist1d pool: max_n training examples and a fixed test set."""
    total = max_n + TEST_SIZE
    ds = data.load("mnist1d", num_samples=total, train_split=max_n / total)
    return ds.train, ds.test


def _subset(x, y, n, seed):
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    return x[idx], y[idx]


Config = experiment_config(NAME, SETTINGS)


def run(config: Config) -> dict[str, Any]:
    """Run the experiment as `config` says; write results.json, report.md and figures to
    `config.out`."""
    out, s, timer = prepare(config, Config, NAME)
    quick, seed = config.is_quick, config.seed
    (x, y), test = _pool(max(s["sizes"]))
    acc: dict[str, dict[int, list[float]]] = {
        m: {n: [] for n in s["sizes"]} for m in (*DEEP, *CLASSICAL)
    }
    for n in s["sizes"]:
        for i in range(s["seeds"]):
            train = _subset(x, y, n, seed + i)
            for m in CLASSICAL:
                with timer(m):
                    r = baselines.run(baselines.make_baseline(m, seed + i), m, train, test)
                acc[m][n].append(r.accuracy)
            epochs = max(1, math.ceil(s["steps"] / max(1, n // BATCH)))
            for m in DEEP:
                with timer(m):
                    clf = baselines.DeepClassifier(
                        m, "mnist1d", epochs=epochs, batch_size=min(BATCH, n), seed=seed + i
                    )
                    r = baselines.run(clf, m, train, test, flatten=False)
                acc[m][n].append(r.accuracy)
    mean = {m: {n: statistics.mean(v) for n, v in d.items()} for m, d in acc.items()}
    small, large = min(s["sizes"]), max(s["sizes"])
    best_deep_small = max(DEEP, key=lambda m: mean[m][small])
    best_cl_small = max(CLASSICAL, key=lambda m: mean[m][small])
    best_cl_large = max(CLASSICAL, key=lambda m: mean[m][large])
    cnn = [mean["cnn"][n] for n in s["sizes"]]
    verdicts = [
        verdict(
            "Deep learning improves with more data",
            f"CNN accuracy rises with every size and by >= 10 points from {small} to {large}",
            " -> ".join(f"{100 * a:.1f}%" for a in cnn)
            + f" (n = {', '.join(map(str, s['sizes']))})",
            all(b > a for a, b in zip(cnn, cnn[1:], strict=False)) and cnn[-1] - cnn[0] >= 0.10,
        ),
        verdict(
            "Classical ML suits small data",
            f"at n = {small}: the best classical model >= the best deep model",
            f"{best_cl_small} {100 * mean[best_cl_small][small]:.1f}% vs {best_deep_small} "
            f"{100 * mean[best_deep_small][small]:.1f}%",
            mean[best_cl_small][small] >= mean[best_deep_small][small],
        ),
        verdict(
            "With enough data deep learning overtakes classical ML",
            f"at n = {large}: CNN > the best classical model",
            f"CNN {100 * mean['cnn'][large]:.1f}% vs {best_cl_large} "
            f"{100 * mean[best_cl_large][large]:.1f}%",
            mean["cnn"][large] > mean[best_cl_large][large],
        ),
    ]
    crossover = next(
        (n for n in s["sizes"] if mean["cnn"][n] > max(mean[m][n] for m in CLASSICAL)), None
    )
    results = {
        "experiment": NAME,
        "quick": quick,
        "seed": seed,
        "settings": s,
        "accuracy": {m: {str(n): v for n, v in d.items()} for m, d in acc.items()},
        "cnn_overtakes_classical_at": crossover,
        "timings_s": timer.sections,
        "verdicts": verdicts,
    }
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for m in (*DEEP, *CLASSICAL):
        style = "o-" if m in DEEP else "s--"
        ax.plot(s["sizes"], [100 * mean[m][n] for n in s["sizes"]], style, label=m)
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("mnist1d learning curves")
    ax.legend(fontsize=8)
    results["figures"] = [save_figure(fig, out, "learning_curves.png")]
    write_results(out, results)
    sections = [
        "## Test accuracy (%) by training-set size (mean over seeds)",
        "",
        "| model | " + " | ".join(str(n) for n in s["sizes"]) + " |",
        "|---|" + "---|" * len(s["sizes"]),
        *[
            f"| {m} | " + " | ".join(f"{100 * mean[m][n]:.1f}" for n in s["sizes"]) + " |"
            for m in (*DEEP, *CLASSICAL)
        ],
        "",
        f"The CNN first beats every classical model at n = {crossover}."
        if crossover
        else "The CNN never beats the best classical model here.",
        "",
        f"Deep models: the mnist1d recipes with {s['steps']} optimizer steps at every size; "
        f"test set: {TEST_SIZE} fixed examples; {s['seeds']} seed(s) (subset and init).",
    ]
    (out / "report.md").write_text(
        report(
            "Data scaling",
            "deep learning improves with more data; classical ML suits small data.",
            results,
            sections,
        )
    )
    return results
