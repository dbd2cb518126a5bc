"""GANs (issue 6): the step's pieces, then the quick run asserting the issue's outcome."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dl import gan, models
from dl.recipes import default_config, train_and_evaluate


def _setup(conditional=False):
    model = models.get_model("cgan" if conditional else "dcgan", 3, image_shape=(8, 8, 1), base=4)
    g_tx, d_tx = gan.make_optimizers(1e-3)
    return model, g_tx, d_tx, gan.create_gan_state(model, g_tx, d_tx, seed=0)


def test_gan_step_updates_each_network_with_its_own_optimizer():
    model, g_tx, d_tx, state = _setup()
    x = jax.random.uniform(jax.random.key(0), (6, 8, 8, 1))
    batch = {"x": x, "y": jnp.zeros((6,), jnp.int32)}
    step = jax.jit(gan.make_gan_step(model, g_tx, d_tx))
    new, m = step(state, batch)
    changed = lambda a, b: any(  # noqa: E731
        bool(jnp.any(u != v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    assert changed(new.g_params, state.g_params) and changed(new.d_params, state.d_params)
    assert changed(new.g_opt, state.g_opt) and changed(new.d_opt, state.d_opt)
    # Sums and a count, like every step of dl.train (they add up across steps).
    assert int(new.step) == 1 and set(m) == {
        "d_loss_sum",
        "g_loss_sum",
        "d_real_sum",
        "d_fake_sum",
        "count",
    }
    assert int(m["count"]) == 6
    d_real, d_loss = float(m["d_real_sum"]) / 6, float(m["d_loss_sum"]) / 6
    # The discriminator's loss is the real-vs-fake cross-entropy: log 4 when D outputs 1/2.
    assert 0 < d_real < 1 and d_loss == pytest.approx(2 * np.log(2), abs=0.2)
    # Pure: the same state and batch give the same result; the step compiles once.
    again, _ = step(state, batch)
    np.testing.assert_array_equal(
        jax.tree.leaves(again.g_params)[0], jax.tree.leaves(new.g_params)[0]
    )
    # The generator's loss is the non-saturating -log D(G(z)).
    logit = gan._discriminate(
        model,
        new.d_params,
        gan._generate(
            model, state.g_params, state.g_stats, jnp.zeros((1, model.latent_dim)), None, True
        )[0],
        None,
    )
    assert float(jax.nn.softplus(-logit)[0]) > 0


def test_conditional_gan_needs_labels_and_sampling_is_in_range():
    model, g_tx, d_tx, state = _setup(conditional=True)
    with pytest.raises(ValueError, match="needs labels"):
        gan.sample(model, state, jax.random.key(0), 4)
    imgs = gan.sample(model, state, jax.random.key(0), 4, labels=np.arange(4) % 3)
    assert imgs.shape == (4, 8, 8, 1) and imgs.min() >= 0 and imgs.max() <= 1
    with pytest.raises(ValueError, match="divisible by 4"):
        models.get_model("dcgan", 3, image_shape=(10, 10, 1)).init(
            jax.random.key(0), jnp.zeros((1, 64))
        )
    with pytest.raises(ValueError, match=r"images \(N, H, W, C\) with N >= batch_size=64"):
        gan.fit_gan(state, None, np.zeros((10, 8, 8, 1)), np.zeros(10), epochs=1)


def test_fit_gan_runs_dl_fit_loop_with_epoch_means():
    """The GAN keeps its own two-optimizer step but trains in dl.train.fit's loop: the
    history holds epoch means from the step's sums, and on_epoch sees the initial state
    and each epoch."""
    model, g_tx, d_tx, state = _setup()
    x = np.asarray(jax.random.uniform(jax.random.key(1), (40, 8, 8, 1)))
    seen = []
    res = gan.fit_gan(
        state,
        gan.make_gan_step(model, g_tx, d_tx),
        x,
        np.zeros(40, np.int32),
        epochs=2,
        batch_size=16,
        on_epoch=lambda e, s: seen.append((e, int(s.step))),
    )
    assert seen == [(0, 0), (1, 2), (2, 4)] and int(res.state.step) == 4
    row = res.history[-1]
    assert {"d_loss", "g_loss", "d_real", "d_fake", "epoch", "step", "time_s"} <= set(row)
    assert row["count"] == 32 and 0 < row["d_real"] < 1 and row["epoch"] == 2


def test_judge_counts_classes_and_confidence():
    p = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    got = gan.judge_samples(p, 3)
    assert got["class_counts"] == [2, 1, 0] and got["classes_present"] == 2
    assert got["mean_confidence"] == pytest.approx((0.9 + 0.7 + 0.6) / 3)


@pytest.mark.slow  # about 2.5 minutes
def test_dcgan_quick_samples_look_like_digits_of_every_class(tmp_path):
    res = train_and_evaluate(
        default_config("dcgan", "mnist5k", quick=True), tmp_path, progress=False
    )
    s = res["samples"]
    assert res["judge"]["test_accuracy"] >= 0.97  # the judge reads real digits
    # The criterion: mean top-class confidence >= 0.8 over 1000 samples, every
    # class present.
    assert s["n"] == 1000 and s["mean_confidence"] >= 0.8, s
    assert s["classes_present"] == 10, s["class_counts"]
    assert (tmp_path / "samples.png").stat().st_size > 1000
