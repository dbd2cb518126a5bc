"""The benchmark models written idiomatically in PyTorch, layer for layer the same as
the `dl` zoo models they are timed against (sizes, activations, pooling, pre-LN blocks).
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, d_in: int, widths: tuple[int, ...], classes: int):
        super().__init__()
        dims = (d_in, *widths)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))
        self.head = nn.Linear(dims[-1], classes)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.head(x)


class LeNet5(nn.Module):
    """As `dl.models.LeNet5`: conv 6@5x5 same, pool, conv 16@5x5 valid, pool, 120, 84."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv0 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv1 = nn.Conv2d(6, 16, 5)
        self.dense0 = nn.Linear(16 * 5 * 5, 120)
        self.dense1 = nn.Linear(120, 84)
        self.head = nn.Linear(84, classes)

    def forward(self, x):  # (B, 1, 28, 28): PyTorch's own NCHW layout
        x = F.max_pool2d(F.relu(self.conv0(x)), 2)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.dense0(x.flatten(1)))
        return self.head(F.relu(self.dense1(x)))


class CNN(nn.Module):
    """As `dl.models.CNN(channels, dense)`: [conv 3x3 same, ReLU, max-pool 2] per block."""

    def __init__(self, in_ch: int, channels: tuple[int, ...], side: int, dense: int, classes: int):
        super().__init__()
        chans = (in_ch, *channels)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in pairwise(chans))
        flat = channels[-1] * (side // 2 ** len(channels)) ** 2
        self.dense = nn.Linear(flat, dense)
        self.head = nn.Linear(dense, classes)

    def forward(self, x):
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return self.head(F.relu(self.dense(x.flatten(1))))


class LSTMClassifier(nn.Module):
    """As `dl.models.RecurrentClassifier(cell="lstm", head="last")`."""

    def __init__(self, features: int, hidden: int, classes: int):
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class DecoderLM(nn.Module):
    """As `dl.models.DecoderLM`: token + learned position embeddings, pre-LN blocks with
    GELU MLPs and a causal mask, final LayerNorm, linear head."""

    def __init__(self, vocab: int, d_model: int, layers: int, heads: int, mlp: int, max_len: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(max_len, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, heads, mlp, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens):
        t = tokens.shape[1]
        x = self.embed(tokens) + self.pos[:t]
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        x = self.blocks(x, mask=mask, is_causal=True)
        return self.head(self.ln_f(x))


def train_step_fn(model: nn.Module, lr: float = 1e-3):
    """The idiomatic eager step: zero_grad, forward, cross-entropy, backward, Adam."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss

    return step
