"""Generative adversarial networks: DCGAN (Radford et al. 2016) and a conditional GAN
(Mirza & Osindero 2014), trained with the non-saturating loss (Goodfellow et al. 2014).

Read top to bottom:

1. `DCGAN` is one Linen module holding a generator and a discriminator (`generate`,
   `discriminate`); its parameters are {"generator": ..., "discriminator": ...}.
2. `GANState` is a pytree with each network's parameters and its OWN optax state.
3. `make_gan_step` builds a pure `(state, batch) -> (state, metrics)` that updates the
   discriminator, then the generator against the updated discriminator; its metrics
   are sums and a count. `fit_gan` trains it in `dl.train.fit`'s loop.
4. `judge_samples` scores generated images with a classifier trained on the real data:
   mean top-class confidence and which classes appear.

Images are in [0, 1] outside this module; the networks see them scaled to [-1, 1]
(the generator ends in tanh, as in DCGAN).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from dl._errors import check_positive_int
from dl.generative import check_unit_interval
from dl.models.gan import DCGAN, Discriminator, Generator
from dl.train import fit

__all__ = ["DCGAN", "Discriminator", "GANState", "Generator", "fit_gan", "make_gan_step"]


@struct.dataclass
class GANState:
    """Both networks' parameters, the generator's BatchNorm statistics, and one optax
    state per network; the image shape and class count ride along as static metadata
    (what `dl.train.fit` checks the data against)."""

    step: jax.Array
    g_params: Any
    d_params: Any
    g_stats: Any
    g_opt: Any
    d_opt: Any
    rng: jax.Array
    input_shape: tuple[int, ...] = struct.field(pytree_node=False, default=())
    num_classes: int = struct.field(pytree_node=False, default=0)
    input_dtype: str = struct.field(pytree_node=False, default="float32")
    output_shape: tuple[int, ...] = struct.field(pytree_node=False, default=())


def make_optimizers(
    learning_rate: float = 2e-4, b1: float = 0.5
) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """DCGAN's Adam(2e-4, beta1=0.5) for each network (the defaults of the paper)."""
    return optax.adam(learning_rate, b1=b1), optax.adam(learning_rate, b1=b1)


def create_gan_state(model: DCGAN, g_tx, d_tx, *, seed: int = 0) -> GANState:
    init_key, run_key = jax.random.split(jax.random.key(seed))
    z = jnp.zeros((1, model.latent_dim))
    labels = jnp.zeros((1,), jnp.int32)
    variables = jax.jit(lambda k: model.init(k, z, labels))(init_key)
    params = variables["params"]
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=params["generator"],
        d_params=params["discriminator"],
        g_stats=variables["batch_stats"]["generator"],
        g_opt=g_tx.init(params["generator"]),
        d_opt=d_tx.init(params["discriminator"]),
        rng=run_key,
        input_shape=tuple(int(d) for d in model.image_shape),
        num_classes=int(model.num_classes),
        output_shape=(int(model.num_classes),),
    )


def _generate(model, g_params, g_stats, z, labels, train):
    variables = {"params": {"generator": g_params}, "batch_stats": {"generator": g_stats}}
    if train:
        out, mutated = model.apply(
            variables, z, labels, True, method=DCGAN.generate, mutable=["batch_stats"]
        )
        return out, mutated["batch_stats"]["generator"]
    return model.apply(variables, z, labels, False, method=DCGAN.generate), g_stats


def _discriminate(model, d_params, x, labels):
    variables = {"params": {"discriminator": d_params}}
    return model.apply(variables, x, labels, method=DCGAN.discriminate)


