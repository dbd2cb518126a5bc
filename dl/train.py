"""Training: `fit`, the reference loop, and `train`, the one entry point.

`fit(state, train_step, eval_step, data, ...)` runs pure steps (`dl.step`) in compiled
calls (`dl.parallel.TrainCalls`) and does, on the host, what a run needs around them:
an epoch record with evaluation, JSON lines, early stopping, orbax checkpoints and
resume, SIGTERM/SIGINT handling and a NaN guard. `train(model, data, config)` builds the
state and steps from a model and a `TrainConfig` and calls `fit`: recipes, baselines,
analysis, experiments and the GAN's loop build on these two.

The names of `dl.step` (`TrainState`, `create_state`, `make_train_step`, ...) are
re-exported here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

from dl import _progress
from dl import metrics as metrics_lib
from dl._errors import check_positive_int
from dl.checkpoint import CheckpointManager
from dl.data.augment import AUGMENTATIONS
from dl.data.batching import batches, num_batches
from dl.data.stream import Prefetch, checked_batches, is_source, open_epoch
from dl.data.validate import check_arrays
from dl.losses import classifies
from dl.models import DCGAN, ResNet, ViT, adapt, mode_kwargs
from dl.optim import OptimizerConfig, freeze, make_optimizer, make_schedule
from dl.parallel import StreamCalls, TrainCalls, get_strategy
from dl.step import (  # noqa: F401  (re-exported: dl.train is the documented home)
    COMPUTE_DTYPES,
    DEFAULT_RNGS,
    METRICS_CONTRACT,
    Batch,
    Metrics,
    TrainState,
    check_metrics,
    create_state,
    init_variables,
    make_eval_step,
    make_steps,
    make_train_loop,
    make_train_step,
    predict,
    zero_metrics,
)


def evaluate(
    eval_step, state: TrainState, x, y, *, batch_size: int = 512, strategy=None
) -> dict[str, float]:
    """Run a (compiled or pure) eval step over a whole dataset; return mean metrics.

    The last partial batch is padded and masked, so every example counts exactly once.
    With a `dl.parallel` strategy (or its name) the pure `eval_step` is compiled for it
    and `state` (a logical state, as `fit` returns) is placed for it.
    """
    if strategy is not None:
        strategy = get_strategy(strategy)
        return _evaluate_placed(
            strategy,
            strategy.jit_eval_step(eval_step),
            strategy.put_state(state),
            strategy.put_data(x, y),
            strategy.round_batch_size(batch_size),
        )
    return _mean_metrics(
        eval_step, state, batches(x, y, batch_size, shuffle=False, remainder="pad")
    )


def _mean_metrics(eval_fn, state, all_batches, empty: str = "no batch") -> dict[str, float]:
    """Sum an eval step's metrics over batches (on the device) and summarise once; a
    ValueError saying `empty` when there was no batch."""
    sums = None
    for batch in all_batches:
        m = eval_fn(state, batch)
        sums = m if sums is None else metrics_lib.add(sums, m)
    if sums is None:
        raise ValueError(empty)
    return metrics_lib.summarize(sums)


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop when a monitored eval metric has not improved for `patience` evaluations.

    Attributes:
      monitor: a history key "<eval set>/<metric>", e.g. "val/accuracy" or "val/loss".
      mode: "max" or "min"; None picks "min" for losses and "max" otherwise.
      patience: evaluations without improvement before stopping (>= 1).
      min_delta: smallest change that counts as an improvement.
      restore_best: return the state of the best evaluation rather than the last.
    """

    monitor: str = "val/accuracy"
    mode: str | None = None
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self):
        if "/" not in self.monitor:
            raise ValueError(
                f'monitor must look like "<eval set>/<metric>", e.g. "val/accuracy"; '
                f"got {self.monitor!r}."
            )
        if self.mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or None; got {self.mode!r}.")
        check_positive_int("patience", self.patience)
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0; got {self.min_delta!r}.")

    @property
    def direction(self) -> str:
        return self.mode or ("min" if self.monitor.endswith("loss") else "max")

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.direction == "max":
            return value > best + self.min_delta
        return value < best - self.min_delta


@dataclasses.dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
      state: the final state (the best one when early stopping restores it).
      history: one dict per epoch: "epoch", "step", "train/loss", "train/accuracy",
        "<eval set>/<metric>" and "eval_time_s" (the evaluation's share of the epoch, its
        first compilation included) when evaluated, "epoch_time_s", "time_s".
      best_epoch: epoch of the best monitored value (None without early stopping).
      best_value: that value.
      stopped_early: whether early stopping ended the run.
      train_time_s: wall time of the whole fit, compilation and evaluation included.
      compile_time_s: time spent compiling the train step.
      strategy: the `dl.parallel` strategy used ("single", "sharded" or "pmap").
      num_devices: how many devices it ran on.
      kernels: the compiler options used ("xla" or "cpu", `dl.kernels.jit`).
      profile_dir: where the profiler trace was written (`fit(profile_dir=...)`), or None.
    """

    state: TrainState
    history: list[dict[str, float]]
    best_epoch: int | None
    best_value: float | None
    stopped_early: bool
    train_time_s: float
    compile_time_s: float
    strategy: str = "single"
    num_devices: int = 1
    kernels: str = "xla"
    profile_dir: str | None = None


def _copy_tree(tree):
    return jax.tree.map(lambda a: a.copy() if isinstance(a, jax.Array) else a, tree)


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped `fit` after a whole step; a checkpoint was written.

    Attributes:
      signum: the signal number; `exit_code` is 128 + signum, as a shell reports it.
      step: the last completed step.
      checkpoint_dir: where the checkpoint is (None when fit had no checkpoint_dir).
    """

    def __init__(self, signum: int, step: int, checkpoint_dir):
        self.signum, self.step, self.checkpoint_dir = signum, step, checkpoint_dir
        self.exit_code = 128 + signum
        where = (
            f"checkpoint written to {checkpoint_dir}; resume with fit(..., resume=True) "
            "or `dl train --resume DIR`"
            if checkpoint_dir is not None
            else "no checkpoint_dir was given, so nothing was saved"
        )
        super().__init__(
            f"Training stopped by {signal.Signals(signum).name} after step {step}: {where}."
        )


