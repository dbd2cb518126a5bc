"""Attention models: a Transformer encoder classifier, a ViT and a decoder-only language
model with generation. All use pre-LayerNorm blocks (Xiong et al. 2020):
x + MHA(LN(x)), then x + MLP(LN(x)), and a final LayerNorm.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dl import kernels as kernels_lib
from dl.models.recurrent import as_sequence

POSITIONS = ("sinusoidal", "learned", "none")


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """The fixed sin/cos position table of Vaswani et al. 2017, shape (length, dim)."""
    pos = np.arange(length)[:, None]
    rate = np.exp(-math.log(10000.0) * (np.arange(0, dim, 2) / dim))
    table = np.zeros((length, dim), np.float32)
    table[:, 0::2] = np.sin(pos * rate)
    table[:, 1::2] = np.cos(pos * rate)[:, : dim // 2]
    return table


class AddPositions(nn.Module):
    """Add sinusoidal or learned position embeddings to (B, T, D) tokens."""

    kind: str = "sinusoidal"
    max_len: int = 512

    @nn.compact
    def __call__(self, x):
        t, d = x.shape[-2], x.shape[-1]
        if self.kind not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}; got {self.kind!r}.")
        if t > self.max_len:
            raise ValueError(f"Sequence of {t} tokens is longer than max_len={self.max_len}.")
        if self.kind == "sinusoidal":
            return x + jnp.asarray(sinusoidal_positions(t, d), x.dtype)
        if self.kind == "learned":
            table = self.param("embedding", nn.initializers.normal(0.02), (self.max_len, d))
            return x + table[:t].astype(x.dtype)
        return x


class Block(nn.Module):
    """Pre-LN Transformer block: self-attention then MLP, each with a residual.

    The attention is flax's `MultiHeadDotProductAttention`; `kernels` (`dl.kernels`)
    picks the attention's and the products' formulation; `causal=True` masks later
    tokens."""

    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    causal: bool = False
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x, mask=None, train: bool = False):
        d = x.shape[-1]
        Dense = kernels_lib.dense(self.kernels)  # noqa: N806  (a layer class)
        dot_general = kernels_lib.dot_general(self.kernels)
        y = nn.LayerNorm(name="ln1")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dropout_rate=self.dropout,
            deterministic=not train,
            attention_fn=kernels_lib.attention_fn(self.kernels, causal=self.causal),
            qkv_dot_general=dot_general,
            out_dot_general=dot_general,
            name="attn",
        )(y, mask=mask)
        x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
        y = nn.LayerNorm(name="ln2")(x)
        y = Dense(self.mlp_dim, name="mlp1")(y)
        y = Dense(d, name="mlp2")(nn.gelu(y))
        return x + nn.Dropout(self.dropout, deterministic=not train)(y)


def _check_heads(d_model: int, num_heads: int) -> None:
    if d_model % num_heads:
        raise ValueError(f"d_model {d_model} must be a multiple of num_heads {num_heads}.")


def _check_pool(pool: str) -> None:
    if pool not in ("mean", "cls"):
        raise ValueError(f"pool must be 'mean' or 'cls'; got {pool!r}.")


def _prepend_cls(module: nn.Module, x: jax.Array) -> jax.Array:
    """Prepend the module's learned class token (parameter "cls") to tokens (B, T, D)."""
    b, _, d = x.shape
    cls = module.param("cls", nn.initializers.zeros, (1, 1, d))
    return jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x], axis=1)


class TransformerClassifier(nn.Module):
    """Transformer encoder over a sequence (B, T, F) (images: rows as tokens).

    Attributes:
      num_classes: outputs.
      d_model, num_layers, num_heads, mlp_dim: sizes.
      positions: "sinusoidal", "learned" or "none".
      pool: "mean" over valid tokens or "cls" (a learned class token).
      kernels: "xla" (plain JAX), "cpu" or "auto": the attention's and products'
        formulation (`dl.kernels`).
      dropout: dropout on attention weights and residual branches.
      max_len: longest sequence (learned positions).

    Call with `mask` (B, T) booleans to mark valid tokens: padding is neither attended
    to nor pooled.
    """

    num_classes: int
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_dim: int = 128
    positions: str = "sinusoidal"
    pool: str = "mean"
    dropout: float = 0.0
    max_len: int = 512
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        Dense = kernels_lib.dense(self.kernels)  # noqa: N806  (a layer class)
        _check_heads(self.d_model, self.num_heads)
        _check_pool(self.pool)
        x = as_sequence(x, type(self).__name__)
        b, t = x.shape[:2]
        valid = jnp.ones((b, t), bool) if mask is None else mask.astype(bool)
        x = Dense(self.d_model, name="embed")(x)
        x = AddPositions(self.positions, self.max_len, name="pos")(x)
        if self.pool == "cls":
            x = _prepend_cls(self, x)
            valid = jnp.concatenate([jnp.ones((b, 1), bool), valid], axis=1)
        attn_mask = nn.make_attention_mask(valid, valid)
        for i in range(self.num_layers):
            x = Block(
                self.num_heads, self.mlp_dim, self.dropout, kernels=self.kernels, name=f"block{i}"
            )(x, attn_mask, train)
        x = nn.LayerNorm(name="ln_f")(x)
        if self.pool == "cls":
            x = x[:, 0]
        else:
            w = valid.astype(x.dtype)[..., None]
            x = (x * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1.0)
        return Dense(self.num_classes, name="head")(x)


