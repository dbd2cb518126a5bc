"""What peer trainers have (issue 33): gradient accumulation, a moving average of the
parameters, the learning rate in the history, TensorBoard events, a profiler trace,
runs without checkpoints."""

import json
import struct

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dl import data, models, optim, train
from dl.cli import main
from dl.writers import TensorBoardWriter


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _fit(state, steps, ds, **kw):
    kw = {"epochs": 2, "batch_size": 64, "progress": False, "eval_data": {"test": ds.test}, **kw}
    return train.fit(state, *steps, ds.train, **kw)


def test_grad_accum_gives_the_unsplit_update(digits):
    model, tx = models.get_model("mlp", 10, widths=(32,)), optax.sgd(0.1)
    state = train.create_state(model, tx, digits.input_shape)
    runs = {k: _fit(state, train.make_steps(model, tx, grad_accum=k), digits) for k in (1, 4)}
    chex.assert_trees_all_close(runs[4].state.params, runs[1].state.params, atol=1e-5)
    one, four = runs[1].history[-1], runs[4].history[-1]
    assert four["train/count"] == one["train/count"]
    assert four["test/loss"] == pytest.approx(one["test/loss"], abs=1e-4)
    assert four["train/loss"] == pytest.approx(one["train/loss"], abs=1e-4)
    with pytest.raises(ValueError, match="grad_accum=5 does not divide the batch of 64"):
        _fit(state, train.make_steps(model, tx, grad_accum=5), digits, epochs=1)


def test_grad_accum_with_batch_norm_updates_the_statistics_per_microbatch(digits):
    """The documented difference: batch norm sees microbatches, so the run differs."""
    model, tx = models.get_model("mlp", 10, widths=(32,), batch_norm=True), optax.sgd(0.1)
    state = train.create_state(model, tx, digits.input_shape)
    step = {k: jax.jit(train.make_train_step(model, tx, grad_accum=k)) for k in (1, 4)}
    batch = {"x": jnp.asarray(digits.x_train[:64]), "y": jnp.asarray(digits.y_train[:64])}
    stats = {k: step[k](state, batch)[0].batch_stats for k in (1, 4)}
    diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), stats[1], stats[4])
    assert max(jax.tree.leaves(diff)) > 1e-4


def test_ema_is_the_moving_average_evaluated_and_checkpointed(digits, tmp_path):
    model, tx = models.get_model("mlp", 10, widths=(32,)), optax.sgd(0.1)
    state = train.create_state(model, tx, digits.input_shape, ema=True)
    step = jax.jit(train.make_train_step(model, tx, ema_decay=0.9))
    batch = {"x": jnp.asarray(digits.x_train[:64]), "y": jnp.asarray(digits.y_train[:64])}
    new, _ = step(state, batch)
    want = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, state.params, new.params)
    chex.assert_trees_all_close(new.ema_params, want, rtol=1e-6)
    res = _fit(state, train.make_steps(model, tx, ema_decay=0.9), digits,
               checkpoint_dir=tmp_path / "ckpt")  # fmt: skip
    as_params = res.state.replace(params=res.state.ema_params)
    plain = train.evaluate(train.make_eval_step(model), as_params, *digits.test)
    assert res.history[-1]["test/loss"] == pytest.approx(plain["loss"], rel=1e-5)
    from dl.checkpoint import CheckpointManager

    fresh = train.create_state(model, tx, digits.input_shape, ema=True)
    restored = CheckpointManager(tmp_path / "ckpt").restore(fresh, "latest").state
    chex.assert_trees_all_equal(restored.ema_params, res.state.ema_params)
    with pytest.raises(ValueError, match=r"create_state\(..., ema=True\)"):
        train.make_train_step(model, tx, ema_decay=0.9)(
            train.create_state(model, tx, digits.input_shape), batch
        )


def test_the_history_records_the_learning_rate(digits):
    cfg = train.FitConfig(
        epochs=3, optimizer=optim.OptimizerConfig(learning_rate=0.01, schedule="cosine")
    )
    model = models.get_model("linear", 10)
    res = train.train(model, digits.train, cfg, progress=False)
    schedule = optim.make_schedule(cfg.optimizer, 3 * (len(digits.y_train) // 64))
    for record in res.history:
        assert record["lr"] == pytest.approx(float(schedule(record["step"] - 1)))
    # An optimizer of one's own: read from optax.inject_hyperparams.
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05)
    state = train.create_state(model, tx, digits.input_shape)
    res = _fit(state, train.make_steps(model, tx), digits)
    assert [r["lr"] for r in res.history] == pytest.approx([0.05, 0.05])


def _events(folder):
    """The scalars of TensorBoard event files: {tag: [(step, value)]}, read with the
    protocol buffers that tensorboardX ships (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    out = {}
    for path in folder.glob("events.out.tfevents.*"):
        raw = path.read_bytes()
        i = 0
        while i < len(raw):
            (n,) = struct.unpack("<Q", raw[i : i + 8])
            event = event_pb2.Event.FromString(raw[i + 12 : i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_tensorboard_events_hold_every_scalar_and_a_profile_is_written(digits, tmp_path):
    model, tx = models.get_model("linear", 10), optax.sgd(0.1)
    state = train.create_state(model, tx, digits.input_shape)
    writer = TensorBoardWriter(tmp_path / "tb")
    res = _fit(state, train.make_steps(model, tx), digits, writers=[writer], learning_rate=0.1,
               profile_dir=tmp_path / "profile", profile_steps=3, steps_per_call=2)  # fmt: skip
    writer.close()
    events = _events(tmp_path / "tb")
    for key in ("train/loss", "test/accuracy", "lr"):
        want = [(r["step"], r[key]) for r in res.history]
        got = events[key]
        assert [s for s, _ in got] == [s for s, _ in want]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6)
    assert res.profile_dir == str(tmp_path / "profile")
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))


def test_dl_train_with_the_new_flags(tmp_path, capsys):
    out = tmp_path / "run"
    args = "train --model mlp --dataset digits --epochs 2 --tensorboard --profile --ema 0.99"
    args = [*args.split(), "--no-checkpoint", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "167,178 parameters; recipe: {" in printed and '"ema_decay": 0.99' in printed
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert list((out / "profile").rglob("*.xplane.pb"))
    assert not (out / "checkpoints").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("lr" in r for r in records)
    results = json.loads((out / "results.json").read_text())
    assert results["ema_decay"] == 0.99 and "ema" in results["evaluated"]
    assert main(["train", "--resume", str(out), "--no-checkpoint"]) == 2


def test_bad_new_flags_exit_2_and_leave_no_folder(tmp_path, capsys):
    for flags in (["--grad-accum", "7"], ["--ema", "1.5"], ["--grad-accum", "0"]):
        out = tmp_path / flags[1]
        args = ["train", "--model", "linear", "--dataset", "digits", "--out", str(out), *flags]
        assert main(args) == 2
        assert not out.exists()
    err = capsys.readouterr().err
    assert "grad_accum 7 must divide batch_size 100" in err and "ema_decay must be in [0, 1)" in err
