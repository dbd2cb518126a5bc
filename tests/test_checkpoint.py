"""Checkpointing, resume and fault tolerance (issue 3)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import pytest

from dl import data, models, optim, parallel, train
from dl.checkpoint import CheckpointError, CheckpointManager, CheckpointMismatchError

CLI = [sys.executable, "-m", "dl.cli", "train"]
RUN = [
    "--model",
    "mlp",
    "--dataset",
    "digits",
    "--epochs",
    "30",
    "--checkpoint-every",
    "5",
    "--model-arg",
    "widths=(64,)",
    "--model-arg",
    "dropout=0.1",
    "--no-progress",
]


def _final(out: Path):
    """The final checkpoint's arrays, restored into a fresh state of the same model."""
    from dl.recipes import load_config

    cfg = load_config(out)
    ds = data.load(cfg.dataset)
    model = models.get_model(cfg.model, ds.num_classes, **cfg.model_kwargs)
    tx = optim.make_optimizer(optim.OptimizerConfig(**cfg.optimizer_kwargs()), 100)
    target = train.create_state(model, tx, ds.input_shape)
    with CheckpointManager(out / "checkpoints") as m:
        return m.restore(target, "latest")


def _assert_same_run(a: Path, b: Path):
    ra, rb = _final(a), _final(b)
    assert ra.step == rb.step
    chex.assert_trees_all_equal(ra.state.params, rb.state.params)
    chex.assert_trees_all_equal(ra.state.opt_state, rb.state.opt_state)
    ha = json.loads((a / "results.json").read_text())
    hb = json.loads((b / "results.json").read_text())
    assert ha["test_accuracy"] == hb["test_accuracy"]
    strip = lambda h: [{k: v for k, v in r.items() if "time" not in k} for r in h]  # noqa: E731
    assert strip(ha["history"]) == strip(hb["history"])
    assert len((b / "metrics.jsonl").read_text().splitlines()) == ha["epochs"]


def _latest_on_disk(out: Path) -> int:
    d = out / "checkpoints"
    steps = [int(p.name) for p in d.iterdir() if p.name.isdigit()] if d.is_dir() else []
    return max(steps, default=-1)


