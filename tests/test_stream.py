"""Streamed data in `fit` (issue 31): a source `epoch -> batches` trains like arrays,
resumes bitwise, and every malformed batch is named."""

import os
import signal

import chex
import jax
import numpy as np
import optax
import pytest

from dl import data, models, train
from dl.data.batching import epoch_indices
from dl.data.stream import Prefetch, array_source


def _setup(widths=(32,)):
    ds = data.load("digits")
    model = models.get_model("mlp", ds.num_classes, widths=widths)
    tx = optax.adam(1e-3)
    state = train.create_state(model, tx, ds.input_shape)
    return ds, model, tx, state


def _fit(state, model, tx, train_data, **kw):
    step, ev = train.make_steps(model, tx)
    kw = {"epochs": 3, "batch_size": 64, "progress": False, "steps_per_call": 8, **kw}
    return train.fit(state, step, ev, train_data, **kw)


def _same_order(x, y, batch_size, seed=0):
    """A source giving fit's own in-memory batches, in its order."""

    def source(epoch):
        idx, _ = epoch_indices(len(x), batch_size, seed=seed, epoch=epoch)
        for rows in np.asarray(idx):
            yield {"x": x[rows], "y": y[rows]}

    return source


def _strip(history):
    return [{k: v for k, v in r.items() if "time" not in k} for r in history]


def test_a_source_with_fits_own_order_gives_the_same_run():
    ds, model, tx, state = _setup()
    test = {"test": ds.test}
    arrays = _fit(state, model, tx, ds.train, eval_data=test)
    streamed = _fit(state, model, tx, _same_order(*ds.train, 64), eval_data=test)
    chex.assert_trees_all_close(streamed.state.params, arrays.state.params, rtol=1e-6)
    for mine, theirs in zip(_strip(streamed.history), _strip(arrays.history), strict=True):
        assert mine == pytest.approx(theirs, rel=1e-5)


def test_a_streamed_eval_set_counts_every_example_like_arrays():
    ds, model, tx, state = _setup()
    src = array_source(*ds.test, 100, shuffle=False, drop_remainder=False)  # 360: 3 + 60
    res = _fit(state, model, tx, ds.train, epochs=1, eval_data={"a": ds.test, "s": src})
    last = res.history[-1]
    assert last["s/count"] == last["a/count"] == len(ds.y_test)
    assert last["s/accuracy"] == last["a/accuracy"]
    assert last["s/loss"] == pytest.approx(last["a/loss"], rel=1e-5)


def test_a_memory_mapped_source_trains(tmp_path):
    ds, model, tx, state = _setup()
    np.save(tmp_path / "x.npy", ds.x_train)
    np.save(tmp_path / "y.npy", ds.y_train)
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    y = np.load(tmp_path / "y.npy", mmap_mode="r")
    res = _fit(state, model, tx, array_source(x, y, 64, seed=1), epochs=6,
               eval_data={"test": ds.test})  # fmt: skip
    assert res.history[-1]["train/count"] == len(ds.y_train) // 64 * 64
    assert res.history[-1]["test/accuracy"] > 0.8  # a check that it learned (chance 0.1)