class _SignalFlag:
    """Turn SIGTERM/SIGINT into a flag that the loop checks between steps."""

    def __init__(self, enabled: bool):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self.enabled = enabled and threading.current_thread() is threading.main_thread()

    def _handle(self, signum, frame):
        self.signum = signum

    def __enter__(self):
        if self.enabled:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _nonfinite_error(sums, where: str) -> FloatingPointError:
    step = int(sums["first_nonfinite_step"])
    return FloatingPointError(
        f"Non-finite loss or gradient at step {step} ({where}); training stopped and the "
        "last good checkpoint was left untouched. Lower the learning rate, add clip_norm, "
        "check the inputs, or pass skip_nonfinite=True to make_train_step to skip such steps."
    )


def fit(
    state: TrainState,
    train_step: Callable,
    eval_step: Callable | None,
    train_data: tuple[Any, Any],
    *,
    epochs: int,
    batch_size: int,
    eval_data: Mapping[str, tuple[Any, Any]] | None = None,
    eval_every: int = 1,
    eval_batch_size: int = 512,
    early_stopping: EarlyStopping | None = None,
    seed: int = 0,
    metrics_path: str | os.PathLike | None = None,
    progress: bool = True,
    check_labels: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    keep_checkpoints: int = 3,
    resume: bool = False,
    run_config: Mapping[str, Any] | None = None,
    handle_signals: bool = True,
    strategy: str | Any = "auto",
    devices: int | None = None,
    steps_per_call: int = 1,
    kernels: str = "xla",
    targets: str | None = None,
    on_epoch: Callable[[int, TrainState], None] | None = None,
    learning_rate: float | Callable[[int], Any] | None = None,
    writers: Sequence[Any] = (),
    profile_dir: str | os.PathLike | None = None,
    profile_steps: int = 5,
) -> FitResult:
    """Train `state` for `epochs` passes over `train_data`.

    The data are checked once on the host (shapes, finiteness, label range) and then kept
    on the device. Each epoch is shuffled from (seed, epoch); its last partial batch is
    dropped (a different few examples each epoch) so every step has one shape and the
    step is compiled exactly once. Metrics stay on the device until the end of the epoch
    (or a checkpoint).

    With `checkpoint_dir`, a checkpoint (state, data position, partial epoch metrics,
    history, `run_config`) is written every `checkpoint_every` steps (default: every
    epoch), at the end, and when SIGTERM or SIGINT arrives; `resume=True` continues from
    the newest intact one, giving bitwise the same result as an uninterrupted run.

    Args:
      state: from `create_state`; it is copied, so the caller's state stays valid even
        though the compiled step donates its input buffers.
      train_step, eval_step: pure steps from `make_train_step` / `make_eval_step` (or
        your own with the same signatures; metrics are sums with a "count"). eval_step
        may be None when there is no eval_data.
      train_data: (x, y) arrays, or a streamed source: a callable `epoch -> iterable of
        {"x", "y"}` NumPy batches of `batch_size` rows (epochs counted from 0), for data
        that need not fit in memory (`dl.data.stream`: `array_source` over memory-mapped
        files, a Grain or tf.data pipeline). Batches are checked as they arrive and
        placed on the device a few ahead; shuffling is the source's; a resumed run is
        bitwise the same when `source(epoch)` repeats its batches (see there).
      epochs: passes over the training data.
      batch_size: examples per step (a source's batch size).
      eval_data: named (x, y) sets or sources evaluated every `eval_every` epochs and
        after the last, e.g. {"val": ..., "test": ...}; they appear in the history as
        "val/accuracy".
      eval_every: epochs between evaluations.
      eval_batch_size: batch size of evaluation.
      early_stopping: an `EarlyStopping`, monitoring one of the eval sets.
      seed: seed of the data order.
      metrics_path: if given, one JSON line per epoch is appended to this file (on
        resume it is rewritten from the checkpoint's history first).
      progress: show a tqdm progress bar (to stderr).
      check_labels: check labels are integers in [0, num_classes) (classification).
      targets: "labels" (class ids, for cross-entropy) or "values" (regression,
        reconstruction, binary cross-entropy); None infers it from y: "values" when y
        holds real numbers that are not all integers, else "labels". Pass it for
        integer-valued regression targets and 0/1 reconstruction targets. For a model
        with several outputs (a dict or tuple, `dl.losses.output_losses`), y is a dict
        or tuple of the same keys, and an integer target of an output with K > 1 scores
        per row is checked as class ids, any other as values.
      on_epoch: called as `on_epoch(epoch, state)` after each epoch's record, and as
        `on_epoch(0, state)` with the initial state before a fresh run's first step
        (e.g. to measure the state); the state is valid during the call only (the next
        step reuses its buffers), so copy what you keep.
      checkpoint_dir: folder for checkpoints (see `dl.checkpoint`), or None.
      checkpoint_every: steps between checkpoints; None saves at the end of every epoch.
      keep_checkpoints: how many recent checkpoints to keep (plus the best one when
        early stopping monitors a metric).
      resume: continue from the newest intact checkpoint in `checkpoint_dir`, if any.
      run_config: JSON-serialisable description of the run, stored in checkpoints.
      handle_signals: on SIGTERM/SIGINT finish the step, checkpoint, and raise
        `TrainingInterrupted` (main thread only).
      strategy: "auto" (sharded over all devices when there are several, else single),
        "single", "sharded", "pmap", or a `dl.parallel.Strategy` (see `dl.parallel`).
        batch_size is the global batch and must divide over the devices. Checkpoints hold
        the logical (unreplicated) state, so they resume on any number of devices.
      devices: use the first `devices` devices (default: all, or one for "single").
      steps_per_call: train steps per compiled call (a `lax.fori_loop`; 1: no loop).
        More steps per call save the host's dispatch on small models; a call also
        ends at the end of an epoch and at a checkpoint, and signals are checked
        between calls. The result does not depend on it. "pmap" and several
        processes call the step once per batch.
      kernels: compiler options, "xla" (plain `jax.jit`), "cpu" or "auto"
        (`dl.kernels.jit`). The model's own `kernels` field picks its layers.
      learning_rate: the optimizer's rate, a number or an optax schedule, recorded as
        "lr" in every record (the rate of the epoch's last update). None: read from an
        `optax.inject_hyperparams` state if the optimizer has one, else not recorded.
      writers: metric writers (`dl.writers`, e.g. `TensorBoardWriter(dir)`), each given
        every record's scalars with the step count.
      profile_dir: write a `jax.profiler` trace of `profile_steps` train steps here,
        taken after the first compiled call (so without compilation);
        `FitResult.profile_dir` says where it went.

    Returns:
      A `FitResult`.

    Raises:
      ValueError: bad arguments or data, with what was received.
      FloatingPointError: a loss or gradient became NaN or Inf (names the step).
      TrainingInterrupted: SIGTERM or SIGINT arrived.
    """
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    steps_per_call = check_positive_int("steps_per_call", steps_per_call)
    eval_every = check_positive_int("eval_every", eval_every)
    eval_batch_size = check_positive_int("eval_batch_size", eval_batch_size)
    if checkpoint_every is not None:
        checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir, the folder to resume from.")
    profile_steps = check_positive_int("profile_steps", profile_steps)
    lr_of = _learning_rate_reader(learning_rate)
    strategy = get_strategy(strategy, devices, batch_size=batch_size, kernels=kernels)
    train_set, evals = _check_data(
        state, train_data, eval_data, targets, check_labels, early_stopping, batch_size
    )
    strategy.check_batch_size(batch_size)
    streamed = isinstance(train_set, Streamed)
    if streamed or any(isinstance(v, Streamed) for v in evals.values()):
        strategy.check_streamable()
    # Evaluation pads its last batch anyway, so round it up to a multiple of the devices.
    eval_batch_size = strategy.round_batch_size(eval_batch_size)

    start = time.perf_counter()
    evals_dev = {
        k: v if isinstance(v, Streamed) else strategy.put_data(*v) for k, v in evals.items()
    }
    signature = _signature(train_set, batch_size, seed)
    mngr = _checkpoint_manager(checkpoint_dir, keep_checkpoints, early_stopping)
    run, target = _Progress(), state  # target: the logical layout checkpoints restore into
    if resume and mngr is not None and mngr.steps():
        run, target = _restore(mngr, state, signature, early_stopping, run_config)
    # A copy: the compiled step donates its input, and the caller's state must stay valid.
    state = strategy.put_state(_copy_tree(target))
    if metrics_path is not None:
        # The checkpoint's history is authoritative: epochs logged after it are redone.
        with open(metrics_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in run.history)

    t0 = time.perf_counter()
    calls = _train_calls(strategy, train_step, state, train_set, batch_size, seed, steps_per_call)
    compile_time = time.perf_counter() - t0
    sums = calls.sums_like(run.sums) if run.sums else None
    eval_fn = strategy.jit_eval_step(eval_step) if evals else None

    def save(epoch: int, batch: int, metrics: dict | None = None) -> None:
        """Write the state and the position to resume from: batch `batch` of `epoch`."""
        if mngr is not None:
            meta = run.meta(epoch, batch, _host_sums(sums), signature, run_config)
            mngr.save(strategy.get_state(state), meta=meta, metrics=metrics)

    log = open(metrics_path, "a") if metrics_path is not None else None  # noqa: SIM115
    bar = _progress_bar(progress, epochs, run.epoch - 1)
    step = int(target.step)
    profiler = _Profiler(profile_dir, profile_steps)
    if on_epoch is not None and run.epoch == 1 and run.batch == 0:
        on_epoch(0, strategy.get_state(state))
    try:
        with _SignalFlag(handle_signals) as flag:
            for epoch in range(run.epoch, epochs + 1):
                if run.stopped:
                    break
                t_epoch = time.perf_counter()
                skip = run.batch if epoch == run.epoch else 0
                sums = sums if skip else None
                calls.begin_epoch(epoch - 1, skip, last=epoch == epochs)
                for i, stop in calls.calls(skip, step, checkpoint_every):
                    profiler.before_call()
                    state, sums = calls.run(state, sums, i, stop)
                    step += stop - i
                    profiler.after_call(stop - i, state)
                    if flag.signum is not None or (
                        checkpoint_every is not None and step % checkpoint_every == 0
                    ):
                        _check_finite(sums, "found before writing a checkpoint")
                        save(epoch, stop)
                    if flag.signum is not None:
                        raise TrainingInterrupted(flag.signum, step, mngr and mngr.directory)
                calls.end_epoch(epoch - 1)
                if sums is None:
                    raise ValueError(
                        f"train data: epoch {epoch - 1} of the source gave no batch of "
                        f"batch_size {batch_size} rows; a source yields at least one per epoch."
                    )
                _check_finite(sums, f"epoch {epoch}")
                record = {"epoch": epoch, "step": step}
                record.update({f"train/{k}": v for k, v in metrics_lib.summarize(sums).items()})
                lr = lr_of(state, step)
                if lr is not None:
                    record["lr"] = lr
                if epoch % eval_every == 0 or epoch == epochs:
                    t_eval = time.perf_counter()
                    record.update(
                        _evaluate_sets(strategy, eval_fn, state, evals_dev, eval_batch_size, epoch)
                    )
                    record["eval_time_s"] = time.perf_counter() - t_eval
                    _check_monitored(early_stopping, record)
                record["epoch_time_s"] = time.perf_counter() - t_epoch
                record["time_s"] = run.time_offset + time.perf_counter() - start
                run.history.append(record)
                _log_record(log, bar, record)
                for writer in writers:
                    writer.write(step, {k: v for k, v in record.items() if k != "step"})
                if on_epoch is not None:
                    on_epoch(epoch, strategy.get_state(state))
                new_best = early_stopping is not None and run.early_stop(
                    early_stopping, record, epoch, eval_every
                )
                if new_best:
                    run.best_state = _copy_tree(strategy.get_state(state))
                sums = None
                epoch_metrics = {k: v for k, v in record.items() if isinstance(v, float)}
                # A new best is written even between step checkpoints: resume restores it.
                if checkpoint_every is None or epoch == epochs or run.stopped or flag.signum:
                    save(epoch + 1, 0, metrics=epoch_metrics)
                elif new_best:
                    save(epoch + 1, 0, metrics=epoch_metrics)
                if flag.signum is not None:
                    raise TrainingInterrupted(flag.signum, step, mngr and mngr.directory)
    finally:
        profiler.stop()
        for writer in writers:
            getattr(writer, "flush", lambda: None)()
        if streamed:
            calls.close()
        bar.close()
        if log is not None:
            log.close()
        if mngr is not None:
            mngr.close()
    _progress.ran("fit")
    return FitResult(
        state=run.best_state if run.best_state is not None else strategy.get_state(state),
        history=run.history,
        best_epoch=run.best_epoch,
        best_value=run.best_value,
        stopped_early=run.stopped,
        train_time_s=time.perf_counter() - start,
        compile_time_s=compile_time + getattr(calls, "compile_time_s", 0.0),
        strategy=strategy.name,
        num_devices=strategy.num_devices,
        kernels=strategy.kernels,
        profile_dir=profiler.written,
    )


