"""What `dl`'s opt-in malloc tuning (`DL_MALLOC_TUNING=1`, `dl.xla.tune_host_allocator`)
does to the train steps of `steps.py`, and to PyTorch's in the same process.

The tuning is process-wide and must come before JAX starts its threads, so the peer
cannot share the process: this script starts child processes with and without it
(`DL_MALLOC_TUNING=1` / `0`), in turn (with, without, with, ...). Each child times every
model's `dl` step and PyTorch step (interleaved, medians over repeats, as in
`steps.py`) and counts the page faults per `dl` step. The ratios are of the medians
over children.

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

    out = {"tuned": dl.xla.host_allocator_tuned()}
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
    pairs = 1 if quick() else 3
    runs: dict[str, list[dict]] = {"1": [], "0": []}
    for _ in range(pairs):
        for tuning in ("1", "0"):
            env = {**os.environ, "DL_MALLOC_TUNING": tuning}
            cmd = [sys.executable, __file__, "--child", ",".join(models)]
            cmd += ["--quick"] if quick() else []
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
            result = json.loads(line[len("RESULT ") :])
            if result["tuned"] != (tuning == "1"):
                raise SystemExit(f"DL_MALLOC_TUNING={tuning} but tuned={result['tuned']}")
            runs[tuning].append(result)
            print(f"DL_MALLOC_TUNING={tuning}", {m: result[m] for m in models}, flush=True)

    def med(tuning, model, key):
        return statistics.median(r[model][key] for r in runs[tuning])

    rows = []
    for m in models:
        row = {"model": m, "what": CASES[m]["what"], "children_each": pairs}
        for key in ("dl_ms", "torch_ms", "dl_faults_per_step"):
            row[f"{key}_tuned"], row[f"{key}_plain"] = med("1", m, key), med("0", m, key)
        row["dl_speedup"] = row["dl_ms_plain"] / row["dl_ms_tuned"]
        row["torch_speedup"] = row["torch_ms_plain"] / row["torch_ms_tuned"]
        rows.append(row)
    notes = "medians over child processes; each child's numbers are medians over repeats"
    save("allocator" + ("_subset" if models != list(CASES) else ""), rows, notes=notes)


if __name__ == "__main__":
    main()
