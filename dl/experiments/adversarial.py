"""Adversarial vulnerability: FGSM and PGD against the trained CNN.

The claim (source texts): small, carefully chosen perturbations fool neural networks.
The recipe's CNN is trained on mnist5k, then attacked on the test digits with FGSM and
PGD at growing L-infinity radius eps (pixels in [0, 1]), against the control of random
sign noise of the same size: a network that random noise of size eps does not fool but
a crafted perturbation of the same size does is "fooled by small perturbations".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dl import adversarial, data
from dl.baselines import DeepClassifier
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

NAME = "adversarial"
SETTINGS = {
    "full": dict(epochs=15, eps=(0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3), pgd_steps=40, n_test=1000),
    "quick": dict(epochs=4, eps=(0.0, 0.05, 0.1, 0.2, 0.3), pgd_steps=10, n_test=500),
}
SMALL_EPS = 0.1  # 10% of the pixel range: the digits stay easy to read (see the figure)


Config = experiment_config(NAME, SETTINGS)


def run(config: Config) -> dict[str, Any]:
    """Run the experiment as `config` says; write results.json, report.md and figures to
    `config.out`."""
    out, s, timer = prepare(config, Config, NAME)
    quick, seed = config.is_quick, config.seed
    ds = data.load("mnist5k")
    with timer("train"):
        clf = DeepClassifier("cnn", "mnist5k", epochs=s["epochs"], seed=seed).fit(*ds.train)
    model, state = clf.model_, clf.state_
    x, y = ds.test[0][: s["n_test"]], ds.test[1][: s["n_test"]]
    curves: dict[str, list[float]] = {"fgsm": [], "pgd": [], "random": []}
    examples: dict[str, np.ndarray] = {}
    with timer("attacks"):
        for eps in s["eps"]:
            attacks = {
                "fgsm": lambda xb, yb, e=eps: adversarial.fgsm(model, state, xb, yb, e),
                "pgd": lambda xb, yb, e=eps: adversarial.pgd(
                    model, state, xb, yb, e, steps=s["pgd_steps"], seed=seed
                ),
                "random": lambda xb, yb, e=eps: adversarial.random_sign_noise(xb, e, seed=seed),
            }
            for name, attack in attacks.items():
                acc, adv = adversarial.accuracy_under(model, state, x, y, attack)
                curves[name].append(acc)
                if eps == SMALL_EPS or (eps == max(s["eps"]) and SMALL_EPS not in s["eps"]):
                    examples[name] = adv[:8]
    clean = curves["pgd"][0]
    i_small = s["eps"].index(SMALL_EPS)
    pgd_small, rnd_small = curves["pgd"][i_small], curves["random"][i_small]
    verdicts = [
        verdict(
            "Small perturbations fool the network",
            f"PGD at eps = {SMALL_EPS}: accuracy < 50% (clean {100 * clean:.1f}%)",
            f"{100 * pgd_small:.1f}% (FGSM {100 * curves['fgsm'][i_small]:.1f}%)",
            pgd_small < 0.5,
        ),
        verdict(
            "It is the direction, not the size: random noise of the same size does not",
            f"random sign noise at eps = {SMALL_EPS}: accuracy >= clean - 5 points",
            f"{100 * rnd_small:.1f}% vs clean {100 * clean:.1f}%",
            rnd_small >= clean - 0.05,
        ),
        verdict(
            "The iterative attack is at least as strong as the one-step attack",
            "PGD accuracy <= FGSM accuracy at every eps",
            ", ".join(
                f"eps {e}: {100 * p:.1f} vs {100 * f:.1f}"
                for e, p, f in zip(s["eps"], curves["pgd"], curves["fgsm"], strict=True)
            ),
            all(p <= f for p, f in zip(curves["pgd"], curves["fgsm"], strict=True)),
            kind="check",
        ),
    ]
    results = {
        "experiment": NAME,
        "quick": quick,
        "seed": seed,
        "settings": s,
        "clean_accuracy": clean,
        "accuracy_vs_eps": curves,
        "timings_s": timer.sections,
        "verdicts": verdicts,
    }
    results["figures"] = _figures(out, s, curves, x, examples, model, state)
    write_results(out, results)
    sections = [
        "## Accuracy (%) under attack",
        "",
        "| eps | " + " | ".join(str(e) for e in s["eps"]) + " |",
        "|---|" + "---|" * len(s["eps"]),
        *[
            f"| {name} | " + " | ".join(f"{100 * a:.1f}" for a in curves[name]) + " |"
            for name in curves
        ],
        "",
        f"The recipe's CNN ({s['epochs']} epochs on mnist5k), attacked on {s['n_test']} test "
        f"digits. FGSM: one signed-gradient step. PGD: {s['pgd_steps']} steps of 2.5 eps / "
        "steps from a random start, projected onto the eps-ball and [0, 1]. Random: each "
        "pixel moved by +-eps at random.",
    ]
    (out / "report.md").write_text(
        report(
            "Adversarial vulnerability",
            "small perturbations fool networks.",
            results,
            sections,
        )
    )
    return results


def _figures(out, s, curves, x, examples, model, state) -> list[str]:
    from dl import train

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    for name, style in (("fgsm", "o-"), ("pgd", "s-"), ("random", "^--")):
        ax.plot(s["eps"], [100 * a for a in curves[name]], style, label=name)
    ax.set_xlabel("eps (L-infinity, pixels in [0, 1])")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    files = [save_figure(fig, out, "accuracy_vs_eps.png")]

    rows = [("clean", x[:8])] + [(k, v) for k, v in examples.items()]
    fig, axes = plt.subplots(len(rows), 8, figsize=(10, 1.4 * len(rows)), layout="constrained")
    for r, (name, imgs) in enumerate(rows):
        pred = train.predict(model, state, imgs).argmax(1)
        for c in range(8):
            ax = axes[r, c]
            ax.imshow(imgs[c, ..., 0], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{pred[c]}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(f"eps = {SMALL_EPS}: predicted class above each digit")
    files.append(save_figure(fig, out, "examples.png"))
    return files
