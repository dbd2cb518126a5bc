"""The model zoo: Flax Linen modules called as `model.apply(variables, x, train=...)`."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

import flax.linen as nn

from dl import kernels as kernels_lib
from dl._errors import unknown_name
from dl.models.autoencoder import Autoencoder, corrupt
from dl.models.capsnet import CapsNet
from dl.models.cnn import CNN, LeNet5
from dl.models.gan import DCGAN
from dl.models.gnn import GraphClassifier
from dl.models.layers import ACTIVATIONS
from dl.models.mlp import MLP
from dl.models.recurrent import GRU, LSTM, RecurrentClassifier, SimpleRNN
from dl.models.resnet import BasicBlock, ResNet
from dl.models.transformer import DecoderLM, TransformerClassifier, ViT, generate


def _linear(num_classes: int, **kw) -> MLP:
    return MLP(num_classes=num_classes, widths=(), **kw)


def _dae(**kw) -> Autoencoder:
    kw.setdefault("noise", "gaussian")  # a default, unlike registry-fixed fields
    return Autoencoder(**kw)


_dae.module = Autoencoder


# name -> (constructor, one-line description). A plain dict: lookup, not a framework.
MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "linear": (_linear, "multinomial logistic regression: one Dense layer on the flat input"),
    "mlp": (MLP, "multi-layer perceptron: widths, activation, dropout, batch norm"),
    "lenet5": (LeNet5, "LeNet-5 (LeCun 1998) for images >= 16x16"),
    "cnn": (CNN, "configurable conv stack, 1-D or 2-D, optional batch norm (VGG-style)"),
    "resnet": (ResNet, "CIFAR-style ResNet-20 (He 2016); blocks_per_stage sets the depth"),
    "capsnet": (
        CapsNet,
        "capsule network (Sabour 2017): routing by agreement, margin loss, decoder",
    ),
    "rnn": (
        functools.partial(RecurrentClassifier, cell="simple"),
        "SimpleRNN (Elman) over sequences (B, T, F) or image rows; stacked, bidirectional",
    ),
    "lstm": (functools.partial(RecurrentClassifier, cell="lstm"), "LSTM, same options as rnn"),
    "gru": (functools.partial(RecurrentClassifier, cell="gru"), "GRU, same options as rnn"),
    "transformer": (
        TransformerClassifier,
        "pre-LN Transformer encoder classifier; sinusoidal or learned positions",
    ),
    "vit": (ViT, "Vision Transformer: patch embedding, class token, pre-LN blocks"),
    "lm": (DecoderLM, "decoder-only causal language model over token ids, with generate()"),
    "gcn": (
        functools.partial(GraphClassifier, layer="gcn"),
        "graph classifier: GCN layers (Kipf & Welling 2017), masked mean readout",
    ),
    "gat": (
        functools.partial(GraphClassifier, layer="gat"),
        "graph classifier: graph attention layers (Velickovic et al. 2018)",
    ),
    "ae": (Autoencoder, "autoencoder, MLP halves; Bernoulli logits of the input"),
    "conv_ae": (
        functools.partial(Autoencoder, kind="conv"),
        "convolutional autoencoder: stride-2 convs, transposed convs",
    ),
    "dae": (
        _dae,
        "denoising autoencoder (Vincent 2008): noise='gaussian' or 'masking' while training",
    ),
    "vae": (
        functools.partial(Autoencoder, variational=True),
        "variational autoencoder (Kingma & Welling 2014): ELBO = reconstruction + KL",
    ),
    "dcgan": (
        functools.partial(DCGAN, conditional=False),
        "DCGAN (Radford 2016): generator + discriminator, non-saturating loss (dl.gan)",
    ),
    "cgan": (
        functools.partial(DCGAN, conditional=True),
        "conditional DCGAN (Mirza & Osindero 2014): both networks see the class label",
    ),
}
# Models that read integer token ids rather than numbers.
TOKEN_MODELS = ("lm",)
# Models trained to reconstruct their input (no classes; `dl.generative` has their tools).
AUTOENCODERS = ("ae", "conv_ae", "dae", "vae")
# Models that train with another loss than their dataset's (a name in dl.losses.LOSSES).
MODEL_LOSSES = {"capsnet": "margin"}
# Adversarial pairs, trained by `dl.gan` with one optimizer per network.
GAN_MODELS = ("dcgan", "cgan")


def get_model(
    name: str,
    num_classes: int,
    *,
    kernels: str = "xla",
    axis_name: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build a model by name.

    Args:
      name: one of `MODELS`.
      num_classes: size of the output layer (ignored by the AUTOENCODERS, whose output
        has the input's shape).
      kernels: "xla" (plain JAX: every transformation works), "cpu" (dl's CPU
        formulations, reverse mode only) or "auto" ("cpu" on the CPU backend); see
        `dl.kernels`. Given to the models that have convolutions, pooling or
        attention; "auto" is resolved here, so the model records what it runs.
      axis_name: the pmap axis that BatchNorm averages over (models with BatchNorm).
      **kwargs: the module's fields (e.g. `widths=(128,)` for "mlp").

    Returns:
      An unbound `flax.linen.Module`.

    >>> get_model("mlp", 10, widths=(32,)).widths
    (32,)
    """
    if name not in MODELS:
        raise unknown_name("model", name, MODELS, "List them with `dl models`.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}.")
    ctor = MODELS[name][0]
    cls = MLP if ctor is _linear else getattr(ctor, "module", getattr(ctor, "func", ctor))
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name", "num_classes"}
    if "kernels" in fields:
        kwargs["kernels"] = kernels_lib.resolve(kernels)
    else:
        kernels_lib.resolve(kernels)  # an unknown name is an error for every model
    if "axis_name" in fields:
        kwargs["axis_name"] = axis_name
    fields -= set(getattr(ctor, "keywords", {}))  # fixed by the registry (e.g. cell)
    if ctor is _linear:
        fields -= {"widths"}
    unknown = set(kwargs) - fields
    if unknown:
        raise ValueError(
            f"Unknown option(s) {sorted(unknown)} for model {name!r}. Valid: {sorted(fields)}."
        )
    if "activation" in kwargs and kwargs["activation"] not in ACTIVATIONS:
        raise unknown_name("activation", kwargs["activation"], ACTIVATIONS)
    if "dropout" in kwargs and not 0 <= kwargs["dropout"] < 1:
        raise ValueError(f"dropout must be in [0, 1); got {kwargs['dropout']!r}.")
    if name in AUTOENCODERS:
        return ctor(**kwargs)
    return ctor(num_classes=num_classes, **kwargs)


