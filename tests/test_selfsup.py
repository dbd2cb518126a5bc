"""Self-supervised pre-training (issue 35): SimCLR's views and loss, training through
the same loop, and the encoder's parameters given to a classifier."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dl import data, losses, models, optim, selfsup, train


def _reference_nt_xent(z, t):
    """NT-Xent by the definition, one view at a time (float64)."""
    z = np.asarray(z, np.float64)
    b = len(z)
    views = np.concatenate([z[:, 0], z[:, 1]])
    views /= np.linalg.norm(views, axis=1, keepdims=True)
    out = np.zeros(2 * b)
    for i in range(2 * b):
        j = (i + b) % (2 * b)
        others = [k for k in range(2 * b) if k != i]
        logits = views[others] @ views[i] / t
        out[i] = -(views[j] @ views[i] / t) + np.log(np.exp(logits).sum())
    return 0.5 * (out[:b] + out[b:])


def test_nt_xent_equals_its_definition_and_rewards_matching_views():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 2, 5)).astype(np.float32)
    for t in (0.1, 0.5):
        got = losses.nt_xent(jnp.asarray(z), None, temperature=t)
        np.testing.assert_allclose(np.asarray(got), _reference_nt_xent(z, t), rtol=1e-5)
    same = np.repeat(z[:, :1], 2, axis=1)  # both views identical: lower loss
    assert losses.nt_xent(jnp.asarray(same)).mean() < losses.nt_xent(jnp.asarray(z)).mean()
    g = jax.grad(lambda a: losses.nt_xent(a).sum())(jnp.asarray(z))
    assert np.isfinite(np.asarray(g)).all()
    with pytest.raises(ValueError, match=r"\(B, 2, D\).*\(6, 5\)"):
        losses.nt_xent(jnp.zeros((6, 5)))


def _ssl():
    encoder = models.get_model("cnn", 16, channels=(4,), dense=(8,))
    return selfsup.SimCLR(encoder=encoder, projection_dim=6)


def test_views_are_random_in_training_and_fixed_in_evaluation():
    x = jnp.asarray(np.random.default_rng(1).random((4, 8, 8, 1), np.float32))
    ssl = _ssl()
    v = ssl.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, x)
    z = ssl.apply(v, x, rngs={"noise": jax.random.key(2)}, train=True)
    assert z.shape == (4, 2, 6)
    assert not np.allclose(np.asarray(z[:, 0]), np.asarray(z[:, 1]))  # two different views
    again = ssl.apply(v, x, rngs={"noise": jax.random.key(2)}, train=True)
    np.testing.assert_array_equal(np.asarray(z), np.asarray(again))
    assert set(v["params"]) == {"encoder", "projection"}


def test_pretraining_through_fit_and_the_encoder_into_a_classifier():
    ds = data.load("digits")
    x = ds.x_train[:256]
    config = train.FitConfig(
        epochs=3,
        batch_size=64,
        optimizer=optim.OptimizerConfig("adam", 3e-3, "constant"),
        loss="nt_xent",
    )
    unlabelled = (x, np.zeros(len(x), np.float32))
    result = train.train(_ssl(), unlabelled, config, progress=False, handle_signals=False)
    losses_by_epoch = [h["train/loss"] for h in result.history]
    assert all(np.isfinite(losses_by_epoch))
    body = selfsup.encoder_params(result.state.params)
    assert set(body) == {"conv0_0", "dense0"}  # the encoder's head is dropped
    clf = models.get_model("cnn", ds.num_classes, channels=(4,), dense=(8,))
    fine = train.train(
        clf,
        (x, ds.y_train[:256]),
        train.FitConfig(epochs=1, batch_size=64),
        params=body,
        progress=False,
        handle_signals=False,
    )
    assert fine.history[-1]["train/count"] == 256
    with pytest.raises(ValueError, match="no 'encoder'"):
        selfsup.encoder_params(fine.state.params)
