"""Run the CPU benchmarks (with --run) and write experiments/results/benchmarks.md: one
table of ratios of medians per benchmark, each against the issue's target.

    python experiments/benchmarks/report.py --run [--quick]   # about 10 min on 2 cores
    python experiments/benchmarks/report.py                    # tables from the JSON files

The GPU benchmark (`gpu.py`) runs only on a GPU machine; its JSON, copied here, is
reported when present.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common import RESULTS, quick

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "steps.py",
    "loop.py",
    "stream.py",
    "elm_vs_hpelm.py",
    "flops.py",
    "pooling.py",
    "attention.py",
    "dense.py",
    "cnn_cpu.py",
    "allocator.py",
)
OUT = RESULTS.parent / "benchmarks.md"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _header(rec: dict) -> list[str]:
    m = rec["machine"]
    return [
        f"`{rec['command']}`, {rec['date']}{' (quick)' if rec['quick'] else ''}; "
        f"jax {m['jax']} on {m['backend']}, {m['cpu_count']} CPUs"
        + (f" ({m['cpu']}; {m['isa']})" if m.get("cpu") else "")
        + (f", torch {m['torch']} ({m['torch_threads']} threads)" if "torch" in m else "")
        + ".",
        "",
    ]


def _section(title: str, rec: dict, columns: list[str]) -> list[str]:
    """A benchmark's heading, provenance line and table head."""
    return [
        f"## {title}",
        "",
        *_header(rec),
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]


def steps_table(rec) -> list[str]:
    targets = {"mlp": 1.5, "transformer": 1.5, "lenet5": 1.0, "cnn": 1.0}
    columns = [
        "model",
        "dl ms/step (CPU kernels)",
        "dl ms/step (plain XLA)",
        "PyTorch ms/step",
        "speed-up",
        "target",
        "verdict",
    ]
    peak = [r for r in rec["rows"] if r.get("matmul_peak_gflops")]
    if peak:  # runs since 2026-11-22 also relate each step to the machine's matmul peak
        columns[5:5] = [
            "GFLOP/step (XLA)",
            "dl / PyTorch fraction of the matmul peak",
            "speed-up of a step at the peak",
        ]
    lines = _section("Train step against PyTorch eager (CPU)", rec, columns)
    for r in rec["rows"]:
        t = targets.get(r["model"])
        verdict = _mark(r["speedup_vs_torch"] >= t) if t else "no target"
        extra = "- | - | - | " if peak else ""
        if "step_gflop" in r:
            extra = (
                f"{r['step_gflop']:.2f} | {r['dl_fraction_of_peak']:.0%} / "
                f"{r['torch_fraction_of_peak']:.0%} | {r['speedup_at_peak']:.2f}x | "
            )
        plain = f"{r['dl_xla_ms']:.2f}" if "dl_xla_ms" in r else "-"
        lines.append(
            f"| {r['what']} | {r['dl_ms']:.2f} | {plain} | {r['torch_ms']:.2f} | "
            f"{r['speedup_vs_torch']:.2f}x | {extra}{f'>= {t}x' if t else '-'} | {verdict} |"
        )
    if peak:
        lines += [
            "",
            f"The matmul peak: {peak[0]['matmul_peak_gflops']:.1f} GFLOP/s (float32, "
            f"n={peak[0]['peak_matmul_size']}). The fractions divide the time our step's "
            "FLOPs (XLA's cost analysis) would take at that peak by each side's time; the "
            "last column is the speed-up over PyTorch of a step running at the peak. "
            "A dash for steps with a loop inside (the LSTM), whose FLOPs XLA counts once.",
        ]
    return lines


def loop_table(rec) -> list[str]:
    columns = [
        "model",
        "data",
        "fit ms/epoch",
        "bare step ms/epoch",
        "fit / bare (target <= 1.10)",
        "hand-written ms/epoch",
        "speed-up vs hand-written (target >= 2)",
    ]
    title = "Fit loop against the hand-written Flax loop and the bare jitted step"
    lines = _section(title, rec, columns)
    for r in rec["rows"]:
        lines.append(
            f"| {r['model']} | {r['data']} | {r['fit_epoch_ms']:.1f} | {r['bare_epoch_ms']:.1f} | "
            f"{r['fit_over_bare']:.2f} {_mark(r['fit_over_bare'] <= 1.10)} | "
            f"{r['hand_epoch_ms']:.1f} | "
            f"{r['speedup_vs_hand']:.2f}x {_mark(r['speedup_vs_hand'] >= 2)} |"
        )
    return lines


