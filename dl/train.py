"""The reference trainer: a train state, pure train/eval steps, and one readable fit loop.

Read top to bottom:

1. `TrainState` is a pytree (step, params, batch_stats, opt_state, rng); the model's
   input shape and class count ride along as static metadata for error messages.
2. `make_train_step` / `make_eval_step` build PURE functions `(state, batch) -> ...`
   from `model.apply`, a loss and an optax transformation. Dropout and augmentation keys
   are `fold_in(state.rng, state.step)`, so a step is a function of its inputs only.
   Metrics are sums and counts (`dl.metrics`).
3. `fit` compiles the step once (`jax.jit` with the state donated), keeps the data on the
   device, syncs with the host once per epoch, evaluates, logs JSON lines, stops early
   and restores the best state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from dl import metrics as metrics_lib
from dl import xla
from dl._errors import check_positive_int
from dl.data.batching import EpochPlans, batches, epoch_plan, gather_step, num_batches
from dl.data.validate import check_arrays
from dl.losses import LOSSES, get_loss
from dl.parallel import collective_axis, psum_if_mapped

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree.

    Attributes:
      step: number of optimizer steps taken (int32 scalar).
      params: model parameters.
      batch_stats: BatchNorm running statistics ({} for models without BatchNorm).
      opt_state: the optax state.
      rng: the run's root key; the key of step t is `fold_in(rng, t)`.
      input_shape: per-example input shape the model was built for (static metadata).
      num_classes: size of the model's output (static metadata).
      input_dtype: "float32", or "int32" for token ids (static metadata).
      output_shape: per-example output shape, e.g. (10,) or (T, vocab) (static).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    input_shape: tuple[int, ...] = struct.field(pytree_node=False, default=())
    num_classes: int = struct.field(pytree_node=False, default=0)
    input_dtype: str = struct.field(pytree_node=False, default="float32")
    output_shape: tuple[int, ...] = struct.field(pytree_node=False, default=())


def create_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape,
    *,
    seed: int = 0,
    key: jax.Array | None = None,
    input_dtype: str = "float32",
) -> TrainState:
    """Initialise parameters, batch statistics and optimizer state.

    Args:
      model: a Linen module called as `model(x, train=...)`.
      tx: an optax transformation (e.g. from `dl.optim.make_optimizer`).
      input_shape: the per-example input shape, e.g. `dataset.input_shape`.
      seed: seed of the root key (ignored when `key` is given).
      key: a `jax.random.key` to use instead of `seed`.
      input_dtype: "float32" for numbers, "int32" for token ids (`dataset.input_dtype`).

    Returns:
      A `TrainState` at step 0.
    """
    try:
        input_shape = tuple(int(d) for d in input_shape)
    except TypeError:
        raise ValueError(
            f"input_shape must be a tuple of ints such as (28, 28, 1); got {input_shape!r}."
        ) from None
    if not input_shape or min(input_shape) < 1:
        raise ValueError(f"input_shape must be non-empty with positive sizes; got {input_shape}.")
    if input_dtype not in ("float32", "int32"):
        raise ValueError(f"input_dtype must be 'float32' or 'int32'; got {input_dtype!r}.")
    root = jax.random.key(seed) if key is None else key
    init_key, dropout_key, run_key = jax.random.split(root, 3)
    x = jnp.zeros((1, *input_shape), input_dtype)

    def init(k_params, k_dropout):
        return model.init({"params": k_params, "dropout": k_dropout}, x, train=False)

    try:
        # Shape first: a wrong input shape fails here, cheaply, before any compilation.
        abstract = jax.eval_shape(init, init_key, dropout_key)
        out = jax.eval_shape(lambda v: model.apply(v, x, train=False), abstract)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"Could not build {type(model).__name__} for inputs of shape {input_shape}: {e}"
        ) from e
    variables = jax.jit(init)(init_key, dropout_key)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=run_key,
        input_shape=input_shape,
        num_classes=int(out.shape[-1]),
        input_dtype=input_dtype,
        output_shape=tuple(int(d) for d in out.shape[1:]),
    )


def _unpack(state: TrainState, batch: Batch):
    """Check a batch's structure and static shapes at trace time; return (x, y, mask)."""
    if not isinstance(batch, Mapping) or "x" not in batch or "y" not in batch:
        got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ValueError(f'A batch must be a dict with keys "x", "y" (and "mask"); got {got}.')
    x, y = batch["x"], batch["y"]
    if state.input_shape and tuple(x.shape[1:]) != state.input_shape:
        raise ValueError(
            f"Batch x has shape {tuple(x.shape)}, i.e. examples of shape {tuple(x.shape[1:])}, "
            f"but the model was built for examples of shape {state.input_shape}."
        )
    if y.shape[:1] != x.shape[:1]:
        raise ValueError(f"Batch x has {x.shape[0]} examples but y has shape {tuple(y.shape)}.")
    mask = batch.get("mask")
    if mask is None:
        mask = jnp.ones((x.shape[0],), jnp.float32)
    if x.dtype != jnp.dtype(state.input_dtype):
        x = x.astype(state.input_dtype)
    return x, y, mask


