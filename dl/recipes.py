"""Training recipes: a frozen config with per-(model, dataset) defaults, and one function
that trains, evaluates and writes results.json, metrics.jsonl and curves.png.

`dl train` is a thin wrapper over `train_and_evaluate`; notebooks and experiments call it
directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dl._errors import check_fraction, check_positive_int, check_seed, unknown_name

# Defaults per model, then per (model, dataset). Found by short calibration runs on 2 CPU
# cores (see README "Measured"); every value can be overridden from the CLI.
_BASE: dict[str, Any] = dict(
    epochs=20,
    batch_size=64,
    optimizer="adam",
    learning_rate=1e-3,
    schedule="warmup_cosine",
    augment="none",
)
_BY_MODEL: dict[str, dict[str, Any]] = {
    "linear": dict(epochs=60, batch_size=100, learning_rate=1e-2),
    "mlp": dict(epochs=30, augment="shift", model_kwargs={"widths": (512, 256), "dropout": 0.2}),
    "lenet5": dict(epochs=15, augment="shift"),
    "cnn": dict(epochs=15, augment="shift", model_kwargs={"channels": (32, 64), "dense": (128,)}),
    "resnet": dict(epochs=15, batch_size=128, augment="shift"),
    # Capsules (margin loss, dl.models.MODEL_LOSSES): the paper's 2-pixel shifts; on
    # mnist5k 98.1% after 15 epochs (97.3% with half the channels), 12 s per epoch.
    "capsnet": dict(epochs=15, augment="shift"),
    # Recurrent nets: gradient clipping against the occasional exploding step.
    "rnn": dict(epochs=40, learning_rate=3e-3, clip_norm=1.0, model_kwargs={"hidden": 128}),
    "lstm": dict(epochs=40, learning_rate=3e-3, clip_norm=1.0, model_kwargs={"hidden": 128}),
    "gru": dict(epochs=40, learning_rate=3e-3, clip_norm=1.0, model_kwargs={"hidden": 128}),
    "transformer": dict(
        epochs=30,
        batch_size=128,
        learning_rate=2e-3,
        model_kwargs={"d_model": 64, "num_layers": 3, "num_heads": 4, "mlp_dim": 128},
    ),
    "vit": dict(epochs=30, batch_size=128, augment="shift", optimizer="adamw", weight_decay=0.05),
    "lm": dict(
        epochs=3,
        batch_size=32,
        learning_rate=2e-3,
        clip_norm=1.0,
        model_kwargs={"d_model": 128, "num_layers": 3, "mlp_dim": 512, "max_len": 64},
    ),
    # Autoencoders: targets are the inputs, loss the Bernoulli NLL (nats per image).
    "ae": dict(epochs=20),
    "conv_ae": dict(epochs=20),
    "dae": dict(epochs=20),
    "vae": dict(epochs=30, model_kwargs={"latent_dim": 16}),
    # GANs (dl.gan): Adam(lr, b1=0.5) per network, constant rate. On mnist5k, lr 2e-3
    # judged 0.832 after 25 epochs; DCGAN's 2e-4 stayed near 0.75, 1e-3 reached 0.831
    # after 40 epochs (seed 0, base 32; base 64 is 4x slower per step on 2 CPU cores).
    "dcgan": dict(epochs=25, learning_rate=2e-3, schedule="constant"),
    "cgan": dict(epochs=25, learning_rate=2e-3, schedule="constant"),
}
_BY_MODEL_DATASET: dict[tuple[str, str], dict[str, Any]] = {
    # The 1-D CNN follows the mnist1d reference model: three conv layers, linear head.
    ("cnn", "mnist1d"): dict(
        epochs=60,
        batch_size=100,
        learning_rate=3e-3,
        model_kwargs={"channels": (32, 32, 32), "kernel_size": 5, "dense": ()},
    ),
    ("mlp", "mnist1d"): dict(epochs=60, batch_size=100),
    # Tabular sets (standardised features): a small MLP, no augmentation.
    **{
        ("mlp", name): dict(
            epochs=100,
            batch_size=16,
            augment="none",
            model_kwargs={"widths": (64,), "dropout": 0.1},
        )
        for name in ("iris", "wine", "breast_cancer")
    },
    # 8x8 digits: a 2-pixel shift moves a quarter of the image; train without it.
    ("mlp", "digits"): dict(augment="none", epochs=60),
    ("cnn", "digits"): dict(augment="none", epochs=40),
    ("resnet", "digits"): dict(augment="none", epochs=30),
    ("gru", "mnist1d"): dict(batch_size=100),
    ("lstm", "mnist1d"): dict(batch_size=100),
    ("rnn", "mnist1d"): dict(batch_size=100),
    # The adding problem at length 100: the LSTM solves it, the SimpleRNN does not.
    ("lstm", "adding"): dict(epochs=15, model_kwargs={"hidden": 64}),
    ("rnn", "adding"): dict(epochs=15, model_kwargs={"hidden": 64}),
    ("gru", "adding"): dict(epochs=15, model_kwargs={"hidden": 64}),
    ("lm", "pytext"): dict(dataset_kwargs={"seq_len": 64}),
    # 7x7 patches (16 tokens): on 4000 images they beat 4x4 patches (96.1% vs 90.8%).
    ("vit", "mnist5k"): dict(epochs=40, learning_rate=2e-3, model_kwargs={"patch_size": 7}),
    # Graph classification: with one-hot degree features the GCN
    # separates cycles from trees (100%); with constant features it stays at chance.
    ("gcn", "cycles_trees"): dict(epochs=20),
    ("gat", "cycles_trees"): dict(epochs=20),
    # Semi-supervised node classification (Kipf & Welling 2017): the whole graph is one
    # example, 2 of 34 nodes labelled; 100 full-batch steps give 96.9% on seeds 0-2.
    ("gcn", "karate"): dict(
        epochs=100,
        batch_size=1,
        learning_rate=1e-2,
        model_kwargs={"readout": "node", "num_layers": 2, "hidden": 16},
    ),
    ("gat", "karate"): dict(
        epochs=100,
        batch_size=1,
        learning_rate=1e-2,
        model_kwargs={"readout": "node", "num_layers": 2, "hidden": 8},
    ),
    # Rows of the image as 28 tokens; random shifts as for the CNN.
    ("transformer", "mnist5k"): dict(augment="shift"),
}

# Quick variants: the same recipe, shorter, for tests and 2-core machines. Each still
# has to meet its target (tests/test_recipes.py).
QUICK: dict[tuple[str, str], dict[str, Any]] = {
    ("gru", "mnist1d"): dict(epochs=15),
    ("lstm", "adding"): dict(epochs=8),
    ("rnn", "adding"): dict(epochs=8),
    ("gcn", "cycles_trees"): dict(epochs=5),
    ("transformer", "mnist5k"): dict(epochs=15),
    ("ae", "mnist5k"): dict(epochs=5),
    ("conv_ae", "mnist5k"): dict(epochs=3),
    ("dae", "mnist5k"): dict(epochs=15),  # masking noise: ratio 0.45 after 10, 0.34 after 20
    ("vae", "mnist5k"): dict(epochs=8),
    ("capsnet", "mnist5k"): dict(epochs=3),
    # ("lm", "pytext") has no shorter variant: 2 epochs reach 2.38 bits per character
    # but samples with only 48% known words (73% after 3 epochs).
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A complete `dl train` run. Build one with `default_config(model, dataset, **overrides)`.

    Attributes:
      model, dataset: registry names (`dl models`, `dl datasets`).
      epochs, batch_size: training length and batch size.
      optimizer, learning_rate, schedule, weight_decay, clip_norm: see `dl.optim`.
      label_smoothing: cross-entropy label smoothing.
      augment: on-device augmentation name from `dl.data.AUGMENTATIONS`.
      val_fraction: share of the training set held out for validation (0 = none).
      patience: early-stopping patience on val/accuracy (needs val_fraction > 0).
      seed: seed of initialisation, dropout, augmentation and data order.
      checkpoint_every: steps between checkpoints (None: every epoch).
      skip_nonfinite: skip steps with a NaN/Inf loss or gradient instead of stopping.
      compute_dtype: "float32", or "bfloat16" for mixed precision (`dl.train`).
      kernels: "auto" (dl's CPU kernels on the CPU backend), "xla" or "cpu" (`dl.kernels`).
      steps_per_call: train steps per compiled call; None: `default_steps_per_call`.
      model_kwargs: fields of the model (e.g. {"widths": (128,)}).
      dataset_kwargs: options of the dataset loader.
    """

    model: str = "cnn"
    dataset: str = "mnist5k"
    epochs: int = 15
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "warmup_cosine"
    weight_decay: float = 0.0
    clip_norm: float | None = None
    label_smoothing: float = 0.0
    augment: str = "none"
    val_fraction: float = 0.0
    patience: int | None = None
    seed: int = 0
    checkpoint_every: int | None = None
    skip_nonfinite: bool = False
    compute_dtype: str = "float32"
    kernels: str = "auto"
    steps_per_call: int | None = None
    grad_accum: int = 1
    ema_decay: float | None = None
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dataset_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        from dl.data import AUGMENTATIONS, DATASETS
        from dl.models import MODELS
        from dl.optim import OptimizerConfig

        if self.model not in MODELS:
            raise unknown_name("model", self.model, MODELS, "List them with `dl models`.")
        if self.dataset not in DATASETS:
            raise unknown_name("dataset", self.dataset, DATASETS, "List them with `dl datasets`.")
        if self.augment not in AUGMENTATIONS:
            raise unknown_name("augmentation", self.augment, AUGMENTATIONS)
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_seed(self.seed)
        OptimizerConfig(**self.optimizer_kwargs())  # validates the optimizer fields
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1); got {self.label_smoothing!r}.")
        from dl.step import _check_compute_dtype

        _check_compute_dtype(self.compute_dtype)
        check_fraction("val_fraction", self.val_fraction)
        if self.checkpoint_every is not None:
            check_positive_int("checkpoint_every", self.checkpoint_every)
        if self.patience is not None:
            check_positive_int("patience", self.patience)
            if self.val_fraction == 0:
                raise ValueError(
                    f"patience={self.patience} needs a validation set to monitor, but "
                    "val_fraction is 0. Add --val-fraction 0.1 (early stopping never looks "
                    "at the test set)."
                )
        from dl.kernels import resolve

        resolve(self.kernels)  # an unknown name is an error here
        if self.steps_per_call is not None:
            check_positive_int("steps_per_call", self.steps_per_call)
        check_positive_int("grad_accum", self.grad_accum)
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"grad_accum {self.grad_accum} must divide batch_size {self.batch_size} "
                "(each batch is split into that many equal microbatches)."
            )
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay!r}.")

    def fit_config(self, model, *, loss: str = "cross_entropy"):
        """The `dl.train.FitConfig` of this run for `model` (built from this config)."""
        from dl.optim import OptimizerConfig
        from dl.train import FitConfig, default_steps_per_call

        return FitConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer=OptimizerConfig(**self.optimizer_kwargs()),
            loss=loss,
            label_smoothing=self.label_smoothing,
            augment=self.augment,
            skip_nonfinite=self.skip_nonfinite,
            compute_dtype=self.compute_dtype,
            seed=self.seed,
            steps_per_call=self.steps_per_call or default_steps_per_call(model),
            kernels=self.kernels,
            grad_accum=self.grad_accum,
            ema_decay=self.ema_decay,
        )

    def optimizer_kwargs(self) -> dict[str, Any]:
        return dict(
            name=self.optimizer,
            learning_rate=self.learning_rate,
            schedule=self.schedule,
            weight_decay=self.weight_decay,
            clip_norm=self.clip_norm,
        )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))


