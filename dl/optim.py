"""One factory for the common optimizers, schedules, clipping and weight decay, all optax.

Nothing here is an optimizer of our own: `make_optimizer` only chains optax pieces.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import optax

from dl._errors import unknown_name

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "warmup_cosine")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Everything `make_optimizer` needs, as a frozen dataclass for configs.

    Attributes:
      name: one of OPTIMIZERS.
      learning_rate: peak learning rate (> 0).
      schedule: one of SCHEDULES. "step" multiplies the rate by `step_decay` at 50% and
        75% of training; "cosine" decays to 0; "warmup_cosine" warms up linearly over
        `warmup_steps` and then decays by a cosine to 0.
      warmup_steps: linear warm-up length for "warmup_cosine" (default 5% of training).
      step_decay: factor of the "step" schedule.
      momentum: for "momentum" and "nesterov".
      weight_decay: decoupled for "adamw"; L2 added to the gradient for the others.
        Applied to kernels only (arrays with ndim > 1), never to biases or norm scales.
      clip_norm: global-norm gradient clipping threshold, or None.
    """

    name: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    warmup_steps: int | None = None
    step_decay: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip_norm: float | None = None

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise unknown_name("optimizer", self.name, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise unknown_name("schedule", self.schedule, SCHEDULES)
        for field in ("learning_rate", "weight_decay", "momentum", "step_decay", "clip_norm"):
            v = getattr(self, field)
            if v is None and field == "clip_norm":
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{field} must be a finite number; got {v!r}.")
        lr = self.learning_rate
        if lr <= 0:
            raise ValueError(
                f"learning_rate must be a positive finite number; got {lr!r}. Typical "
                "values: 1e-3 for adam, 0.1 for sgd with momentum."
            )
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}.")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None; got {self.clip_norm!r}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum!r}.")
        if not 0 < self.step_decay <= 1:
            raise ValueError(f"step_decay must be in (0, 1]; got {self.step_decay!r}.")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0; got {self.warmup_steps!r}.")


def make_schedule(config: OptimizerConfig, total_steps: int | None) -> optax.Schedule:
    """The learning-rate schedule of `config` over `total_steps` optimizer steps."""
    lr = float(config.learning_rate)
    if config.schedule == "constant":
        return optax.constant_schedule(lr)
    if total_steps is None or total_steps < 1:
        raise ValueError(
            f"schedule {config.schedule!r} needs total_steps >= 1; got {total_steps!r}."
        )
    if config.schedule == "step":
        bounds = {
            int(total_steps * 0.5): config.step_decay,
            int(total_steps * 0.75): config.step_decay,
        }
        return optax.piecewise_constant_schedule(lr, bounds)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=total_steps)
    warmup = config.warmup_steps if config.warmup_steps is not None else total_steps // 20
    warmup = min(warmup, total_steps - 1)
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=warmup, decay_steps=total_steps, end_value=0.0
    )


def _kernels_only(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(
    config: OptimizerConfig | str = "adam", total_steps: int | None = None, **kwargs
) -> optax.GradientTransformation:
    """Build an optax optimizer: clipping, weight decay, schedule and update rule.

    Args:
      config: an `OptimizerConfig`, or an optimizer name with the other fields as kwargs.
      total_steps: training length in steps; needed by every schedule but "constant".
      **kwargs: `OptimizerConfig` fields when `config` is a name.

    Returns:
      An `optax.GradientTransformation` (chain: clip -> L2 -> optimizer with schedule).

    >>> tx = make_optimizer("adamw", learning_rate=1e-3, weight_decay=1e-4)
    >>> tx = make_optimizer("momentum", 1000, learning_rate=0.1, schedule="cosine")
    """
    if isinstance(config, str):
        fields = {f.name for f in dataclasses.fields(OptimizerConfig)} - {"name"}
        unknown = set(kwargs) - fields
        if unknown:
            raise ValueError(
                f"Unknown optimizer option(s) {sorted(unknown)}. Valid: {sorted(fields)}."
            )
        config = OptimizerConfig(name=config, **kwargs)
    elif kwargs:
        config = dataclasses.replace(config, **kwargs)
    lr = make_schedule(config, total_steps)
    parts = []
    if config.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(config.clip_norm))
    if config.weight_decay > 0 and config.name != "adamw":
        parts.append(optax.add_decayed_weights(config.weight_decay, mask=_kernels_only))
    name = config.name
    if name == "sgd":
        parts.append(optax.sgd(lr))
    elif name in ("momentum", "nesterov"):
        parts.append(optax.sgd(lr, momentum=config.momentum, nesterov=name == "nesterov"))
    elif name == "adam":
        parts.append(optax.adam(lr))
    elif name == "adamw":
        parts.append(optax.adamw(lr, weight_decay=config.weight_decay, mask=_kernels_only))
    else:
        parts.append(optax.rmsprop(lr))  # decay 0.9, no momentum (Hinton's lecture 6e)
    return optax.chain(*parts) if len(parts) > 1 else parts[0]


def param_labels(params, frozen: Callable[[str], bool]):
    """The label "frozen" or "trained" of every leaf, from its top-level module name."""
    labels = {}
    for name, sub in params.items():
        label = "frozen" if frozen(name) else "trained"
        labels[name] = jax.tree.map(lambda _, lab=label: lab, sub)
    return labels


def freeze(tx: optax.GradientTransformation, params, frozen: Callable[[str], bool]):
    """`tx` for the trained parameters; zero updates (and no optimizer state) for the
    top-level modules where `frozen(name)` is true."""
    return optax.multi_transform(
        {"trained": tx, "frozen": optax.set_to_zero()}, param_labels(params, frozen)
    )
