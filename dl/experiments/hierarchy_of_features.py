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
    check,
    closed,
    count_outcomes,
    experiment_config,
    prepare,
    pyplot,
    save_figure,
    seed_list,
    seeded_claim,
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
        datasets=tuple(MODELS),
        seeds={"mnist1d": 5, "mnist5k": 5, "shapes": 5},
        epochs={"mnist1d": 60, "mnist5k": 15, "shapes": 15},
        transfer={"mnist1d": 5},  # seeds with transfer runs
        transfer_epochs={"mnist1d": 60},
        transfer_fine_tune=True,  # also the "+" arms (copied blocks fine-tuned)
        cka_examples=1000,
        erf_examples=256,
        gabor_filters=None,  # all
        gabor_restarts=8,
        probe_dim=256,
        probe_l2s=(1e-4, 1e-3, 1e-2, 1e-1, 1.0),
        # Natural images, where CIFAR-10's files are present (None: dl's data cache).
        natural_root=None,
        natural_seeds=5,
        natural_epochs=30,
        natural_train_size=None,  # all 50000
        natural_model={"blocks_per_stage": (3, 3, 3)},  # ResNet-20
    ),
    "quick": dict(
        seeds={"mnist1d": 3, "mnist5k": 3, "shapes": 3},
        epochs={"mnist1d": 20, "mnist5k": 3, "shapes": 6},
        transfer={"mnist1d": 3},
        transfer_epochs={"mnist1d": 6},
        transfer_fine_tune=False,
        cka_examples=500,
        erf_examples=128,
        gabor_filters=16,
        gabor_restarts=2,
        probe_l2s=(1e-3, 1e-1),
        natural_seeds=3,
        natural_epochs=3,
        natural_train_size=5000,
    ),
}
# Relative error ratio that counts as "no worse" in the transfer claims: AnB's test error
# within 10% of baseB's (e.g. 5.5% against 5%).
TRANSFER_TOLERANCE = 1.1


def _blocks(acts: dict[str, np.ndarray]) -> list[str]:
    return [k for k in acts if k.startswith("block")]


def _train(name: str, ds, seeds: list[int], epochs: int):
    """Every seed's network (the recipe of `name` but its epochs), trained in one compiled
    program, seed after seed (vmapped convolutions are slow on XLA:CPU). Returns the
    model, one `TrainState` per seed, and each seed's test accuracy."""
    import dataclasses

    from dl.train import train_seeds

    recipe = _recipe(name, epochs=epochs)
    model = models.get_model("cnn", ds.num_classes, kernels=recipe.kernels, **recipe.model_kwargs)
    config = dataclasses.replace(recipe.fit_config(model), eval_every=epochs)
    res = train_seeds(
        model, ds.train, config, seeds, eval_data={"test": ds.test}, runs="sequential"
    )
    accuracy = [float(a) for a in res.history[-1]["test/accuracy"]]
    return model, [res.state(i) for i in range(len(seeds))], accuracy


def _init_variables(model, input_shape, seed: int) -> dict[str, Any]:
    """The network at its random initialisation (the untrained control)."""
    from dl import train

    state = train.create_state(model, optax.identity(), input_shape, seed=seed)
    v = {"params": state.params}
    if state.batch_stats:
        v["batch_stats"] = state.batch_stats
    return v


def _clipped_rf(rf: analysis.ReceptiveField, centre: int, n: int) -> int:
    """Input positions inside the theoretical RF of output unit `centre` (one axis)."""
    c = rf.start + centre * rf.jump
    lo, hi = c - (rf.size - 1) / 2, c + (rf.size - 1) / 2
    return int(min(hi, n - 1) - max(lo, 0) + 1)


def _probe(s, train, test, seed: int) -> float:
    """Test accuracy of a linear probe on `probe_dim` random projections of the features
    (every layer gets the same width), its L2 strength chosen on a validation split."""
    (x, y), (xt, yt) = train, test
    dim = s["probe_dim"]
    feats = analysis.random_projection(x, dim), analysis.random_projection(xt, dim)
    return analysis.select_probe(
        (feats[0], y), (feats[1], yt), l2s=s["probe_l2s"], seed=seed
    ).test_accuracy


