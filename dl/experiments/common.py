"""Shared pieces of the experiments: verdicts, results.json and report.md writing."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, ClassVar

OUTCOMES = ("PASS", "FAIL", "INCONCLUSIVE", "NOT MEASURED")
KINDS = ("claim", "check")
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 4000


class ExperimentConfig:
    """Base of every experiment's frozen config (made by `experiment_config`): where
    it writes (`out`), the first seed (`seed`; seeded parts use seed, seed + 1, ...) and
    `mode` ("full" or "quick"); `quick()` is the short variant."""

    _QUICK: ClassVar[dict[str, Any]] = {}

    def quick(self):
        """This config with the experiment's quick settings (minutes on 2 CPU cores)."""
        return dataclasses.replace(self, mode="quick", **self._QUICK)

    @property
    def is_quick(self) -> bool:
        return self.mode == "quick"

    def settings(self) -> dict[str, Any]:
        """The experiment's own settings (every field but out, seed and mode)."""
        names = [f.name for f in dataclasses.fields(self)]
        return {n: getattr(self, n) for n in names if n not in ("out", "seed", "mode")}

    def __post_init__(self):
        if self.mode not in ("full", "quick"):
            raise ValueError(f"mode must be 'full' or 'quick'; got {self.mode!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0; got {self.seed!r}.")
        seeds = getattr(self, "seeds", 1)
        if isinstance(seeds, int) and seeds < 1:
            raise ValueError(f"seeds must be >= 1; got {seeds!r}.")
        object.__setattr__(self, "out", Path(self.out))


def experiment_config(name: str, settings: dict[str, dict[str, Any]]) -> type:
    """A frozen dataclass `Config` for experiment `name`: fields out, seed, mode and one
    per key of `settings["full"]` (its value the default); `.quick()` swaps in
    `settings["quick"]`. Any setting can be changed by name, after quick() since it sets
    its own: `dataclasses.replace(Config(out="runs/x").quick(), seeds=8)`."""
    fields: list[tuple[str, Any, Any]] = [
        ("out", Path | str, dataclasses.field(default=Path("runs/reproduce") / name)),
        ("seed", int, dataclasses.field(default=0)),
        ("mode", str, dataclasses.field(default="full")),
    ]
    for key, value in settings["full"].items():
        default = (
            dataclasses.field(default_factory=lambda v=value: dict(v))
            if isinstance(value, dict)
            else dataclasses.field(default=value)
        )
        fields.append((key, Any, default))
    unknown = set(settings["quick"]) - set(settings["full"])
    if unknown:
        raise ValueError(f"quick settings of {name} not in its full settings: {sorted(unknown)}")
    cls = dataclasses.make_dataclass(
        "Config",
        fields,
        bases=(ExperimentConfig,),
        frozen=True,
        namespace={"_QUICK": dict(settings["quick"]), "__module__": f"dl.experiments.{name}"},
    )
    cls.__doc__ = (
        f"Settings of the {name} experiment (frozen). Defaults are the full run; "
        f"`.quick()` gives the quick one: {settings['quick']}."
    )
    return cls


def median_low(values, axis=None):
    """The median, or for an even count the lower of the two middle values: always an
    observed value, so +inf in the upper half does not turn it into +inf."""
    import numpy as np

    out = np.quantile(np.asarray(values, np.float64), 0.5, axis=axis, method="inverted_cdf")
    return float(out) if np.ndim(out) == 0 else out


def bootstrap(
    values, statistic: str = "mean", *, confidence: float = CONFIDENCE, seed: int = 0
) -> tuple[float, list[float]]:
    """The statistic ("mean", or "median": `median_low`) of `values` (one per seed, or
    per-seed paired differences) and its percentile bootstrap interval: resample the seeds with
    replacement BOOTSTRAP_RESAMPLES times. Infinite values are allowed (a run that never
    reached a target); quantiles pick observed resample values, never interpolate, so
    an interval with +inf stays well defined. With three seeds the interval is the range
    of the per-seed values (each extreme is drawn three times with chance 1/27 > 2.5%).
    A fixed resampling seed: the same values always give the same interval."""
    import numpy as np

    v = np.asarray(values, np.float64)
    if v.ndim != 1 or len(v) == 0 or np.isnan(v).any():
        raise ValueError(f"bootstrap needs a non-empty 1-D list of numbers; got {values!r}.")
    fn = {"mean": np.mean, "median": median_low}[statistic]
    with np.errstate(invalid="ignore"):  # the mean of +inf and finite values is +inf
        estimate = float(fn(v))
        idx = np.random.default_rng(seed).integers(0, len(v), (BOOTSTRAP_RESAMPLES, len(v)))
        stats = fn(v[idx], axis=1)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [tail, 1 - tail], method="inverted_cdf")
    # The interval brackets the estimate (it always does for the median).
    return estimate, [float(min(lo, estimate)), float(max(hi, estimate))]