def stream_table(rec) -> list[str]:
    columns = [
        "model",
        "data",
        "in-memory ms/epoch",
        "streamed ms/epoch",
        "streamed throughput / in-memory (target >= 0.8)",
    ]
    title = "Streamed epoch from memory-mapped files against the in-memory fit"
    lines = _section(title, rec, columns)
    for r in rec["rows"]:
        ratio = r["stream_throughput_ratio"]
        lines.append(
            f"| {r['model']} | {r['data']} | {r['memory_epoch_ms']:.1f} | "
            f"{r['stream_epoch_ms']:.1f} | {ratio:.2f} {_mark(ratio >= 0.8)} |"
        )
    return lines


def elm_table(rec) -> list[str]:
    columns = ["width", "ours", "hpelm", "ours s", "hpelm s", "speed-up (target >= 3)"]
    columns += ["accuracy ours / hpelm", "equal (<= 0.5 pt)"]
    lines = _section("ELM fit against hpelm", rec, columns)
    for r in rec["rows"]:
        equal = abs(r["ours_accuracy"] - r["hpelm_accuracy"]) <= 0.005
        lines.append(
            f"| {r['width']} | {r['ours']} | {r['hpelm']} | "
            f"{r['ours_s']:.3f} | {r['hpelm_s']:.3f} | "
            f"{r['speedup_vs_hpelm']:.2f}x {_mark(r['speedup_vs_hpelm'] >= 3 and equal)} | "
            f"{100 * r['ours_accuracy']:.1f}% / {100 * r['hpelm_accuracy']:.1f}% | {equal} |"
        )
    return lines


def flops_table(rec) -> list[str]:
    columns = ["model", "batch", "ms/step", "GFLOP/step", "achieved GFLOP/s"]
    columns += ["matmul peak GFLOP/s", "fraction (target >= 0.5)"]
    lines = _section("MLP step FLOP/s against the measured matmul peak", rec, columns)
    for r in rec["rows"]:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['step_ms']:.1f} | "
            f"{r['model_gflop_per_step']:.1f} | "
            f"{r['achieved_gflops']:.1f} | "
            f"{r['matmul_peak_gflops']:.1f} (n={r['peak_matmul_size']}) | "
            f"{r['fraction_of_peak']:.2f} {_mark(r['fraction_of_peak'] >= 0.5)} |"
        )
    return lines


def _versus_flax_table(title: str, rec) -> list[str]:
    lines = _section(title, rec, ["case", "dl ms", "flax ms", "speed-up"])
    for r in rec["rows"]:
        lines.append(
            f"| {r['case']} | {r['dl_ms']:.2f} | {r['flax_ms']:.2f} | {r['speedup']:.2f}x |"
        )
    return lines


def pooling_table(rec) -> list[str]:
    title = "Max pooling: reshape-and-reduce (dl) against flax's reduce_window"
    return _versus_flax_table(title, rec)


def dense_table(rec) -> list[str]:
    title = "Dense layers: dl.models.layers.dense_dot_general against lax.dot_general"
    return _versus_flax_table(title, rec)


def attention_table(rec) -> list[str]:
    title = "Attention: dl.models.attention against flax's dot_product_attention"
    return _versus_flax_table(title, rec)


def cnn_cpu_table(rec) -> list[str]:
    title = "CNN train step on the CPU: each change in turn"
    columns = [
        "model",
        "flax ms",
        "+ dl pooling",
        "+ dl.kernels options",
        "dl (+ first conv)",
        "PyTorch ms",
        "dl vs flax",
        "dl vs PyTorch (target >= 1.0)",
    ]
    lines = _section(title, rec, columns)
    for r in rec["rows"]:
        vs_torch = r["speedup_vs_torch"]
        lines.append(
            f"| {r['what']} | {r['flax_ms']:.2f} | {r['pooling_ms']:.2f} | "
            f"{r['xla_options_ms']:.2f} | {r['dl_ms']:.2f} | {r['torch_ms']:.2f} | "
            f"{r['speedup_vs_flax']:.2f}x | {vs_torch:.2f}x {_mark(vs_torch >= 1.0)} |"
        )
    return lines


