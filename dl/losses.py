"""Per-example losses. Reduction (masked mean over the batch) happens in the train step."""

from __future__ import annotations

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


LOSSES = {
    "cross_entropy": cross_entropy,
    "mse": mse,
    "binary_cross_entropy": binary_cross_entropy,
    "bernoulli_nll": bernoulli_nll,
}


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
    return loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
