"""The hierarchy-of-features experiment in quick mode, asserted on its numbers (issue 8).

About 3-4 minutes on 2 CPU cores: marked slow (run with `pytest -m slow`).
"""

import json

import pytest

from dl.cli import main
from dl.experiments.common import KINDS, OUTCOMES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    args = ["reproduce", "--only", "hierarchy_of_features", "--quick", "--out", str(out)]
    assert main(args) == 0
    res_dir = out / "hierarchy_of_features"
    return res_dir, json.loads((res_dir / "results.json").read_text())


def test_writes_verdicts_report_and_figures(quick):
    out, res = quick
    assert res["quick"]
    # 7 criteria per dataset plus 3 transfer criteria where transfer ran (mnist1d).
    assert len(res["verdicts"]) == 3 * 7 + 3
    for v in res["verdicts"]:
        assert v["outcome"] in OUTCOMES and v["kind"] in KINDS and v["measured"]
    # A 5-tap filter has fewer points than a Gabor has parameters: no verdict on mnist1d.
    gabor = {v["claim"]: v["outcome"] for v in res["verdicts"] if "Gabor" in v["claim"]}
    assert gabor["First-layer filters are Gabor-like edge detectors (mnist1d)"] == "NOT MEASURED"
    assert gabor["First-layer filters are Gabor-like edge detectors (shapes)"] != "NOT MEASURED"
    report = (out / "report.md").read_text()
    assert "## Verdicts" in report and "| block2 |" in report
    for fig in res["figures"]:
        assert (out / fig).stat().st_size > 5000, fig
    kinds = {f.split("/")[1].split("_")[0] for f in res["figures"]}
    assert kinds == {"probes", "cka", "filters", "erf", "patches", "transfer"}


def test_mnist1d_numbers(quick):
    _, res = quick
    d = res["datasets"]["mnist1d"]
    assert len(d["seeds"]) == 3
    for r in d["seeds"]:
        assert r["test_accuracy"] >= 0.85, r["test_accuracy"]
        p = r["probes"]["trained"]
        # The raw signal is hard for a linear read-out (published: 32%); the last block
        # is nearly as good as the whole network.
        assert p["input"] < 0.40
        assert p["block0"] < p["block2"]
        assert p["block2"] >= r["test_accuracy"] - 0.05
        assert r["probes"]["init"]["block2"] < p["block2"]
        # Receptive fields: the theoretical ones of the reference CNN (kernel 5, pool 2).
        assert [r["erf"][b]["rf"] for b in ("block0", "block1", "block2")] == [6, 16, 36]
        sizes = [r["erf"][b]["erf_size"] for b in ("block0", "block1", "block2")]
        assert sizes == sorted(sizes) and all(
            0 < r["erf"][b]["ratio"] <= 1 for b in ("block0", "block1", "block2")
        )
        # CKA with the labels rises from the input to the last block.
        assert r["cka_labels"]["block2"] > r["cka_labels"]["input"]
    across = d["across_seeds"]
    assert across["identification_trials"] == 3 * 3  # 3 seed pairs x 3 blocks
    assert 0.5 < across["same_layer_cka"]["block2"] <= 1.0
    (t,) = d["transfer"]
    assert [row["layers"] for row in t["by_layer"]] == [1, 2, 3]
    assert t["baseB"] > 0.8 and t["baseA"] > 0.8
    # Fine-tuning the copied layers recovers the base network's accuracy.
    assert t["by_layer"][0]["BnB+"] >= t["baseB"] - 0.05


def test_2d_numbers(quick):
    _, res = quick
    for name in ("mnist5k", "shapes"):
        d = res["datasets"][name]
        for r in d["seeds"]:
            assert r["test_accuracy"] >= 0.85, (name, r["test_accuracy"])
            g = r["gabor_r2"]
            assert len(g["trained"]) == len(g["init"]) == len(g["noise"]) == 8
            # 2-D ERFs are areas: larger than any 1-D extent, smaller than the input.
            assert 1 < r["erf"]["block0"]["erf_size"] < r["erf"]["block2"]["erf_size"]
            assert r["erf"]["block2"]["erf_size"] <= 32 * 32
