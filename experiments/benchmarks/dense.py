"""Dense layers on XLA:CPU: `dl.models.layers.dense_dot_general` (the kernel gradient
from an explicit inputs^T) against `lax.dot_general` (flax's default), for a Dense
layer's forward plus backward and in the decoder LM's whole train step (steps.py's LM,
with dl's attention in both).

    python experiments/benchmarks/dense.py [--quick]
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import interleaved, per_step, quick, save

from dl import models, train, xla
from dl.models import layers


def _runner(fn, *args):
    compiled = xla.jit(fn)
    jax.block_until_ready(compiled(*args))

    def run(n):
        for _ in range(n):
            out = compiled(*args)
        jax.block_until_ready(out)

    return run


def _dense_runner(dot_general, x, g):
    layer = nn.Dense(g.shape[-1], dot_general=dot_general)
    params = layer.init(jax.random.key(0), x)
    return _runner(jax.grad(lambda p, x: (layer.apply(p, x) * g).sum(), (0, 1)), params, x)


def _lm_runner(fast: bool):
    original = layers._fast_dense_applies
    if not fast:
        layers._fast_dense_applies = lambda *a: False
    try:
        model = models.get_model(
            "lm", 65, d_model=128, num_layers=2, num_heads=4, mlp_dim=512, max_len=128
        )
        tx = optax.adam(1e-3)
        state = train.create_state(model, tx, (128,), seed=0, input_dtype="int32")
        step = xla.jit(train.make_train_step(model, tx), donate_argnums=0)
        rng = np.random.default_rng(0)
        batch = {k: jnp.asarray(rng.integers(0, 65, (32, 128)).astype(np.int32)) for k in "xy"}
        holder = {"state": step(state, batch)[0]}  # traced now, with this product
    finally:
        layers._fast_dense_applies = original

    def run(n):
        s = holder["state"]
        for _ in range(n):
            s, _ = step(s, batch)
        holder["state"] = jax.block_until_ready(s)

    return run


def main() -> None:
    repeats = 3 if quick() else 9
    rng = np.random.default_rng(0)
    cases = {}
    for n, k, f in ((4096, 128, 512), (4096, 512, 128), (4096, 128, 128)):
        x = jnp.asarray(rng.normal(size=(n, k)).astype(np.float32))
        g = jnp.asarray(rng.normal(size=(n, f)).astype(np.float32))
        cases[f"Dense {k} -> {f} on {n} rows, forward + backward"] = (
            _dense_runner(layers.dense_dot_general, x, g),
            _dense_runner(jax.lax.dot_general, x, g),
        )
    cases["decoder LM d128 x 2 layers, 4 heads, T=128, vocab 65, batch 32: train step"] = (
        _lm_runner(fast=True),
        _lm_runner(fast=False),
    )
    rows = []
    for case, (ours, flax_) in cases.items():
        res = interleaved({"dl": per_step(ours, 5), "flax": per_step(flax_, 5)}, repeats)
        rows.append(
            {
                "case": case,
                "dl_ms": 1e3 * res["dl"]["median_s"],
                "flax_ms": 1e3 * res["flax"]["median_s"],
                "speedup": res["flax"]["median_s"] / res["dl"]["median_s"],
            }
        )
        print(case, f"{rows[-1]['speedup']:.2f}x", flush=True)
    save("dense", rows, notes=f"medians of {repeats} repeats of 5 calls")


if __name__ == "__main__":
    main()
