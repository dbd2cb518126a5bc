"""Datasets (embedded, no network), device-resident batching and on-device augmentation."""

from dl.data.augment import AUGMENTATIONS, random_flip_lr, random_shift
from dl.data.batching import batches, epoch_indices, num_batches
from dl.data.datasets import (
    DATASETS,
    SHAPE_CLASSES,
    Dataset,
    load,
    load_digits,
    load_mnist1d,
    load_mnist5k,
    load_shapes,
    validation_split,
)
from dl.data.graphs import DATASETS as _GRAPH_DATASETS
from dl.data.graphs import encode_dense, load_cycles_trees
from dl.data.real import (
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_kmnist,
    load_mnist,
    load_npz,
    read_idx,
)
from dl.data.sequences import DATASETS as _SEQUENCE_DATASETS
from dl.data.sequences import (
    CharTokenizer,
    load_adding,
    load_mnist5k_rows,
    load_pytext,
    tokenizer,
)
from dl.data.stream import array_source
from dl.data.validate import check_arrays

DATASETS.update(_SEQUENCE_DATASETS)
DATASETS.update(_GRAPH_DATASETS)
# Real datasets read from their standard files (download=True fetches them; not embedded).
DATASETS.update(
    {
        "mnist": (load_mnist, "MNIST 60000/10000, 28x28x1, IDX files (download=True fetches)"),
        "fashion_mnist": (load_fashion_mnist, "Fashion-MNIST 60000/10000, IDX files"),
        "kmnist": (load_kmnist, "Kuzushiji-MNIST 60000/10000, IDX files"),
        "cifar10": (load_cifar10, "CIFAR-10 50000/10000, 32x32x3, python batches (safe reader)"),
        "cifar100": (load_cifar100, "CIFAR-100 fine labels, 32x32x3, python batches"),
    }
)

__all__ = [
    "AUGMENTATIONS",
    "CharTokenizer",
    "DATASETS",
    "SHAPE_CLASSES",
    "Dataset",
    "array_source",
    "batches",
    "check_arrays",
    "encode_dense",
    "epoch_indices",
    "load",
    "load_adding",
    "load_cifar10",
    "load_cifar100",
    "load_cycles_trees",
    "load_fashion_mnist",
    "load_kmnist",
    "load_mnist",
    "load_npz",
    "read_idx",
    "load_mnist5k_rows",
    "load_pytext",
    "tokenizer",
    "load_digits",
    "load_mnist1d",
    "load_mnist5k",
    "load_shapes",
    "num_batches",
    "random_flip_lr",
    "random_shift",
    "validation_split",
]