# The two factors of `shapes`: bar orientation (classes 0-3, four orientations) and the
# identity of a closed outline (classes 5-7: circle, square, triangle).
SHAPE_FACTORS = {"orientation": (0, 4), "shape": (5, 8)}


def _shape_factors(s, acts, acts_t, y, yt, seed: int) -> list[dict[str, Any]]:
    """Per layer, probes of each factor of `shapes` on the trained and untrained net."""
    rows = []
    for layer in acts["trained"]:
        row: dict[str, Any] = {"layer": layer}
        for factor, (lo, hi) in SHAPE_FACTORS.items():
            m, mt = (y >= lo) & (y < hi), (yt >= lo) & (yt < hi)
            for which in ("trained", "init"):
                key = f"{factor}_{'trained' if which == 'trained' else 'untrained'}"
                if layer not in acts[which]:  # "input": the same for both, probed once
                    row[key] = row[f"{factor}_trained"]
                    continue
                a, at = acts[which][layer], acts_t[which][layer]
                row[key] = _probe(s, (a[m], y[m] - lo), (at[mt], yt[mt] - lo), seed)
        rows.append(row)
    return rows


def _analyse_seed(name, ds, seed, trained, s, timer) -> dict[str, Any]:
    """Measure everything about one seed's trained network (`trained` = model, state and
    test accuracy) that needs no second seed."""
    model, state, test_accuracy = trained
    init = _init_variables(model, ds.input_shape, seed)
    (x, y), (xt, yt) = ds.train, ds.test
    with timer(f"{name}/probes"):
        acts = {"trained": analysis.activations(model, state, x)}
        acts_t = {"trained": analysis.activations(model, state, xt)}
        acts["init"] = analysis.activations(model, init, x, include_input=False)
        acts_t["init"] = analysis.activations(model, init, xt, include_input=False)
        probes = {
            which: {
                layer: _probe(s, (acts[which][layer], y), (acts_t[which][layer], yt), seed)
                for layer in acts[which]
            }
            for which in ("trained", "init")
        }
        # The input is the same for both networks: one probe serves both rows.
        probes["init"] = {"input": probes["trained"]["input"], **probes["init"]}
        factors = _shape_factors(s, acts, acts_t, y, yt, seed) if name == "shapes" else None
    n_cka = s["cka_examples"]
    with timer(f"{name}/cka"):
        sub = {k: v[:n_cka] for k, v in acts_t["trained"].items()}
        labels = analysis.one_hot(yt[:n_cka], ds.num_classes)
        cka_labels = {k: analysis.linear_cka(v, labels, debiased=True) for k, v in sub.items()}
        cka_within = analysis.cka_matrix(sub, debiased=True)
    with timer(f"{name}/erf"):
        spatial = ds.input_shape[:-1]
        rfs = analysis.cnn_receptive_fields(model, spatial[0])
        erf = {}
        for layer in _blocks(acts_t["trained"]):
            e = analysis.effective_receptive_field(model, state, xt[: s["erf_examples"]], layer)
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
        first = next(iter(state.params))
        kmax = s["gabor_filters"]
        w_trained = np.asarray(state.params[first]["kernel"])
        w_init = np.asarray(init["params"][first]["kernel"])
        filt = {
            "trained": analysis.first_layer_filters(w_trained)[:kmax],
            "init": analysis.first_layer_filters(w_init)[:kmax],
        }
        filt["noise"] = np.random.default_rng(seed).normal(size=filt["trained"].shape)
        points = int(np.prod(filt["trained"].shape[1:]))
        measurable = points > analysis.GABOR_PARAMETERS[filt["trained"].ndim - 1]
        gabor = {  # a filter with no more points than the Gabor's parameters fits anything
            k: analysis.gabor_fit(f, restarts=s["gabor_restarts"], seed=seed).tolist()
            if measurable
            else []
            for k, f in filt.items()
        }
    return {
        "seed": seed,
        "test_accuracy": test_accuracy,
        "probes": probes,
        "shape_factors": factors,
        "cka_labels": cka_labels,
        "cka_within": cka_within,
        "erf": erf,
        "gabor_r2": gabor,
        "gabor_tests": _gabor_tests(gabor),
        # How far training moved the first layer: ||W - W0|| / ||W0||.
        "first_layer_change": float(np.linalg.norm(w_trained - w_init) / np.linalg.norm(w_init)),
        "_acts_test": sub,  # for across-seed CKA (dropped before writing)
        "_acts_test_all": acts_t["trained"],  # for the top-patch figure
        "_filters": filt,
        "_rfs": rfs,
    }


