"""Recurrent networks over `flax.linen.RNN`: SimpleRNN (Elman), LSTM and GRU.

Input is a batch of sequences (B, T, F), channels last. An image batch (B, H, W, C) is
read row by row: T = H steps of F = W*C features (the classic "sequential MNIST" view).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

CELLS = {
    "simple": nn.SimpleCell,  # h' = tanh(W x + U h + b)
    "lstm": nn.OptimizedLSTMCell,  # Hochreiter & Schmidhuber 1997, fused gate matmuls
    "gru": nn.GRUCell,  # Cho et al. 2014
}
HEADS = ("last", "mean", "per_step")


def as_sequence(x: jnp.ndarray, model: str) -> jnp.ndarray:
    """(B, T, F) as is; (B, H, W, C) images as H steps of W*C features."""
    if x.ndim == 4:
        return x.reshape(x.shape[0], x.shape[1], -1)
    if x.ndim != 3:
        raise ValueError(
            f"{model} expects sequences (B, T, F) or images (B, H, W, C); got shape "
            f"{tuple(x.shape)}. Add a feature axis with x[..., None]."
        )
    return x


class RecurrentClassifier(nn.Module):
    """Stacked, optionally bidirectional RNN with a sequence or per-step head.

    Attributes:
      num_classes: outputs per example (or per step with head="per_step"); 1 for a
        scalar regression such as the adding problem.
      cell: "simple", "lstm" or "gru".
      hidden: units per layer and direction.
      num_layers: stacked layers; each reads the whole output sequence of the previous.
      bidirectional: run a backward RNN too and concatenate the two.
      head: "last" (the final state; for a bidirectional net the forward state at the
        last step and the backward state at the first), "mean" (mean over time) or
        "per_step" (a prediction at every step, output (B, T, num_classes)).
      dropout: dropout between layers and before the head.
    """

    num_classes: int
    cell: str = "lstm"
    hidden: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    head: str = "last"
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}; got {self.cell!r}.")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}; got {self.head!r}.")
        x = as_sequence(x, type(self).__name__)
        cell = CELLS[self.cell]
        for i in range(self.num_layers):
            fwd = nn.RNN(cell(self.hidden), name=f"rnn{i}")
            if self.bidirectional:
                bwd = nn.RNN(cell(self.hidden), reverse=True, keep_order=True, name=f"rnn{i}_bwd")
                x = nn.Bidirectional(fwd, bwd, name=f"bi{i}")(x)
            else:
                x = fwd(x)
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        if self.head == "last":
            if self.bidirectional:
                h = self.hidden
                x = jnp.concatenate([x[:, -1, :h], x[:, 0, h:]], axis=-1)
            else:
                x = x[:, -1]
        elif self.head == "mean":
            x = x.mean(axis=1)
        return nn.Dense(self.num_classes, name="head")(x)


def SimpleRNN(num_classes: int, **kw) -> RecurrentClassifier:  # noqa: N802 (a constructor)
    return RecurrentClassifier(num_classes=num_classes, cell="simple", **kw)


def LSTM(num_classes: int, **kw) -> RecurrentClassifier:  # noqa: N802
    return RecurrentClassifier(num_classes=num_classes, cell="lstm", **kw)


def GRU(num_classes: int, **kw) -> RecurrentClassifier:  # noqa: N802
    return RecurrentClassifier(num_classes=num_classes, cell="gru", **kw)
