"""Each experiment in quick mode: the verdict schema, and the numbers the verdicts are
computed from. No test asserts which way a claim comes out (a change that flips a
result must not break the build); mathematical facts (a linear stack is one linear
map) and the recorded structure are asserted.

20 s to 2.5 min each on 2 CPU cores: marked slow (`pytest -m slow`).
"""

import json

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


def test_vanishing_gradients(tmp_path_factory):
    res = _run("vanishing_gradients", tmp_path_factory)
    dmax = max(res["settings"]["depths"])
    init = res["mlp_at_init"]
    assert len(init[f"tanh/residual/{dmax}"]["norms"]) == dmax
    assert all(v["first_over_last"] > 0 for v in init.values())
    assert all(v["mse_ratio"] > 0 for v in res["rnn"].values())


def test_depth(tmp_path_factory):
    res = _run("depth", tmp_path_factory)
    depths = res["settings"]["depths"]
    assert set(res["runs"]) == {f"{k}/{d}" for k in ("plain", "residual") for d in depths}
    for r in res["runs"].values():
        assert all(0 <= a <= 1.0 for a in r["train_accuracy"] + r["test_accuracy"])


def test_data_scaling(tmp_path_factory):
    res = _run("data_scaling", tmp_path_factory)
    sizes = [str(n) for n in res["settings"]["sizes"]]
    for model, by_size in res["accuracy"].items():
        assert set(by_size) == set(sizes), model
        assert all(0 <= a <= 1 for n in sizes for a in by_size[n])


def test_regularisation(tmp_path_factory):
    res = _run("regularisation", tmp_path_factory)
    runs = res["runs"]

    def mean(name, key):
        return sum(r[key] for r in runs[name]) / len(runs[name])

    assert all(r["epochs_run"] <= res["settings"]["epochs"] for r in runs["early_stopping"])
    assert all(0 <= mean(name, "test_accuracy") <= 1 for name in runs)


def test_adversarial(tmp_path_factory):
    res = _run("adversarial", tmp_path_factory)
    c = res["accuracy_vs_eps"]
    eps = res["settings"]["eps"]
    # At eps 0 every attack is the clean input.
    for curve in c.values():
        assert len(curve) == len(eps)
        assert curve[eps.index(0.0)] == pytest.approx(res["clean_accuracy"])


def test_transfer_learning(tmp_path_factory):
    res = _run("transfer_learning", tmp_path_factory)
    a = res["accuracy"]
    assert set(a) == {"scratch", "fine_tuned", "frozen_features"}
    for arm in a.values():
        assert all(0 <= x <= 1 for xs in arm.values() for x in xs)