COMPUTE_DTYPES = ("float32", "bfloat16")


def _check_compute_dtype(compute_dtype: str | None) -> None:
    if compute_dtype is not None and compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"compute_dtype must be one of {COMPUTE_DTYPES} or None; got {compute_dtype!r}."
        )


def _cast_floats(tree, dtype):
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def _apply(model, params, batch_stats, x, *, train: bool, rngs=None, compute_dtype=None):
    """model.apply -> (outputs, new batch_stats, auxiliary losses).

    Auxiliary losses are what the model sowed into the "losses" collection (e.g. the
    VAE's KL term): {name: per-example values (B,)}, added to the objective by the train
    step and reported as separate metrics. Empty for most models.

    With `compute_dtype="bfloat16"` (mixed precision) the float32 parameters and float
    inputs are cast to bfloat16 for the forward and backward passes; gradients reach the
    float32 parameters through the cast, BatchNorm statistics stay float32 (flax reduces
    them in float32), and outputs and auxiliary losses come back as float32, so the loss
    and the optimizer run in float32.
    """
    mixed = compute_dtype not in (None, "float32")
    if mixed:
        params = _cast_floats(params, compute_dtype)
        x = _cast_floats(x, compute_dtype)
    variables = {"params": params}
    mutable = ["losses"]
    if batch_stats:
        variables["batch_stats"] = batch_stats
        if train:
            mutable.append("batch_stats")
    out, mutated = model.apply(variables, x, train=train, rngs=rngs, mutable=mutable)
    aux = {name: sum(values) for name, values in mutated.get("losses", {}).items()}
    new_stats = mutated.get("batch_stats", batch_stats)
    if mixed:
        out, aux = _cast_floats((out, aux), jnp.float32)
        new_stats = jax.tree.map(lambda n, o: n.astype(o.dtype), new_stats, batch_stats)
    return out, new_stats, aux