def default_config(
    model: str = "cnn", dataset: str = "mnist5k", *, quick: bool = False, **overrides
) -> TrainConfig:
    """The recipe for (model, dataset), with `overrides` applied (None values ignored).

    `model_kwargs` and `dataset_kwargs` in overrides are merged into the recipe's. With
    `quick=True` the recipe's quick variant (fewer epochs or less data, for tests and
    2-core machines; see `QUICK`) is applied before the overrides.

    >>> default_config("cnn", "mnist1d").model_kwargs["kernel_size"]
    5
    """
    cfg: dict[str, Any] = dict(_BASE, model=model, dataset=dataset)
    kwargs: dict[str, dict[str, Any]] = {"model_kwargs": {}, "dataset_kwargs": {}}
    layers = [_BY_MODEL.get(model, {}), _BY_MODEL_DATASET.get((model, dataset), {})]
    if quick:
        layers.append(QUICK.get((model, dataset), {}))
    layers.append({k: v for k, v in overrides.items() if v is not None})
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(f"Unknown config field(s) {sorted(unknown)}. Valid: {sorted(valid)}.")
    for layer in layers:
        layer = dict(layer)
        for key, merged in kwargs.items():
            merged.update(layer.pop(key, None) or {})
        cfg.update(layer)
    return TrainConfig(**cfg, **kwargs)


