# ruff: noqa: E501  (the child script below is one string)
"""dl's train steps at two commits, in one run: the checked-out tree against `--base`.

Each round runs one child process per tree, in turn, the order swapped every other
round (base, this tree, this tree, base, ...), so a noisy neighbour slows both alike; a child times every model's step (`steps.py`'s
models, batch and Adam) with dl's CPU kernels and the host-allocator tuning, medians
over repeats. Older trees, whose `import dl` tuned malloc and whose models and
`dl.xla.jit` chose the CPU formulations themselves, are driven through their own API.
The result is each model's median over rounds and the ratio this tree / base (< 1:
faster now).

    python experiments/benchmarks/ab_commits.py --base a06ecc3 [--rounds 4] [--quick] [MODEL ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import save

ROOT = Path(__file__).resolve().parents[2]

# Run inside each tree's child process: the models of steps.py, timed with the tree's API.
CHILD = r"""
import json, statistics, sys, time
import numpy as np, optax, jax, jax.numpy as jnp
import dl
from dl import models, train
new = hasattr(dl, "kernels") or "kernels" in getattr(dl, "_SUBMODULES", ())
if new:
    from dl import kernels
    kernels.tune_host_allocator()
    jit = lambda f: kernels.jit(f, donate_argnums=0, kernels="cpu")
    kw = {"kernels": "cpu"}
else:
    from dl import xla
    jit = lambda f: xla.jit(f, donate_argnums=0)
    kw = {}
repeats, target, only = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
cases = {
    "mlp": (lambda: models.get_model("mlp", 10, widths=(512, 512), **kw), (28, 28, 1), 128, 10, False),
    "lenet5": (lambda: models.get_model("lenet5", 10, **kw), (28, 28, 1), 128, 10, False),
    "cnn": (lambda: models.get_model("cnn", 10, channels=(32, 64), dense=(128,), **kw), (28, 28, 1), 128, 10, False),
    "lstm": (lambda: models.get_model("lstm", 10, hidden=128, **kw), (28, 28), 128, 10, False),
    "transformer": (lambda: models.get_model("lm", 65, d_model=128, num_layers=2, num_heads=4, mlp_dim=512, max_len=128, **kw), (128,), 32, 65, True),
}
out = {}
rng = np.random.default_rng(0)
for name, (make, shape, b, k, tokens) in cases.items():
    if only and name not in only:
        continue
    model, tx = make(), optax.adam(1e-3)
    dtype = "int32" if tokens else "float32"
    state = train.create_state(model, tx, shape, seed=0, input_dtype=dtype)
    if tokens:
        x = rng.integers(0, k, (b, *shape)).astype(np.int32); y = rng.integers(0, k, (b, *shape)).astype(np.int32)
    else:
        x = rng.normal(size=(b, *shape)).astype(np.float32); y = rng.integers(0, k, b).astype(np.int32)
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    step = jit(train.make_train_step(model, tx)).lower(state, batch).compile()
    for _ in range(3):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    t0 = time.perf_counter(); state, _ = step(state, batch); jax.block_until_ready(state)
    n = max(3, int(target / (time.perf_counter() - t0)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            state, _ = step(state, batch)
        jax.block_until_ready(state)
        times.append((time.perf_counter() - t0) / n)
    out[name] = 1e3 * statistics.median(times)
print(json.dumps(out))
"""


def _worktree(rev: str, where: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
        check=True,
        capture_output=True,
    )
    return where


def _child(tree: Path, repeats: int, target_s: float, only: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("DL_MALLOC_TUNING", None)
    env.pop("DL_XLA_DEFAULTS", None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(repeats), str(target_s), *only],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the commit to compare with")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--quick", action="store_true")
    p.add_argument("models", nargs="*", help="a subset: mlp lenet5 cnn lstm transformer")
    args = p.parse_args()
    repeats, target = (3, 0.3) if args.quick else (5, 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        base = _worktree(args.base, Path(tmp) / "base")
        try:
            runs: dict[str, list[dict]] = {"base": [], "head": []}
            trees = [("base", base), ("head", ROOT)]
            for i in range(args.rounds):
                # ABBA: each tree goes first in every other round
                for label, tree in trees if i % 2 == 0 else trees[::-1]:
                    runs[label].append(_child(tree, repeats, target, args.models))
                    print(f"round {i + 1} {label}: {runs[label][-1]}", flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                capture_output=True,
            )
    rows = []
    for name in runs["head"][0]:
        b = statistics.median(r[name] for r in runs["base"])
        h = statistics.median(r[name] for r in runs["head"])
        rows.append(
            {
                "model": name,
                "base_ms": b,
                "head_ms": h,
                "head_over_base": h / b,
                "within_5_percent": h <= 1.05 * b,
                "base_all_ms": [r[name] for r in runs["base"]],
                "head_all_ms": [r[name] for r in runs["head"]],
            }
        )
    save(
        "ab_commits",
        rows,
        notes=f"base {args.base}; {args.rounds} rounds of one child process per tree "
        "(ABBA order); medians over rounds of each child's median ms/step.",
    )


if __name__ == "__main__":
    main()
