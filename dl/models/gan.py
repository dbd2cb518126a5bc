"""DCGAN (Radford et al. 2016) networks, optionally conditional (Mirza & Osindero 2014).
Training (the two-optimizer step, sampling, judging) is in `dl.gan`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class Generator(nn.Module):
    """z (B, latent) [+ one-hot labels] -> Dense -> 2 transposed convs (stride 2) -> tanh.

    BatchNorm after the Dense and the first transposed conv (DCGAN); inference uses the
    running statistics.
    """

    image_shape: tuple[int, int, int]
    base: int = 32
    num_classes: int = 0  # > 0: conditional

    @nn.compact
    def __call__(self, z, labels=None, train: bool = False):
        if self.num_classes:
            z = jnp.concatenate([z, jax.nn.one_hot(labels, self.num_classes)], axis=-1)
        h, w, c = self.image_shape
        norm = dict(use_running_average=not train, momentum=0.9)
        x = nn.Dense((h // 4) * (w // 4) * 2 * self.base, name="dense")(z)
        x = nn.relu(nn.BatchNorm(name="bn0", **norm)(x))
        x = x.reshape(z.shape[0], h // 4, w // 4, 2 * self.base)
        x = nn.ConvTranspose(self.base, (4, 4), strides=(2, 2), name="deconv0")(x)
        x = nn.relu(nn.BatchNorm(name="bn1", **norm)(x))
        x = nn.ConvTranspose(c, (4, 4), strides=(2, 2), name="deconv1")(x)
        return jnp.tanh(x)


class Discriminator(nn.Module):
    """image [+ one-hot label planes] -> 2 stride-2 convs with leaky ReLU -> one logit."""

    base: int = 32
    num_classes: int = 0

    @nn.compact
    def __call__(self, x, labels=None):
        if self.num_classes:
            planes = jax.nn.one_hot(labels, self.num_classes)[:, None, None, :]
            x = jnp.concatenate([x, jnp.broadcast_to(planes, (*x.shape[:3], self.num_classes))], -1)
        x = nn.leaky_relu(nn.Conv(self.base, (4, 4), strides=2, name="conv0")(x), 0.2)
        x = nn.leaky_relu(nn.Conv(2 * self.base, (4, 4), strides=2, name="conv1")(x), 0.2)
        return nn.Dense(1, name="logit")(x.reshape(x.shape[0], -1))[:, 0]


class DCGAN(nn.Module):
    """A generator and a discriminator in one module (see the module docstring).

    Attributes:
      num_classes: classes of the data (used when `conditional`).
      image_shape: (H, W, C) with H and W divisible by 4.
      latent_dim: size of z ~ N(0, I).
      base: channels of the first conv (the generator mirrors the discriminator).
      conditional: condition both networks on the class label (a cGAN).
    """

    num_classes: int
    image_shape: tuple[int, int, int] = (28, 28, 1)
    latent_dim: int = 64
    base: int = 32
    conditional: bool = False

    def setup(self):
        shape = tuple(int(d) for d in self.image_shape)
        if len(shape) != 3 or shape[0] % 4 or shape[1] % 4:
            raise ValueError(
                f"DCGAN needs image_shape (H, W, C) with H and W divisible by 4; got {shape}."
            )
        k = self.num_classes if self.conditional else 0
        self.generator = Generator(shape, self.base, k)
        self.discriminator = Discriminator(self.base, k)

    def generate(self, z, labels=None, train: bool = False):
        return self.generator(z, labels, train=train)

    def discriminate(self, x, labels=None):
        return self.discriminator(x, labels)

    def __call__(self, z, labels=None, train: bool = False):  # for init: both networks
        return self.discriminate(self.generate(z, labels, train), labels)