def environment() -> dict[str, Any]:
    """Versions and devices, recorded with every result."""
    import flax
    import jax
    import optax

    import dl

    return {
        "dl": dl.__version__,
        "jax": jax.__version__,
        "jaxlib": importlib.metadata.version("jaxlib"),
        "flax": flax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_count": jax.device_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def default_out_dir(config: TrainConfig) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / "train" / f"{config.model}-{config.dataset}-s{config.seed}-{stamp}"


def load_config(out_dir: str | os.PathLike) -> TrainConfig:
    """The `TrainConfig` a run wrote to `out_dir/config.json` (for `--resume`)."""
    path = Path(out_dir) / "config.json"
    if not path.is_file():
        raise ValueError(
            f"Cannot resume from {out_dir}: no config.json there. Pass the --out folder of "
            "an earlier `dl train` run."
        )
    try:
        cfg = json.loads(path.read_text())
        return TrainConfig(**cfg)
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"Cannot resume from {out_dir}: config.json is unreadable ({e}).") from e


def task_metrics(ds, final: dict[str, float], y_train) -> dict[str, float]:
    """The headline numbers of a task beyond loss and accuracy.

    - regression: test MSE, the MSE of predicting the training mean, and their ratio;
    - language model: bits per character (the mean per-token loss in nats / ln 2).
    """
    import numpy as np

    if ds.task == "regression":
        mean = np.asarray(y_train, np.float64).mean(axis=0)
        baseline = float(np.mean((np.asarray(ds.y_test, np.float64) - mean) ** 2))
        return {
            "test_mse": final["loss"],
            "baseline_mse": baseline,
            "mse_ratio": final["loss"] / baseline,
        }
    if ds.task == "language_model":
        return {"bits_per_char": final["loss"] / float(np.log(2))}
    return {}


