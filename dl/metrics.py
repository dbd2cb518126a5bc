"""Metrics as sums and counts, so they add exactly across steps and devices.

A step returns e.g. {"loss_sum": f32, "correct": i32, "count": i32}; the host adds those
up over an epoch and only then divides (`summarize`).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp


def expand_mask(mask: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Broadcast a per-example mask (B,) to per-position losses (B, T, ...)."""
    mask = mask.astype(jnp.float32)
    return jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (len(shape) - 1)), shape)


UNLABELLED = -1  # a label of -1 marks an unlabelled position (e.g. a node with no label)


def label_weights(mask: jax.Array, labels: jax.Array, shape: tuple[int, ...], loss: str):
    """Per-position weights (B, ...) of shape `shape`: the example mask, and for integer
    labels, 0 where the label is `UNLABELLED` (semi-supervised node classification)."""
    from dl.losses import classifies

    m = expand_mask(mask, shape)
    if classifies(loss) or (callable(loss) and _integer(labels)):
        m = m * (labels.reshape(shape) >= 0)
    return m


def _integer(labels) -> bool:
    return jnp.issubdtype(labels.dtype, jnp.integer)


def is_classification(loss, logits, labels) -> bool:
    """Accuracy is reported for the classification losses (cross-entropy, margin), and
    for a callable loss whose targets are integer class ids, one per output row
    (outputs (B, ..., K), labels (B, ...))."""
    from dl.losses import classifies

    if classifies(loss):
        return True
    return (
        callable(loss)
        and _integer(labels)
        and logits.ndim == labels.ndim + 1
        and logits.shape[:-1] == labels.shape
    )


def loss_and_accuracy(
    logits: jax.Array,
    labels: jax.Array,
    per_example_loss: jax.Array,
    mask: jax.Array,
    *,
    loss: str = "cross_entropy",
    aux: Mapping[str, jax.Array] | None = None,
) -> dict[str, jax.Array]:
    """Sums for one batch; examples with mask 0 (padding) count nowhere.

    With one label per time step (labels (B, T), per-position losses (B, T)), every
    position is counted: "count" is the number of labelled positions and the mean loss
    is per position (per token for a language model). Positions labelled `UNLABELLED`
    (-1) count nowhere.

    Args:
      logits: model outputs (B, ...).
      labels: targets (B, ...).
      per_example_loss: (B,) or (B, T) per position.
      mask: (B,) weights in {0, 1}.
      loss: the loss name; accuracy is reported for the classification losses.
      aux: auxiliary per-example losses (B,) the model sowed (e.g. {"kl": ...}). They are
        part of the loss; each is also summed as "<name>_sum", and the base loss as
        "<loss>_sum" (e.g. "bernoulli_nll_sum"), so that `summarize` reports each term.

    Returns:
      {"loss_sum", "count"}, for classification "correct", and the terms' sums.
    """
    m = label_weights(mask, labels, per_example_loss.shape, loss)
    out = {
        "loss_sum": jnp.sum(per_example_loss.astype(jnp.float32) * m),
        "count": jnp.sum(m > 0).astype(jnp.int32),
    }
    if aux:
        from dl.losses import loss_name

        out[f"{loss_name(loss)}_sum"] = out["loss_sum"]
        for name, value in aux.items():
            out[f"{name}_sum"] = jnp.sum(value.astype(jnp.float32) * m)
        out["loss_sum"] = out["loss_sum"] + sum(out[f"{name}_sum"] for name in aux)
    correct = _correct(logits, labels, m, mask, loss)
    if correct is not None:
        out["correct"] = correct
    return out


def _correct(logits, labels, m, mask, loss):
    """The number classified right (weights `m` per position, `mask` per example), or
    None for a loss that does not classify."""
    if is_classification(loss, logits, labels):
        hit = jnp.argmax(logits, axis=-1) == labels
        return jnp.sum(hit & (m.reshape(hit.shape) > 0)).astype(jnp.int32)
    if isinstance(loss, str) and loss == "binary_cross_entropy":
        hit = (logits > 0).reshape(logits.shape[0], -1) == (
            labels.reshape(labels.shape[0], -1) > 0.5
        )
        return jnp.sum(hit.all(axis=1) & (mask > 0)).astype(jnp.int32)
    return None


def per_output(loss, outputs, labels, parts, mask) -> dict[str, jax.Array]:
    """The sums of each output of a model with several outputs: "<name>_loss_sum" (its
    per-example loss, unweighted) and, for a classifying loss with one label per
    example, "<name>_correct"; `summarize` reports them as "<name>_loss" and
    "<name>_accuracy". `loss` is the dict or tuple of `dl.losses.output_losses`."""
    from dl.losses import output_losses, pick

    out = {}
    for o in output_losses(loss):
        m = mask.astype(jnp.float32)
        out[f"{o.name}_loss_sum"] = jnp.sum(parts[o.name].astype(jnp.float32) * m)
        logits, y = pick(outputs, o.key, "outputs"), pick(labels, o.key, "targets")
        if y.ndim == 1 or not is_classification(o.loss, logits, y):
            correct = _correct(logits, y, m, mask, o.loss)
            if correct is not None:
                out[f"{o.name}_correct"] = correct
    return out


# Keys combined by minimum rather than sum (the first step at which something happened).
MIN_KEYS = ("first_nonfinite_step",)
NO_STEP = 2**31 - 1  # "never" for first_nonfinite_step


@jax.jit
def add(a: Mapping[str, jax.Array], b: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Combine two metric dicts: sums add, MIN_KEYS take the minimum (no host sync)."""
    return {k: (jnp.minimum if k in MIN_KEYS else jnp.add)(a[k], b[k]) for k in a}


def summarize(sums: Mapping[str, object]) -> dict[str, float]:
    """Turn summed metrics into means: {"loss", "accuracy"?, "count"} as Python numbers."""
    host = jax.device_get(dict(sums))  # one transfer of the whole tree, one sync
    count = int(host["count"])
    out: dict[str, float] = {"count": count}
    denom = max(count, 1)
    if "loss_sum" in host:
        out["loss"] = float(host["loss_sum"]) / denom
    if "correct" in host:
        out["accuracy"] = int(host["correct"]) / denom
    if "nonfinite" in host:
        out["nonfinite_steps"] = int(host["nonfinite"])
    for key, value in host.items():  # the loss's terms, e.g. "kl_sum" -> "kl"
        if key.endswith("_sum") and key != "loss_sum":
            out[key[: -len("_sum")]] = float(value) / denom
        elif key.endswith("_correct"):  # an output's, e.g. "digit_correct"
            out[key[: -len("_correct")] + "_accuracy"] = int(value) / denom
    return out
