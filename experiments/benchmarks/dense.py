"""Dense layers on XLA:CPU: `dl.models.layers.dense_dot_general` (the kernel gradient
as one product over the rows, no transposed copy) against `lax.dot_general` (flax's
default), for a Dense layer's forward plus backward and in the decoder LM's whole train
step (steps.py's LM, with dl's attention in both).

    python experiments/benchmarks/dense.py [--quick]
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from common import call_runner, quick, save, versus_rows
from steps import switched_runner

from dl.kernels import products as layers


def _dense_runner(dot_general, x, g):
    layer = nn.Dense(g.shape[-1], dot_general=dot_general)
    params = layer.init(jax.random.key(0), x)
    return call_runner(jax.grad(lambda p, x: (layer.apply(p, x) * g).sum(), (0, 1)), params, x)


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
        switched_runner("transformer"),
        switched_runner("transformer", switch_off=(layers, "_fast_dense_applies")),
    )
    rows = versus_rows(cases, repeats)
    save("dense", rows, notes=f"medians of {repeats} repeats of 5 calls")


if __name__ == "__main__":
    main()