def sample_text(model, state, ds, *, seed: int = 0, length: int = 300) -> list[str]:
    """Text from a trained character LM: greedy and sampled (T=0.8, top-k 10)
    continuations of the start of the first test window."""
    import jax

    from dl.data import tokenizer
    from dl.models import generate

    tok = tokenizer(ds)
    prompt = ds.x_test[0][:32]
    variables = {"params": jax.device_get(state.params)}
    out = []
    for temperature, top_k in ((0.0, None), (0.8, 10)):
        ids = generate(
            model,
            variables,
            prompt,
            length,
            key=jax.random.key(seed),
            temperature=temperature,
            top_k=top_k,
        )
        out.append(tok.decode(ids))
    return out


def known_word_fraction(text: str, ds) -> float:
    """Share of the words (3+ letters) in `text` that occur in the training text: a crude
    readability score for samples (a random-character model scores near 0)."""
    import re

    from dl.data import tokenizer

    train_text = tokenizer(ds).decode(ds.x_train)
    vocab = set(re.findall(r"[A-Za-z_]{3,}", train_text))
    words = re.findall(r"[A-Za-z_]{3,}", text)
    return sum(w in vocab for w in words) / max(len(words), 1)


def autoencoder_report(model, result, ds, out: Path | None, *, seed: int = 0) -> dict:
    """Numbers and figures of a trained autoencoder: test reconstruction error, anomaly
    scores' AUROC against two synthetic anomaly sets, denoising (for a denoising model),
    the ELBO's trajectory, samples and interpolations (for a VAE). Figures go to `out`."""
    import jax
    import numpy as np

    from dl import generative
    from dl.plotting import save_image_grid

    variables = {"params": result.state.params}
    x = ds.x_test
    recon = generative.reconstruct(model, variables, x)
    normal = generative.anomaly_scores(model, variables, x)
    rng = np.random.default_rng(seed)
    anomalies = {
        "uniform_noise": rng.uniform(0, 1, x.shape).astype(np.float32),
        "upside_down": x[:, ::-1].copy(),
    }
    report: dict[str, Any] = {
        "test_nll": float(normal.mean()),  # nats per image, z = mu
        "test_mse": float(np.mean((recon - x) ** 2)),
        "anomaly_auroc": {
            name: generative.auroc(normal, generative.anomaly_scores(model, variables, a))
            for name, a in anomalies.items()
        },
    }
    first, last = result.history[0], result.history[-1]
    report["test_loss_by_epoch"] = [h.get("test/loss") for h in result.history]
    if model.variational:
        report["test_elbo"] = -last["test/loss"]
        report["test_elbo_first_epoch"] = -first["test/loss"]
        report["test_kl"] = last.get("test/kl")
        report["test_reconstruction_nll"] = last.get("test/bernoulli_nll")
    if model.noise != "none":
        den = generative.denoising_report(model, variables, x, seed=seed)
        report["denoising"] = {k: v for k, v in den.items() if k not in ("noisy", "denoised")}
    if out is not None:
        save_image_grid(np.concatenate([x[:10], recon[:10]]), out / "reconstructions.png")
        if model.noise != "none":
            save_image_grid(
                np.concatenate([x[:10], den["noisy"][:10].clip(0, 1), den["denoised"][:10]]),
                out / "denoising.png",
            )
        if model.variational:
            key = jax.random.key(seed)
            samples = generative.sample(model, variables, key, 100, ds.input_shape)
            save_image_grid(samples, out / "samples.png")
            rows = [generative.interpolate(model, variables, x[i], x[i + 1], 10) for i in (0, 2, 4)]
            save_image_grid(np.concatenate(rows), out / "interpolation.png")
    return report


