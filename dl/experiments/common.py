"""Shared pieces of the experiments: verdicts, results.json and report.md writing."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any


def verdict(claim: str, criterion: str, measured: Any, passed: bool | None) -> dict[str, Any]:
    """One checked claim. `passed` None means "not measured here" (e.g. no GPU)."""
    return {"claim": claim, "criterion": criterion, "measured": measured, "passed": passed}


def status(v: dict[str, Any]) -> str:
    return {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[v["passed"]]


def write_results(out: Path, results: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable))


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def verdict_table(verdicts: list[dict[str, Any]]) -> str:
    rows = ["| claim | criterion | measured | verdict |", "|---|---|---|---|"]
    for v in verdicts:
        rows.append(f"| {v['claim']} | {v['criterion']} | {v['measured']} | **{status(v)}** |")
    return "\n".join(rows)


class Timer:
    """Wall-clock sections: `with timer("name"): ...`; `timer.sections` in seconds
    (a section entered again adds up)."""

    def __init__(self):
        self.sections: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sections[name] = self.sections.get(name, 0.0) + time.perf_counter() - t0