def _signature(train_set, batch_size: int, seed: int) -> dict[str, Any]:
    """What a resumed run must share with the original for the result to be the same."""
    signature = {"batch_size": batch_size, "seed": seed}
    if isinstance(train_set, Streamed):
        signature["source"] = "streamed"  # its length and order are the source's promise
    else:
        n = len(train_set[0])
        signature.update(num_train=n, steps_per_epoch=n // batch_size)
    return signature


def _checkpoint_manager(checkpoint_dir, keep: int, early_stopping) -> CheckpointManager | None:
    if checkpoint_dir is None:
        return None
    return CheckpointManager(
        checkpoint_dir,
        keep_last=keep,
        best_metric=early_stopping.monitor if early_stopping is not None else None,
        best_mode=early_stopping.direction if early_stopping is not None else "max",
    )


def _train_calls(strategy, train_step, state, train_set, batch_size, seed, steps_per_call):
    """The compiled calls that run an epoch: over a streamed source, or over arrays put
    on the device once."""
    if isinstance(train_set, Streamed):
        return StreamCalls(
            strategy, train_step, train_set.source, batch_size, train_set.check, steps_per_call
        )
    data = strategy.put_data(*train_set)
    return TrainCalls(strategy, train_step, state, data, batch_size, seed, steps_per_call)


class _Profiler:
    """A `jax.profiler` trace of about `steps` train steps, started before the second
    compiled call of the run (the first may compile) and stopped once they are done."""

    def __init__(self, directory, steps: int):
        self.directory, self.steps = directory, steps
        self.calls = self.traced = 0
        self.active, self.written = False, None

    def before_call(self) -> None:
        self.calls += 1
        if self.directory is not None and self.written is None and self.calls == 2:
            jax.profiler.start_trace(os.fspath(self.directory))
            self.active = True

    def after_call(self, steps: int, state) -> None:
        if self.active:
            self.traced += steps
            if self.traced >= self.steps:
                jax.block_until_ready(state)
                self.stop()

    def stop(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active, self.written = False, str(self.directory)


def _learning_rate_reader(learning_rate) -> Callable[[Any, int], float | None]:
    """`(state, step) -> the rate of update number step` (None when unknown)."""
    if callable(learning_rate):
        return lambda state, step: float(learning_rate(max(step - 1, 0)))
    if learning_rate is not None:
        return lambda state, step: float(learning_rate)
    return lambda state, step: _injected_rate(getattr(state, "opt_state", None))


def _injected_rate(opt_state) -> float | None:
    """The "learning_rate" of an `optax.inject_hyperparams` state in `opt_state`."""
    has = lambda n: isinstance(getattr(n, "hyperparams", None), Mapping)  # noqa: E731
    for node in jax.tree.leaves(opt_state, is_leaf=has):
        if has(node) and "learning_rate" in node.hyperparams:
            return float(jax.device_get(node.hyperparams["learning_rate"]))
    return None


@dataclasses.dataclass
class _Progress:
    """Where a run is: what a checkpoint records and resume restores."""

    history: list = dataclasses.field(default_factory=list)
    epoch: int = 1  # the epoch to run next
    batch: int = 0  # the batch of that epoch to start from
    sums: dict | None = None  # host metric sums of that epoch so far
    best_value: float | None = None
    best_epoch: int | None = None
    stopped: bool = False
    time_offset: float = 0.0
    best_state: Any = None

    def meta(self, epoch, batch, host_sums, signature, run_config) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "batch": batch,
            "epoch_sums": host_sums,
            "history": self.history,
            "fit": signature,
            "config": dict(run_config or {}),
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped,
        }

    def early_stop(self, rule: EarlyStopping, record: dict, epoch: int, every: int) -> bool:
        """Update the best value and the stop flag; True when the state is a new best that
        should be kept."""
        if rule.monitor not in record:  # not evaluated this epoch
            return False
        value = record[rule.monitor]
        if rule.improved(value, self.best_value):
            self.best_value, self.best_epoch = value, epoch
            return rule.restore_best
        if epoch - self.best_epoch >= rule.patience * every:
            self.stopped = True
        return False


def config_differences(stored: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """The fields in which two run configurations differ, as "name: stored -> given"
    (compared as JSON, so a tuple and a list of the same values are equal)."""
    a, b = (json.loads(json.dumps(dict(c), default=str)) for c in (stored, given))
    return [
        f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, "(absent)") != b.get(k, "(absent)")
    ]


def _restore(mngr: CheckpointManager, state, signature, early_stopping, run_config=None):
    """The progress and state of the newest intact checkpoint, checked against this run:
    the data signature, and the whole run configuration when both sides have one."""
    restored = mngr.restore(state, "latest")
    meta = restored.meta
    if meta.get("fit") != signature:
        raise ValueError(
            f"Cannot resume from {mngr.directory}: it was written by a run with "
            f"{meta.get('fit')}, this run has {signature}. Use the same data, batch_size "
            "and seed, or a new checkpoint_dir."
        )
    if run_config is not None and meta.get("config"):
        diff = config_differences(meta["config"], run_config)
        if diff:
            raise ValueError(
                f"Cannot resume from {mngr.directory}: its checkpoint was written by a run "
                f"configured differently ({'; '.join(diff)}). Resume with the configuration "
                "it was written with, or start a new run in another folder."
            )
    history = list(meta["history"])
    run = _Progress(
        history=history,
        epoch=int(meta["epoch"]),
        batch=int(meta["batch"]),
        sums=meta.get("epoch_sums") or None,
        best_value=meta.get("best_value"),
        best_epoch=meta.get("best_epoch"),
        stopped=bool(meta.get("stopped_early", False)),
        time_offset=float(history[-1]["time_s"]) if history else 0.0,
    )
    if early_stopping is not None and early_stopping.restore_best and run.best_epoch:
        run.best_state = mngr.restore(restored.state, "best").state
    return run, restored.state


def _check_data(state, train_data, eval_data, targets, check_labels, early_stopping, batch_size):
    """Check the training and evaluation sets once, on the host; return them as arrays."""
    if getattr(state, "output_shapes", ()):  # a TrainState's; a GANState has none
        checks = functools.partial(_check_outputs_data, state, check_labels)
    else:
        checks = _single_output_checks(state, train_data, targets, check_labels)

    def checked(what: str, name: str, data):
        if is_source(data):  # streamed: each batch is checked as it arrives
            return Streamed(data, checks)
        return checks(*xy_pair(what, data), name=name)

    train = checked("train data", "train", train_data)
    if eval_data is not None and not isinstance(eval_data, Mapping):
        raise ValueError(
            f"eval_data must map names to (x, y) pairs or streamed sources, e.g. "
            f'{{"test": (x_test, y_test)}}; got {type(eval_data).__name__}.'
        )
    evals = {
        name: checked(f"eval_data[{name!r}]", name, xy) for name, xy in (eval_data or {}).items()
    }
    if early_stopping is not None:
        set_name = early_stopping.monitor.split("/", 1)[0]
        if set_name not in evals:
            raise ValueError(
                f"early_stopping monitors {early_stopping.monitor!r} but eval_data has no "
                f"{set_name!r} set (it has {sorted(evals) or 'none'}). Pass "
                f'eval_data={{"{set_name}": (x_val, y_val)}}; hold the validation set out '
                "of the training data (dl.data.validation_split)."
            )
    if not isinstance(train, Streamed):
        _check_batch_fits(batch_size, len(train[0]))
    return train, evals


@dataclasses.dataclass(frozen=True)
class Streamed:
    """A streamed data source (`dl.data.stream`) and the check each of its batches gets."""

    source: Callable
    check: Callable


def _single_output_checks(state, train_data, targets, check_labels):
    """`check_arrays` with what a one-output model's data must satisfy."""
    if targets is None and is_source(train_data):
        # A stream is not seen whole: integer targets are labels, real ones values.
        def by_dtype(x, y, *, name):
            kind = "labels" if np.issubdtype(np.asarray(y).dtype, np.integer) else "values"
            return _single_output_checks(state, None, kind, check_labels)(x, y, name=name)

        return by_dtype
    if targets is None:
        targets = _infer_targets(train_data)
    if targets not in ("labels", "values"):
        raise ValueError(f'targets must be "labels", "values" or None; got {targets!r}.')
    labels = targets == "labels"
    checks = dict(
        input_shape=state.input_shape,
        num_classes=state.num_classes if check_labels and labels else None,
        targets=targets,
        label_shape=tuple(state.output_shape[:-1]),
        integer_inputs=state.input_dtype == "int32",
        # Per-position labels (sequences, nodes) may leave positions unlabelled (-1).
        allow_unlabelled=labels and len(state.output_shape) > 1,
    )
    return functools.partial(check_arrays, **checks)


def _check_outputs_data(state, check_labels, x, y, *, name: str):
    """Check the data of a model with several outputs: y has the outputs' keys (a dict
    for a dict, a tuple for a tuple), and each target is checked as `check_arrays`
    does: integer targets of an output of K > 1 scores per row are class ids in
    [0, K), any other target real values."""
    keys = [k for k, _ in state.output_shapes]
    given = (
        list(y)
        if isinstance(y, Mapping)
        else list(range(len(y)))
        if isinstance(y, tuple | list)
        else None
    )
    if given != keys or isinstance(y, Mapping) != isinstance(keys[0], str):
        raise ValueError(
            f"{name}: the model's outputs are {dict(state.output_shapes)} (key: per-example "
            f"shape), so y must be a {'dict' if isinstance(keys[0], str) else 'tuple'} with "
            f"one target array per output in that order; got "
            f"{given if given is not None else type(y).__name__}."
        )
    out = {}
    for key, shape in state.output_shapes:
        y_k = np.asarray(y[key])
        labels = (
            np.issubdtype(y_k.dtype, np.integer)
            and len(shape) >= 1
            and shape[-1] > 1
            and y_k.shape[1:] == shape[:-1]
        )
        x, out[key] = check_arrays(
            x,
            y_k,
            input_shape=state.input_shape,
            num_classes=shape[-1] if labels and check_labels else None,
            name=f"{name} y[{key!r}]",
            targets="labels" if labels else "values",
            label_shape=shape[:-1] if labels else (),
            integer_inputs=state.input_dtype == "int32",
            allow_unlabelled=labels and len(shape) > 1,
        )
    return x, out if isinstance(y, Mapping) else tuple(out[k] for k in keys)


def _check_batch_fits(batch_size: int, n: int) -> None:
    """An epoch drops its last partial batch, so a batch larger than the data runs none."""
    if batch_size > n:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {n} training examples (an epoch "
            f"would have no full batch); use batch_size <= {n}."
        )


def xy_pair(what: str, data) -> tuple[Any, Any]:
    """`data` as an (x, y) pair, or a ValueError saying what was received instead."""
    if isinstance(data, tuple | list) and len(data) == 2:
        return data[0], data[1]
    got = (
        f"{type(data).__name__} of shape {np.shape(data)}"
        if hasattr(data, "shape")
        else f"a {type(data).__name__}"
        + (f" of {len(data)} items" if hasattr(data, "__len__") else "")
    )
    raise ValueError(f"{what} must be an (x, y) pair of arrays; got {got}.")


def _infer_targets(train_data) -> str:
    """ "labels" unless y holds real values that are not all integers (regression or
    reconstruction targets): integer class ids stored as floats stay labels."""
    y = train_data[1] if isinstance(train_data, tuple | list) and len(train_data) == 2 else None
    y = np.asarray(y) if y is not None else None
    if y is None or not np.issubdtype(y.dtype, np.floating):
        return "labels"
    integral = np.all(np.isfinite(y)) and np.all(y == np.round(y))
    return "labels" if integral else "values"


def _evaluate_placed(strategy, eval_fn, state, data, batch_size) -> dict[str, float]:
    """Mean metrics over placed `data`, its last batch padded and masked."""
    eval_batches = strategy.batches(data, batch_size, shuffle=False, remainder="pad")
    return _mean_metrics(eval_fn, state, eval_batches)


def _evaluate_sets(strategy, eval_fn, state, sets, batch_size, epoch=1) -> dict[str, float]:
    """Every eval set's mean metrics, as history keys "<set>/<metric>"; a streamed set
    is read as `source(epoch - 1)` (0-based, as in training) in its own batch size."""
    out = {}
    for name, data in sets.items():
        if isinstance(data, Streamed):
            res = _evaluate_streamed(strategy, eval_fn, state, data, name, epoch - 1)
        else:
            res = _evaluate_placed(strategy, eval_fn, state, data, batch_size)
        out.update({f"{name}/{k}": v for k, v in res.items()})
    return out


def _evaluate_streamed(strategy, eval_fn, state, data: Streamed, name: str, epoch: int):
    """Mean metrics over a streamed eval set, its last batch padded and masked."""
    batches = checked_batches(
        open_epoch(data.source, epoch, 0),
        data.check,
        batch_size=None,
        what=f"eval_data[{name!r}]",
        epoch=epoch,
        start=0,
        pad=True,
        multiple=strategy.num_devices,
    )
    feed = Prefetch(batches, strategy.put_batch)
    try:
        empty = f"eval_data[{name!r}]: the source gave no batch for epoch {epoch}."
        return _mean_metrics(eval_fn, state, feed, empty)
    finally:
        feed.close()


def _check_monitored(early_stopping, record: dict) -> None:
    if early_stopping is not None and early_stopping.monitor not in record:
        available = sorted(k for k in record if "/" in k)
        raise ValueError(
            f"early_stopping monitors {early_stopping.monitor!r}, which is not measured. "
            f"Available: {available}."
        )


def _host_sums(sums) -> dict | None:
    return None if sums is None else {k: v.item() for k, v in jax.device_get(sums).items()}


def _check_finite(sums, where: str) -> None:
    """Stop at a non-finite step that the step did not skip (`skip_nonfinite`)."""
    if sums is None or "nonfinite" not in sums:
        return
    host = jax.device_get({k: sums[k] for k in ("nonfinite", "skipped") if k in sums})
    if int(host["nonfinite"]) > int(host.get("skipped", 0)):
        raise _nonfinite_error(sums, where)


def _progress_bar(enabled: bool, epochs: int, done: int):
    from tqdm.auto import tqdm

    return tqdm(
        total=epochs,
        initial=min(done, epochs),
        unit="epoch",
        disable=not enabled or jax.process_index() != 0,
        dynamic_ncols=True,
    )


def _log_record(log, bar, record: dict) -> None:
    if log is not None:
        log.write(json.dumps(record) + "\n")
        log.flush()
    bar.update(1)
    bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k.endswith(("loss", "accuracy"))})


