"""Train-step time of `dl` against the same models written idiomatically in PyTorch.

For each model, three steps on the same batch shape, all with Adam(1e-3), timed in turn
over repeats in one process: dl's step (`dl.train.make_train_step`, compiled once with
`dl.kernels.jit`, the state donated) with dl's CPU kernels (`kernels="cpu"`: the model's
layers and the compiler options), the same step with plain XLA (`kernels="xla"`), and
PyTorch's eager step (zero_grad, forward, cross-entropy, backward, Adam). The ratios are
PyTorch's median time per step over ours (> 1: `dl` is faster).

Each row also gives the FLOPs of our compiled step (XLA's cost analysis) and the time
they would take at this machine's measured float32 matmul peak (`flops.matmul_peak`):
the fraction of that peak each side reaches (PyTorch's with our step's FLOP count: the
same model), and the speed-up over PyTorch that a step at the peak would have. On a
machine where PyTorch's step is already near the peak, no step can be much faster.

    python experiments/benchmarks/steps.py [--quick] [MODEL ...]
"""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch_models as tm
from common import interleaved, per_step, quick, save, state_runner, steps_for
from flops import matmul_peak

from dl import models, train
from dl.kernels import compiler as xla

torch.manual_seed(0)

# name -> (dl model, dl input shape per example, input dtype, PyTorch model, batch size,
# vocabulary or classes, note)
CASES = {
    "mlp": dict(
        dl=lambda k: models.get_model("mlp", 10, kernels=k, widths=(512, 512)),
        shape=(28, 28, 1),
        torch=lambda: tm.MLP(784, (512, 512), 10),
        batch=128,
        classes=10,
        what="MLP 784-512-512-10, batch 128",
    ),
    "lenet5": dict(
        dl=lambda k: models.get_model("lenet5", 10, kernels=k),
        shape=(28, 28, 1),
        torch=lambda: tm.LeNet5(10),
        batch=128,
        classes=10,
        what="LeNet-5 on 28x28x1, batch 128",
    ),
    "cnn": dict(
        dl=lambda k: models.get_model("cnn", 10, kernels=k, channels=(32, 64), dense=(128,)),
        shape=(28, 28, 1),
        torch=lambda: tm.CNN(1, (32, 64), 28, 128, 10),
        batch=128,
        classes=10,
        what="CNN conv32-pool-conv64-pool-128 on 28x28x1, batch 128",
    ),
    "lstm": dict(
        dl=lambda k: models.get_model("lstm", 10, kernels=k, hidden=128),
        shape=(28, 28),
        torch=lambda: tm.LSTMClassifier(28, 128, 10),
        batch=128,
        classes=10,
        what="LSTM 128 over 28 steps of 28 features, batch 128",
    ),
    "transformer": dict(
        dl=lambda k: models.get_model(
            "lm", 65, kernels=k, d_model=128, num_layers=2, num_heads=4, mlp_dim=512, max_len=128
        ),
        shape=(128,),
        torch=lambda: tm.DecoderLM(65, 128, 2, 4, 512, 128),
        batch=32,
        classes=65,
        tokens=True,
        what="decoder LM d128 x 2 layers, 4 heads, T=128, vocab 65, batch 32",
    ),
}


def _data(case, rng):
    b, shape = case["batch"], case["shape"]
    if case.get("tokens"):
        x = rng.integers(0, case["classes"], size=(b, *shape)).astype(np.int32)
        y = rng.integers(0, case["classes"], size=(b, *shape)).astype(np.int32)
    else:
        x = rng.normal(size=(b, *shape)).astype(np.float32)
        y = rng.integers(0, case["classes"], size=(b,)).astype(np.int32)
    return x, y


def dl_runner(case, x, y, kernels: str = "cpu"):
    model = case["dl"](kernels)
    tx = optax.adam(1e-3)
    state = train.create_state(
        model, tx, case["shape"], seed=0, input_dtype="int32" if case.get("tokens") else "float32"
    )
    step = xla.jit(train.make_train_step(model, tx), donate_argnums=0, kernels=kernels)
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    compiled = step.lower(state, batch).compile()  # timed below too: compiled once
    run = state_runner(compiled, state, batch)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # a list in older jaxlibs
    # None where XLA cannot count: it counts a loop body's FLOPs once, not per iteration
    run.flops = None if not cost or " while(" in compiled.as_text() else cost.get("flops")
    return run


