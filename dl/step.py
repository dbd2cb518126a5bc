"""The pure steps: a train state, `make_train_step` and `make_eval_step`.

1. `TrainState` is a pytree (step, params, batch_stats, opt_state, rng); the model's
   input shape and class count ride along as static metadata for error messages.
2. `make_train_step` / `make_eval_step` build PURE functions `(state, batch) -> ...`
   from `model.apply`, a loss and an optax transformation. Dropout and augmentation keys
   are `fold_in(state.rng, state.step)`, so a step is a function of its inputs only.
   Metrics are sums and counts (`dl.metrics`).
3. `make_train_loop` runs many steps in one compiled call (what `dl.train.fit` runs).

Compile them with `jax.jit` (or `dl.kernels.jit`), or let `dl.train.fit` and
`dl.parallel` do it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from dl import kernels as kernels_lib
from dl import metrics as metrics_lib
from dl._errors import check_positive_int
from dl.data.batching import batches, gather_step
from dl.data.validate import check_arrays
from dl.losses import check_loss, classifies, get_loss, loss_name, output_losses, pick
from dl.models import MODE_ARGS, adapt, mode_arg, mode_kwargs

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
      ema_params: an exponential moving average of params (`create_state(ema=True)`,
        updated by `make_train_step(ema_decay=...)`), or None.
      input_shape: per-example input shape the model was built for (static metadata).
      num_classes: size of the model's output (static metadata).
      input_dtype: "float32", or "int32" for token ids (static metadata).
      output_shape: per-example output shape, e.g. (10,) or (T, vocab) (static); ()
        for a model whose outputs are a dict or tuple.
      output_shapes: for such a model, ((key, per-example shape), ...) of its outputs.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any = None
    input_shape: tuple[int, ...] = struct.field(pytree_node=False, default=())
    num_classes: int = struct.field(pytree_node=False, default=0)
    input_dtype: str = struct.field(pytree_node=False, default="float32")
    output_shape: tuple[int, ...] = struct.field(pytree_node=False, default=())
    output_shapes: tuple = struct.field(pytree_node=False, default=())


def init_variables(
    model: nn.Module, root: jax.Array, x, rngs: Sequence[str] = ()
) -> tuple[dict[str, Any], jax.Array]:
    """`model`'s variables for a run whose root key is `root`, and the run's own key (the
    key of step t is `fold_in(run_key, t)`): the one convention by which `create_state`,
    `dl.train.train_seeds` and the experiments turn a seed into a network, so the same
    seed gives the same network everywhere. `rngs` names random streams besides
    "params" and "dropout" that the module draws from (`self.make_rng(name)`). Pure:
    works under jit and vmap."""
    model = adapt(model)
    init_key, dropout_key, run_key = jax.random.split(root, 3)
    keys = {"params": init_key, **rng_streams(dropout_key, ("dropout", *rngs))}
    return model.init(keys, x, **mode_kwargs(model, False)), run_key


DEFAULT_RNGS = ("dropout", "noise")


def rng_streams(key: jax.Array, names: Sequence[str]) -> dict[str, jax.Array]:
    """One key per named random stream, all from `key`: "dropout" is `key` itself and
    "noise" (input corruption, a VAE's sample) `fold_in(key, 1)`, as they always were;
    any other name gets `fold_in(key, 2 + its position in names)`."""
    out = {}
    for i, name in enumerate(dict.fromkeys(names)):
        if name == "dropout":
            out[name] = key
        elif name == "noise":
            out[name] = jax.random.fold_in(key, 1)
        else:
            out[name] = jax.random.fold_in(key, 2 + i)
    return out


def _check_rngs(rngs) -> tuple[str, ...]:
    if isinstance(rngs, str) or not all(isinstance(n, str) and n for n in rngs):
        raise ValueError(
            f'rngs must be a sequence of stream names such as ("dropout", "augment"); got {rngs!r}.'
        )
    if "params" in rngs:
        raise ValueError('rngs names the streams used in training; "params" is init\'s own.')
    return tuple(rngs)


def check_model(
    model: nn.Module, input_shape, input_dtype: str = "float32", rngs: Sequence[str] = ()
):
    """Build `model` for inputs of `input_shape` abstractly (shapes only, no compilation)
    and return its output's shape and dtype; a model that cannot be built (a wrong input
    shape, a bad field such as a zero width) raises ValueError naming both."""
    return _check_model(model, input_shape, input_dtype, jax.random.key(0), rngs)[0]


def count_params(model: nn.Module, input_shape, input_dtype: str = "float32") -> int:
    """The number of parameters `model` has for inputs of `input_shape` (abstractly:
    no compilation, no memory)."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.dtype(input_dtype))
    variables = jax.eval_shape(lambda r, x: init_variables(model, r, x)[0], jax.random.key(0), x)
    return int(sum(np.prod(a.shape) for a in jax.tree.leaves(variables.get("params", {}))))