def _gabor_tests(r2: dict[str, list[float]]) -> dict[str, float]:
    """Rank tests over filters, one-sided (trained fits better): Wilcoxon's signed-rank
    test against the same filters at initialisation (paired), Mann-Whitney's U test
    against Gaussian noise."""
    from scipy import stats

    tr, init, noise = (np.asarray(r2[k]) for k in ("trained", "init", "noise"))
    if len(tr) == 0:  # not measurable (see _analyse_seed)
        return {"p_vs_init": float("nan"), "p_vs_noise": float("nan")}
    diff = tr - init
    p_init = float(stats.wilcoxon(tr, init, alternative="greater").pvalue) if np.any(diff) else 1.0
    p_noise = float(stats.mannwhitneyu(tr, noise, alternative="greater").pvalue)
    return {"p_vs_init": p_init, "p_vs_noise": p_noise}


def _across_seeds(per_seed: list[dict], blocks: list[str] | None = None) -> dict[str, Any]:
    """Same-layer debiased CKA across seed pairs and layer identification by maximum CKA
    (each pair's values kept: the pairs are the samples of the verdicts)."""
    blocks = blocks or _blocks(per_seed[0]["_acts_test"])
    same = {b: [] for b in blocks}
    identified, example = [], None
    for a, b in itertools.combinations(per_seed, 2):
        ra = {k: a["_acts_test"][k] for k in blocks}
        rb = {k: b["_acts_test"][k] for k in blocks}
        m = analysis.cka_matrix(ra, rb, debiased=True)
        if example is None:
            example = m
        for i, layer in enumerate(blocks):
            same[layer].append(float(m[i, i]))
        identified.append(float(np.mean([np.argmax(m[i]) == i for i in range(len(blocks))])))
    return {
        "same_layer_cka": {k: _mean(v) for k, v in same.items()},
        "same_layer_cka_by_pair": same,
        "identified_by_pair": identified,
        "example_matrix": example,
        "blocks": blocks,
    }


def _transfer(name, ds, seeds, epochs, fine_tune: bool) -> list[dict[str, Any]]:
    """Yosinski et al. 2014 on a class split: A = first half of the classes, B = rest.

    Each arm trains every seed in one compiled program (`train_seeds`), seed s's copied
    layers coming from its own networks A and B; the upper layers start fresh from seed
    s + 1. Returns one record per seed."""
    from dl import optim, train

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
    config = train.FitConfig(
        epochs=epochs,
        batch_size=recipe.batch_size,
        optimizer=optim.OptimizerConfig("adam", recipe.learning_rate, "warmup_cosine"),
        eval_every=epochs,
    )

    def fit(tr, te, run_seeds, **kw):
        # Seed after seed inside one program: vmapped convolutions are slow on XLA:CPU.
        r = train.train_seeds(
            model, tr, config, run_seeds, eval_data={"test": te}, runs="sequential", **kw
        )
        return [float(a) for a in r.history[-1]["test/accuracy"]], r.states.params

    acc_a, params_a = fit(a_tr, a_te, seeds)
    acc_b, params_b = fit(b_tr, b_te, seeds)
    convs = [n for n in params_b if n.startswith("conv")]
    depth = len(kwargs.get("channels", ()))
    upper = [s + 1 for s in seeds]  # fresh upper layers and batch order
    rows = [[] for _ in seeds]
    for n in range(1, depth + 1):
        names = [c for c in convs if int(c[4:].split("_")[0]) < n]
        arms = {}
        for label, src in (("BnB", params_b), ("AnB", params_a)):
            copy = {c: src[c] for c in names}
            arms[label] = fit(b_tr, b_te, upper, params=copy, per_seed_params=True, frozen=names)
            if fine_tune:
                arms[label + "+"] = fit(b_tr, b_te, upper, params=copy, per_seed_params=True)
        arms["random_frozen"] = fit(b_tr, b_te, upper, frozen=names)
        for i in range(len(seeds)):
            rows[i].append({"layers": n, **{arm: acc[0][i] for arm, acc in arms.items()}})
    return [
        {"seed": s, "baseA": acc_a[i], "baseB": acc_b[i], "by_layer": rows[i], "classes_A": half}
        for i, s in enumerate(seeds)
    ]


