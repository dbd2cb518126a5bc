"""Attention on XLA:CPU: `dl.models.attention` against flax's `nn.dot_product_attention`,
forward plus backward, and in the decoder LM's whole train step (steps.py's LM; the
reference is the same model with flax's attention and causal mask).

    python experiments/benchmarks/attention.py [--quick]
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from common import call_runner, quick, save, versus_rows
from steps import switched_runner

from dl.kernels import attention as A

B, T, H, D = 32, 128, 4, 32  # steps.py's decoder LM: d_model 128, 4 heads, T=128, batch 32


def _grad_runner(attn, q, k, v, g):
    return call_runner(jax.grad(lambda q, k, v: (attn(q, k, v) * g).sum(), (0, 1, 2)), q, k, v)


def main() -> None:
    repeats = 3 if quick() else 9
    rng = np.random.default_rng(0)
    q, k, v, g = (jnp.asarray(rng.normal(size=(B, T, H, D)).astype(np.float32)) for _ in range(4))
    p = jnp.asarray(rng.random(size=(B, H, T, T)).astype(np.float32))
    causal = jnp.tril(jnp.ones((T, T), bool))
    shape = f"({B}, {T}, {H}, {D})"
    cases = {
        f"P @ V, P (B, H, T, T) and V {shape}: operands (V, P) against (P, V)": (
            call_runner(lambda p, v: jnp.einsum("bkhd,bhqk->bqhd", v, p), p, v),
            call_runner(lambda p, v: jnp.einsum("bhqk,bkhd->bqhd", p, v), p, v),
        ),
        f"causal self-attention {shape}, forward + backward": (
            _grad_runner(A.causal_attention, q, k, v, g),
            _grad_runner(
                lambda q, k, v: nn.dot_product_attention(q, k, v, mask=causal), q, k, v, g
            ),
        ),
        f"unmasked self-attention {shape}, forward + backward": (
            _grad_runner(A.attention, q, k, v, g),
            _grad_runner(nn.dot_product_attention, q, k, v, g),
        ),
        "decoder LM d128 x 2 layers, 4 heads, T=128, vocab 65, batch 32: train step": (
            switched_runner("transformer"),
            switched_runner("transformer", switch_off=(A, "_fast_path_applies")),
        ),
    }
    rows = versus_rows(cases, repeats)
    save("attention", rows, notes=f"medians of {repeats} repeats of 5 calls")


if __name__ == "__main__":
    main()
