"""Streamed data: training on batches that come from a source, not from arrays in memory.

A *source* is a callable `source(epoch)` (epoch counted from 0) returning an iterable of
batches `{"x": ..., "y": ...}` of NumPy arrays with a fixed number of rows: memory-mapped
`.npy` files (`array_source`), a Grain or tf.data pipeline (`.as_numpy_iterator()`), or a
plain generator. `dl.train.fit` accepts one wherever it accepts `(x, y)` arrays.

What `fit` does with it: each batch is checked as in-memory data are (shapes, finite
inputs, labels in range; the error names the batch and the epoch), and placed on the
device by a background thread a few batches ahead of the step that uses it (`Prefetch`),
so reading, checking and copying overlap with training. Shuffling is the source's own.

What a source must promise for a resumed run to equal an uninterrupted one bitwise:
`source(epoch)` yields the same batches in the same order every time it is called with
the same epoch (shuffle from a seed and the epoch, not from global state). A resumed run
calls `source(epoch, start=k)` when the source takes a `start` argument (skip to batch
k cheaply, as `array_source` does) and otherwise draws and discards the first k batches.
"""

from __future__ import annotations

import collections
import inspect
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from dl._errors import check_positive_int

Source = Callable[..., Iterable[Mapping[str, Any]]]


def is_source(data) -> bool:
    """True for a streamed source (a callable), False for `(x, y)` arrays."""
    return callable(data) and not isinstance(data, tuple | list | np.ndarray)


def array_source(
    x, y, batch_size: int, *, seed: int = 0, shuffle: bool = True, drop_remainder: bool = True
) -> Source:
    """A source over arrays that need not fit in memory, e.g. `np.load(path,
    mmap_mode="r")`: epoch e yields batches of the rows of a permutation drawn from
    (seed, e), or in order with `shuffle=False`. The last partial batch is left out
    (as `fit` does with arrays), or yielded with `drop_remainder=False` (for an eval
    set: `fit` pads it). Each batch reads its rows in file order, so a memory-mapped
    file is read forwards. Takes `start=` to resume inside an epoch without reading the
    batches before it.

    >>> src = array_source(np.arange(10.0).reshape(5, 2), np.arange(5), 2, shuffle=False)
    >>> [b["y"].tolist() for b in src(0)]
    [[0, 1], [2, 3]]
    """
    batch_size = check_positive_int("batch_size", batch_size)
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y differ in length: {n} examples in x, {len(y)} labels in y.")
    if batch_size > n and drop_remainder:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} examples.")
    steps = n // batch_size if drop_remainder else -(-n // batch_size)

    def source(epoch: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        for i in range(start, steps):
            rows = np.sort(order[i * batch_size : (i + 1) * batch_size])
            yield {"x": np.asarray(x[rows]), "y": np.asarray(y[rows])}

    return source


def open_epoch(source: Source, epoch: int, start: int) -> Iterator:
    """The batches of `epoch` from batch `start` on: `source(epoch, start=start)` when
    the source takes `start`, else `source(epoch)` with its first `start` batches
    drawn and discarded."""
    if start and _takes_start(source):
        return iter(source(epoch, start=start))
    it = iter(source(epoch))
    for _ in range(start):
        if next(it, _END) is _END:
            break
    return it


def _takes_start(source) -> bool:
    try:
        params = inspect.signature(source).parameters
    except (TypeError, ValueError):
        return False
    return "start" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


_END = object()


def checked_batches(
    batches: Iterator,
    check: Callable,
    *,
    batch_size: int | None,
    what: str,
    epoch: int,
    start: int,
    pad: bool,
    multiple: int = 1,
) -> Iterator[dict[str, Any]]:
    """Batches from a source, each checked by `check(x, y, name=...)` (as `fit` checks
    arrays) and given a "mask". Every batch must have `batch_size` rows, except the
    last, which may be shorter: left out in training (`pad=False`, as `fit` leaves out
    an epoch's last partial batch), padded with mask 0 in evaluation (`pad=True`).
    `batch_size=None`: the first batch's size rounded up to a `multiple` (of the
    devices a padded batch is split over)."""
    short = None
    for i, batch in enumerate(batches, start):
        where = f"{what}: batch {i} of epoch {epoch}"
        if short is not None:
            raise ValueError(
                f"{what}: batch {short} of epoch {epoch} has fewer rows than batch_size "
                f"{batch_size} but is not the last; a source yields batches of one size "
                "(only the last may be shorter)."
            )
        if not isinstance(batch, Mapping) or "x" not in batch or "y" not in batch:
            got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(
                f'{where} must be a dict of NumPy arrays with keys "x" and "y"; got {got}.'
            )
        x, y = check(batch["x"], batch["y"], name=where)
        rows = len(x)
        if batch_size is None:
            batch_size = rows
        if rows > batch_size:
            raise ValueError(
                f"{where} has {rows} rows, more than batch_size {batch_size}; the source's "
                "batch size and fit's batch_size must agree."
            )
        if rows < batch_size:
            short = i
            if not pad:
                continue
        size = -(-batch_size // multiple) * multiple
        mask = np.zeros(size, np.float32)
        mask[:rows] = 1.0
        if rows < size:
            x, y = (_pad_rows(a, size) for a in (x, y))
        yield {"x": x, "y": y, "mask": mask}


def _pad_rows(tree, rows: int):
    import jax

    def pad(a):
        out = np.zeros((rows, *a.shape[1:]), a.dtype)
        out[: len(a)] = a
        return out

    return jax.tree.map(pad, tree)


class Prefetch:
    """Iterate over `batches` with `put` (a device placement) applied up to `size`
    batches ahead of the one in use, so that reading, checking and copying a batch
    overlap with the device's work on the one before (JAX dispatches asynchronously).
    An error is raised by the iteration that reaches it; `close()` stops the iteration.

    By default the work is done in the calling thread, between the dispatches:
    measured faster on a 2-core CPU than a background thread (`thread=True`), which
    competes with XLA's own threads and the GIL there
    (`experiments/benchmarks/stream.py`). A background thread helps a source that
    waits on I/O rather than computing. Written here rather than taken from
    `flax.jax_utils.prefetch_to_device`, which places batches for `jax.pmap` only.
    """

    def __init__(self, batches: Iterator, put: Callable, size: int = 2, *, thread: bool = False):
        size = check_positive_int("prefetch", size)
        self._stop = threading.Event()
        self._thread = None
        if not thread:
            self._it = self._ahead(iter(batches), put, size)
            return
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._thread = threading.Thread(target=self._fill, args=(batches, put), daemon=True)
        self._thread.start()
        self._it = self._drain()

    def _ahead(self, batches, put, size):
        ready: collections.deque = collections.deque()
        for batch in batches:
            if self._stop.is_set():
                return
            ready.append(put(batch))
            if len(ready) > size:
                yield ready.popleft()
        while ready:
            yield ready.popleft()

    def _fill(self, batches, put) -> None:
        try:
            for batch in batches:
                if not self._offer(("batch", put(batch))):
                    return
            self._offer(("end", None))
        except BaseException as e:  # noqa: BLE001  (handed to the consuming thread)
            self._offer(("error", e))

    def _offer(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _drain(self):
        while True:
            kind, value = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