def _recipe(name, **overrides):
    from dl.recipes import default_config

    if MODELS[name]:
        overrides["model_kwargs"] = MODELS[name]
    return default_config("cnn", name, **overrides)


def _mean(xs):
    return float(np.mean(xs)) if xs else float("nan")


def _verdicts(name: str, d: dict[str, Any]) -> list[dict[str, Any]]:
    """The claims on one dataset, each measured over seeds (or seed pairs)."""
    seeds, blocks = d["seeds"], d["across"]["blocks"]
    out = _probe_cka_verdicts(name, seeds, d["across"])
    erf = [[r["erf"][b]["erf_size"] for b in blocks] for r in seeds]
    ratio = [[r["erf"][b]["ratio"] for b in blocks] for r in seeds]
    out.append(
        check(
            f"Deeper units see more of the input, but effectively less of their RF ({name})",
            "in every seed, the ERF grows and ERF / theoretical RF shrinks from block to block",
            "ERF "
            + ", ".join(f"{np.mean([e[i] for e in erf]):.0f}" for i in range(len(blocks)))
            + " positions; ERF/RF "
            + ", ".join(f"{np.mean([q[i] for q in ratio]):.2f}" for i in range(len(blocks))),
            all(np.all(np.diff(e) > 0) for e in erf) and all(np.all(np.diff(q) < 0) for q in ratio),
        )
    )
    out.append(_gabor_verdict(name, seeds))
    if name == "shapes":
        out += _factor_verdicts(seeds)
    if d["transfer"]:
        out += _transfer_verdicts(name, d["transfer"], len(blocks))
    return out


def _probe_cka_verdicts(name: str, seeds, across) -> list[dict[str, Any]]:
    """Decodability rising with depth, learned (against the untrained network), and
    layers' similarity across seeds: the claims that every dataset gets."""
    out = []
    blocks = across["blocks"]
    first, last = blocks[0], blocks[-1]
    gain_tr = [closed(r["probes"]["trained"]["input"], r["probes"]["trained"][last]) for r in seeds]
    gain_in = [closed(r["probes"]["init"]["input"], r["probes"]["init"][last]) for r in seeds]
    out.append(
        seeded_claim(
            f"Later layers are more linearly decodable ({name})",
            f"fraction of the input's remaining probe error that the last block ({last}) "
            "closes, trained network, > 0 (dimension-matched probes)",
            gain_tr,
        )
    )
    out.append(
        seeded_claim(
            f"The hierarchy is learned, not architectural ({name})",
            "that fraction, trained minus untrained (same architecture at its random "
            "initialisation), > 0",
            [a - b for a, b in zip(gain_tr, gain_in, strict=True)],
            measured=f"trained {np.mean(gain_tr):.2f}, untrained {np.mean(gain_in):.2f}",
        )
    )
    same = across["same_layer_cka_by_pair"]
    out.append(
        seeded_claim(
            f"Early layers are universal, deep ones seed-specific ({name})",
            f"debiased CKA of the same layer across two seeds, {first} minus {last}, > 0 "
            "(one value per seed pair)",
            [a - b for a, b in zip(same[first], same[last], strict=True)],
            measured=", ".join(f"{b} {across['same_layer_cka'][b]:.3f}" for b in blocks),
        )
    )
    out.append(
        seeded_claim(
            f"Layers correspond across seeds ({name})",
            f"share of layers whose most CKA-similar layer in another seed is itself > "
            f"{1 / len(blocks):.2f} (chance; one value per seed pair)",
            across["identified_by_pair"],
            threshold=1 / len(blocks),
        )
    )
    return out


