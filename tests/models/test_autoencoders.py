"""Autoencoders (issue 6): the pieces against hand computations, then quick runs through
`dl.recipes.train_and_evaluate` asserting the issue's outcomes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dl import generative, losses, models
from dl.recipes import default_config, train_and_evaluate


def test_corruptions_have_the_requested_strength():
    x = jnp.full((200, 28, 28, 1), 0.5)
    key = jax.random.key(0)
    masked = np.asarray(models.corrupt(key, x, "masking", 0.3))
    assert abs((masked == 0).mean() - 0.3) < 0.01 and set(np.unique(masked)) == {0.0, 0.5}
    noisy = np.asarray(models.corrupt(key, x, "gaussian", 0.2))
    assert abs((noisy - 0.5).std() - 0.2) < 0.005
    assert models.corrupt(key, x, "none", 0.9) is x
    with pytest.raises(ValueError, match="Unknown noise 'salt'"):
        models.corrupt(key, x, "salt", 0.1)


def test_bernoulli_nll_sums_over_pixels():
    logits = jnp.array([[0.0, 2.0], [-1.0, 3.0]])
    t = jnp.array([[1.0, 0.0], [0.5, 1.0]])
    p = jax.nn.sigmoid(logits)
    want = -(t * jnp.log(p) + (1 - t) * jnp.log(1 - p)).sum(1)
    np.testing.assert_allclose(losses.bernoulli_nll(logits, t), want, rtol=1e-6)


def test_vae_sows_the_closed_form_kl_and_samples_with_the_noise_rng():
    model = models.get_model("vae", 10, latent_dim=4, hidden=(16,))
    x = jax.random.uniform(jax.random.key(1), (3, 8, 8, 1))
    v = model.init(jax.random.key(0), x)
    mu, logvar = model.apply(v, x, method=models.Autoencoder.encode)
    want = 0.5 * (jnp.exp(logvar) + mu**2 - 1 - logvar).sum(-1)
    _, sown = model.apply(v, x, mutable=["losses"])
    np.testing.assert_allclose(sown["losses"]["kl"][0], want, rtol=1e-5)
    # Without a "noise" rng the code is the mean; with one it is a sample.
    mean_out = model.apply(v, x)
    np.testing.assert_allclose(model.apply(v, x), mean_out)
    sampled = model.apply(v, x, rngs={"noise": jax.random.key(2)})
    assert np.abs(np.asarray(sampled - mean_out)).max() > 1e-4
    # Interpolation starts and ends at the two images' decoded means.
    path = generative.interpolate(model, v, x[0], x[1], 5)
    np.testing.assert_allclose(path[0], jax.nn.sigmoid(mean_out[0]), atol=1e-5)
    np.testing.assert_allclose(path[-1], jax.nn.sigmoid(mean_out[1]), atol=1e-5)
    assert generative.sample(model, v, jax.random.key(3), 6, (8, 8, 1)).shape == (6, 8, 8, 1)


def test_autoencoder_errors_name_the_problem():
    conv = models.get_model("conv_ae", 1, channels=(8, 8, 8))
    with pytest.raises(ValueError, match=r"divisible by 8 .* got shape \(1, 28, 28, 1\)"):
        conv.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    with pytest.raises(ValueError, match="kind must be 'mlp' or 'conv'"):
        models.get_model("ae", 1, kind="rnn").init(jax.random.key(0), jnp.zeros((1, 4)))
    with pytest.raises(ValueError, match="needs a VAE"):
        generative.sample(models.get_model("ae", 1), {}, jax.random.key(0), 2, (4,))
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*got values in \[-3"):
        generative.check_unit_interval(np.array([-3.0, 1.0]))
    with pytest.raises(ValueError, match="reconstruct images with values in"):
        train_and_evaluate(default_config("ae", "mnist1d", epochs=1), progress=False, devices=1)


def _quick(model, tmp_path, **overrides):
    cfg = default_config(model, "mnist5k", quick=True, **overrides)
    return train_and_evaluate(cfg, tmp_path, progress=False, devices=1)


def test_autoencoder_quick_reconstructs_and_flags_anomalies(tmp_path):
    res = _quick("ae", tmp_path)
    assert res["task"] == "reconstruction" and res["test_accuracy"] is None
    assert res["test_loss_by_epoch"][-1] < 0.7 * res["test_loss_by_epoch"][0]
    assert res["test_mse"] < 0.03, res["test_mse"]
    # Reconstruction error separates uniform noise from digits perfectly.
    assert res["anomaly_auroc"]["uniform_noise"] > 0.99, res["anomaly_auroc"]
    assert (tmp_path / "reconstructions.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "noise",
    ["gaussian", pytest.param("masking", marks=pytest.mark.slow)],  # 30 s each
)
def test_denoising_autoencoder_halves_the_noise_quick(noise, tmp_path):
    res = _quick("dae", tmp_path, model_kwargs={"noise": noise})
    den = res["denoising"]
    assert den["noise"] == noise and den["level"] == 0.5
    # The criterion: MSE to the clean image at most half the noisy input's MSE.
    assert den["denoised_mse"] <= 0.5 * den["noisy_mse"], den
    assert (tmp_path / "denoising.png").exists()


def test_vae_quick_improves_the_elbo_and_writes_figures(tmp_path):
    res = _quick("vae", tmp_path)
    assert res["test_elbo"] > res["test_elbo_first_epoch"] + 30, res["test_loss_by_epoch"]
    # The ELBO's two terms are reported separately and add up to the loss.
    assert res["test_kl"] > 1.0
    np.testing.assert_allclose(
        res["test_reconstruction_nll"] + res["test_kl"], -res["test_elbo"], rtol=1e-5
    )
    for png in ("samples.png", "interpolation.png", "reconstructions.png", "curves.png"):
        assert (tmp_path / png).stat().st_size > 1000, png


def test_aux_losses_are_part_of_the_training_objective():
    from dl import train

    model = models.get_model("vae", 1, latent_dim=2, hidden=(8,))
    tx = optax.sgd(0.0)
    state = train.create_state(model, tx, (4,))
    x = jax.random.uniform(jax.random.key(0), (5, 4))
    _, m = jax.jit(train.make_train_step(model, tx, loss="bernoulli_nll"))(state, {"x": x, "y": x})
    assert float(m["loss_sum"]) == pytest.approx(
        float(m["bernoulli_nll_sum"]) + float(m["kl_sum"]), rel=1e-6
    )
