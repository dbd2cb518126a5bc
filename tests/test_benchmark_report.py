"""experiments/benchmarks/report.py turns the benchmark JSON into verdicts that can come
out either way (the timings themselves are never asserted here: no timed unit tests)."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"
CONFIGS = ("default", "no_malloc", "neither")  # allocator.py's configurations


@pytest.fixture
def report(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("common", "report"):
        sys.modules.pop(name, None)
    import report as module

    monkeypatch.setattr(module, "RESULTS", tmp_path / "benchmarks")
    monkeypatch.setattr(module, "OUT", tmp_path / "benchmarks.md")
    (tmp_path / "benchmarks").mkdir()
    return module


def _write(module, name, rows):
    machine = {"jax": "x", "backend": "cpu", "cpu_count": 2, "torch": "t", "torch_threads": 2}
    rec = {
        "command": "c",
        "date": "d",
        "quick": False,
        "machine": machine,
        "notes": "",
        "rows": rows,
    }
    (module.RESULTS / f"{name}.json").write_text(json.dumps(rec))


def test_verdicts_follow_the_numbers_both_ways(report, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["report.py"])
    _write(
        report,
        "steps_vs_pytorch",
        [
            {
                "model": "mlp",
                "what": "fast mlp",
                "dl_ms": 1,
                "torch_ms": 2,
                "speedup_vs_torch": 2.0,
            },
            {
                "model": "cnn",
                "what": "slow cnn",
                "dl_ms": 2,
                "torch_ms": 1,
                "speedup_vs_torch": 0.5,
            },
        ],
    )
    _write(
        report,
        "mlp_flops",
        [
            {
                "model": "m",
                "batch": 1,
                "step_ms": 1,
                "model_gflop_per_step": 1,
                "achieved_gflops": 10,
                "matmul_peak_gflops": 40,
                "peak_matmul_size": 8,
                "fraction_of_peak": 0.25,
            }
        ],
    )
    ablation = {"flax_ms": 9, "pooling_ms": 8, "xla_options_ms": 7, "torch_ms": 6}
    _write(
        report,
        "cnn_cpu",
        [
            {
                "what": "fast",
                **ablation,
                "dl_ms": 5,
                "speedup_vs_flax": 1.8,
                "speedup_vs_torch": 1.2,
            },
            {
                "what": "slow",
                **ablation,
                "dl_ms": 6.5,
                "speedup_vs_flax": 1.4,
                "speedup_vs_torch": 0.9,
            },
        ],
    )
    _write(
        report,
        "allocator",
        [
            {
                "what": "lm",
                **{f"dl_ms_{c}": v for c, v in zip(CONFIGS, (70, 90, 105), strict=True)},
                **{
                    f"dl_faults_per_step_{c}": v
                    for c, v in zip(CONFIGS, (0, 20000, 45000), strict=True)
                },
                **{f"torch_ms_{c}": v for c, v in zip(CONFIGS, (90, 91, 92), strict=True)},
                "dl_speedup_default": 1.5,
                "dl_speedup_no_malloc": 1.17,
                "vs_torch_default": 1.29,
            }
        ],
    )
    _write(
        report,
        "ab_commits",
        [
            {"model": "mlp", "base_ms": 2.0, "head_ms": 2.08, "head_over_base": 1.04},
            {"model": "cnn", "base_ms": 10.0, "head_ms": 11.0, "head_over_base": 1.1},
        ],
    )
    report.main()
    md = report.OUT.read_text()
    assert "| mlp | 2.00 | 2.08 | 1.040 PASS |" in md
    assert "| cnn | 10.00 | 11.00 | 1.100 FAIL |" in md
    row = "| lm | 70.00 / 90.00 / 105.00 | 0 / 20000 / 45000 | 1.50x, 1.17x | "
    assert row + "90.00 / 91.00 / 92.00 | 1.29x |" in md
    assert "| fast | 9.00 | 8.00 | 7.00 | 5.00 | 6.00 | 1.80x | 1.20x PASS |" in md
    assert "| slow | 9.00 | 8.00 | 7.00 | 6.50 | 6.00 | 1.40x | 0.90x FAIL |" in md
    assert "| fast mlp | 1.00 | - | 2.00 | 2.00x | >= 1.5x | PASS |" in md
    assert "| slow cnn | 2.00 | - | 1.00 | 0.50x | >= 1.0x | FAIL |" in md
    assert "0.25 FAIL" in md
    assert "## fit_loop\n\nnot run" in md  # a benchmark without results is not a pass
    assert "NOT MEASURED: no GPU" in md


def test_steps_table_relates_steps_to_the_matmul_peak(report, monkeypatch):
    """Runs that measured the peak get its columns (a dash where XLA's FLOP count is
    missing, as for a step with a loop inside) and the CPU's name in the provenance."""
    monkeypatch.setattr(sys, "argv", ["report.py"])
    peak = {"matmul_peak_gflops": 100.0, "peak_matmul_size": 2048}
    _write(
        report,
        "steps_vs_pytorch",
        [
            {
                "model": "transformer",
                "what": "lm",
                "dl_ms": 10,
                "dl_xla_ms": 11,
                "torch_ms": 12,
                "speedup_vs_torch": 1.2,
                **peak,
                "step_gflop": 0.5,
                "dl_fraction_of_peak": 0.5,
                "torch_fraction_of_peak": 5 / 12,
                "speedup_at_peak": 2.4,
            },
            {"model": "lstm", "what": "lstm", "dl_ms": 3, "torch_ms": 2, "speedup_vs_torch": 2 / 3}
            | peak,
        ],
    )
    rec = json.loads((report.RESULTS / "steps_vs_pytorch.json").read_text())
    rec["machine"] |= {"cpu": "Some CPU", "isa": "avx2 fma"}
    (report.RESULTS / "steps_vs_pytorch.json").write_text(json.dumps(rec))
    report.main()
    md = report.OUT.read_text()
    assert (
        "| lm | 10.00 | 11.00 | 12.00 | 1.20x | 0.50 | 50% / 42% | 2.40x | >= 1.5x | FAIL |" in md
    )
    assert "| lstm | 3.00 | - | 2.00 | 0.67x | - | - | - | - | no target |" in md
    assert "The matmul peak: 100.0 GFLOP/s (float32, n=2048)" in md
    assert "2 CPUs (Some CPU; avx2 fma)" in md


def test_cpu_model_reads_the_first_processor(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("common", None)
    import common

    info = tmp_path / "cpuinfo"
    block = "processor\t: {}\nmodel name\t: {}\nflags\t\t: fpu sse2 avx2 fma avx512f\n\n"
    info.write_text(block.format(0, "Chip A") + block.format(1, "Chip B"))
    assert common.cpu_model(str(info)) == {"cpu": "Chip A", "isa": "avx512f avx2 fma"}
    assert common.cpu_model(str(tmp_path / "missing")) == {}