def _gabor_verdict(name: str, seeds) -> dict[str, Any]:
    claim = f"First-layer filters are Gabor-like edge detectors ({name})"
    points = int(np.prod(seeds[0]["_filters"]["trained"].shape[1:]))
    params = analysis.GABOR_PARAMETERS[seeds[0]["_filters"]["trained"].ndim - 1]
    criterion = (
        "median Gabor-fit R^2 of the trained first-layer filters minus that of the better "
        "null (the same filters at initialisation, or Gaussian noise) > 0"
    )
    if points <= params:
        return verdict(
            claim,
            criterion,
            f"not measurable: {points}-point filters have no more points than the Gabor's "
            f"{params} parameters, so any filter fits",
            None,
        )
    med = {
        k: [float(np.median(r["gabor_r2"][k])) for r in seeds] for k in ("trained", "init", "noise")
    }
    diff = [
        t - max(i, n) for t, i, n in zip(med["trained"], med["init"], med["noise"], strict=True)
    ]
    p_init = ", ".join(f"{r['gabor_tests']['p_vs_init']:.2g}" for r in seeds)
    p_noise = ", ".join(f"{r['gabor_tests']['p_vs_noise']:.2g}" for r in seeds)
    moved = np.mean([r["first_layer_change"] for r in seeds])
    return seeded_claim(
        claim,
        criterion,
        diff,
        measured=f"median R^2 trained {np.mean(med['trained']):.3f}, init "
        f"{np.mean(med['init']):.3f}, noise {np.mean(med['noise']):.3f}; one-sided rank "
        f"tests per seed: p vs init {p_init}, vs noise {p_noise}; first layer moved "
        f"{moved:.0%} from initialisation",
    )


def _factor_verdicts(seeds) -> list[dict[str, Any]]:
    """Edges early, shapes late, on `shapes`, each against the untrained network."""
    rows = [r["shape_factors"] for r in seeds]
    layer = {row["layer"]: i for i, row in enumerate(rows[0])}
    blocks = [name for name in layer if name.startswith("block")]
    first, last = layer[blocks[0]], layer[blocks[-1]]

    def rise(r, which):
        return closed(r[first][f"shape_{which}"], r[last][f"shape_{which}"])

    edge = [r[first]["orientation_trained"] - r[first]["orientation_untrained"] for r in rows]
    shape = [rise(r, "trained") - rise(r, "untrained") for r in rows]
    return [
        seeded_claim(
            "Early layers detect edges (shapes: bar orientation)",
            f"probe accuracy for the orientation of a bar at the first block ({blocks[0]}), "
            "trained minus untrained network, > 0",
            edge,
        ),
        seeded_claim(
            "Deep layers represent shapes, combined from edges (shapes: outline identity)",
            f"fraction of the remaining error in telling circle, square and triangle apart "
            f"closed from {blocks[0]} to {blocks[-1]}, trained minus untrained, > 0",
            shape,
        ),
    ]


