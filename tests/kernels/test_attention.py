"""dl.kernels.attention computes what flax's nn.dot_product_attention computes (values and
gradients), and the models that use it are unchanged."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dl import models
from dl.kernels import attention as A


def _qkv(b=3, t=64, tk=None, h=2, d=8, seed=0, dtype=np.float32):
    r = np.random.default_rng(seed)
    tk = t if tk is None else tk
    q = r.normal(size=(b, t, h, d)).astype(dtype)
    k = r.normal(size=(b, tk, h, d)).astype(dtype)
    v = r.normal(size=(b, tk, h, d)).astype(dtype)
    g = r.normal(size=(b, t, h, d)).astype(dtype)
    return map(jnp.asarray, (q, k, v, g))


def _value_and_grads(fn, q, k, v, g):
    return jax.value_and_grad(lambda q, k, v: (fn(q, k, v) * g).sum(), (0, 1, 2))(q, k, v)


def _assert_same(ours, ref, tol=2e-5):
    (lo, go), (lr, gr) = ours, ref
    np.testing.assert_allclose(lo, lr, rtol=tol, atol=tol)
    for a, b in zip(go, gr, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_causal_blocks_cover_the_sequence():
    for t in (1, 5, 31, 32, 64, 100, 128, 1000):
        blocks = A.causal_blocks(t)
        assert blocks[0][0] == 0 and blocks[-1][1] == t
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
        assert 1 <= len(blocks) <= A.MAX_BLOCKS
        assert len(blocks) == 1 or min(b - a for a, b in blocks) >= A.CAUSAL_BLOCK
    assert len(A.causal_blocks(128)) == 4


@pytest.mark.parametrize("t", [5, 64, 100, 128])
def test_causal_attention_matches_flax(t):
    q, k, v, g = _qkv(t=t)
    causal = jnp.tril(jnp.ones((t, t), bool))
    ours = _value_and_grads(A.causal_attention, q, k, v, g)
    ref = _value_and_grads(
        lambda q, k, v: nn.dot_product_attention(q, k, v, mask=causal), q, k, v, g
    )
    _assert_same(ours, ref)
    # the blocks change nothing: one block gives the same
    out = A._attention(q / np.sqrt(8).astype(np.float32), k, v, causal[None, None], False)
    np.testing.assert_allclose(A.causal_attention(q, k, v), out, rtol=2e-5, atol=2e-5)


def test_unmasked_and_cross_attention_match_flax():
    q, k, v, g = _qkv(t=48)
    _assert_same(
        _value_and_grads(A.attention, q, k, v, g),
        _value_and_grads(nn.dot_product_attention, q, k, v, g),
    )
    q, k, v, g = _qkv(t=10, tk=37, seed=1)  # more keys than queries
    _assert_same(
        _value_and_grads(A.attention, q, k, v, g),
        _value_and_grads(nn.dot_product_attention, q, k, v, g),
    )


def test_padding_mask_matches_flax_including_fully_masked_rows():
    q, k, v, g = _qkv(t=40)
    valid = np.ones((3, 40), bool)
    valid[0, 30:] = False
    valid[2, 1:] = False
    mask = nn.make_attention_mask(valid, valid)  # padded queries see no key at all
    for causal in (False, True):
        ours = _value_and_grads(
            lambda q, k, v, c=causal: A.attention(q, k, v, mask, causal=c), q, k, v, g
        )
        m = mask if not causal else jnp.logical_and(mask, jnp.tril(jnp.ones((40, 40), bool)))
        ref = _value_and_grads(
            lambda q, k, v, m=m: nn.dot_product_attention(q, k, v, mask=m), q, k, v, g
        )
        _assert_same(ours, ref)


def test_bfloat16_inputs_stay_bfloat16_and_close_to_float32():
    q, k, v, g = _qkv(t=64)
    out = A.causal_attention(*(a.astype(jnp.bfloat16) for a in (q, k, v)))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(np.float32), A.causal_attention(q, k, v), atol=0.05)


def test_dropout_falls_back_to_flax_with_the_same_randomness():
    q, k, v, _ = _qkv(t=16)
    kw = dict(dropout_rng=jax.random.key(3), dropout_rate=0.5, deterministic=False)
    causal = jnp.tril(jnp.ones((16, 16), bool))
    ours = A.causal_attention(q, k, v, **kw)
    np.testing.assert_array_equal(ours, nn.dot_product_attention(q, k, v, mask=causal, **kw))
    assert not np.allclose(ours, A.causal_attention(q, k, v))


def test_causal_needs_as_many_queries_as_keys():
    q, k, v, _ = _qkv(t=4, tk=6)
    with pytest.raises(ValueError, match="4 queries and 6 keys"):
        A.causal_attention(q, k, v)


def _lm_loss_and_grads(model, params, x, y):
    def loss(p):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize(
    "name, kw, shape",
    [
        ("lm", dict(d_model=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=128), (4, 128)),
        ("transformer", dict(d_model=32, num_layers=1, num_heads=2, mlp_dim=64), (4, 12, 6)),
    ],
)
def test_models_are_unchanged_by_the_fast_paths(name, kw, shape):
    r = np.random.default_rng(0)
    model = models.get_model(name, 7, kernels="cpu", **kw)
    if name == "lm":
        x = jnp.asarray(r.integers(0, 7, shape).astype(np.int32))
        y = jnp.asarray(r.integers(0, 7, shape).astype(np.int32))
    else:
        x = jnp.asarray(r.normal(size=shape).astype(np.float32))
        y = jnp.asarray(r.integers(0, 7, shape[:1]).astype(np.int32))
    params = model.init(jax.random.key(0), x)["params"]
    fast = _lm_loss_and_grads(model, params, x, y)
    reference = models.get_model(name, 7, kernels="xla", **kw)  # flax's attention, products
    plain = _lm_loss_and_grads(reference, params, x, y)
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(fast[1]), jax.tree.leaves(plain[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
