"""Convolutional networks: LeNet-5 and a configurable conv stack for 1-D or 2-D inputs."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from dl import kernels as kernels_lib
from dl.models.layers import activation, batch_norm, pool, spatial_dims


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling by default.

    conv 6@5x5 (same) -> pool -> conv 16@5x5 (valid) -> pool -> dense 120 -> 84 -> classes.
    Needs images of at least 16x16 (28x28 MNIST, 32x32 shapes). `kernels`: "xla" (plain
    JAX), "cpu" or "auto" (`dl.kernels`), for the convolutions and pooling.
    """

    num_classes: int
    activation: str = "relu"
    pool: str = "max"
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.ndim != 4 or min(x.shape[1:3]) < 16:
            raise ValueError(
                f"lenet5 needs images (B, H, W, C) with H, W >= 16; got shape {tuple(x.shape)}. "
                "Use model 'cnn' for small or 1-D inputs."
            )
        act = activation(self.activation)
        conv = kernels_lib.conv(self.kernels)
        x = act(conv(6, (5, 5), padding="SAME", name="conv0")(x))
        x = pool(x, self.pool, 2, self.kernels)
        x = act(conv(16, (5, 5), padding="VALID", name="conv1")(x))
        x = pool(x, self.pool, 2, self.kernels)
        x = x.reshape((x.shape[0], -1))
        x = act(nn.Dense(120, name="dense0")(x))
        x = act(nn.Dense(84, name="dense1")(x))
        return nn.Dense(self.num_classes, name="head")(x)


class CNN(nn.Module):
    """A configurable conv stack for signals (B, L, C) or images (B, H, W, C).

    Each block: `convs_per_block` x [conv k (same padding, stride `strides` on the first
    conv), BatchNorm?, activation], then pooling. Then flatten (or global average pool),
    optional dropout, Dense hidden layers and a linear head.

    Attributes:
      num_classes: output size.
      channels: channels of each block.
      kernel_size: conv kernel side.
      first_kernel_size: kernel side of the very first conv (default `kernel_size`);
        large first-layer filters (7 for images) show their structure (`dl.analysis`).
      strides: stride of the first conv of each block.
      convs_per_block: convolutions per block (2 gives a VGG-style stack).
      pool: "max", "avg" or "none" after each block.
      batch_norm: BatchNorm after every conv.
      dropout: rate before each Dense layer.
      dense: hidden Dense widths of the head.
      global_pool: average over space instead of flattening.
      activation: activation name.
      kernels: "xla" (plain JAX), "cpu" or "auto": the convolutions' and pooling's
        formulation (`dl.kernels`).
      axis_name: the pmap axis BatchNorm averages its statistics over (None: none).
    """

    num_classes: int
    channels: Sequence[int] = (32, 64)
    kernel_size: int = 3
    first_kernel_size: int | None = None
    strides: int = 1
    convs_per_block: int = 1
    pool: str = "max"
    batch_norm: bool = False
    dropout: float = 0.0
    dense: Sequence[int] = (128,)
    global_pool: bool = False
    activation: str = "relu"
    kernels: str = "xla"
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        nd = spatial_dims(x, "cnn")
        act = activation(self.activation)
        conv = kernels_lib.conv(self.kernels)
        for b, ch in enumerate(self.channels):
            for j in range(self.convs_per_block):
                stride = (self.strides if j == 0 else 1,) * nd
                k = self.first_kernel_size if b == j == 0 and self.first_kernel_size else None
                x = conv(
                    ch,
                    (k or self.kernel_size,) * nd,
                    strides=stride,
                    padding="SAME",
                    use_bias=not self.batch_norm,
                    name=f"conv{b}_{j}",
                )(x)
                if self.batch_norm:
                    x = batch_norm(train, self.axis_name)(x)
                x = act(x)
            if min(x.shape[1:-1]) >= 2:
                x = pool(x, self.pool, 2, self.kernels)
            # Each block's output, for `dl.analysis.activations` (a no-op unless the
            # "intermediates" collection is mutable).
            self.sow("intermediates", f"block{b}", x)
        x = x.mean(axis=tuple(range(1, nd + 1))) if self.global_pool else x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.dense):
            if self.dropout > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x = act(nn.Dense(width, name=f"dense{i}")(x))
            self.sow("intermediates", f"hidden{i}", x)
        if self.dropout > 0:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head")(x)