def _transfer_verdicts(name: str, t: list[dict], depth: int) -> list[dict[str, Any]]:
    """Yosinski et al. (2014) by test error: AnB against baseB and against random frozen
    blocks, one value per seed."""

    def err_ratio(r, n):
        return (1 - r["by_layer"][n - 1]["AnB"]) / max(1 - r["baseB"], 1e-9)

    tol = TRANSFER_TOLERANCE
    return [
        seeded_claim(
            f"First-layer features are general (transfer, {name})",
            f"test error with block 1 copied from the net trained on A and frozen (AnB1), "
            f"over baseB's error, < {tol}",
            [err_ratio(r, 1) for r in t],
            threshold=tol,
            direction="less",
        ),
        seeded_claim(
            f"Last-layer features are specific (transfer, {name})",
            f"test error with all {depth} blocks copied and frozen (AnB{depth}) over baseB's "
            f"error > {tol}",
            [err_ratio(r, depth) for r in t],
            threshold=tol,
        ),
        seeded_claim(
            f"Transferred features beat random features at every depth ({name})",
            "smallest margin over depths of AnB's test accuracy over random frozen blocks' > 0",
            [min(row["AnB"] - row["random_frozen"] for row in r["by_layer"]) for r in t],
        ),
    ]


def shapes_factors(seeds) -> list[dict[str, Any]]:
    """results["shapes_factors"]: per layer, each factor's probe accuracy (mean over
    seeds, and the per-seed values)."""
    out = []
    for i, row in enumerate(seeds[0]["shape_factors"]):
        entry: dict[str, Any] = {"layer": row["layer"]}
        for key in row:
            if key != "layer":
                vals = [r["shape_factors"][i][key] for r in seeds]
                entry[key] = _mean(vals)
                entry[f"{key}_by_seed"] = vals
        out.append(entry)
    return out


def natural_images(s, seed: int, timer) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """CIFAR-10 with a ResNet (ResNet-20 by default), where the files are present: per
    seed, dimension-matched probes of each stage's output in the trained and untrained
    network, and debiased CKA of each stage across seeds; the same probe and CKA claims
    as on the generated data. Without the files: NOT MEASURED, naming where it looked
    and how to fetch them."""
    from dl.data.real import cache_dir

    folder = Path(s["natural_root"]) if s["natural_root"] is not None else cache_dir() / "cifar10"
    try:
        ds = data.load("cifar10", root=folder)
    except FileNotFoundError:
        return {
            "outcome": "NOT MEASURED",
            "looked_in": str(folder),
            "why": f"CIFAR-10's files are not in {folder}",
            "fetch": "python -c \"from dl import data; data.load('cifar10', download=True)\"",
        }, []
    n = s["natural_train_size"] or len(ds.x_train)
    (x, y), (xt, yt) = (ds.x_train[:n], ds.y_train[:n]), ds.test
    stages = s["natural_model"]["blocks_per_stage"]
    layers = [f"stage{i}_block{b - 1}" for i, b in enumerate(stages)]
    per_seed = []
    for i in range(s["natural_seeds"]):
        with timer("cifar10/train"):
            clf = DeepClassifier(
                "resnet",
                "cifar10",
                epochs=s["natural_epochs"],
                batch_size=min(128, n),  # the ResNet recipe's batch, or all of a small set
                seed=seed + i,
                model_kwargs=s["natural_model"],
            ).fit(x, y)
        with timer("cifar10/probes"):
            init = _init_variables(clf.model_, ds.input_shape, seed + i)
            probes, test_acts = {}, None
            for which, v in (("trained", clf.state_), ("init", init)):
                a = analysis.activations(clf.model_, v, x, layers=layers)
                at = analysis.activations(clf.model_, v, xt, layers=layers)
                probes[which] = {k: _probe(s, (a[k], y), (at[k], yt), seed + i) for k in a}
                if which == "trained":
                    test_acts = {k: at[k][: s["cka_examples"]] for k in layers}
            probes["init"] = {"input": probes["trained"]["input"], **probes["init"]}
        per_seed.append(
            {
                "seed": seed + i,
                "test_accuracy": float(np.mean(clf.predict(xt) == yt)),
                "probes": probes,
                "_acts_test": test_acts,
            }
        )
    across = _across_seeds(per_seed, blocks=layers)
    result = {
        "outcome": "MEASURED",
        "root": str(folder),
        "train_size": n,
        "model": {"name": "resnet", **s["natural_model"]},
        "layers": layers,
        "seeds": [{k: v for k, v in r.items() if not k.startswith("_")} for r in per_seed],
        "across_seeds": across,
    }
    return result, _probe_cka_verdicts("cifar10", per_seed, across)


