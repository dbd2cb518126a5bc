"""The hierarchy-of-features experiment in quick mode: the schema, and verdicts that
follow from the recorded numbers. No test asserts which way a claim comes out.

About 6-8 minutes on 2 CPU cores: marked slow (run with `pytest -m slow`).
"""

import json

import numpy as np
import pytest

from dl.cli import main
from dl.experiments import hierarchy_of_features as hof
from dl.experiments.common import KINDS, OUTCOMES, recompute

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    args = ["reproduce", "--only", "hierarchy_of_features", "--quick", "--seed", "3"]
    assert main([*args, "--out", str(out)]) == 0
    res_dir = out / "hierarchy_of_features"
    return res_dir, json.loads((res_dir / "results.json").read_text())


def test_schema_figures_and_report(quick):
    out, res = quick
    assert res["quick"] and res["cka_estimator"] == "debiased"
    assert res["natural_images"]["outcome"] == "NOT MEASURED" or "ci" in res["natural_images"]
    claims = [v for v in res["verdicts"] if v["kind"] == "claim" and "ci" in v]
    assert len(claims) >= 6
    for v in res["verdicts"]:
        assert v["outcome"] in OUTCOMES and v["kind"] in KINDS and v["measured"]
        if "ci" in v:
            assert v["n_seeds"] >= 3 and v["ci"][0] <= v["estimate"] <= v["ci"][1]
            assert recompute(v) == v
    # A 5-tap filter has fewer points than a Gabor has parameters: no verdict on mnist1d.
    gabor = {v["claim"]: v["outcome"] for v in res["verdicts"] if "Gabor" in v["claim"]}
    assert gabor["First-layer filters are Gabor-like edge detectors (mnist1d)"] == "NOT MEASURED"
    assert "ci" in next(v for v in res["verdicts"] if v["claim"].endswith("detectors (shapes)"))
    assert len(res["figures"]) >= 6
    for fig in res["figures"]:
        assert (out / fig).stat().st_size > 5000, fig
    assert "**Claims of the source texts**" in (out / "report.md").read_text()


def test_shapes_factors_follow_from_the_seeds(quick):
    _, res = quick
    rows = res["shapes_factors"]
    assert len(rows) >= 3 and [r["layer"] for r in rows][:2] == ["input", "block0"]
    seeds = res["datasets"]["shapes"]["seeds"]
    for i, row in enumerate(rows):
        for key in ("orientation_trained", "orientation_untrained", "shape_trained"):
            vals = [s["shape_factors"][i][key] for s in seeds]
            assert row[key] == pytest.approx(np.mean(vals)) and 0 <= row[key] <= 1
    # The verdicts recomputed by hand from the per-seed probes.
    (edge,) = [v for v in res["verdicts"] if v["claim"].startswith("Early layers detect edges")]
    by_hand = [
        s["shape_factors"][1]["orientation_trained"]
        - s["shape_factors"][1]["orientation_untrained"]
        for s in seeds
    ]
    assert edge["per_seed"] == pytest.approx(by_hand)


def test_probe_claims_follow_from_the_probes(quick):
    _, res = quick
    for name, d in res["datasets"].items():
        last = d["across_seeds"]["blocks"][-1]
        (v,) = [
            v
            for v in res["verdicts"]
            if v["claim"] == f"The hierarchy is learned, not architectural ({name})"
        ]
        hand = [
            hof.closed(s["probes"]["trained"]["input"], s["probes"]["trained"][last])
            - hof.closed(s["probes"]["init"]["input"], s["probes"]["init"][last])
            for s in d["seeds"]
        ]
        assert v["per_seed"] == pytest.approx(hand)
        pairs = d["across_seeds"]["same_layer_cka_by_pair"]
        assert all(len(p) == len(d["seeds"]) * (len(d["seeds"]) - 1) // 2 for p in pairs.values())
