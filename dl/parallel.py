"""One pure train step on 1 to N devices and on several hosts.

A `Strategy` takes the pure `train_step(state, batch) -> (state, metrics)` and
`eval_step(state, batch) -> metrics` of `dl.train` and runs them:

- "single": `jax.jit` on one device.
- "sharded": `jax.jit` with `NamedSharding`s on a 1-D mesh: the global batch is split
  over the "data" axis and the state is replicated. XLA inserts the collectives, so the
  gradient, the loss and the BatchNorm statistics are those of the whole global batch
  (BatchNorm is synchronised for free) and the metric sums are global. This is the
  default when more than one device is visible.
- "pmap": a per-device program, as `jax.pmap` runs it, built on `jax.shard_map` (JAX's
  current form of pmap) over the mesh axis `DATA_AXIS` ("data"): each device runs the
  step on its part of the batch, and the step must reduce over that axis explicitly, as
  in Flax's ImageNet example: `make_train_step(..., axis_name=DATA_AXIS)` sums
  gradients, counts and metrics with `lax.psum`, and `get_model(...,
  axis_name=DATA_AXIS)` averages BatchNorm's statistics. State and data are placed as
  for "sharded" (global arrays), so nothing is replicated or unreplicated by hand.

Every strategy computes the same mathematical step: the loss is the masked mean over
the global batch. Counts are integers summed exactly; float sums may differ from one
device in the last bits because they are added in another order.

Several hosts: call `initialize()` first in every process (a no-op for one process).
Each process then feeds only its own devices' part of every global batch (the batch
order is the same on every process because it depends only on (seed, epoch)).

(An FSDP strategy, with the parameters sharded, is not provided: the zoo's models are
small enough to replicate.)
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dl import kernels as kernels_lib
from dl import metrics as metrics_lib
from dl._errors import unknown_name
from dl.data.batching import EpochPlans, Remainder, epoch_plan, gather_rows
from dl.data.stream import Prefetch, checked_batches, open_epoch
from dl.step import make_train_loop, zero_metrics

DATA_AXIS = "data"
STRATEGIES = ("auto", "single", "sharded", "pmap")

# --------------------------------------------------------------------------- hosts


_ENV = {
    "coordinator_address": ("DL_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("DL_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("DL_PROCESS_ID", "JAX_PROCESS_ID"),
}


def _env(key: str) -> str | None:
    for name in _ENV[key]:
        if os.environ.get(name):
            return os.environ[name]
    return None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
) -> bool:
    """Join a multi-process run (`jax.distributed.initialize`); a no-op for one process.

    Arguments not given are read from the environment: DL_COORDINATOR_ADDRESS
    ("host:port" of process 0), DL_NUM_PROCESSES and DL_PROCESS_ID (the JAX_* names work
    too). With DL_DISTRIBUTED=auto, JAX detects the cluster itself (Cloud TPU pods,
    SLURM, Open MPI). Call it before anything else touches JAX devices.

    Returns:
      True when this process is part of a multi-process run, False for a lone process.
    """
    if jax.distributed.is_initialized():
        return True
    if os.environ.get("DL_DISTRIBUTED", "").lower() == "auto":
        jax.distributed.initialize()
        return jax.process_count() > 1
    coordinator_address = coordinator_address or _env("coordinator_address")
    raw_n = num_processes if num_processes is not None else _env("num_processes")
    raw_id = process_id if process_id is not None else _env("process_id")
    try:
        n = int(raw_n) if raw_n is not None else 1
        pid = int(raw_id) if raw_id is not None else None
    except ValueError:
        raise ValueError(
            f"num_processes and process_id must be integers; got {raw_n!r} and {raw_id!r} "
            "(from the arguments or DL_NUM_PROCESSES / DL_PROCESS_ID)."
        ) from None
    if n < 1:
        raise ValueError(f"num_processes must be >= 1; got {n}.")
    if n == 1:
        return False
    if coordinator_address is None or pid is None:
        raise ValueError(
            f"A run of {n} processes needs the coordinator's address and this process's id: "
            "set DL_COORDINATOR_ADDRESS=host:port (process 0's host) and DL_PROCESS_ID "
            f"(0..{n - 1}), or pass them to initialize()."
        )
    if not 0 <= pid < n:
        raise ValueError(f"process_id must be in [0, {n}); got {pid}.")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=n,
        process_id=pid,
        local_device_ids=local_device_ids,
    )
    return True


# --------------------------------------------------------------------------- meshes


def select_devices(num_devices: int | None = None) -> list:
    """The first `num_devices` devices (all by default), each process's devices together.

    In a multi-process run `num_devices` must be a multiple of the process count and
    each process contributes the same number of its own devices.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if num_devices is None:
        return devices
    if isinstance(num_devices, bool) or not isinstance(num_devices, int | np.integer):
        raise ValueError(f"devices must be a positive integer; got {num_devices!r}.")
    if not 1 <= num_devices <= len(devices):
        hint = (
            " On CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N (set before JAX "
            "starts) gives N devices."
            if devices[0].platform == "cpu"
            else ""
        )
        raise ValueError(
            f"Asked for {num_devices} devices but {len(devices)} are visible "
            f"({devices[0].platform}).{hint}"
        )
    nproc = jax.process_count()
    if nproc == 1:
        return devices[:num_devices]
    if num_devices % nproc:
        raise ValueError(
            f"devices={num_devices} does not split over the {nproc} processes; use a multiple "
            f"of {nproc}."
        )
    per = num_devices // nproc
    return [d for p in range(nproc) for d in [x for x in devices if x.process_index == p][:per]]


