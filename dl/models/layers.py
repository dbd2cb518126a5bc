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
    """Max or average pooling with stride = window over every spatial axis."""
    nd = x.ndim - 2
    if kind == "none" or window == 1:
        return x
    shape = (window,) * nd
    if kind == "max":
        return nn.max_pool(x, shape, strides=shape)
    if kind == "avg":
        return nn.avg_pool(x, shape, strides=shape)
    raise ValueError(f"pool must be 'max', 'avg' or 'none'; got {kind!r}.")


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
