"""The verdict machinery shared by every experiment: intervals, outcomes, configs."""

import dataclasses
import math

import numpy as np
import pytest

from dl.experiments import EXPERIMENTS, configure, get_experiment
from dl.experiments.common import (
    OUTCOMES,
    bootstrap,
    check,
    count_outcomes,
    decide,
    recompute,
    seeded_claim,
    verdict,
    verdict_table,
    write_results,
)


def test_bootstrap_estimate_and_interval():
    v = [0.2, 0.5, 0.9, 0.4, 0.6]
    est, (lo, hi) = bootstrap(v)
    assert est == pytest.approx(np.mean(v))
    assert min(v) <= lo < est < hi <= max(v)
    assert bootstrap(v) == (est, [lo, hi])  # a fixed resampling seed
    est, ci = bootstrap(v, "median")
    assert est == 0.5 and ci[0] <= 0.5 <= ci[1]
    # Three seeds: each extreme is resampled three times with chance 1/27 > 2.5%.
    assert bootstrap([3.0, 1.0, 2.0]) == (2.0, [1.0, 3.0])


def test_bootstrap_with_infinite_values_and_bad_input():
    est, ci = bootstrap([5.0, math.inf, math.inf], "median")
    assert est == math.inf and ci == [5.0, math.inf]
    for bad in ([], [1.0, float("nan")], [[1.0, 2.0]]):
        with pytest.raises(ValueError, match="bootstrap needs"):
            bootstrap(bad)


@pytest.mark.parametrize(
    "ci, threshold, direction, outcome",
    [
        ([2.0, 3.0], 1.0, "greater", "PASS"),
        ([0.5, 3.0], 1.0, "greater", "INCONCLUSIVE"),
        ([0.0, 1.0], 1.0, "greater", "FAIL"),  # at the threshold is not above it
        ([0.0, 0.0], 0.0, "greater", "FAIL"),
        ([0.0, 0.5], 1.0, "less", "PASS"),
        ([0.5, 3.0], 1.0, "less", "INCONCLUSIVE"),
        ([1.0, 3.0], 1.0, "less", "FAIL"),
        ([101.0, math.inf], 100.0, "greater", "PASS"),
    ],
)
def test_decide(ci, threshold, direction, outcome):
    assert decide(ci, threshold, direction) == outcome


def test_decide_rejects_an_unknown_direction():
    with pytest.raises(ValueError, match="direction"):
        decide([0, 1], 0.5, "bigger")


def test_seeded_claim_schema_and_outcomes():
    v = seeded_claim("c", "x > 1", [2.0, 2.5, 3.0], threshold=1.0, unit="x")
    assert v["outcome"] == "PASS" and v["passed"] is True and v["kind"] == "claim"
    assert v["n_seeds"] == 3 and v["ci"][0] <= v["estimate"] <= v["ci"][1]
    assert v["threshold"] == 1.0 and v["per_seed"] == [2.0, 2.5, 3.0]
    assert recompute(v) == v
    fail = seeded_claim("c", "x > 1", [0.1, 0.2, 0.3], threshold=1.0)
    assert fail["outcome"] == "FAIL" and fail["passed"] is False
    unsure = seeded_claim("c", "x > 1", [0.5, 1.5, 2.0], threshold=1.0)
    assert unsure["outcome"] == "INCONCLUSIVE" and unsure["passed"] is False
    # Too few seeds decide nothing, whatever they say.
    few = seeded_claim("c", "x > 1", [5.0, 6.0], threshold=1.0)
    assert few["outcome"] == "INCONCLUSIVE"
    with pytest.raises(ValueError, match="kind"):
        seeded_claim("c", "x", [1.0, 2.0, 3.0], threshold=0.0, kind="claims")


def test_unseeded_verdicts_and_checks():
    assert verdict("a", "b", "c", True)["outcome"] == "PASS"
    assert verdict("a", "b", "c", False)["outcome"] == "FAIL"
    nm = check("a", "b", "no GPU", None)
    assert nm["outcome"] == "NOT MEASURED" and nm["passed"] is False and nm["kind"] == "check"


