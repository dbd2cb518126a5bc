"""GPU benchmarks: the decoder LM's model FLOPs utilisation in bfloat16 mixed precision,
and CNN images per second against PyTorch on the same GPU.

MFU = tokens/s x FLOPs per token / the GPU's peak dense bf16 FLOP/s, with FLOPs per
token = 6N (N = parameters outside the embeddings, PaLM appendix B) plus the attention
scores and values, 12 x layers x d_model x T (forward and backward). The peak comes from
the device name (H100 SXM 989.5 TFLOP/s, H100 PCIe 756, H200 989.5, A100 312); pass
--peak-tflops for others.

    python experiments/benchmarks/gpu.py            # on a GPU machine
    python experiments/benchmarks/gpu.py --smoke    # tiny sizes, any device: checks it runs
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import interleaved, save, step_timer

from dl import models, train
from dl.kernels import compiler as xla

PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.5, "H200": 989.5, "A100": 312.0}


def peak_tflops(device) -> float | None:
    kind = getattr(device, "device_kind", "")
    for name, peak in PEAK_BF16_TFLOPS.items():  # "H100 PCIe" before "H100"
        if name in kind:
            return peak
    return None


def lm_mfu(cfg, repeats, steps, peak):
    vocab, d, layers, heads, t, batch = (
        cfg[k] for k in ("vocab", "d", "layers", "heads", "t", "batch")
    )
    model = models.get_model(
        "lm",
        vocab,
        kernels="auto",
        d_model=d,
        num_layers=layers,
        num_heads=heads,
        mlp_dim=4 * d,
        max_len=t,
    )
    tx = optax.adamw(3e-4)
    state = train.create_state(model, tx, (t,), seed=0, input_dtype="int32")
    n_params = sum(a.size for a in jax.tree.leaves(state.params))
    n_embed = vocab * d + t * d  # lookups, not matmuls
    flops_per_token = 6 * (n_params - n_embed) + 12 * layers * d * t
    rng = np.random.default_rng(0)
    batch_ = {
        "x": jnp.asarray(rng.integers(0, vocab, (batch, t)).astype(np.int32)),
        "y": jnp.asarray(rng.integers(0, vocab, (batch, t)).astype(np.int32)),
    }
    rows = []
    for dtype in ("float32", "bfloat16"):
        step = xla.jit(
            train.make_train_step(model, tx, compute_dtype=dtype), donate_argnums=0, kernels="auto"
        )
        s = train._copy_tree(state)
        res = interleaved({"lm": step_timer(step, s, batch_, steps)}, repeats)["lm"]["median_s"]
        tokens_per_s = batch * t / res
        achieved = tokens_per_s * flops_per_token / 1e12
        rows.append(
            {
                "bench": "decoder LM",
                "config": cfg,
                "compute_dtype": dtype,
                "params": n_params,
                "step_ms": 1e3 * res,
                "tokens_per_s": tokens_per_s,
                "model_tflops": achieved,
                "peak_bf16_tflops": peak,
                "mfu": achieved / peak if peak else None,
            }
        )
        print(rows[-1], flush=True)
    return rows


def cnn_vs_torch(batch, repeats, steps):
    import torch
    import torch_models as tm

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    rows = []
    for dtype in ("float32", "bfloat16"):
        model = models.get_model("cnn", 10, kernels="auto", channels=(64, 128, 256), dense=(256,))
        tx = optax.adam(1e-3)
        state = train.create_state(model, tx, (32, 32, 3), seed=0)
        step = xla.jit(
            train.make_train_step(model, tx, compute_dtype=dtype), donate_argnums=0, kernels="auto"
        )
        ours = step_timer(step, state, {"x": jnp.asarray(x), "y": jnp.asarray(y)}, steps)

        tmodel = tm.CNN(3, (64, 128, 256), 32, 256, 10).to(dev)
        tstep = tm.train_step_fn(tmodel)
        tx_, ty_ = (
            torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().to(dev),
            torch.from_numpy(y).long().to(dev),
        )

        def theirs(dtype=dtype, tstep=tstep, tx_=tx_, ty_=ty_) -> float:
            t0 = time.perf_counter()
            for _ in range(steps):
                with torch.autocast(dev, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                    tstep(tx_, ty_)
            if dev == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - t0) / steps

        res = interleaved({"dl": ours, "torch": theirs}, repeats)
        rows.append(
            {
                "bench": "CNN conv64-pool-conv128-pool-conv256-pool-256, 32x32x3",
                "batch": batch,
                "compute_dtype": dtype,
                "dl_images_per_s": batch / res["dl"]["median_s"],
                "torch_images_per_s": batch / res["torch"]["median_s"],
                "speedup_vs_torch": res["torch"]["median_s"] / res["dl"]["median_s"],
                "torch_device": dev,
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on any device")
    p.add_argument("--peak-tflops", type=float, default=None)
    args = p.parse_args()
    device = jax.devices()[0]
    if device.platform != "gpu" and not args.smoke:
        raise SystemExit(
            f"No GPU: jax runs on {device.platform} ({device}). Run this on a GPU machine, "
            "or pass --smoke to check the script on tiny sizes."
        )
    peak = args.peak_tflops or peak_tflops(device)
    if args.smoke:
        lm_cfg = dict(vocab=64, d=64, layers=2, heads=4, t=32, batch=4)
        repeats, steps, cnn_batch = 2, 2, 8
    else:
        # GPT-2-medium-like width, fits an 80 GB H100 with float32 Adam state.
        lm_cfg = dict(vocab=32768, d=1024, layers=12, heads=16, t=1024, batch=16)
        repeats, steps, cnn_batch = 5, 10, 256
    rows = lm_mfu(lm_cfg, repeats, steps, peak)
    rows += cnn_vs_torch(cnn_batch, repeats, steps)
    save(
        "gpu_smoke" if args.smoke else "gpu",
        rows,
        notes=f"device: {getattr(device, 'device_kind', device)}; smoke={args.smoke}",
    )


if __name__ == "__main__":
    main()
