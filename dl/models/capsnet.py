"""Capsule network (Sabour, Frosst and Hinton 2017): capsules and routing by agreement.

A capsule is a vector of neurons: its length is the probability that an entity is
present, its direction the entity's properties (pose, thickness, skew). Primary
capsules come from a convolution; each predicts every class capsule's vector through
its own learned matrix, and routing by agreement sends it to the classes whose
vectors agree with its prediction.

The network returns the class capsules' lengths (B, K), in [0, 1); train it with
`loss="margin"` (`dl.losses.margin`), whose prediction is the longest capsule. With
a decoder, it also sows the reconstruction error of the input into the "losses"
collection, which the train step adds to the objective like any other sown loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dl import kernels as kernels_lib

# The largest float32 below 1: a capsule's length |s|^2 / (1 + |s|^2) rounds to 1.0 in
# float32 once |s|^2 > 2^24, so lengths are capped here to stay in [0, 1).
_BELOW_ONE = float(np.nextafter(np.float32(1), np.float32(0)))
_EPS = 1e-7


def squash(s: jax.Array, axis: int = -1) -> jax.Array:
    """The capsule non-linearity: `s` scaled to length |s|^2 / (1 + |s|^2), so short
    vectors shrink to almost nothing and long ones to just below 1; direction kept."""
    n2 = jnp.sum(jnp.square(s), axis=axis, keepdims=True)
    return s * (n2 / (1.0 + n2)) * jax.lax.rsqrt(n2 + _EPS)


def capsule_lengths(v: jax.Array) -> jax.Array:
    """The lengths of capsules v (..., D), in [0, 1) (`squash`'s output is shorter than
    1; the cap only undoes float32 rounding)."""
    return jnp.minimum(jnp.sqrt(jnp.sum(jnp.square(v), axis=-1) + _EPS), _BELOW_ONE)


def route(u_hat: jax.Array, iterations: int) -> tuple[jax.Array, jax.Array]:
    """Routing by agreement (the paper's Procedure 1).

    Args:
      u_hat: predictions (B, I, J, D) of each of I child capsules for each of J parent
        capsules.
      iterations: routing iterations (>= 1; the paper uses 3).

    Returns:
      (v, c): the parent capsules (B, J, D) and the coupling coefficients (B, I, J) of
      the last iteration, a softmax over the parents of each child (each row sums to 1).
    """
    # The first iteration's couplings are uniform (softmax of zero logits), written out:
    # XLA would otherwise spend seconds constant-folding the softmax of a constant.
    parents = u_hat.shape[2]
    c = jnp.full(u_hat.shape[:3], 1.0 / parents, u_hat.dtype)
    v = squash(jnp.sum(u_hat, axis=1) / parents)
    logits = None
    for _ in range(iterations - 1):
        agreement = jnp.einsum("bijd,bjd->bij", u_hat, v)  # prediction . output
        logits = agreement if logits is None else logits + agreement
        c = jax.nn.softmax(logits, axis=2)
        v = squash(jnp.einsum("bij,bijd->bjd", c, u_hat))
    return v, c


class CapsNet(nn.Module):
    """Capsule network for images (B, H, W, C) with H, W >= 2 * kernel_size - 1.

        conv (`conv_channels`, k x k, ReLU) -> primary capsules (a k x k stride-2 conv of
        `primary_types` x `primary_dim` channels, squashed per capsule) -> class capsules
        (`class_dim`-D, one per class, by `routing_iterations` of routing by agreement) ->
        their lengths. The paper's network has conv_channels=256 and primary_types=32
        (8.2M parameters; on 2 CPU cores about 10x slower per step); the defaults here keep
        its structure at a size a CPU trains in minutes (12 s per mnist5k epoch on 2 cores;
    98.1% after 15 epochs, the recipe's).

        With `decoder` widths (the paper's (512, 1024)), the class capsule of the predicted
        class (the longest; the others masked to zero) is decoded by a sigmoid MLP into an
        image, and `reconstruction_weight` x its summed squared error to the input is sown
        into the "losses" collection. The paper masks by the true label while training; a
        dl model sees only its input, so here the longest capsule is decoded in training
        too, which differs only where the prediction is wrong.

        Sown into "intermediates" (for `mutable=["intermediates"]`): "routing" (coupling
        coefficients, (B, I, K)), "poses" (class capsules, (B, K, class_dim)) and
        "reconstruction" (the decoded images).
    """

    num_classes: int
    conv_channels: int = 64
    primary_types: int = 16
    primary_dim: int = 8
    class_dim: int = 16
    kernel_size: int = 9
    routing_iterations: int = 3
    decoder: Sequence[int] = (512, 1024)
    reconstruction_weight: float = 0.0005
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        k = self.kernel_size
        if x.ndim != 4 or min(x.shape[1:3]) < 2 * k - 1:
            raise ValueError(
                f"capsnet needs images (B, H, W, C) with H, W >= {2 * k - 1} (two {k}x{k} "
                f"convolutions, the second with stride 2); got shape {tuple(x.shape)}. "
                "Use a smaller kernel_size for small images."
            )
        if self.routing_iterations < 1:
            raise ValueError(f"routing_iterations must be >= 1; got {self.routing_iterations}.")
        conv = kernels_lib.conv(self.kernels)
        h = nn.relu(conv(self.conv_channels, (k, k), padding="VALID", name="conv")(x))
        p = conv(
            self.primary_types * self.primary_dim, (k, k), strides=2, padding="VALID",
            name="primary",
        )(h)  # fmt: skip
        u = squash(p.reshape(p.shape[0], -1, self.primary_dim))  # (B, I, D_in)
        # One matrix per (child, parent) pair: W[i, j] maps child i's 8-D vector to its
        # prediction of parent j's 16-D vector.
        w = self.param(
            "weights",
            nn.initializers.variance_scaling(1.0, "fan_in", "normal", (0, 3), 2, 1),
            (u.shape[1], self.num_classes, self.class_dim, self.primary_dim),
        )
        u_hat = jnp.einsum("ijed,bid->bije", w.astype(u.dtype), u)
        v, c = route(u_hat, self.routing_iterations)
        self.sow("intermediates", "routing", c)
        self.sow("intermediates", "poses", v)
        lengths = capsule_lengths(v)
        if self.decoder and self.reconstruction_weight > 0:
            mask = jax.nn.one_hot(jnp.argmax(lengths, axis=-1), self.num_classes, dtype=v.dtype)
            r = (v * mask[..., None]).reshape(v.shape[0], -1)
            for i, width in enumerate(self.decoder):
                r = nn.relu(nn.Dense(width, name=f"decoder{i}")(r))
            image = nn.sigmoid(nn.Dense(int(np.prod(x.shape[1:])), name="decoder_out")(r))
            image = image.reshape(x.shape)
            self.sow("intermediates", "reconstruction", image)
            err = jnp.sum(jnp.square(image - x).reshape(x.shape[0], -1), axis=1)
            self.sow("losses", "reconstruction", self.reconstruction_weight * err)
        return lengths
