"""Per-example losses. Reduction (masked mean over the batch) happens in the train step."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dl._errors import unknown_name


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Softmax cross-entropy with integer labels, optionally label-smoothed (Szegedy 2016).

    Args:
      logits: (B, K).
      labels: (B,) integers in [0, K).
      label_smoothing: weight moved from the true class to the uniform distribution.

    Returns:
      (B,) losses.
    """
    if label_smoothing == 0.0:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error per example (mean over all non-batch axes)."""
    err = jnp.square(pred - target.reshape(pred.shape).astype(pred.dtype))
    return err.reshape(err.shape[0], -1).mean(axis=1)


def binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Sigmoid cross-entropy on logits against {0, 1} targets, averaged per example."""
    labels = labels.reshape(logits.shape).astype(logits.dtype)
    loss = optax.sigmoid_binary_cross_entropy(logits, labels)
    return loss.reshape(loss.shape[0], -1).mean(axis=1)


def bernoulli_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Negative log-likelihood of targets in [0, 1] under Bernoulli(sigmoid(logits)),
    SUMMED over all non-batch axes: nats per example, the reconstruction term of a VAE's
    ELBO on images."""
    targets = targets.reshape(logits.shape).astype(logits.dtype)
    loss = optax.sigmoid_binary_cross_entropy(logits, targets)
    return loss.reshape(loss.shape[0], -1).sum(axis=1)


def margin(
    lengths: jax.Array,
    labels: jax.Array,
    m_plus: float = 0.9,
    m_minus: float = 0.1,
    absent_weight: float = 0.5,
) -> jax.Array:
    """The capsule network's margin loss (Sabour et al. 2017), summed over classes:
    max(0, m+ - |v_k|)^2 for the true class k and absent_weight * max(0, |v_j| - m-)^2
    for every other class j.

    Args:
      lengths: (B, K) class capsule lengths in [0, 1) (`dl.models.CapsNet`'s output).
      labels: (B,) integers in [0, K).

    Returns:
      (B,) losses.
    """
    present = jax.nn.one_hot(labels, lengths.shape[-1], dtype=lengths.dtype)
    up = present * jnp.square(jax.nn.relu(m_plus - lengths))
    down = absent_weight * (1.0 - present) * jnp.square(jax.nn.relu(lengths - m_minus))
    return jnp.sum(up + down, axis=-1)


def nt_xent(projections: jax.Array, targets=None, temperature: float = 0.5) -> jax.Array:
    """SimCLR's contrastive loss (Chen et al. 2020), per example.

    Each of the 2B views (two per example) should pick out its partner among the other
    2B - 1 by cosine similarity / temperature: softmax cross-entropy per view, the two
    views' losses averaged per example. The other examples of the batch are the
    negatives, so the loss depends on the batch it is computed in (in evaluation,
    a last batch's padding rows serve as negatives too, though their losses count nowhere).

    Args:
      projections: (B, 2, D) two views' projections per example (`dl.selfsup.SimCLR`).
      targets: ignored (self-supervised); present for the losses' signature.
      temperature: the similarities' scale.

    Returns:
      (B,) losses.
    """
    if projections.ndim != 3 or projections.shape[1] != 2:
        raise ValueError(
            f"nt_xent needs projections (B, 2, D), two views per example; got shape "
            f"{projections.shape}."
        )
    b = projections.shape[0]
    z = jnp.concatenate([projections[:, 0], projections[:, 1]]).astype(jnp.float32)
    z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=1, keepdims=True), 1e-12))
    sim = (z @ z.T) / temperature
    sim = jnp.where(jnp.eye(2 * b, dtype=bool), -jnp.inf, sim)  # a view is not its partner
    partner = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
    per_view = optax.softmax_cross_entropy_with_integer_labels(sim, partner)
    return 0.5 * (per_view[:b] + per_view[b:])


LOSSES = {
    "cross_entropy": cross_entropy,
    "margin": margin,
    "mse": mse,
    "binary_cross_entropy": binary_cross_entropy,
    "bernoulli_nll": bernoulli_nll,
    "nt_xent": nt_xent,
}


# Losses of class scores (B, K) against integer labels (B,): they report accuracy, and
# their labels are class ids (-1: unlabelled).
CLASSIFICATION_LOSSES = ("cross_entropy", "margin")


def classifies(loss) -> bool:
    """Whether `loss` is one of `CLASSIFICATION_LOSSES` by name."""
    return isinstance(loss, str) and loss in CLASSIFICATION_LOSSES


def get_loss(name):
    """A per-example loss: by name from `LOSSES`, or any callable
    `(outputs, targets) -> per-example loss (B,)` (or per position, (B, T)), returned
    as it is."""
    if callable(name):
        return name
    if not isinstance(name, str) or name not in LOSSES:
        raise unknown_name("loss", name, LOSSES, "Or pass a callable (outputs, targets) -> (B,).")
    return LOSSES[name]


def loss_name(loss) -> str:
    """A name for `loss` in metric keys: the registry name, or the callable's name."""
    if isinstance(loss, str):
        return loss
    return getattr(loss, "__name__", type(loss).__name__) if callable(loss) else "outputs"


# ----------------------------------------------------------------- several outputs


@dataclasses.dataclass(frozen=True)
class OutputLoss:
    """The loss of one output of a model whose outputs are a dict or a tuple: `key` picks
    the output and its targets, `name` labels its metrics ("<name>_loss")."""

    key: str | int
    loss: Any
    weight: float

    @property
    def name(self) -> str:
        return str(self.key)


def _weighted(spec) -> bool:
    return (
        isinstance(spec, tuple)
        and len(spec) == 2
        and (isinstance(spec[0], str) or callable(spec[0]))
        and isinstance(spec[1], int | float)
        and not isinstance(spec[1], bool)
    )


def output_losses(loss) -> tuple[OutputLoss, ...] | None:
    """The per-output losses of a model with several outputs, or None for one loss.

    `loss` is one loss (a name or a callable) for a model with one output, or, for a
    model whose outputs are a dict or a tuple, a dict or tuple of the same keys whose
    entries are a loss or a `(loss, weight)` pair: the objective is the weighted sum
    of the outputs' per-example losses, e.g.
    `{"digit": "cross_entropy", "parity": ("binary_cross_entropy", 0.5)}`.
    """
    if isinstance(loss, str) or callable(loss):
        return None
    if _weighted(loss):
        raise ValueError(
            f"loss {loss!r} is a (loss, weight) pair, which weights one output of several; "
            'give the outputs\' losses as a dict or tuple, e.g. {"a": "cross_entropy", '
            '"b": ("mse", 0.5)}, or a single loss without a weight.'
        )
    if isinstance(loss, Mapping):
        items = list(loss.items())
    elif isinstance(loss, tuple | list):
        items = list(enumerate(loss))
    else:
        raise unknown_name("loss", loss, LOSSES, "Or pass a callable (outputs, targets) -> (B,).")
    if not items:
        raise ValueError(f"loss {loss!r} names no output; give each output its loss.")
    out = []
    for key, spec in items:
        fn, weight = spec if _weighted(spec) else (spec, 1.0)
        if not (isinstance(fn, str) or callable(fn)):
            raise ValueError(
                f"loss[{key!r}] must be a loss name, a callable or a (loss, weight) pair; "
                f"got {spec!r}."
            )
        get_loss(fn)
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"loss[{key!r}]'s weight must be finite and >= 0; got {weight!r}.")
        out.append(OutputLoss(key, fn, float(weight)))
    return tuple(out)


def check_loss(loss) -> None:
    """Check one loss or a dict/tuple of per-output losses (`output_losses`)."""
    if output_losses(loss) is None:
        get_loss(loss)


def pick(tree, key, what: str):
    """`tree[key]`: one output (or its targets) of a model with several outputs."""
    try:
        return tree[key]
    except (KeyError, IndexError, TypeError):
        have = list(tree) if isinstance(tree, Mapping) else f"a {type(tree).__name__}"
        if isinstance(tree, tuple | list):
            have = f"a {type(tree).__name__} of {len(tree)}"
        raise ValueError(
            f"The loss names output {key!r}, but the {what} are {have}; give the loss the "
            "same keys as the model's outputs (a dict for a dict, a tuple for a tuple)."
        ) from None