__all__ = [
    "AUTOENCODERS",
    "Autoencoder",
    "CNN",
    "CapsNet",
    "DCGAN",
    "GAN_MODELS",
    "GRU",
    "GraphClassifier",
    "LSTM",
    "MLP",
    "MODELS",
    "MODEL_LOSSES",
    "TOKEN_MODELS",
    "BasicBlock",
    "DecoderLM",
    "LeNet5",
    "RecurrentClassifier",
    "ResNet",
    "SimpleRNN",
    "TransformerClassifier",
    "ViT",
    "corrupt",
    "generate",
    "get_model",
]


MODE_ARGS = ("train", "training", "deterministic")


@functools.cache
def mode_arg(cls: type) -> str | None:
    """Which of `MODE_ARGS` a module class's `__call__` takes (the first found), "train"
    when it takes **kwargs, None when it takes none of them."""
    try:
        params = inspect.signature(cls.__call__).parameters
    except (TypeError, ValueError):
        return None
    for name in MODE_ARGS:
        if name in params:
            return name
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return "train"
    return None


def mode_kwargs(model, train: bool) -> dict[str, bool]:
    """The keyword that tells `model` whether it is training, as its `__call__` spells
    it: {"train": train}, {"training": train}, {"deterministic": not train}, or {} for a
    module that takes none of them (Flax's tutorial CNN, `__call__(self, x)`), which dl
    then calls with the inputs alone in training and in evaluation alike."""
    name = mode_arg(type(model))
    if name is None:
        return {}
    return {name: (not train) if name == "deterministic" else train}


def adapt(model):
    """`model` as dl's steps call it: a Flax NNX module behind `FromNNX` (Linen's
    init/apply over its split state), a Linen module as it is."""
    from dl.models.nnx_bridge import FromNNX, is_nnx

    return FromNNX(model) if is_nnx(model) else model
