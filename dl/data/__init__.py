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
from dl.data.sequences import DATASETS as _SEQUENCE_DATASETS
from dl.data.sequences import (
    CharTokenizer,
    load_adding,
    load_mnist5k_rows,
    load_pytext,
    tokenizer,
)
from dl.data.validate import check_arrays

DATASETS.update(_SEQUENCE_DATASETS)
DATASETS.update(_GRAPH_DATASETS)

__all__ = [
    "AUGMENTATIONS",
    "CharTokenizer",
    "DATASETS",
    "SHAPE_CLASSES",
    "Dataset",
    "batches",
    "check_arrays",
    "encode_dense",
    "epoch_indices",
    "load",
    "load_adding",
    "load_cycles_trees",
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