def decide(ci: list[float], threshold: float, direction: str) -> str:
    """PASS when the whole interval lies on the claim's side of the threshold (strictly
    above it for direction "greater", strictly below for "less"), FAIL when none of it
    does, INCONCLUSIVE when it straddles the threshold."""
    lo, hi = ci
    if direction == "greater":
        return "PASS" if lo > threshold else "FAIL" if hi <= threshold else "INCONCLUSIVE"
    if direction == "less":
        return "PASS" if hi < threshold else "FAIL" if lo >= threshold else "INCONCLUSIVE"
    raise ValueError(f"direction must be 'greater' or 'less'; got {direction!r}.")


def seeded_claim(
    claim: str,
    criterion: str,
    per_seed,
    *,
    threshold: float = 0.0,
    direction: str = "greater",
    statistic: str = "mean",
    measured: str = "",
    unit: str = "",
    kind: str = "claim",
    min_seeds: int = 3,
) -> dict[str, Any]:
    """A verdict measured over seeds: `per_seed` holds one number per seed (or per-seed
    paired difference); the estimate and its 95% bootstrap interval decide the outcome
    (`decide`). Fewer than `min_seeds` values give INCONCLUSIVE whatever they say."""
    estimate, ci = bootstrap(per_seed, statistic)
    outcome = decide(ci, threshold, direction)
    if len(per_seed) < min_seeds:
        outcome = "INCONCLUSIVE"
    text = (
        f"{statistic} {_num(estimate)}{unit}, 95% CI [{_num(ci[0])}, {_num(ci[1])}]{unit} "
        f"over {len(per_seed)} seeds"
    )
    return {
        "claim": claim,
        "criterion": criterion,
        "measured": f"{text}; {measured}" if measured else text,
        "outcome": outcome,
        "passed": outcome == "PASS",
        "kind": _check_kind(kind),
        "n_seeds": len(per_seed),
        "estimate": estimate,
        "ci": ci,
        "threshold": float(threshold),
        "direction": direction,
        "statistic": statistic,
        "per_seed": [float(x) for x in per_seed],
    }


def closed(before: float, after: float) -> float:
    """The fraction of the remaining error that going from accuracy `before` to `after`
    closes, (after - before) / (1 - before): a relative gain, so that a ceiling cannot
    force a FAIL (2 points from 97% is as much as 20 points from 70%)."""
    return (after - before) / max(1.0 - before, 1e-9)


def verdict(
    claim: str, criterion: str, measured: Any, passed: bool | None, *, kind: str = "claim"
) -> dict[str, Any]:
    """A verdict without an interval: a check (kind "check"), or a claim measured once.
    `passed` None means "not measured here" (e.g. no GPU, hpelm not installed)."""
    outcome = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[passed]
    return {
        "claim": claim,
        "criterion": criterion,
        "measured": measured,
        "outcome": outcome,
        "passed": outcome == "PASS",
        "kind": _check_kind(kind),
    }


def check(claim: str, criterion: str, measured: Any, passed: bool | None) -> dict[str, Any]:
    """A sanity or acceptance check: reported apart from the source texts' claims."""
    return verdict(claim, criterion, measured, passed, kind="check")


def recompute(v: dict[str, Any], **changes) -> dict[str, Any]:
    """The seeded verdict `v` with its estimate, interval and outcome computed again from
    its recorded per-seed values, threshold and direction (or from `changes` to them,
    e.g. threshold=...). `recompute(v) == v` says that the verdict follows from its
    numbers; the tests check it for every seeded verdict."""
    w = {**v, **changes}
    again = seeded_claim(
        w["claim"],
        w["criterion"],
        w["per_seed"],
        threshold=w["threshold"],
        direction=w["direction"],
        statistic=w["statistic"],
        kind=w["kind"],
    )
    keys = ("outcome", "passed", "n_seeds", "estimate", "ci", "threshold", "direction")
    return {**w, **{k: again[k] for k in keys}}


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}.")
    return kind


def _num(x: float) -> str:
    import math

    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"


def status(v: dict[str, Any]) -> str:
    return v["outcome"]


