"""Small shared pieces of the model zoo: activations by name, nd-generic conv helpers."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from dl._errors import unknown_name

ACTIVATIONS: dict[str, Callable] = {
    "relu": nn.relu,
    "tanh": nn.tanh,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
    "elu": nn.elu,
    "silu": nn.silu,
    "leaky_relu": nn.leaky_relu,
    "identity": lambda x: x,
}


def activation(name: str) -> Callable:
    """Look up an activation function by name."""
    if name not in ACTIVATIONS:
        raise unknown_name("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]


def spatial_dims(x: jnp.ndarray, model: str) -> int:
    """Number of spatial axes of a channels-last batch (1 for signals, 2 for images)."""
    if x.ndim not in (3, 4):
        raise ValueError(
            f"{model} expects a batch shaped (B, L, C) or (B, H, W, C) with channels last; "
            f"got shape {tuple(x.shape)}. Add a channel axis with x[..., None]."
        )
    return x.ndim - 2


def pool(x: jnp.ndarray, kind: str, window: int) -> jnp.ndarray:
    """Max or average pooling with stride = window over every spatial axis (channels last).

    Same output as `nn.max_pool(x, (window,) * nd, strides=(window,) * nd)` ("VALID": a
    trailing remainder of rows or columns is dropped), computed by reshaping each axis
    into (size // window, window) and reducing. Windows that do not overlap need no
    `reduce_window`; the gain is in the backward pass: XLA:CPU runs `nn.max_pool`'s
    gradient as a select-and-scatter 4-5x slower than this reduction's (measured in
    experiments/benchmarks/pooling.py). The gradient is the same except where a window
    holds several equal maxima, which here share it equally (a valid subgradient) instead
    of all going to the first; after a ReLU such ties are zeros, whose gradient the ReLU
    zeroes either way.
    """
    if kind not in ("max", "avg", "none"):
        raise ValueError(f"pool must be 'max', 'avg' or 'none'; got {kind!r}.")
    if kind == "none" or window == 1:
        return x
    return window_reduce(x, window, jnp.max if kind == "max" else jnp.mean)


def window_reduce(x: jnp.ndarray, window: int, reduce: Callable) -> jnp.ndarray:
    """Apply `reduce` over non-overlapping `window`-wide windows of every spatial axis
    of a channels-last batch (B, *spatial, C), dropping any remainder."""
    spatial = x.shape[1:-1]
    if min(spatial) < window:
        raise ValueError(
            f"Cannot pool windows of {window} over spatial shape {tuple(spatial)}: an axis "
            "is shorter than the window. Use pool='none' or larger inputs."
        )
    keep = tuple(slice(0, (n // window) * window) for n in spatial)
    x = x[(slice(None), *keep)]
    split = [x.shape[0]]
    for n in spatial:
        split += [n // window, window]
    x = x.reshape(*split, x.shape[-1])
    return reduce(x, axis=tuple(range(2, 2 * len(spatial) + 1, 2)))


def batch_norm(train: bool, **kwargs) -> nn.BatchNorm:
    """BatchNorm with the Keras/PyTorch-like momentum 0.9 used across the zoo.

    Under `jax.pmap` (via `dl.parallel`) its statistics are averaged over the devices, so
    they are those of the global batch; under `jit` with shardings that holds already.
    """
    from dl.parallel import collective_axis

    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        axis_name=collective_axis() if train else None,
        **kwargs,
    )