# Evaluation draws the model's "noise" (e.g. the VAE's latent sample) from a fixed key, so
# that evaluating the same state twice gives the same numbers.
_EVAL_NOISE_SEED = 0


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        get_loss(loss)  # raises the standard unknown-name error


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    loss: str = "cross_entropy",
    label_smoothing: float = 0.0,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    skip_nonfinite: bool = False,
    compute_dtype: str | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Build the pure train step `(state, batch) -> (state, metrics)`.

    The step is not compiled here: `fit` compiles it once with donation, and `dl.parallel`
    can compile the same function for many devices. Jitting it yourself is fine too.

    Every step checks that its loss and gradients are finite and reports it in the
    metrics ("nonfinite", "first_nonfinite_step") without a host sync; `fit` stops with
    an error naming the step. With `skip_nonfinite=True` a non-finite step leaves
    params, batch_stats and opt_state unchanged instead (the step counter still advances),
    like `optax.apply_if_finite` but covering the BatchNorm statistics too.

    Args:
      model: the Linen module.
      tx: the optax transformation the state was created with.
      loss: "cross_entropy" (integer labels), "mse" or "binary_cross_entropy".
      label_smoothing: for cross-entropy only.
      augment: optional pure `(key, x) -> x` applied to the batch inside the step
        (e.g. `dl.data.random_shift`).
      skip_nonfinite: skip updates whose loss or gradient is NaN or Inf.
      compute_dtype: None or "float32" (default), or "bfloat16" for mixed precision:
        the model runs in bfloat16 on float32 master parameters, and the loss,
        gradients and optimizer stay float32. Meant for GPUs and TPUs (bf16 matrix
        units); on this project's CPU a small CNN ran slower in it (gpu.py --smoke).

    Returns:
      train_step(state, batch) with batch {"x", "y", "mask"?}; the loss is the mean over
      examples with mask 1; metrics are sums (`loss_sum`, `correct`, `count`,
      `nonfinite`) and `first_nonfinite_step`.
    """
    _check_loss(loss)
    _check_compute_dtype(compute_dtype)
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing!r}.")
    if label_smoothing and loss != "cross_entropy":
        raise ValueError(f"label_smoothing applies to cross_entropy only; loss is {loss!r}.")

    def per_example(logits, y):
        return _per_position_loss(loss, logits, y, label_smoothing)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        x, y, mask = _unpack(state, batch)
        # Under pmap (dl.parallel) each device holds part of the global batch: the loss is
        # this part's sum over the global count, and gradients and metrics are psum-ed.
        axis = collective_axis()
        key = jax.random.fold_in(state.rng, state.step)
        if axis is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis))  # own noise per device
        aug_key, dropout_key = jax.random.split(key)
        noise_key = jax.random.fold_in(dropout_key, 1)  # input corruption, VAE samples
        if augment is not None:
            x = augment(aug_key, x)

        def objective(params):
            rngs = {"dropout": dropout_key, "noise": noise_key}
            logits, new_stats, aux = _apply(
                model,
                params,
                state.batch_stats,
                x,
                train=True,
                rngs=rngs,
                compute_dtype=compute_dtype,
            )
            per_ex = per_example(logits, y)  # (B,) or (B, T) with one label per step
            total = per_ex + sum(aux.values()) if aux else per_ex
            m = metrics_lib.label_weights(mask, y, per_ex.shape, loss)
            count = psum_if_mapped(jnp.sum(m))
            return jnp.sum(total * m) / jnp.maximum(count, 1.0), (logits, per_ex, aux, new_stats)

        (loss_value, (logits, per_ex, aux, new_stats)), grads = jax.value_and_grad(
            objective, has_aux=True
        )(state.params)
        loss_value, grads = psum_if_mapped((loss_value, grads))
        finite = jnp.isfinite(loss_value) & _all_finite(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = (optax.apply_updates(state.params, updates), new_stats, opt_state)
        if skip_nonfinite:
            old = (state.params, state.batch_stats, state.opt_state)
            new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = state.replace(
            step=state.step + 1, params=new[0], batch_stats=new[1], opt_state=new[2]
        )
        # A skipped step's loss and accuracy count nowhere.
        metrics = metrics_lib.loss_and_accuracy(
            logits,
            y,
            jnp.where(finite, per_ex, 0.0),
            mask * finite,
            loss=loss,
            aux={k: jnp.where(finite, v, 0.0) for k, v in aux.items()},
        )
        metrics = psum_if_mapped(metrics)
        metrics["nonfinite"] = (~finite).astype(jnp.int32)
        metrics["first_nonfinite_step"] = jnp.where(
            finite, metrics_lib.NO_STEP, state.step + 1
        ).astype(jnp.int32)
        return new_state, metrics

    train_step.skip_nonfinite = skip_nonfinite  # read by fit's divergence guard
    train_step.loss = loss  # read by fit to check the targets
    return train_step


def make_train_loop(
    train_step: Callable, *, constrain: Callable | None = None, loop: bool = True
) -> Callable:
    """Run many steps of `train_step` in one call: the fit loop's inner loop.

    Returns the pure `loop(state, sums, x, y, idx, mask, start, stop) -> (state, sums)`.
    It runs steps `start..stop-1` of an epoch plan (`idx`, `mask` of shape
    (steps, batch), from `dl.data.epoch_indices`) in a `lax.fori_loop`: step i gathers
    batch `idx[i]` of the device-resident (x, y) and adds its metrics to `sums` (from
    `zero_metrics`). Compiled once, it serves any `start` and `stop`, so a call can stop
    at a checkpoint or a signal check and the result does not depend on how an epoch is
    cut into calls. Small models gain most: the host dispatches one call, not three
    (gather, step, metric sum), per step.

    With `loop=False` a call runs the single step `start` (`stop` must be `start + 1`)
    with no loop around it: still one dispatch per step, not three. XLA:CPU computes
    the gradients of lax's convolutions inside a loop body up to 100x slower than
    outside one (jax-ml/jax#12868: it rewrites them for Eigen outside loops only); `dl`'s
    `Conv` gives the usual ones that form itself (`dl.models.layers._kernel_grad`), but
    steps with any other convolution (strided, dilated, grouped, bfloat16) use this
    form on CPU (`loops_well`).

    Args:
      train_step: a pure step from `make_train_step` (or one with its signature).
      constrain: applied to each gathered batch (the sharded strategy places it).
      loop: False for one step per call, without a loop.
    """

    def train_loop(state, sums, x, y, idx, mask, start, stop):
        def body(i, carry):
            st, acc = carry
            batch = gather_step(x, y, idx, mask, i)
            if constrain is not None:
                batch = constrain(batch)
            st, m = train_step(st, batch)
            return st, metrics_lib.add(acc, m)

        if not loop:
            return body(start, (state, sums))
        return jax.lax.fori_loop(start, stop, body, (state, sums))

    return train_loop


def loops_well(train_step: Callable, state: TrainState, batch: Batch) -> bool:
    """Whether running `train_step` inside a compiled loop is as fast as calling it
    once per step: on CPU, only when each of its convolutions (forward and gradients)
    is a plain channels-last one, batch first and features last in, kernel (*k, in,
    out), as `dl.models.layers.Conv` computes them (see `make_train_loop`)."""
    return _loops_well(jax.make_jaxpr(train_step)(state, batch))


def _loops_well(jaxpr) -> bool:
    if jax.default_backend() != "cpu":
        return True
    for eqn in _equations(jaxpr.jaxpr):
        if eqn.primitive.name == "conv_general_dilated":
            dn = eqn.params["dimension_numbers"]
            nd = len(dn.lhs_spec) - 2
            channels_last = (0, nd + 1, *range(1, nd + 1))
            if (dn.lhs_spec, dn.out_spec, dn.rhs_spec) != (
                channels_last,
                channels_last,
                (nd + 1, nd, *range(nd)),
            ):
                return False
    return True


def _equations(jaxpr):
    """The equations of a jaxpr and of the jaxprs nested in it (pjit, cond, scan, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def zero_metrics(train_step: Callable, state: TrainState, batch: Batch) -> Metrics:
    """The identity of `dl.metrics.add` for `train_step`'s metrics: zeros, and
    `dl.metrics.NO_STEP` for the keys combined by minimum."""
    return _zero_metrics(jax.eval_shape(train_step, state, batch)[1])


def _zero_metrics(shapes) -> Metrics:
    return {
        k: jnp.full(v.shape, metrics_lib.NO_STEP if k in metrics_lib.MIN_KEYS else 0, v.dtype)
        for k, v in shapes.items()
    }


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _per_position_loss(loss: str, logits, y, label_smoothing: float = 0.0):
    """The loss per example or position; unlabelled positions (label -1) get a finite
    placeholder here and weight 0 from `dl.metrics.label_weights`."""
    if loss == "cross_entropy":
        return get_loss(loss)(logits, jnp.maximum(y, 0), label_smoothing)
    return get_loss(loss)(logits, y)


def make_eval_step(
    model: nn.Module, *, loss: str = "cross_entropy", compute_dtype: str | None = None
) -> Callable[[TrainState, Batch], Metrics]:
    """Build the pure eval step `(state, batch) -> metrics` (inference mode, summed
    metrics); `compute_dtype` as in `make_train_step`."""
    _check_loss(loss)
    _check_compute_dtype(compute_dtype)

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        x, y, mask = _unpack(state, batch)
        rngs = {"noise": jax.random.key(_EVAL_NOISE_SEED)}
        logits, _, aux = _apply(
            model,
            state.params,
            state.batch_stats,
            x,
            train=False,
            rngs=rngs,
            compute_dtype=compute_dtype,
        )
        per_ex = _per_position_loss(loss, logits, y)
        return psum_if_mapped(
            metrics_lib.loss_and_accuracy(logits, y, per_ex, mask, loss=loss, aux=aux)
        )

    return eval_step


def predict(model: nn.Module, state: TrainState, x, *, batch_size: int = 512) -> np.ndarray:
    """Model outputs (logits) for inputs `x`, in inference mode, as a numpy array."""
    x, _ = check_arrays(
        x,
        np.zeros(len(x), np.int32),
        input_shape=state.input_shape,
        name="x",
        integer_inputs=state.input_dtype == "int32",
    )
    fn = xla.jit(lambda s, xb: _apply(model, s.params, s.batch_stats, xb, train=False)[0])
    out = [
        fn(state, b["x"])
        for b in batches(x, np.zeros(len(x), np.int32), batch_size, shuffle=False, remainder="pad")
    ]
    return np.concatenate([np.asarray(o) for o in out])[: len(x)]


def evaluate(
    eval_step, state: TrainState, x, y, *, batch_size: int = 512, strategy=None
) -> dict[str, float]:
    """Run a (compiled or pure) eval step over a whole dataset; return mean metrics.

    The last partial batch is padded and masked, so every example counts exactly once.
    With a `dl.parallel` strategy (or its name) the pure `eval_step` is compiled for it
    and `state` (a logical state, as `fit` returns) is placed for it.
    """
    if strategy is not None:
        from dl.parallel import get_strategy

        strategy = get_strategy(strategy)
        fn, placed = strategy.jit_eval_step(eval_step), strategy.put_state(state)
        data = strategy.put_data(x, y)
        all_batches = strategy.batches(
            data, strategy.round_batch_size(batch_size), shuffle=False, remainder="pad"
        )
    else:
        fn, placed = eval_step, state
        all_batches = batches(x, y, batch_size, shuffle=False, remainder="pad")
    return _mean_metrics(fn, placed, all_batches)


def _mean_metrics(eval_fn, state, all_batches) -> dict[str, float]:
    """Sum an eval step's metrics over batches (on the device) and summarise once."""
    sums = None
    for batch in all_batches:
        m = eval_fn(state, batch)
        sums = m if sums is None else metrics_lib.add(sums, m)
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
        "<eval set>/<metric>" when evaluated, "epoch_time_s", "time_s".
      best_epoch: epoch of the best monitored value (None without early stopping).
      best_value: that value.
      stopped_early: whether early stopping ended the run.
      train_time_s: wall time of the whole fit, compilation and evaluation included.
      compile_time_s: time spent compiling the train step.
      strategy: the `dl.parallel` strategy used ("single", "sharded" or "pmap").
      num_devices: how many devices it ran on.
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


def _copy_tree(tree):
    return jax.tree.map(lambda a: a.copy() if isinstance(a, jax.Array) else a, tree)


# The fresh metric sums of each epoch, copied in one call: a copy per leaf cost five
# dispatches, 80-250 us, 1-2% of a small MLP's epoch.
_copy_arrays = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


class _CallSize:
    """How `fit` cuts an epoch into calls of the compiled train loop.

    A call runs `steps_per_call` steps, stopping early at the end of the epoch and at a
    checkpoint step. With "auto" the first call runs one step, the second (one step,
    timed to completion) measures a step, and later calls run about `TARGET_S` of steps:
    long enough that dispatch costs nothing, short enough that a signal is answered
    quickly. Timing syncs with the device only during those first calls.
    """

    TARGET_S = 0.05
    MAX_STEPS = 10_000

    def __init__(self, steps_per_call: int | str):
        self.auto = steps_per_call == "auto"
        self.size = 1 if self.auto else int(steps_per_call)
        self.calls = 0

    def chunks(self, start: int, end: int, step: int, checkpoint_every: int | None):
        """Yield (first, stop, None) for the calls covering steps start..end-1 of an epoch,
        where `step` is the global step count before `start`."""
        i = start
        while i < end:
            stop = min(end, i + self.size)
            if checkpoint_every is not None:
                next_ckpt = (step // checkpoint_every + 1) * checkpoint_every
                stop = min(stop, i + next_ckpt - step)
            yield i, stop, None
            step += stop - i
            i = stop

    def timed(self, loop_fn, *args):
        self.calls += 1
        if not self.auto or self.calls > 2:
            return loop_fn(*args)
        t0 = time.perf_counter()
        out = jax.block_until_ready(loop_fn(*args))
        if self.calls == 2:  # the first call may pay one-off costs
            seconds = max(time.perf_counter() - t0, 1e-6)
            self.size = int(min(self.MAX_STEPS, max(1, self.TARGET_S // seconds)))
        return out


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


def _skips_nonfinite(train_step) -> bool:
    return bool(getattr(train_step, "skip_nonfinite", False))


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
    eval_step: Callable,
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
    steps_per_call: int | str = "auto",
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
        your own with the same signatures).
      train_data: (x, y) arrays.
      epochs: passes over the training data.
      batch_size: examples per step.
      eval_data: named (x, y) sets evaluated every `eval_every` epochs and after the last,
        e.g. {"val": ..., "test": ...}; they appear in the history as "val/accuracy".
      eval_every: epochs between evaluations.
      eval_batch_size: batch size of evaluation.
      early_stopping: an `EarlyStopping`, monitoring one of the eval sets.
      seed: seed of the data order.
      metrics_path: if given, one JSON line per epoch is appended to this file (on
        resume it is rewritten from the checkpoint's history first).
      progress: show a tqdm progress bar (to stderr).
      check_labels: check labels are integers in [0, num_classes) (classification).
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
      steps_per_call: train steps per compiled call (`make_train_loop`): an int, or
        "auto", which times one step and runs about 50 ms of steps per call. A call
        also ends at the end of an epoch and at a checkpoint; signals are checked
        between calls. The result does not depend on it. On CPU a step with a
        convolution other than `dl`'s runs one per call (`loops_well`); "pmap" and several processes
        call the step once per batch.

    Returns:
      A `FitResult`.

    Raises:
      ValueError: bad arguments or data, with what was received.
      FloatingPointError: a loss or gradient became NaN or Inf (names the step).
      TrainingInterrupted: SIGTERM or SIGINT arrived.
    """
    from tqdm.auto import tqdm

    from dl.checkpoint import CheckpointManager
    from dl.parallel import get_strategy

    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    if isinstance(steps_per_call, str) and steps_per_call != "auto":
        raise ValueError(
            f'steps_per_call must be a positive integer or "auto"; got {steps_per_call!r}.'
        )
    if steps_per_call != "auto":
        steps_per_call = check_positive_int("steps_per_call", steps_per_call)
    strategy = get_strategy(strategy, devices, batch_size=batch_size)
    eval_every = check_positive_int("eval_every", eval_every)
    eval_batch_size = check_positive_int("eval_batch_size", eval_batch_size)
    if checkpoint_every is not None:
        checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir, the folder to resume from.")
    # Labels for cross-entropy (one per example, or one per step for sequence outputs);
    # real values for the other losses.
    labels = getattr(train_step, "loss", "cross_entropy") == "cross_entropy"
    checks = dict(
        input_shape=state.input_shape,
        num_classes=state.num_classes if check_labels and labels else None,
        targets="labels" if labels else "values",
        label_shape=tuple(state.output_shape[:-1]),
        integer_inputs=state.input_dtype == "int32",
        # Per-position labels (sequences, nodes) may leave positions unlabelled (-1).
        allow_unlabelled=labels and len(state.output_shape) > 1,
    )
    x, y = check_arrays(*train_data, name="train", **checks)
    evals = {name: check_arrays(*xy, name=name, **checks) for name, xy in (eval_data or {}).items()}
    if early_stopping is not None:
        set_name = early_stopping.monitor.split("/", 1)[0]
        if set_name not in evals:
            raise ValueError(
                f"early_stopping monitors {early_stopping.monitor!r} but eval_data has no "
                f"{set_name!r} set (it has {sorted(evals) or 'none'}). Pass "
                f'eval_data={{"{set_name}": (x_val, y_val)}}; hold the validation set out '
                "of the training data (dl.data.validation_split)."
            )
    if batch_size > len(x):
        raise ValueError(
            f"batch_size {batch_size} is larger than the {len(x)} training examples; "
            f"use batch_size <= {len(x)}."
        )
    strategy.check_batch_size(batch_size)
    # Evaluation pads its last batch anyway, so round it up to a multiple of the devices.
    eval_batch_size = strategy.round_batch_size(eval_batch_size)

    start = time.perf_counter()
    train_dev = strategy.put_data(x, y)
    evals_dev = {k: strategy.put_data(a, b) for k, (a, b) in evals.items()}
    steps_per_epoch = num_batches(len(x), batch_size, "drop")
    # What a resumed run must share with the original for the result to be the same.
    signature = {
        "batch_size": batch_size,
        "seed": seed,
        "num_train": len(x),
        "steps_per_epoch": steps_per_epoch,
    }

    target = state  # the logical layout that checkpoints are restored into
    history: list[dict[str, float]] = []
    best_value, best_epoch, best_state, stopped = None, None, None, False
    epoch0, batch0, sums, time_offset = 1, 0, None, 0.0
    mngr = None
    if checkpoint_dir is not None:
        best_metric = early_stopping.monitor if early_stopping is not None else None
        mngr = CheckpointManager(
            checkpoint_dir,
            keep_last=keep_checkpoints,
            best_metric=best_metric,
            best_mode=early_stopping.direction if early_stopping is not None else "max",
        )
        if resume and mngr.steps():
            restored = mngr.restore(target, "latest")
            meta = restored.meta
            if meta.get("fit") != signature:
                raise ValueError(
                    f"Cannot resume from {checkpoint_dir}: it was written by a run with "
                    f"{meta.get('fit')}, this run has {signature}. Use the same data, "
                    "batch_size and seed, or a new checkpoint_dir."
                )
            target = restored.state
            history = list(meta["history"])
            epoch0, batch0 = int(meta["epoch"]), int(meta["batch"])
            sums = (
                {
                    k: jnp.asarray(v, dtype=jnp.int32 if isinstance(v, int) else jnp.float32)
                    for k, v in meta["epoch_sums"].items()
                }
                if meta.get("epoch_sums")
                else None
            )
            best_value, best_epoch = meta.get("best_value"), meta.get("best_epoch")
            stopped = bool(meta.get("stopped_early", False))
            time_offset = float(history[-1]["time_s"]) if history else 0.0
            if early_stopping is not None and early_stopping.restore_best and best_epoch:
                best_state = mngr.restore(target, "best").state
    # A copy: the compiled step donates its input, and the caller's state must stay valid.
    state = strategy.put_state(_copy_tree(target))

    def save_checkpoint(epoch: int, batch: int, metrics: dict | None = None) -> None:
        """Write the state and the position to resume from: batch `batch` of `epoch`."""
        if mngr is None:
            return
        host_sums = None
        if sums is not None:
            host_sums = {k: v.item() for k, v in jax.device_get(sums).items()}
            if host_sums.get("nonfinite", 0) and not _skips_nonfinite(train_step):
                raise _nonfinite_error(sums, "found before writing a checkpoint")
        mngr.save(
            strategy.get_state(state),
            meta={
                "epoch": epoch,
                "batch": batch,
                "epoch_sums": host_sums,
                "history": history,
                "fit": signature,
                "config": dict(run_config or {}),
                "best_value": best_value,
                "best_epoch": best_epoch,
                "stopped_early": stopped,
            },
            metrics=metrics,
        )

    if metrics_path is not None:
        # The checkpoint's history is authoritative: epochs logged after it are redone.
        with open(metrics_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in history)

    first = next(strategy.batches(train_dev, batch_size, seed=seed, epoch=0))
    t0 = time.perf_counter()
    loop_fn = step_fn = None
    if strategy.name == "pmap" or strategy.multi_process:  # one call per step
        step_fn = strategy.compile_train_step(train_step, state, first)
    else:
        # One trace gives both the metrics' shapes and whether the step loops well.
        jaxpr, (_, metric_shapes) = jax.make_jaxpr(train_step, return_shape=True)(state, first)
        zero_sums = _zero_metrics(metric_shapes)
        if sums is not None:  # resumed inside an epoch: the dtypes the loop expects
            sums = {k: jnp.asarray(v, zero_sums[k].dtype) for k, v in sums.items()}
        looped = _loops_well(jaxpr)
        plan0 = epoch_plan(len(x), batch_size, seed, 0, True, "drop", 0)
        loop_fn = strategy.compile_train_loop(
            train_step, state, zero_sums, train_dev, strategy.put_plan(plan0), loop=looped
        )
        if not looped:
            steps_per_call = 1
    compile_time = time.perf_counter() - t0
    calls = _CallSize(steps_per_call)
    plans = EpochPlans(len(x), batch_size, seed)
    eval_fn = strategy.jit_eval_step(eval_step)

    def run_eval(data) -> dict[str, float]:
        eval_batches = strategy.batches(data, eval_batch_size, shuffle=False, remainder="pad")
        return _mean_metrics(eval_fn, state, eval_batches)

    log = open(metrics_path, "a") if metrics_path is not None else None  # noqa: SIM115
    bar = tqdm(
        total=epochs,
        initial=min(epoch0 - 1, epochs),
        unit="epoch",
        disable=not progress or jax.process_index() != 0,
        dynamic_ncols=True,
    )
    step = int(target.step)
    try:
        with _SignalFlag(handle_signals) as flag:
            for epoch in range(epoch0, epochs + 1):
                if stopped:
                    break
                t_epoch = time.perf_counter()
                skip = batch0 if epoch == epoch0 else 0
                if skip == 0:
                    sums = None
                if loop_fn is None:  # one call per step
                    epoch_batches = strategy.batches(
                        train_dev, batch_size, seed=seed, epoch=epoch - 1, start=skip
                    )
                    chunks = ((i, i + 1, b) for i, b in enumerate(epoch_batches, start=skip))
                else:
                    plan = strategy.put_plan(plans.get(epoch - 1, skip))
                    if epoch < epochs:
                        plans.draw_ahead(epoch)  # the next epoch's, before this one's steps
                    chunks = calls.chunks(skip, steps_per_epoch, step, checkpoint_every)
                for i, stop, batch in chunks:
                    if loop_fn is None:
                        state, m = step_fn(state, batch)
                        sums = m if sums is None else metrics_lib.add(sums, m)
                    else:
                        acc = _copy_arrays(zero_sums) if sums is None else sums  # donated
                        state, sums = calls.timed(
                            loop_fn, state, acc, *train_dev, *plan, np.int32(i), np.int32(stop)
                        )
                    step += stop - i
                    if flag.signum is not None:
                        save_checkpoint(epoch, stop)
                        raise TrainingInterrupted(flag.signum, step, mngr and mngr.directory)
                    if checkpoint_every is not None and step % checkpoint_every == 0:
                        save_checkpoint(epoch, stop)
                if loop_fn is not None:
                    plans.sort_ahead(epoch)  # on the host while the device trains
                summary = metrics_lib.summarize(sums)
                if summary.get("nonfinite_steps") and not _skips_nonfinite(train_step):
                    raise _nonfinite_error(sums, f"epoch {epoch}")
                record: dict[str, float] = {"epoch": epoch, "step": step}
                record.update({f"train/{k}": v for k, v in summary.items()})
                if epoch % eval_every == 0 or epoch == epochs:
                    for name, data in evals_dev.items():
                        res = run_eval(data)
                        record.update({f"{name}/{k}": v for k, v in res.items()})
                    if early_stopping is not None and early_stopping.monitor not in record:
                        available = sorted(k for k in record if "/" in k)
                        raise ValueError(
                            f"early_stopping monitors {early_stopping.monitor!r}, which is "
                            f"not measured. Available: {available}."
                        )
                record["epoch_time_s"] = time.perf_counter() - t_epoch
                record["time_s"] = time_offset + time.perf_counter() - start
                history.append(record)
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                bar.update(1)
                bar.set_postfix(
                    {k: f"{v:.4f}" for k, v in record.items() if k.endswith(("loss", "accuracy"))}
                )
                if early_stopping is not None and early_stopping.monitor in record:
                    value = record[early_stopping.monitor]
                    if early_stopping.improved(value, best_value):
                        best_value, best_epoch = value, epoch
                        if early_stopping.restore_best:
                            best_state = _copy_tree(strategy.get_state(state))
                    elif epoch - best_epoch >= early_stopping.patience * eval_every:
                        stopped = True
                sums = None
                epoch_metrics = {k: v for k, v in record.items() if isinstance(v, float)}
                if checkpoint_every is None or epoch == epochs or stopped or flag.signum:
                    save_checkpoint(epoch + 1, 0, metrics=epoch_metrics)
                if flag.signum is not None:
                    raise TrainingInterrupted(flag.signum, step, mngr and mngr.directory)
    finally:
        bar.close()
        if log is not None:
            log.close()
        if mngr is not None:
            mngr.close()
    state = best_state if best_state is not None else strategy.get_state(state)
    return FitResult(
        state=state,
        history=history,
        best_epoch=best_epoch,
        best_value=best_value,
        stopped_early=stopped,
        train_time_s=time.perf_counter() - start,
        compile_time_s=compile_time,
        strategy=strategy.name,
        num_devices=strategy.num_devices,
    )
