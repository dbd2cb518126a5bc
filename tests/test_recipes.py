"""Acceptance runs of issue 2: the default recipes, exactly as `dl train` runs them."""

import pytest

from dl.recipes import default_config, train_and_evaluate


@pytest.mark.parametrize(
    "model, dataset, lo, hi",
    [
        ("cnn", "mnist5k", 0.97, 1.0),
        ("mlp", "mnist5k", 0.94, 1.0),
        ("cnn", "mnist1d", 0.92, 1.0),  # published 1-D CNN: 94%
        ("linear", "mnist1d", 0.29, 0.35),  # published logistic regression: 32%
    ],
)
def test_default_recipe_reaches_target(model, dataset, lo, hi, tmp_path):
    res = train_and_evaluate(default_config(model, dataset), tmp_path, progress=False)
    assert lo <= res["test_accuracy"] <= hi, res["test_accuracy"]
    assert res["epochs"] == default_config(model, dataset).epochs


def test_overrides_and_unknown_fields():
    cfg = default_config("cnn", "mnist1d", epochs=3, model_kwargs={"channels": (8,)})
    assert cfg.epochs == 3 and cfg.model_kwargs["channels"] == (8,)
    assert cfg.model_kwargs["kernel_size"] == 5  # recipe fields survive a partial override
    with pytest.raises(ValueError, match=r"Unknown config field\(s\) \['epoch'\]"):
        default_config("cnn", "mnist5k", epoch=3)
