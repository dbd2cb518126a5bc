"""Self-supervised pre-training: SimCLR (Chen et al. 2020) for any encoder.

Labels are costly; images are not. SimCLR trains an encoder on unlabelled images by
making two random views of each (on-device augmentation: shifts and masked pixels) and
teaching the network that views of the same image belong together and views of
different images do not (`dl.losses.nt_xent`, the normalised temperature-scaled
cross-entropy). It trains through the same step and loop as any model:

    ssl = SimCLR(encoder=get_model("cnn", 128, dense=(128,)))
    result = train(ssl, (x_unlabelled, np.zeros(len(x_unlabelled))), FitConfig(loss="nt_xent"))
    body = encoder_params(result.state.params)   # conv layers and dense0, not the head
    train(get_model("cnn", 10, dense=(128,)), (x_few, y_few), config, params=body)

The encoder's output layer ("head") serves as the first layer of SimCLR's projection
head and is dropped with it: what transfers is the encoder's last hidden layer and
everything below it, the representation SimCLR evaluates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dl.data.augment import random_shift
from dl.models.autoencoder import corrupt


def views(key: jax.Array, x: jax.Array, max_shift: int = 4, mask: float = 0.3) -> jax.Array:
    """One random view of each image: shifted by up to `max_shift` pixels (zero fill),
    then each pixel zeroed with probability `mask`."""
    k1, k2 = jax.random.split(key)
    return corrupt(k2, random_shift(k1, x, max_shift), "masking", mask)


class SimCLR(nn.Module):
    """SimCLR around `encoder` (a module mapping inputs to features (B, F), e.g. a dl
    classifier built with F outputs): two views per image from the "noise" random
    stream (fixed in evaluation, so evaluating twice gives the same loss), encoded,
    passed through ReLU and a linear projection. Returns the projections (B, 2,
    projection_dim), for `loss="nt_xent"`; the targets are ignored (pass zeros)."""

    encoder: nn.Module
    projection_dim: int = 64
    max_shift: int = 4
    mask: float = 0.3

    @nn.compact
    def __call__(self, x, train: bool = False):
        from dl.models import mode_kwargs

        keys = jax.random.split(self.make_rng("noise"))
        both = jnp.concatenate([views(k, x, self.max_shift, self.mask) for k in keys])
        h = self.encoder(both, **mode_kwargs(self.encoder, train))
        z = nn.Dense(self.projection_dim, name="projection")(nn.relu(h))
        return z.reshape(2, x.shape[0], -1).transpose(1, 0, 2)


def encoder_params(params: Mapping[str, Any], drop: tuple[str, ...] = ("head",)) -> dict:
    """The pre-trained encoder's parameters without its output layer (`drop`), to give a
    classifier of the same architecture as `train(..., params=...)`."""
    if "encoder" not in params:
        raise ValueError(
            f"params have no 'encoder' (top-level modules: {sorted(params)}); pass the "
            "parameters of a trained SimCLR model."
        )
    return {k: v for k, v in params["encoder"].items() if k not in drop}
