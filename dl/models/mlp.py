"""Multi-layer perceptron (and, with no hidden layers, multinomial logistic regression)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from dl.models.layers import activation, batch_norm

KERNEL_INITS = {
    "lecun_normal": nn.initializers.lecun_normal(),
    "he_normal": nn.initializers.he_normal(),
}


class MLP(nn.Module):
    """A stack of Dense layers on the flattened input, then a linear classifier.

    Attributes:
      num_classes: output size (logits).
      widths: hidden layer widths; () gives a linear model.
      activation: name from `dl.models.layers.ACTIVATIONS`.
      dropout: dropout rate after each hidden activation (train only).
      batch_norm: BatchNorm after each hidden Dense (before the activation).
      residual: add each hidden layer's input to its output where the widths match
        (x + act(Dense(x))), the MLP form of He et al. 2016's identity shortcut.
      kernel_init: the hidden and output kernels' initialiser, "lecun_normal" (Flax's
        default, variance 1/fan_in) or "he_normal" (variance 2/fan_in, He et al. 2015's
        choice for ReLU).
    """

    num_classes: int
    widths: Sequence[int] = (512, 256)
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    residual: bool = False
    kernel_init: str = "lecun_normal"
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = activation(self.activation)
        if self.kernel_init not in KERNEL_INITS:
            raise ValueError(
                f"MLP kernel_init must be one of {sorted(KERNEL_INITS)}; got {self.kernel_init!r}."
            )
        init = KERNEL_INITS[self.kernel_init]
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.widths):
            shortcut = x
            x = nn.Dense(width, kernel_init=init, name=f"dense{i}")(x)
            if self.batch_norm:
                x = batch_norm(train, self.axis_name)(x)
            x = act(x)
            if self.residual and shortcut.shape == x.shape:
                x = x + shortcut
            self.sow("intermediates", f"layer{i}", x)  # for dl.analysis.activations
            if self.dropout > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, kernel_init=init, name="head")(x)
