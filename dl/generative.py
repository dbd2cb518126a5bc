"""Tools for trained autoencoders (`dl.models.Autoencoder`): reconstructions, anomaly
scores, denoising measurements, VAE samples and latent interpolations.

Every function takes the model and its `variables` ({"params": ...}, e.g.
`{"params": state.params}`) and returns numpy arrays; the model calls inside are jitted.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dl.losses import bernoulli_nll
from dl.models.autoencoder import Autoencoder, corrupt


def _check(model) -> None:
    if not isinstance(model, Autoencoder):
        raise ValueError(
            f"Expected an autoencoder (dl.models.Autoencoder: ae, conv_ae, dae, vae); got "
            f"{type(model).__name__}."
        )


def check_unit_interval(x, name: str = "x") -> None:
    """Autoencoders model pixels as Bernoulli probabilities: inputs must lie in [0, 1]."""
    lo, hi = float(np.min(x)), float(np.max(x))
    if lo < 0 or hi > 1:
        raise ValueError(
            f"{name}: autoencoders here reconstruct images with values in [0, 1] (Bernoulli "
            f"likelihood); got values in [{lo:.3g}, {hi:.3g}]. Use an image dataset "
            "(mnist5k, shapes, digits) or rescale the inputs."
        )


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, variables, x):
    return model.apply(variables, x)  # no "noise" rng: clean input, z = mu for a VAE


def _batched(fn, x, batch_size: int = 500) -> np.ndarray:
    return np.concatenate(
        [np.asarray(fn(jnp.asarray(x[i : i + batch_size]))) for i in range(0, len(x), batch_size)]
    )


def reconstruct(model, variables, x, *, batch_size: int = 500) -> np.ndarray:
    """Reconstructed images (probabilities in [0, 1]) of `x`, in inference mode."""
    _check(model)
    return _batched(lambda b: jax.nn.sigmoid(_logits(model, variables, b)), x, batch_size)


def anomaly_scores(model, variables, x, *, batch_size: int = 500) -> np.ndarray:
    """Reconstruction error per example (Bernoulli negative log-likelihood, nats): inputs
    unlike the training data reconstruct badly and score high."""
    _check(model)
    return _batched(
        lambda b: bernoulli_nll(_logits(model, variables, b), jnp.clip(b, 0.0, 1.0)),
        x,
        batch_size,
    )


def denoising_report(
    model, variables, x, *, noise: str | None = None, level: float | None = None, seed: int = 0
) -> dict:
    """Corrupt clean images `x` once (the model's noise by default), denoise them, and
    compare both with the clean images.

    Returns:
      {"noise", "level", "noisy_mse": MSE(noisy, clean), "denoised_mse":
      MSE(reconstruction of noisy, clean), "ratio": denoised / noisy, "noisy",
      "denoised"} (the last two arrays).
    """
    _check(model)
    noise = model.noise if noise is None else noise
    level = model.noise_level if level is None else level
    x = np.asarray(x, np.float32)
    noisy = np.asarray(corrupt(jax.random.key(seed), jnp.asarray(x), noise, level))
    denoised = reconstruct(model, variables, noisy)
    noisy_mse = float(np.mean((noisy - x) ** 2))
    denoised_mse = float(np.mean((denoised - x) ** 2))
    return {
        "noise": noise,
        "level": float(level),
        "noisy_mse": noisy_mse,
        "denoised_mse": denoised_mse,
        "ratio": denoised_mse / max(noisy_mse, 1e-12),
        "noisy": noisy,
        "denoised": denoised,
    }


def _decode(model, variables, z, shape):
    return jax.nn.sigmoid(model.apply(variables, z, shape, method=Autoencoder.decode))


def sample(model, variables, key: jax.Array, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """`n` images from a VAE: z ~ N(0, I) decoded to Bernoulli means."""
    _check(model)
    if not model.variational:
        raise ValueError("Sampling needs a VAE (model 'vae'); a plain autoencoder has no prior.")
    z = jax.random.normal(key, (n, model.latent_dim))
    return np.asarray(jax.jit(_decode, static_argnums=(0, 3))(model, variables, z, tuple(shape)))


def interpolate(model, variables, x_a, x_b, steps: int = 8) -> np.ndarray:
    """Decode `steps` codes on the line between the codes (means) of images x_a and x_b:
    (steps, *shape)."""
    _check(model)
    pair = jnp.stack([jnp.asarray(x_a), jnp.asarray(x_b)])
    mu, _ = model.apply(variables, pair, method=Autoencoder.encode)
    t = jnp.linspace(0.0, 1.0, steps)[:, None]
    z = (1 - t) * mu[0] + t * mu[1]
    return np.asarray(_decode(model, variables, z, tuple(pair.shape[1:])))


def auroc(normal_scores, anomaly_scores_) -> float:
    """Area under the ROC curve of scores separating anomalies (positives) from normal
    examples: 1 = perfect, 0.5 = chance (scikit-learn's roc_auc_score)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(normal_scores)), np.ones(len(anomaly_scores_))]
    return float(roc_auc_score(y, np.r_[normal_scores, anomaly_scores_]))