# --------------------------------------------------------------------------- train


# Steps per compiled call (`dl.train.fit`): many for models whose steps run as fast in
# a compiled loop as alone, one for those with strided or transposed convolutions, whose
# gradients XLA:CPU computes far more slowly inside loops (jax-ml/jax#12868).
LOOP_STEPS = 32


def default_steps_per_call(model) -> int:
    """`LOOP_STEPS`, or 1 for a model with strided or transposed convolutions (ResNet,
    ViT's patches, the conv autoencoder, a CNN with strides > 1, the GANs)."""
    strided = (ResNet, ViT, DCGAN)
    if isinstance(model, strided) or getattr(model, "kind", None) == "conv":
        return 1
    if getattr(model, "strides", 1) != 1:
        return 1
    return LOOP_STEPS


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """How `train` trains: optimizer, loss, length, and how steps are compiled.

    Attributes:
      epochs, batch_size: training length and global batch size.
      optimizer: an `OptimizerConfig` (`dl.optim`); the default is Adam at 1e-3 with a
        warmup-cosine schedule.
      loss, label_smoothing, augment, skip_nonfinite, compute_dtype, rngs: as in
        `make_train_step` (`augment` by name from `dl.data.AUGMENTATIONS`; `loss` a
        name or a callable `(outputs, targets) -> per-example loss`, or, for a model
        with several outputs, a dict or tuple of them: `dl.losses.output_losses`).
      seed: seed of initialisation, dropout, augmentation and data order.
      eval_every, steps_per_call, kernels: as in `fit`.
      grad_accum, ema_decay: as in `make_train_step` (the state keeps a moving average
        of the parameters, used for evaluation, when `ema_decay` is set).
    """

    epochs: int
    batch_size: int = 64
    optimizer: OptimizerConfig = dataclasses.field(
        default_factory=lambda: OptimizerConfig(schedule="warmup_cosine")
    )
    loss: str | Callable | Mapping | tuple = "cross_entropy"
    label_smoothing: float = 0.0
    augment: str = "none"
    skip_nonfinite: bool = False
    compute_dtype: str | None = None
    seed: int = 0
    eval_every: int = 1
    steps_per_call: int = 1
    kernels: str = "xla"
    rngs: tuple[str, ...] = DEFAULT_RNGS
    grad_accum: int = 1
    ema_decay: float | None = None


