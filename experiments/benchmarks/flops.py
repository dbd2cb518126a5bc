"""Achieved FLOP/s of an MLP train step at a large batch, against this machine's
measured float32 matmul peak (the best median over square sizes of one `jnp.dot`).

Model FLOPs per step, counted exactly for the Dense layers: forward 2*B*in*out each;
backward 2*B*in*out for the weight gradient and 2*B*in*out for the input gradient
(none for the first layer, whose input needs no gradient). Bias, activation, loss and
Adam FLOPs are left out (they are < 1% here), so the ratio slightly understates.

    python experiments/benchmarks/flops.py [--quick]
"""

from __future__ import annotations

import time
from itertools import pairwise

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import interleaved, quick, save, step_timer

from dl import models, train
from dl.kernels import compiler as xla


def matmul_peak(sizes, repeats):
    best = None
    for n in sizes:
        a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)).astype(np.float32))
        f = jax.jit(jnp.dot)
        f(a, a).block_until_ready()

        def run(a=a, f=f) -> float:
            t0 = time.perf_counter()
            f(a, a).block_until_ready()
            return time.perf_counter() - t0

        med = interleaved({"mm": run}, repeats)["mm"]["median_s"]
        gflops = 2 * n**3 / med / 1e9
        print(f"matmul {n}: {gflops:.1f} GFLOP/s", flush=True)
        if best is None or gflops > best[1]:
            best = (n, gflops)
    return best


def mlp_flops(batch: int, dims: list[int]) -> int:
    pairs = list(pairwise(dims))
    fwd = sum(2 * batch * i * o for i, o in pairs)
    wgrad = fwd
    xgrad = sum(2 * batch * i * o for i, o in pairs[1:])
    return fwd + wgrad + xgrad


def main() -> None:
    repeats = 3 if quick() else 9
    peak_n, peak = matmul_peak((1024, 2048) if quick() else (1024, 2048, 4096), repeats)
    rows = []
    for batch, widths in [(1024, (2048, 2048)), (4096, (2048, 2048, 2048))]:
        model = models.get_model("mlp", 10, widths=widths)
        tx = optax.adam(1e-3)
        state = train.create_state(model, tx, (784,), seed=0)
        step = xla.jit(train.make_train_step(model, tx), donate_argnums=0, kernels="cpu")
        rng = np.random.default_rng(0)
        b = {
            "x": jnp.asarray(rng.normal(size=(batch, 784)).astype(np.float32)),
            "y": jnp.asarray(rng.integers(0, 10, batch).astype(np.int32)),
        }
        med = interleaved({"step": step_timer(step, state, b)}, repeats)["step"]["median_s"]
        flops = mlp_flops(batch, [784, *widths, 10])
        achieved = flops / med / 1e9
        rows.append(
            {
                "model": f"MLP 784-{'-'.join(map(str, widths))}-10",
                "batch": batch,
                "step_ms": 1e3 * med,
                "model_gflop_per_step": flops / 1e9,
                "achieved_gflops": achieved,
                "matmul_peak_gflops": peak,
                "peak_matmul_size": peak_n,
                "fraction_of_peak": achieved / peak,
                "repeats": repeats,
            }
        )
        print(rows[-1], flush=True)
    save("mlp_flops", rows, notes="float32; peak = best median of one n x n matmul.")


if __name__ == "__main__":
    main()
