"""Device-resident batching: shuffle with jax.random from (seed, epoch), explicit remainder.

Small datasets live on the device for the whole run; each epoch's order is
jax.random.permutation's (its random keys drawn on the device, sorted on the host), only
the (steps, batch) index plan goes to the device, and every batch is one gather there,
so the host never copies data in the training loop.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from dl._errors import check_positive_int

Remainder = Literal["drop", "pad"]


def num_batches(n: int, batch_size: int, remainder: Remainder = "drop") -> int:
    """Number of batches an epoch of `n` examples gives."""
    if remainder == "drop":
        return n // batch_size
    if remainder == "pad":
        return -(-n // batch_size)
    raise ValueError(f"remainder must be 'drop' or 'pad'; got {remainder!r}.")


def epoch_indices(
    n: int,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    remainder: Remainder = "drop",
) -> tuple[jax.Array, jax.Array]:
    """Example indices and weights of one epoch, shaped (num_batches, batch_size).

    The permutation depends only on (seed, epoch): `fold_in(key(seed), epoch)`. With
    remainder="drop" the last n % batch_size examples of the permutation are left out
    (a different few each epoch); with "pad" the last batch is filled with index 0 and
    weight 0, so every example counts exactly once and every batch has the same shape.

    Returns:
      (indices int32, mask float32), both (num_batches, batch_size).
    """
    idx, mask = _host_indices(n, batch_size, seed, epoch, shuffle, remainder)
    return jnp.asarray(idx), jnp.asarray(mask)


def _host_indices(n, batch_size, seed, epoch, shuffle, remainder, keys=None):
    """`epoch_indices` as NumPy arrays; `keys` from `_draw_keys` when drawn already."""
    nb = num_batches(n, batch_size, remainder)
    if shuffle:
        perm = _permutation(_draw_keys(seed, epoch, n) if keys is None else keys, n)
    else:
        perm = np.arange(n, dtype=np.int32)
    total = nb * batch_size
    idx, mask = np.zeros(total, np.int32), np.zeros(total, np.float32)
    idx[: min(n, total)], mask[: min(n, total)] = perm[:total], 1.0
    return idx.reshape(nb, batch_size), mask.reshape(nb, batch_size)


def _draw_keys(seed: int, epoch: int, n: int) -> jax.Array:
    """The random sort keys of `_permutation`, dispatched (not waited for)."""
    rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
    return _sort_keys(jax.random.key(seed), epoch, n=n, rounds=rounds)


def _permutation(keys: jax.Array, n: int) -> np.ndarray:
    """`jax.random.permutation(fold_in(key(seed), epoch), n)`, the same order, from the
    sort keys `_draw_keys(seed, epoch, n)`, with the sorts done by NumPy.

    jax sorts arange(n) by fresh random 32-bit keys a few times (a stable sort, so ties
    keep their order). XLA:CPU runs that key-value sort slowly. Here the random keys
    come from the same calls (`split`, then `bits`) in one compiled call, and NumPy
    sorts key * 2**32 + position: the values are distinct, so this is the stable sort,
    and NumPy's SIMD sort of 64-bit integers is fast.
    A test checks the order against jax.random.permutation's.
    """
    perm = np.arange(n, dtype=np.int32)
    position = np.arange(n, dtype=np.uint64)
    for round_keys in np.asarray(keys):
        packed = (round_keys.astype(np.uint64) << np.uint64(32)) | position  # n < 2**31
        perm = perm[np.sort(packed) & np.uint64(0xFFFFFFFF)]
    return perm


@functools.partial(jax.jit, static_argnames=("n", "rounds"))
def _sort_keys(key: jax.Array, epoch, *, n: int, rounds: int) -> jax.Array:
    key, out = jax.random.fold_in(key, epoch), []
    for _ in range(rounds):
        key, subkey = jax.random.split(key)
        out.append(jax.random.bits(subkey, (n,), jnp.uint32))
    return jnp.stack(out) if out else jnp.zeros((0, n), jnp.uint32)


def epoch_plan(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool,
    remainder: Remainder,
    start: int,
) -> tuple[jax.Array, jax.Array]:
    """Check an epoch's arguments and return its `epoch_indices` (shared by `batches` and
    `dl.parallel.Strategy.batches`, so every strategy sees the same batches)."""
    batch_size = _check_plan_args(n, batch_size, remainder)
    idx, mask = epoch_indices(
        n, batch_size, seed=seed, epoch=epoch, shuffle=shuffle, remainder=remainder
    )
    _check_start(start, idx.shape[0])
    return idx, mask


def _check_plan_args(n: int, batch_size: int, remainder: Remainder) -> int:
    batch_size = check_positive_int("batch_size", batch_size)
    if n == 0:
        raise ValueError("Cannot batch an empty dataset (0 examples).")
    if remainder == "drop" and batch_size > n:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {n} examples, so remainder='drop' "
            "gives no batch. Lower batch_size or use remainder='pad'."
        )
    return batch_size


def _check_start(start: int, steps: int) -> None:
    if not 0 <= start <= steps:
        raise ValueError(f"start must be in [0, {steps}]; got {start!r}.")


class EpochPlans:
    """`fit`'s epoch plans (shuffled, remainder "drop"), each drawn while the epoch
    before it trains; the same values as `epoch_plan`, as NumPy arrays.

    `draw_ahead(e)` dispatches epoch e's random sort keys (a tiny computation) before
    the steps of epoch e - 1 are dispatched, so that it does not queue behind them;
    `sort_ahead(e)`, called once those steps are dispatched, sorts the keys on the host
    while the device trains; `get(e, start)` returns the plan. Drawn after each epoch's
    sync instead, the plan kept the device idle between epochs.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, _check_plan_args(n, batch_size, "drop"), seed
        self._keys: tuple[int, jax.Array] | None = None
        self._plan: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None

    def _indices(self, epoch: int, keys=None):
        return _host_indices(self.n, self.batch_size, self.seed, epoch, True, "drop", keys)

    def draw_ahead(self, epoch: int) -> None:
        self._keys = (epoch, _draw_keys(self.seed, epoch, self.n))

    def sort_ahead(self, epoch: int) -> None:
        if self._keys is not None and self._keys[0] == epoch:
            self._plan = (epoch, self._indices(epoch, self._keys[1]))
            self._keys = None

    def get(self, epoch: int, start: int) -> tuple[np.ndarray, np.ndarray]:
        if self._plan is not None and self._plan[0] == epoch:
            idx, mask = self._plan[1]
        else:
            keys = self._keys[1] if self._keys is not None and self._keys[0] == epoch else None
            idx, mask = self._indices(epoch, keys)
        self._keys = self._plan = None
        _check_start(start, idx.shape[0])
        return idx, mask


