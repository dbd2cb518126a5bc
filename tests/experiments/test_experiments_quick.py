"""Each experiment in quick mode: the verdict schema, and the numbers the verdicts are
computed from. No test asserts which way a claim comes out (a change that flips a
result must not break the build); mathematical facts (a linear stack is one linear
map) and the recorded structure are asserted.

20 s to 2.5 min each on 2 CPU cores: marked slow (`pytest -m slow`).
"""

import json

import numpy as np
import pytest

from dl.cli import main
from dl.experiments.common import KINDS, OUTCOMES, recompute

pytestmark = pytest.mark.slow


def _run(name, tmp_path_factory):
    out = tmp_path_factory.mktemp(name)
    assert main(["reproduce", "--only", name, "--quick", "--out", str(out)]) == 0
    res = json.loads((out / name / "results.json").read_text())
    for v in res["verdicts"]:
        assert v["outcome"] in OUTCOMES and v["kind"] in KINDS and v["measured"], v
        assert v["passed"] is (v["outcome"] == "PASS")
        if "ci" in v:
            assert recompute(v) == v
    for f in res["figures"]:
        assert (out / name / f).stat().st_size > 5000, f
    assert "## Verdicts" in (out / name / "report.md").read_text()
    assert (out / "index.html").is_file() and (out / "index.md").is_file()
    return res


def test_nonlinearity(tmp_path_factory):
    res = _run("nonlinearity", tmp_path_factory)
    for name in ("circles", "mnist1d"):
        r = res["accuracy"][name]
        # The linear stack is one affine map (float32 round-off); the ReLU stack is not.
        assert max(r["collapse_error"]["linear_stack"]) < 1e-4
        assert min(r["collapse_error"]["relu_stack"]) > 0.1


def _seeded_claims(res, n):
    claims = [v for v in res["verdicts"] if v["kind"] == "claim"]
    assert claims and all(v["n_seeds"] >= 3 for v in claims if "ci" in v)
    assert len(res["seeds"]) == n
    return claims


def test_vanishing_gradients(tmp_path_factory):
    from dl.experiments import vanishing_gradients as vg

    res = _run("vanishing_gradients", tmp_path_factory)
    _seeded_claims(res, 3)
    dmax = max(res["settings"]["depths"])
    norms = np.asarray(res["mlp_at_init"][f"relu/plain/he/{dmax}"])
    assert norms.shape == (3, dmax)
    by_claim = {v["claim"]: v for v in res["verdicts"]}
    v = by_claim["ReLU with He initialisation keeps every layer's gradient in range"]
    np.testing.assert_allclose(v["per_seed"], vg.band_margin(norms))
    for r in res["rnn"].values():
        assert np.asarray(r["grad_by_step_trained"]).shape[0] == 3
        assert all(m > 0 for m in r["mse_ratio"])


def test_depth(tmp_path_factory):
    res = _run("depth", tmp_path_factory)
    _seeded_claims(res, 3)
    depths = res["settings"]["depths"]
    assert max(depths) >= 64
    assert set(res["runs"]) == {f"{k}/{d}" for k in ("plain", "residual") for d in depths}
    for r in res["runs"].values():
        for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
            assert len(r[key]) == 3 and all(0 <= a <= 1 for a in r[key])
    nets = res["sawtooth"]["nets"]
    # Matched parameter counts (within one hidden unit's three parameters).
    assert abs(nets["deep"]["params"] - nets["shallow"]["params"]) <= 3


def test_data_scaling(tmp_path_factory):
    res = _run("data_scaling", tmp_path_factory)
    _seeded_claims(res, 3)
    mn = res["mnist1d"]
    for m, a in mn["accuracy"].items():
        assert np.asarray(a).shape == (len(mn["sizes"]), 3), m
    assert "gbt" in mn["accuracy"] and len(mn["sizes"]) >= 5
    small = [v for v in res["verdicts"] if v["claim"].startswith("Classical ML wins on small")]
    assert len(small) >= 3


def test_regularisation(tmp_path_factory):
    res = _run("regularisation", tmp_path_factory)
    _seeded_claims(res, 3)
    arms = res["arms"]
    for name, arm in arms.items():
        assert len(arm["test"]) == 3 and all(0 <= a <= 1 for a in arm["test"]), name
    assert all(1 <= e <= res["settings"]["epochs"] for e in arms["early_stopping"]["epoch"])
    assert set(arms["dropout"]["chosen"]) <= set(res["settings"]["dropout"])


def test_adversarial(tmp_path_factory):
    res = _run("adversarial", tmp_path_factory)
    _seeded_claims(res, 3)
    assert 0.0 not in res["settings"]["eps"] and res["n_test"] == 1000
    for r in res["runs"]:
        for curve in r["accuracy_vs_eps"].values():
            assert len(curve) == len(res["settings"]["eps"])


def test_transfer_learning(tmp_path_factory):
    res = _run("transfer_learning", tmp_path_factory)
    _seeded_claims(res, 3)
    a = res["accuracy"]
    assert set(a) == {"scratch", "fine_tuned", "frozen_features"}
    for arm in ("scratch", "fine_tuned"):
        for v in a[arm].values():
            assert set(v["learning_rate"]) <= set(res["settings"]["learning_rates"])
            assert all(0 <= x <= 1 for x in v["test"])


def test_weight_sharing(tmp_path_factory):
    res = _run("weight_sharing", tmp_path_factory)
    _seeded_claims(res, 3)
    for k in ("cnn", "mlp"):
        assert np.asarray(res["shifted_accuracy"][k]).shape == (
            3,
            1 + len(res["settings"]["shifts"]),
        )


def test_viewpoint(tmp_path_factory):
    res = _run("viewpoint", tmp_path_factory)
    claims = _seeded_claims(res, 3)
    s = res["settings"]
    for net in ("cnn", "capsnet"):
        acc = res["accuracy"][net]
        assert np.asarray(acc["rotation"]).shape == (3, 1 + len(s["angles"]))
        assert np.asarray(acc["shift"]).shape == (3, 1 + len(s["shifts"]))
        assert res["train_time_per_epoch_s"][net] > 0
    # The verdicts follow from the recorded accuracies: share kept, capsnet minus CNN.
    for kind, claim in zip(("rotation", "shift"), claims, strict=True):
        kept = {
            n: (np.asarray(a[kind])[:, 1:] / np.asarray(a[kind])[:, :1]).mean(1)
            for n, a in res["accuracy"].items()
        }
        np.testing.assert_allclose(claim["per_seed"], 100 * (kept["capsnet"] - kept["cnn"]))


def test_self_supervised(tmp_path_factory):
    res = _run("self_supervised", tmp_path_factory)
    claims = _seeded_claims(res, 3)
    acc = res["accuracy"]
    assert set(acc) == {
        "scratch", "ssl_fine_tuned", "ssl_probe", "supervised_fine_tuned", "supervised_probe"
    }  # fmt: skip
    for arm in acc.values():
        assert set(arm) == {"10", "100", "all"}
        assert all(
            len(a["test"]) == 3 and all(0 <= t <= 1 for t in a["test"]) for a in arm.values()
        )
    test = {a: {k: 100 * np.asarray(v["test"]) for k, v in arm.items()} for a, arm in acc.items()}
    np.testing.assert_allclose(
        claims[0]["per_seed"], test["ssl_fine_tuned"]["10"] - test["scratch"]["10"]
    )
    np.testing.assert_allclose(
        claims[3]["per_seed"], test["ssl_fine_tuned"]["10"] - test["supervised_fine_tuned"]["10"]
    )