def train(
    model,
    data: tuple[Any, Any],
    config: FitConfig,
    *,
    input_dtype: str = "float32",
    params: Mapping[str, Any] | None = None,
    frozen: Collection[str] | None = None,
    axis_name: str | None = None,
    **fit_kwargs,
) -> FitResult:
    """Train `model` on `data` = (x, y): the one entry point that recipes, baselines,
    analysis and the experiments build on.

    Builds the optimizer (for the run's length), the state, the pure steps, and calls
    `fit`.

    Args:
      model: a Flax Linen module.
      data: the training arrays (x, y).
      config: a `FitConfig`.
      input_dtype: "float32", or "int32" for token ids.
      params: initial parameters for the top-level modules present in it (others keep
        their initialisation), e.g. copied from a pre-trained network.
      frozen: names of top-level modules whose parameters get zero updates (and no
        optimizer state), `dl.optim.freeze`; an empty list still wraps the optimizer.
      axis_name: the steps' pmap axis (the "pmap" strategy needs `dl.parallel.DATA_AXIS`).
      **fit_kwargs: passed to `fit` (eval_data, early_stopping, checkpoint_dir, ...).

    Returns:
      `fit`'s `FitResult`.
    """
    if is_source(data):
        raise ValueError(
            "train() takes (x, y) arrays: it sizes the model and the learning-rate schedule "
            "from them. For a streamed source, build the state with create_state and the "
            "steps with make_steps, and call fit(state, train_step, eval_step, source, ...)."
        )
    x, y = xy_pair("train data", data)
    if len(x) == 0:
        raise ValueError("train got an empty training set (0 examples).")
    _check_batch_fits(config.batch_size, len(x))  # before the schedule's length is computed
    steps = num_batches(len(x), config.batch_size) * config.epochs
    tx = make_optimizer(config.optimizer, steps)
    state = create_state(
        model,
        tx,
        np.shape(x)[1:],
        seed=config.seed,
        input_dtype=input_dtype,
        rngs=config.rngs,
        ema=config.ema_decay is not None,
    )
    if params is not None or frozen is not None:
        unknown = (set(params or {}) | set(frozen or ())) - set(state.params)
        if unknown:
            raise ValueError(
                f"Unknown module(s) {sorted(unknown)} in params or frozen; the model has "
                f"{sorted(state.params)}."
            )
        merged = dict(state.params)
        merged.update({k: jax.tree.map(jax.numpy.asarray, v) for k, v in (params or {}).items()})
        if frozen is not None:
            frozen_set = set(frozen)
            tx = freeze(tx, merged, lambda name: name in frozen_set)
        ema = jax.tree.map(jax.numpy.copy, merged) if state.ema_params is not None else None
        state = state.replace(params=merged, opt_state=tx.init(merged), ema_params=ema)
    train_step, eval_step = _steps(model, tx, config, axis_name)
    fit_kwargs.setdefault("seed", config.seed)
    fit_kwargs.setdefault("learning_rate", make_schedule(config.optimizer, steps))
    # A callable loss says nothing about its targets: fit infers them from y.
    if isinstance(config.loss, str):
        fit_kwargs.setdefault("targets", "labels" if classifies(config.loss) else "values")
    return fit(
        state,
        train_step,
        eval_step,
        data,
        epochs=config.epochs,
        batch_size=config.batch_size,
        eval_every=config.eval_every,
        steps_per_call=config.steps_per_call,
        kernels=config.kernels,
        **fit_kwargs,
    )


