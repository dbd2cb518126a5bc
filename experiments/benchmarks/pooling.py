"""Max pooling on XLA:CPU: dl's CPU max pooling (`dl.kernels.max_pool("cpu")`) against flax's
`nn.max_pool` (reduce_window, whose gradient is a select-and-scatter), forward plus
backward on a conv activation, and in a whole CNN train step.

    python experiments/benchmarks/pooling.py [--quick]
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import interleaved, quick, save

from dl import models, train
from dl.models import cnn as cnn_module
from dl.models.layers import pool


def flax_pool(x, kind, window, kernels="xla"):
    shape = (window,) * (x.ndim - 2)
    return nn.max_pool(x, shape, strides=shape)


def cpu_pool(x, kind, window, kernels="xla"):
    return pool(x, kind, window, "cpu")


def timer(fn, *args, steps=5):
    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            out = fn(*args)
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / steps

    return run


def main() -> None:
    repeats = 3 if quick() else 9
    x = jax.random.normal(jax.random.key(0), (128, 28, 28, 32))
    grads = {
        name: jax.jit(jax.grad(lambda x, f=f: jnp.sum(jnp.sin(f(x, "max", 2)))))
        for name, f in (("dl", cpu_pool), ("flax", flax_pool))
    }
    res = interleaved({k: timer(g, x) for k, g in grads.items()}, repeats)
    rows = [
        {
            "case": "max pool 2x2, forward + backward, (128, 28, 28, 32)",
            "dl_ms": 1e3 * res["dl"]["median_s"],
            "flax_ms": 1e3 * res["flax"]["median_s"],
            "speedup": res["flax"]["median_s"] / res["dl"]["median_s"],
        }
    ]
    # The same CNN train step with each pooling (the pool the zoo's CNN calls is swapped).
    steps = {}
    for name, f in (("dl", cpu_pool), ("flax", flax_pool)):
        cnn_module.pool = f
        model = models.get_model("cnn", 10, channels=(32, 64), dense=(128,))
        tx = optax.adam(1e-3)
        state = train.create_state(model, tx, (28, 28, 1), seed=0)
        step = jax.jit(train.make_train_step(model, tx))
        rng = np.random.default_rng(0)
        batch = {
            "x": jnp.asarray(rng.normal(size=(128, 28, 28, 1)).astype(np.float32)),
            "y": jnp.asarray(rng.integers(0, 10, 128).astype(np.int32)),
        }
        step(state, batch)  # trace now, with this pool
        steps[name] = timer(step, state, batch, steps=3)
    cnn_module.pool = pool
    res = interleaved(steps, repeats)
    rows.append(
        {
            "case": "CNN conv32-pool-conv64-pool-128 train step, batch 128",
            "dl_ms": 1e3 * res["dl"]["median_s"],
            "flax_ms": 1e3 * res["flax"]["median_s"],
            "speedup": res["flax"]["median_s"] / res["dl"]["median_s"],
        }
    )
    save("pooling", rows, notes=f"medians of {repeats} repeats")


if __name__ == "__main__":
    main()
