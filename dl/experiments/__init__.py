"""Experiments that measure the claims of the source texts (`dl reproduce`).

Each experiment module has `NAME`, a frozen `Config` dataclass (defaults: the full run;
`Config(...).quick()`: the short one) and `run(config) -> results`, which writes
results.json (with a "verdicts" list), report.md and figures into `config.out`:

    from dl.experiments import dl_vs_elm
    results = dl_vs_elm.run(dl_vs_elm.Config(out="runs/elm", seed=3).quick())

Each verdict is a claim of the source texts (kind "claim") or a sanity check ("check");
claims measured over seeds carry an estimate, a 95% bootstrap interval and a threshold,
and are PASS, FAIL or INCONCLUSIVE (`dl.experiments.common.seeded_claim`).
"""

from __future__ import annotations

import importlib

from dl._errors import unknown_name

# name -> (module, one-line description)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "dl_vs_elm": (
        "dl.experiments.dl_vs_elm",
        "deep learning versus Extreme Learning Machines: speed, GPU, determinism, tuning",
    ),
    "hierarchy_of_features": (
        "dl.experiments.hierarchy_of_features",
        "per-layer probes, CKA, filters, receptive fields and transfer in trained CNNs",
    ),
    "nonlinearity": (
        "dl.experiments.nonlinearity",
        "deep MLPs with and without activations: the linear stack is one linear map",
    ),
    "vanishing_gradients": (
        "dl.experiments.vanishing_gradients",
        "per-layer gradient norms (sigmoid/tanh/ReLU, batch norm, residual); RNN vs LSTM/GRU",
    ),
    "depth": ("dl.experiments.depth", "plain versus residual MLPs of growing depth"),
    "data_scaling": (
        "dl.experiments.data_scaling",
        "learning-curve slopes of deep models against classical learners (gradient-boosted "
        "trees included) on mnist1d and on small tables",
    ),
    "regularisation": (
        "dl.experiments.regularisation",
        "dropout, weight decay, batch norm, augmentation, early stopping: ablations",
    ),
    "adversarial": ("dl.experiments.adversarial", "FGSM and PGD against the trained CNN"),
    "transfer_learning": (
        "dl.experiments.transfer_learning",
        "pre-train on digits 0-4, fine-tune on 5-9 with 10, 100 and all labels",
    ),
    "weight_sharing": (
        "dl.experiments.weight_sharing",
        "CNN against MLP: parameters at equal accuracy, accuracy on shifted digits",
    ),
    "viewpoint": (
        "dl.experiments.viewpoint",
        "capsule network against CNN on rotated and shifted digits",
    ),
    "self_supervised": (
        "dl.experiments.self_supervised",
        "SimCLR pre-training against scratch and supervised pre-training: 10, 100, all labels",
    ),
}


def configure(name: str, *, out, quick: bool = False, seed: int = 0):
    """The `Config` of experiment `name` writing to `out`, full or quick, from `seed`."""
    config = get_experiment(name).Config(out=out, seed=seed)
    return config.quick() if quick else config


def get_experiment(name: str):
    """The experiment module called `name`."""
    if name not in EXPERIMENTS:
        raise unknown_name("experiment", name, EXPERIMENTS, "List them with `dl reproduce --list`.")
    return importlib.import_module(EXPERIMENTS[name][0])
