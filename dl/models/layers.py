"""Small shared pieces of the model zoo: activations by name, nd-generic conv helpers."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from dl._errors import unknown_name
from dl.xla import cpu_defaults_apply

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

    Max pooling has its own VJP (`_max_pool`) with that same gradient, JAX's for a
    reduce_max: each window's gradient over its count of maxima, to every maximum.
    Differentiated as a reduction, XLA:CPU counted the maxima with a reduction whose
    result it broadcast back inside one YNNPACK fusion, which took 1.1-1.7 ms of
    LeNet-5's step for a (128, 28, 28, 6) input; here the count is a sum of one
    comparison per window position on the pooled grid. Whole train steps, interleaved:
    the CNN 18.7 -> 16.4 ms, and LeNet-5 6.5 -> 5.7 ms with the first layer's
    materialised shifted sum (`_materialised_sum`; without it 7.7 ms). It is used where
    `dl.xla.cpu_defaults_apply()`; being a custom VJP, it has no forward-mode derivative
    (jax.jvp, jax.hessian): set `DL_XLA_DEFAULTS=0` for those.
    """
    if kind not in ("max", "avg", "none"):
        raise ValueError(f"pool must be 'max', 'avg' or 'none'; got {kind!r}.")
    if kind == "none" or window == 1:
        return x
    if kind == "max":
        return _max_pool(x, window) if cpu_defaults_apply() else window_reduce(x, window, jnp.max)
    return window_reduce(x, window, jnp.mean)


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
def _max_pool(x: jnp.ndarray, window: int) -> jnp.ndarray:
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


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


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


# ---- convolutions on the CPU: one input channel, and few input channels' gradients

# Work (taps x output channels, the multiply-adds per output pixel) up to which the
# single-channel convolution is computed as a sum of shifted inputs. Measured on the
# 2-core CPU, whole train steps at batch 128 (dl.xla's options on, interleaved): the
# shifted sum won at 150 (LeNet-5's 5x5 -> 6: 8.4 -> 6.4 ms), 288 (3x3 -> 32: 18.7 ->
# 17.1 ms), 400 (5x5 -> 16: 14.6 -> 13.5 ms) and 576 (3x3 -> 64: 34.3 -> 32.3 ms), tied
# at 800 (5x5 -> 32) and lost at 1568 (7x7 -> 32: 23.9 -> 30.9 ms).
MAX_SHIFTED_WORK = 640

# Input channels up to which a 2-D convolution's input gradient is computed by rows
# (`_row_transposed`). Measured as above: LeNet-5's 6 -> 16 5x5 step 5.7 -> 4.3 ms, a CNN
# with 8 -> 16 3x3 4.11 -> 3.95 ms, 16 -> 32 3x3 6.18 -> 5.85 ms; 32 -> 64 3x3 lost
# (17.0 -> 17.8 ms).
MAX_ROW_GRAD_CHANNELS = 16


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """`lax.conv_general_dilated`, computed differently for three cases on the CPU.

    All apply to channels-last float32 convolutions with stride 1 and no dilation or
    groups, where `dl.xla.cpu_defaults_apply()` (the CPU backend, unless
    `DL_XLA_DEFAULTS=0`); anything else is passed to `lax.conv_general_dilated`
    unchanged.

    - One input channel (a first layer on grey images or 1-D signals), at most
      `MAX_SHIFTED_WORK` taps x output channels: the convolution is a sum of shifted
      inputs. XLA:CPU computes it poorly: LeNet-5's 1->6 5x5 forward took 2.5-3.3 ms at
      batch 128 where the 25 shifted multiply-adds took 0.4-0.6 ms, and 1->32 3x3 1.8
      vs 0.4 ms (`experiments/benchmarks/`). With more taps than output channels the
      sum is materialised once (`_materialised_sum`). Its gradients are lax's, computed
      as in the third case.
    - 2-D, 2 to `MAX_ROW_GRAD_CHANNELS` input channels, a kernel of at least 2 x 2:
      the forward pass and the kernel's gradient are lax's, the input gradient is
      computed by rows (`_row_transposed`). XLA:CPU's own input gradient is a
      convolution with that few output channels, which Eigen computes slowly (LeNet-5's
      6 -> 16 5x5: 1.9 ms at batch 128, by rows 0.6 ms).
    - Any other such convolution with non-negative padding: lax's forward pass, and
      lax's gradients computed as forward convolutions in the channels-last form
      (`_kernel_grad`, `_input_grad`; bit for bit lax's), which XLA:CPU runs fast in
      loops too. The two cases above take their kernel gradient the same way.

    All are custom VJPs, so they have no forward-mode derivative (`jax.jvp`); set
    `DL_XLA_DEFAULTS=0` for that. The input gradient by rows sums in another order than
    lax's (differences of a few float32 ulps). Tests check every path against lax,
    values and gradients.
    """
    args = (lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers)
    plain = _plain_f32_conv(*args, feature_group_count, batch_group_count, preferred_element_type)
    pads = _explicit_padding(lhs, rhs, padding) if plain else None
    if pads is not None and min(p for pair in pads for p in pair) >= 0:
        if _use_shifted_sum(lhs, rhs):
            return _shifted_conv(lhs, rhs, pads)
        if _use_row_grad(lhs, rhs, pads):
            return _row_grad_conv(lhs, rhs, pads)
        return _plain_conv(lhs, rhs, pads)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def _channels_last_specs(nd: int) -> tuple[str, str, str]:
    sp = "DHW"[-nd:]  # nd is 1, 2 or 3 (checked by the callers)
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


