"""`dl reproduce`'s progress line (issue 33): runs are counted from fit, train_seeds and
ELM fits, parts named by the experiments' Timer sections, totals from the last record."""

import json

from dl import data, models, train
from dl.elm import ELMClassifier
from dl.experiments import EXPERIMENTS, common


def test_runs_are_counted_and_parts_named_while_tracked(capsys):
    ds = data.load("iris")
    model = models.get_model("mlp", ds.num_classes, widths=(8,))
    cfg = train.FitConfig(epochs=1, batch_size=16)
    timer = common.Timer()
    with common.tracked("nonlinearity", quick=True, enabled=True) as tracker:
        with timer("first part"):
            train.train(model, ds.train, cfg, progress=False)
            ELMClassifier(20).fit(ds.x_train, ds.y_train)
        assert tracker.bar.desc == "nonlinearity: first part"
        train.train_seeds(model, ds.train, cfg, [0, 1])
    assert tracker.runs == 3
    train.train(model, ds.train, cfg, progress=False)  # not tracked any more
    assert tracker.runs == 3
    assert "nonlinearity: first part" in capsys.readouterr().err


def test_the_last_recorded_run_counts_cover_every_experiment():
    table = json.loads(common._EXPECTED_RUNS.read_text())
    assert set(table["quick"]) == set(EXPERIMENTS)
    assert all(isinstance(n, int) and n > 0 for n in table["quick"].values())
    assert common.expected_runs("depth", quick=True) == table["quick"]["depth"]
    assert common.expected_runs("no_such_experiment", quick=True) is None