def write_results(out: Path, results: dict[str, Any]) -> None:
    """Write results.json, with the kernels the experiments train with (`"auto"`,
    resolved for this backend: `dl.kernels`)."""
    from dl.kernels import resolve

    results.setdefault("kernels", resolve("auto"))
    for v in results.get("verdicts", []):
        if v.get("outcome") not in OUTCOMES or v.get("kind") not in KINDS:
            raise ValueError(f"verdict without a valid outcome and kind: {v}")
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


def interval(v: dict[str, Any]) -> str:
    """The estimate and 95% interval of a seeded verdict as text ("" for the others)."""
    if "ci" not in v:
        return ""
    lo, hi = v["ci"]
    op = ">" if v["direction"] == "greater" else "<"
    return (
        f"{_num(v['estimate'])} [{_num(lo)}, {_num(hi)}] ({v['n_seeds']} seeds; "
        f"needs {op} {_num(v['threshold'])})"
    )


def verdict_table(verdicts: list[dict[str, Any]]) -> str:
    """Markdown: the source texts' claims, then the sanity and acceptance checks, each in
    its own table; claims show their estimate and interval."""
    parts = []
    for kind, title in (("claim", "Claims of the source texts"), ("check", "Checks")):
        rows = [v for v in verdicts if v.get("kind", "claim") == kind]
        if not rows:
            continue
        lines = [
            f"**{title}**",
            "",
            "| claim | criterion | measured | estimate [95% CI] | verdict |",
            "|---|---|---|---|---|",
        ]
        for v in rows:
            cells = [md_cell(v[k]) for k in ("claim", "criterion", "measured")]
            cells.append(md_cell(interval(v)))
            lines.append("| " + " | ".join(cells) + f" | **{status(v)}** |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def count_outcomes(verdicts: list[dict[str, Any]]) -> str:
    """E.g. "claims: 3 PASS, 2 FAIL, 1 INCONCLUSIVE; checks: 4 PASS"."""
    out = []
    for kind in KINDS:
        rows = [v for v in verdicts if v.get("kind", "claim") == kind]
        if rows:
            n = {o: sum(status(v) == o for v in rows) for o in OUTCOMES}
            out.append(f"{kind}s: " + ", ".join(f"{k} {o}" for o, k in n.items() if k))
    return "; ".join(out)


class Timer:
    """Wall-clock sections: `with timer("name"): ...`; `timer.sections` in seconds
    (a section entered again adds up); each names the part on `dl reproduce`'s progress
    line (`tracked`). With `log` (e.g. "dl_vs_elm"), each section's start and end go to
    stderr as well."""

    def __init__(self, log: str | None = None):
        self.sections: dict[str, float] = {}
        self.log = log

    @contextlib.contextmanager
    def __call__(self, name: str):
        import sys

        t0 = time.perf_counter()
        part(name)  # the progress line of `dl reproduce` names the part
        if self.log:
            print(f"  [{self.log}] {name} ...", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            took = time.perf_counter() - t0
            self.sections[name] = self.sections.get(name, 0.0) + took
            if self.log:
                print(f"  [{self.log}] {name}: {took:.0f} s", file=sys.stderr, flush=True)


def _fit_config(
    model,
    n: int,
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
    eval_every: int = 1,
):
    from dl import optim
    from dl import train as tr

    if n == 0:
        raise ValueError("The experiment got an empty training set.")
    return tr.FitConfig(
        epochs=epochs,
        batch_size=min(batch_size, n),
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


def train_classifier(
    model,
    train: tuple[Any, Any],
    *,
    eval_data: dict[str, tuple[Any, Any]] | None = None,
    early_stopping=None,
    params=None,
    **fit,
):
    """Train `model` on (x, y) on one device with `dl.train.train` (the CPU kernels'
    compiler options where they apply) and return its `FitResult`. `fit` are
    `_fit_config`'s settings (epochs, batch_size, learning_rate, optimizer, schedule,
    weight_decay, clip_norm, loss, augment, seed, eval_every). `params` replaces the
    initial parameters of the top-level modules present in it, e.g. for fine-tuning."""
    import numpy as np

    from dl import train as tr

    x, y = np.asarray(train[0], np.float32), np.asarray(train[1])
    config = _fit_config(model, len(x), **fit)
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


def seed_list(first: int, n: int) -> list[int]:
    """The seeds of an experiment run with `--seed first`: first, first + 1, ...; every
    experiment's claims pair their arms seed by seed on these."""
    return [int(first) + i for i in range(int(n))]


def train_many(
    model,
    train: tuple[Any, Any],
    seeds,
    *,
    eval_data: dict[str, tuple[Any, Any]] | None = None,
    learning_rates=None,
    params=None,
    per_seed_params: bool = False,
    per_seed_data: bool = False,
    runs: str = "vmap",
    **fit,
):
    """`train_classifier` for many seeds (and learning rates) at once: one compiled,
    vmapped run by `dl.train.train_seeds`; returns its `SeedsResult`."""
    import numpy as np

    from dl import train as tr

    x, y = np.asarray(train[0], np.float32), np.asarray(train[1])
    config = _fit_config(model, y.shape[-1] if per_seed_data else len(x), **fit)
    return tr.train_seeds(
        model,
        (x, y),
        config,
        seeds,
        eval_data=eval_data,
        learning_rates=learning_rates,
        params=params,
        per_seed_params=per_seed_params,
        per_seed_data=per_seed_data,
        runs=runs,
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


def minmax_yerr(a) -> list:
    """matplotlib's `yerr` for bars from each row's mean to its min and max (`a`: one row
    per x, one column per seed)."""
    import numpy as np

    a = np.asarray(a, np.float64)
    m = a.mean(1)
    return [np.maximum(m - a.min(1), 0.0), np.maximum(a.max(1) - m, 0.0)]


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
        f"Seeds from {results.get('seed', 0)}. PASS: the 95% interval over seeds lies on "
        "the claim's side of the threshold; FAIL: none of it does; INCONCLUSIVE: it "
        "straddles the threshold.",
        "",
        f"Claim: {claim}",
        "",
        f"Verdicts: {count_outcomes(v)}.",
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
    """One line per verdict, for the terminal."""
    return "\n".join(
        f"{status(v)}{' (check)' if v.get('kind') == 'check' else ''}: {v['claim']} "
        f"({interval(v) or v['measured']})"
        for v in results["verdicts"]
    )


def prepare(config, cls: type, name: str) -> tuple[Path, dict[str, Any], Timer]:
    """Check that `config` is the experiment's Config; make its output folder; return
    (out, settings, timer). Full runs log each section's start and end to stderr."""
    if not isinstance(config, cls):
        raise TypeError(
            f"{name}.run takes a {name}.Config; got {config!r}. Use "
            f"run(Config(out=...)) or run(Config(out=...).quick())."
        )
    config.out.mkdir(parents=True, exist_ok=True)
    return config.out, config.settings(), Timer(log=None if config.is_quick else name)


# --------------------------------------------------------------------------- progress

_EXPECTED_RUNS = Path(__file__).with_name("expected_runs.json")


def expected_runs(name: str, quick: bool) -> int | None:
    """How many training runs experiment `name` made when last recorded (quick or full
    mode; `expected_runs.json`, written from a `dl reproduce` run), or None."""
    try:
        table = json.loads(_EXPECTED_RUNS.read_text())
    except (OSError, ValueError):
        return None
    return table.get("quick" if quick else "full", {}).get(name)


class _Tracker:
    """The progress bar of the experiment that runs now."""

    current: _Tracker | None = None

    def __init__(self, name: str, total: int | None, enabled: bool):
        from tqdm.auto import tqdm

        self.name, self.runs = name, 0
        self.bar = tqdm(
            total=total, desc=name, unit="run", disable=not enabled, dynamic_ncols=True,
            bar_format="{desc}: run {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"
            if total else "{desc}: run {n_fmt} [{elapsed}]",
        )  # fmt: skip

    def ran(self, kind: str) -> None:
        self.runs += 1
        # More runs than last time: the total grows, and the estimate with it.
        if self.bar.total is not None and self.runs > self.bar.total:
            self.bar.total = self.runs
        self.bar.update(1)


@contextlib.contextmanager
def tracked(name: str, *, quick: bool, enabled: bool = True):
    """Count the training runs of experiment `name` while it runs, on one progress line:
    the part it is in (`part`), run k of the N it made when last recorded, the time
    elapsed and an estimate of the time left. Yields the tracker (`.runs` at the end)."""
    from dl import _progress

    tracker = _Tracker(name, expected_runs(name, quick), enabled)
    _Tracker.current = tracker
    _progress.listeners.append(tracker.ran)
    try:
        yield tracker
    finally:
        _progress.listeners.remove(tracker.ran)
        _Tracker.current = None
        tracker.bar.close()


def part(label: str) -> None:
    """Name the part of the experiment that starts now on its progress line (a no-op
    outside `dl reproduce`)."""
    tracker = _Tracker.current
    if tracker is not None:
        tracker.bar.set_description_str(f"{tracker.name}: {label}")