def _plain_f32_conv(lhs, rhs, strides, lhs_dil, rhs_dil, dn, groups, bgroups, pref) -> bool:
    """A 1- to 3-D channels-last float32 convolution, stride 1, no dilation or groups,
    on the CPU (unless DL_XLA_DEFAULTS=0): where this module's formulations may apply."""
    nd = lhs.ndim - 2
    if not 1 <= nd <= 3 or not cpu_defaults_apply():
        return False
    if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32 or pref not in (None, jnp.float32):
        return False
    if groups != 1 or bgroups != 1:
        return False
    if any(s != 1 for s in strides) or any(d != 1 for d in (lhs_dil or ()) + (rhs_dil or ())):
        return False
    specs = _channels_last_specs(nd)
    return dn is not None and lax.conv_dimension_numbers(lhs.shape, rhs.shape, specs) == (
        lax.conv_dimension_numbers(lhs.shape, rhs.shape, dn)
    )


def _explicit_padding(lhs, rhs, padding) -> tuple[tuple[int, int], ...] | None:
    """Padding as (low, high) pairs; None for a padding string other than SAME/VALID."""
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            return None
        strides = (1,) * (lhs.ndim - 2)
        padding = lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2], strides, padding)
    return tuple(tuple(int(v) for v in p) for p in padding)


def _use_shifted_sum(lhs, rhs) -> bool:
    if lhs.shape[-1] != 1 or rhs.shape[-2] != 1:
        return False
    return math.prod(rhs.shape[:-2]) * rhs.shape[-1] <= MAX_SHIFTED_WORK


def _use_row_grad(lhs, rhs, padding) -> bool:
    if lhs.ndim != 4 or not 2 <= rhs.shape[-2] <= MAX_ROW_GRAD_CHANNELS:
        return False
    kernel = rhs.shape[:2]
    if min(kernel) < 2:
        return False
    # the transposed convolution pads by k - 1 - p: 0 <= p <= k - 1 on each side
    return all(0 <= p <= k - 1 for pads, k in zip(padding, kernel, strict=True) for p in pads)


def _shifted_sum(x, w, padding):
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    kernel = w.shape[:-2]
    out = [n - k + 1 for n, k in zip(x.shape[1:-1], kernel, strict=True)]
    y = None
    for tap in itertools.product(*(range(k) for k in kernel)):
        spans = (slice(t, t + n) for t, n in zip(tap, out, strict=True))
        window = x[(slice(None), *spans, slice(None))]
        term = window * w[tap][0]  # (B, *out, 1) * (C_out,)
        y = term if y is None else y + term
    return y


def _lax_conv(x, w, padding):
    specs = _channels_last_specs(x.ndim - 2)
    return lax.conv_general_dilated(x, w, (1,) * (x.ndim - 2), padding, dimension_numbers=specs)


