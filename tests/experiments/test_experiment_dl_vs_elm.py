"""The deep-learning-versus-ELM experiment: its verdicts follow from its recorded numbers.

These tests recompute each verdict from `results.json`; none asserts which way a claim
comes out. A tiny config (one tabular dataset, three seeds) runs in the default suite;
the quick mode (about 8 minutes on 2 CPU cores) is marked slow.
"""

import dataclasses
import json
import math

import numpy as np
import pytest

from dl.experiments import dl_vs_elm
from dl.experiments.common import KINDS, OUTCOMES, recompute

TIMING_KEYS = {
    "dataset",
    "model",
    "seed",
    "deep_compile_s",
    "deep_train_s",
    "elm_fit_cold_s",
    "elm_fit_warm_s",
    "elm_selection_s",
    "classical_model",
    "classical_fit_s",
    "deep_time_to_classical_accuracy_s",
}


def tiny(out, **changes):
    """One small tabular dataset, three seeds, small grids: a minute on 2 cores."""
    c = dl_vs_elm.Config(out=out).quick()
    return dataclasses.replace(
        c,
        datasets=("iris",),
        cnn_datasets=(),
        huang_datasets=("iris",),
        widths=(32, 128),
        ridges=(1e-3, 1.0),
        folds=2,
        warm_repeats=3,
        deep_epochs={"mlp/iris": 10, "mlp/mnist1d": 1, "cnn/mnist1d": 1},
        huang_max_epochs=10,
        lr_multipliers=(1.0, 100.0),
        data_sizes=(300,),
        data_width=64,
        width_scan_n=100,
        width_scan=(32, 100, 256),
        **changes,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    # A speed threshold no ELM can reach: the fixed-budget speed claims must FAIL.
    config = tiny(tmp_path_factory.mktemp("elm"), speed_ratio=1e12)
    return config, dl_vs_elm.run(config)


def check_schema(res, min_seeds):
    assert res["verdicts"], "no verdicts"
    for v in res["verdicts"]:
        assert v["outcome"] in OUTCOMES and v["kind"] in KINDS, v
        assert v["passed"] is (v["outcome"] == "PASS")
        assert v["claim"] and v["criterion"] and v["measured"]
        if "ci" in v:
            assert v["n_seeds"] == len(v["per_seed"]) >= min_seeds
            assert v["ci"][0] <= v["estimate"] <= v["ci"][1]
            assert recompute(v) == v, v["claim"]  # the outcome follows from the numbers
    for t in res["timing"]:
        assert TIMING_KEYS <= set(t)
        assert t["deep_compile_s"] > 0 and t["deep_train_s"] > 0
        assert 0 < t["elm_fit_warm_s"] and 0 < t["elm_fit_cold_s"] and 0 < t["elm_selection_s"]
    h = res["huang_setting"]
    assert {"elm_width", "backprop_time_s", "elm_time_s", "ratio"} <= set(h)
    for r in h["runs"]:
        assert r["ratio"] == pytest.approx(r["backprop_time_s"] / r["elm_time_s"])


def recompute_from_records(res):
    """The per-seed values of the speed, GPU and Huang claims, from the raw records."""
    seeds = res["seeds"]
    by_claim = {v["claim"]: v for v in res["verdicts"]}
    speed = dl_vs_elm.speed_per_seed(res["timing"], seeds)
    for key, how in dl_vs_elm.SPEED_CLAIMS.items():
        (v,) = [v for c, v in by_claim.items() if how in c]
        assert v["per_seed"] == speed[key]
        # ... and by hand for one ratio: the median over each seed's runs.
        if key == "warm_fixed_budget":
            for seed, value in zip(seeds, v["per_seed"], strict=True):
                mine = [t for t in res["timing"] if t["seed"] == seed]
                hand = np.median([t["deep_train_s"] / t["elm_fit_warm_s"] for t in mine])
                assert value == pytest.approx(hand)
    (classical,) = [v for c, v in by_claim.items() if c.startswith("Classical ML is faster")]
    assert classical["per_seed"] == dl_vs_elm.classical_per_seed(res["timing"], seeds)
    for t in res["timing"]:  # the comparator is the best classical run of that dataset
        rows = [
            r
            for r in res["runs"]
            if r["dataset"] == t["dataset"]
            and r["model"] in dl_vs_elm.CLASSICAL
            and (r["seed"] == t["seed"] or r["model"] in dl_vs_elm.DETERMINISTIC_BASELINES)
        ]
        assert t["classical_accuracy"] == max(r["accuracy"] for r in rows)
    (gpu,) = [v for c, v in by_claim.items() if "no GPU" in c]
    assert gpu["per_seed"] == dl_vs_elm.gpu_per_seed(res["timing"], seeds)
    (huang,) = [v for c, v in by_claim.items() if "Huang" in c]
    assert huang["per_seed"] == dl_vs_elm.huang_per_seed(res["huang_setting"], seeds)
    for r in res["huang_setting"]["runs"]:
        if not r["reached_elm_accuracy"]:
            assert math.isinf(dl_vs_elm.huang_per_seed({"runs": [r]}, [r["seed"]])[0])


def test_tiny_run_verdicts_follow_from_the_numbers(tiny_run):
    config, res = tiny_run
    check_schema(res, min_seeds=3)
    recompute_from_records(res)
    claims = [v for v in res["verdicts"] if v["kind"] == "claim" and "ci" in v]
    assert len(claims) >= 4
    # One timing record per (dataset, deep model, seed); one Huang run per seed.
    assert len(res["timing"]) == 3 and len(res["huang_setting"]["runs"]) == 3
    assert res["seeds"] == [0, 1, 2]
    written = json.loads((config.out / "results.json").read_text())
    assert written["verdicts"] == json.loads(json.dumps(res["verdicts"]))
    report = (config.out / "report.md").read_text()
    assert "**Claims of the source texts**" in report and "**Checks**" in report


def test_a_fail_and_an_inconclusive_are_reachable(tiny_run):
    _, res = tiny_run
    speed = [v for v in res["verdicts"] if "fixed epoch budget" in v["claim"]]
    assert speed and all(v["outcome"] == "FAIL" for v in speed)  # speed_ratio=1e12
    # With the same numbers, a threshold inside a claim's interval is INCONCLUSIVE and
    # one below it is a PASS: the outcome is the numbers', not the test's.
    spread = [v for v in res["verdicts"] if "ci" in v and v["ci"][0] < v["ci"][1]]
    for v in spread:
        lo, hi = v["ci"]
        mid = (lo + hi) / 2 if math.isfinite(hi) else lo + 1
        assert recompute(v, threshold=mid)["outcome"] == "INCONCLUSIVE"
        below = lo - 1 if v["direction"] == "greater" else hi + 1
        if math.isfinite(below):
            assert recompute(v, threshold=below)["outcome"] == "PASS"


def test_controls_follow_from_the_grids(tiny_run):
    _, res = tiny_run
    per_seed = res["controls"]["per_seed"]
    grid = res["controls"]["deep_grid"]["iris"]
    from dl import data

    maj = np.bincount(data.load("iris").y_train).max() / len(data.load("iris").y_train)
    for i, seed in enumerate(res["seeds"]):
        mine = [r for r in grid["runs"] if r["seed"] == seed]
        assert len(mine) == 2  # one per learning rate
        share = np.mean([dl_vs_elm.failed(r, maj) for r in mine])
        assert per_seed["deep_failed"][i] == pytest.approx(share)
        (elm,) = [e for e in res["elm"] if e["seed"] == seed]
        share = np.mean([dl_vs_elm.failed(g, maj) for g in elm["grid"]])
        assert per_seed["elm_failed"][i] == pytest.approx(share)
        best = max(g["test_accuracy"] for g in elm["grid"] if g["finite"])
        loss = 100 * (best - elm["default_accuracy"])
        assert per_seed["elm_default_loss_points"][i] == pytest.approx(loss)


@pytest.mark.slow
def test_quick_mode_meets_the_protocol(tmp_path):
    """`dl reproduce --only dl_vs_elm --quick --seed 7`: the schema, >= 4 seeded claims
    of >= 3 seeds, the timing records and Huang's setting."""
    from dl.cli import main

    assert (
        main(["reproduce", "--only", "dl_vs_elm", "--quick", "--seed", "7", "--out", str(tmp_path)])
        == 0
    )
    res = json.loads((tmp_path / "dl_vs_elm" / "results.json").read_text())
    assert res["quick"] and res["seeds"] == [7, 8, 9]
    check_schema(res, min_seeds=3)
    recompute_from_records(res)
    assert sum(v["kind"] == "claim" and "ci" in v for v in res["verdicts"]) >= 4
    for fig in ("accuracy_vs_time.png", "width_curve.png", "data_curve.png"):
        assert (tmp_path / "dl_vs_elm" / fig).stat().st_size > 5000, fig
    (row,) = [v for v in res["verdicts"] if "hpelm" in v["claim"]]
    assert (row["outcome"] == "NOT MEASURED") == (not res["hpelm"]["installed"])
