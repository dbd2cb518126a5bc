"""Formulations that exist to be fast on one backend, chosen by one argument.

`kernels="xla"` (the library default) is plain JAX and Flax: every transformation works
(jit, grad, jvp, vmap, hessian). `kernels="cpu"` swaps in dl's formulations for XLA:CPU
through Flax's hooks, with the same parameters and results (to float32 rounding):

- `conv`: `nn.Conv(conv_general_dilated=...)` (`dl.kernels.convolution`);
- `dense`, `dot_general`: `nn.Dense(dot_general=...)` (`dl.kernels.products`);
- `attention_fn`: `MultiHeadDotProductAttention(attention_fn=...)` (`dl.kernels.attention`);
- `max_pool`: non-overlapping max pooling (`dl.kernels.pool`);
- `jit`: `jax.jit` plus XLA:CPU compiler options (`dl.kernels.compiler`).

They are custom VJPs: reverse mode only. Forward-mode AD through them raises a
`ForwardModeError` that names the layer and says to use `kernels="xla"`.
`kernels="auto"` is "cpu" on the CPU backend and "xla" elsewhere: what `dl train` and
`dl reproduce` use. `tune_host_allocator()` is a separate, process-wide call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from dl.kernels._common import ForwardModeError
from dl.kernels._select import KERNELS, resolve
from dl.kernels.attention import attention as _cpu_attention
from dl.kernels.attention import reference_attention
from dl.kernels.compiler import compiler_options, jit
from dl.kernels.convolution import conv_general_dilated as _cpu_conv
from dl.kernels.host import host_allocator_tuned, tune_host_allocator
from dl.kernels.pool import max_pool as _cpu_max_pool
from dl.kernels.pool import window_reduce
from dl.kernels.products import dense_dot_general as _cpu_dot_general

__all__ = [
    "KERNELS",
    "ForwardModeError",
    "attention_fn",
    "compiler_options",
    "conv",
    "dense",
    "dot_general",
    "host_allocator_tuned",
    "jit",
    "max_pool",
    "resolve",
    "tune_host_allocator",
    "window_reduce",
]


def conv(kernels: str = "xla") -> Callable[..., nn.Conv]:
    """`nn.Conv`, computed by dl's CPU convolution for `kernels="cpu"`: same parameters."""
    if resolve(kernels) == "xla":
        return nn.Conv
    return functools.partial(nn.Conv, conv_general_dilated=_cpu_conv)


def dot_general(kernels: str = "xla") -> Callable:
    """A `dot_general` for Flax's dense layers and attention projections."""
    return lax.dot_general if resolve(kernels) == "xla" else _cpu_dot_general


def dense(kernels: str = "xla") -> Callable[..., nn.Dense]:
    """`nn.Dense`, with dl's CPU product for `kernels="cpu"`: same parameters."""
    if resolve(kernels) == "xla":
        return nn.Dense
    return functools.partial(nn.Dense, dot_general=_cpu_dot_general)


def attention_fn(kernels: str = "xla", *, causal: bool = False) -> Callable:
    """An `attention_fn` for `nn.MultiHeadDotProductAttention`; `causal` masks later
    tokens (and lets the CPU kernel skip them)."""
    fn = reference_attention if resolve(kernels) == "xla" else _cpu_attention
    return functools.partial(fn, causal=causal)


def max_pool(kernels: str = "xla") -> Callable[[jnp.ndarray, int], jnp.ndarray]:
    """`(x, window) -> x` max-pooled over non-overlapping windows of every spatial axis
    of a channels-last batch (a trailing remainder is dropped)."""
    if resolve(kernels) == "xla":
        return lambda x, window: window_reduce(x, window, jnp.max)
    return _cpu_max_pool