def _eval_rngs(names: Sequence[str] = ()) -> dict[str, jax.Array]:
    """Evaluation's random streams: fixed keys, so that evaluating the same state twice
    gives the same numbers ("noise", e.g. the VAE's latent sample, from key 0)."""
    base = jax.random.key(_EVAL_NOISE_SEED)
    out = {"noise": base}
    for i, name in enumerate(n for n in names if n not in ("noise", "dropout")):
        out[name] = jax.random.fold_in(base, 2 + i)
    return out


def _check_model(model, input_shape, input_dtype, root, rngs=()):
    model = adapt(model)
    rngs = _check_rngs(rngs)
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
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.dtype(input_dtype))
    try:
        # Shape first: a wrong input shape fails here, cheaply, before any compilation.
        abstract = jax.eval_shape(lambda r, x: init_variables(model, r, x, rngs)[0], root, x)
        apply = functools.partial(model.apply, **mode_kwargs(model, False))
        out = jax.eval_shape(lambda v, x: apply(v, x, rngs=_eval_rngs(rngs)), abstract, x)
    except (ValueError, TypeError, ZeroDivisionError, IndexError, flax.errors.FlaxError) as e:
        # A module's own checks raise ValueError; a bad field (widths=(0,), a tuple where
        # a number belongs) surfaces from Flax or jax.numpy as one of the others.
        raise ValueError(
            f"Could not build {type(model).__name__} ({_fields(model)}) for inputs of shape "
            f"{input_shape}: {type(e).__name__}: {e}{_how_called(model)}"
        ) from e
    return out, input_shape


def _how_called(model) -> str:
    """What dl passes to a module whose `__call__` takes no train flag (for errors)."""
    if mode_arg(type(model)) is not None:
        return ""
    return (
        f". Note: {type(model).__name__}.__call__ takes none of {', '.join(MODE_ARGS)}, so "
        "dl calls it with the inputs alone, in training and evaluation alike; a module "
        "that behaves differently in training (dropout, batch norm) should take one of them."
    )


def _fields(model) -> str:
    if not dataclasses.is_dataclass(model):
        return repr(model)
    names = [f.name for f in dataclasses.fields(model) if f.name not in ("parent", "name")]
    return ", ".join(f"{n}={getattr(model, n)!r}" for n in names)


def create_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape,
    *,
    seed: int = 0,
    key: jax.Array | None = None,
    input_dtype: str = "float32",
    rngs: Sequence[str] = (),
    ema: bool = False,
) -> TrainState:
    """Initialise parameters, batch statistics and optimizer state.

    Args:
      model: a Linen module, called as `model(x, train=...)` (or `training=`, or
        `deterministic=` inverted, or with the inputs alone: `dl.models.mode_kwargs`).
      tx: an optax transformation (e.g. from `dl.optim.make_optimizer`).
      input_shape: the per-example input shape, e.g. `dataset.input_shape`.
      seed: seed of the root key (ignored when `key` is given).
      key: a `jax.random.key` to use instead of `seed`.
      input_dtype: "float32" for numbers, "int32" for token ids (`dataset.input_dtype`).
      rngs: random streams the module draws from besides "params" and "dropout" (e.g.
        ("augment",)), as passed to `make_train_step`.
      ema: keep an exponential moving average of the parameters in the state (starting
        at the initial ones), for `make_train_step(ema_decay=...)`.

    Returns:
      A `TrainState` at step 0.
    """
    root = jax.random.key(seed) if key is None else key
    out, input_shape = _check_model(model, input_shape, input_dtype, root, rngs)
    x = jnp.zeros((1, *input_shape), input_dtype)
    variables, run_key = jax.jit(lambda r: init_variables(model, r, x, rngs))(root)
    params = variables["params"]
    single = isinstance(out, jax.ShapeDtypeStruct)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=run_key,
        ema_params=jax.tree.map(jnp.copy, params) if ema else None,
        input_shape=input_shape,
        num_classes=int(out.shape[-1]) if single and out.ndim > 1 else 0,
        input_dtype=input_dtype,
        output_shape=tuple(int(d) for d in out.shape[1:]) if single else (),
        output_shapes=() if single else _output_shapes(out),
    )


