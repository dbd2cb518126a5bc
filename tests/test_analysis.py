"""dl.analysis against hand-computed cases (issue 8)."""

import chex
import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from dl import analysis, models
from dl.train import create_state


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------- CKA


def test_cka_identical_rotated_scaled_is_one():
    x = _rng().normal(size=(200, 30))
    q, _ = np.linalg.qr(_rng(1).normal(size=(30, 30)))  # an orthogonal matrix
    for debiased in (False, True):
        assert analysis.linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-9)
        assert analysis.linear_cka(x, 3.0 * x @ q, debiased=debiased) == pytest.approx(
            1.0, abs=1e-9
        )
        # A translation changes nothing either (the kernels are centred).
        assert analysis.linear_cka(x, x + 5.0, debiased=debiased) == pytest.approx(1.0, abs=1e-9)


def test_cka_not_invariant_to_anisotropic_scaling():
    x = _rng().normal(size=(300, 10))
    y = x * np.array([10.0] + [0.1] * 9)  # one feature dominates
    assert analysis.linear_cka(x, y) < 0.5


def test_cka_independent_representations():
    x, y = _rng(0).normal(size=(500, 100)), _rng(1).normal(size=(500, 100))
    biased = analysis.linear_cka(x, y)
    debiased = analysis.linear_cka(x, y, debiased=True)
    # The plain estimator is biased upwards by D/N; the unbiased HSIC removes it.
    assert biased > 0.1
    assert abs(debiased) < 0.02


def test_cka_matches_feature_space_formula():
    x, y = _rng(0).normal(size=(50, 8)), _rng(1).normal(size=(50, 5))
    y = y + x[:, :5]
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    assert analysis.linear_cka(x, y) == pytest.approx(expected, rel=1e-10)


