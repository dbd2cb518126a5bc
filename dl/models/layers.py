"""Small shared pieces of the model zoo: activations by name, pooling, BatchNorm."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from dl import kernels as kernels_lib
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


def pool(x: jnp.ndarray, kind: str, window: int, kernels: str = "xla") -> jnp.ndarray:
    """Max or average pooling with stride = window over every spatial axis (channels
    last), as `nn.max_pool(x, (window,) * nd, strides=(window,) * nd)` ("VALID": a
    trailing remainder is dropped). `kernels` picks the max pooling's formulation
    (`dl.kernels.max_pool`)."""
    if kind not in ("max", "avg", "none"):
        raise ValueError(f"pool must be 'max', 'avg' or 'none'; got {kind!r}.")
    if kind == "none" or window == 1:
        return x
    if kind == "max":
        return kernels_lib.max_pool(kernels)(x, window)
    return kernels_lib.window_reduce(x, window, jnp.mean)


def batch_norm(train: bool, axis_name: str | None = None, **kwargs) -> nn.BatchNorm:
    """BatchNorm with the Keras/PyTorch-like momentum 0.9 used across the zoo.

    `axis_name`: the pmap axis to average the statistics over, so that they are those
    of the global batch (`dl.parallel.DATA_AXIS` under the "pmap" strategy); under `jit`
    with shardings that holds already, and None is right.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        axis_name=axis_name if train else None,
        **kwargs,
    )
