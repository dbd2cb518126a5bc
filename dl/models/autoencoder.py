"""Autoencoders: plain, denoising and variational, with MLP or convolutional halves.

All output Bernoulli logits of the input's shape (images in [0, 1]) and train with
`dl.losses.bernoulli_nll` against the clean input. Randomness (input corruption, the
VAE's reparameterisation) comes from the "noise" rng stream, which `dl.train`'s steps
provide. The VAE sows its per-example KL divergence into the "losses" collection; the
train step adds every sown loss to the objective and reports each separately.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dl._errors import unknown_name

NOISES = ("none", "gaussian", "masking")


def corrupt(key: jax.Array, x: jax.Array, noise: str, level: float) -> jax.Array:
    """The denoising autoencoder's input corruption (Vincent et al. 2008).

    - "gaussian": x + level * N(0, 1), not clipped;
    - "masking": each value set to 0 with probability `level`;
    - "none": x unchanged.
    """
    if noise == "none" or level == 0:
        return x
    if noise == "gaussian":
        return x + level * jax.random.normal(key, x.shape, x.dtype)
    if noise == "masking":
        return jnp.where(jax.random.bernoulli(key, level, x.shape), 0.0, x).astype(x.dtype)
    raise unknown_name("noise", noise, NOISES)


class _Encoder(nn.Module):
    kind: str
    hidden: Sequence[int]
    channels: Sequence[int]
    outputs: int

    @nn.compact
    def __call__(self, x):
        if self.kind == "conv":
            for i, c in enumerate(self.channels):
                x = nn.relu(nn.Conv(c, (3, 3), strides=2, padding="SAME", name=f"conv{i}")(x))
        x = x.reshape(x.shape[0], -1)
        if self.kind == "mlp":
            for i, w in enumerate(self.hidden):
                x = nn.relu(nn.Dense(w, name=f"dense{i}")(x))
        return nn.Dense(self.outputs, name="code")(x)


class _Decoder(nn.Module):
    kind: str
    hidden: Sequence[int]
    channels: Sequence[int]

    @nn.compact
    def __call__(self, z, shape: tuple[int, ...]):
        b = z.shape[0]
        if self.kind == "mlp":
            for i, w in enumerate(reversed(self.hidden)):
                z = nn.relu(nn.Dense(w, name=f"dense{i}")(z))
            return nn.Dense(int(np.prod(shape)), name="out")(z).reshape(b, *shape)
        factor = 2 ** len(self.channels)
        h, w = shape[0] // factor, shape[1] // factor
        chans = list(reversed(self.channels))
        z = nn.relu(nn.Dense(h * w * chans[0], name="dense")(z)).reshape(b, h, w, chans[0])
        for i, c in enumerate(chans[1:]):
            z = nn.relu(nn.ConvTranspose(c, (3, 3), strides=(2, 2), name=f"deconv{i}")(z))
        return nn.ConvTranspose(shape[-1], (3, 3), strides=(2, 2), name="out")(z)


class Autoencoder(nn.Module):
    """Autoencoder x -> z -> logits of x; optionally denoising and/or variational.

    Attributes:
      kind: "mlp" (Dense halves on the flattened input) or "conv" (stride-2 convs and
        transposed convs; images whose sides divide by 2 ** len(channels)).
      latent_dim: size of the code z.
      hidden: Dense widths of the MLP encoder (the decoder mirrors them).
      channels: conv channels of the encoder (the decoder mirrors them).
      noise: "none", "gaussian" or "masking": corrupt the input while training.
      noise_level: the Gaussian's standard deviation, or the masking probability.
      variational: a VAE (Kingma & Welling 2014): Gaussian encoder q(z|x) = N(mu,
        diag(exp(logvar))), z = mu + sigma * eps, prior N(0, I); the KL divergence is
        sown as the per-example loss "kl" (weighted by `beta`). Without a "noise" rng
        (e.g. `model.apply` in plain inference), z = mu.
      beta: weight of the KL term (1 is the ELBO; beta-VAE otherwise).
    """

    kind: str = "mlp"
    latent_dim: int = 32
    hidden: Sequence[int] = (512, 256)
    channels: Sequence[int] = (32, 64)
    noise: str = "none"
    noise_level: float = 0.5
    variational: bool = False
    beta: float = 1.0

    def setup(self):
        if self.kind not in ("mlp", "conv"):
            raise ValueError(f"kind must be 'mlp' or 'conv'; got {self.kind!r}.")
        if self.noise not in NOISES:
            raise unknown_name("noise", self.noise, NOISES)
        outputs = 2 * self.latent_dim if self.variational else self.latent_dim
        self.encoder = _Encoder(self.kind, tuple(self.hidden), tuple(self.channels), outputs)
        self.decoder = _Decoder(self.kind, tuple(self.hidden), tuple(self.channels))

    def _check(self, x):
        if self.kind == "conv":
            factor = 2 ** len(self.channels)
            if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
                raise ValueError(
                    f"The conv autoencoder needs images (B, H, W, C) with H and W divisible "
                    f"by {factor} (2 ** len(channels)); got shape {tuple(x.shape)}. Use "
                    "kind='mlp' or fewer channels."
                )

    def encode(self, x) -> tuple[jax.Array, jax.Array | None]:
        """(mu, logvar) for a VAE, (z, None) otherwise."""
        self._check(x)
        code = self.encoder(x)
        if self.variational:
            mu, logvar = jnp.split(code, 2, axis=-1)
            return mu, jnp.clip(logvar, -20.0, 20.0)
        return code, None

    def decode(self, z, shape: tuple[int, ...]) -> jax.Array:
        """Logits of examples of `shape` (e.g. (28, 28, 1)) from codes z (B, latent_dim)."""
        return self.decoder(z, tuple(shape))

    def __call__(self, x, train: bool = False):
        if train and self.noise != "none":
            x_in = corrupt(self.make_rng("noise"), x, self.noise, self.noise_level)
        else:
            x_in = x
        mu, logvar = self.encode(x_in)
        z = mu
        if self.variational:
            if self.has_rng("noise"):
                eps = jax.random.normal(self.make_rng("noise"), mu.shape, mu.dtype)
                z = mu + jnp.exp(0.5 * logvar) * eps
            # KL(N(mu, sigma^2) || N(0, 1)) summed over the latent dimensions, in nats.
            kl = 0.5 * jnp.sum(jnp.exp(logvar) + mu**2 - 1.0 - logvar, axis=-1)
            self.sow("losses", "kl", self.beta * kl)
        return self.decode(z, x.shape[1:])