def test_cka_matrix_and_errors():
    a = {"l0": _rng(0).normal(size=(40, 3, 2)), "l1": _rng(1).normal(size=(40, 7))}
    m = analysis.cka_matrix(a)
    assert m.shape == (2, 2)
    np.testing.assert_allclose(np.diag(m), 1.0)
    np.testing.assert_allclose(m, m.T)
    with pytest.raises(ValueError, match="same examples"):
        analysis.linear_cka(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(ValueError, match="at least 4"):
        analysis.linear_cka(np.ones((3, 2)), np.ones((3, 2)), debiased=True)
    assert np.isnan(analysis.linear_cka(np.ones((10, 2)), _rng().normal(size=(10, 2))))


# ---------------------------------------------------------------------------- linear probe


def test_probe_on_separable_and_on_noise_labels():
    rng = _rng()
    centres = rng.normal(size=(4, 20)) * 4
    y = rng.integers(0, 4, 600)
    x = centres[y] + rng.normal(size=(600, 20))
    res = analysis.linear_probe((x[:400], y[:400]), (x[400:], y[400:]))
    assert res.train_accuracy == 1.0 and res.test_accuracy == 1.0
    assert res.features == 20
    # Labels independent of the features: the probe cannot beat chance on held-out data.
    noise = analysis.linear_probe((x[:400], rng.integers(0, 4, 400)), (x[400:], y[400:]))
    assert noise.test_accuracy < 0.4


def test_probe_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        analysis.linear_probe((np.ones((5, 2)), np.zeros(4, int)), (np.ones((2, 2)), [0, 1]))
    with pytest.raises(ValueError, match="features"):
        analysis.linear_probe((np.ones((4, 2)), np.zeros(4, int)), (np.ones((2, 3)), [0, 1]))


# ------------------------------------------------------------------------ receptive fields


def test_receptive_fields_of_a_known_stack():
    # conv3 (same) -> pool2 -> conv3 (same) -> pool2, by hand: sizes 3, 4, 8, 10;
    # jumps 1, 2, 2, 4; the first unit of pool1 covers inputs 0-1 (centre 0.5).
    rfs = analysis.receptive_fields([(3, 1, 1), (2, 2, 0), (3, 1, 1), (2, 2, 0)])
    assert [r.size for r in rfs] == [3, 4, 8, 10]
    assert [r.jump for r in rfs] == [1, 2, 2, 4]
    assert [r.start for r in rfs] == [0.0, 0.5, 0.5, 1.5]
    model = models.get_model("cnn", 3, channels=(4, 4), kernel_size=3, dense=())
    cnn = analysis.cnn_receptive_fields(model, 16)
    assert cnn["block0"] == rfs[1] and cnn["block1"] == rfs[3]
    first = models.get_model("cnn", 3, channels=(4,), first_kernel_size=7, dense=())
    assert analysis.cnn_receptive_fields(first, 16)["block0"].size == 8


def test_gradient_support_equals_theoretical_receptive_field():
    # With smooth units and average pooling every input inside the RF moves the centre
    # unit, and none outside does: the gradient's support is the clipped theoretical RF.
    model = models.get_model(
        "cnn", 2, channels=(3, 3), kernel_size=3, pool="avg", activation="tanh", dense=()
    )
    state = create_state(model, optax.identity(), (24, 1), seed=0)
    x = _rng().normal(size=(16, 24, 1)).astype(np.float32)
    rfs = analysis.cnn_receptive_fields(model, 24)
    for layer in ("block0", "block1"):
        erf = analysis.effective_receptive_field(model, state, x, layer)
        (centre,) = erf["centre"]
        support = np.flatnonzero(erf["map"] > 0)
        c = rfs[layer].start + centre * rfs[layer].jump
        lo, hi = c - (rfs[layer].size - 1) / 2, c + (rfs[layer].size - 1) / 2
        np.testing.assert_array_equal(support, np.arange(int(lo), int(hi) + 1))
        assert 0 < erf["size"] <= len(support)
    with pytest.raises(ValueError, match="Unknown layer"):
        analysis.effective_receptive_field(model, state, x, "block7")


# ------------------------------------------------------------------------------ Gabor fits


def test_gabor_fit_of_synthetic_gabors_and_noise():
    k = 7
    yy, xx = np.mgrid[0:k, 0:k].astype(float)
    g2 = analysis._gabor_2d((xx.ravel(), yy.ravel()), 1.0, 3.2, 2.8, 1.5, 2.0, 0.6, 0.2, 0.3, 0.0)
    g1 = analysis._gabor_1d(np.arange(11.0), 1.0, 5.0, 2.0, 0.15, 0.4, 0.1)
    assert analysis.gabor_fit(g2.reshape(1, k, k))[0] > 0.99
    assert analysis.gabor_fit(g1[None])[0] > 0.99
    noise = analysis.gabor_fit(_rng().normal(size=(12, k, k)), restarts=4)
    assert np.median(noise) < 0.6
    with pytest.raises(ValueError, match="filters"):
        analysis.gabor_fit(np.ones((2, 3, 3, 3)))


def test_first_layer_filters_layout():
    kernel = np.zeros((5, 5, 2, 3))
    kernel[..., 1, 2] = 1.0  # filter 2 reads input channel 1
    f = analysis.first_layer_filters(kernel)
    assert f.shape == (3, 5, 5)
    assert f[2].sum() == 25.0
    assert analysis.first_layer_filters(np.ones((5, 1, 4))).shape == (4, 5)


# ---------------------------------------------------------------- activations and patches


def test_activations_of_the_zoo_cnn_in_batches():
    model = models.get_model("cnn", 4, channels=(4, 6), kernel_size=3, dense=(5,))
    state = create_state(model, optax.identity(), (12, 12, 1), seed=0)
    x = _rng().normal(size=(37, 12, 12, 1)).astype(np.float32)
    acts = analysis.activations(model, state, x, batch_size=16)
    assert list(acts) == ["input", "block0", "block1", "hidden0"]
    assert acts["block0"].shape == (37, 6, 6, 4) and acts["hidden0"].shape == (37, 5)
    whole = analysis.activations(model, state, x, batch_size=64, include_input=False)
    np.testing.assert_allclose(whole["block1"], acts["block1"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        analysis.activations(model, state, x[:0])


def test_activations_fall_back_to_captured_intermediates():
    class Plain(nn.Module):  # sows nothing
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(2, name="out")(nn.relu(nn.Dense(3, name="hidden")(x)))

    model = Plain()
    variables = model.init(jax.random.key(0), np.zeros((1, 4)))
    acts = analysis.activations(model, variables, np.ones((5, 4)), include_input=False)
    assert acts["hidden"].shape == (5, 3) and acts["out"].shape == (5, 2)


def test_top_patches_by_hand():
    # A "layer" that sums pairs of inputs: RF 2, jump 2, first unit centred at 0.5.
    x = np.zeros((3, 10, 1), np.float32)
    x[1, 6:8, 0] = [5.0, 4.0]  # the strongest pair: example 1, unit 3
    x[2, 0:2, 0] = [1.0, 2.0]  # second strongest: example 2, unit 0
    acts = x.reshape(3, 5, 2, 1).sum(2)
    rf = analysis.ReceptiveField(size=2, jump=2, start=0.5)
    patches, values = analysis.top_patches(acts, x, rf, channels=1, k=2)
    assert patches.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(patches[0, 0, :, 0], [5.0, 4.0])
    np.testing.assert_array_equal(patches[0, 1, :, 0], [1.0, 2.0])
    np.testing.assert_array_equal(values[0], [9.0, 3.0])
    with pytest.raises(ValueError, match="same N and spatial rank"):
        analysis.top_patches(acts[:2], x, rf)


# --------------------------------------------------------------------- frozen-layer training


def test_train_frozen_keeps_frozen_layers_and_copies(mnist1d_small):
    (x, y), test = mnist1d_small
    model = models.get_model("cnn", 10, channels=(8, 8), kernel_size=5, dense=())
    donor = create_state(model, optax.identity(), x.shape[1:], seed=7).params
    acc, params = analysis.train_frozen(
        model,
        (x, y),
        test,
        copy={"conv0_0": donor["conv0_0"]},
        frozen=["conv0_0"],
        epochs=2,
    )
    assert 0.0 <= acc <= 1.0
    chex.assert_trees_all_equal(params["conv0_0"], donor["conv0_0"])  # frozen and copied
    start = create_state(model, optax.identity(), x.shape[1:], seed=0).params
    assert not np.allclose(params["conv1_0"]["kernel"], start["conv1_0"]["kernel"])
    with pytest.raises(ValueError, match="Unknown module"):
        analysis.train_frozen(model, (x, y), test, frozen=["conv9_0"], epochs=1)


@pytest.fixture(scope="module")
def mnist1d_small():
    from dl.data import load

    ds = load("mnist1d")
    (x, y), (xt, yt) = ds.train, ds.test
    return (x[:500], y[:500]), (xt[:200], yt[:200])


# ------------------------------------------------------------------------- gradient norms


def test_layer_gradient_norms_by_hand():
    # A 1-hidden-layer linear MLP: dL/dW1 = h^T dz and dL/dW0 = x^T (dz W1^T), where
    # dz = (softmax(z) - onehot(y)) / B is the gradient of the mean cross-entropy.
    model = models.get_model("mlp", 3, widths=(4,), activation="identity")
    state = create_state(model, optax.identity(), (5,), seed=0)
    x = _rng().normal(size=(8, 5)).astype(np.float32)
    y = np.arange(8) % 3
    p = state.params
    w0, b0 = np.asarray(p["dense0"]["kernel"]), np.asarray(p["dense0"]["bias"])
    w1, b1 = np.asarray(p["head"]["kernel"]), np.asarray(p["head"]["bias"])
    h = x @ w0 + b0
    z = h @ w1 + b1
    s = np.exp(z - z.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    dz = (s - np.eye(3)[y]) / len(x)
    expected = [np.linalg.norm(x.T @ (dz @ w1.T)), np.linalg.norm(h.T @ dz)]
    for jit in (True, False):
        got = analysis.layer_gradient_norms(model, state, x, y, layers=["dense0", "head"], jit=jit)
        np.testing.assert_allclose(got, expected, rtol=1e-4)
    with pytest.raises(ValueError, match="Unknown layer"):
        analysis.layer_gradient_norms(model, state, x, y, layers=["dense3"])


def test_layer_gradient_norms_stacked_equal_each_run():
    model = models.get_model("mlp", 3, widths=(6, 6), activation="tanh", batch_norm=True)
    states = [create_state(model, optax.identity(), (5,), seed=s) for s in (0, 1, 2)]
    x = _rng().normal(size=(16, 5)).astype(np.float32)
    y = np.arange(16) % 3
    layers = ["dense0", "dense1", "head"]
    variables = [{"params": st.params, "batch_stats": st.batch_stats} for st in states]
    stacked = jax.tree.map(lambda *a: np.stack(a), *variables)
    got = analysis.layer_gradient_norms(model, stacked, x, y, layers=layers, stacked=True)
    assert got.shape == (3, 3)
    for i, st in enumerate(states):
        np.testing.assert_allclose(
            got[i], analysis.layer_gradient_norms(model, st, x, y, layers=layers), rtol=1e-5
        )


def test_mlp_kernel_init_he_doubles_the_variance():
    x = (8, 400)
    lecun = models.get_model("mlp", 2, widths=(400,))
    he = models.get_model("mlp", 2, widths=(400,), kernel_init="he_normal")
    w = [
        np.asarray(create_state(m, optax.identity(), x[1:], seed=0).params["dense0"]["kernel"])
        for m in (lecun, he)
    ]
    assert abs(w[0].var() * 400 - 1.0) < 0.05 and abs(w[1].var() * 400 - 2.0) < 0.1
    with pytest.raises(ValueError, match="kernel_init must be one of"):
        create_state(
            models.get_model("mlp", 2, widths=(4,), kernel_init="glorot"),
            optax.identity(),
            (3,),
            seed=0,
        )


def test_mlp_residual_adds_the_shortcut():
    plain = models.get_model("mlp", 2, widths=(6, 6), activation="identity")
    res = models.get_model("mlp", 2, widths=(6, 6), activation="identity", residual=True)
    state = create_state(plain, optax.identity(), (6,), seed=0)
    x = _rng().normal(size=(3, 6)).astype(np.float32)
    acts_p = analysis.activations(plain, state, x)
    acts_r = analysis.activations(res, state, x)  # same parameters, shortcuts added
    # Layer 0 (6 -> 6) has a matching shape, so it is x + Dense(x); layer 1 adds layer 0.
    np.testing.assert_allclose(acts_r["layer0"], acts_p["layer0"] + x, rtol=1e-5, atol=1e-6)
    dense1 = acts_r["layer0"] @ np.asarray(state.params["dense1"]["kernel"]) + np.asarray(
        state.params["dense1"]["bias"]
    )
    np.testing.assert_allclose(acts_r["layer1"], dense1 + acts_r["layer0"], rtol=1e-5, atol=1e-5)
