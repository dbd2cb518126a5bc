import json
import shutil
import subprocess
import sys

import pytest

from dl.cli import main


def test_train_end_to_end_console_script(tmp_path):
    exe = shutil.which("dl") or f"{sys.executable} -m dl.cli"
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            *exe.split(),
            "train",
            "--model",
            "mlp",
            "--dataset",
            "digits",
            "--epochs",
            "3",
            "--lr",
            "0.003",
            "--batch-size",
            "32",
            "--seed",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy:" in proc.stdout
    res = json.loads((out / "results.json").read_text())
    for key in ("test_accuracy", "train_time_s", "epochs", "config", "env"):
        assert key in res
    assert res["epochs"] == 3 and res["config"]["learning_rate"] == 0.003
    assert res["config"]["batch_size"] == 32 and res["config"]["seed"] == 1
    assert res["env"]["jax"] and res["env"]["devices"]
    assert 0.8 < res["test_accuracy"] <= 1.0
    assert f"{res['test_accuracy']:.4f}" in proc.stdout
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[-1])["epoch"] == 3
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_val_split_early_stopping_and_model_args(tmp_path, capsys):
    rc = main(
        [
            "train",
            "--model",
            "cnn",
            "--dataset",
            "digits",
            "--epochs",
            "30",
            "--val-fraction",
            "0.2",
            "--patience",
            "2",
            "--model-arg",
            "channels=(4,)",
            "--model-arg",
            "dense=()",
            "--model-arg",
            "activation=tanh",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["dataset"]["val"] > 0 and res["dataset"]["train"] + res["dataset"]["val"] == 1437
    assert res["config"]["model_kwargs"] == {"channels": [4], "dense": [], "activation": "tanh"}
    assert "val/accuracy" in res["history"][0]
    if res["stopped_early"]:
        assert res["epochs"] < 30


@pytest.mark.parametrize(
    "argv, match",
    [
        (
            ["--model", "transformerz"],
            r"Unknown model 'transformerz'. Valid.*Did you mean 'transformer'",
        ),
        (
            ["--dataset", "cifar"],
            r"Unknown dataset 'cifar'. Valid choices: adding, .*digits",
        ),
        (["--lr", "-0.1"], "learning_rate must be a positive finite number; got -0.1"),
        (["--batch-size", "0"], "batch_size must be a positive integer; got 0"),
        (["--epochs", "-1"], "epochs must be a positive integer; got -1"),
        (["--optimizer", "adamax"], "Unknown optimizer 'adamax'"),
        (["--patience", "3"], "needs a validation set"),
        (["--model-arg", "widths"], "expects KEY=VALUE"),
        (["--model", "mlp", "--model-arg", "depth=3"], r"Unknown option\(s\) \['depth'\]"),
        (["--augment", "mixup"], "Unknown augmentation 'mixup'"),
        (["--compute-dtype", "float16"], "compute_dtype must be one of .* got 'float16'"),
        (["--dataset", "digits", "--model", "lenet5", "--epochs", "1"], "lenet5 needs images"),
    ],
)
def test_bad_arguments_exit_2_with_clear_message(argv, match, capsys, tmp_path):
    rc = main(["train", *argv, "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert pytest.importorskip("re").search(match, err), err


def test_listings(capsys):
    from dl.data import DATASETS
    from dl.models import MODELS

    assert main(["datasets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(DATASETS)
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(MODELS)


@pytest.mark.parametrize("strategy", ["pmap", "sharded", "single"])
def test_train_devices_and_strategy(strategy, tmp_path, capsys):
    devices = "1" if strategy == "single" else "4"
    args = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "2"]
    args += ["--batch-size", "32", "--no-progress", "--out", str(tmp_path)]
    rc = main([*args, "--devices", devices, "--strategy", strategy])
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["parallel"] == {"strategy": strategy, "devices": int(devices)}
    assert f"ran on {devices} device(s), strategy {strategy}" in capsys.readouterr().out
    assert res["test_accuracy"] > 0.8


def test_train_devices_errors(tmp_path, capsys):
    args = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--no-progress"]
    rc = main([*args, "--batch-size", "30", "--devices", "4", "--out", str(tmp_path / "a")])
    assert rc == 2
    assert "batch_size 30 does not divide over the 4 devices" in capsys.readouterr().err
    rc = main([*args, "--devices", "64", "--out", str(tmp_path / "b")])
    assert rc == 2
    assert "Asked for 64 devices but 8 are visible" in capsys.readouterr().err


def test_train_sequence_regression_and_listing(tmp_path, capsys):
    args = ["train", "--model", "lstm", "--dataset", "adding", "--quick", "--no-progress"]
    args += ["--dataset-arg", "length=20", "--dataset-arg", "num_train=512"]
    args += ["--model-arg", "hidden=16", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["task"] == "regression" and res["test_accuracy"] is None
    assert res["epochs"] == 8  # the quick variant of lstm/adding
    assert f"MSE / predict-the-mean MSE: {res['mse_ratio']:.4f}" in out
    assert res["test_mse"] == pytest.approx(res["mse_ratio"] * res["baseline_mse"])
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    for name in ("rnn", "lstm", "gru", "transformer", "vit", "lm"):
        assert f"\n{name} " in "\n" + listed
    assert main(["datasets"]) == 0
    assert "pytext" in capsys.readouterr().out


def test_train_model_that_cannot_read_the_dataset(tmp_path, capsys):
    rc = main(["train", "--model", "lm", "--dataset", "digits", "--out", str(tmp_path)])
    assert rc == 2
    assert "Model 'lm' reads token ids but dataset 'digits' holds numbers" in (
        capsys.readouterr().err
    )
    rc = main(["train", "--model", "gru", "--dataset", "pytext", "--out", str(tmp_path)])
    assert rc == 2
    assert "Use a language model (lm)" in capsys.readouterr().err


def test_reproduce_lists_experiments_and_rejects_unknown_names(capsys, tmp_path):
    from dl.cli import main

    assert main(["reproduce", "--list"]) == 0
    assert "dl_vs_elm" in capsys.readouterr().out
    assert main(["reproduce", "--only", "dl_vs_elmm"]) == 2
    err = capsys.readouterr().err
    assert "Unknown experiment 'dl_vs_elmm'" in err and "dl_vs_elm" in err
    # A bad setting fails before any experiment runs, with exit 2 and what was received.
    assert main(["reproduce", "--only", "depth", "--seed", "-1", "--out", str(tmp_path)]) == 2
    assert "seed must be an integer >= 0; got -1" in capsys.readouterr().err
    assert not (tmp_path / "depth").exists()


def test_train_in_bfloat16_mixed_precision(tmp_path):
    args = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "3"]
    args += ["--compute-dtype", "bfloat16", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["config"]["compute_dtype"] == "bfloat16"
    assert res["test_accuracy"] > 0.8