def _output_shapes(out) -> tuple:
    """((key, per-example shape), ...) of a model's dict or tuple of outputs."""
    items = out.items() if isinstance(out, Mapping) else enumerate(out)
    if not isinstance(out, Mapping | tuple | list) or not all(
        isinstance(v, jax.ShapeDtypeStruct) for _, v in items
    ):
        raise ValueError(
            "A model's output must be an array, or a dict or tuple of arrays (one level); got "
            f"{jax.tree.map(lambda a: a.shape, out)}."
        )
    items = out.items() if isinstance(out, Mapping) else enumerate(out)
    return tuple((k, tuple(int(d) for d in v.shape[1:])) for k, v in items)


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
    if any(leaf.shape[:1] != x.shape[:1] for leaf in jax.tree.leaves(y)):
        shapes = jax.tree.map(lambda a: tuple(a.shape), y)
        raise ValueError(f"Batch x has {x.shape[0]} examples but y has shape {shapes}.")
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
    out, mutated = model.apply(
        variables, x, rngs=rngs, mutable=mutable, **mode_kwargs(model, train)
    )
    aux = {name: sum(values) for name, values in mutated.get("losses", {}).items()}
    new_stats = mutated.get("batch_stats", batch_stats)
    if mixed:
        out, aux = _cast_floats((out, aux), jnp.float32)
        new_stats = jax.tree.map(lambda n, o: n.astype(o.dtype), new_stats, batch_stats)
    return out, new_stats, aux


# Evaluation draws the model's "noise" (e.g. the VAE's latent sample) from a fixed key, so
# that evaluating the same state twice gives the same numbers.
_EVAL_NOISE_SEED = 0


def _check_loss(loss) -> None:
    check_loss(loss)  # a name from LOSSES, a callable, or one per output; else an error


