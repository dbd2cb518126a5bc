"""Self-supervised pre-training: fewer labels needed?

The claim (source texts): self-supervised learning, like transfer learning, reduces the
labelled data a task needs. Measured on mnist5k, with the transfer experiment's task
and network (`transfer_learning`): classify digits 5-9 with 10, 100 or all of their
training labels, using a CNN (the recipe's at half width) that is

- trained from scratch;
- pre-trained self-supervised with SimCLR (`dl.selfsup`) on all 4000 training images,
  labels unused, then fine-tuned, or read out linearly from its frozen features;
- pre-trained supervised on digits 0-4 with their labels (another task's labels, the
  transfer-learning alternative), then fine-tuned or read out the same way.

Each seed pre-trains its own networks and draws its own labelled examples; every
fine-tuning run takes the same number of optimizer steps at the learning rate that did
best on a validation split of digits 5-9, and every read-out its L2 strength chosen
there too.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from dl import analysis, data, models, selfsup
from dl.experiments.common import (
    check,
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
from dl.experiments.transfer_learning import CNN, fine_tune, frozen_probe, split_classes

NAME = "self_supervised"
SETTINGS = {
    "full": dict(
        seeds=5,
        ssl_epochs=60,
        ssl_batch_size=256,
        pretrain_epochs=20,
        labels=(10, 100, 1000, None),
        steps=600,
        learning_rates=(3e-4, 1e-3, 3e-3, 1e-2),
        val_size=500,
    ),
    "quick": dict(
        seeds=3,
        ssl_epochs=20,
        ssl_batch_size=256,
        pretrain_epochs=8,
        labels=(10, 100, None),
        steps=100,
        learning_rates=(1e-3, 3e-3),
        val_size=300,
    ),
}
PRETRAINED = ("ssl", "supervised")
ARMS = (
    "scratch",
    "ssl_fine_tuned",
    "ssl_probe",
    "supervised_fine_tuned",
    "supervised_probe",
)
FEATURES = 128  # the encoder's output: the first layer of SimCLR's projection head
TOLERANCE = 3.0  # points: "rivals" supervised pre-training means within this or better

Config = experiment_config(NAME, SETTINGS)


def _pretrain(s, ds, a_train, seeds, timer) -> dict[str, dict]:
    """Per seed, the body (every layer but the head) of each pre-trained network, as
    arrays with a leading seed axis."""
    x = ds.train[0]
    encoder = models.get_model("cnn", FEATURES, kernels="auto", **CNN)
    with timer("simclr"):
        ssl = train_many(
            selfsup.SimCLR(encoder=encoder),
            (x, np.zeros(len(x), np.float32)),  # no labels: the loss ignores them
            seeds,
            epochs=s["ssl_epochs"],
            batch_size=s["ssl_batch_size"],
            loss="nt_xent",
            eval_data={"test": (ds.test[0], np.zeros(len(ds.test[0]), np.float32))},
            eval_every=s["ssl_epochs"],
            runs="sequential",  # convolutions: see train_seeds
        )
    supervised_model = models.get_model("cnn", 5, kernels="auto", **CNN)
    with timer("supervised"):
        sup = train_many(
            supervised_model,
            a_train,
            seeds,
            epochs=s["pretrain_epochs"],
            runs="sequential",
        )
    return {
        "ssl": selfsup.encoder_params(ssl.states.params),
        "supervised": {k: v for k, v in sup.states.params.items() if k != "head"},
        # NT-Xent on the (unlabelled) test images before and after pre-training, per seed
        "ssl_test_loss": [
            np.asarray(h["test/loss"]).tolist() for h in (ssl.history[0], ssl.history[-1])
        ],
    }


def _features(model, body, i, x) -> np.ndarray:
    """Seed i's pre-trained penultimate features of x (the head is not used)."""
    params = jax.tree.map(lambda a: a[i], body)
    variables = model.init(jax.random.key(0), x[:1])
    variables = {**variables, "params": {**variables["params"], **params}}
    penultimate = f"hidden{len(CNN['dense']) - 1}"
    return analysis.activations(model, variables, x, include_input=False)[penultimate]