def make_gan_step(model: DCGAN, g_tx, d_tx, *, real_label: float = 1.0) -> Callable:
    """The pure GAN step `(state, batch) -> (state, metrics)`, batch {"x": images in
    [0, 1], "y": labels}.

    1. Discriminator: minimise softplus(-D(x)) + softplus(D(G(z))), i.e. the
       cross-entropy of telling real (1) from generated (0) images.
    2. Generator, against the updated discriminator, with the non-saturating loss
       softplus(-D(G(z'))) = -log D(G(z')) (Goodfellow et al. 2014), whose gradient does
       not vanish when D rejects the samples confidently, unlike log(1 - D(G(z))).

    With `real_label` < 1 the discriminator's target for real images is smoothed
    (one-sided label smoothing, Salimans et al. 2016).

    Metrics are sums over the batch and a count, as every step of `dl.train` reports
    them (`dl.metrics.summarize` turns them into means): d_loss_sum, g_loss_sum,
    d_real_sum (D's probability on real images), d_fake_sum (on generated ones), count.
    """

    def step(state: GANState, batch) -> tuple[GANState, dict[str, jax.Array]]:
        real = batch["x"] * 2.0 - 1.0
        labels = batch["y"].astype(jnp.int32)
        b = real.shape[0]
        kd, kg = jax.random.split(jax.random.fold_in(state.rng, state.step))
        z_d = jax.random.normal(kd, (b, model.latent_dim))
        fake, g_stats = _generate(model, state.g_params, state.g_stats, z_d, labels, True)
        fake = jax.lax.stop_gradient(fake)

        def d_objective(d_params):
            real_logit = _discriminate(model, d_params, real, labels)
            fake_logit = _discriminate(model, d_params, fake, labels)
            real_loss = real_label * jax.nn.softplus(-real_logit) + (
                1.0 - real_label
            ) * jax.nn.softplus(real_logit)
            loss = jnp.mean(real_loss + jax.nn.softplus(fake_logit))
            return loss, (real_logit, fake_logit)

        (d_loss, (real_logit, fake_logit)), d_grads = jax.value_and_grad(d_objective, has_aux=True)(
            state.d_params
        )
        d_updates, d_opt = d_tx.update(d_grads, state.d_opt, state.d_params)
        d_params = optax.apply_updates(state.d_params, d_updates)

        z_g = jax.random.normal(kg, (b, model.latent_dim))

        def g_objective(g_params):
            img, stats = _generate(model, g_params, g_stats, z_g, labels, True)
            logit = _discriminate(model, d_params, img, labels)
            return jnp.mean(jax.nn.softplus(-logit)), stats

        (g_loss, g_stats), g_grads = jax.value_and_grad(g_objective, has_aux=True)(state.g_params)
        g_updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
        g_params = optax.apply_updates(state.g_params, g_updates)
        new = state.replace(
            step=state.step + 1,
            g_params=g_params,
            d_params=d_params,
            g_stats=g_stats,
            g_opt=g_opt,
            d_opt=d_opt,
        )
        metrics = {
            "d_loss_sum": d_loss * b,
            "g_loss_sum": g_loss * b,
            "d_real_sum": jnp.sum(jax.nn.sigmoid(real_logit)),
            "d_fake_sum": jnp.sum(jax.nn.sigmoid(fake_logit)),
            "count": jnp.asarray(b, jnp.int32),
        }
        return new, metrics

    return step


@dataclasses.dataclass
class GANResult:
    state: GANState
    history: list[dict[str, float]]
    train_time_s: float
    compile_time_s: float


def fit_gan(
    state: GANState,
    step: Callable,
    x,
    y,
    *,
    epochs: int,
    batch_size: int = 64,
    seed: int = 0,
    on_epoch: Callable[[int, GANState], None] | None = None,
    kernels: str = "xla",
    **fit_kwargs,
) -> GANResult:
    """Train for `epochs` over (x, y) with `dl.train.fit`'s loop on one device: `step`
    compiled once (state donated), batches gathered on the device from resident data,
    shuffled from (seed, epoch), the last partial batch dropped, one step per call
    (XLA:CPU runs this step's strided convolutions slowly inside loops). The history
    rows hold the epoch means d_loss, g_loss, d_real, d_fake."""
    batch_size = check_positive_int("batch_size", batch_size)
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or len(x) < batch_size:
        raise ValueError(
            f"fit_gan needs images (N, H, W, C) with N >= batch_size={batch_size}; got "
            f"shape {x.shape}."
        )
    check_unit_interval(x, "GAN training images")
    fit_kwargs.setdefault("progress", False)
    result = fit(
        state,
        step,
        None,
        (x, np.asarray(y, np.int32)),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        strategy="single",
        steps_per_call=1,
        kernels=kernels,
        on_epoch=on_epoch,
        **fit_kwargs,
    )
    history = [
        {
            **{k[len("train/") :]: v for k, v in row.items() if k.startswith("train/")},
            "epoch": row["epoch"],
            "step": row["step"],
            "time_s": row["time_s"],
        }
        for row in result.history
    ]
    return GANResult(result.state, history, result.train_time_s, result.compile_time_s)


def sample(
    model: DCGAN,
    state: GANState,
    key: jax.Array,
    n: int,
    labels=None,
) -> np.ndarray:
    """`n` generated images in [0, 1], in inference mode (running BatchNorm statistics;
    sampling with batch statistics instead judged the same, 0.78 vs 0.78). A
    conditional model needs `labels` (n,); an unconditional one ignores them."""
    if model.conditional and labels is None:
        raise ValueError("A conditional GAN needs labels: sample(..., labels=np.arange(n) % 10).")
    labels = jnp.zeros((n,), jnp.int32) if labels is None else jnp.asarray(labels, jnp.int32)
    z = jax.random.normal(key, (n, model.latent_dim))
    fn = jax.jit(lambda gp, gs, z, lab: _generate(model, gp, gs, z, lab, False)[0])
    return np.asarray((fn(state.g_params, state.g_stats, z, labels) + 1.0) / 2.0)


def judge_samples(probabilities, num_classes: int) -> dict[str, Any]:
    """Score generated images by a classifier's softmax outputs (N, K): the mean
    top-class confidence, how many samples each class gets, and how many classes appear."""
    p = np.asarray(probabilities, np.float64)
    top = p.argmax(axis=1)
    counts = np.bincount(top, minlength=num_classes)
    return {
        "mean_confidence": float(p.max(axis=1).mean()),
        "class_counts": counts.tolist(),
        "classes_present": int((counts > 0).sum()),
    }
