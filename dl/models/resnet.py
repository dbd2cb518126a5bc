"""A small CIFAR-style ResNet (He et al. 2016, section 4.2): 6n+2 layers, 3 stages."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn

from dl import kernels as kernels_lib
from dl.models.layers import batch_norm as _batch_norm
from dl.models.layers import spatial_dims


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity (or 1x1 projection) shortcut."""

    channels: int
    strides: int = 1
    kernels: str = "xla"
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        nd = x.ndim - 2
        Conv = kernels_lib.conv(self.kernels)  # noqa: N806  (a layer class)
        batch_norm = functools.partial(_batch_norm, axis_name=self.axis_name)
        k, s = (3,) * nd, (self.strides,) * nd
        y = Conv(self.channels, k, strides=s, padding="SAME", use_bias=False)(x)
        y = nn.relu(batch_norm(train)(y))
        y = Conv(self.channels, k, padding="SAME", use_bias=False)(y)
        # Zero-init the last BN scale so every block starts as the identity (Goyal et al. 2017).
        y = batch_norm(train, scale_init=nn.initializers.zeros)(y)
        if x.shape != y.shape:
            x = Conv(self.channels, (1,) * nd, strides=s, use_bias=False, name="proj")(x)
            x = batch_norm(train)(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """CIFAR-style ResNet: stem conv, stages of BasicBlocks, global average pool, Dense.

    Attributes:
      num_classes: output size.
      blocks_per_stage: (3, 3, 3) is ResNet-20; (1, 1, 1) is ResNet-8.
      width: channels of the first stage; doubled at each later stage (stride 2).
      kernels: "xla" (plain JAX), "cpu" or "auto": the convolutions' formulation.
      axis_name: the pmap axis BatchNorm averages its statistics over (None: none).
    """

    num_classes: int
    blocks_per_stage: Sequence[int] = (3, 3, 3)
    width: int = 16
    kernels: str = "xla"
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        nd = spatial_dims(x, "resnet")
        Conv = kernels_lib.conv(self.kernels)  # noqa: N806  (a layer class)
        batch_norm = functools.partial(_batch_norm, axis_name=self.axis_name)
        x = Conv(self.width, (3,) * nd, padding="SAME", use_bias=False, name="stem")(x)
        x = nn.relu(batch_norm(train)(x))
        for stage, n in enumerate(self.blocks_per_stage):
            for b in range(n):
                strides = 2 if stage > 0 and b == 0 else 1
                x = BasicBlock(
                    self.width * 2**stage,
                    strides,
                    self.kernels,
                    self.axis_name,
                    name=f"stage{stage}_block{b}",
                )(x, train)
        x = x.mean(axis=tuple(range(1, nd + 1)))
        return nn.Dense(self.num_classes, name="head")(x)
