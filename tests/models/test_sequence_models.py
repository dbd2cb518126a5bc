"""RNN/LSTM/GRU, Transformer encoder, ViT and the decoder LM: shapes, causality, masking,
generation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dl import models
from dl.models.transformer import sinusoidal_positions


def _init(model, x):
    return model.init(jax.random.key(0), x)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize(
    ("kw", "out"),
    [
        ({}, (3, 5)),
        ({"num_layers": 2, "bidirectional": True}, (3, 5)),
        ({"head": "mean"}, (3, 5)),
        ({"head": "per_step"}, (3, 7, 5)),
    ],
)
def test_recurrent_shapes(name, kw, out):
    model = models.get_model(name, 5, hidden=8, **kw)
    x = jnp.ones((3, 7, 2))
    assert model.apply(_init(model, x), x).shape == out


def test_recurrent_reads_images_row_by_row():
    model = models.get_model("gru", 4, hidden=8)
    img = jax.random.normal(jax.random.key(1), (2, 6, 5, 1))
    v = _init(model, img)
    np.testing.assert_allclose(model.apply(v, img), model.apply(v, img.reshape(2, 6, 5)))


def test_unidirectional_rnn_is_causal_and_bidirectional_is_not():
    x = jax.random.normal(jax.random.key(2), (1, 10, 3))
    x2 = x.at[:, 7].add(1.0)  # change step 7
    uni = models.get_model("lstm", 4, hidden=8, head="per_step")
    v = _init(uni, x)
    a, b = uni.apply(v, x), uni.apply(v, x2)
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert not np.allclose(a[:, 7:], b[:, 7:])
    bi = models.get_model("lstm", 4, hidden=8, head="per_step", bidirectional=True)
    v = _init(bi, x)
    assert not np.allclose(bi.apply(v, x)[:, :7], bi.apply(v, x2)[:, :7])


def test_bidirectional_last_head_sees_both_ends():
    """head="last" of a bidirectional net is [forward at T-1, backward at 0]: changing
    the first step changes the forward half only through the whole sequence, and the
    backward half directly."""
    model = models.get_model("gru", 3, hidden=4, bidirectional=True)
    x = jax.random.normal(jax.random.key(3), (2, 6, 2))
    v = _init(model, x)
    assert not np.allclose(model.apply(v, x), model.apply(v, x.at[:, 0].add(1.0)))
    assert not np.allclose(model.apply(v, x), model.apply(v, x.at[:, -1].add(1.0)))


def test_decoder_lm_is_causal():
    """Changing token t never changes the outputs at positions < t."""
    model = models.get_model("lm", 20, d_model=32, num_heads=4, mlp_dim=64, max_len=16)
    tokens = jax.random.randint(jax.random.key(4), (2, 16), 0, 20)
    v = _init(model, tokens)
    base = model.apply(v, tokens)
    assert base.shape == (2, 16, 20)
    for t in (0, 5, 15):
        changed = tokens.at[:, t].set((tokens[:, t] + 1) % 20)
        out = model.apply(v, changed)
        np.testing.assert_allclose(out[:, :t], base[:, :t], atol=1e-6)
        assert not np.allclose(out[:, t:], base[:, t:], atol=1e-4)


def test_decoder_lm_rejects_float_inputs():
    model = models.get_model("lm", 20, d_model=32, max_len=8)
    with pytest.raises(ValueError, match="integer token ids"):
        _init(model, jnp.zeros((1, 8)))


def test_transformer_mask_hides_padding():
    """Tokens marked invalid are neither attended to nor pooled: changing them leaves the
    output unchanged; changing a valid token does not."""
    for pool in ("mean", "cls"):
        model = models.get_model("transformer", 3, d_model=16, num_heads=2, mlp_dim=32, pool=pool)
        x = jax.random.normal(jax.random.key(5), (2, 9, 4))
        mask = jnp.arange(9)[None, :] < jnp.array([[6], [4]])
        v = model.init(jax.random.key(0), x)
        base = model.apply(v, x, mask=mask)
        junk = x.at[0, 6:].set(100.0).at[1, 4:].set(-50.0)
        np.testing.assert_allclose(model.apply(v, junk, mask=mask), base, atol=1e-5)
        assert not np.allclose(model.apply(v, x.at[:, 0].add(1.0), mask=mask), base)
        # Without the mask the padding does change the output.
        assert not np.allclose(model.apply(v, junk), model.apply(v, x))


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_transformer_positions_make_order_matter(positions):
    model = models.get_model("transformer", 3, d_model=16, num_heads=2, positions=positions)
    x = jax.random.normal(jax.random.key(6), (1, 5, 4))
    v = _init(model, x)
    if positions == "learned":  # zero-mean init is tiny; make the table visible
        v = jax.tree_util.tree_map_with_path(lambda p, a: a * 100 if "pos" in str(p) else a, v)
    assert not np.allclose(model.apply(v, x), model.apply(v, x[:, ::-1]), atol=1e-5)
    nopos = models.get_model("transformer", 3, d_model=16, num_heads=2, positions="none")
    v = _init(nopos, x)  # mean pooling without positions: a permutation-invariant model
    np.testing.assert_allclose(nopos.apply(v, x), nopos.apply(v, x[:, ::-1]), atol=1e-5)


def test_sinusoidal_table():
    t = sinusoidal_positions(50, 8)
    assert t.shape == (50, 8)
    np.testing.assert_allclose(t[:, 0], np.sin(np.arange(50)), atol=1e-6)
    np.testing.assert_allclose(t[:, 1], np.cos(np.arange(50)), atol=1e-6)
    np.testing.assert_allclose(t[3, 6], np.sin(3 / 10000 ** (6 / 8)), atol=1e-6)


def test_vit_shapes_and_patch_errors():
    model = models.get_model("vit", 10, patch_size=7, d_model=32, num_layers=1)
    x = jnp.zeros((2, 28, 28, 1))
    v = _init(model, x)
    assert model.apply(v, x).shape == (2, 10)
    assert v["params"]["pos"]["embedding"].shape == (17, 32)  # 16 patches + class token
    with pytest.raises(ValueError, match="patch_size 5 must divide"):
        _init(models.get_model("vit", 10, patch_size=5), x)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        _init(models.get_model("vit", 10, d_model=30, num_heads=4), x)
    with pytest.raises(ValueError, match="pool must be 'mean' or 'cls'; got 'max'"):
        _init(models.get_model("vit", 10, patch_size=7, pool="max"), x)


@pytest.mark.slow  # 22 s
def test_generate_greedy_temperature_topk():
    model = models.get_model("lm", 12, d_model=16, num_heads=2, mlp_dim=32, max_len=8)
    v = _init(model, jnp.zeros((1, 8), jnp.int32))
    prompt = jnp.array([1, 2, 3])
    out = models.generate(model, v, prompt, 10, temperature=0)
    assert out.shape == (13,) and np.array_equal(out[:3], prompt)
    # Greedy = argmax of the model's own next-token logits, step by step (window of 8).
    seq = list(np.asarray(prompt))
    for _ in range(10):
        ctx = jnp.array(seq[-8:])[None]
        seq.append(int(jnp.argmax(model.apply(v, ctx)[0, -1])))
    assert np.asarray(out).tolist() == seq
    # Sampling: reproducible from the key, within top-k.
    key = jax.random.key(7)
    a = models.generate(model, v, prompt[None], 10, key=key, temperature=1.0, top_k=1)
    assert np.array_equal(a[0], out)  # top-1 sampling is greedy
    b = models.generate(model, v, prompt, 20, key=key, temperature=2.0)
    c = models.generate(model, v, prompt, 20, key=key, temperature=2.0)
    assert np.array_equal(b, c) and int(b.max()) < 12
    with pytest.raises(ValueError, match="needs a key"):
        models.generate(model, v, prompt, 5, temperature=1.0)
    with pytest.raises(ValueError, match="top_k"):
        models.generate(model, v, prompt, 5, key=key, top_k=13)


def test_sequence_models_are_listed():
    for name in ("rnn", "lstm", "gru", "transformer", "vit", "lm"):
        assert name in models.MODELS
    with pytest.raises(ValueError, match="cell"):
        models.get_model("lstm", 3, cell="gru")  # fixed by the registry name
