"""Host-side checks of (x, y) arrays before they reach a compiled step."""

from __future__ import annotations

import numpy as np


def check_arrays(
    x,
    y,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    name: str = "data",
    targets: str = "labels",
    label_shape: tuple[int, ...] = (),
    integer_inputs: bool = False,
    allow_unlabelled: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Check a labelled array pair and return it as numpy arrays.

    Checks: x is a non-empty numeric array; x and y have the same length; x has the
    per-example shape the model expects; x is finite; y holds integer labels in
    [0, num_classes) (or finite values). Each failure raises a ValueError that names the
    value received.

    Args:
      x: inputs (N, *input_shape).
      y: integer labels (N, *label_shape), or target values (N, ...) for regression.
      input_shape: expected per-example shape of x, or None to skip the check.
      num_classes: labels must lie in [0, num_classes); None skips the range check.
      name: what the arrays are called in error messages ("train", "test", ...).
      targets: "labels" (integer classes) or "values" (real-valued regression targets).
      label_shape: per-example shape of the labels: () for one label per example,
        (T,) for one per time step (sequence labelling, language models).
      integer_inputs: x holds integer token ids (kept as int32) rather than numbers.
      allow_unlabelled: accept the label -1 for unlabelled positions (e.g. the nodes
        without a label in semi-supervised node classification); at least one position
        must be labelled.

    Returns:
      (x, y) as numpy arrays (x float32 unless it was another float type, or int32 token
      ids; y int32 labels or float32 values).
    """
    try:
        x = np.asarray(x)
        y = np.asarray(y)
    except Exception as e:  # e.g. ragged lists
        raise ValueError(f"{name}: x and y must be array-like; could not convert ({e}).") from e
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"{name}: x must be numeric; got dtype {x.dtype}.")
    for arr, what in ((x, "x"), (y, "y")):
        if np.iscomplexobj(arr):
            raise ValueError(
                f"{name}: {what} holds complex numbers (dtype {arr.dtype}), which would be cast "
                "to real ones by dropping the imaginary part; pass .real, np.abs() or both as "
                "real features."
            )
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{name}: x is empty (shape {x.shape}); need at least one example.")
    if targets not in ("labels", "values"):
        raise ValueError(f"targets must be 'labels' or 'values'; got {targets!r}.")
    if y.ndim == 0:
        raise ValueError(f"{name}: y must be an array with one entry per example; got {y!r}.")
    if targets == "labels" and tuple(y.shape[1:]) != tuple(label_shape):
        want = (len(x), *label_shape)
        hint = (
            " Pass class indices, not one-hot vectors (use y.argmax(-1))."
            if not label_shape and y.ndim == 2
            else ""
        )
        raise ValueError(
            f"{name}: y must hold integer labels of shape {want}; got shape {y.shape}.{hint}"
            " For real-valued targets (regression, reconstruction) use targets='values'."
        )
    if len(y) != len(x):
        raise ValueError(f"{name}: x has {len(x)} examples but y has {len(y)} labels.")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        hint = ""
        if int(np.prod(x.shape[1:])) == int(np.prod(input_shape)):
            hint = f" Reshape it: x.reshape(-1, *{tuple(input_shape)})."
        raise ValueError(
            f"{name}: x has per-example shape {tuple(x.shape[1:])} but the model was built "
            f"for {tuple(input_shape)}.{hint}"
        )
    if integer_inputs:
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{name}: x must hold integer token ids; got dtype {x.dtype}.")
        if x.min() < 0:
            raise ValueError(f"{name}: token ids must be >= 0; got {int(x.min())}.")
        x = x.astype(np.int32)
    elif not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argwhere(bad.reshape(len(x), -1).any(1))[0, 0])
        raise ValueError(
            f"{name}: x contains {int(bad.sum())} NaN or Inf values (first in example "
            f"{first}). Clean or impute the inputs before training."
        )
    if targets == "values":
        y = y.astype(np.float32)
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{name}: y contains {int((~np.isfinite(y)).sum())} NaN/Inf values.")
        return x, y
    if not np.issubdtype(y.dtype, np.integer):
        if (
            np.issubdtype(y.dtype, np.floating)
            and np.all(np.isfinite(y))
            and np.all(y == np.round(y))
        ):
            y = y.astype(np.int32)
        else:
            raise ValueError(
                f"{name}: y must hold integer class labels; got dtype {y.dtype}. For "
                "real-valued targets (regression, reconstruction) use targets='values'."
            )
    if allow_unlabelled and y.max() < 0:
        raise ValueError(
            f"{name}: every label is -1 (unlabelled); at least one position needs a label."
        )
    if num_classes is not None:
        labelled = y[y != -1] if allow_unlabelled else y
        lo, hi = int(labelled.min()), int(labelled.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name}: labels must lie in [0, {num_classes}) for a {num_classes}-class "
                f"model; got labels in [{lo}, {hi}]. Remap the labels or build the model "
                f"with num_classes={hi + 1}."
                + (" Mark unlabelled positions with -1." if allow_unlabelled else "")
                + " For real-valued targets (regression) use targets='values'."
            )
    return x, y.astype(np.int32)
