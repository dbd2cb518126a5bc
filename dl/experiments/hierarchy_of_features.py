"""The hierarchy of features: measure whether deeper layers hold more abstract features.

The claim (source texts): "Each successive layer captures increasingly abstract
patterns: early layers detect low-level features (edges, textures), middle layers
combine them into mid-level concepts (shapes, motifs), deep layers represent high-level
abstractions (objects, meaning)."

On mnist1d (a 1-D CNN like the dataset's reference model: three conv blocks and a
linear head), mnist5k and shapes (2-D CNNs with 7x7 first-layer filters), for several
seeds: linear probes per layer against random-init probes; linear CKA between layers,
across seeds and against the labels; first-layer filters and their Gabor fits against
the init and Gaussian-noise nulls; effective against theoretical receptive fields; the
most exciting input patches per layer; and transfer by layer (Yosinski et al. 2014).
Each criterion of the issue becomes a verdict computed from the numbers; one that fails
is reported as FAIL with its numbers.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import optax

from dl import analysis, data, models
from dl.baselines import DeepClassifier
from dl.experiments.common import (
    count_outcomes,
    experiment_config,
    prepare,
    pyplot,
    save_figure,
    summarize_verdicts,  # noqa: F401  (the experiment interface)
    verdict,
    verdict_table,
    write_results,
)

NAME = "hierarchy_of_features"

# Per dataset: the model (a `dl.models.CNN`) and its training; the 1-D model is the
# cnn/mnist1d recipe (the mnist1d reference CNN), the 2-D ones three conv blocks with a
# 7x7 first layer (3x3 filters have too few pixels for a Gabor fit to mean anything).
MODELS: dict[str, dict[str, Any]] = {
    "mnist1d": {},
    "mnist5k": {"channels": (16, 32, 64), "kernel_size": 3, "first_kernel_size": 7, "dense": ()},
    "shapes": {"channels": (16, 32, 64), "kernel_size": 3, "first_kernel_size": 7, "dense": ()},
}

SETTINGS = {
    "full": dict(
        seeds={"mnist1d": 5, "mnist5k": 3, "shapes": 3},
        epochs={"mnist1d": 60, "mnist5k": 15, "shapes": 15},
        transfer={"mnist1d": 3, "mnist5k": 1, "shapes": 1},  # seeds with transfer runs
        cka_examples=1000,
        erf_examples=256,
        gabor_filters=None,  # all
        gabor_restarts=8,
    ),
    "quick": dict(
        seeds={"mnist1d": 3, "mnist5k": 2, "shapes": 2},
        epochs={"mnist1d": 20, "mnist5k": 3, "shapes": 3},
        transfer={"mnist1d": 1},
        cka_examples=500,
        erf_examples=128,
        gabor_filters=8,
        gabor_restarts=4,
    ),
}
PROBE_L2 = 1e-3  # standardised features; 1e-4..1e-2 moved mnist1d probes by <= 2.5 points


def _blocks(acts: dict[str, np.ndarray]) -> list[str]:
    return [k for k in acts if k.startswith("block")]


def _train(name: str, ds, seed: int, epochs: int) -> DeepClassifier:
    overrides: dict[str, Any] = {"epochs": epochs, "seed": seed}
    if MODELS[name]:
        overrides["model_kwargs"] = MODELS[name]
    return DeepClassifier("cnn", name, eval_data=ds.test, **overrides).fit(*ds.train)


def _init_params(model, input_shape, seed: int):
    from dl import train

    return train.create_state(model, optax.identity(), input_shape, seed=seed).params


def _clipped_rf(rf: analysis.ReceptiveField, centre: int, n: int) -> int:
    """Input positions inside the theoretical RF of output unit `centre` (one axis)."""
    c = rf.start + centre * rf.jump
    lo, hi = c - (rf.size - 1) / 2, c + (rf.size - 1) / 2
    return int(min(hi, n - 1) - max(lo, 0) + 1)


def _analyse_seed(name, ds, seed, s, timer) -> dict[str, Any]:
    """Train one network and measure everything about it that needs no second seed."""
    with timer(f"{name}/train"):
        clf = _train(name, ds, seed, s["epochs"][name])
    model = clf.model_
    init = {"params": _init_params(model, ds.input_shape, seed)}
    (x, y), (xt, yt) = ds.train, ds.test
    with timer(f"{name}/probes"):
        acts = {"trained": analysis.activations(model, clf.state_, x)}
        acts_t = {"trained": analysis.activations(model, clf.state_, xt)}
        acts["init"] = analysis.activations(model, init, x, include_input=False)
        acts_t["init"] = analysis.activations(model, init, xt, include_input=False)
        probes = {
            which: {
                layer: analysis.linear_probe(
                    (acts[which][layer], y), (acts_t[which][layer], yt), l2=PROBE_L2
                ).test_accuracy
                for layer in acts[which]
            }
            for which in ("trained", "init")
        }
        # The input is the same for both networks: one probe serves both rows.
        probes["init"] = {"input": probes["trained"]["input"], **probes["init"]}
    n_cka = s["cka_examples"]
    with timer(f"{name}/cka"):
        sub = {k: v[:n_cka] for k, v in acts_t["trained"].items()}
        labels = analysis.one_hot(yt[:n_cka], ds.num_classes)
        cka_labels = {k: analysis.linear_cka(v, labels) for k, v in sub.items()}
        cka_within = analysis.cka_matrix(sub)
    with timer(f"{name}/erf"):
        spatial = ds.input_shape[:-1]
        rfs = analysis.cnn_receptive_fields(model, spatial[0])
        erf = {}
        for layer in _blocks(acts_t["trained"]):
            e = analysis.effective_receptive_field(
                model, clf.state_, xt[: s["erf_examples"]], layer
            )
            rf_area = int(
                np.prod(
                    [
                        _clipped_rf(rfs[layer], c, n)
                        for c, n in zip(e["centre"], spatial, strict=True)
                    ]
                )
            )
            erf[layer] = {
                "erf_size": e["size"],
                "rf": rfs[layer].size,
                "rf_area_in_input": rf_area,
                "ratio": e["size"] / rf_area,
                "map": e["map"],
            }
    with timer(f"{name}/gabor"):
        first = next(iter(clf.state_.params))
        kmax = s["gabor_filters"]
        filt = {
            "trained": analysis.first_layer_filters(clf.state_.params[first]["kernel"])[:kmax],
            "init": analysis.first_layer_filters(init["params"][first]["kernel"])[:kmax],
        }
        filt["noise"] = np.random.default_rng(seed).normal(size=filt["trained"].shape)
        gabor = {
            k: analysis.gabor_fit(f, restarts=s["gabor_restarts"], seed=seed).tolist()
            for k, f in filt.items()
        }
    return {
        "seed": seed,
        "test_accuracy": float(clf.history_[-1]["test/accuracy"]),
        "probes": probes,
        "cka_labels": cka_labels,
        "cka_within": cka_within,
        "erf": erf,
        "gabor_r2": gabor,
        "_acts_test": sub,  # for across-seed CKA (dropped before writing)
        "_acts_test_all": acts_t["trained"],  # for the top-patch figure
        "_filters": filt,
        "_rfs": rfs,
    }


def _across_seeds(per_seed: list[dict]) -> dict[str, Any]:
    """Same-layer CKA across seeds and layer identification by maximum CKA."""
    blocks = _blocks(per_seed[0]["_acts_test"])
    same = {b: [] for b in blocks}
    hits, trials, example = 0, 0, None
    for a, b in itertools.combinations(per_seed, 2):
        ra = {k: a["_acts_test"][k] for k in blocks}
        rb = {k: b["_acts_test"][k] for k in blocks}
        m = analysis.cka_matrix(ra, rb)
        if example is None:
            example = m
        for i, layer in enumerate(blocks):
            same[layer].append(float(m[i, i]))
            hits += int(np.argmax(m[i]) == i)
            trials += 1
    return {
        "same_layer_cka": {k: float(np.mean(v)) for k, v in same.items()},
        "same_layer_cka_all": same,
        "identified": hits,
        "identification_trials": trials,
        "example_matrix": example,
        "blocks": blocks,
    }


def _transfer(name, ds, seed, epochs) -> dict[str, Any]:
    """Yosinski et al. 2014 on a class split: A = first half of the classes, B = rest."""
    k = ds.num_classes
    half = k // 2
    (x, y), (xt, yt) = ds.train, ds.test

    def subset(xx, yy, lo, hi):
        m = (yy >= lo) & (yy < hi)
        return xx[m], yy[m] - lo

    a_tr, a_te = subset(x, y, 0, half), subset(xt, yt, 0, half)
    b_tr, b_te = subset(x, y, half, 2 * half), subset(xt, yt, half, 2 * half)
    recipe = _recipe(name)
    kwargs = dict(recipe.model_kwargs)
    model = models.get_model("cnn", half, kernels="auto", **kwargs)
    opt = dict(epochs=epochs, batch_size=recipe.batch_size, learning_rate=recipe.learning_rate)
    ep = dict(seed=seed, **opt)

    acc_a, params_a = analysis.train_frozen(model, a_tr, a_te, **ep)
    acc_b, params_b = analysis.train_frozen(model, b_tr, b_te, **ep)
    convs = [n for n in params_b if n.startswith("conv")]
    depth = len(kwargs.get("channels", ()))
    rows = []

    def fit(**kw):  # fresh upper layers and batch order: seed + 1
        return analysis.train_frozen(model, b_tr, b_te, seed=seed + 1, **opt, **kw)[0]

    for n in range(1, depth + 1):
        names = [c for c in convs if int(c[4:].split("_")[0]) < n]
        row = {"layers": n}
        for label, src in (("BnB", params_b), ("AnB", params_a)):
            copy = {c: src[c] for c in names}
            row[label] = fit(copy=copy, frozen=names)
            row[label + "+"] = fit(copy=copy)
        row["random_frozen"] = fit(frozen=names)
        rows.append(row)
    return {"seed": seed, "baseA": acc_a, "baseB": acc_b, "by_layer": rows, "classes_A": half}


def _recipe(name):
    from dl.recipes import default_config

    return default_config("cnn", name, **({"model_kwargs": MODELS[name]} if MODELS[name] else {}))


def _mean(xs):
    return float(np.mean(xs)) if xs else float("nan")


def _verdicts(name: str, d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    seeds = d["seeds"]
    blocks = d["across"]["blocks"]
    tr = [_mean([r["probes"]["trained"][b] for r in seeds]) for b in blocks]
    rnd = [_mean([r["probes"]["init"][b] for r in seeds]) for b in blocks]
    pct = ", ".join(f"{b} {100 * a:.1f}%" for b, a in zip(blocks, tr, strict=True))
    drops = [100 * (tr[i] - tr[i + 1]) for i in range(len(tr) - 1)]
    out.append(
        verdict(
            f"Later layers are more linearly decodable ({name})",
            "probe accuracy non-decreasing across conv blocks (within 1 point)",
            f"{pct} (mean of {len(seeds)} seeds); largest drop {max([0.0, *drops]):.1f} points",
            all(x <= 1.0 for x in drops),
        )
    )
    gain = 100 * (tr[-1] - tr[0])
    out.append(
        verdict(
            f"Deep layers are far more abstract than early ones ({name})",
            "probe accuracy, last block minus first block >= 15 points",
            f"{gain:+.1f} points ({100 * tr[0]:.1f}% -> {100 * tr[-1]:.1f}%)",
            gain >= 15,
        )
    )
    over = 100 * (tr[-1] - rnd[-1])
    out.append(
        verdict(
            f"The hierarchy is learned, not architectural ({name})",
            "trained last-block probe >= random-init last-block probe + 30 points",
            f"trained {100 * tr[-1]:.1f}% vs random init {100 * rnd[-1]:.1f}% ({over:+.1f})",
            over >= 30,
        )
    )
    same = [d["across"]["same_layer_cka"][b] for b in blocks]
    ups = [same[i + 1] - same[i] for i in range(len(same) - 1)]
    out.append(
        verdict(
            f"Early layers are universal, deep ones seed-specific ({name})",
            "same-layer CKA across seeds does not increase with depth",
            ", ".join(f"{b} {c:.3f}" for b, c in zip(blocks, same, strict=True))
            + f" ({d['across']['identification_trials'] // len(blocks)} seed pairs)",
            all(u <= 0 for u in ups),
        )
    )
    hit, n = d["across"]["identified"], d["across"]["identification_trials"]
    out.append(
        verdict(
            f"Layers correspond across seeds ({name})",
            "each layer's most CKA-similar layer in another seed is the same layer, 100%",
            f"{hit}/{n} ({100 * hit / n:.0f}%)",
            hit == n,
        )
    )
    erf = [_mean([r["erf"][b]["erf_size"] for r in seeds]) for b in blocks]
    ratio = [_mean([r["erf"][b]["ratio"] for r in seeds]) for b in blocks]
    out.append(
        verdict(
            f"Deeper units see more of the input, but effectively less of their RF ({name})",
            "ERF size grows with depth while ERF / theoretical RF shrinks",
            "ERF "
            + ", ".join(f"{e:.0f}" for e in erf)
            + " positions; ERF/RF "
            + ", ".join(f"{q:.2f}" for q in ratio),
            all(erf[i + 1] > erf[i] for i in range(len(erf) - 1))
            and all(ratio[i + 1] < ratio[i] for i in range(len(ratio) - 1)),
        )
    )
    g = {
        k: float(np.median([v for r in seeds for v in r["gabor_r2"][k]]))
        for k in seeds[0]["gabor_r2"]
    }
    points = int(np.prod(seeds[0]["_filters"]["trained"].shape[1:]))
    params = analysis.GABOR_PARAMETERS[seeds[0]["_filters"]["trained"].ndim - 1]
    degenerate = points <= params
    out.append(
        verdict(
            f"First-layer filters are Gabor-like edge detectors ({name})",
            "median Gabor-fit R^2 of trained first-layer filters > the same filters at init",
            f"trained {g['trained']:.3f}, init {g['init']:.3f}, Gaussian noise {g['noise']:.3f}"
            + (
                f"; not measurable: {points}-point filters have no more points than the "
                f"Gabor's {params} parameters, so any filter fits"
                if degenerate
                else ""
            ),
            None if degenerate else g["trained"] > g["init"],
        )
    )
    if d["transfer"]:
        t = d["transfer"]
        base_b = _mean([r["baseB"] for r in t])
        by = {
            key: [_mean([r["by_layer"][i][key] for r in t]) for i in range(len(blocks))]
            for key in ("AnB", "BnB", "random_frozen", "AnB+", "BnB+")
        }
        anb, rnd_f = by["AnB"], by["random_frozen"]
        out.append(
            verdict(
                f"First-layer features are general (transfer, {name})",
                "AnB at layer 1 >= baseB - 1 point",
                f"AnB1 {100 * anb[0]:.1f}% vs baseB {100 * base_b:.1f}%",
                anb[0] >= base_b - 0.01,
            )
        )
        out.append(
            verdict(
                f"Last-layer features are specific (transfer, {name})",
                "AnB at the last layer <= baseB - 5 points",
                f"AnB{len(blocks)} {100 * anb[-1]:.1f}% vs baseB {100 * base_b:.1f}%",
                anb[-1] <= base_b - 0.05,
            )
        )
        out.append(
            verdict(
                f"Transferred features beat random features at every depth ({name})",
                "AnB > random-frozen at every depth",
                "AnB "
                + ", ".join(f"{100 * a:.1f}" for a in anb)
                + " vs random-frozen "
                + ", ".join(f"{100 * a:.1f}" for a in rnd_f),
                all(a > r for a, r in zip(anb, rnd_f, strict=True)),
            )
        )
    return out


Config = experiment_config(NAME, SETTINGS)


def run(config: Config) -> dict[str, Any]:
    """Run the experiment as `config` says; write results.json, report.md and figures to
    `config.out`."""
    out, s, timer = prepare(config, Config, NAME)
    quick, seed = config.is_quick, config.seed
    per_dataset: dict[str, Any] = {}
    verdicts: list[dict[str, Any]] = []
    for name in MODELS:
        ds = data.load(name)
        seeds = [_analyse_seed(name, ds, seed + i, s, timer) for i in range(s["seeds"][name])]
        with timer(f"{name}/cka"):
            across = _across_seeds(seeds)
        with timer(f"{name}/transfer"):
            transfer = [
                _transfer(name, ds, seed + i, s["epochs"][name])
                for i in range(s["transfer"].get(name, 0))
            ]
        d = {"seeds": seeds, "across": across, "transfer": transfer}
        verdicts += _verdicts(name, d)
        d["figures"] = _figures(out, name, ds, d)
        per_dataset[name] = d
    results = {
        "experiment": NAME,
        "quick": quick,
        "seed": seed,
        "settings": s,
        "models": {k: _recipe(k).model_kwargs for k in MODELS},
        "probe_l2": PROBE_L2,
        "datasets": {k: _public(v) for k, v in per_dataset.items()},
        "timings_s": timer.sections,
        "verdicts": verdicts,
    }
    results["figures"] = [f for d in per_dataset.values() for f in d["figures"]]
    write_results(out, results)
    (out / "report.md").write_text(_report(results))
    return results


def _public(d: dict[str, Any]) -> dict[str, Any]:
    """What goes into results.json: no arrays of activations, models or ERF maps."""
    seeds = []
    for r in d["seeds"]:
        r = {k: v for k, v in r.items() if not k.startswith("_")}
        r["erf"] = {b: {k: v for k, v in e.items() if k != "map"} for b, e in r["erf"].items()}
        seeds.append(r)
    return {
        "seeds": seeds,
        "across_seeds": d["across"],
        "transfer": d["transfer"],
        "figures": d["figures"],
    }


# --------------------------------------------------------------------------------- figures


def _figures(out: Path, name: str, ds, d: dict[str, Any]) -> list[str]:
    plt = pyplot()
    seeds = d["seeds"]
    layers = list(seeds[0]["probes"]["trained"])
    blocks = d["across"]["blocks"]
    files = []

    # Probe accuracy by layer, trained against random init.
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    for which, style in (("trained", "o-"), ("init", "s--")):
        acc = np.array([[100 * r["probes"][which][lay] for lay in layers] for r in seeds])
        ax.errorbar(
            range(len(layers)),
            acc.mean(0),
            yerr=acc.std(0),
            fmt=style,
            capsize=3,
            label="trained" if which == "trained" else "random init",
        )
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("linear probe test accuracy (%)")
    ax.set_title(f"{name}: probe accuracy by layer ({len(seeds)} seeds)")
    ax.legend()
    files.append(save_figure(fig, out, f"probes_{name}.png"))

    # CKA: within a network, across two seeds, and with the labels.
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    within = seeds[0]["cka_within"]
    for ax, m, title, ticks in (
        (axes[0], within, "CKA between layers (seed 0)", (layers, layers)),
        (
            axes[1],
            d["across"]["example_matrix"],
            "CKA across seeds (rows seed 0)",
            (blocks, blocks),
        ),
    ):
        if m is None:
            ax.axis("off")
            continue
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(ticks[1])), ticks[1], rotation=45)
        ax.set_yticks(range(len(ticks[0])), ticks[0])
        for (i, j), v in np.ndenumerate(m):
            ax.text(
                j,
                i,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="k" if v > 0.6 else "w",
            )
        ax.set_title(title)
    fig.colorbar(im, ax=axes[1])
    lab = np.array([[r["cka_labels"][lay] for lay in layers] for r in seeds])
    axes[2].errorbar(range(len(layers)), lab.mean(0), yerr=lab.std(0), fmt="o-", capsize=3)
    axes[2].set_xticks(range(len(layers)), layers)
    axes[2].set_title("CKA with the one-hot labels")
    fig.suptitle(name)
    files.append(save_figure(fig, out, f"cka_{name}.png"))

    # First-layer filters: trained and at init (seed 0).
    filt = seeds[0]["_filters"]
    n = min(16, len(filt["trained"]))
    fig, axes = plt.subplots(2, n, figsize=(n * 0.9, 2.4), squeeze=False, layout="constrained")
    for row, which in enumerate(("trained", "init")):
        for i in range(n):
            ax = axes[row, i]
            f = filt[which][i]
            if f.ndim == 2:
                ax.imshow(f, cmap="gray")
            else:
                ax.plot(f, "k.-")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(which)
    fig.suptitle(f"{name}: first-layer filters (seed {seeds[0]['seed']})")
    files.append(save_figure(fig, out, f"filters_{name}.png"))

    # Effective receptive field per block.
    erf = seeds[0]["erf"]
    fig, axes = plt.subplots(
        1, len(blocks), figsize=(3.2 * len(blocks), 3), squeeze=False, layout="constrained"
    )
    for ax, b in zip(axes[0], blocks, strict=True):
        m = erf[b]["map"]
        if m.ndim == 2:
            ax.imshow(m, cmap="magma")
        else:
            ax.plot(m, "k-")
        ax.set_title(f"{b}: ERF {erf[b]['erf_size']}, RF {erf[b]['rf_area_in_input']}", fontsize=9)
    fig.suptitle(f"{name}: |d centre unit / d input| (seed {seeds[0]['seed']})")
    files.append(save_figure(fig, out, f"erf_{name}.png"))

    # Top patches per block (seed 0): rows = channels, columns = patches.
    rfs = seeds[0]["_rfs"]
    xt = ds.test[0]
    acts = seeds[0]["_acts_test_all"]
    fig, axes = plt.subplots(
        1, len(blocks), figsize=(4 * len(blocks), 4), squeeze=False, layout="constrained"
    )
    for ax, b in zip(axes[0], blocks, strict=True):
        patches, _ = analysis.top_patches(acts[b], xt, rfs[b], channels=6, k=6)
        c, k = patches.shape[:2]
        if patches.ndim == 5:  # images: tile
            p = patches[..., 0]
            size = p.shape[-1]
            grid = np.ones((c * (size + 1), k * (size + 1))) * p.min()
            for i, j in itertools.product(range(c), range(k)):
                grid[
                    i * (size + 1) : i * (size + 1) + size, j * (size + 1) : j * (size + 1) + size
                ] = p[i, j]
            ax.imshow(grid, cmap="gray")
        else:  # signals: one row of curves per channel, offset
            for i in range(c):
                for j in range(k):
                    ax.plot(
                        np.arange(patches.shape[2]) + j * (patches.shape[2] + 2),
                        patches[i, j, :, 0] - 4 * i,
                        lw=0.8,
                    )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{b} (RF {rfs[b].size})")
    fig.suptitle(f"{name}: most exciting input patches (rows: channels)")
    files.append(save_figure(fig, out, f"patches_{name}.png"))

    # Transfer by layer.
    if d["transfer"]:
        t = d["transfer"]
        depth = range(1, len(blocks) + 1)
        fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
        base_b = 100 * _mean([r["baseB"] for r in t])
        ax.axhline(base_b, color="k", lw=1, label="baseB")
        for key, style in (
            ("BnB", "bo-"),
            ("BnB+", "bo--"),
            ("AnB", "rs-"),
            ("AnB+", "rs--"),
            ("random_frozen", "g^:"),
        ):
            ys = [100 * _mean([r["by_layer"][i][key] for r in t]) for i in range(len(blocks))]
            ax.plot(depth, ys, style, label=key)
        ax.set_xticks(list(depth))
        ax.set_xlabel("conv blocks copied (n)")
        ax.set_ylabel("test accuracy on B (%)")
        ax.set_title(f"{name}: transfer by layer ({len(t)} seed(s))")
        ax.legend(fontsize=7)
        files.append(save_figure(fig, out, f"transfer_{name}.png"))
    return files


# ---------------------------------------------------------------------------------- report


def _report(r: dict[str, Any]) -> str:
    lines = [
        f"# The hierarchy of features{' (quick mode)' if r['quick'] else ''}",
        "",
        "Claim: each successive layer captures increasingly abstract patterns: early layers "
        "detect low-level features (edges, textures), middle layers combine them, deep "
        "layers represent high-level abstractions.",
        "",
        f"Verdicts: {count_outcomes(r['verdicts'])}.",
        "",
        "## Verdicts",
        "",
        verdict_table(r["verdicts"]),
        "",
    ]
    for name, d in r["datasets"].items():
        seeds = d["seeds"]
        layers = list(seeds[0]["probes"]["trained"])
        accs = [100 * x["test_accuracy"] for x in seeds]
        lines += [
            f"## {name}",
            "",
            f"Model: `cnn` {r['models'][name]}; test accuracy "
            f"{statistics.mean(accs):.1f}% (seeds: {', '.join(f'{a:.1f}' for a in accs)}).",
            "",
            "| layer | probe, trained (%) | probe, random init (%) | CKA with labels | "
            "ERF (positions) | RF in input | ERF/RF |",
            "|---|---|---|---|---|---|---|",
        ]
        for lay in layers:
            tr = _mean([100 * x["probes"]["trained"][lay] for x in seeds])
            rn = _mean([100 * x["probes"]["init"][lay] for x in seeds])
            cl = _mean([x["cka_labels"][lay] for x in seeds])
            if lay in seeds[0]["erf"]:
                e = [x["erf"][lay] for x in seeds]
                erf = (
                    f"{_mean([v['erf_size'] for v in e]):.0f} | "
                    f"{_mean([v['rf_area_in_input'] for v in e]):.0f} | "
                    f"{_mean([v['ratio'] for v in e]):.2f}"
                )
            else:
                erf = "- | - | -"
            lines.append(f"| {lay} | {tr:.1f} | {rn:.1f} | {cl:.3f} | {erf} |")
        g = {
            k: np.median([v for x in seeds for v in x["gabor_r2"][k]]) for k in seeds[0]["gabor_r2"]
        }
        lines += [
            "",
            "First-layer Gabor fit, median R^2: "
            + ", ".join(f"{k} {v:.3f}" for k, v in g.items())
            + ".",
        ]
        if d["transfer"]:
            t = d["transfer"]
            lines += [
                "",
                f"Transfer by layer (classes A = first {t[0]['classes_A']}, B = the rest; "
                f"{len(t)} seed(s)): baseA {100 * _mean([x['baseA'] for x in t]):.1f}%, "
                f"baseB {100 * _mean([x['baseB'] for x in t]):.1f}%.",
                "",
                "| n | BnB | BnB+ | AnB | AnB+ | random frozen |",
                "|---|---|---|---|---|---|",
            ]
            for i, row in enumerate(t[0]["by_layer"]):
                vals = [
                    100 * _mean([x["by_layer"][i][k] for x in t])
                    for k in ("BnB", "BnB+", "AnB", "AnB+", "random_frozen")
                ]
                lines.append(f"| {row['layers']} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
        lines += ["", *[f"![{f}]({f})" for f in d["figures"]], ""]
    lines += [
        "## Notes",
        "",
        "- Probes: L2-regularised softmax (L-BFGS, l2 = "
        f"{r['probe_l2']}) on standardised, frozen features of all training examples; "
        "accuracy on the test set. CKA: linear CKA on the first "
        f"{r['settings']['cka_examples']} test examples (the debiased estimator is in "
        "`dl.analysis.linear_cka`).",
        "- ERF: positions holding 95% of the mean |gradient| of the centre unit (summed "
        "over channels) over test inputs; RF: the theoretical receptive field clipped to "
        "the input.",
        "- Gabor fit on 1-D filters of 5 taps has more parameters (6) than points, so "
        "every filter, random or trained, fits almost perfectly: that verdict says little "
        "on mnist1d. The 2-D models use 7x7 first-layer filters (49 pixels, 9 parameters).",
        "- Transfer: AnB / BnB copy the first n conv blocks of the network trained on A / B "
        "and freeze them; '+' fine-tunes them; random-frozen freezes the first n blocks at "
        "their random initialisation. Upper layers start fresh.",
        "",
        "## Run time of this experiment",
        "",
        ", ".join(f"{k}: {v:.0f} s" for k, v in r["timings_s"].items()),
        "",
    ]
    return "\n".join(lines)
