"""Scaled dot-product attention for `flax.linen.MultiHeadDotProductAttention`'s
`attention_fn`, written for XLA:CPU.

Flax's `nn.dot_product_attention` is differentiated by JAX: the softmax's gradient
becomes several passes over the (B, H, Tq, Tk) weights, and the batched products keep
the operand order that XLA:CPU runs slowest (`experiments/benchmarks/attention.py`).
`attention` instead has its own VJP:

- forward: s = q k^T / sqrt(d), e = exp(s - max s) (masked entries 0), o = (e v) / sum e,
  normalising the small (B, T, H, d) output instead of the large weights;
- backward (as in FlashAttention, Dao et al. 2022): with do' = do / sum e and
  D = rowsum(do' * o), ds = e * (do' v^T - D); dq = ds k / sqrt(d), dk = ds^T q / sqrt(d),
  dv = e^T do'. No reduction over the large weights.

With `causal=True` the queries are cut into blocks and block i multiplies only the keys
up to its last query, skipping most of the masked upper triangle.

`attention` uses it only where it computes exactly what flax's does: without attention
dropout, `precision` or extra batch dimensions; anywhere else it calls
`reference_attention`, flax's `nn.dot_product_attention` (with the causal mask), which is
what `kernels="xla"` uses everywhere. Results equal flax's to float32 rounding
(tests/kernels/test_attention.py). Reverse mode only (`ForwardModeError` otherwise).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dl.kernels._common import reverse_mode_only

CAUSAL_BLOCK = 32  # smallest query block; up to MAX_BLOCKS blocks
MAX_BLOCKS = 4


def causal_blocks(t: int) -> list[tuple[int, int]]:
    """The (first, end) query ranges causal attention over `t` tokens is cut into."""
    n = max(1, min(MAX_BLOCKS, t // CAUSAL_BLOCK))
    edges = np.linspace(0, t, n + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _query_blocks(t: int, tk: int, causal: bool) -> list[tuple[int, int, int]]:
    """(first query, end query, keys) per block: causal blocks see only the keys up to
    their last query (later ones are masked); otherwise one block sees all `tk` keys."""
    if not causal:
        return [(0, t, tk)]
    return [(lo, hi, hi) for lo, hi in causal_blocks(t)]


def _allowed(mask, causal: bool, lo: int, hi: int, tk: int):
    """Which (query lo..hi-1, key 0..tk-1) pairs may attend: (B|1, H|1, hi-lo, tk) or None."""
    allowed = None
    if causal:
        allowed = jnp.asarray(np.tril(np.ones((hi - lo, tk), bool), k=lo))
    if mask is not None:
        m = mask[..., lo:hi, :tk].astype(bool)
        allowed = m if allowed is None else m & allowed
    return allowed


def _forward(q, k, v, mask, causal):
    """Per query block: the output and the residuals (e, 1 / sum e) for the VJP."""
    outs, saved = [], []
    for lo, hi, keys in _query_blocks(q.shape[1], k.shape[1], causal):
        s = jnp.einsum("bqhd,bkhd->bhqk", q[:, lo:hi], k[:, :keys]).astype(jnp.float32)
        allowed = _allowed(mask, causal, lo, hi, keys)
        if allowed is not None:
            # flax's value for masked logits: a row with no allowed key averages all keys
            s = jnp.where(allowed, s, jnp.finfo(jnp.float32).min)
        e = jnp.exp(s - jax.lax.stop_gradient(s.max(-1, keepdims=True)))
        inv = 1.0 / e.sum(-1)  # (B, H, tq)
        e = e.astype(q.dtype)
        # v first: XLA:CPU runs this product about 2x faster than with e first
        o = jnp.einsum("bkhd,bhqk->bqhd", v[:, :keys], e)
        outs.append((o * jnp.swapaxes(inv, 1, 2)[..., None]).astype(q.dtype))
        saved.append((e, inv))
    o = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)
    return o, saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q, k, v, mask, causal):
    return _forward(q, k, v, mask, causal)[0]


def _attention_fwd(q, k, v, mask, causal):
    o, saved = _forward(q, k, v, mask, causal)
    return o, (q, k, v, mask, o, saved)


def _attention_bwd(causal, residuals, do):
    q, k, v, mask, o, saved = residuals
    tk = k.shape[1]
    blocks = _query_blocks(q.shape[1], tk, causal)
    dq, dk, dv = [], jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32)
    for (lo, hi, keys), (e, inv) in zip(blocks, saved, strict=True):
        dob = do[:, lo:hi].astype(jnp.float32) * jnp.swapaxes(inv, 1, 2)[..., None]
        big_d = (dob * o[:, lo:hi].astype(jnp.float32)).sum(-1)  # (B, tq, H)
        dob = dob.astype(q.dtype)
        dp = jnp.einsum("bqhd,bkhd->bhqk", dob, v[:, :keys]).astype(jnp.float32)
        ds = e.astype(jnp.float32) * (dp - jnp.swapaxes(big_d, 1, 2)[..., None])
        if mask is not None:  # a row with no allowed key has constant logits: no gradient
            ds = jnp.where(_allowed(mask, causal, lo, hi, keys), ds, 0.0)
        ds = ds.astype(q.dtype)
        dq.append(jnp.einsum("bkhd,bhqk->bqhd", k[:, :keys], ds))
        dk_b = jnp.einsum("bhqk,bqhd->bkhd", ds, q[:, lo:hi])
        dv_b = jnp.einsum("bhqk,bqhd->bkhd", e, dob)
        if keys == tk:
            dk, dv = dk + dk_b, dv + dv_b
        else:
            dk, dv = dk.at[:, :keys].add(dk_b), dv.at[:, :keys].add(dv_b)
    dq = dq[0] if len(dq) == 1 else jnp.concatenate(dq, axis=1)
    mask_ct = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), mask_ct


_attention.defvjp(_attention_fwd, _attention_bwd)


def _fast_path_applies(query, key, value, mask, dropout_active: bool, precision) -> bool:
    if dropout_active or precision is not None:
        return False
    if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
        return False  # flax also allows extra batch dimensions; leave those to it
    if not all(jnp.issubdtype(a.dtype, jnp.floating) for a in (query, key, value)):
        return False
    return mask is None or (mask.ndim == 4 and mask.shape[-2:] == (query.shape[1], key.shape[1]))


def _check_causal(query, key, causal: bool) -> None:
    if causal and query.shape[-3] != key.shape[-3]:
        raise ValueError(
            f"causal attention needs as many queries as keys; got {query.shape[-3]} queries "
            f"and {key.shape[-3]} keys."
        )


def reference_attention(
    query,
    key,
    value,
    mask=None,
    dropout_rng=None,
    dropout_rate: float = 0.0,
    broadcast_dropout: bool = True,
    deterministic: bool = False,
    dtype=None,
    precision=None,
    *,
    causal: bool = False,
):
    """`nn.dot_product_attention`, with a causal mask added to `mask` when `causal`.

    query (B, Tq, H, d), key and value (B, Tk, H, d); mask broadcastable to
    (B, H, Tq, Tk), True where attention is allowed. Returns (B, Tq, H, d)."""
    _check_causal(query, key, causal)
    if causal:
        t = query.shape[-3]
        causal_mask = jnp.tril(jnp.ones((t, t), bool))
        mask = causal_mask if mask is None else jnp.logical_and(mask, causal_mask)
    return nn.dot_product_attention(
        query,
        key,
        value,
        mask=mask,
        dropout_rng=dropout_rng,
        dropout_rate=dropout_rate,
        broadcast_dropout=broadcast_dropout,
        deterministic=deterministic,
        dtype=dtype,
        precision=precision,
    )


def attention(query, key, value, mask=None, *, causal: bool = False, **kwargs):
    """`reference_attention` with this module's VJP where it applies (see the module
    docstring); same arguments (flax's `attention_fn` keywords) and results."""
    dropout_rate, deterministic = kwargs.get("dropout_rate", 0.0), kwargs.get("deterministic")
    dtype, precision = kwargs.get("dtype"), kwargs.get("precision")
    _check_causal(query, key, causal)
    dropout_active = dropout_rate > 0.0 and not deterministic
    if dtype is not None:
        query, key, value = (jnp.asarray(a, dtype) for a in (query, key, value))
    if _fast_path_applies(query, key, value, mask, dropout_active, precision):
        reverse_mode_only("attention", query, key, value)
        scale = np.float32(1.0 / np.sqrt(query.shape[-1])).astype(query.dtype)
        return _attention(query * scale, key, value, mask, causal)
    return reference_attention(query, key, value, mask, causal=causal, **kwargs)


causal_attention = functools.partial(attention, causal=True)
