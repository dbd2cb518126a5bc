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
    """Write results.json, with the kernels the experiments train with (`"auto"`,
    resolved for this backend: `dl.kernels`)."""
    from dl.kernels import resolve

    results.setdefault("kernels", resolve("auto"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable))


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def md_cell(x: Any) -> str:
    """Text for a Markdown table cell: a "|" (as in |grad|) would end the cell."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def verdict_table(verdicts: list[dict[str, Any]]) -> str:
    rows = ["| claim | criterion | measured | verdict |", "|---|---|---|---|"]
    for v in verdicts:
        cells = (md_cell(v[k]) for k in ("claim", "criterion", "measured"))
        rows.append("| " + " | ".join(cells) + f" | **{status(v)}** |")
    return "\n".join(rows)


class Timer:
    """Wall-clock sections: `with timer("name"): ...`; `timer.sections` in seconds
    (a section entered again adds up). With `log` (e.g. "dl_vs_elm"), each section's
    start and end go to stderr, so a long full-mode run shows where it is."""

    def __init__(self, log: str | None = None):
        self.sections: dict[str, float] = {}
        self.log = log

    @contextlib.contextmanager
    def __call__(self, name: str):
        import sys

        t0 = time.perf_counter()
        if self.log:
            print(f"  [{self.log}] {name} ...", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            took = time.perf_counter() - t0
            self.sections[name] = self.sections.get(name, 0.0) + took
            if self.log:
                print(f"  [{self.log}] {name}: {took:.0f} s", file=sys.stderr, flush=True)


def train_classifier(
    model,
    train: tuple[Any, Any],
    *,
    epochs: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    optimizer: str = "adam",
    schedule: str = "warmup_cosine",
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    loss: str = "cross_entropy",
    augment: str = "none",
    seed: int = 0,
    eval_data: dict[str, tuple[Any, Any]] | None = None,
    eval_every: int = 1,
    early_stopping=None,
    params=None,
):
    """Train `model` on (x, y) on one device with `dl.train.train` (the CPU kernels'
    compiler options where they apply) and return its `FitResult`. `params` replaces the
    initial parameters of the top-level modules present in it, e.g. for fine-tuning."""
    import numpy as np

    from dl import optim
    from dl import train as tr

    x, y = np.asarray(train[0], np.float32), np.asarray(train[1])
    if len(x) == 0:
        raise ValueError("train_classifier got an empty training set.")
    config = tr.FitConfig(
        epochs=epochs,
        batch_size=min(batch_size, len(x)),
        optimizer=optim.OptimizerConfig(
            optimizer,
            learning_rate,
            schedule,
            weight_decay=weight_decay,
            clip_norm=clip_norm,
        ),
        loss=loss,
        augment=augment,
        seed=seed,
        eval_every=eval_every,
        steps_per_call=tr.default_steps_per_call(model),
        kernels="auto",
    )
    known = {k: v for k, v in (params or {}).items() if k in _module_names(model, x)}
    return tr.train(
        model,
        (x, y),
        config,
        params=known if params is not None else None,
        eval_data=eval_data,
        early_stopping=early_stopping,
        progress=False,
        handle_signals=False,
        devices=1,
    )


def _module_names(model, x) -> set[str]:
    import jax

    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1]))
    return set(shapes["params"])


def accuracy(model, state, x, y) -> float:
    """Test accuracy of a trained classifier."""
    import numpy as np

    from dl import train as tr

    logits = tr.predict(model, state, np.asarray(x, np.float32), kernels="auto")
    return float(np.mean(logits.argmax(-1) == y))


def save_figure(fig, out: Path, filename: str) -> str:
    """Save a matplotlib figure under out/figures/ and close it; return its relative path."""
    import matplotlib.pyplot as plt

    (out / "figures").mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "figures" / filename, dpi=110)
    plt.close(fig)
    return f"figures/{filename}"


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def report(title: str, claim: str, results: dict[str, Any], sections: list[str]) -> str:
    """report.md: title, claim, verdict table, then the experiment's own sections, the
    figures and the run time."""
    v = results["verdicts"]
    lines = [
        f"# {title}{' (quick mode)' if results.get('quick') else ''}",
        "",
        f"Claim: {claim}",
        "",
        f"{sum(x['passed'] is True for x in v)} of {len(v)} criteria pass.",
        "",
        "## Verdicts",
        "",
        verdict_table(v),
        "",
        *sections,
        "",
        "## Figures",
        "",
        *[f"![{f}]({f})" for f in results.get("figures", [])],
        "",
        "## Run time",
        "",
        ", ".join(f"{k}: {t:.0f} s" for k, t in results.get("timings_s", {}).items()),
        "",
    ]
    return "\n".join(lines)


def summarize_verdicts(results) -> str:
    return "\n".join(f"{status(v)}: {v['claim']} ({v['measured']})" for v in results["verdicts"])
