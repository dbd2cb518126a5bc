"""Max pooling over non-overlapping windows, with a VJP written for XLA:CPU.

`window_reduce` is the reference: a reshape into windows and a reduction (the same
output as `nn.max_pool` with stride = window). `max_pool` has its own VJP: each
window's gradient over its count of maxima, to every maximum (JAX's rule for a
reduce_max), with the count computed as one comparison per window position on the
pooled grid, which XLA:CPU runs faster than the differentiated reduction
(`experiments/benchmarks/pooling.py`). Being a custom VJP, it has no forward-mode
derivative; `dl.kernels` raises a clear error for that.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from dl.kernels._common import reverse_mode_only


def _windows(x: jnp.ndarray, window: int) -> jnp.ndarray:
    """x (B, *spatial, C) without any remainder, as (B, n_0, window, n_1, window, ..., C)."""
    spatial = x.shape[1:-1]
    if min(spatial) < window:
        raise ValueError(
            f"Cannot pool windows of {window} over spatial shape {tuple(spatial)}: an axis "
            "is shorter than the window. Use pool='none' or larger inputs."
        )
    x = x[(slice(None), *(slice(0, (n // window) * window) for n in spatial))]
    split = [x.shape[0]]
    for n in spatial:
        split += [n // window, window]
    return x.reshape(*split, x.shape[-1])


def window_reduce(x: jnp.ndarray, window: int, reduce: Callable) -> jnp.ndarray:
    """Apply `reduce` over non-overlapping `window`-wide windows of every spatial axis
    of a channels-last batch (B, *spatial, C), dropping any remainder."""
    nd = x.ndim - 2
    return reduce(_windows(x, window), axis=tuple(range(2, 2 * nd + 1, 2)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_vjp(x: jnp.ndarray, window: int) -> jnp.ndarray:
    return window_reduce(x, window, jnp.max)


def _max_pool_fwd(x, window):
    y = window_reduce(x, window, jnp.max)
    return y, (x, y)


def _max_pool_bwd(window, res, g):
    x, y = res
    nd = x.ndim - 2
    xw = _windows(x, window)
    # y and g with a length-1 axis after each pooled axis, to broadcast against xw
    expand = (slice(None), *itertools.chain.from_iterable((slice(None), None) for _ in range(nd)))
    count = None
    for position in itertools.product(range(window), repeat=nd):
        at = (slice(None), *itertools.chain.from_iterable((slice(None), p) for p in position))
        hit = (xw[at] == y).astype(g.dtype)
        count = hit if count is None else count + hit
    dx = jnp.where(xw == y[expand], (g / count)[expand], jnp.zeros((), g.dtype))
    dx = dx.reshape(x.shape[0], *(n * window for n in y.shape[1:-1]), x.shape[-1])
    if dx.shape != x.shape:  # the remainder that pooling dropped gets no gradient
        dx = jnp.pad(dx, [(0, n - m) for n, m in zip(x.shape, dx.shape, strict=True)])
    return (dx,)


_max_pool_vjp.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jnp.ndarray, window: int) -> jnp.ndarray:
    """`window_reduce(x, window, jnp.max)` with the VJP above (reverse mode only)."""
    reverse_mode_only("max pooling", x)
    return _max_pool_vjp(x, window)