def _steps(model, tx, config: FitConfig, axis_name: str | None = None):
    """The pure train and eval steps that `config` describes."""
    step_kw = dict(
        loss=config.loss,
        compute_dtype=config.compute_dtype,
        axis_name=axis_name,
        rngs=config.rngs,
    )
    train_step = make_train_step(
        model,
        tx,
        label_smoothing=config.label_smoothing,
        augment=AUGMENTATIONS[config.augment],
        skip_nonfinite=config.skip_nonfinite,
        grad_accum=config.grad_accum,
        ema_decay=config.ema_decay,
        **step_kw,
    )
    return train_step, make_eval_step(model, **step_kw, use_ema=config.ema_decay is not None)


@dataclasses.dataclass
class SeedsResult:
    """What `train_seeds` returns.

    Attributes:
      seeds: each run's seed, in the order of the leading axis of `states`.
      learning_rates: each run's learning rate, in the same order.
      states: one `TrainState` whose arrays have a leading axis, one entry per run.
      history: one dict per evaluation, epoch 0 (before training) first: "epoch",
        "<eval set>/loss" and "<eval set>/accuracy" (classification), and from epoch 1
        "train/nonfinite_steps" (steps since the last evaluation whose loss or gradient
        was not finite), as numpy arrays with one value per seed.
      compile_time_s: compiling the whole run (every seed, every epoch).
      run_time_s: running the compiled run once (warm; compilation excluded).
    """

    seeds: list[int]
    learning_rates: list[float]
    states: TrainState
    history: list[dict[str, Any]]
    compile_time_s: float
    run_time_s: float

    def state(self, i: int) -> TrainState:
        """The state of run number `i` (an index into `seeds` and `learning_rates`)."""
        return jax.tree.map(lambda a: a[i], self.states)

    def predict(self, model, x, *, batch_size: int = 1024) -> np.ndarray:
        """Every run's outputs on `x` (inference mode): shape (runs, len(x), ...)."""
        model = adapt(model)

        @jax.jit
        def apply(states, xb):
            def one(st):
                v = {"params": st.params}
                if st.batch_stats:
                    v["batch_stats"] = st.batch_stats
                return model.apply(v, xb, **mode_kwargs(model, False))

            return jax.vmap(one)(states)

        x = np.asarray(x)
        parts = [apply(self.states, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate([np.asarray(p) for p in parts], axis=1)


def _check_given_shapes(given, init_params, per_seed: int | None) -> None:
    """Every given array has its module's shape (after a leading seed axis when
    `per_seed`): a mismatch would otherwise surface as a shape error deep in the step."""
    lead = () if per_seed is None else (per_seed,)
    for name, sub in given.items():
        want = jax.tree.map(lambda a: (*lead, *np.shape(a)), init_params[name])
        got = jax.tree.map(np.shape, sub)
        if want != got:
            raise ValueError(
                f"train_seeds got params[{name!r}] of shapes {got}; the model's are "
                f"{jax.tree.map(np.shape, init_params[name])}"
                + (f" after a leading axis of {per_seed} seeds." if lead else ".")
            )


def train_seeds(
    model,
    data: tuple[Any, Any],
    config: FitConfig,
    seeds: Collection[int],
    *,
    eval_data: Mapping[str, tuple[Any, Any]] | None = None,
    learning_rates: Collection[float] | None = None,
    params: Mapping[str, Any] | None = None,
    per_seed_params: bool = False,
    frozen: Collection[str] = (),
    per_seed_data: bool = False,
    runs: str = "vmap",
    input_dtype: str = "float32",
) -> SeedsResult:
    """Train one copy of `model` per seed at once: `jax.vmap` of the pure train step over
    the seeds' states, every epoch in one compiled `lax.scan`, so more seeds cost one
    compilation and a wider step instead of a Python loop.

    Each seed's run is `train(model, data, replace(config, seed=s))` but for the order of
    its batches (a permutation per epoch drawn from the seed's key; the last partial batch
    is dropped) and for what `fit` adds on the host (checkpoints, early stopping,
    progress). The evaluation sets are evaluated whole after every `config.eval_every`
    epochs and before training (epoch 0), so they must fit in memory at once.

    With `learning_rates`, every seed runs at every learning rate (runs ordered rate by
    rate, seeds inside: `SeedsResult.learning_rates` and `.seeds` name each run), still
    one compilation: the updates of each run are multiplied by its rate over
    `config.optimizer.learning_rate` (an `optax.inject_hyperparams(optax.scale)` after
    the optimizer), which is the same as changing the rate for every `dl.optim`
    optimizer, since each ends with its (scheduled) learning rate.

    `params` (e.g. a pre-trained network's) replaces the initial parameters of the
    top-level modules it names, in every run; the other modules keep each seed's init.
    With `per_seed_params`, each of its arrays has a leading axis of one value per seed
    (e.g. one pre-trained network per seed). The modules named in `frozen` get zero
    updates (`dl.optim.freeze`), as in `train`.

    With `per_seed_data`, `data`'s arrays have a leading axis of one training set per
    seed (all of one size), e.g. a subsample drawn by each seed, so that the seeds vary
    the data as well as the initialisation and still share one compilation.

    `runs` says how the runs share the compiled program: "vmap" (the default) batches
    them into one wider step, best where the step is small or the device wide;
    "sequential" runs them one after another (`lax.map`) inside the same program, which
    was faster for convolutional nets on the CPU, where XLA's batched-weight
    convolutions are slow. Both give the same results.
    """
    from jax import lax

    x, y = np.asarray(data[0]), np.asarray(data[1])
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"train_seeds needs distinct seeds; got {seeds}.")
    base_lr = config.optimizer.learning_rate
    rates = [float(r) for r in (learning_rates or [base_lr])]
    if min(rates) <= 0 or not np.isfinite(rates).all():
        raise ValueError(f"learning_rates must be positive and finite; got {rates}.")
    runs_seed = [s for _ in rates for s in seeds]
    runs_rate = [r for r in rates for _ in seeds]
    if per_seed_data:
        if x.ndim < 2 or len(x) != len(seeds) or len(y) != len(seeds):
            raise ValueError(
                f"per_seed_data needs x and y with a leading axis of one training set per seed "
                f"({len(seeds)}); got shapes {x.shape} and {y.shape}."
            )
        runs_data = [i for _ in rates for i in range(len(seeds))]
    else:
        x, y = x[None], y[None]
        runs_data = [0] * len(runs_seed)
    if x.shape[1] == 0 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"train_seeds needs x and y of the same non-zero length; got {x.shape[1]} and "
            f"{y.shape[1]}."
        )
    check_positive_int("epochs", config.epochs)
    check_positive_int("eval_every", config.eval_every)
    if runs not in ("vmap", "sequential"):
        raise ValueError(f"runs must be 'vmap' or 'sequential'; got {runs!r}.")
    if config.epochs % config.eval_every:
        raise ValueError(
            f"train_seeds evaluates every eval_every epochs, so epochs must be a multiple of "
            f"it; got epochs={config.epochs}, eval_every={config.eval_every}."
        )
    n = x.shape[1]
    batch = min(config.batch_size, n)
    steps = n // batch
    opt = make_optimizer(config.optimizer, steps * config.epochs)
    first = create_state(
        model, opt, x.shape[2:], seed=seeds[0], input_dtype=input_dtype, rngs=config.rngs
    )
    given = dict(params or {})
    unknown = sorted((set(given) | set(frozen)) - set(first.params))
    if unknown:
        raise ValueError(
            f"train_seeds got params or frozen for {unknown}, which the model does not "
            f"have; its top-level modules are {sorted(first.params)}."
        )
    given = jax.tree.map(jax.numpy.asarray, given)
    _check_given_shapes(given, first.params, len(seeds) if per_seed_params else None)
    if frozen:
        frozen_set = set(frozen)
        opt = freeze(opt, first.params, lambda name: name in frozen_set)
    tx = optax.chain(opt, optax.inject_hyperparams(optax.scale)(step_size=1.0))
    first = first.replace(opt_state=tx.init(first.params))

    def init(seed, scale, i):
        x0 = jax.numpy.zeros((1, *x.shape[2:]), input_dtype)
        v, run_key = init_variables(model, jax.random.key(seed), x0, config.rngs)
        mine = jax.tree.map(lambda a: a[i], given) if per_seed_params else given
        p = {**v["params"], **mine}
        opt_state = tx.init(p)
        opt_state[1].hyperparams["step_size"] = scale
        return first.replace(
            params=p,
            batch_stats=v.get("batch_stats", {}),
            opt_state=opt_state,
            rng=run_key,
        )

    train_step, eval_step = _steps(model, tx, config)
    sets = {k: (np.asarray(a), np.asarray(b)) for k, (a, b) in (eval_data or {}).items()}

    def evaluate(state, sets):
        out = {}
        for name, (ex, ey) in sets.items():
            m = eval_step(state, {"x": ex, "y": ey, "mask": np.ones(len(ex), bool)})
            out[f"{name}/loss"] = m["loss_sum"] / m["count"]
            if "correct" in m:
                out[f"{name}/accuracy"] = m["correct"] / m["count"]
        return out

    def one_epoch(state, epoch, d, xd, yd):
        order = jax.random.permutation(jax.random.fold_in(state.rng, epoch), n)
        idx = order[: steps * batch].reshape(steps, batch)

        def body(s, i):
            xb, yb = xd[d, i], yd[d, i]
            s, m = train_step(s, {"x": xb, "y": yb, "mask": jax.numpy.ones(batch, bool)})
            return s, m["nonfinite"]

        state, nonfinite = lax.scan(body, state, idx)
        return state, nonfinite.sum()

    n_evals = config.epochs // config.eval_every

    def run_one(arrays, seed, scale, d, i):
        xd, yd, sets = arrays
        state = init(seed, scale, i)
        before = evaluate(state, sets)

        def chunk(state, c):
            def epoch(e, carry):
                st, bad = carry
                st, k = one_epoch(st, c * config.eval_every + e, d, xd, yd)
                return st, bad + k

            state, bad = lax.fori_loop(0, config.eval_every, epoch, (state, jax.numpy.int32(0)))
            return state, {**evaluate(state, sets), "train/nonfinite_steps": bad}

        state, after = lax.scan(chunk, state, jax.numpy.arange(n_evals))
        return state, before, after

    # The data are arguments, not constants closed over: XLA folds large constants
    # slowly (a one-layer MLP on mnist1d compiled in 2.8 s with them inside).
    def run_all(arrays, *per_run):
        if runs == "sequential":
            return lax.map(lambda a: run_one(arrays, *a), per_run)
        return jax.vmap(run_one, in_axes=(None, 0, 0, 0, 0))(arrays, *per_run)

    args = (
        (jax.numpy.asarray(x), jax.numpy.asarray(y), sets),
        jax.numpy.asarray(runs_seed, jax.numpy.uint32),
        jax.numpy.asarray(np.asarray(runs_rate) / base_lr, jax.numpy.float32),
        jax.numpy.asarray(runs_data, jax.numpy.int32),
        jax.numpy.asarray([i for _ in rates for i in range(len(seeds))], jax.numpy.int32),
    )
    t0 = time.perf_counter()
    compiled = jax.jit(run_all).lower(*args).compile()
    t1 = time.perf_counter()
    states, before, after = jax.block_until_ready(compiled(*args))
    t2 = time.perf_counter()
    history = [{"epoch": 0, **{k: np.asarray(v) for k, v in before.items()}}]
    for c in range(n_evals):
        row = {k: np.asarray(v[:, c]) for k, v in after.items()}
        history.append({"epoch": (c + 1) * config.eval_every, **row})
    _progress.ran("train_seeds")
    return SeedsResult(runs_seed, runs_rate, states, history, t1 - t0, t2 - t1)
