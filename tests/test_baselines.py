"""dl.baselines: every classical baseline, the ELM and a deep model behind one interface."""

import pytest

from dl import baselines, elm


@pytest.mark.parametrize(
    "name, lo",
    [
        ("logreg", 0.93),
        ("linear_svm", 0.93),
        ("rbf_svm", 0.97),
        ("tree", 0.75),
        ("forest", 0.95),
        ("knn", 0.95),
        ("gbt", 0.93),
    ],
)
def test_each_baseline_runs_behind_the_shared_interface(digits, name, lo):
    res = baselines.run(
        baselines.make_baseline(name, seed=0), name, digits.train, digits.test, dataset="digits"
    )
    assert res.model == name and res.dataset == "digits"
    assert res.accuracy >= lo, (name, res.accuracy)
    assert res.train_time_s > 0 and res.predict_time_s > 0


def test_elm_and_deep_model_share_the_interface(digits):
    r_elm = baselines.run(elm.ELMClassifier(1000, 1e-1), "elm", digits.train, digits.test)
    assert r_elm.accuracy > 0.95 and r_elm.params["width"] == 1000
    deep = baselines.DeepClassifier("mlp", "digits", epochs=5, eval_data=digits.test)
    r_deep = baselines.run(deep, "mlp", digits.train, digits.test, flatten=False)
    assert r_deep.accuracy > 0.9
    assert len(r_deep.extra["test_accuracy_by_epoch"]) == 5
    assert r_deep.extra["test_accuracy_by_epoch"][-1] == pytest.approx(r_deep.accuracy)


def test_unknown_baseline():
    with pytest.raises(ValueError, match="Unknown baseline 'svm'"):
        baselines.make_baseline("svm")