def _materialised_sum(x, w, padding):
    if math.prod(w.shape[:-2]) <= w.shape[-1]:
        return _shifted_sum(x, w, padding)

    # Materialise the sum: XLA:CPU fuses an element-wise sum into each consumer and
    # recomputes it there (the pooling, its gradient, the ReLU's), and it removes
    # lax.optimization_barrier before fusing. A conditional's result is a buffer that
    # no consumer fuses into. Both branches are the same sum, so the values are the
    # sum's, bit for bit, whichever runs; the predicate depends on the weights only so
    # that XLA cannot fold the conditional away. This costs one branch call where
    # recomputing costs the taps' multiply-adds in each consumer: LeNet-5's step (25
    # taps, 6 channels) 5.0 -> 4.1 ms (a product with the identity, used before, gave
    # 7.7 -> 5.7). For the CNN's 3x3 -> 32 it cost 0.4 ms (16.1 -> 16.6), so it is only
    # used with more taps than channels.
    def branch(x, w):
        return _shifted_sum(x, w, padding)

    return lax.cond(jnp.isfinite(w.reshape(-1)[0]), branch, branch, x, w)


def _vjp_keeping_inputs(forward: Callable, backward: Callable) -> Callable:
    """`forward(x, w, static)` as a custom VJP (`static` hashable, not differentiated)
    whose residuals are its inputs: `backward(static, (x, w), g)` returns (dx, dw)."""
    fn = jax.custom_vjp(forward, nondiff_argnums=(2,))
    # fn, not forward: a gradient's jaxpr then still shows the custom call
    fn.defvjp(lambda x, w, static: (fn(x, w, static), (x, w)), backward)
    return fn


def _kernel_grad(x, dy, padding):
    """The kernel gradient of a stride-1 channels-last convolution `_lax_conv(x, w,
    padding)` with output gradient `dy`, as the forward convolution XLA:CPU hands to
    Eigen: input (C_in, *spatial, B), kernel (*out, B, C_out), output (C_in, *k, C_out).

    That is the form XLA:CPU rewrites lax's kernel gradient into, but only outside
    loops: inside a `while` body (fit's compiled loop, any `lax.scan` over steps) it kept
    lax's dimension order, which it computed 10-100x more slowly: LeNet-5's two kernel
    gradients took 6.8 and 3.0 ms per step there against 0.05 and 0.27 outside
    (jax-ml/jax#12868). The same sums as lax's; a test checks them bit for bit."""
    nd = x.ndim - 2
    xt = jnp.moveaxis(x, (0, -1), (-1, 0))  # (C_in, *spatial, B)
    dyt = jnp.moveaxis(dy, 0, -2)  # (*out, B, C_out)
    g = lax.conv_general_dilated(
        xt, dyt, (1,) * nd, padding, dimension_numbers=_channels_last_specs(nd)
    )
    return jnp.moveaxis(g, 0, -2)  # (*k, C_in, C_out)


def _input_grad(x, w, padding, dy):
    """The input gradient, as a forward convolution of dy with the flipped kernel whose
    input and output channels are swapped: lax's own has the kernel's channels in the
    other order, which XLA:CPU, inside loops only, did not rewrite for Eigen either."""
    nd = x.ndim - 2
    kernel = w.shape[:nd]
    pads = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel, padding, strict=True)]
    if min(p for pair in pads for p in pair) < 0:  # padding wider than the kernel
        return jax.vjp(lambda x: _lax_conv(x, w, padding), x)[1](dy)[0]
    flipped = jnp.swapaxes(jnp.flip(w, tuple(range(nd))), -1, -2)  # (*k, C_out, C_in)
    return lax.conv_general_dilated(
        dy, flipped, (1,) * nd, pads, dimension_numbers=_channels_last_specs(nd)
    )


def _plain_conv_bwd(padding, res, dy):
    x, w = res
    return _input_grad(x, w, padding, dy), _kernel_grad(x, dy, padding)


# lax's convolution with the kernel gradient above: every other convolution `conv_general
# _dilated` below handles, so that steps with convolutions run as fast in loops
_plain_conv = _vjp_keeping_inputs(_lax_conv, _plain_conv_bwd)