def run(config: Config) -> dict[str, Any]:
    """Run the experiment as `config` says; write results.json, report.md and figures to
    `config.out`."""
    out, s, timer = prepare(config, Config, NAME)
    if None not in s["labels"] or not {10, 100} <= set(s["labels"]):
        raise ValueError(f"{NAME}'s labels must include 10, 100 and None (all); got {s['labels']}.")
    seeds = seed_list(config.seed, s["seeds"])
    ds = data.load("mnist5k")
    (x, y), (xt, yt) = ds.train, ds.test
    a_train = split_classes(x, y, 0, 5)
    b_train, b_test = split_classes(x, y, 5, 10), split_classes(xt, yt, 5, 10)
    order = np.random.default_rng(0).permutation(len(b_train[0]))
    val_idx, pool_idx = order[: s["val_size"]], order[s["val_size"] :]
    b_val = (b_train[0][val_idx], b_train[1][val_idx])
    b_pool = (b_train[0][pool_idx], b_train[1][pool_idx])
    pre = _pretrain(s, ds, a_train, seeds, timer)
    model = models.get_model("cnn", 5, kernels="auto", **CNN)
    with timer("features"):
        feats = {
            k: [
                {
                    n: _features(model, pre[k], i, v[0])
                    for n, v in (("val", b_val), ("test", b_test))
                }
                for i in range(len(seeds))
            ]
            for k in PRETRAINED
        }
    arms = {"scratch": None, **{f"{k}_fine_tuned": pre[k] for k in PRETRAINED}}
    sets = {"val": b_val, "test": b_test}
    acc, draws = fine_tune(model, s, b_pool, sets, seeds, arms, timer, per_seed_params=True)
    for k in PRETRAINED:
        acc[f"{k}_probe"] = {}
        for key, labelled in draws.items():
            with timer(f"{k}_probe"):
                probes = [
                    frozen_probe(
                        _features(model, pre[k], i, d[0]),
                        d[1],
                        (feats[k][i]["val"], b_val[1]),
                        (feats[k][i]["test"], b_test[1]),
                    )
                    for i, d in enumerate(labelled)
                ]
            acc[f"{k}_probe"][key] = {
                "test": [p[0] for p in probes],
                "l2": [p[1] for p in probes],
            }
    acc = {a: acc[a] for a in ARMS}

    def test(arm, k):
        return 100 * np.asarray(acc[arm][k]["test"])

    def gap(arm, k, base="scratch"):
        return test(arm, k) - test(base, k)

    def mean(arm, k):
        return f"{test(arm, k).mean():.1f}%"

    verdicts = [
        seeded_claim(
            "Self-supervised pre-training reduces the labels needed: 10 labels",
            "10 labels: paired test accuracy, SimCLR-pre-trained and fine-tuned minus "
            "trained from scratch (each at the learning rate chosen on validation), > 0",
            gap("ssl_fine_tuned", "10"),
            unit=" points",
            measured=f"{mean('ssl_fine_tuned', '10')} vs {mean('scratch', '10')}",
        ),
        seeded_claim(
            "Self-supervised pre-training reduces the labels needed: 100 labels",
            "100 labels: paired test accuracy, SimCLR fine-tuned minus scratch, > 0",
            gap("ssl_fine_tuned", "100"),
            unit=" points",
            measured=f"{mean('ssl_fine_tuned', '100')} vs {mean('scratch', '100')}",
        ),
        seeded_claim(
            "Self-supervised features are useful as they are (linear probe)",
            "100 labels: paired test accuracy, a linear read-out of the frozen SimCLR "
            "features minus the CNN trained from scratch, > 0",
            gap("ssl_probe", "100"),
            unit=" points",
            measured=f"{mean('ssl_probe', '100')} vs {mean('scratch', '100')}",
        ),
        seeded_claim(
            "Self-supervised pre-training rivals supervised pre-training",
            "10 labels: paired test accuracy, SimCLR fine-tuned minus fine-tuned from "
            f"supervised pre-training on digits 0-4, > -{TOLERANCE:g} points",
            gap("ssl_fine_tuned", "10", "supervised_fine_tuned"),
            threshold=-TOLERANCE,
            unit=" points",
            measured=f"{mean('ssl_fine_tuned', '10')} vs {mean('supervised_fine_tuned', '10')}",
        ),
        seeded_claim(
            "The advantage of self-supervised pre-training shrinks when labels are plentiful",
            f"paired (SimCLR fine-tuned - scratch) with 10 labels minus with all "
            f"{len(b_pool[0])}, > 0",
            gap("ssl_fine_tuned", "10") - gap("ssl_fine_tuned", "all"),
            unit=" points",
            measured=f"{gap('ssl_fine_tuned', 'all').mean():+.1f} points with all labels vs "
            f"{gap('ssl_fine_tuned', '10').mean():+.1f} with 10",
        ),
        check(
            "SimCLR learned to match views",
            "every seed's NT-Xent on the test images (views drawn from a fixed key) fell "
            "during pre-training",
            "before {:.3f}, after {:.3f} (mean over seeds)".format(
                *(np.mean(v) for v in pre["ssl_test_loss"])
            ),
            bool(np.all(np.less(*pre["ssl_test_loss"][::-1]))),
        ),
    ]
    keys = list(acc["scratch"])
    results = {
        "experiment": NAME,
        "quick": config.is_quick,
        "seed": config.seed,
        "seeds": seeds,
        "settings": s,
        "ssl_test_loss": {
            "before": pre["ssl_test_loss"][0],
            "after": pre["ssl_test_loss"][1],
        },
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
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    xs_plot = [len(b_pool[0]) if k == "all" else int(k) for k in keys]
    for arm, style in zip(ARMS, ("ko--", "bs-", "b^:", "rs-", "r^:"), strict=True):
        a = np.asarray([test(arm, k) for k in keys])
        ax.errorbar(xs_plot, a.mean(1), yerr=minmax_yerr(a), fmt=style, capsize=3, label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training examples of digits 5-9")
    ax.set_ylabel("test accuracy (%, min-max over seeds)")
    ax.set_title("self-supervised (SimCLR) vs supervised pre-training vs scratch")
    ax.legend(fontsize=8)
    results["figures"] = [save_figure(fig, out, "self_supervised.png")]
    write_results(out, results)
    sections = [
        "## Test accuracy on digits 5-9 (%), mean over seeds",
        "",
        "| labels | " + " | ".join(a.replace("_", " ") for a in ARMS) + " |",
        "|---|" + "---|" * len(ARMS),
        *[f"| {k} | " + " | ".join(f"{test(a, k).mean():.1f}" for a in ARMS) + " |" for k in keys],
        "",
        f"Seeds {seeds}: each pre-trains its own networks and draws its own labelled "
        f"digits. CNN {CNN}. SimCLR: two views per image (shifts of up to 4 pixels, 30% "
        f"of pixels masked), a {FEATURES}-unit output layer, ReLU and a 64-unit "
        f"projection, NT-Xent at temperature 0.5, batch {s['ssl_batch_size']}, "
        f"{s['ssl_epochs']} epochs over the 4000 training images (labels unused). "
        f"Supervised pre-training: digits 0-4 with their labels, {s['pretrain_epochs']} "
        f"epochs. Fine-tuning: every layer, {s['steps']} Adam steps (batch 64, or all "
        f"examples when fewer) at the rate of {list(s['learning_rates'])} best on "
        f"{len(b_val[0])} validation digits of 5-9 (held out of every draw). Probe: an "
        "L2-regularised softmax on the frozen last hidden layer (L-BFGS), its L2 strength "
        "chosen on the same validation digits.",
        "",
        "What it means: pre-training is credited with what it adds over the same network "
        "trained from scratch on the same labelled digits, each with its best learning "
        "rate. SimCLR sees the task's own images without labels; supervised pre-training "
        "sees another task's images with labels: the trade a practitioner faces.",
    ]
    (out / "report.md").write_text(
        report(
            "Self-supervised pre-training",
            "self-supervised pre-training reduces the labels a task needs.",
            results,
            sections,
        )
    )
    return results
