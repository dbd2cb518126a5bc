"""Dense-layer products for XLA:CPU, as Flax's `nn.Dense(dot_general=...)` hook.

`dense_dot_general` has `lax.dot_general`'s signature and results; on large inputs its
VJP computes the kernel's gradient as one product contracting the rows of inputs and
output gradient, with no transposed copy of either (JAX's rule copies the gradient's
transpose first, which XLA:CPU fused badly into large activations:
`experiments/benchmarks/dense.py`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from dl.kernels._common import reverse_mode_only, vjp_keeping_inputs

# Below this many input rows the product made no difference in whole train steps.
DENSE_MIN_ROWS = 1024


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`lax.dot_general` for a dense layer's (inputs, kernel), for flax's `dot_general`
    attributes (`nn.Dense`, `nn.DenseGeneral`, `MultiHeadDotProductAttention`'s
    `qkv_dot_general` and `out_dot_general`): same parameters, same results.

    Its VJP computes the kernel's gradient as one product contracting the rows of
    inputs and output gradient, with no transposed copy. It applies to float products
    of trailing input dimensions with leading kernel dimensions on at least
    `DENSE_MIN_ROWS` rows, without batch dimensions or precision settings; anything
    else goes to `lax.dot_general`. Reverse mode only (`ForwardModeError` otherwise).
    """
    if _fast_dense_applies(lhs, rhs, dimension_numbers, precision, preferred_element_type):
        reverse_mode_only("dense", lhs, rhs)
        return _dense_product(lhs, rhs, len(dimension_numbers[0][0]))
    return lax.dot_general(
        lhs,
        rhs,
        dimension_numbers,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def _fast_dense_applies(lhs, rhs, dimension_numbers, precision, preferred) -> bool:
    if precision is not None or preferred is not None:
        return False
    (lc, rc), (lb, rb) = dimension_numbers
    n = len(lc)
    if tuple(lb) or tuple(rb) or not (1 <= n == len(rc) and n < lhs.ndim and n < rhs.ndim):
        return False
    if lhs.dtype != rhs.dtype or not jnp.issubdtype(lhs.dtype, jnp.floating):
        return False
    if math.prod(lhs.shape[: lhs.ndim - n]) < DENSE_MIN_ROWS:
        return False
    trailing = tuple(range(lhs.ndim - n, lhs.ndim))
    return tuple(map(int, lc)) == trailing and tuple(map(int, rc)) == tuple(range(n))


def _dense_dims(x, n: int):
    return ((tuple(range(x.ndim - n, x.ndim)), tuple(range(n))), ((), ()))


def _dense_forward(x, w, n):
    return lax.dot_general(x, w, _dense_dims(x, n))


def _dense_product_bwd(n, res, g):
    x, w = res
    free = w.ndim - n  # g is x's leading dims then w's free dims
    dx = lax.dot_general(
        g, w, ((tuple(range(g.ndim - free, g.ndim)), tuple(range(n, w.ndim))), ((), ()))
    )
    rows = math.prod(x.shape[: x.ndim - n])
    flat = (((0,), (0,)), ((), ()))  # inputs^T @ grad with no transposed copy of either
    dw = lax.dot_general(x.reshape(rows, -1), g.reshape(rows, -1), flat).reshape(w.shape)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_dense_product = vjp_keeping_inputs(_dense_forward, _dense_product_bwd)
