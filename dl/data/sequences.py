"""Sequence datasets: image rows as time steps, the adding problem, a character corpus.

All of them ship with the install or are generated; none touches the network.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import numpy as np

from dl._errors import check_fraction, check_positive_int
from dl.data.datasets import Dataset, load_mnist5k


def load_mnist5k_rows(*, test_size: float = 0.2, seed: int = 0) -> Dataset:
    """mnist5k read row by row: 28 time steps of 28 pixels, shape (N, 28, 28)."""
    ds = load_mnist5k(test_size=test_size, seed=seed)
    return dataclasses.replace(
        ds,
        name="mnist5k_rows",
        x_train=ds.x_train.reshape(-1, 28, 28),
        x_test=ds.x_test.reshape(-1, 28, 28),
        input_shape=(28, 28),
        description="mnist5k as sequences: 28 rows of 28 pixels, top to bottom.",
    )


def adding_problem(n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015's variant).

    Each sequence has `length` steps of two features: a value drawn from U(0, 1) and a
    marker that is 1 at exactly two steps, one in each half. The target is the sum of
    the two marked values. Predicting the mean (1.0) gives MSE 1/6; solving it needs
    memory across the whole sequence.

    Returns:
      x (n, length, 2) float32 and y (n, 1) float32.
    """
    values = rng.uniform(0.0, 1.0, size=(n, length)).astype(np.float32)
    half = length // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    marker = np.zeros((n, length), np.float32)
    marker[np.arange(n), first] = 1.0
    marker[np.arange(n), second] = 1.0
    y = (values[np.arange(n), first] + values[np.arange(n), second])[:, None]
    return np.stack([values, marker], axis=-1), y.astype(np.float32)


def load_adding(
    *, length: int = 100, num_train: int = 10000, num_test: int = 1000, seed: int = 0
) -> Dataset:
    """The adding problem at a chosen sequence length (a regression task)."""
    length = check_positive_int("length", length)
    if length < 2:
        raise ValueError(f"length must be >= 2 (one marker per half); got {length}.")
    num_train = check_positive_int("num_train", num_train)
    num_test = check_positive_int("num_test", num_test)
    rng = np.random.default_rng(seed)
    x_tr, y_tr = adding_problem(num_train, length, rng)
    x_te, y_te = adding_problem(num_test, length, rng)
    return Dataset(
        name="adding",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        num_classes=1,
        input_shape=(length, 2),
        class_names=("sum",),
        description=f"the adding problem, length {length}, generated (seed {seed}).",
        task="regression",
    )


# Modules of the Python standard library whose source makes up the "pytext" corpus:
# English docstrings and comments plus code, present in every CPython >= 3.11.
CORPUS_MODULES = (
    "argparse",
    "textwrap",
    "dataclasses",
    "functools",
    "fractions",
    "statistics",
    "difflib",
    "calendar",
    "shutil",
    "tempfile",
    "heapq",
    "bisect",
    "string",
    "random",
    "contextlib",
    "abc",
    "copy",
    "enum",
    "glob",
    "fnmatch",
    "shlex",
    "pprint",
    "queue",
    "sched",
    "getopt",
    "gettext",
    "locale",
    "numbers",
    "operator",
    "weakref",
)


def read_corpus(modules=CORPUS_MODULES, max_chars: int | None = None) -> str:
    """The source text of standard-library modules, concatenated in the given order.

    The text depends on the Python version (the standard library changes a little from
    release to release); results record the version.
    """
    parts = []
    for name in modules:
        path = Path(importlib.import_module(name).__file__)
        parts.append(path.read_text(encoding="utf-8"))
    text = "\n".join(parts)
    # Keep ASCII: a handful of non-ASCII characters would only bloat the vocabulary.
    text = text.encode("ascii", "replace").decode("ascii")
    return text[:max_chars] if max_chars else text


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
    """Characters <-> integer ids over a fixed vocabulary (unknown characters -> "?")."""

    vocab: str

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text) | {"?"})))

    def __post_init__(self):
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.vocab)})

    @property
    def size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        unk = self._index["?"]
        return np.array([self._index.get(c, unk) for c in text], np.int32)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in np.asarray(ids).reshape(-1))


def load_pytext(
    *, seq_len: int = 128, val_fraction: float = 0.1, max_chars: int | None = None
) -> Dataset:
    """Character-level language modelling on Python standard-library sources.

    The text is split once, contiguously: the first (1 - val_fraction) for training,
    the rest for validation (reported as the test set), so no window straddles the two.
    Each split is cut into non-overlapping windows of seq_len + 1 characters; x is a
    window's first seq_len ids and y the next character at every position.
    `class_names` is the vocabulary; `tokenizer(ds)` rebuilds the `CharTokenizer`.
    """
    seq_len = check_positive_int("seq_len", seq_len)
    val_fraction = check_fraction("val_fraction", val_fraction, allow_zero=False)
    text = read_corpus(max_chars=max_chars)
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    cut = int(len(ids) * (1 - val_fraction))

    def windows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = (len(a) - 1) // seq_len
        if n < 1:
            raise ValueError(
                f"The corpus split of {len(a)} characters is too short for seq_len={seq_len}."
            )
        x = a[: n * seq_len].reshape(n, seq_len)
        y = a[1 : n * seq_len + 1].reshape(n, seq_len)
        return x, y

    x_tr, y_tr = windows(ids[:cut])
    x_te, y_te = windows(ids[cut:])
    return Dataset(
        name="pytext",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        num_classes=tok.size,
        input_shape=(seq_len,),
        class_names=tuple(tok.vocab),
        description=(
            f"Python standard-library sources ({len(CORPUS_MODULES)} modules, {len(text)} "
            f"characters), character-level, {seq_len}-character windows"
        ),
        task="language_model",
    )


def tokenizer(ds: Dataset) -> CharTokenizer:
    """The `CharTokenizer` of a character-level dataset such as "pytext"."""
    return CharTokenizer("".join(ds.class_names))


DATASETS = {
    "mnist5k_rows": (load_mnist5k_rows, "mnist5k as 28 time steps of 28 pixels (rows)"),
    "adding": (load_adding, "the adding problem (regression), length 100 by default, generated"),
    "pytext": (load_pytext, "character-level text: Python stdlib sources, 128-char windows"),
}
