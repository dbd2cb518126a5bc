"""What each CPU change in `dl` buys a CNN train step, one change at a time, with
PyTorch eager alongside.

For the benchmark CNN (conv32-pool-conv64-pool-128) and LeNet-5, batch 128, Adam:

- flax: `nn.Conv` and `nn.max_pool`, compiled with `jax.jit` (a plain Flax CNN);
- + pooling: dl's CPU max pooling (`dl.kernels.max_pool("cpu")`) instead of
  `nn.max_pool`;
- + XLA options: compiled with `dl.kernels.jit(..., kernels="cpu")` (YNNPACK for dot
  products only, and the temporaries split into blocks of at most 16 MiB);
- dl: also dl's CPU convolution (`kernels="cpu"`): the zoo's models as `dl train`
  compiles them on a CPU;
- PyTorch: the same model in eager PyTorch (`torch_models.py`).

All five are timed in turn in one process; medians over repeats. The process has the
malloc settings of `dl.kernels.tune_host_allocator()` (`common.py`) for all five; with
`DL_BENCH_MALLOC=0` it has glibc's defaults for all five.

    python experiments/benchmarks/cnn_cpu.py [--quick]
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import steps as steps_bench
from common import interleaved, per_step, quick, save, step_timer

from dl import train
from dl.kernels import compiler as xla
from dl.models import cnn as cnn_module
from dl.models.layers import pool


def flax_pool(x, kind, window, kernels="xla"):
    shape = (window,) * (x.ndim - 2)
    return nn.max_pool(x, shape, strides=shape) if kind == "max" else pool(x, kind, window)


def cpu_pool(x, kind, window, kernels="xla"):
    return pool(x, kind, window, "cpu")


def cpu_jit(fn, **kw):
    return xla.jit(fn, kernels="cpu", **kw)


# name -> (the model's kernels, pooling, jit)
VARIANTS = {
    "flax": ("xla", flax_pool, jax.jit),
    "pooling": ("xla", cpu_pool, jax.jit),
    "xla_options": ("xla", cpu_pool, cpu_jit),
    "dl": ("cpu", pool, cpu_jit),
}


def timer(case, variant, x, y, steps):
    """Seconds per step of this variant's compiled step (common.step_timer)."""
    kernels, pooling, jit = VARIANTS[variant]
    cnn_module.pool = pooling
    try:
        model = case["dl"](kernels)
        tx = optax.adam(1e-3)
        state = train.create_state(model, tx, case["shape"], seed=0)
        step = jit(train.make_train_step(model, tx), donate_argnums=0)
        batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
        state, _ = step(state, batch)  # traced now, with this variant's layers
    finally:
        cnn_module.pool = pool
    return step_timer(step, jax.block_until_ready(state), batch, steps)


def main() -> None:
    repeats, steps = (3, 3) if quick() else (9, 10)
    rng = np.random.default_rng(0)
    rows = []
    for name in ("cnn", "lenet5"):
        case = steps_bench.CASES[name]
        x, y = steps_bench._data(case, rng)
        timers = {v: timer(case, v, x, y, steps) for v in VARIANTS}
        timers["torch"] = per_step(steps_bench.torch_runner(case, x, y), steps)
        res = interleaved(timers, repeats)
        ms = {k: 1e3 * r["median_s"] for k, r in res.items()}
        rows.append(
            {
                "model": name,
                "what": case["what"],
                **{f"{k}_ms": v for k, v in ms.items()},
                "speedup_vs_flax": ms["flax"] / ms["dl"],
                "speedup_vs_torch": ms["torch"] / ms["dl"],
                "all_ms": {k: [1e3 * t for t in r["all_s"]] for k, r in res.items()},
            }
        )
        print(name, {k: round(v, 2) for k, v in ms.items()}, flush=True)
    save("cnn_cpu", rows, notes=f"medians of {repeats} repeats of {steps} steps")


if __name__ == "__main__":
    main()
