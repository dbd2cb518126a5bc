"""Convolutions for XLA:CPU, as Flax's `nn.Conv(conv_general_dilated=...)` hook.

`conv_general_dilated` has `lax.conv_general_dilated`'s signature and results; for
stride-1 channels-last float32 convolutions it computes them in forms that XLA:CPU
runs faster (a first layer with one input channel as a sum of shifted inputs, the input
gradient of layers with few input channels by rows, and every kernel gradient as the
forward convolution XLA:CPU hands to Eigen, also inside compiled loops). Anything else
goes to lax unchanged. Measurements: `experiments/benchmarks/cnn_cpu.py`.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

from dl.kernels._common import reverse_mode_only, vjp_keeping_inputs

# Work (taps x output channels) up to which a one-channel convolution is computed as a
# sum of shifted inputs, and input channels up to which a 2-D convolution's input
# gradient is computed by rows: where each form won in whole train steps
# (experiments/results/cpu_notes.md).
MAX_SHIFTED_WORK = 640
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
    """`lax.conv_general_dilated`, computed in XLA:CPU-friendly forms for three cases.

    All apply to channels-last float32 convolutions with stride 1, no dilation or
    groups and non-negative padding; anything else goes to `lax.conv_general_dilated`.

    - One input channel, at most `MAX_SHIFTED_WORK` taps x output channels (a first
      layer on grey images or signals): a sum of shifted inputs.
    - 2-D, 2 to `MAX_ROW_GRAD_CHANNELS` input channels, a kernel of at least 2 x 2:
      lax's forward pass; the input gradient by rows (`_row_transposed`).
    - Any other: lax's forward pass and lax's gradients, written as the channels-last
      forward convolutions XLA:CPU runs fast, inside loops too (bit for bit lax's).

    All kernel gradients are computed as in the third case. These are custom VJPs:
    reverse mode only (`ForwardModeError` otherwise). The input gradient by rows sums in
    another order than lax's (a few float32 ulps).
    """
    args = (lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers)
    plain = _plain_f32_conv(*args, feature_group_count, batch_group_count, preferred_element_type)
    pads = _explicit_padding(lhs, rhs, padding, window_strides) if plain else None
    if pads is not None and min(p for pair in pads for p in pair) >= 0:
        reverse_mode_only("convolution", lhs, rhs)
        if any(s != 1 for s in window_strides):
            return _space_to_depth_conv(lhs, rhs, tuple(window_strides), pads)
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
    """A 1- to 3-D channels-last float32 convolution, no dilation or groups, where this
    module's formulations may apply (strided ones through `_space_to_depth_conv`)."""
    nd = lhs.ndim - 2
    if not 1 <= nd <= 3:
        return False
    if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32 or pref not in (None, jnp.float32):
        return False
    if groups != 1 or bgroups != 1:
        return False
    if any(d != 1 for d in (lhs_dil or ()) + (rhs_dil or ())):
        return False
    specs = _channels_last_specs(nd)
    return dn is not None and lax.conv_dimension_numbers(lhs.shape, rhs.shape, specs) == (
        lax.conv_dimension_numbers(lhs.shape, rhs.shape, dn)
    )


def _explicit_padding(lhs, rhs, padding, strides=None) -> tuple[tuple[int, int], ...] | None:
    """Padding as (low, high) pairs (for `strides`, default 1); None for a padding
    string other than SAME/VALID."""
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            return None
        strides = strides or (1,) * (lhs.ndim - 2)
        padding = lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2], strides, padding)
    return tuple(tuple(int(v) for v in p) for p in padding)


def _space_to_depth_conv(x, w, strides, padding):
    """A strided convolution as a stride-1 one, which XLA:CPU differentiates far faster
    (the input gradient of a 9x9 stride-2 convolution: 1.1 s against 0.06 s for a batch
    of 64 in a capsule network on 2 cores). Each stride-s block of the padded input
    becomes one position with s^d times the channels, and the kernel, zero-padded to a
    multiple of s, is rearranged to match: the same products, summed in another order.
    The stride-1 convolution then takes this module's other forms."""
    nd = x.ndim - 2
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    dims = range(nd)
    taps, size = w.shape[:nd], x.shape[1:-1]
    blocks = [-(-taps[d] // strides[d]) for d in dims]  # the kernel's side in blocks
    out = [(size[d] - taps[d]) // strides[d] + 1 for d in dims]
    # Rows up to (out + blocks - 1) * s - 1 are read; those past the input meet only the
    # kernel's zero padding.
    need = [(out[d] + blocks[d] - 1) * strides[d] for d in dims]
    x = x[(slice(None), *(slice(0, n) for n in need), slice(None))]
    x = jnp.pad(x, ((0, 0), *((0, need[d] - x.shape[1 + d]) for d in dims), (0, 0)))
    c, o_ch = w.shape[-2:]
    w = jnp.pad(w, (*((0, blocks[d] * strides[d] - taps[d]) for d in dims), (0, 0), (0, 0)))
    # kernel (b0, s0, b1, s1, ..., C, O) -> (b0, b1, ..., s0, s1, ..., C, O)
    w = w.reshape(*(n for d in dims for n in (blocks[d], strides[d])), c, o_ch)
    w = w.transpose(*range(0, 2 * nd, 2), *range(1, 2 * nd, 2), 2 * nd, 2 * nd + 1)
    w = w.reshape(*blocks, math.prod(strides) * c, o_ch)
    # input (B, n0/s0, s0, n1/s1, s1, ..., C) -> (B, n0/s0, n1/s1, ..., s0 * s1 * ... * C)
    x = x.reshape(x.shape[0], *(n for d in dims for n in (need[d] // strides[d], strides[d])), c)
    x = x.transpose(0, *range(1, 2 * nd, 2), *range(2, 2 * nd + 1, 2), 2 * nd + 1)
    x = x.reshape(x.shape[0], *(need[d] // strides[d] for d in dims), -1)
    dn = lax.conv_dimension_numbers(x.shape, w.shape, _channels_last_specs(nd))
    return conv_general_dilated(x, w, (1,) * nd, "VALID", dimension_numbers=dn)


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
    # recomputing costs the taps' multiply-adds in each consumer; it paid off only with
    # more taps than channels (experiments/results/cpu_notes.md).
    def branch(x, w):
        return _shifted_sum(x, w, padding)

    return lax.cond(jnp.isfinite(w.reshape(-1)[0]), branch, branch, x, w)


def _kernel_grad(x, dy, padding):
    """The kernel gradient of a stride-1 channels-last convolution `_lax_conv(x, w,
    padding)` with output gradient `dy`, as the forward convolution XLA:CPU hands to
    Eigen: input (C_in, *spatial, B), kernel (*out, B, C_out), output (C_in, *k, C_out).

    That is the form XLA:CPU rewrites lax's kernel gradient into, but only outside
    loops: inside a `while` body (fit's compiled loop, any `lax.scan` over steps) it kept
    lax's dimension order, which it computed far more slowly (jax-ml/jax#12868). The
    same sums as lax's; a test checks them bit for bit."""
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
_plain_conv = vjp_keeping_inputs(_lax_conv, _plain_conv_bwd)


_shifted_conv = vjp_keeping_inputs(_materialised_sum, _plain_conv_bwd)


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


_row_grad_conv = vjp_keeping_inputs(_lax_conv, _row_grad_conv_bwd)