@pytest.mark.parametrize("takes_start", [True, False])
def test_an_interrupted_streamed_run_resumes_bitwise(tmp_path, takes_start):
    """SIGINT in epoch 2; the resumed run restarts the epoch's source at the right batch
    (by `start=`, or by drawing and discarding) and ends bitwise equal."""
    ds, model, tx, state = _setup()
    inner = array_source(*ds.train, 64, seed=3)
    drawn = {"n": 0, "kill_at": None}

    def source(epoch, **kw):
        for batch in inner(epoch, **kw):
            drawn["n"] += 1
            if drawn["n"] == drawn["kill_at"]:
                os.kill(os.getpid(), signal.SIGINT)
            yield batch

    src = source if takes_start else (lambda epoch: source(epoch))
    kw = {"eval_data": {"test": ds.test}, "checkpoint_every": 5}
    whole = _fit(state, model, tx, src, checkpoint_dir=tmp_path / "whole", **kw)
    drawn.update(n=0, kill_at=30)  # in epoch 2 (22 batches an epoch)
    with pytest.raises(train.TrainingInterrupted):
        _fit(state, model, tx, src, checkpoint_dir=tmp_path / "cut", **kw)
    drawn.update(n=0, kill_at=None)
    resumed = _fit(state, model, tx, src, checkpoint_dir=tmp_path / "cut", resume=True, **kw)
    # Resuming inside epoch 2 draws from it on: by start=, or discarding what was done.
    assert drawn["n"] < 3 * 22 if takes_start else drawn["n"] >= 2 * 22
    chex.assert_trees_all_equal(resumed.state.params, whole.state.params)
    chex.assert_trees_all_equal(resumed.state.opt_state, whole.state.opt_state)
    assert _strip(resumed.history) == _strip(whole.history)


def _batches(*shapes, n=64):
    def source(epoch):
        for rows, shape in shapes:
            yield {"x": np.zeros((rows, *shape), np.float32), "y": np.zeros(rows, np.int32)}

    return source


def test_malformed_streams_are_named():
    ds, model, tx, state = _setup()
    good = (64, (8, 8, 1))
    cases = [
        (_batches(good, (64, (8, 8))), r"batch 1 of epoch 0: x has per-example shape \(8, 8\)"),
        (_batches(good, (32, (8, 8, 1)), good), r"batch 1 of epoch 0 has fewer rows than"),
        (_batches((128, (8, 8, 1))), r"batch 0 of epoch 0 has 128 rows, more than batch_size"),
        (_batches(), r"epoch 0 of the source gave no batch of batch_size 64"),
        (_batches((10, (8, 8, 1))), r"epoch 0 of the source gave no batch"),  # short, dropped
        (lambda epoch: iter([(1, 2)]), r'batch 0 of epoch 0 must be a dict .* "x" and "y"'),
    ]
    for source, match in cases:
        with pytest.raises(ValueError, match=match):
            _fit(state, model, tx, source, epochs=1)
    labels = lambda epoch: iter([{"x": np.zeros((64, 8, 8, 1)), "y": np.full(64, 12)}])  # noqa: E731
    with pytest.raises(ValueError, match=r"batch 0 of epoch 0.*\[0, 10\)"):
        _fit(state, model, tx, labels, epochs=1)
    with pytest.raises(ValueError, match=r"eval_data\['s'\]: the source gave no batch"):
        _fit(state, model, tx, ds.train, epochs=1, eval_data={"s": _batches()})


def test_prefetch_keeps_order_and_raises_the_sources_error_in_either_mode():
    for thread in (False, True):
        assert list(Prefetch(iter(range(10)), lambda b: b * 2, 3, thread=thread)) == list(
            range(0, 20, 2)
        )

        def broken():
            yield 1
            raise OSError("disk gone")

        feed = Prefetch(broken(), lambda b: b, thread=thread)
        with pytest.raises(OSError, match="disk gone"):
            list(feed)
        feed.close()


def test_a_stream_under_pmap_trains_as_under_sharded():
    ds, model, tx, state = _setup()
    runs = {}
    for name, axis in (("sharded", None), ("pmap", "data")):
        step, ev = train.make_steps(model, tx, axis_name=axis)
        runs[name] = train.fit(state, step, ev, array_source(*ds.train, 64), epochs=2,
                               batch_size=64, strategy=name, progress=False)  # fmt: skip
    chex.assert_trees_all_close(runs["pmap"].state.params, runs["sharded"].state.params,
                                atol=1e-5)  # fmt: skip
    assert jax.device_count() == 8 and runs["pmap"].num_devices == 8


def test_train_points_a_stream_to_fit():
    ds, model, _, _ = _setup()
    with pytest.raises(ValueError, match=r"train\(\) takes \(x, y\) arrays.*call fit"):
        train.train(model, array_source(*ds.train, 64), train.FitConfig(epochs=1))