class ViT(nn.Module):
    """Vision Transformer (Dosovitskiy et al. 2021): non-overlapping patches, linearly
    embedded (a strided conv), a class token, learned positions, pre-LN blocks.

    Attributes:
      num_classes: outputs.
      patch_size: side of the square patches; must divide the image size.
      d_model, num_layers, num_heads, mlp_dim, dropout: sizes.
      pool: "cls" or "mean".
      kernels: as for `TransformerClassifier`.
    """

    num_classes: int
    patch_size: int = 4
    d_model: int = 64
    num_layers: int = 4
    num_heads: int = 4
    mlp_dim: int = 128
    dropout: float = 0.0
    pool: str = "cls"
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        Dense = kernels_lib.dense(self.kernels)  # noqa: N806  (a layer class)
        _check_heads(self.d_model, self.num_heads)
        _check_pool(self.pool)
        if x.ndim != 4:
            raise ValueError(f"ViT expects images (B, H, W, C); got shape {tuple(x.shape)}.")
        p = self.patch_size
        if x.shape[1] % p or x.shape[2] % p:
            raise ValueError(
                f"patch_size {p} must divide the image size {tuple(x.shape[1:3])}; "
                f"choose a divisor of {x.shape[1]}."
            )
        x = nn.Conv(self.d_model, (p, p), strides=(p, p), padding="VALID", name="patches")(x)
        x = x.reshape(x.shape[0], -1, self.d_model)
        if self.pool == "cls":
            x = _prepend_cls(self, x)
        x = AddPositions("learned", x.shape[1], name="pos")(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        for i in range(self.num_layers):
            x = Block(
                self.num_heads, self.mlp_dim, self.dropout, kernels=self.kernels, name=f"block{i}"
            )(x, None, train)
        x = nn.LayerNorm(name="ln_f")(x)
        x = x[:, 0] if self.pool == "cls" else x.mean(axis=1)
        return Dense(self.num_classes, name="head")(x)


class DecoderLM(nn.Module):
    """Decoder-only causal language model (GPT-style): token ids (B, T) -> next-token
    logits (B, T, vocab). Position t sees tokens 0..t only.

    Attributes:
      num_classes: the vocabulary size.
      d_model, num_layers, num_heads, mlp_dim, dropout: sizes.
      max_len: context length (learned positions; generation slides a window this long).
      positions: "learned" or "sinusoidal".
      kernels: as for `TransformerClassifier`.
    """

    num_classes: int
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    mlp_dim: int = 512
    dropout: float = 0.0
    max_len: int = 256
    positions: str = "learned"
    kernels: str = "xla"

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        Dense = kernels_lib.dense(self.kernels)  # noqa: N806  (a layer class)
        _check_heads(self.d_model, self.num_heads)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"DecoderLM expects integer token ids (B, T); got {tokens.dtype} of shape "
                f"{tuple(tokens.shape)}."
            )
        x = nn.Embed(self.num_classes, self.d_model, name="embed")(tokens)
        x = AddPositions(self.positions, self.max_len, name="pos")(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        for i in range(self.num_layers):
            x = Block(
                self.num_heads,
                self.mlp_dim,
                self.dropout,
                causal=True,
                kernels=self.kernels,
                name=f"block{i}",
            )(x, None, train)
        x = nn.LayerNorm(name="ln_f")(x)
        return Dense(self.num_classes, name="head")(x)


def generate(
    model: DecoderLM,
    variables,
    prompt,
    num_tokens: int,
    *,
    key: jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> jax.Array:
    """Continue `prompt` by `num_tokens` tokens, compiled as one `lax.fori_loop`.

    Each new token is drawn from the model's next-token distribution over the last
    `model.max_len` tokens: greedy (argmax) with temperature=0, else softmax(logits / T)
    restricted to the `top_k` most likely tokens when top_k is given.

    Args:
      model: a `DecoderLM`.
      variables: {"params": ...}.
      prompt: token ids (T0,) or (B, T0), T0 >= 1.
      num_tokens: how many tokens to add.
      key: PRNG key for sampling (needed unless temperature == 0).
      temperature: >= 0.
      top_k: keep only the k most likely tokens (None: all).

    Returns:
      (B, T0 + num_tokens) or (T0 + num_tokens,) token ids, prompt included.
    """
    prompt = jnp.asarray(prompt, jnp.int32)
    single = prompt.ndim == 1
    if single:
        prompt = prompt[None]
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be (T0,) or (B, T0) token ids, T0 >= 1; got {prompt.shape}.")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature!r}.")
    if top_k is not None and not 1 <= top_k <= model.num_classes:
        raise ValueError(f"top_k must be in [1, {model.num_classes}]; got {top_k!r}.")
    if temperature > 0 and key is None:
        raise ValueError("Sampling with temperature > 0 needs a key (jax.random.key(0)).")
    key = jax.random.key(0) if key is None else key
    b, t0 = prompt.shape
    total = t0 + int(num_tokens)
    window = min(model.max_len, total)
    buf = jnp.zeros((b, total), jnp.int32).at[:, :t0].set(prompt)

    def body(cur, carry):
        buf, key = carry
        start = jnp.maximum(cur - window, 0)
        ctx = jax.lax.dynamic_slice_in_dim(buf, start, window, axis=1)
        logits = model.apply(variables, ctx, train=False)
        logits = jax.lax.dynamic_index_in_dim(logits, cur - start - 1, axis=1, keepdims=False)
        key, sub = jax.random.split(key)
        if temperature == 0:
            nxt = jnp.argmax(logits, axis=-1)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
                logits = jnp.where(logits < kth, -jnp.inf, logits)
            nxt = jax.random.categorical(sub, logits, axis=-1)
        return buf.at[:, cur].set(nxt.astype(jnp.int32)), key

    run = jax.jit(lambda buf, key: jax.lax.fori_loop(t0, total, body, (buf, key))[0])
    out = run(buf, key)
    return out[0] if single else out