@pytest.mark.slow  # about 2 minutes; the SIGTERM test stays in the default run
def test_sigkill_at_random_points_then_resume_is_bitwise_identical(tmp_path):
    ref = tmp_path / "ref"
    subprocess.run([*CLI, *RUN, "--out", str(ref)], check=True, capture_output=True, timeout=600)
    total = _final(ref).step
    out = tmp_path / "killed"
    rng = random.Random(0)
    # Kill points: three random steps, then a random extra delay, so the kill lands
    # anywhere: inside a step, inside a checkpoint write, between the two.
    points = sorted(rng.sample(range(20, total - 40), 3))
    cmd = [*CLI, *RUN, "--out", str(out)]
    for point in points:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while _latest_on_disk(out) < point:
            assert proc.poll() is None, "the run ended before the kill point"
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.2))
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert _latest_on_disk(out) < total
        cmd = [*CLI, "--resume", str(out), "--no-progress"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    _assert_same_run(ref, out)


def test_sigterm_checkpoints_exits_nonzero_and_resumes(tmp_path):
    ref = tmp_path / "ref"
    subprocess.run([*CLI, *RUN, "--out", str(ref)], check=True, capture_output=True, timeout=600)
    out = tmp_path / "term"
    proc = subprocess.Popen(
        [*CLI, *RUN, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not (out / "checkpoints").is_dir() or not any((out / "checkpoints").iterdir()):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM after step" in err and f"--resume {out}" in err
    res = subprocess.run(
        [*CLI, "--resume", str(out), "--no-progress"], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    _assert_same_run(ref, out)


def _small_state(channels=(4,)):
    ds = data.load("digits")
    model = models.get_model("cnn", 10, channels=channels, dense=(), batch_norm=True)
    tx = optim.make_optimizer("adam", learning_rate=3e-3)
    return ds, model, tx, train.create_state(model, tx, ds.input_shape)


def _fit(ds, model, tx, state, step=None, **kw):
    return train.fit(
        state,
        step or train.make_train_step(model, tx),
        train.make_eval_step(model),
        ds.train,
        batch_size=64,
        progress=False,
        **kw,
    )


def test_keep_last_and_best_and_restore(tmp_path):
    ds, model, tx, state = _small_state()
    (xt, yt), val = data.validation_split(*ds.train, 0.2)
    es = train.EarlyStopping("val/accuracy", patience=100)
    res = train.fit(
        state,
        train.make_train_step(model, tx),
        train.make_eval_step(model),
        (xt, yt),
        eval_data={"val": val},
        epochs=6,
        batch_size=64,
        progress=False,
        early_stopping=es,
        checkpoint_dir=tmp_path,
        keep_checkpoints=2,
    )
    m = CheckpointManager(tmp_path, keep_last=2, best_metric="val/accuracy")
    steps = m.steps()
    per_epoch = len(xt) // 64
    assert steps[-2:] == [5 * per_epoch, 6 * per_epoch]
    assert m.best_step() == res.best_epoch * per_epoch and m.best_step() in steps
    assert len(steps) == 2 + (res.best_epoch < 5)
    best = m.restore(state, "best")
    chex.assert_trees_all_equal(best.state.params, res.state.params)  # restore_best state
    assert best.meta["history"][-1]["epoch"] == res.best_epoch


def _damage(step_dir: Path, how: str):
    files = [p for p in step_dir.rglob("*") if p.is_file() and "/d/" in str(p)]
    assert files
    for f in files:
        if how == "truncate":
            with open(f, "r+b") as fh:
                fh.truncate(max(f.stat().st_size // 2, 1))
        else:
            f.unlink()


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_damaged_latest_falls_back_to_newest_intact(tmp_path, how):
    ds, model, tx, state = _small_state()
    _fit(ds, model, tx, state, epochs=3, checkpoint_dir=tmp_path, keep_checkpoints=3)
    m = CheckpointManager(tmp_path)
    steps = m.steps()
    _damage(tmp_path / str(steps[-1]), how)
    with pytest.warns(UserWarning, match=rf"Skipped damaged checkpoint\(s\) step {steps[-1]}"):
        r = m.restore(state, "latest")
    assert r.step == steps[-2] and r.skipped[0][0] == steps[-1]
    with pytest.raises(CheckpointError, match=rf"step {steps[-1]} .* is damaged"):
        m.restore(state, steps[-1])
    # and a resumed fit continues from the intact one, to the same end as a clean run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = _fit(ds, model, tx, state, epochs=3, checkpoint_dir=tmp_path, resume=True)
    clean = _fit(ds, model, tx, state, epochs=3)
    chex.assert_trees_all_equal(resumed.state.params, clean.state.params)


def test_checksum_catches_altered_bytes(tmp_path):
    ds, model, tx, state = _small_state()
    _fit(ds, model, tx, state, epochs=1, checkpoint_dir=tmp_path)
    m = CheckpointManager(tmp_path)
    step = m.latest_step()
    meta_file = next((tmp_path / str(step) / "meta").rglob("*")).resolve()
    meta = json.loads(meta_file.read_text())
    key = next(iter(meta["sha256"]))
    meta["sha256"][key] = "0" * 64
    # An array's bytes that no longer match its recorded checksum (the metadata itself
    # re-signed, so only the arrays' check can notice).
    from dl.checkpoint import _meta_digest

    meta["meta_sha256"] = _meta_digest(meta)
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        m.restore(state, step)
    meta["epoch"] += 1  # now the metadata disagrees with its own checksum
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="metadata fails its checksum"):
        m.restore(state, step)


def test_other_models_checkpoint_is_rejected(tmp_path):
    ds, model, tx, state = _small_state()
    _fit(ds, model, tx, state, epochs=1, checkpoint_dir=tmp_path)
    _, _, _, other = _small_state(channels=(8,))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"float32\(4,\) in the checkpoint but "
        r"float32\(8,\) in the model",
    ):
        CheckpointManager(tmp_path).restore(other)
    with pytest.raises(CheckpointError, match="No checkpoint in"):
        CheckpointManager(tmp_path / "empty").restore(state)


def test_resume_with_different_settings_is_refused(tmp_path):
    ds, model, tx, state = _small_state()
    _fit(ds, model, tx, state, epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="Cannot resume .* batch_size"):
        train.fit(
            state,
            train.make_train_step(model, tx),
            train.make_eval_step(model),
            ds.train,
            batch_size=32,
            epochs=2,
            progress=False,
            checkpoint_dir=tmp_path,
            resume=True,
        )


def _nan_at(step_fn, bad_step):
    """Wrap a train step so that the batch of step index `bad_step` is all NaN."""

    def wrapped(state, batch):
        x = jnp.where(state.step == bad_step, jnp.nan, batch["x"])
        return step_fn(state, dict(batch, x=x))

    return wrapped


def test_nan_injection_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
    ds, model, tx, state = _small_state()
    step = _nan_at(train.make_train_step(model, tx), bad_step=5)
    with pytest.raises(FloatingPointError, match=r"at step 6 \(found before writing"):
        _fit(ds, model, tx, state, step=step, epochs=2, checkpoint_dir=tmp_path, checkpoint_every=4)
    m = CheckpointManager(tmp_path)
    assert m.steps() == [4]
    r = m.restore(state, "latest")
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(r.state.params))


def test_skip_nonfinite_policy_skips_the_bad_step_only(tmp_path):
    ds, model, tx, state = _small_state()
    step = _nan_at(train.make_train_step(model, tx, skip_nonfinite=True), bad_step=5)
    res = _fit(ds, model, tx, state, step=step, epochs=2, checkpoint_dir=tmp_path)
    assert res.history[0]["train/nonfinite_steps"] == 1
    assert res.history[1]["train/nonfinite_steps"] == 0
    assert res.history[0]["train/count"] == (len(ds.x_train) // 64 - 1) * 64
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(res.state.params))
    assert int(res.state.step) == 2 * (len(ds.x_train) // 64)


def test_signal_in_process_writes_checkpoint(tmp_path, monkeypatch):
    ds, model, tx, state = _small_state()
    step = train.make_train_step(model, tx)
    orig = parallel.TrainCalls.run
    calls = []

    def signalling_call(self, *a):
        out = orig(self, *a)
        calls.append(1)
        if len(calls) == 3:  # SIGINT arrives during the 3rd call (of one step each)
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(parallel.TrainCalls, "run", signalling_call)
    # Whatever handler the process had before (pytest's default, or another that an
    # earlier test in this worker left) must be back afterwards.
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(train.TrainingInterrupted, match="SIGINT after step 3") as e:
        _fit(ds, model, tx, state, step=step, epochs=2, checkpoint_dir=tmp_path, steps_per_call=1)
    monkeypatch.undo()
    assert e.value.exit_code == 130
    assert CheckpointManager(tmp_path).steps() == [3]
    assert signal.getsignal(signal.SIGINT) is before  # restored