def switched_runner(name: str, switch_off: tuple[object, str] | None = None):
    """`dl_runner` for CASES[name] on `_data`'s batch, traced (by one step) with
    `getattr(*switch_off)` replaced by a function returning False, when given: a fast
    path of `dl` turned off, for the benchmarks that measure one."""
    case = CASES[name]
    module, attr = switch_off or (None, None)
    original = getattr(module, attr) if module else None
    if module:
        setattr(module, attr, lambda *a: False)
    try:
        run = dl_runner(case, *_data(case, np.random.default_rng(0)))
        run(1)  # traced now, with or without the fast path
    finally:
        if module:
            setattr(module, attr, original)
    return run


def torch_runner(case, x, y):
    model = case["torch"]()
    step = tm.train_step_fn(model)
    if case.get("tokens"):
        tx, ty = torch.from_numpy(x).long(), torch.from_numpy(y).long()
    elif case["shape"] == (28, 28, 1) and not isinstance(model, tm.MLP):
        tx, ty = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long()
    else:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y).long()

    def run(n):
        for _ in range(n):
            step(tx, ty)  # eager: each op has finished when the call returns

    return run


def main() -> None:
    repeats, target_s = (3, 0.3) if quick() else (9, 1.0)
    rng = np.random.default_rng(0)
    rows = []
    only = [a for a in sys.argv[1:] if not a.startswith("--")]  # e.g. `steps.py cnn lstm`
    unknown = sorted(set(only) - set(CASES))
    if unknown:
        raise SystemExit(f"Unknown model(s) {unknown}; choose from {sorted(CASES)}.")
    peak_n, peak = matmul_peak((1024, 2048), 3 if quick() else 5)
    for name, case in CASES.items():
        if only and name not in only:
            continue
        x, y = _data(case, rng)
        ours, theirs = dl_runner(case, x, y, "cpu"), torch_runner(case, x, y)
        plain = dl_runner(case, x, y, "xla")
        ours(3), plain(3)  # compile
        steps = steps_for(theirs, target_s)
        res = interleaved(
            {
                "dl": per_step(ours, steps),
                "dl_xla": per_step(plain, steps),
                "torch": per_step(theirs, steps),
            },
            repeats,
        )
        at_peak_s = ours.flops / (peak * 1e9) if ours.flops else None
        rows.append(
            {
                "model": name,
                "what": case["what"],
                "steps_per_repeat": steps,
                "repeats": repeats,
                "dl_ms": 1e3 * res["dl"]["median_s"],
                "dl_xla_ms": 1e3 * res["dl_xla"]["median_s"],
                "torch_ms": 1e3 * res["torch"]["median_s"],
                "speedup_vs_torch": res["torch"]["median_s"] / res["dl"]["median_s"],
                "xla_speedup_vs_torch": res["torch"]["median_s"] / res["dl_xla"]["median_s"],
                "cpu_kernels_vs_xla": res["dl_xla"]["median_s"] / res["dl"]["median_s"],
                "matmul_peak_gflops": peak,
                "peak_matmul_size": peak_n,
                **(
                    {
                        "step_gflop": ours.flops / 1e9,
                        "dl_fraction_of_peak": at_peak_s / res["dl"]["median_s"],
                        "torch_fraction_of_peak": at_peak_s / res["torch"]["median_s"],
                        "speedup_at_peak": res["torch"]["median_s"] / at_peak_s,
                    }
                    if at_peak_s
                    else {}
                ),
                "dl_all_ms": [1e3 * t for t in res["dl"]["all_s"]],
                "dl_xla_all_ms": [1e3 * t for t in res["dl_xla"]["all_s"]],
                "torch_all_ms": [1e3 * t for t in res["torch"]["all_s"]],
            }
        )
        r = rows[-1]
        print(
            r["model"],
            f"cpu kernels {r['speedup_vs_torch']:.2f}x, xla {r['xla_speedup_vs_torch']:.2f}x",
            flush=True,
        )
    # A subset is saved apart, so that it does not replace the full table of report.py.
    save(
        "steps_vs_pytorch_subset" if only else "steps_vs_pytorch",
        rows,
        notes="PyTorch eager on CPU, its default threads.",
    )


if __name__ == "__main__":
    main()