def test_tables_separate_claims_from_checks(tmp_path):
    vs = [
        seeded_claim("speed", "r > 100", [150.0, 120.0, 300.0], threshold=100.0),
        check("sane", "s", "ok", True),
        verdict("once", "o", "m", False),
    ]
    table = verdict_table(vs)
    claims, checks = table.split("**Checks**")
    assert "speed" in claims and "once" in claims and "sane" in checks
    assert "[120, 300]" in claims and "needs > 100" in claims
    assert count_outcomes(vs) == "claims: 1 PASS, 1 FAIL; checks: 1 PASS"
    with pytest.raises(ValueError, match="outcome"):
        write_results(tmp_path, {"verdicts": [{"claim": "x", "passed": True}]})
    assert set(OUTCOMES) == {"PASS", "FAIL", "INCONCLUSIVE", "NOT MEASURED"}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_has_a_frozen_config_with_a_quick_variant(name, tmp_path):
    module = get_experiment(name)
    full = module.Config(out=tmp_path / name, seed=4)
    quick = full.quick()
    assert full.mode == "full" and quick.mode == "quick" and quick.seed == 4
    assert quick.is_quick and not full.is_quick
    assert quick.settings() != full.settings()  # quick() changes the settings
    assert configure(name, out=tmp_path, quick=True, seed=4).settings() == quick.settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.seed = 5
    with pytest.raises(ValueError, match="mode"):
        module.Config(out=tmp_path, mode="fast")
    with pytest.raises(ValueError, match="seed"):
        module.Config(out=tmp_path, seed=-1)
    with pytest.raises(TypeError, match="Config"):
        module.run(tmp_path)  # the old run(out, quick=...) form gets a clear error


def test_quick_mode_runs_three_seeds_per_claim_and_full_mode_five():
    module = get_experiment("dl_vs_elm")
    assert module.Config().seeds >= 5 and module.Config().quick().seeds >= 3


def test_recompute_detects_a_verdict_that_does_not_follow_from_its_numbers():
    v = seeded_claim("c", "x > 1", [2.0, 2.5, 3.0], threshold=1.0)
    assert recompute(v) == v
    assert recompute({**v, "outcome": "FAIL", "passed": False}) == v
    assert recompute(v, threshold=2.5)["outcome"] == "INCONCLUSIVE"
    assert recompute(v, threshold=10.0)["outcome"] == "FAIL"


def test_median_low_is_an_observed_value():
    from dl.experiments.common import median_low

    assert median_low([3.0, 1.0, 2.0]) == 2.0
    assert median_low([1.0, 2.0, math.inf, math.inf]) == 2.0  # +inf does not decide alone
    assert median_low([5.0, math.inf, math.inf]) == math.inf


def test_hierarchy_natural_images_without_the_files_says_where_it_looked(tmp_path):
    from dl.experiments import hierarchy_of_features as hof
    from dl.experiments.common import Timer

    s = dict(hof.Config(out=tmp_path).quick().settings(), natural_root=str(tmp_path / "none"))
    res, verdicts = hof.natural_images(s, 0, Timer())
    assert res["outcome"] == "NOT MEASURED" and verdicts == []
    assert res["looked_in"] == str(tmp_path / "none") and "download=True" in res["fetch"]


@pytest.mark.slow
def test_hierarchy_natural_images_on_a_small_cifar_file(tmp_path):
    """The natural-image path end to end on a CIFAR-10 archive the test writes (30
    training images, a ResNet-8 of width 4; about a minute, mostly compilation); without
    the files it says NOT MEASURED and where it looked."""
    import dataclasses

    from _files import cifar_tar

    from dl.experiments import hierarchy_of_features as hof
    from dl.experiments.common import Timer, recompute

    base = dataclasses.replace(
        hof.Config(out=tmp_path / "h").quick(),
        natural_root=str(tmp_path / "missing"),
        natural_seeds=3,
        natural_epochs=1,
        natural_train_size=None,
        natural_model={"blocks_per_stage": (1, 1, 1), "width": 4},
        cka_examples=6,
        probe_dim=16,
    )
    res, verdicts = hof.natural_images(base.settings(), 0, Timer())
    assert res["outcome"] == "NOT MEASURED" and verdicts == []
    assert str(tmp_path / "missing") in res["looked_in"] and "download=True" in res["fetch"]

    (tmp_path / "c10").mkdir()
    cifar_tar(tmp_path / "c10" / "cifar-10-python.tar.gz")
    s = dict(base.settings(), natural_root=str(tmp_path / "c10"))
    res, verdicts = hof.natural_images(s, 0, Timer())
    assert res["outcome"] == "MEASURED" and res["layers"] == [
        "stage0_block0",
        "stage1_block0",
        "stage2_block0",
    ]
    assert len(res["seeds"]) == 3 and len(res["across_seeds"]["identified_by_pair"]) == 3
    assert len(verdicts) == 4
    for v in verdicts:
        assert "(cifar10)" in v["claim"] and v["n_seeds"] == 3 and recompute(v) == v
