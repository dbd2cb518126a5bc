"""What `dl`'s two memory measures for XLA:CPU do to the train steps of `steps.py`, and
to PyTorch's in the same process (see `dl.kernels.compiler`):

- the split of XLA's per-call temporaries into blocks of at most 16 MiB
  (`dl.kernels.jit(..., kernels="cpu")`),
- the malloc settings that keep those blocks' memory between calls
  (`dl.kernels.tune_host_allocator()`, which the benchmarks' `common.py` calls unless
  `DL_BENCH_MALLOC=0`).

The malloc settings are process-wide, so the configurations cannot share a process: this
script starts child processes in turn, one per configuration, round after round:

- `default`: both measures (what `dl` does);
- `no_malloc`: the split only (`DL_BENCH_MALLOC=0`);
- `neither`: `DL_BENCH_MALLOC=0` and XLA_FLAGS=--xla_multiheap_size_constraint_per_heap=-1
  (XLA's default, one block; a user's own XLA_FLAGS setting wins over dl's).

Each child times every model's `dl` step and PyTorch step (interleaved, medians over
repeats, as in `steps.py`) and counts the page faults per `dl` step. The numbers are
medians over children; speed-ups are `neither`'s time over the configuration's.

    python experiments/benchmarks/allocator.py [--quick] [MODEL ...]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys


def child(models: list[str], repeats: int, target_s: float) -> dict:
    import numpy as np
    import steps as steps_bench
    from common import interleaved, per_step, steps_for

    import dl

    out = {
        "tuned": dl.kernels.host_allocator_tuned(),
        "split": dl.kernels.compiler._split_applies("cpu"),
    }
    rng = np.random.default_rng(0)
    for name in models:
        case = steps_bench.CASES[name]
        x, y = steps_bench._data(case, rng)
        ours = steps_bench.dl_runner(case, x, y)
        theirs = steps_bench.torch_runner(case, x, y)
        ours(3)  # compile, and let the heap grow to its working size
        steps = steps_for(ours, target_s)
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ours(steps)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps
        res = interleaved({"dl": per_step(ours, steps), "torch": per_step(theirs, steps)}, repeats)
        out[name] = {
            "dl_ms": 1e3 * res["dl"]["median_s"],
            "torch_ms": 1e3 * res["torch"]["median_s"],
            "dl_faults_per_step": faults,
        }
    return out


_NO_SPLIT = "--xla_multiheap_size_constraint_per_heap=-1"
# name -> (environment, what the child must report)
CONFIGS = {
    "default": ({"DL_BENCH_MALLOC": "1"}, {"tuned": True, "split": True}),
    "no_malloc": ({"DL_BENCH_MALLOC": "0"}, {"tuned": False, "split": True}),
    "neither": (
        {
            "DL_BENCH_MALLOC": "0",
            "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + _NO_SPLIT).strip(),
        },
        {"tuned": False, "split": False},
    ),
}


def main() -> None:
    from common import quick, save
    from steps import CASES

    if "--child" in sys.argv:
        models = sys.argv[sys.argv.index("--child") + 1].split(",")
        repeats, target_s = (2, 0.2) if quick() else (5, 0.3)
        print("RESULT " + json.dumps(child(models, repeats, target_s)), flush=True)
        return
    models = [a for a in sys.argv[1:] if not a.startswith("--")] or list(CASES)
    unknown = sorted(set(models) - set(CASES))
    if unknown:
        raise SystemExit(f"Unknown model(s) {unknown}; choose from {sorted(CASES)}.")
    rounds = 1 if quick() else 3
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for _ in range(rounds):
        for config, (env_extra, want) in CONFIGS.items():
            env = {**os.environ, **env_extra}
            cmd = [sys.executable, __file__, "--child", ",".join(models)]
            cmd += ["--quick"] if quick() else []
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
            result = json.loads(line[len("RESULT ") :])
            got = {"tuned": result["tuned"], "split": result["split"]}
            if got != want:
                raise SystemExit(f"{config}: expected {want}, the child had {got}")
            runs[config].append(result)
            print(config, {m: result[m] for m in models}, flush=True)

    def med(config, model, key):
        return statistics.median(r[model][key] for r in runs[config])

    rows = []
    for m in models:
        row = {"model": m, "what": CASES[m]["what"], "children_each": rounds}
        for config in CONFIGS:
            for key in ("dl_ms", "torch_ms", "dl_faults_per_step"):
                row[f"{key}_{config}"] = med(config, m, key)
        for config in ("default", "no_malloc"):
            row[f"dl_speedup_{config}"] = row["dl_ms_neither"] / row[f"dl_ms_{config}"]
            row[f"torch_speedup_{config}"] = row["torch_ms_neither"] / row[f"torch_ms_{config}"]
        row["vs_torch_default"] = row["torch_ms_default"] / row["dl_ms_default"]
        rows.append(row)
    notes = (
        "medians over child processes; each child's numbers are medians over repeats; "
        "speed-ups are the 'neither' configuration's time over the configuration's"
    )
    save("allocator" + ("_subset" if models != list(CASES) else ""), rows, notes=notes)


if __name__ == "__main__":
    main()