_shifted_conv = _vjp_keeping_inputs(_materialised_sum, _plain_conv_bwd)


def _row_transposed(dy, w, padding, width):
    """The input gradient of a stride-1 2-D convolution (NHWC, HWIO, `padding` as pairs)
    whose input had `width` columns, given the output gradient `dy`.

    XLA's transposed convolution has the forward pass's input channels as its output
    channels, and Eigen computes it slowly when they are few. Here the kernel's columns
    become output channels instead: a convolution along the height only (kernel
    (kh, 1), C_out -> kw * C_in channels), then a sum of kw shifted slices along the
    width, which XLA fuses into one loop.
    """
    kh, kw, ci, co = w.shape
    (top, bottom), (left, _) = padding
    rows = jnp.flip(w, 0).transpose(0, 3, 1, 2).reshape(kh, 1, co, kw * ci)
    v = _lax_conv(dy, rows, ((kh - 1 - top, kh - 1 - bottom), (0, 0)))
    v = v.reshape(*v.shape[:3], kw, ci)  # (B, H, W_out, kw, C_in)
    dx = None
    for j in range(kw):
        term = jnp.pad(v[:, :, :, j], ((0, 0), (0, 0), (j, kw - 1 - j), (0, 0)))
        dx = term if dx is None else dx + term
    return dx[:, :, left : left + width]


def _row_grad_conv_bwd(padding, res, dy):
    x, w = res
    return _row_transposed(dy, w, padding, x.shape[2]), _kernel_grad(x, dy, padding)


_row_grad_conv = _vjp_keeping_inputs(_lax_conv, _row_grad_conv_bwd)


class Conv(nn.Conv):
    """`flax.linen.Conv` computed with `conv_general_dilated` above: the same
    parameters (names, shapes, initialisers) and results, faster on the CPU for a first
    layer and for the input gradient of layers with few input channels."""

    conv_general_dilated: Callable | None = conv_general_dilated


# Below this many input rows it made no difference in whole train steps (an MLP at
# batch 128: 2.02-2.05 ms either way; LeNet-5's dense layers 4.12-4.14 ms).
DENSE_MIN_ROWS = 1024


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`lax.dot_general` for a dense layer's (inputs, kernel), for flax's `dot_general`
    attributes (`nn.Dense`, `nn.DenseGeneral`, and `MultiHeadDotProductAttention`'s
    `qkv_dot_general` and `out_dot_general`): same parameters, same results.

    On the CPU its gradient computes the kernel's gradient as one product contracting
    the rows of inputs and grad, `dot_general(inputs, grad)` over axis 0 of both. JAX's
    own transpose rule copies grad^T first, and an explicit copy of inputs^T (this
    function's previous form, for YNNPACK's product) cost more than it saved once the
    copy was of a large activation: XLA fused the copy with the GELU before it, and the
    copies of the LM's 4096 x 512 MLP inputs took 7-14 ms of the step. The benchmark
    decoder LM's whole train step, interleaved: 67.0 ms with lax's rule, 62.5 with the
    copy of inputs^T, 55.0 with this product (`experiments/benchmarks/dense.py`).
    Anything other than a float product of trailing input dimensions with leading
    kernel dimensions, on at least `DENSE_MIN_ROWS` input rows, without batch dimensions
    or precision settings, goes to `lax.dot_general` unchanged, as does everything where
    `dl.xla.cpu_defaults_apply()` is False. Like every custom VJP, it has no
    forward-mode derivative (jax.jvp, jax.hessian): set `DL_XLA_DEFAULTS=0` for those.
    """
    if _fast_dense_applies(lhs, rhs, dimension_numbers, precision, preferred_element_type):
        return _dense_product(lhs, rhs, len(dimension_numbers[0][0]))
    return lax.dot_general(
        lhs,
        rhs,
        dimension_numbers,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


# flax's Dense (its parameters, its auto-names) with `dense_dot_general`
Dense = functools.partial(nn.Dense, dot_general=dense_dot_general)


def _fast_dense_applies(lhs, rhs, dimension_numbers, precision, preferred) -> bool:
    if precision is not None or preferred is not None or not cpu_defaults_apply():
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


_dense_product = _vjp_keeping_inputs(_dense_forward, _dense_product_bwd)
