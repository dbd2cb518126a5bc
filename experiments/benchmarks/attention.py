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
import optax
from common import interleaved, per_step, quick, save

from dl import models, train, xla
from dl.models import attention as A

B, T, H, D = 32, 128, 4, 32  # steps.py's decoder LM: d_model 128, 4 heads, T=128, batch 32


def _runner(fn, *args):
    """run(n): n calls of the compiled fn, then wait."""
    compiled = xla.jit(fn)
    jax.block_until_ready(compiled(*args))

    def run(n):
        for _ in range(n):
            out = compiled(*args)
        jax.block_until_ready(out)

    return run


def _grad_runner(attn, q, k, v, g):
    return _runner(jax.grad(lambda q, k, v: (attn(q, k, v) * g).sum(), (0, 1, 2)), q, k, v)


def _lm_runner(fast: bool):
    original = A._fast_path_applies
    if not fast:
        A._fast_path_applies = lambda *a: False
    try:
        model = models.get_model(
            "lm", 65, d_model=128, num_layers=2, num_heads=4, mlp_dim=512, max_len=128
        )
        tx = optax.adam(1e-3)
        state = train.create_state(model, tx, (T,), seed=0, input_dtype="int32")
        step = xla.jit(train.make_train_step(model, tx), donate_argnums=0)
        rng = np.random.default_rng(0)
        batch = {k: jnp.asarray(rng.integers(0, 65, (B, T)).astype(np.int32)) for k in "xy"}
        holder = {"state": step(state, batch)[0]}  # traced now, with this attention
    finally:
        A._fast_path_applies = original

    def run(n):
        s = holder["state"]
        for _ in range(n):
            s, _ = step(s, batch)
        holder["state"] = jax.block_until_ready(s)

    return run


def main() -> None:
    repeats = 3 if quick() else 9
    rng = np.random.default_rng(0)
    q, k, v, g = (jnp.asarray(rng.normal(size=(B, T, H, D)).astype(np.float32)) for _ in range(4))
    p = jnp.asarray(rng.random(size=(B, H, T, T)).astype(np.float32))
    causal = jnp.tril(jnp.ones((T, T), bool))
    shape = f"({B}, {T}, {H}, {D})"
    cases = {
        f"P @ V, P (B, H, T, T) and V {shape}: operands (V, P) against (P, V)": (
            _runner(lambda p, v: jnp.einsum("bkhd,bhqk->bqhd", v, p), p, v),
            _runner(lambda p, v: jnp.einsum("bhqk,bkhd->bqhd", p, v), p, v),
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
            _lm_runner(fast=True),
            _lm_runner(fast=False),
        ),
    }
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
    save("attention", rows, notes=f"medians of {repeats} repeats of 5 calls")


if __name__ == "__main__":
    main()