Config = experiment_config(NAME, SETTINGS)


def run(config: Config) -> dict[str, Any]:
    """Run the experiment as `config` says; write results.json, report.md and figures to
    `config.out`."""
    out, s, timer = prepare(config, Config, NAME)
    quick, seed = config.is_quick, config.seed
    per_dataset: dict[str, Any] = {}
    verdicts: list[dict[str, Any]] = []
    unknown = set(s["datasets"]) - set(MODELS)
    if unknown:
        raise ValueError(f"Unknown dataset(s) {sorted(unknown)}; choose from {list(MODELS)}.")
    for name in s["datasets"]:
        ds = data.load(name)
        seeds_of = seed_list(seed, s["seeds"][name])
        with timer(f"{name}/train"):
            model, states, accuracy = _train(name, ds, seeds_of, s["epochs"][name])
        seeds = [
            _analyse_seed(name, ds, sd, (model, st, acc), s, timer)
            for sd, st, acc in zip(seeds_of, states, accuracy, strict=True)
        ]
        with timer(f"{name}/cka"):
            across = _across_seeds(seeds)
        with timer(f"{name}/transfer"):
            n_transfer = s["transfer"].get(name, 0)
            transfer = (
                _transfer(
                    name,
                    ds,
                    seed_list(seed, n_transfer),
                    s["transfer_epochs"][name],
                    s["transfer_fine_tune"],
                )
                if n_transfer
                else []
            )
        d = {"seeds": seeds, "across": across, "transfer": transfer}
        verdicts += _verdicts(name, d)
        d["figures"] = _figures(out, name, ds, d)
        per_dataset[name] = d
    natural, natural_verdicts = natural_images(s, seed, timer)
    if natural_verdicts:
        verdicts += natural_verdicts
    else:
        verdicts.append(
            verdict(
                "The hierarchy holds on natural images (CIFAR-10, ResNet)",
                "the probe and CKA claims, measured on CIFAR-10",
                f"{natural['why']}; fetch them with: {natural['fetch']}",
                None,
            )
        )
    results = {
        "experiment": NAME,
        "quick": quick,
        "seed": seed,
        "settings": s,
        "models": {k: _recipe(k).model_kwargs for k in s["datasets"]},
        "probes": {"dim": s["probe_dim"], "l2s": list(s["probe_l2s"]), "selection": "val 20%"},
        "cka_estimator": "debiased",
        "shapes_factors": shapes_factors(per_dataset["shapes"]["seeds"])
        if "shapes" in per_dataset
        else None,
        "natural_images": natural,
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

    # Shapes: each factor by layer, trained against untrained.
    if seeds[0].get("shape_factors"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
        rows = [r["shape_factors"] for r in seeds]
        names = [row["layer"] for row in rows[0]]
        for ax, (factor, (lo, hi)) in zip(axes, SHAPE_FACTORS.items(), strict=True):
            for which, style in (("trained", "o-"), ("untrained", "s--")):
                acc = np.array([[100 * row[f"{factor}_{which}"] for row in r] for r in rows])
                ax.errorbar(
                    range(len(names)),
                    acc.mean(0),
                    yerr=acc.std(0),
                    fmt=style,
                    capsize=3,
                    label=which,
                )
            ax.axhline(100 / (hi - lo), color="grey", lw=1, ls=":", label="chance")
            ax.set_xticks(range(len(names)), names)
            ax.set_xlabel("layer")
            ax.set_ylabel("probe test accuracy (%)")
            ax.set_title(f"{factor} ({hi - lo} classes)")
            ax.legend(fontsize=8)
        fig.suptitle(f"shapes: edges (bar orientation) and shapes by layer ({len(seeds)} seeds)")
        files.append(save_figure(fig, out, "factors_shapes.png"))

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
            if key not in t[0]["by_layer"][0]:
                continue  # the "+" arms run only with transfer_fine_tune
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


def _meaning(verdicts) -> str:
    """One paragraph: which of the claims that carry the weight held, failed, or could
    not be decided."""
    weight = [
        v
        for v in verdicts
        if v["kind"] == "claim"
        and any(k in v["claim"] for k in ("learned", "detect edges", "represent shapes"))
    ]
    by = {
        o: [v["claim"] for v in weight if v["outcome"] == o]
        for o in ("PASS", "FAIL", "INCONCLUSIVE")
    }
    parts = [
        "Rising decodability alone says little: a network trained to separate the classes "
        "makes its last layer separable, and an untrained network of the same shape can show "
        "the same trend. The claims that carry the weight compare the trained network with "
        "its own random initialisation, layer by layer, and on `shapes` separate edges (bar "
        "orientation) from shapes (outline identity)."
    ]
    if by["PASS"]:
        parts.append(f"Supported here: {'; '.join(by['PASS'])}.")
    if by["FAIL"]:
        parts.append(f"Contradicted here: {'; '.join(by['FAIL'])}.")
    if by["INCONCLUSIVE"]:
        parts.append(f"Not decided by these seeds: {'; '.join(by['INCONCLUSIVE'])}.")
    return " ".join(parts)


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
        "## What it means for the claim",
        "",
        _meaning(r["verdicts"]),
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
        if seeds[0]["gabor_r2"]["trained"]:
            g = {
                k: np.median([v for x in seeds for v in x["gabor_r2"][k]])
                for k in seeds[0]["gabor_r2"]
            }
            moved = _mean([x["first_layer_change"] for x in seeds])
            lines += [
                "",
                "First-layer Gabor fit, median R^2: "
                + ", ".join(f"{k} {v:.3f}" for k, v in g.items())
                + f"; training moved the first layer's weights by {moved:.0%} of their norm.",
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
                    f"{100 * _mean([x['by_layer'][i][k] for x in t]):.1f}" if k in row else "-"
                    for k in ("BnB", "BnB+", "AnB", "AnB+", "random_frozen")
                ]
                lines.append(f"| {row['layers']} | " + " | ".join(vals) + " |")
        lines += ["", *[f"![{f}]({f})" for f in d["figures"]], ""]
    nat = r["natural_images"]
    if nat["outcome"] == "MEASURED":
        lines += [
            "## Natural images (CIFAR-10)",
            "",
            f"{nat['model']} on {nat['train_size']} training images from {nat['root']}; "
            "probe test accuracy per stage (trained / untrained), mean over seeds:",
            "",
            ", ".join(
                f"{k} {100 * _mean([x['probes']['trained'][k] for x in nat['seeds']]):.1f}"
                f" / {100 * _mean([x['probes']['init'][k] for x in nat['seeds']]):.1f}%"
                for k in ["input", *nat["layers"]]
            ),
            "",
        ]
    else:
        lines += [
            "## Natural images (CIFAR-10)",
            "",
            f"NOT MEASURED: {nat['why']}. Fetch them with `{nat['fetch']}`.",
            "",
        ]
    lines += [
        "## Notes",
        "",
        f"- Probes: L2-regularised softmax (L-BFGS) on {r['probes']['dim']} fixed random "
        "projections of each layer's standardised, frozen features (every layer read at the "
        "same width), its L2 strength chosen among "
        f"{r['probes']['l2s']} on 20% of the training set held out; accuracy on the test "
        f"set. CKA: the debiased estimator on the first {r['settings']['cka_examples']} test "
        "examples (the plain one is biased upward when features are wide).",
        "- shapes: bar orientation is probed on the bar images (4 classes), outline identity "
        "on the circle, square and triangle images (3 classes), in the trained network and "
        "in the same network at its random initialisation.",
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