def _losses(loss, outputs, y, label_smoothing: float = 0.0):
    """The per-example (or per-position) loss, and for a model with several outputs
    the per-example loss of each ({name: (B,)}; the total is their weighted sum)."""
    multi = output_losses(loss)
    if multi is None:
        if not isinstance(outputs, jax.Array):
            raise ValueError(
                f"The model's outputs are {jax.tree.map(lambda a: a.shape, outputs)} but the "
                f"loss is one loss, {loss_name(loss)!r}; give one loss per output, e.g. "
                '{"a": "cross_entropy", "b": ("mse", 0.5)} (a (loss, weight) pair weights one).'
            )
        return _per_position_loss(loss, outputs, y, label_smoothing), {}
    parts = {}
    for o in multi:
        out_k, y_k = pick(outputs, o.key, "model's outputs"), pick(y, o.key, "targets")
        per = _per_position_loss(o.loss, out_k, y_k)
        if per.ndim > 1:  # per position: each example's mean over its labelled positions
            ones = jnp.ones(per.shape[:1], jnp.float32)
            w = metrics_lib.label_weights(ones, y_k, per.shape, o.loss).reshape(len(per), -1)
            per = jnp.sum(per.reshape(len(per), -1) * w, 1) / jnp.maximum(jnp.sum(w, 1), 1.0)
        parts[o.name] = per
    return sum(o.weight * parts[o.name] for o in multi), parts


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    loss: str = "cross_entropy",
    label_smoothing: float = 0.0,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    skip_nonfinite: bool = False,
    compute_dtype: str | None = None,
    axis_name: str | None = None,
    rngs: Sequence[str] = DEFAULT_RNGS,
    grad_accum: int = 1,
    ema_decay: float | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Build the pure train step `(state, batch) -> (state, metrics)`.

    The step is not compiled here: `fit` compiles it once with donation, and `dl.parallel`
    can compile the same function for many devices. Jitting it yourself is fine too.

    Every step checks that its loss and gradients are finite and reports it in the
    metrics ("nonfinite", "first_nonfinite_step") without a host sync; `fit` stops with
    an error naming the step. With `skip_nonfinite=True` a non-finite step leaves
    params, batch_stats and opt_state unchanged instead (the step counter still advances),
    like `optax.apply_if_finite` but covering the BatchNorm statistics too, and reports
    them as "skipped" in the metrics (so `fit` goes on).

    Args:
      model: the Linen module (see `create_state` for how it is called).
      tx: the optax transformation the state was created with.
      loss: "cross_entropy" or "margin" (integer labels), "mse", "binary_cross_entropy",
        or any callable `(outputs, targets) -> per-example loss (B,)` (or per position
        (B, T)). Accuracy is reported for cross-entropy and margin, and for a callable
        whose targets are integer class ids, one per row of outputs.
      label_smoothing: for cross-entropy only.
      augment: optional pure `(key, x) -> x` applied to the batch inside the step
        (e.g. `dl.data.random_shift`).
      skip_nonfinite: skip updates whose loss or gradient is NaN or Inf.
      compute_dtype: None or "float32" (default), or "bfloat16" for mixed precision:
        the model runs in bfloat16 on float32 master parameters, and the loss,
        gradients and optimizer stay float32. Meant for GPUs and TPUs.
      axis_name: the pmap axis to sum gradients, counts and metrics over (as in Flax's
        ImageNet example); None under `jax.jit` with or without shardings. The "pmap"
        strategy of `dl.parallel` needs `dl.parallel.DATA_AXIS`.
      rngs: the random streams the module draws from in training, each with its own
        key per step (`rng_streams`); add yours, e.g. ("dropout", "augment").
      grad_accum: split each batch into this many microbatches, run one after another
        (`lax.scan`, so memory is that of one microbatch), and average their gradients
        for one optimizer update: the same update as the whole batch, to float rounding,
        for a model without batch norm. Batch norm normalises each microbatch by its
        own statistics and updates the running statistics once per microbatch; dropout
        draws a key per microbatch. The batch must divide into `grad_accum` parts.
      ema_decay: update `state.ema_params` (from `create_state(ema=True)`) after each
        step as `decay * ema + (1 - decay) * params`; evaluate them with
        `make_eval_step(use_ema=True)` (`make_steps` does so when this is set).

    Returns:
      train_step(state, batch) with batch {"x", "y", "mask"?}; the loss is the mean over
      examples with mask 1; metrics are sums (`loss_sum`, `correct`, `count`,
      `nonfinite`, `skipped`) and `first_nonfinite_step` (`METRICS_CONTRACT`).
    """
    _check_loss(loss)
    rngs = _check_rngs(rngs)
    model = adapt(model)
    _check_compute_dtype(compute_dtype)
    grad_accum = check_positive_int("grad_accum", grad_accum)
    if ema_decay is not None and not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1); got {ema_decay!r}.")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing!r}.")
    if label_smoothing and not (isinstance(loss, str) and loss == "cross_entropy"):
        raise ValueError(f"label_smoothing applies to cross_entropy only; loss is {loss!r}.")

    def per_example(logits, y):
        return _losses(loss, logits, y, label_smoothing)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        x, y, mask = _unpack(state, batch)
        # Under pmap each device holds part of the global batch: the loss is this part's
        # sum over the global count, and gradients and metrics are psum-ed over axis_name.
        key = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))  # own noise per device
        aug_key, dropout_key = jax.random.split(key)
        streams = rng_streams(dropout_key, rngs)  # "noise": input corruption, VAE samples
        if augment is not None:
            x = augment(aug_key, x)

        def objective(params, batch_stats, x, y, mask, streams, count=None):
            """The masked loss sum over the global count (the whole batch's count when
            given: a microbatch's part of the batch's mean)."""
            logits, new_stats, aux = _apply(
                model, params, batch_stats, x, train=True, rngs=streams,
                compute_dtype=compute_dtype,
            )  # fmt: skip
            per_ex, parts = per_example(logits, y)  # (B,) or (B, T), one label per step
            total = per_ex + sum(aux.values()) if aux else per_ex
            m = metrics_lib.label_weights(mask, y, per_ex.shape, loss)
            if count is None:
                count = _psum(jnp.sum(m), axis_name)
            aux_out = (logits, per_ex, parts, aux, new_stats)
            return jnp.sum(total * m) / jnp.maximum(count, 1.0), aux_out

        grad_fn = jax.value_and_grad(objective, has_aux=True)
        if grad_accum == 1:
            (loss_value, (logits, per_ex, parts, aux, new_stats)), grads = grad_fn(
                state.params, state.batch_stats, x, y, mask, streams
            )
        else:
            loss_value, grads, new_stats, partial = _accumulate(
                grad_fn, state, x, y, mask, streams, grad_accum, loss, axis_name
            )
        loss_value, grads = _psum((loss_value, grads), axis_name)
        finite = jnp.isfinite(loss_value) & _all_finite(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = (params, new_stats, opt_state, _ema(state, params, ema_decay))
        if skip_nonfinite:
            old = (state.params, state.batch_stats, state.opt_state, state.ema_params)
            new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = state.replace(
            step=state.step + 1,
            params=new[0],
            batch_stats=new[1],
            opt_state=new[2],
            ema_params=new[3],
        )
        if grad_accum == 1:
            metrics = _step_metrics(loss, logits, y, per_ex, parts, aux, mask, finite)
        else:  # summed over the microbatches; a skipped step's count nowhere
            metrics = jax.tree.map(lambda v: v * finite.astype(v.dtype), partial)
        metrics = _psum(metrics, axis_name)
        metrics["nonfinite"] = (~finite).astype(jnp.int32)
        metrics["skipped"] = (~finite & skip_nonfinite).astype(jnp.int32)
        metrics["first_nonfinite_step"] = jnp.where(
            finite, metrics_lib.NO_STEP, state.step + 1
        ).astype(jnp.int32)
        return new_state, metrics

    return train_step


def _step_metrics(loss, logits, y, per_ex, parts, aux, mask, finite) -> Metrics:
    """A step's metric sums; a skipped (non-finite) step's loss and accuracy count
    nowhere."""
    metrics = metrics_lib.loss_and_accuracy(
        logits,
        y,
        jnp.where(finite, per_ex, 0.0),
        mask * finite,
        loss=loss,
        aux={k: jnp.where(finite, v, 0.0) for k, v in aux.items()},
    )
    if parts:
        metrics.update(metrics_lib.per_output(loss, logits, y, parts, mask * finite))
    return metrics


def _accumulate(grad_fn, state, x, y, mask, streams, k, loss, axis_name):
    """Gradient accumulation: the batch as `k` microbatches in a `lax.scan`, each giving
    the gradient of its loss SUM; the sums, divided by the whole batch's count, are the
    gradient of the batch's mean. Returns (loss, gradients, batch statistics, metric
    sums), the loss and gradients of this device's part as the unsplit step's are."""
    rows = x.shape[0]
    if rows % k:
        raise ValueError(f"grad_accum={k} does not divide the batch of {rows} examples.")
    split = lambda a: a.reshape(k, rows // k, *a.shape[1:])  # noqa: E731
    micro = (jnp.arange(k), (split(x), jax.tree.map(split, y), split(mask)))
    one = jnp.float32(1.0)  # divide by 1: the objective is the microbatch's sum

    def microbatch(stats, inputs):
        i, (xb, yb, mb) = inputs
        keys = {name: jax.random.fold_in(key, i) for name, key in streams.items()}
        (value, (logits, per_ex, parts, aux, stats)), g = grad_fn(
            state.params, stats, xb, yb, mb, keys, one
        )
        m = _step_metrics(loss, logits, yb, per_ex, parts, aux, mb, jnp.array(True))
        return value, g, stats, m

    def body(carry, inputs):
        grads, stats, sums = carry
        value, g, stats, m = microbatch(stats, inputs)
        return (jax.tree.map(jnp.add, grads, g), stats, metrics_lib.add(sums, m)), value

    first = jax.tree.map(lambda a: a[0], micro)
    metric_shapes = jax.eval_shape(microbatch, state.batch_stats, first)[3]
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    carry = (zeros, state.batch_stats, _zero_metrics(metric_shapes))
    (grads, stats, sums), values = jax.lax.scan(body, carry, micro)
    count = jnp.maximum(_psum(sums["count"], axis_name).astype(jnp.float32), 1.0)
    grads = jax.tree.map(lambda g: g / count, grads)
    return jnp.sum(values) / count, grads, stats, sums


def _ema(state, params, decay):
    """The moving average of the parameters after an update (unchanged without one)."""
    if decay is None:
        return state.ema_params
    if state.ema_params is None:
        raise ValueError(
            "make_train_step(ema_decay=...) needs a state with a moving average: "
            "create_state(..., ema=True)."
        )
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)


def make_steps(
    model: nn.Module, tx: optax.GradientTransformation, **kwargs
) -> tuple[Callable, Callable]:
    """The train and eval steps of one configuration: `make_train_step(model, tx,
    **kwargs)` and the `make_eval_step` with the same loss, compute dtype, pmap axis and
    random streams, so the loss is named once; it evaluates the parameters' moving
    average when `ema_decay` is set."""
    shared = {k: kwargs[k] for k in ("loss", "compute_dtype", "axis_name", "rngs") if k in kwargs}
    use_ema = kwargs.get("ema_decay") is not None
    return make_train_step(model, tx, **kwargs), make_eval_step(model, **shared, use_ema=use_ema)


METRICS_CONTRACT = """\
A train step for `dl.train.fit` is a pure `(state, batch) -> (state, metrics)` where
`batch` is {"x", "y", "mask"} and `metrics` is a dict of SUMS over the batch's examples
with mask 1, so that `fit` can add them up over an epoch and divide once:
  "count"     the number of examples counted, int32  (required)
  "loss_sum"  the summed per-example loss            (reported as loss)
  "correct"   the number classified right, int32     (reported as accuracy)
  "<term>_sum" any other summed term                 (reported as <term>, e.g. a GAN's
                                                      d_loss_sum and g_loss_sum)
