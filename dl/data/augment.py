"""On-device augmentation: pure functions `(key, x) -> x` that run inside the train step."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_shift(key: jax.Array, x: jax.Array, max_shift: int = 2) -> jax.Array:
    """Translate each example by an independent integer offset in [-max_shift, max_shift].

    Works for images (B, H, W, C) and 1-D signals (B, L, C): the spatial axes are padded
    with zeros and a window of the original size is cut at a random offset.

    Args:
      key: a `jax.random` key.
      x: batch, channels last.
      max_shift: largest shift in pixels along each spatial axis.

    Returns:
      The shifted batch, same shape and dtype as `x`.
    """
    if max_shift == 0:
        return x
    spatial = x.ndim - 2
    if spatial < 1:
        raise ValueError(f"random_shift needs (B, *spatial, C) input; got shape {x.shape}.")
    pad = [(0, 0)] + [(max_shift, max_shift)] * spatial + [(0, 0)]
    xp = jnp.pad(x, pad)
    offsets = jax.random.randint(key, (x.shape[0], spatial), 0, 2 * max_shift + 1)

    def crop(img, off):
        start = (*off, jnp.zeros((), off.dtype))
        return jax.lax.dynamic_slice(img, start, x.shape[1:])

    return jax.vmap(crop)(xp, offsets)


def random_flip_lr(key: jax.Array, x: jax.Array) -> jax.Array:
    """Mirror each image (B, H, W, C) left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(flip, x[:, :, ::-1], x)


AUGMENTATIONS = {
    "none": None,
    "shift": random_shift,
    "shift_flip": lambda key, x: random_flip_lr(
        jax.random.fold_in(key, 1), random_shift(jax.random.fold_in(key, 0), x)
    ),
}
