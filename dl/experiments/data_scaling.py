"""Data scaling: does deep learning gain more from more data, and does classical ML suit
small data, on images and on tables?

The claims (source texts): "deep learning improves with more data; classical ML suits
small data". Every learner improves with more data, so the test is relative: learning
curves (test error against training-set size, log-log) of a deep model and of the
classical learners, judged on the difference of their slopes, seed by seed. Two
settings: mnist1d (generated, any size available) with the recipe's CNN against
logistic regression, an RBF SVM, k-NN, a random forest and gradient-boosted trees; and
scikit-learn's tabular sets (breast cancer, wine) with the recipe's MLP against the same
classical learners. The deep models get the same number of optimizer steps at every
size, so a small set is not also a short training run. Each seed draws its own subsets
and initialisations; the test sets are fixed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dl import baselines, data
from dl.experiments.common import (
    experiment_config,
    minmax_yerr,
    prepare,
    pyplot,
    report,
    save_figure,
    seed_list,
    seeded_claim,
    summarize_verdicts,  # noqa: F401  (the experiment interface)
    write_results,
)

NAME = "data_scaling"
CLASSICAL = ("logreg", "rbf_svm", "knn", "forest", "gbt")
TREES = ("forest", "gbt")  # the classical side of every verdict: the better tree ensemble
TABULAR = ("breast_cancer", "wine")
SETTINGS = {
    "full": dict(
        seeds=5,
        sizes=(125, 250, 500, 1000, 2000, 4000, 8000, 16000),
        steps=3000,
        tabular_sizes=(25, 50, 100, 200),
        tabular_steps=600,
        forest_trees=200,
        gbt_iterations=100,
    ),
    "quick": dict(
        seeds=3,
        sizes=(125, 250, 500, 1000, 2000),
        steps=400,
        tabular_sizes=(25, 50, 100),
        tabular_steps=200,
        forest_trees=100,
        gbt_iterations=50,
    ),
}
TEST_SIZE = 1000
# Batch sizes: a tenth of the training set, within these bounds (the upper one is the
# recipes'), so that even the smallest set has 10 steps per epoch and the fixed step
# budget is not spent on per-epoch overhead.
BATCH = (8, 100)
TABULAR_BATCH = (4, 32)


def _pool(max_n: int):
    """One generated mnist1d pool: max_n training examples and a fixed test set."""
    total = max_n + TEST_SIZE
    ds = data.load("mnist1d", num_samples=total, train_split=max_n / total)
    return ds.train, ds.test


def _subset(x, y, n, seed):
    """n examples drawn by `seed`, stratified by class (all of them when n >= len(x))."""
    if n >= len(x):
        return x, y
    from sklearn.model_selection import train_test_split

    xs, _, ys, _ = train_test_split(x, y, train_size=n, stratify=y, random_state=seed)
    return xs, ys


def slope(sizes, errors) -> float:
    """Least-squares slope of log10(test error) against log10(training-set size)."""
    return float(np.polyfit(np.log10(sizes), np.log10(errors), 1)[0])


def _classical(s, name, seed):
    params = {
        "forest": {"n_estimators": s["forest_trees"]},
        "gbt": {"max_iter": s["gbt_iterations"]},
    }
    return baselines.make_baseline(name, seed, **params.get(name, {}))


def _curves(s, deep, dataset, train, test, sizes, seeds, steps, batch, timer):
    """Test accuracy of `deep` and of every classical learner, per size and seed. The deep
    model trains every seed's subset at once (`train_seeds` with per-seed data)."""
    from dl import models, recipes
    from dl import train as tr

    acc = {m: np.zeros((len(sizes), len(seeds))) for m in (deep, *CLASSICAL)}
    for i, n in enumerate(sizes):
        subs = [_subset(*train, n, seed) for seed in seeds]
        for j, (seed, sub) in enumerate(zip(seeds, subs, strict=True)):
            for m in CLASSICAL:
                with timer(f"{dataset}/{m}"):
                    r = baselines.run(_classical(s, m, seed), m, sub, test)
                acc[m][i, j] = r.accuracy
        b = int(np.clip(n // 10, *batch))
        epochs = max(1, math.ceil(steps / max(1, n // b)))
        with timer(f"{dataset}/{deep}"):
            c = recipes.default_config(deep, dataset, epochs=epochs, batch_size=b)
            k = int(np.max(train[1])) + 1
            model = models.get_model(deep, k, kernels=c.kernels, **c.model_kwargs)
            res = tr.train_seeds(
                model,
                (np.stack([a[0] for a in subs]), np.stack([a[1] for a in subs])),
                c.fit_config(model),
                seeds,
                eval_data={"test": test},
                per_seed_data=True,
                runs="sequential",  # convolutions: see train_seeds
            )
        acc[deep][i] = res.history[-1]["test/accuracy"]
    return acc


def _error(acc, n_test):
    """Test error, floored at half an error so that a perfect score has a logarithm."""
    return np.maximum(1.0 - acc, 0.5 / n_test)


def _slopes(acc, sizes, n_test) -> dict[str, list[float]]:
    err = {m: _error(a, n_test) for m, a in acc.items()}
    return {m: [slope(sizes, e[:, j]) for j in range(e.shape[1])] for m, e in err.items()}


def _trees_best(acc) -> np.ndarray:
    return np.maximum(*(acc[m] for m in TREES))


def _verdicts(s, mn, tab) -> list[dict[str, Any]]:
    sizes = list(mn["sizes"])
    acc = {m: np.asarray(v) for m, v in mn["accuracy"].items()}
    sl = {m: np.asarray(v) for m, v in mn["slopes"].items()}
    trees = _trees_best(acc)
    steeper = np.minimum(*(sl[m] for m in TREES))
    verdicts = [
        seeded_claim(
            "Deep learning gains more from more data than classical ML (mnist1d)",
            f"paired slope of log10 test error against log10 n (n = {sizes[0]}..{sizes[-1]}), "
            "CNN minus the steeper of random forest and gradient-boosted trees, < 0",
            sl["cnn"] - steeper,
            direction="less",
            measured=f"slopes: CNN {sl['cnn'].mean():.2f}, "
            + ", ".join(f"{m} {sl[m].mean():.2f}" for m in CLASSICAL),
        ),
        seeded_claim(
            "Classical ML suits small data (mnist1d)",
            f"at n = {sizes[0]}: paired test accuracy, the better tree ensemble minus the CNN, > 0",
            100 * (trees[0] - acc["cnn"][0]),
            unit=" points",
        ),
        seeded_claim(
            "With enough data deep learning overtakes classical ML (mnist1d)",
            f"at n = {sizes[-1]}: paired test accuracy, CNN minus the better tree ensemble, > 0",
            100 * (acc["cnn"][-1] - trees[-1]),
            unit=" points",
        ),
    ]
    tsizes = list(tab["sizes"])
    # Per seed, the mean over the tabular sets of (better tree ensemble - MLP).
    n_small = len(tsizes)
    diffs = np.mean(
        [
            (
                _trees_best({m: np.asarray(v) for m, v in tab["sets"][d]["accuracy"].items()})
                - np.asarray(tab["sets"][d]["accuracy"]["mlp"])
            )[:n_small]
            for d in TABULAR
        ],
        axis=0,
    )  # (sizes, seeds)
    for i, n in enumerate(tsizes):
        verdicts.append(
            seeded_claim(
                f"Classical ML wins on small tabular data (n = {n})",
                f"{n} training rows of each of {', '.join(TABULAR)}: paired test accuracy, "
                "the better tree ensemble minus the MLP, averaged over the sets, > 0",
                100 * diffs[i],
                unit=" points",
            )
        )
    bc = tab["sets"][TABULAR[0]]
    tsl = {m: np.asarray(v) for m, v in bc["slopes"].items()}
    verdicts.append(
        seeded_claim(
            f"Deep learning gains more from more data than classical ML ({TABULAR[0]})",
            f"paired learning-curve slope (n = {tsizes[0]}..{bc['sizes'][-1]}), MLP minus "
            "the steeper tree ensemble, < 0",
            tsl["mlp"] - np.minimum(*(tsl[m] for m in TREES)),
            direction="less",
            measured=f"slopes: MLP {tsl['mlp'].mean():.2f}, "
            + ", ".join(f"{m} {tsl[m].mean():.2f}" for m in TREES),
        )
    )
    return verdicts


Config = experiment_config(NAME, SETTINGS)


def run(config: Config) -> dict[str, Any]:
    """Run the experiment as `config` says; write results.json, report.md and figures to
    `config.out`."""
    out, s, timer = prepare(config, Config, NAME)
    seeds = seed_list(config.seed, s["seeds"])
    sizes = list(s["sizes"])
    train, test = _pool(max(sizes))
    acc = _curves(s, "cnn", "mnist1d", train, test, sizes, seeds, s["steps"], BATCH, timer)
    mn = {
        "sizes": sizes,
        "n_test": len(test[0]),
        "accuracy": {m: a.tolist() for m, a in acc.items()},
        "slopes": _slopes(acc, sizes, len(test[0])),
    }
    tab: dict[str, Any] = {"sizes": [], "sets": {}}
    for name in TABULAR:
        ds = data.load(name)
        tsizes = [n for n in s["tabular_sizes"] if n < len(ds.x_train)]
        if name == TABULAR[0]:  # the learning-curve set runs to all its rows
            tsizes.append(len(ds.x_train))
        a = _curves(
            s,
            "mlp",
            name,
            ds.train,
            ds.test,
            tsizes,
            seeds,
            s["tabular_steps"],
            TABULAR_BATCH,
            timer,
        )
        tab["sets"][name] = {
            "sizes": tsizes,
            "n_test": len(ds.x_test),
            "accuracy": {m: v.tolist() for m, v in a.items()},
            "slopes": _slopes(a, tsizes, len(ds.x_test)),
        }
    # The sizes every tabular set has (the claims on small tables).
    tab["sizes"] = [
        n for n in s["tabular_sizes"] if all(n in v["sizes"] for v in tab["sets"].values())
    ]
    results = {
        "experiment": NAME,
        "quick": config.is_quick,
        "seed": config.seed,
        "seeds": seeds,
        "settings": s,
        "mnist1d": mn,
        "tabular": tab,
        "timings_s": timer.sections,
        "verdicts": _verdicts(s, mn, tab),
    }
    results["figures"] = _figures(out, mn, tab)
    write_results(out, results)

    def table(block, deep):
        rows = [
            "| model | " + " | ".join(str(n) for n in block["sizes"]) + " | slope |",
            "|---|" + "---|" * (len(block["sizes"]) + 1),
        ]
        for m in (deep, *CLASSICAL):
            a = np.asarray(block["accuracy"][m])
            rows.append(
                f"| {m} | "
                + " | ".join(f"{100 * v:.1f}" for v in a.mean(1))
                + f" | {np.mean(block['slopes'][m]):.2f} |"
            )
        return rows

    sections = [
        "## mnist1d: test accuracy (%) by training-set size (mean over seeds)",
        "",
        *table(mn, "cnn"),
        "",
        *[
            line
            for name in TABULAR
            for line in (
                f"## {name}: test accuracy (%) by training-set size",
                "",
                *table(tab["sets"][name], "mlp"),
                "",
            )
        ],
        f"Seeds {seeds} (each draws its own stratified subsets and initialisations); slope: "
        "least squares of log10 test error on log10 n. Deep models: the recipes with "
        f"{s['steps']} (mnist1d) and {s['tabular_steps']} (tables) optimizer steps at every "
        f"size, batches of a tenth of the set within {BATCH} (mnist1d) and {TABULAR_BATCH} "
        f"(tables); mnist1d test set {TEST_SIZE} fixed examples; random forest of "
        f"{s['forest_trees']} trees, gradient boosting of {s['gbt_iterations']} iterations.",
        "",
        "What it means: every learner improves with more data, so the claims are read off "
        "the difference of slopes and paired accuracy gaps against the better of two tree "
        "ensembles (picked per seed, which favours the classical side slightly).",
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


def _figures(out, mn, tab) -> list[str]:
    plt = pyplot()
    blocks = [("mnist1d", "cnn", mn)] + [(d, "mlp", tab["sets"][d]) for d in TABULAR]
    fig, axes = plt.subplots(1, len(blocks), figsize=(5 * len(blocks), 4), layout="constrained")
    for ax, (name, deep, block) in zip(axes, blocks, strict=True):
        for m in (deep, *CLASSICAL):
            err = 100 * _error(np.asarray(block["accuracy"][m]), block["n_test"])
            style = "o-" if m == deep else "s--"
            ax.errorbar(
                block["sizes"],
                err.mean(1),
                yerr=minmax_yerr(err),
                fmt=style,
                capsize=2,
                label=f"{m} (slope {np.mean(block['slopes'][m]):.2f})",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training examples")
        ax.set_ylabel("test error (%, min-max over seeds)")
        ax.set_title(name)
        ax.legend(fontsize=7)
    return [save_figure(fig, out, "learning_curves.png")]
