"""The capsule network (issue 35): shapes, capsule lengths, routing, margin loss,
gradients, the reconstruction term, and the recipe's quick variant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dl import losses, models
from dl.models.capsnet import capsule_lengths, route, squash
from dl.recipes import default_config, train_and_evaluate

SMALL = dict(conv_channels=8, primary_types=4, decoder=(16,))


def _init(x, **kw):
    model = models.get_model("capsnet", 10, **{**SMALL, **kw})
    return model, model.init(jax.random.key(0), x)


def test_output_shapes_lengths_and_routing_coefficients():
    x = jnp.asarray(np.random.default_rng(0).random((5, 28, 28, 1), np.float32))
    model, v = _init(x)
    out, mut = model.apply(v, x, mutable=["intermediates", "losses"])
    assert out.shape == (5, 10)
    # 28 -> 20 (9x9 valid) -> 6 (9x9 stride 2): 6 * 6 * 4 primary capsules
    c = mut["intermediates"]["routing"][0]
    assert c.shape == (5, 6 * 6 * 4, 10)
    np.testing.assert_allclose(np.asarray(c.sum(-1)), 1.0, rtol=1e-6)  # over the parents
    assert (np.asarray(c) >= 0).all()
    assert mut["intermediates"]["poses"][0].shape == (5, 10, 16)
    assert mut["intermediates"]["reconstruction"][0].shape == x.shape
    rec = mut["losses"]["reconstruction"][0]
    assert rec.shape == (5,) and (np.asarray(rec) > 0).all()
    # lengths are the poses' lengths, in [0, 1), also for huge inputs (saturated squash)
    np.testing.assert_allclose(
        np.asarray(out), np.linalg.norm(np.asarray(mut["intermediates"]["poses"][0]), axis=-1),
        atol=1e-5,  # capsule_lengths adds 1e-7 under the square root
    )  # fmt: skip
    for scale in (1.0, 1e3, 1e8):
        lengths = np.asarray(model.apply(v, x * scale))
        assert ((lengths >= 0) & (lengths < 1)).all(), (scale, lengths.max())


def test_squash_and_routing_by_agreement():
    s = jnp.asarray([[3.0, 4.0], [0.0, 0.0], [1e5, 0.0]])
    n = np.linalg.norm(np.asarray(squash(s)), axis=-1)
    np.testing.assert_allclose(n[:2], [25 / 26, 0.0], atol=1e-6)
    assert (np.asarray(capsule_lengths(squash(s))) < 1).all()
    rng = np.random.default_rng(1)
    u_hat = jnp.asarray(rng.normal(size=(2, 7, 3, 4)).astype(np.float32))
    v1, c1 = route(u_hat, 1)
    np.testing.assert_allclose(np.asarray(c1), 1 / 3)  # one iteration: uniform couplings
    np.testing.assert_allclose(np.asarray(v1), np.asarray(squash(u_hat.sum(1) / 3)), rtol=1e-5)
    # Three children agree on parent 0 and disagree on parent 1: routing couples them to 0.
    agree = jnp.stack([jnp.ones((3, 4)), jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)], 1)
    _, c3 = route(agree[None], 3)
    assert (np.asarray(c3)[0, :, 0] > 0.5).all()
    np.testing.assert_allclose(np.asarray(c3).sum(-1), 1.0, rtol=1e-6)


def test_margin_loss_by_hand():
    lengths = jnp.asarray([[0.95, 0.05, 0.5], [0.2, 0.1, 0.8]])
    labels = jnp.asarray([0, 2])
    want = [0.0 + 0.0 + 0.5 * 0.4**2, 0.5 * 0.1**2 + 0.0 + 0.1**2]
    np.testing.assert_allclose(np.asarray(losses.margin(lengths, labels)), want, rtol=1e-5)


def test_gradients_are_finite_and_reach_every_parameter():
    x = jnp.asarray(np.random.default_rng(2).random((4, 28, 28, 1), np.float32))
    y = jnp.asarray([1, 2, 3, 4])
    model, v = _init(x)

    def objective(params):
        out, mut = model.apply({"params": params}, x, mutable=["losses"])
        return jnp.mean(losses.margin(out, y) + mut["losses"]["reconstruction"][0])

    grads = jax.grad(objective)(v["params"])
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.isfinite(np.asarray(g)).all(), path
        assert np.abs(np.asarray(g)).max() > 0, path


def test_without_decoder_no_reconstruction_and_bad_inputs():
    x = jnp.zeros((2, 28, 28, 1))
    model, v = _init(x, decoder=())
    _, mut = model.apply(v, x, mutable=["losses"])
    assert not mut.get("losses")
    assert not any("decoder" in k for k in v["params"])
    with pytest.raises(ValueError, match=r"H, W >= 17.*\(2, 12, 12, 1\)"):
        _init(jnp.zeros((2, 12, 12, 1)))
    with pytest.raises(ValueError, match="routing_iterations must be >= 1"):
        _init(x, routing_iterations=0)


def test_cpu_and_xla_kernels_agree():
    x = jnp.asarray(np.random.default_rng(3).random((3, 28, 28, 1), np.float32))
    xla, v = _init(x)
    cpu = models.get_model("capsnet", 10, kernels="cpu", **SMALL)
    np.testing.assert_allclose(
        np.asarray(cpu.apply(v, x)), np.asarray(xla.apply(v, x)), rtol=1e-4, atol=1e-6
    )


@pytest.mark.slow  # about 70 s on 2 cores
def test_quick_recipe_trains_with_the_margin_loss(tmp_path):
    config = default_config("capsnet", "mnist5k", quick=True)
    res = train_and_evaluate(config, tmp_path, progress=False, devices=1)
    metrics = (tmp_path / "metrics.jsonl").read_text()
    assert '"train/margin"' in metrics and '"train/reconstruction"' in metrics
    # 3 epochs of the recipe (98.1% after its 15; 89.7% after 2)
    assert res["test_accuracy"] >= 0.93, res["test_accuracy"]
    assert res["config"]["epochs"] == 3