def train_and_evaluate(
    config: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    resume: bool = False,
    keep_checkpoints: int = 3,
    strategy: str = "auto",
    devices: int | None = None,
    overwrite: bool = False,
    checkpoint: bool = True,
    tensorboard: bool = False,
    profile: bool = False,
    announce: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train `config.model` on `config.dataset`, evaluate on the test set, write outputs.

    Writes `out_dir/config.json`, `out_dir/checkpoints/` (see `dl.checkpoint`),
    `out_dir/results.json`, `out_dir/metrics.jsonl` (one line per epoch) and
    `out_dir/curves.png`. With `resume=True` the run continues from the newest intact
    checkpoint in `out_dir/checkpoints` and ends as the uninterrupted run would.

    Args:
      config: a `TrainConfig` (see `default_config`).
      out_dir: output folder; default `runs/train/<model>-<dataset>-s<seed>-<time>`.
      progress: show the progress bar.
      resume: continue the run in `out_dir` from its newest intact checkpoint.
      keep_checkpoints: how many recent checkpoints to keep.
      strategy, devices: how to spread the steps over devices (see `dl.parallel`); not
        part of the config, so a run may resume on another number of devices.
      overwrite: a new run may replace the run already in `out_dir` (its files are
        deleted); without it such a folder is refused (`dl.rundir`).
      checkpoint: write checkpoints (False: none, and the run cannot be resumed).
      tensorboard: also write every record's scalars as TensorBoard event files in
        `out_dir/tensorboard` (`dl.writers.TensorBoardWriter`).
      profile: write a `jax.profiler` trace of a few steps to `out_dir/profile`.
      announce: called with one line naming the model's parameter count and the run's
        whole configuration, before training starts (the CLI prints it).

    Returns:
      The results dict written to results.json: test_accuracy, test_loss, train_time_s,
      epochs, config, env, history, ...
    """
    import jax

    from dl import data, models
    from dl.parallel import DATA_AXIS
    from dl.rundir import RunFolder
    from dl.step import check_model, count_params

    t_start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else default_out_dir(config)
    # With several processes (dl.parallel.initialize) all train and checkpoint together;
    # process 0 alone claims the folder and writes the other files.
    writer = jax.process_index() == 0

    def claim():
        if not writer:
            return contextlib.nullcontext()
        return RunFolder(out, resume=resume, overwrite=overwrite)

    if config.model in models.GAN_MODELS:  # two networks, two optimizers: dl.gan
        if resume:
            raise ValueError("GAN runs do not write checkpoints yet, so they cannot resume.")
        with claim():
            (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
            return train_and_evaluate_gan(config, out, progress=progress)
    ds = data.load(config.dataset, **config.dataset_kwargs)
    reads_tokens = config.model in models.TOKEN_MODELS
    if reads_tokens != (ds.input_dtype == "int32"):
        raise ValueError(
            f"Model {config.model!r} reads {'token ids' if reads_tokens else 'numbers'} but "
            f"dataset {config.dataset!r} holds {'token ids' if not reads_tokens else 'numbers'}"
            f" ({ds.input_dtype}). "
            + (
                "Use a text dataset: pytext."
                if reads_tokens
                else f"Use a language model ({', '.join(models.TOKEN_MODELS)})."
            )
        )
    axis_name = DATA_AXIS if strategy == "pmap" else None
    model = models.get_model(
        config.model,
        ds.num_classes,
        kernels=config.kernels,
        axis_name=axis_name,
        **config.model_kwargs,
    )
    # Checked before the folder is claimed: a model that cannot be built leaves no run.
    check_model(model, ds.input_shape, ds.input_dtype)
    if resume and not checkpoint:
        raise ValueError("A run without checkpoints cannot resume; drop --no-checkpoint.")
    if announce is not None:
        n = count_params(model, ds.input_shape, ds.input_dtype)
        announce(f"{config.model}: {n:,} parameters; recipe: {json.dumps(config.to_dict())}")
    run_options = dict(checkpoint=checkpoint, tensorboard=tensorboard, profile=profile)
    with claim():
        if writer and not resume:
            (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        return _fit_and_report(
            config, out, ds, model, axis_name, writer, t_start,
            progress=progress, resume=resume, keep_checkpoints=keep_checkpoints,
            strategy=strategy, devices=devices, **run_options,
        )  # fmt: skip


def _fit_and_report(
    config, out, ds, model, axis_name, writer, t_start, *, progress, resume,
    keep_checkpoints, strategy, devices, checkpoint, tensorboard, profile,
) -> dict[str, Any]:  # fmt: skip
    """The rest of `train_and_evaluate`, once the run folder is claimed."""
    import jax

    from dl import data, models, train
    from dl.parallel import get_strategy
    from dl.plotting import plot_curves

    task, loss = ds.task, ds.loss
    x_train, y_train = ds.train
    test = ds.test
    if config.model in models.AUTOENCODERS:  # targets are the inputs themselves
        from dl.generative import check_unit_interval

        check_unit_interval(ds.x_train, f"dataset {config.dataset!r}")
        task, loss = "reconstruction", "bernoulli_nll"
        y_train, test = x_train, (ds.x_test, ds.x_test)
    elif task == "classification":
        loss = models.MODEL_LOSSES.get(config.model, loss)
    eval_data = {}
    if config.val_fraction > 0:
        (x_train, y_train), eval_data["val"] = data.validation_split(
            x_train, y_train, config.val_fraction, seed=config.seed
        )
    eval_data["test"] = test  # monitored for the curves only; never used for selection
    early = (
        train.EarlyStopping(
            "val/accuracy" if task == "classification" else "val/loss", patience=config.patience
        )
        if config.patience is not None
        else None
    )
    writers = []
    if tensorboard and writer:
        from dl.writers import TensorBoardWriter

        writers.append(TensorBoardWriter(out / "tensorboard"))
    result = train.train(
        model,
        (x_train, y_train),
        config.fit_config(model, loss=loss),
        writers=writers,
        profile_dir=out / "profile" if profile and writer else None,
        input_dtype=ds.input_dtype,
        axis_name=axis_name,
        eval_data=eval_data,
        early_stopping=early,
        metrics_path=out / "metrics.jsonl" if writer else None,
        progress=progress,
        checkpoint_dir=out / "checkpoints" if checkpoint else None,
        checkpoint_every=config.checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        resume=resume,
        run_config=config.to_dict(),
        strategy=strategy,
        devices=devices,
    )
    for w in writers:
        w.close()
    use_ema = config.ema_decay is not None  # the moving average is what is evaluated
    final = train.evaluate(
        train.make_eval_step(model, loss=loss, axis_name=axis_name, use_ema=use_ema),
        result.state,
        *test,
        strategy=get_strategy(result.strategy, result.num_devices, kernels=result.kernels),
    )
    if writer:
        title = f"{config.model} on {config.dataset}"
        plot_curves(result.history, out / "curves.png", title=title)
    results = {
        "task": task,
        "test_accuracy": final.get("accuracy"),
        "test_loss": final["loss"],
        **task_metrics(ds, final, y_train),
        **(
            autoencoder_report(model, result, ds, out if writer else None, seed=config.seed)
            if task == "reconstruction"
            else {}
        ),
        "train_time_s": result.train_time_s,
        "compile_time_s": result.compile_time_s,
        "total_time_s": time.perf_counter() - t_start,
        "epochs": len(result.history),
        "steps": int(result.state.step),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "num_params": int(sum(p.size for p in jax.tree.leaves(result.state.params))),
        "parallel": {"strategy": result.strategy, "devices": result.num_devices},
        "evaluated": "parameters' moving average (ema)" if use_ema else "parameters",
        "ema_decay": config.ema_decay,
        "profile_dir": result.profile_dir,
        "tensorboard_dir": str(out / "tensorboard") if writers else None,
        "kernels": result.kernels,
        "dataset": {
            "name": ds.name,
            "train": len(x_train),
            "test": len(ds.x_test),
            "val": len(eval_data["val"][0]) if "val" in eval_data else 0,
        },
        "config": config.to_dict(),
        "env": environment(),
        "history": result.history,
    }
    if ds.task == "language_model":
        results["samples"] = sample_text(model, result.state, ds, seed=config.seed)
        results["sample_known_words"] = known_word_fraction(results["samples"][1][32:], ds)
    if writer:
        (out / "results.json").write_text(json.dumps(results, indent=2))
        if "samples" in results:
            (out / "samples.txt").write_text("\n\n----\n\n".join(results["samples"]))
    results["out_dir"] = str(out)
    return results


# --------------------------------------------------------------------------- GANs


def train_judge(ds, *, epochs: int = 8, seed: int = 0) -> tuple[Callable, float]:
    """Train the judging classifier on the real training images. Returns
    (probabilities(x) -> (N, K) numpy, its test accuracy)."""
    import jax

    from dl import models, train

    # `dl train`'s cnn recipe (two conv blocks, shift augmentation), at a constant rate.
    config = default_config(
        "cnn", ds.name, epochs=epochs, schedule="constant", augment="shift", seed=seed
    )
    model = models.get_model("cnn", ds.num_classes, kernels=config.kernels, **config.model_kwargs)
    result = train.train(model, ds.train, config.fit_config(model), progress=False, devices=1)

    def probabilities(x):
        logits = train.predict(
            model, result.state, np.asarray(x, np.float32), kernels=config.kernels
        )
        return np.asarray(jax.nn.softmax(logits, axis=-1))

    acc = float(np.mean(probabilities(ds.x_test).argmax(1) == ds.y_test))
    return probabilities, acc


def plot_gan_curves(history, path) -> None:
    """Discriminator and generator losses, and D's mean output on real and generated
    images, per epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    epochs = [h["epoch"] for h in history]
    for i, keys in enumerate((("d_loss", "g_loss"), ("d_real", "d_fake"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for k in keys:
            ax.plot(epochs, [h[k] for h in history], label=k)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def train_and_evaluate_gan(config, out, *, progress: bool = True) -> dict[str, Any]:
    """`dl train` for the GANs ("dcgan", "cgan"): train, write samples.png (and
    samples_by_class.png for a cGAN), curves.png, metrics.jsonl, results.json, and judge
    1000 samples with a CNN trained on the real training set (`train_judge`), next to
    two controls: the judge on real test images and on uniform noise."""
    import jax

    from dl import data, models
    from dl.gan import (
        create_gan_state,
        fit_gan,
        judge_samples,
        make_gan_step,
        make_optimizers,
        sample,
    )
    from dl.generative import check_unit_interval
    from dl.plotting import save_image_grid

    t_start = time.perf_counter()
    ds = data.load(config.dataset, **config.dataset_kwargs)
    check_unit_interval(ds.x_train, f"dataset {config.dataset!r}")
    if len(ds.input_shape) != 3:
        raise ValueError(
            f"GANs here generate images (H, W, C); dataset {config.dataset!r} has examples "
            f"of shape {ds.input_shape}. Use mnist5k or shapes."
        )
    model = models.get_model(
        config.model, ds.num_classes, image_shape=ds.input_shape, **config.model_kwargs
    )
    if config.optimizer != "adam" or config.schedule != "constant" or config.weight_decay:
        raise ValueError(
            "GANs train with Adam(learning_rate, b1=0.5) at a constant rate and no weight "
            f"decay; got optimizer={config.optimizer!r}, schedule={config.schedule!r}, "
            f"weight_decay={config.weight_decay}. Change only --lr."
        )
    g_tx, d_tx = make_optimizers(config.learning_rate)
    state = create_gan_state(model, g_tx, d_tx, seed=config.seed)
    result = fit_gan(
        state,
        make_gan_step(model, g_tx, d_tx),
        *ds.train,
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        kernels=config.kernels,
        progress=progress,
    )
    with open(out / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in result.history)
    key = jax.random.key(config.seed)
    n = 1000
    labels = np.arange(n) % ds.num_classes
    samples = sample(model, result.state, key, n, labels)
    save_image_grid(samples[:100], out / "samples.png")
    if model.conditional:  # one row per class
        by_class = sample(model, result.state, key, 10 * ds.num_classes, np.arange(100) // 10)
        save_image_grid(by_class, out / "samples_by_class.png")
    plot_gan_curves(result.history, out / "curves.png")
    judge, judge_acc = train_judge(ds, seed=config.seed)
    verdict = judge_samples(judge(samples), ds.num_classes)
    noise = np.random.default_rng(config.seed).uniform(0, 1, samples.shape).astype(np.float32)
    results = {
        "task": "generation",
        "test_accuracy": None,
        "test_loss": None,
        "samples": {"n": n, **verdict},
        "judge": {
            "model": "cnn",
            "test_accuracy": judge_acc,
            "mean_confidence_real_test": judge_samples(judge(ds.x_test), ds.num_classes)[
                "mean_confidence"
            ],
            "mean_confidence_uniform_noise": judge_samples(judge(noise), ds.num_classes)[
                "mean_confidence"
            ],
        },
        "train_time_s": result.train_time_s,
        "compile_time_s": result.compile_time_s,
        "total_time_s": time.perf_counter() - t_start,
        "epochs": len(result.history),
        "steps": int(result.state.step),
        "num_params": {
            "generator": int(sum(p.size for p in jax.tree.leaves(result.state.g_params))),
            "discriminator": int(sum(p.size for p in jax.tree.leaves(result.state.d_params))),
        },
        "parallel": {"strategy": "single", "devices": 1},
        "dataset": {"name": ds.name, "train": len(ds.x_train), "test": len(ds.x_test), "val": 0},
        "config": config.to_dict(),
        "env": environment(),
        "history": result.history,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    results["out_dir"] = str(out)
    return results
