"""Shared helpers of the benchmark scripts: timing by medians over repeats, interleaved
peers, and the JSON each script leaves for `report.py`.

Every number here is a ratio of medians of two things timed in the same process, one
repeat of each in turn (ABAB...), so that a noisy neighbour slows both alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks"

# The benchmarks time dl as `dl train` runs it: with glibc's malloc kept for XLA:CPU's
# temporaries, an explicit, process-wide call (never made by `import dl`).
# DL_BENCH_MALLOC=0 leaves malloc alone (allocator.py's configurations without it).
if os.environ.get("DL_BENCH_MALLOC", "1") != "0":
    import dl.kernels

    dl.kernels.tune_host_allocator()


def quick() -> bool:
    """`--quick` (or DL_BENCH_QUICK=1): fewer repeats, for checking that a script runs."""
    return "--quick" in sys.argv or os.environ.get("DL_BENCH_QUICK") == "1"


def interleaved(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, dict]:
    """Run each `fn` (which returns the seconds it measured) `repeats` times, in turn,
    after one untimed warm-up call each. Returns {name: {"median_s", "all_s"}}."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(fn())
    return {k: {"median_s": statistics.median(v), "all_s": v} for k, v in times.items()}


def per_step(run: Callable[[int], None], steps: int) -> Callable[[], float]:
    """A timer of `run(steps)` (which must finish its work before returning), in
    seconds per step."""

    def timed() -> float:
        t0 = time.perf_counter()
        run(steps)
        return (time.perf_counter() - t0) / steps

    return timed


def steps_for(run: Callable[[int], None], target_s: float, probe: int = 3) -> int:
    """How many steps of `run` (a warmed-up `run(n)`, as `per_step` takes) fill about
    `target_s` seconds, at least 3, from one timed call of `probe` steps."""
    t0 = time.perf_counter()
    run(probe)
    return max(3, int(target_s / ((time.perf_counter() - t0) / probe)))


def machine() -> dict:
    import jax

    info = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        **cpu_model(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def cpu_model(path: str = "/proc/cpuinfo") -> dict:
    """The CPU's model name and its widest x86 vector extensions, from /proc/cpuinfo (Linux):
    the 2-core machines this project runs on differ (an AVX-512 machine with a 425
    GFLOP/s matmul peak, an AVX2 AMD EPYC with about 130), and ratios against PyTorch
    differ with them."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_tile", "avx2", "fma") if f in flags]
    model = fields.get("model name", "")
    return {"cpu": model, "isa": " ".join(isa)}


def save(name: str, rows: list[dict], *, notes: str = "", command: str | None = None) -> Path:
    """Write results/benchmarks/<name>.json and print the rows."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {
        "name": name,
        "command": command or "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "quick": quick(),
        "notes": notes,
        "rows": rows,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    for row in rows:
        print({k: v for k, v in row.items() if not isinstance(v, list)})
    print(f"wrote {path}")
    return path


def step_timer(step: Callable, state, batch, steps: int = 3) -> Callable[[], float]:
    """A timer of `steps` calls of a compiled train step `(state, batch) -> (state, _)`,
    carrying the state along and waiting for the device; in seconds per step."""
    return per_step(state_runner(step, state, batch), steps)


def state_runner(step: Callable, state, batch) -> Callable[[int], None]:
    """run(n): n calls of a compiled train step `(state, batch) -> (state, _)`, carrying
    the state along, then a wait for the device (for `per_step`)."""
    import jax

    holder = {"s": state}

    def run(n: int) -> None:
        s = holder["s"]
        for _ in range(n):
            s, _ = step(s, batch)
        holder["s"] = jax.block_until_ready(s)

    return run


def call_runner(fn: Callable, *args) -> Callable[[int], None]:
    """run(n): n calls of `dl.kernels.jit(fn, kernels="cpu")(*args)` (compiled here),
    then a wait."""
    import jax

    from dl.kernels import compiler as xla

    compiled = xla.jit(fn, kernels="cpu")
    jax.block_until_ready(compiled(*args))

    def run(n: int) -> None:
        for _ in range(n):
            out = compiled(*args)
        jax.block_until_ready(out)

    return run


def versus_rows(cases: dict[str, tuple], repeats: int, calls: int = 5) -> list[dict]:
    """For each case's (dl run, flax run) pair of `run(n)` callables: the medians of
    `repeats` interleaved timings of `calls` calls, and flax's over dl's."""
    rows = []
    for case, (ours, theirs) in cases.items():
        res = interleaved({"dl": per_step(ours, calls), "flax": per_step(theirs, calls)}, repeats)
        rows.append(
            {
                "case": case,
                "dl_ms": 1e3 * res["dl"]["median_s"],
                "flax_ms": 1e3 * res["flax"]["median_s"],
                "speedup": res["flax"]["median_s"] / res["dl"]["median_s"],
            }
        )
        print(case, f"{rows[-1]['speedup']:.2f}x", flush=True)
    return rows