def gather_rows(x, y, idx, mask) -> dict[str, jax.Array]:
    """The batch {"x", "y", "mask"} of rows `idx` (any index shape) of x and y."""
    take = lambda a: jnp.take(a, idx, axis=0)  # noqa: E731  (y may be a dict or tuple)
    return {"x": take(x), "y": jax.tree.map(take, y), "mask": mask}


def gather_step(x, y, idx, mask, i) -> dict[str, jax.Array]:
    """Batch `i` of an epoch plan (idx, mask of shape (steps, batch)), picked inside the
    compiled gather: slicing idx[i] eagerly cost one extra dispatch per step, a third of
    a small model's step time on CPU."""
    return gather_rows(
        x,
        y,
        jax.lax.dynamic_index_in_dim(idx, i, keepdims=False),
        jax.lax.dynamic_index_in_dim(mask, i, keepdims=False),
    )


_gather = jax.jit(gather_step)


def batches(
    x,
    y,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    remainder: Remainder = "drop",
    start: int = 0,
) -> Iterator[dict[str, jax.Array]]:
    """Iterate over one epoch of batches {"x", "y", "mask"} gathered on the device.

    Args:
      x, y: arrays with the same first dimension; numpy arrays are put on the default
        device once per call, so pass device arrays (`jax.device_put`) to keep a dataset
        resident across epochs.
      batch_size: examples per batch (> 0).
      seed, epoch: the shuffle is `jax.random.permutation(fold_in(key(seed), epoch), n)`.
      shuffle: False keeps the stored order (evaluation).
      remainder: "drop" leaves out the last partial batch; "pad" pads it to full size with
        mask 0, so every example is seen once (use it for evaluation).
      start: index of the first batch to yield (to resume inside an epoch).

    Yields:
      dicts with "x" (batch_size, ...), "y" (batch_size, ...), "mask" (batch_size,) float32.

    >>> xs, ys = np.zeros((10, 3), np.float32), np.arange(10)
    >>> [b["x"].shape for b in batches(xs, ys, 4, remainder="pad")]
    [(4, 3), (4, 3), (4, 3)]
    """
    for leaf in jax.tree.leaves(y):
        if len(leaf) != len(x):
            raise ValueError(
                f"x and y differ in length: {len(x)} examples in x, {len(leaf)} labels in y."
            )
    idx, mask = epoch_plan(len(x), batch_size, seed, epoch, shuffle, remainder, start)
    put = lambda a: a if isinstance(a, jax.Array) else jax.device_put(np.asarray(a))  # noqa: E731
    x, y = put(x), jax.tree.map(put, y)
    for i in range(start, idx.shape[0]):
        yield _gather(x, y, idx, mask, i)
