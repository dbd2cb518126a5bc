"""Regularisation ablations: dropout, weight decay, batch norm, data augmentation and early
stopping, each against the same unregularised network, with the train-test gap.

The claim (source texts): dropout, batch norm, weight decay, augmentation and early
stopping reduce overfitting and help generalisation. An MLP on 1000 mnist5k digits (small
enough to overfit) is trained with each technique alone and with all of them; every run
has the same architecture, optimizer, epochs and training digits. A validation split,
held out of every arm alike (never trained on), chooses each technique's strength (the
dropout rate, the weight decay) and the early-stopping epoch; the test set only scores.
Seeds (initialisation, batch order, dropout masks) run at once through `train_seeds`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dl import data, models
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
    train_many,
    write_results,
)

NAME = "regularisation"
SETTINGS = {
    "full": dict(
        seeds=5,
        train_size=1000,
        val_size=1000,
        epochs=60,
        dropout=(0.1, 0.3, 0.5),
        weight_decay=(0.01, 0.1, 1.0),
    ),
    "quick": dict(
        seeds=3,
        train_size=1000,
        val_size=500,
        epochs=30,
        dropout=(0.2, 0.5),
        weight_decay=(0.05, 0.5),
    ),
}
WIDTHS = (256, 256)
TECHNIQUES = ("dropout", "weight_decay", "batch_norm", "augmentation", "early_stopping", "all")


def _arm(ds, train, sets, s, seeds, model_kw=None, eval_every=None, **fit):
    model = models.get_model("mlp", ds.num_classes, widths=WIDTHS, **(model_kw or {}))
    res = train_many(
        model,
        train,
        seeds,
        epochs=s["epochs"],
        eval_data=sets,
        eval_every=eval_every or s["epochs"],
        **fit,
    )
    return {
        k: np.asarray([h[f"{k}/accuracy"] for h in res.history[1:]]) for k in sets
    }  # (evaluations, seeds)


def _final(curves) -> dict[str, list[float]]:
    return {k: v[-1].tolist() for k, v in curves.items()}


def _early_stopped(curves) -> dict[str, Any]:
    """Per seed, the epoch with the best validation accuracy (the first of ties) and
    every set's accuracy there: early stopping that restores its best epoch."""
    best = curves["val"].argmax(0)
    cols = np.arange(curves["val"].shape[1])
    return {**{k: v[best, cols].tolist() for k, v in curves.items()}, "epoch": (best + 1).tolist()}


def _tuned(options: dict[Any, dict[str, list[float]]]) -> dict[str, Any]:
    """Per seed, the option with the best validation accuracy and its accuracies."""
    keys = list(options)
    val = np.asarray([options[k]["val"] for k in keys])  # (options, seeds)
    pick = val.argmax(0)
    out = {
        k: [options[keys[p]][k][j] for j, p in enumerate(pick)] for k in ("train", "val", "test")
    }
    return {**out, "chosen": [keys[p] for p in pick]}


def _run_arms(s, seeds, timer):
    ds = data.load("mnist5k")
    x, y = ds.train
    idx = np.random.default_rng(0).permutation(len(x))
    train = (x[idx[: s["train_size"]]], y[idx[: s["train_size"]]])
    val = (x[idx[s["train_size"] : s["train_size"] + s["val_size"]]],) + (
        y[idx[s["train_size"] : s["train_size"] + s["val_size"]]],
    )
    sets = {"train": train, "val": val, "test": ds.test}
    arms: dict[str, Any] = {}
    with timer("none"):
        none = _arm(ds, train, sets, s, seeds, eval_every=1)
    arms["none"] = _final(none)
    arms["early_stopping"] = _early_stopped(none)
    with timer("dropout"):
        by_rate = {r: _final(_arm(ds, train, sets, s, seeds, {"dropout": r})) for r in s["dropout"]}
    arms["dropout"] = _tuned(by_rate)
    with timer("weight_decay"):
        by_wd = {
            w: _final(_arm(ds, train, sets, s, seeds, optimizer="adamw", weight_decay=w))
            for w in s["weight_decay"]
        }
    arms["weight_decay"] = _tuned(by_wd)
    with timer("batch_norm"):
        arms["batch_norm"] = _final(_arm(ds, train, sets, s, seeds, {"batch_norm": True}))
    with timer("augmentation"):
        arms["augmentation"] = _final(_arm(ds, train, sets, s, seeds, augment="shift"))

    # All together, at the strengths with the best mean validation accuracy over seeds.
    def best(options):
        return max(options, key=lambda k: np.mean(options[k]["val"]))

    rate, wd = best(by_rate), best(by_wd)
    with timer("all"):
        every = _arm(
            ds,
            train,
            sets,
            s,
            seeds,
            {"dropout": rate, "batch_norm": True},
            eval_every=1,
            optimizer="adamw",
            weight_decay=wd,
            augment="shift",
        )
    arms["all"] = {**_early_stopped(every), "chosen": {"dropout": rate, "weight_decay": wd}}
    grids = {
        "dropout": {str(k): v for k, v in by_rate.items()},
        "weight_decay": {str(k): v for k, v in by_wd.items()},
    }
    sizes = {k: len(v[0]) for k, v in sets.items()}
    return arms, grids, sizes


