"""Transfer learning: pre-train on one task, fine-tune on another with few labels.

The claim (source texts): pre-trained models can be fine-tuned for a new task with little
data. A CNN (the recipe's at half width) is pre-trained on mnist5k digits 0-4 (task A),
then trained on digits 5-9 (task B) with 10, 100 or all of B's training labels: from
scratch and fine-tuning every layer from the pre-trained weights (the same number of
optimizer steps, each at the learning rate that did best on a validation split of B),
and a linear read-out of the frozen pre-trained features. Seeds (each its own draw of
labelled examples) and learning rates run at once through `train_seeds`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dl import analysis, data, models
from dl.experiments.common import (
    accuracy,
    experiment_config,
    minmax_yerr,
    prepare,
    pyplot,
    report,
    save_figure,
    seed_list,
    seeded_claim,
    summarize_verdicts,  # noqa: F401  (the experiment interface)
    train_classifier,
    train_many,
    write_results,
)

NAME = "transfer_learning"
SETTINGS = {
    "full": dict(
        seeds=5,
        pretrain_epochs=20,
        labels=(10, 100, 1000, None),
        steps=600,
        learning_rates=(3e-4, 1e-3, 3e-3, 1e-2),
        val_size=500,
    ),
    "quick": dict(
        seeds=3,
        pretrain_epochs=8,
        labels=(10, 100, None),
        steps=100,
        learning_rates=(1e-3, 3e-3),
        val_size=300,
    ),
}
ARMS = ("scratch", "fine_tuned", "frozen_features")
# Half the recipe CNN's width, to keep the quick mode's many runs within its budget.
CNN = {"channels": (16, 32), "dense": (64,)}
PROBE_L2S = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def split_classes(x, y, lo, hi):
    """The examples of classes lo, ..., hi - 1, relabelled from 0."""
    m = (y >= lo) & (y < hi)
    return x[m], y[m] - lo


def labelled_draw(x, y, n, seed):
    """n labelled examples, as balanced over the classes as n allows (None: all)."""
    if n is None or n >= len(x):
        return x, y
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    idx = [p[i] for i in range(max(len(p) for p in per)) for p in per if i < len(p)][:n]
    return x[idx], y[idx]


Config = experiment_config(NAME, SETTINGS)


def best_rate(res, seeds) -> dict[str, Any]:
    """Per seed, the learning rate with the best validation accuracy, and its test
    accuracy."""
    last = res.history[-1]
    val, test = last["val/accuracy"], last["test/accuracy"]
    out: dict[str, list] = {"test": [], "val": [], "learning_rate": []}
    for seed in seeds:
        runs = [i for i, s in enumerate(res.seeds) if s == seed]
        best = max(runs, key=lambda i: val[i])
        out["test"].append(float(test[best]))
        out["val"].append(float(val[best]))
        out["learning_rate"].append(res.learning_rates[best])
    return out


def frozen_probe(f_train, y_train, val, test) -> tuple[float, float]:
    """A linear read-out fitted to convergence (L-BFGS) on frozen features: the L2
    strength of `PROBE_L2S` with the best accuracy on `val` (features, labels), then its
    accuracy on `test`. Returns (test accuracy, L2 strength)."""
    k = int(max(np.max(y_train), np.max(val[1]), np.max(test[1]))) + 1

    def fit(held_out, l2):
        return analysis.linear_probe((f_train, y_train), held_out, l2=l2, num_classes=k)

    scores = {l2: fit(val, l2).test_accuracy for l2 in PROBE_L2S}
    l2 = max(PROBE_L2S, key=lambda a: scores[a])
    return fit(test, l2).test_accuracy, l2


def fine_tune(model, s, pool, sets, seeds, arms, timer, *, per_seed_params=False):
    """For each label budget in `s["labels"]`, each seed's draw of labelled examples from
    `pool`, and for each arm (name -> pre-trained parameters, or None: from scratch) the
    test accuracy at the learning rate of `s["learning_rates"]` best on `sets["val"]`,
    after `s["steps"]` optimizer steps. `per_seed_params`: the arms' parameters have a
    leading seed axis. Returns ({arm: {budget: best_rate(...)}}, {budget: draws})."""
    acc: dict[str, dict[str, Any]] = {a: {} for a in arms}
    draws_by_budget = {}
    for n in s["labels"]:
        key = "all" if n is None else str(n)
        draws = draws_by_budget[key] = [labelled_draw(*pool, n, seed) for seed in seeds]
        xs, ys = np.stack([d[0] for d in draws]), np.stack([d[1] for d in draws])
        bs = min(64, xs.shape[1])
        epochs = max(1, math.ceil(s["steps"] / (xs.shape[1] // bs)))
        for arm, params in arms.items():
            with timer(arm):
                res = train_many(
                    model,
                    (xs, ys),
                    seeds,
                    epochs=epochs,
                    batch_size=bs,
                    eval_data=sets,
                    eval_every=epochs,
                    learning_rates=s["learning_rates"],
                    params=params,
                    per_seed_params=per_seed_params and params is not None,
                    per_seed_data=True,
                    runs="sequential",  # convolutions: see train_seeds
                )
            acc[arm][key] = best_rate(res, seeds)
    return acc, draws_by_budget


def _task_b(s, model, pre, b_pool, b_val, b_test, seeds, timer) -> dict[str, Any]:
    body = {k: v for k, v in pre.state.params.items() if k != "head"}
    penultimate = f"hidden{len(CNN['dense']) - 1}"

    def features(x):
        return analysis.activations(model, pre.state, x, include_input=False)[penultimate]

    test_feats, val_feats = features(b_test[0]), features(b_val[0])

    def probe(train):
        return frozen_probe(
            features(train[0]), train[1], (val_feats, b_val[1]), (test_feats, b_test[1])
        )

    acc, draws = fine_tune(
        model,
        s,
        b_pool,
        {"val": b_val, "test": b_test},
        seeds,
        {"scratch": None, "fine_tuned": body},
        timer,
    )
    acc["frozen_features"] = {}
    for key, labelled in draws.items():
        with timer("frozen_features"):
            # A linear read-out fitted to convergence (L-BFGS) on the frozen pre-trained
            # penultimate features, its L2 strength chosen on the same validation split.
            probes = [probe(d) for d in labelled]
            acc["frozen_features"][key] = {
                "test": [p[0] for p in probes],
                "l2": [p[1] for p in probes],
            }
    return acc


def run(config: Config) -> dict[str, Any]:
    """Run the experiment as `config` says; write results.json, report.md and figures to
    `config.out`."""
    out, s, timer = prepare(config, Config, NAME)
    seeds = seed_list(config.seed, s["seeds"])
    ds = data.load("mnist5k")
    (x, y), (xt, yt) = ds.train, ds.test
    a_train, a_test = split_classes(x, y, 0, 5), split_classes(xt, yt, 0, 5)
    b_train, b_test = split_classes(x, y, 5, 10), split_classes(xt, yt, 5, 10)
    # B's validation digits, held out of every arm's labelled draws.
    order = np.random.default_rng(0).permutation(len(b_train[0]))
    val_idx, pool_idx = order[: s["val_size"]], order[s["val_size"] :]
    b_val = (b_train[0][val_idx], b_train[1][val_idx])
    b_pool = (b_train[0][pool_idx], b_train[1][pool_idx])
    model = models.get_model("cnn", 5, kernels="auto", **CNN)
    with timer("pretrain"):
        pre = train_classifier(model, a_train, epochs=s["pretrain_epochs"], seed=config.seed)
    pre_acc = accuracy(model, pre.state, *a_test)
    acc = _task_b(s, model, pre, b_pool, b_val, b_test, seeds, timer)
    keys = list(acc["scratch"])

    def test(arm, k):
        return np.asarray(acc[arm][k]["test"])

    gap = {k: 100 * (test("fine_tuned", k) - test("scratch", k)) for k in keys}
    verdicts = [
        seeded_claim(
            "Pre-trained models fine-tune with very little data",
            "10 labels: paired test accuracy, fine-tuned minus from scratch (each at the "
            "learning rate chosen on validation), > 0",
            gap["10"],
            unit=" points",
            measured=f"{test('fine_tuned', '10').mean() * 100:.1f}% vs "
            f"{test('scratch', '10').mean() * 100:.1f}%",
        ),
        seeded_claim(
            "Pre-training still helps with 100 labels",
            "100 labels: paired test accuracy, fine-tuned minus from scratch, > 0",
            gap["100"],
            unit=" points",
            measured=f"{test('fine_tuned', '100').mean() * 100:.1f}% vs "
            f"{test('scratch', '100').mean() * 100:.1f}%",
        ),
        seeded_claim(
            "The advantage shrinks when labels are plentiful",
            f"paired (fine-tuned - scratch) with 10 labels minus with all {len(b_pool[0])}, > 0",
            gap["10"] - gap["all"],
            unit=" points",
            measured=f"{gap['all'].mean():+.1f} points with all labels vs "
            f"{gap['10'].mean():+.1f} with 10",
        ),
    ]
    results = {
        "experiment": NAME,
        "quick": config.is_quick,
        "seed": config.seed,
        "seeds": seeds,
        "settings": s,
        "pretrain_test_accuracy": pre_acc,
        "split_sizes": {
            "pool": len(b_pool[0]),
            "val": len(b_val[0]),
            "test": len(b_test[0]),
        },
        "accuracy": acc,
        "timings_s": timer.sections,
        "verdicts": verdicts,
    }
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    xs = [len(b_pool[0]) if k == "all" else int(k) for k in keys]
    for arm, style in zip(ARMS, ("o--", "s-", "^:"), strict=True):
        a = 100 * np.asarray([test(arm, k) for k in keys])
        ax.errorbar(xs, a.mean(1), yerr=minmax_yerr(a), fmt=style, capsize=3, label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples of task B")
    ax.set_ylabel("test accuracy on B (%, min-max over seeds)")
    ax.set_title("digits 0-4 -> digits 5-9")
    ax.legend()
    results["figures"] = [save_figure(fig, out, "transfer.png")]
    write_results(out, results)
    sections = [
        "## Test accuracy on task B (%), mean over seeds",
        "",
        "| labels | " + " | ".join(a.replace("_", " ") for a in ARMS) + " |",
        "|---|---|---|---|",
        *[
            f"| {k} | " + " | ".join(f"{100 * test(a, k).mean():.1f}" for a in ARMS) + " |"
            for k in keys
        ],
        "",
        f"Pre-trained on digits 0-4 for {s['pretrain_epochs']} epochs (test accuracy on A "
        f"{100 * pre_acc:.1f}%). CNN {CNN}; Adam with warmup-cosine at the rate of "
        f"{list(s['learning_rates'])} with the best accuracy on {len(b_val[0])} validation "
        f"digits of B (held out of every draw), per seed and arm; {s['steps']} optimizer "
        f"steps per run (batch 64, or all examples when fewer); seeds {seeds}, each a "
        "different draw of the labelled examples. Frozen features: an L2-regularised "
        "softmax (`dl.analysis.linear_probe`, L-BFGS) on the pre-trained network's last "
        f"hidden layer, its L2 strength out of {list(PROBE_L2S)} chosen on the same "
        "validation digits.",
        "",
        "What it means: fine-tuning is credited with what it adds over the same network "
        "trained from scratch on the same labelled digits, each with its best learning "
        "rate, so a gap that a better rate would close does not count.",
    ]
    (out / "report.md").write_text(
        report(
            "Transfer learning",
            "pre-trained models fine-tune with little data.",
            results,
            sections,
        )
    )
    return results