def allocator_table(rec) -> list[str]:
    title = (
        "Train step with dl's memory measures for XLA:CPU: default (temporaries split and "
        "malloc tuned) / split only / neither (child processes in turn)"
    )
    columns = [
        "model",
        "dl ms",
        "dl page faults per step",
        "dl speed-up: default, split only",
        "PyTorch ms (same processes)",
        "dl vs PyTorch, default",
    ]
    lines = _section(title, rec, columns)
    for r in rec["rows"]:

        def three(key, fmt, r=r):
            return " / ".join(
                format(r[f"{key}_{c}"], fmt) for c in ("default", "no_malloc", "neither")
            )

        lines.append(
            f"| {r['what']} | {three('dl_ms', '.2f')} | {three('dl_faults_per_step', '.0f')} | "
            f"{r['dl_speedup_default']:.2f}x, {r['dl_speedup_no_malloc']:.2f}x | "
            f"{three('torch_ms', '.2f')} | {r['vs_torch_default']:.2f}x |"
        )
    return lines


def gpu_table(rec) -> list[str]:
    lines = ["## GPU", ""]
    if rec is None:
        return lines + [
            "NOT MEASURED: no GPU was lent to the sessions that wrote this file. "
            "`python experiments/benchmarks/gpu.py` on a GPU machine measures the decoder "
            "LM's MFU (target >= 40% on an H100) and CNN images/s against PyTorch; "
            "`--smoke` checks the script on any device.",
        ]
    lines += [*_header(rec), f"{rec['notes']}", "", "| bench | dtype | result |", "|---|---|---|"]
    for r in rec["rows"]:
        if r["bench"] == "decoder LM":
            mfu = (
                f"MFU {100 * r['mfu']:.1f}% {_mark(r['mfu'] >= 0.4)}"
                if r["mfu"]
                else "no peak known"
            )
            res = f"{r['tokens_per_s']:.0f} tokens/s, {r['model_tflops']:.1f} TFLOP/s, {mfu}"
        else:
            res = (
                f"dl {r['dl_images_per_s']:.0f} images/s vs PyTorch {r['torch_images_per_s']:.0f} "
                f"({r['speedup_vs_torch']:.2f}x)"
            )
        lines.append(f"| {r['bench']} | {r['compute_dtype']} | {res} |")
    return lines


def ab_commits_table(rec) -> list[str]:
    columns = ["model", "base ms/step", "this tree ms/step", "this / base (target <= 1.05)"]
    title = "dl's CPU-kernel steps at two commits (`ab_commits.py`)"
    lines = _section(title, rec, columns)
    for r in rec["rows"]:
        ratio = r["head_over_base"]
        lines.append(
            f"| {r['model']} | {r['base_ms']:.2f} | {r['head_ms']:.2f} | "
            f"{ratio:.3f} {_mark(ratio <= 1.05)} |"
        )
    return lines


def main() -> None:
    if "--run" in sys.argv:
        for script in SCRIPTS:
            cmd = [sys.executable, str(HERE / script)] + (["--quick"] if quick() else [])
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=HERE)
    parts = [
        "# Benchmarks",
        "",
        "Ratios of medians over repeats, each pair timed in turn in one process "
        "(`experiments/benchmarks/`). Written by `python experiments/benchmarks/report.py`; "
        "earlier measurements and the CPU kernels' design notes are in `cpu_notes.md`.",
        "",
    ]
    for name, table in (
        ("steps_vs_pytorch", steps_table),
        ("fit_loop", loop_table),
        ("stream", stream_table),
        ("elm_vs_hpelm", elm_table),
        ("mlp_flops", flops_table),
        ("pooling", pooling_table),
        ("attention", attention_table),
        ("dense", dense_table),
        ("cnn_cpu", cnn_cpu_table),
        ("allocator", allocator_table),
        ("ab_commits", ab_commits_table),
    ):
        rec = _load(name)
        parts += (table(rec) if rec else [f"## {name}", "", "not run"]) + [""]
    parts += gpu_table(_load("gpu")) + [""]
    OUT.write_text("\n".join(parts))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