def _verdicts(arms) -> list[dict[str, Any]]:
    base = np.asarray(arms["none"]["test"])
    base_gap = np.asarray(arms["none"]["train"]) - base
    out = []
    for name in TECHNIQUES:
        test = np.asarray(arms[name]["test"])
        gap = np.asarray(arms[name]["train"]) - test
        out.append(
            seeded_claim(
                "All five together help generalisation"
                if name == "all"
                else f"{name.replace('_', ' ').capitalize()} helps generalisation",
                "paired test accuracy, with the technique (strength chosen on validation) "
                "minus without, > 0",
                100 * (test - base),
                unit=" points",
                measured=f"test {100 * test.mean():.1f}% vs {100 * base.mean():.1f}%; "
                f"train-test gap {100 * gap.mean():.1f} vs {100 * base_gap.mean():.1f} points",
            )
        )
    return out


Config = experiment_config(NAME, SETTINGS)


def run(config: Config) -> dict[str, Any]:
    """Run the experiment as `config` says; write results.json, report.md and figures to
    `config.out`."""
    out, s, timer = prepare(config, Config, NAME)
    seeds = seed_list(config.seed, s["seeds"])
    arms, grids, sizes = _run_arms(s, seeds, timer)
    results = {
        "experiment": NAME,
        "quick": config.is_quick,
        "seed": config.seed,
        "seeds": seeds,
        "settings": s,
        "model": {"mlp_widths": WIDTHS},
        "split_sizes": sizes,
        "arms": arms,
        "grids": grids,
        "timings_s": timer.sections,
        "verdicts": _verdicts(arms),
    }
    results["figures"] = _figures(out, s, arms)
    write_results(out, results)
    names = ["none", *TECHNIQUES]

    def m(name, key):
        return 100 * np.mean(arms[name][key])

    sections = [
        "## Accuracy (mean over seeds)",
        "",
        "| technique | train (%) | val (%) | test (%) | gap (points) | chosen |",
        "|---|---|---|---|---|---|",
        *[
            f"| {n} | {m(n, 'train'):.1f} | {m(n, 'val'):.1f} | {m(n, 'test'):.1f} | "
            f"{m(n, 'train') - m(n, 'test'):.1f} | "
            f"{arms[n].get('chosen', arms[n].get('epoch', ''))} |"
            for n in names
        ],
        "",
        f"MLP {WIDTHS}, Adam 1e-3 with warmup-cosine, batch 64, {s['epochs']} epochs, seeds "
        f"{seeds}, the same {sizes['train']} training digits for every arm and seed; "
        f"{sizes['val']} other training digits held out for validation; {sizes['test']} "
        f"test digits. Dropout rates {list(s['dropout'])} and AdamW weight decays "
        f"{list(s['weight_decay'])} chosen per seed on validation; batch norm after each "
        "hidden layer; random shifts of up to 2 pixels; early stopping: the epoch with the "
        "best validation accuracy (patience without limit, best epoch restored). 'All' uses "
        "the strengths with the best mean validation accuracy and stops early.",
        "",
        "What it means: each technique is credited only with the test accuracy it adds over "
        "the same network on the same digits, seed by seed, at a strength the validation "
        "split chose; a gain within the seeds' spread is INCONCLUSIVE, not a win.",
    ]
    (out / "report.md").write_text(
        report(
            "Regularisation ablations",
            "dropout, batch norm, weight decay, augmentation and early stopping help.",
            results,
            sections,
        )
    )
    return results


def _figures(out, s, arms) -> list[str]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    names = ["none", *TECHNIQUES]
    xs = np.arange(len(names))
    for off, key in ((-0.2, "train"), (0.2, "test")):
        a = 100 * np.asarray([arms[n][key] for n in names])
        ax.bar(xs + off, a.mean(1), 0.4, label=key)
        ax.errorbar(
            xs + off,
            a.mean(1),
            yerr=minmax_yerr(a),
            fmt="none",
            color="k",
            capsize=3,
        )
    ax.set_xticks(xs, names, rotation=20)
    ax.set_ylim(80, 101)
    ax.set_ylabel("accuracy (%, bars: mean; lines: min-max over seeds)")
    ax.set_title(f"MLP on {s['train_size']} mnist5k digits")
    ax.legend()
    return [save_figure(fig, out, "ablation.png")]