def make_mesh(num_devices: int | None = None, axis_name: str = DATA_AXIS) -> Mesh:
    """A 1-D device mesh over the first `num_devices` devices (all by default)."""
    return Mesh(np.array(select_devices(num_devices)), (axis_name,))


# --------------------------------------------------------------------------- helpers


def _tree_put(tree, sharding):
    return jax.tree.map(lambda a: _put(a, sharding), tree)


def _put(a, sharding):
    """device_put, also onto a sharding that spans other processes' devices (each process
    passes the same value and contributes its own devices' copies)."""
    if isinstance(sharding, jax.Device) or sharding.is_fully_addressable:
        return jax.device_put(a, sharding)
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        data = _put(jax.random.key_data(a), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    host = np.asarray(jax.device_get(a))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _rows(x) -> int:
    return int(x.shape[0])


# --------------------------------------------------------------------------- strategy


@dataclasses.dataclass(frozen=True, eq=False)
class Strategy:
    """How a pure step is compiled and fed: "single", "sharded" or "pmap".

    Build one with `get_strategy`. `dl.train.fit(strategy=...)` uses it; the methods are
    public so that your own loop can do the same:

    >>> strategy = get_strategy("sharded")  # doctest: +SKIP
    >>> placed = strategy.put_state(state)  # doctest: +SKIP
    >>> data = strategy.put_data(x, y)  # doctest: +SKIP
    >>> batch = next(strategy.batches(data, 128))  # doctest: +SKIP
    >>> step = strategy.compile_train_step(train_step, placed, batch)  # doctest: +SKIP
    >>> placed, metrics = step(placed, batch)  # doctest: +SKIP
    """

    name: str
    devices: tuple
    mesh: Mesh
    kernels: str = "xla"  # the compiler options of `dl.kernels.jit`

    # ---- sizes
    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def local_devices(self) -> list:
        return [d for d in self.devices if d.process_index == jax.process_index()]

    @property
    def multi_process(self) -> bool:
        return len({d.process_index for d in self.devices}) > 1

    def check_batch_size(self, batch_size: int, what: str = "batch_size") -> int:
        """Check that the global batch divides over the devices; return it."""
        if batch_size % self.num_devices:
            lo = batch_size // self.num_devices * self.num_devices
            sizes = f"{lo} or {lo + self.num_devices}" if lo else f"{self.num_devices}"
            raise ValueError(
                f"{what} {batch_size} does not divide over the {self.num_devices} devices of "
                f"the {self.name!r} strategy (each device takes an equal share). Use a "
                f"multiple of {self.num_devices}, e.g. {sizes}, or fewer devices."
            )
        return batch_size

    def round_batch_size(self, batch_size: int) -> int:
        """The smallest multiple of the device count >= batch_size (for padded eval)."""
        return -(-batch_size // self.num_devices) * self.num_devices

    # ---- shardings
    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def batch_sharding(self) -> NamedSharding:
        """Leading (example) axis split over devices."""
        return NamedSharding(self.mesh, P(DATA_AXIS))

    # ---- state
    def put_state(self, state):
        """Place a state for this strategy (a copy: the caller's arrays stay valid)."""
        if self.name == "single":
            return _tree_put(state, self.devices[0])
        return _tree_put(state, self.replicated)

    def get_state(self, placed):
        """The logical state back from `put_state`'s placement: the placed state itself
        (global arrays; with several processes replicated over all devices, which orbax
        can save and every process can read)."""
        return placed

    # ---- data
    def put_data(self, x, y):
        """Keep a dataset where batches are gathered from: on the device(s) for one
        process (replicated over the mesh), on the host for several processes."""
        if self.multi_process:
            return np.asarray(x), jax.tree.map(np.asarray, y)
        put = lambda a: jax.device_put(np.asarray(a), self._resident)  # noqa: E731
        return put(x), jax.tree.map(put, y)  # y: an array, or a dict or tuple of them

    @property
    def _resident(self):
        """Where device-resident data (datasets, epoch plans) live: the one device, or
        replicated over the mesh."""
        return self.devices[0] if self.name == "single" else self.replicated

    def batches(
        self,
        data,
        batch_size: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        remainder: Remainder = "drop",
        start: int = 0,
    ) -> Iterator[dict[str, jax.Array]]:
        """Like `dl.data.batches`, yielding global batches placed for this strategy.

        The example order is `dl.data.epoch_indices(seed, epoch)`, whatever the strategy,
        so every strategy sees the same global batches in the same order.
        """
        x, y = data
        self.check_batch_size(batch_size)
        idx, mask = epoch_plan(_rows(x), batch_size, seed, epoch, shuffle, remainder, start)
        if self.multi_process:
            yield from self._host_batches(x, y, np.asarray(idx), np.asarray(mask), start)
            return
        for i in range(start, idx.shape[0]):
            yield self._gather(x, y, idx, mask, i)

    @functools.cached_property
    def _gather(self) -> Callable:
        """The jitted batch gather, built once per strategy (so it compiles once)."""
        if self.name == "single":
            from dl.data.batching import _gather

            return _gather

        def gather(x, y, idx, mask, i):
            idx = jax.lax.dynamic_index_in_dim(idx, i, keepdims=False)
            mask = jax.lax.dynamic_index_in_dim(mask, i, keepdims=False)
            return gather_rows(x, y, idx, mask)

        # Each device gathers its own rows of the replicated dataset: no communication.
        return jax.jit(gather, out_shardings=self.batch_sharding)

    def _host_batches(self, x, y, idx, mask, start):
        """Several processes: each gathers, on its host, the rows of its own devices."""
        nproc, pid = jax.process_count(), jax.process_index()
        per = idx.shape[1] // nproc  # rows of this process in each global batch
        lo, hi = pid * per, (pid + 1) * per
        for i in range(start, idx.shape[0]):
            rows = idx[i, lo:hi]
            local = {
                "x": x[rows],
                "y": jax.tree.map(lambda a, r=rows: a[r], y),
                "mask": mask[i, lo:hi],
            }
            yield jax.tree.map(
                lambda v: jax.make_array_from_process_local_data(self.batch_sharding, v), local
            )

    # ---- steps
    def per_device(self, fn: Callable, out_specs) -> Callable:
        """`fn(state, batch)` as a per-device program ("pmap"): `jax.shard_map` over the
        mesh axis `DATA_AXIS`, the state replicated and the batch split by rows; `fn`
        reduces over the axis itself (`lax.psum`), so its outputs are replicated
        (`out_specs`: `P()` for each output). The identity for the other strategies."""
        if self.name != "pmap":
            return fn
        # check_vma=False: pmap's semantics, where a gradient is the device's own until
        # the step's psum (with the check, shard_map's autodiff would sum it already).
        return jax.shard_map(
            fn, mesh=self.mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=out_specs, check_vma=False
        )

    def _jit(self, fn: Callable, **kwargs):
        return kernels_lib.jit(fn, kernels=self.kernels, **kwargs)

    def compile_train_step(self, train_step: Callable, state, batch, *, donate: bool = True):
        """Compile `train_step` once for placed `state` and `batch` (ahead of time).

        Returns `step(state, batch) -> (state, metrics)` with global metric sums.
        """
        donate_argnums = (0,) if donate else ()
        train_step = self.per_device(train_step, (P(), P()))
        if self.name == "single":
            jitted = self._jit(train_step, donate_argnums=donate_argnums)
            return jitted.lower(state, batch).compile()
        state_sh = jax.tree.map(lambda _: self.replicated, state)
        batch_sh = jax.tree.map(lambda _: self.batch_sharding, batch)
        return (
            self._jit(
                train_step,
                in_shardings=(state_sh, batch_sh),
                out_shardings=(state_sh, self.replicated),
                donate_argnums=donate_argnums,
            )
            .lower(state, batch)
            .compile()
        )

    def compile_train_loop(
        self, train_step: Callable, state, sums, data, plan, *, loop: bool = True
    ) -> Callable | None:
        """Compile `dl.train.make_train_loop(train_step)` once for this strategy.

        Returns `loop(state, sums, x, y, idx, mask, start, stop) -> (state, sums)`, which
        runs steps `start..stop-1` of an epoch plan (`idx`, `mask` from
        `dl.data.epoch_indices`) in one call: each batch is gathered on the device and
        the metrics are summed into `sums`, so the host dispatches one call for many
        steps. The state and sums are donated. `loop=False`: one step per call, without
        a loop (see `dl.train.make_train_loop`). Returns None where batches come from the
        hosts (several processes): there `fit` calls the step once per batch.
        """
        if self.multi_process:
            return None
        train_step = self.per_device(train_step, (P(), P()))
        bounds = (np.int32(0), np.int32(1))
        if self.name == "single":
            fn = make_train_loop(train_step, loop=loop)
            jitted = self._jit(fn, donate_argnums=(0, 1))
        else:
            fn = make_train_loop(
                train_step,
                constrain=lambda b: jax.lax.with_sharding_constraint(b, self.batch_sharding),
                loop=loop,
            )
            rep = self.replicated
            tree_rep = lambda t: jax.tree.map(lambda _: rep, t)  # noqa: E731
            jitted = self._jit(
                fn,
                in_shardings=(tree_rep(state), tree_rep(sums), rep, rep, rep, rep, rep, rep),
                out_shardings=(tree_rep(state), tree_rep(sums)),
                donate_argnums=(0, 1),
            )
        return jitted.lower(state, sums, *data, *plan, *bounds).compile()

    def put_batch(self, batch):
        """Place a host batch {"x", "y", "mask"} for this strategy's steps: on the one
        device, or split by rows over the mesh (one process)."""
        self.check_streamable()
        where = self.devices[0] if self.name == "single" else self.batch_sharding
        return jax.device_put(batch, where)

    def check_streamable(self) -> None:
        """Streamed batches are placed from one host: refuse several processes."""
        if self.multi_process:
            raise ValueError(
                f"Streamed data runs in one process; this run's {self.name!r} strategy spans "
                "several. Give each process (x, y) arrays."
            )

    def put_plan(self, plan):
        """Place an epoch plan (idx, mask) where `compile_train_loop`'s loop reads it."""
        return tuple(jax.device_put(a, self._resident) for a in plan)

    def jit_eval_step(self, eval_step: Callable) -> Callable:
        """`eval_step` compiled for this strategy; returns global metric sums."""
        eval_step = self.per_device(eval_step, P())
        if self.name == "single":
            return self._jit(eval_step)
        return self._jit(eval_step, out_shardings=self.replicated)


class TrainCalls:
    """Runs an epoch's train steps in compiled calls: what `dl.train.fit` loops over.

    `begin_epoch(epoch, start, last)` places epoch `epoch`'s batch order (0-based:
    `dl.data.epoch_plan(seed, epoch)` on every strategy); `calls(start, step,
    checkpoint_every)` cuts the epoch into calls; `run(state, sums, first, stop)` runs
    steps `first..stop-1` and adds their metrics to `sums` (None: start from zeros);
    `end_epoch(epoch)` sorts the next epoch's order while the device trains.

    One device or a mesh: a call is `dl.step.make_train_loop`, compiled once, gathering
    each batch on the device; `steps_per_call=1` runs one step per call without a loop
    (XLA:CPU computes lax's convolution gradients slowly inside loops: jax-ml/jax#12868).
    "pmap" runs the same loop with the step as a per-device program
    (`Strategy.per_device`). Several processes: one compiled step per batch, the metrics
    summed on the device.
    """

    def __init__(self, strategy, train_step, state, data, batch_size, seed, steps_per_call):
        self.strategy, self.data, self.seed = strategy, data, seed
        self.batch_size, self.steps_per_call = batch_size, steps_per_call
        self.steps_per_epoch = _rows(data[0]) // batch_size
        first = next(strategy.batches(data, batch_size, seed=seed, epoch=0))
        if strategy.name == "pmap":
            _check_reduces_over(train_step, state, first, DATA_AXIS)
        self._per_batch = strategy.multi_process
        if self._per_batch:
            self._step = strategy.compile_train_step(train_step, state, first)
            return
        self._zero = zero_metrics(strategy.per_device(train_step, (P(), P())), state, first)
        self._plans = EpochPlans(_rows(data[0]), batch_size, seed)
        plan0 = strategy.put_plan(epoch_plan(_rows(data[0]), batch_size, seed, 0, True, "drop", 0))
        self._loop = strategy.compile_train_loop(
            train_step, state, self._zero, data, plan0, loop=steps_per_call > 1
        )
        self._plan = None

    def calls(self, start: int, step: int, checkpoint_every: int | None):
        """(first, stop) of the calls covering steps start.. of an epoch, where `step` is
        the global step count before `start`: `steps_per_call` steps, ending early at
        the epoch's end and at each checkpoint step."""
        i, end = start, self.steps_per_epoch
        while i < end:
            stop = min(end, i + self.steps_per_call)
            if checkpoint_every is not None:
                stop = min(stop, i + checkpoint_every - step % checkpoint_every)
            yield i, stop
            step += stop - i
            i = stop

    def begin_epoch(self, epoch: int, start: int, last: bool) -> None:
        """Place epoch `epoch`'s plan and draw the next one's while this one trains."""
        if self._per_batch:
            self._batches = self.strategy.batches(
                self.data, self.batch_size, seed=self.seed, epoch=epoch, start=start
            )
            return
        self._plan = self.strategy.put_plan(self._plans.get(epoch, start))
        if not last:
            self._plans.draw_ahead(epoch + 1)

    def run(self, state, sums, start: int, stop: int):
        """Run steps start..stop-1 of the epoch begun; return (state, sums)."""
        if self._per_batch:
            for _ in range(start, stop):
                state, m = self._step(state, next(self._batches))
                sums = m if sums is None else metrics_lib.add(sums, m)
            return state, sums
        if sums is None:
            sums = _copy_arrays(self._zero)  # donated by the call
        args = (*self.data, *self._plan, np.int32(start), np.int32(stop))
        return self._loop(state, sums, *args)

    def end_epoch(self, epoch: int) -> None:
        """Sort the next epoch's plan on the host while the device trains."""
        if not self._per_batch:
            self._plans.sort_ahead(epoch + 1)

    def sums_like(self, host_sums: dict):
        """Metric sums restored from a checkpoint, with the dtypes a call expects."""
        if self._per_batch:
            return {k: jax.numpy.asarray(v) for k, v in host_sums.items()}
        return {k: jax.numpy.asarray(v, self._zero[k].dtype) for k, v in host_sums.items()}


class StreamCalls:
    """`TrainCalls` for a streamed source (`dl.data.stream`): the source's batches,
    checked and grouped into chunks of up to `steps_per_call` on the host, are placed by
    a `Prefetch` thread while the chunk before them trains, and each chunk runs as one
    call of the same compiled loop as in-memory data (`compile_train_loop`), its rows
    gathered in order. A chunk ends early at a checkpoint step and at the epoch's end,
    and is padded to full size (its length is an argument), so the loop compiles once,
    when the first chunk arrives (`compile_time_s`). The epoch's length is the source's.
    """

    def __init__(self, strategy, train_step, source, batch_size, check, steps_per_call=1):
        strategy.check_streamable()
        self.strategy, self.train_step, self.source = strategy, train_step, source
        self.batch_size, self.check, self.steps_per_call = batch_size, check, steps_per_call
        rows = np.arange(steps_per_call * batch_size, dtype=np.int32)
        self._idx = jax.device_put(rows.reshape(steps_per_call, batch_size), strategy._resident)
        self.compile_time_s = 0.0
        self._loop = self._zero = self._feed = self._chunk = self._epoch = None

    def begin_epoch(self, epoch: int, start: int, last: bool) -> None:
        self.close()
        self._epoch = epoch

    def calls(self, start: int, step: int, checkpoint_every: int | None):
        batches = checked_batches(
            open_epoch(self.source, self._epoch, start),
            self.check,
            batch_size=self.batch_size,
            what="train data",
            epoch=self._epoch,
            start=start,
            pad=False,
        )
        chunks = _chunks(batches, self.steps_per_call, step, checkpoint_every)
        self._feed = Prefetch(chunks, self._put_chunk)
        i = start
        for chunk in self._feed:
            self._chunk = chunk
            yield i, i + chunk[-1]
            i += chunk[-1]

    def _put_chunk(self, chunk):
        x, y = self.strategy.put_data(chunk["x"], chunk["y"])
        mask = jax.device_put(chunk["mask"], self.strategy._resident)
        return x, y, mask, chunk["n"]

    def run(self, state, sums, start: int, stop: int):
        x, y, mask, n = self._chunk
        if self._loop is None:
            t0 = time.perf_counter()
            rows = slice(0, self.batch_size)
            first = {"x": x[rows], "y": jax.tree.map(lambda a: a[rows], y), "mask": mask[0]}
            self._zero = zero_metrics(
                self.strategy.per_device(self.train_step, (P(), P())), state, first
            )
            self._loop = self.strategy.compile_train_loop(
                self.train_step,
                state,
                self._zero,
                (x, y),
                (self._idx, mask),
                loop=self.steps_per_call > 1,
            )
            self.compile_time_s += time.perf_counter() - t0
        if sums is None:
            sums = _copy_arrays(self._zero)
        elif any(isinstance(v, np.ndarray) for v in sums.values()):  # restored (sums_like)
            sums = {k: jax.numpy.asarray(v, self._zero[k].dtype) for k, v in sums.items()}
            sums = jax.device_put(sums, self.strategy._resident)
        return self._loop(state, sums, x, y, self._idx, mask, np.int32(0), np.int32(n))

    def end_epoch(self, epoch: int) -> None:
        self.close()

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None

    def sums_like(self, host_sums: dict):
        """Restored sums, given their dtypes when the loop is compiled."""
        return {k: np.asarray(v) for k, v in host_sums.items()}


def _chunks(batches, size: int, step: int, checkpoint_every: int | None):
    """Host batches grouped `size` at a time into one chunk {"x", "y" (size * B rows),
    "mask" (size, B), "n": batches in it}, a chunk ending early where the global step
    reaches a multiple of `checkpoint_every`; the last is padded with mask-0 batches."""
    buf = []
    for batch in batches:
        buf.append(batch)
        step += 1
        if len(buf) == size or (checkpoint_every is not None and step % checkpoint_every == 0):
            yield _pack(buf, size)
            buf = []
    if buf:
        yield _pack(buf, size)


def _pack(buf: list, size: int) -> dict:
    n = len(buf)
    buf = buf + [jax.tree.map(np.zeros_like, buf[0])] * (size - n)
    cat = lambda *a: np.concatenate(a)  # noqa: E731
    return {
        "x": cat(*(b["x"] for b in buf)),
        "y": jax.tree.map(cat, *(b["y"] for b in buf)),
        "mask": np.stack([b["mask"] for b in buf]),
        "n": n,
    }


# The fresh metric sums of each epoch, copied in one call (one dispatch, not one a leaf).
_copy_arrays = jax.jit(lambda tree: jax.tree.map(jax.numpy.copy, tree))


def _equations(jaxpr):
    """The equations of a jaxpr and of the jaxprs nested in it (pjit, cond, scan, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def _check_reduces_over(train_step, state, batch, axis: str) -> None:
    """A step run under pmap must sum its gradients over `axis`; one built without
    `axis_name` would train each device on its own shard."""
    jaxpr = jax.make_jaxpr(train_step, axis_env=[(axis, 1)])(state, batch)
    for eqn in _equations(jaxpr.jaxpr):
        if eqn.primitive.name.startswith("psum") and axis in tuple(eqn.params.get("axes", ())):
            return
    raise ValueError(
        f"The 'pmap' strategy needs a train step that sums over the device axis {axis!r}; "
        f"this one does not. Build it with make_train_step(..., axis_name={axis!r}) (and "
        f"the model with get_model(..., axis_name={axis!r}) for BatchNorm)."
    )


def get_strategy(
    name: str | Strategy = "auto",
    devices: int | None = None,
    *,
    batch_size: int | None = None,
    kernels: str = "xla",
) -> Strategy:
    """A `Strategy` by name over the first `devices` devices (all by default), compiling
    with `dl.kernels.jit(..., kernels=kernels)`.

    "auto" is "sharded" when more than one device is used and "single" otherwise. Given
    the global `batch_size` and no device count, "auto" uses the most devices the batch
    divides over (with a warning when that is fewer than all); an explicit strategy or
    device count that the batch does not divide over is an error (`check_batch_size`).
    """
    if isinstance(name, Strategy):
        if devices is not None and devices != name.num_devices:
            raise ValueError(
                f"The strategy given runs on {name.num_devices} devices, not devices={devices}."
            )
        return name
    if name not in STRATEGIES:
        raise unknown_name("strategy", name, STRATEGIES)
    chosen = select_devices(1 if name == "single" and devices is None else devices)
    if name == "auto" and devices is None and batch_size and jax.process_count() == 1:
        fits = max(d for d in range(1, len(chosen) + 1) if batch_size % d == 0)
        if fits < len(chosen):
            warnings.warn(
                f"batch_size {batch_size} does not divide over the {len(chosen)} devices; "
                f"using {fits} of them. Pass a multiple of {len(chosen)} to use all.",
                stacklevel=2,
            )
            chosen = chosen[:fits]
    if name == "auto":
        name = "sharded" if len(chosen) > 1 else "single"
    if name == "single" and len(chosen) != 1:
        raise ValueError(
            f"The 'single' strategy runs on one device; got devices={len(chosen)}. Use "
            "'sharded' or 'pmap' for several."
        )
    mesh = Mesh(np.array(chosen), (DATA_AXIS,))
    return Strategy(name, tuple(chosen), mesh, kernels_lib.resolve(kernels))
