"""Adversarial vulnerability: FGSM and PGD against the trained CNN.

The claim (source texts): small, carefully chosen perturbations fool neural networks.
The recipe's CNN is trained on mnist5k (several seeds), then attacked on every test digit
with FGSM and PGD (with restarts in full mode) at growing L-infinity radius eps > 0
(pixels in [0, 1]), against the control of random sign noise of the same size: a network
that random noise of size eps does not fool but a crafted perturbation of the same size
does is "fooled by small perturbations".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dl import adversarial, data
from dl.baselines import DeepClassifier
from dl.experiments.common import (
    accuracy,
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
    write_results,
)

NAME = "adversarial"
SETTINGS = {
    "full": dict(
        seeds=5, epochs=15, eps=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3), pgd_steps=40, restarts=5
    ),
    "quick": dict(seeds=3, epochs=3, eps=(0.05, 0.1, 0.2), pgd_steps=10, restarts=1),
}
SMALL_EPS = 0.1  # 10% of the pixel range: the digits stay easy to read (see the figure)
ATTACKS = ("fgsm", "pgd", "random")


Config = experiment_config(NAME, SETTINGS)


def _attack_all(s, model, state, x, y, seed):
    """Accuracy under each attack at each eps (the whole test set), and examples."""
    curves: dict[str, list[float]] = {a: [] for a in ATTACKS}
    examples: dict[str, np.ndarray] = {}
    for eps in s["eps"]:
        attacks = {
            "fgsm": lambda xb, yb, e=eps: adversarial.fgsm(model, state, xb, yb, e),
            "pgd": lambda xb, yb, e=eps: adversarial.pgd(
                model, state, xb, yb, e, steps=s["pgd_steps"], restarts=s["restarts"], seed=seed
            ),
            "random": lambda xb, yb, e=eps: adversarial.random_sign_noise(xb, e, seed=seed),
        }
        for name, attack in attacks.items():
            acc, adv = adversarial.accuracy_under(model, state, x, y, attack)
            curves[name].append(acc)
            if eps == SMALL_EPS:
                examples[name] = adv[:8]
    return curves, examples


def run(config: Config) -> dict[str, Any]:
    """Run the experiment as `config` says; write results.json, report.md and figures to
    `config.out`."""
    out, s, timer = prepare(config, Config, NAME)
    if SMALL_EPS not in s["eps"]:
        raise ValueError(f"{NAME}'s eps must include {SMALL_EPS}; got {s['eps']}.")
    seeds = seed_list(config.seed, s["seeds"])
    ds = data.load("mnist5k")
    x, y = ds.test
    runs = []
    for seed in seeds:
        with timer("train"):
            clf = DeepClassifier("cnn", "mnist5k", epochs=s["epochs"], seed=seed).fit(*ds.train)
        with timer("attacks"):
            clean = accuracy(clf.model_, clf.state_, x, y)
            curves, examples = _attack_all(s, clf.model_, clf.state_, x, y, seed)
        runs.append({"seed": seed, "clean_accuracy": clean, "accuracy_vs_eps": curves})
    i = s["eps"].index(SMALL_EPS)
    clean = np.asarray([r["clean_accuracy"] for r in runs])
    acc = {a: np.asarray([r["accuracy_vs_eps"][a] for r in runs]) for a in ATTACKS}  # (seeds, eps)
    pgd_drop, rnd_drop = clean - acc["pgd"][:, i], clean - acc["random"][:, i]
    verdicts = [
        seeded_claim(
            "Small perturbations fool the network",
            f"PGD at eps = {SMALL_EPS}: share of the test digits classified correctly when "
            "clean that the attack turns wrong (1 - attacked / clean accuracy) > 0.5",
            1.0 - acc["pgd"][:, i] / clean,
            threshold=0.5,
            measured=f"accuracy {100 * acc['pgd'][:, i].mean():.1f}% under PGD, "
            f"{100 * acc['fgsm'][:, i].mean():.1f}% under FGSM, clean {100 * clean.mean():.1f}%",
        ),
        seeded_claim(
            "It is the direction, not the size: random noise of the same size does not fool it",
            f"eps = {SMALL_EPS}: accuracy lost to random sign noise / accuracy lost to PGD < 0.1",
            rnd_drop / np.maximum(pgd_drop, 1e-9),
            threshold=0.1,
            direction="less",
            measured=f"noise {100 * acc['random'][:, i].mean():.1f}% vs clean "
            f"{100 * clean.mean():.1f}%",
        ),
        check(
            "The iterative attack is at least as strong as the one-step attack",
            "PGD accuracy <= FGSM accuracy at every eps > 0, for every seed",
            ", ".join(
                f"eps {e}: {100 * p:.1f} vs {100 * f:.1f}"
                for e, p, f in zip(s["eps"], acc["pgd"].mean(0), acc["fgsm"].mean(0), strict=True)
            ),
            bool(np.all(acc["pgd"] <= acc["fgsm"])),
        ),
    ]
    results = {
        "experiment": NAME,
        "quick": config.is_quick,
        "seed": config.seed,
        "seeds": seeds,
        "settings": s,
        "n_test": len(x),
        "runs": runs,
        "timings_s": timer.sections,
        "verdicts": verdicts,
    }
    results["figures"] = _figures(out, s, clean, acc, x, examples, clf.model_, clf.state_)
    write_results(out, results)
    sections = [
        "## Accuracy (%) under attack (mean over seeds)",
        "",
        "| eps | clean | " + " | ".join(str(e) for e in s["eps"]) + " |",
        "|---|---|" + "---|" * len(s["eps"]),
        *[
            f"| {name} | {100 * clean.mean():.1f} | "
            + " | ".join(f"{100 * a:.1f}" for a in acc[name].mean(0))
            + " |"
            for name in ATTACKS
        ],
        "",
        f"The recipe's CNN ({s['epochs']} epochs on mnist5k), seeds {seeds}, attacked on all "
        f"{len(x)} test digits. FGSM: one signed-gradient step. PGD: {s['pgd_steps']} steps "
        "of 2.5 eps / steps from a random start, projected onto the eps-ball and [0, 1], "
        f"{s['restarts']} restart(s) (a digit counts as robust only if every restart fails). "
        "Random: each pixel moved by +-eps at random.",
        "",
        "What it means: the attack is judged by the share of correctly classified digits it "
        "flips, against the control of random noise of the same size, which could have "
        "shown that any perturbation of that size breaks the network.",
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


def _figures(out, s, clean, acc, x, examples, model, state) -> list[str]:
    from dl import train

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    eps = [0.0, *s["eps"]]
    for name, style in (("fgsm", "o-"), ("pgd", "s-"), ("random", "^--")):
        a = 100 * np.concatenate([clean[:, None], acc[name]], axis=1).T  # (eps, seeds)
        ax.errorbar(eps, a.mean(1), yerr=minmax_yerr(a), fmt=style, capsize=3, label=name)
    ax.set_xlabel("eps (L-infinity, pixels in [0, 1]; 0 = clean)")
    ax.set_ylabel("test accuracy (%, min-max over seeds)")
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
    fig.suptitle(f"eps = {SMALL_EPS}, last seed's network: predicted class above each digit")
    files.append(save_figure(fig, out, "examples.png"))
    return files