`dl.metrics.loss_and_accuracy(outputs, y, per_example_loss, mask)` builds them."""


def check_metrics(metrics: Mapping[str, Any]) -> None:
    """Refuse, naming the contract, a step's metrics that `fit` cannot sum over an
    epoch: plain per-batch means such as {"loss": ..., "accuracy": ...}."""
    if not isinstance(metrics, Mapping):
        raise ValueError(
            f"The train step returned {type(metrics).__name__} as its metrics.\n" + METRICS_CONTRACT
        )
    means = [k for k in ("loss", "accuracy") if k in metrics and f"{k}_sum" not in metrics]
    if "count" not in metrics or (means and "loss_sum" not in metrics):
        hint = f" ({means}: means per batch cannot be summed over an epoch)" if means else ""
        raise ValueError(
            f"The train step's metrics lack a 'count' or 'loss_sum'; they have "
            f"{sorted(metrics)}{hint}.\n" + METRICS_CONTRACT
        )


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
    the gradients of lax's convolutions far more slowly inside a loop body than outside
    one (jax-ml/jax#12868); dl's CPU convolution (`dl.kernels`) avoids that for stride-1
    convolutions, and `fit(steps_per_call=1)` uses this form for the others.

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


def zero_metrics(train_step: Callable, state: TrainState, batch: Batch) -> Metrics:
    """The identity of `dl.metrics.add` for `train_step`'s metrics: zeros, and
    `dl.metrics.NO_STEP` for the keys combined by minimum."""
    shapes = jax.eval_shape(train_step, state, batch)[1]
    check_metrics(shapes)
    return _zero_metrics(shapes)


def _zero_metrics(shapes) -> Metrics:
    return {
        k: jnp.full(v.shape, metrics_lib.NO_STEP if k in metrics_lib.MIN_KEYS else 0, v.dtype)
        for k, v in shapes.items()
    }


def _psum(tree, axis_name: str | None):
    """`lax.psum` over `axis_name` (a pmap axis); the identity for None."""
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _per_position_loss(loss, logits, y, label_smoothing: float = 0.0):
    """The loss per example or position; unlabelled positions (label -1) get a finite
    placeholder here and weight 0 from `dl.metrics.label_weights`."""
    if loss == "cross_entropy":
        return get_loss(loss)(logits, jnp.maximum(y, 0), label_smoothing)
    if classifies(loss):
        return get_loss(loss)(logits, jnp.maximum(y, 0))
    out = get_loss(loss)(logits, y)
    if callable(loss) and (not hasattr(out, "shape") or out.shape[:1] != y.shape[:1]):
        raise ValueError(
            f"loss {getattr(loss, '__name__', loss)!r} must return one value per example "
            f"(shape ({y.shape[0]},), or per position), not a mean; it returned shape "
            f"{getattr(out, 'shape', type(out).__name__)}."
        )
    return out


def make_eval_step(
    model: nn.Module,
    *,
    loss="cross_entropy",
    compute_dtype: str | None = None,
    axis_name: str | None = None,
    rngs: Sequence[str] = DEFAULT_RNGS,
    use_ema: bool = False,
) -> Callable[[TrainState, Batch], Metrics]:
    """Build the pure eval step `(state, batch) -> metrics` (inference mode, summed
    metrics); `loss`, `compute_dtype`, `axis_name` and `rngs` as in `make_train_step`
    (`make_steps` builds both from one set of arguments). `use_ema`: evaluate
    `state.ema_params`, the parameters' moving average, instead of `state.params`."""
    _check_loss(loss)
    _check_compute_dtype(compute_dtype)
    names = _check_rngs(rngs)
    model = adapt(model)

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        x, y, mask = _unpack(state, batch)
        rngs = _eval_rngs(names)
        if use_ema and state.ema_params is None:
            raise ValueError("use_ema=True needs a state from create_state(..., ema=True).")
        logits, _, aux = _apply(
            model,
            state.ema_params if use_ema else state.params,
            state.batch_stats,
            x,
            train=False,
            rngs=rngs,
            compute_dtype=compute_dtype,
        )
        per_ex, parts = _losses(loss, logits, y)
        metrics = metrics_lib.loss_and_accuracy(logits, y, per_ex, mask, loss=loss, aux=aux)
        if parts:
            metrics.update(metrics_lib.per_output(loss, logits, y, parts, mask))
        return _psum(metrics, axis_name)

    return eval_step


def predict(
    model: nn.Module, state: TrainState, x, *, batch_size: int = 512, kernels: str = "xla"
) -> np.ndarray:
    """Model outputs (logits) for inputs `x`, in inference mode, as a numpy array (a
    dict or tuple of them for a model with several outputs); `kernels` picks the
    compiler options (`dl.kernels.jit`)."""
    model = adapt(model)
    x, _ = check_arrays(
        x,
        np.zeros(len(x), np.int32),
        input_shape=state.input_shape,
        name="x",
        integer_inputs=state.input_dtype == "int32",
    )
    fn = kernels_lib.jit(
        lambda s, xb: _apply(model, s.params, s.batch_stats, xb, train=False)[0], kernels=kernels
    )
    out = [
        fn(state, b["x"])
        for b in batches(x, np.zeros(len(x), np.int32), batch_size, shuffle=False, remainder="pad")
    ]
    # A model with several outputs gives a dict or tuple of arrays, each concatenated.
    return jax.tree.map(lambda *o: np.concatenate([np.asarray(a) for a in o])[: len(x)], *out)
