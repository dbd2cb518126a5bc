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
from dl.data.validate import check_arrays

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "SHAPE_CLASSES",
    "Dataset",
    "batches",
    "check_arrays",
    "epoch_indices",
    "load",
    "load_digits",
    "load_mnist1d",
    "load_mnist5k",
    "load_shapes",
    "num_batches",
    "random_flip_lr",
    "random_shift",
    "validation_split",
]
