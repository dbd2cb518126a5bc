import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dl import data, metrics, models, optim, train
from dl.checkpoint import CheckpointManager


def _setup(name="mlp", seed=0, **kw):
    ds = data.load("digits")
    kw = kw or ({"widths": (32,)} if name == "mlp" else {})
    model = models.get_model(name, ds.num_classes, **kw)
    tx = optim.make_optimizer("adam", learning_rate=3e-3)
    state = train.create_state(model, tx, ds.input_shape, seed=seed)
    return ds, model, tx, state


def _fit(ds, model, tx, state, **kw):
    kw = {"epochs": 3, "batch_size": 64, "progress": False, **kw}
    return train.fit(
        state, train.make_train_step(model, tx), train.make_eval_step(model), ds.train, **kw
    )


def test_state_is_a_pytree_with_metadata():
    ds, model, tx, state = _setup()
    assert state.input_shape == (8, 8, 1) and state.num_classes == 10
    assert int(state.step) == 0 and state.batch_stats == {}
    leaves = jax.tree.leaves(state)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)


def test_loss_decreases_and_model_learns():
    ds, model, tx, state = _setup()
    res = _fit(ds, model, tx, state, epochs=8, eval_data={"test": ds.test})
    losses = [h["train/loss"] for h in res.history]
    assert losses[-1] < 0.5 * losses[0]
    assert res.history[-1]["test/accuracy"] > 0.9
    assert res.history[-1]["step"] == 8 * (len(ds.x_train) // 64)
    assert res.history[-1]["test/count"] == len(ds.x_test)  # padded eval batch masked


def test_same_seed_bitwise_identical_and_other_seed_differs():
    runs = []
    for seed in (0, 0, 1):
        ds, model, tx, state = _setup(
            "cnn", seed=seed, channels=(4,), dense=(16,), dropout=0.2, batch_norm=True
        )
        runs.append(_fit(ds, model, tx, state, epochs=2, seed=seed).state)
    chex.assert_trees_all_equal(runs[0].params, runs[1].params)
    chex.assert_trees_all_equal(runs[0].batch_stats, runs[1].batch_stats)
    assert not np.array_equal(runs[0].params["head"]["kernel"], runs[2].params["head"]["kernel"])


def test_jit_and_eager_steps_agree():
    ds, model, tx, state = _setup("cnn", channels=(4,), dense=(16,), dropout=0.3, batch_norm=True)
    step = train.make_train_step(model, tx, augment=data.random_shift)
    batch = next(data.batches(*ds.train, 32, seed=0))
    s_eager, s_jit = state, state
    for _ in range(3):
        s_eager, m_eager = step(s_eager, batch)
        s_jit, m_jit = jax.jit(step)(s_jit, batch)
    chex.assert_trees_all_close(s_eager.params, s_jit.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(s_eager.batch_stats, s_jit.batch_stats, rtol=1e-5, atol=1e-6)
    assert int(m_eager["count"]) == int(m_jit["count"]) == 32


def test_batch_stats_are_returned_and_used_in_eval():
    ds, model, tx, state = _setup("cnn", channels=(4,), dense=(), batch_norm=True)
    res = _fit(ds, model, tx, state, epochs=1)
    before = jax.tree.leaves(state.batch_stats)
    after = jax.tree.leaves(res.state.batch_stats)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_masked_examples_do_not_affect_the_update():
    ds, model, tx, state = _setup()
    step = jax.jit(train.make_train_step(model, tx))
    x, y = jnp.asarray(ds.x_train[:8]), jnp.asarray(ds.y_train[:8])
    mask = jnp.array([1, 1, 1, 1, 0, 0, 0, 0], jnp.float32)
    garbage = x.at[4:].set(5.0)
    a, _ = step(state, {"x": x, "y": y, "mask": mask})
    b, _ = step(state, {"x": garbage, "y": y, "mask": mask})
    c, _ = step(state, {"x": x[:4], "y": y[:4]})
    chex.assert_trees_all_close(a.params, b.params, atol=1e-7)
    chex.assert_trees_all_close(a.params, c.params, atol=1e-7)


def test_fit_leaves_callers_state_usable():
    ds, model, tx, state = _setup()
    _fit(ds, model, tx, state, epochs=1)
    assert int(state.step) == 0  # donation consumed a copy, not the caller's buffers
    _fit(ds, model, tx, state, epochs=1)


def test_early_stopping_stops_and_restores_best():
    ds, model, tx, state = _setup()
    (xt, yt), val = data.validation_split(*ds.train, 0.2, seed=0)
    # a large constant learning rate makes val loss bounce; patience 1 stops early
    tx = optim.make_optimizer("sgd", learning_rate=2.0)
    state = train.create_state(model, tx, ds.input_shape, seed=0)
    es = train.EarlyStopping("val/loss", patience=1)
    res = train.fit(
        state,
        train.make_train_step(model, tx),
        train.make_eval_step(model),
        (xt, yt),
        eval_data={"val": val},
        epochs=40,
        batch_size=64,
        early_stopping=es,
        progress=False,
    )
    vals = [h["val/loss"] for h in res.history]
    assert res.stopped_early and len(vals) < 40
    assert res.best_epoch == int(np.argmin(vals)) + 1 and res.best_value == min(vals)
    assert len(vals) == res.best_epoch + 1  # stopped right after the first non-improvement
    restored = train.evaluate(jax.jit(train.make_eval_step(model)), res.state, *val)
    assert restored["loss"] == pytest.approx(min(vals), rel=1e-5)


def test_early_stopping_needs_its_eval_set():
    ds, model, tx, state = _setup()
    with pytest.raises(ValueError, match=r"monitors 'val/accuracy' but eval_data has no 'val'"):
        _fit(
            ds,
            model,
            tx,
            state,
            eval_data={"test": ds.test},
            early_stopping=train.EarlyStopping("val/accuracy"),
        )
    with pytest.raises(ValueError, match="not measured"):
        _fit(
            ds,
            model,
            tx,
            state,
            eval_data={"val": ds.test},
            early_stopping=train.EarlyStopping("val/f1"),
        )
    with pytest.raises(ValueError, match="monitor must look like"):
        train.EarlyStopping("accuracy")


def test_metrics_jsonl(tmp_path):
    import json

    ds, model, tx, state = _setup()
    path = tmp_path / "m.jsonl"
    _fit(ds, model, tx, state, epochs=2, eval_data={"test": ds.test}, metrics_path=path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and "test/accuracy" in lines[0]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda x, y: (x.reshape(len(x), -1), y), r"per-example shape \(64,\).*\(8, 8, 1\)"),
        (lambda x, y: (x, y + 5), r"labels must lie in \[0, 10\).*got labels in \[5, 14\]"),
        (
            lambda x, y: (np.where(np.arange(len(x))[:, None, None, None] == 3, np.nan, x), y),
            "NaN or Inf values .*first in example 3",
        ),
        (lambda x, y: (x[:0], y[:0]), "empty"),
    ],
)
def test_fit_rejects_bad_data(mutate, match):
    ds, model, tx, state = _setup()
    with pytest.raises(ValueError, match=match):
        train.fit(
            state,
            train.make_train_step(model, tx),
            train.make_eval_step(model),
            mutate(*ds.train),
            epochs=1,
            batch_size=32,
            progress=False,
        )


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(batch_size=0), "batch_size must be a positive integer; got 0"),
        (dict(batch_size=-4), "got -4"),
        (dict(epochs=0), "epochs must be a positive integer; got 0"),
        (dict(batch_size=10_000), "batch_size 10000 is larger than the 1437 training examples"),
        (dict(steps_per_call=0), "steps_per_call must be a positive integer; got 0"),
        (dict(steps_per_call="auto"), "steps_per_call must be a positive integer; got 'auto'"),
        (dict(kernels="fast"), "Unknown kernels 'fast'"),
    ],
)
def test_fit_rejects_bad_hyperparameters(kw, match):
    ds, model, tx, state = _setup()
    with pytest.raises(ValueError, match=match):
        _fit(ds, model, tx, state, **kw)


def test_step_checks_batch_shape_at_trace_time():
    ds, model, tx, state = _setup()
    step = jax.jit(train.make_train_step(model, tx))
    with pytest.raises(ValueError, match=r"examples of shape \(64,\).*built for.*\(8, 8, 1\)"):
        step(state, {"x": jnp.zeros((4, 64)), "y": jnp.zeros(4, jnp.int32)})
    with pytest.raises(ValueError, match='keys "x", "y"'):
        step(state, {"inputs": jnp.zeros((4, 8, 8, 1))})


def test_create_state_errors():
    model = models.get_model("lenet5", 10)
    tx = optim.make_optimizer("adam")
    with pytest.raises(
        ValueError, match=r"Could not build LeNet5 \(.*\) for inputs of shape \(8, 8, 1\)"
    ):
        train.create_state(model, tx, (8, 8, 1))
    with pytest.raises(ValueError, match="input_shape must be a tuple of ints"):
        train.create_state(model, tx, 28)


def test_nan_loss_stops_with_clear_error():
    ds, model, tx, state = _setup()
    tx = optim.make_optimizer("sgd", learning_rate=1e12)
    state = train.create_state(model, tx, ds.input_shape)
    with pytest.raises(
        FloatingPointError, match=r"Non-finite loss or gradient at step \d+ \(epoch"
    ):
        _fit(ds, model, tx, state, epochs=5)


def test_predict_matches_eval_accuracy():
    ds, model, tx, state = _setup()
    res = _fit(ds, model, tx, state, epochs=2, eval_data={"test": ds.test})
    logits = train.predict(model, res.state, ds.x_test, batch_size=100)
    assert logits.shape == (len(ds.x_test), 10)
    acc = float((logits.argmax(-1) == ds.y_test).mean())
    assert acc == pytest.approx(res.history[-1]["test/accuracy"])


def test_per_step_labels_count_every_position():
    """A language model: labels (B, T); the loss is the mean over the unmasked positions
    and the metrics count positions."""
    import optax

    model = models.get_model("lm", 11, d_model=16, num_heads=2, mlp_dim=32, max_len=6)
    tx = optax.sgd(0.0)  # no update: compare the loss with a hand computation
    state = train.create_state(model, tx, (6,), input_dtype="int32")
    assert state.output_shape == (6, 11) and state.input_dtype == "int32"
    x = jax.random.randint(jax.random.key(0), (4, 6), 0, 11)
    y = jax.random.randint(jax.random.key(1), (4, 6), 0, 11)
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    _, m = jax.jit(train.make_train_step(model, tx))(state, {"x": x, "y": y, "mask": mask})
    logits = model.apply({"params": state.params}, x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)[:3]
    assert int(m["count"]) == 18
    np.testing.assert_allclose(float(m["loss_sum"]) / 18, float(ce.mean()), rtol=1e-5)
    hits = (jnp.argmax(logits, -1) == y)[:3]
    assert int(m["correct"]) == int(hits.sum())


def test_fit_checks_sequence_labels_and_token_inputs():
    model = models.get_model("lm", 11, d_model=16, num_heads=2, mlp_dim=32, max_len=6)
    tx = optim.make_optimizer("adam", learning_rate=1e-3)
    state = train.create_state(model, tx, (6,), input_dtype="int32")
    step, ev = train.make_train_step(model, tx), train.make_eval_step(model)
    x = np.random.default_rng(0).integers(0, 11, (64, 6))
    kw = {"epochs": 1, "batch_size": 32, "progress": False, "strategy": "single"}
    res = train.fit(state, step, ev, (x, x), **kw)
    assert res.history[0]["train/count"] == 64 * 6
    with pytest.raises(ValueError, match=r"integer labels of shape \(64, 6\); got shape \(64,\)"):
        train.fit(state, step, ev, (x, x[:, 0]), **kw)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 11\)"):
        train.fit(state, step, ev, (x, x + 5), **kw)
    with pytest.raises(ValueError, match="integer token ids"):
        train.fit(state, step, ev, (x.astype(np.float32), x), **kw)


def test_steps_per_call_does_not_change_the_result(tmp_path):
    """fit runs many steps per compiled call (`make_train_loop`); however an epoch is cut
    into calls (here 22 steps per epoch: 1 each, 5 + a remainder of 2, 32 = the whole
    epoch, and 5 cut again at checkpoints every 3 steps) the result is bitwise the same."""
    ds, model, tx, state = _setup("mlp", widths=(32, 16), dropout=0.2, batch_norm=True)
    runs = {k: _fit(ds, model, tx, state, epochs=2, steps_per_call=k) for k in (1, 5, 32)}
    runs["ckpt"] = _fit(
        ds,
        model,
        tx,
        state,
        epochs=2,
        steps_per_call=5,
        checkpoint_dir=tmp_path,
        checkpoint_every=3,
    )
    assert CheckpointManager(tmp_path).steps()[-1] == 2 * 22
    for k in (5, 32, "ckpt"):
        chex.assert_trees_all_equal(runs[1].state, runs[k].state)
        assert runs[1].history[-1]["train/loss"] == runs[k].history[-1]["train/loss"]
    assert int(runs[5].state.step) == 2 * (len(ds.x_train) // 64)


def test_fit_loop_matches_stepping_by_hand():
    """The compiled loop (gather, step, metric sums in one call) trains as calling the
    jitted step on each batch does, to float rounding (XLA fuses the loop body on its
    own), with the same epoch metrics."""
    ds, model, tx, state = _setup()
    res = _fit(ds, model, tx, state, epochs=2, steps_per_call=7)
    step = jax.jit(train.make_train_step(model, tx))
    manual, sums = state, None
    for epoch in range(2):
        sums = None
        for batch in data.batches(*ds.train, 64, seed=0, epoch=epoch):
            manual, m = step(manual, batch)
            sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
    chex.assert_trees_all_close(res.state.params, manual.params, atol=1e-5, rtol=1e-5)
    assert res.history[-1]["train/count"] == int(sums["count"])
    assert res.history[-1]["train/accuracy"] == pytest.approx(
        int(sums["correct"]) / int(sums["count"]), abs=2 / int(sums["count"])
    )


def test_zero_metrics_is_the_identity_of_add():
    ds, model, tx, state = _setup()
    step = train.make_train_step(model, tx)
    batch = next(data.batches(*ds.train, 32))
    _, m = jax.jit(step)(state, batch)
    zero = train.zero_metrics(step, state, batch)
    chex.assert_trees_all_equal(metrics.add(zero, m), m)


def _batch(ds, n=64):
    return next(data.batches(*ds.train, n, shuffle=False))


def test_conv_steps_run_without_a_loop_and_match_the_looped_form():
    """XLA:CPU is slow at lax's convolution gradients inside loops, so steps_per_call=1
    calls the step with no loop around it; both forms of `make_train_loop` train alike."""
    ds, model, tx, state = _setup("cnn", channels=(4,), dense=(16,), batch_norm=True)
    batch = _batch(ds)
    step = train.make_train_step(model, tx)
    idx, mask = data.epoch_indices(len(ds.x_train), 64)
    zero = train.zero_metrics(step, state, batch)
    x, y = (jnp.asarray(a) for a in ds.train)
    looped = jax.jit(train.make_train_loop(step))
    single = jax.jit(train.make_train_loop(step, loop=False))
    s_loop, m_loop = looped(state, zero, x, y, idx, mask, 0, 3)
    s_one, m_one = state, zero
    for i in range(3):
        s_one, m_one = single(s_one, m_one, x, y, idx, mask, i, i + 1)
    chex.assert_trees_all_close(s_loop.params, s_one.params, atol=1e-5, rtol=1e-5)
    assert int(m_loop["count"]) == int(m_one["count"]) == 3 * 64
    res = _fit(ds, model, tx, state, epochs=1, steps_per_call=1)  # one step a call, no loop
    assert int(res.state.step) == len(ds.x_train) // 64
    looped_fit = _fit(ds, model, tx, state, epochs=1, steps_per_call=5)
    chex.assert_trees_all_close(res.state.params, looped_fit.state.params, atol=1e-5, rtol=1e-5)


def test_bfloat16_mixed_precision_keeps_float32_state_and_trains():
    ds, model, tx, state = _setup("cnn", channels=(8,), dense=(32,), batch_norm=True)
    batch = _batch(ds)
    step16 = train.make_train_step(model, tx, compute_dtype="bfloat16")
    jaxpr = str(jax.make_jaxpr(step16)(state, batch))
    assert "bf16" in jaxpr and "conv_general_dilated" in jaxpr  # the model runs in bf16
    s16, m16 = jax.jit(step16)(state, batch)
    for tree in (s16.params, s16.batch_stats, s16.opt_state):
        assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(tree) if a.dtype.kind == "f")
    # One SGD step (update = lr * gradient): the same loss and gradients to bfloat16
    # rounding (8 bits of mantissa, ~0.4%), but not bitwise.
    sgd = optax.sgd(1.0)
    s0 = train.create_state(model, sgd, ds.input_shape, seed=0)
    g32 = jax.jit(train.make_train_step(model, sgd))(s0, batch)
    g16 = jax.jit(train.make_train_step(model, sgd, compute_dtype="bfloat16"))(s0, batch)
    assert float(g16[1]["loss_sum"]) == pytest.approx(float(g32[1]["loss_sum"]), rel=2e-2)
    for a, b, p0 in zip(
        *(jax.tree.leaves(t[0].params) for t in (g16, g32)), jax.tree.leaves(s0.params), strict=True
    ):
        d16, d32 = np.asarray(a - p0).ravel(), np.asarray(b - p0).ravel()
        assert np.linalg.norm(d16 - d32) <= 0.05 * np.linalg.norm(d32)
        assert not np.array_equal(d16, d32)
    res = train.fit(
        state,
        step16,
        train.make_eval_step(model, compute_dtype="bfloat16"),
        ds.train,
        epochs=4,
        batch_size=64,
        eval_data={"test": ds.test},
        progress=False,
    )
    assert res.history[-1]["test/accuracy"] > 0.9


def test_bad_compute_dtype_is_rejected():
    ds, model, tx, state = _setup()
    with pytest.raises(ValueError, match="compute_dtype must be one of .* got 'float16'"):
        train.make_train_step(model, tx, compute_dtype="float16")
    with pytest.raises(ValueError, match="compute_dtype"):
        train.make_eval_step(model, compute_dtype="int8")


def test_targets_are_inferred_from_the_values_and_can_be_named():
    """fit checks y as class labels unless told otherwise or y holds real values that are
    not all integers; integer class ids stored as floats stay labels (range-checked)."""
    assert train._infer_targets((None, np.array([0, 2, 1]))) == "labels"
    assert train._infer_targets((None, np.array([0.0, 2.0, 1.0]))) == "labels"
    assert train._infer_targets((None, np.array([0.5, 2.0]))) == "values"
    ds = data.load("digits")
    model = models.get_model("mlp", 1, widths=(8,))
    tx = optim.make_optimizer("adam", learning_rate=1e-3)
    state = train.create_state(model, tx, ds.input_shape, seed=0)
    step, ev = train.make_train_step(model, tx, loss="mse"), train.make_eval_step(model, loss="mse")
    x = ds.x_train
    y_real = (ds.y_train[:, None] / 3.0).astype(np.float32)  # regression targets
    res = train.fit(state, step, ev, (x, y_real), epochs=1, batch_size=64, progress=False)
    assert np.isfinite(res.history[-1]["train/loss"])
    y_int = ds.y_train[:, None].astype(np.float32)  # integer-valued regression targets
    with pytest.raises(ValueError, match=r"targets='values'"):
        train.fit(state, step, ev, (x, y_int), epochs=1, batch_size=64, progress=False)
    res = train.fit(
        state, step, ev, (x, y_int), epochs=1, batch_size=64, progress=False, targets="values"
    )
    assert np.isfinite(res.history[-1]["train/loss"])


# ---------------------------------------------------------------- train_seeds (vmap)


def _iris_mlp():
    ds = data.load("iris")
    return ds, models.get_model("mlp", ds.num_classes, widths=(16,))


def test_train_seeds_runs_each_seed_as_it_would_run_alone():
    ds, model = _iris_mlp()
    cfg = train.FitConfig(epochs=3, batch_size=32)
    both = train.train_seeds(model, ds.train, cfg, [0, 1], eval_data={"test": ds.test})
    alone = train.train_seeds(model, ds.train, cfg, [1], eval_data={"test": ds.test})
    chex.assert_trees_all_close(both.state(1).params, alone.state(0).params, rtol=1e-5, atol=1e-6)
    assert [h["epoch"] for h in both.history] == [0, 1, 2, 3]
    assert both.history[-1]["test/accuracy"].shape == (2,)
    assert both.history[-1]["train/nonfinite_steps"].tolist() == [0, 0]
    assert both.seeds == [0, 1] and both.compile_time_s > 0 and both.run_time_s > 0
    # Different seeds, different runs.
    assert not np.allclose(
        both.state(0).params["head"]["kernel"], both.state(1).params["head"]["kernel"]
    )
    logits = both.predict(model, ds.x_test, batch_size=7)
    assert logits.shape == (2, len(ds.x_test), ds.num_classes)
    acc = (logits.argmax(-1) == ds.y_test).mean(1)
    np.testing.assert_allclose(acc, both.history[-1]["test/accuracy"], atol=1e-6)


def test_train_seeds_starts_from_create_state():
    ds, model = _iris_mlp()
    cfg = train.FitConfig(epochs=1, batch_size=32)
    res = train.train_seeds(model, ds.train, cfg, [3], eval_data={"test": ds.test})
    tx = optim.make_optimizer(cfg.optimizer, 1)
    state = train.create_state(model, tx, ds.input_shape, seed=3)
    logits = model.apply({"params": state.params}, ds.x_test)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, ds.y_test).mean()
    np.testing.assert_allclose(res.history[0]["test/loss"][0], loss, rtol=1e-5)


def test_train_seeds_learning_rates_match_separate_runs():
    ds, model = _iris_mlp()
    cfg = train.FitConfig(epochs=2, batch_size=32)
    grid = train.train_seeds(model, ds.train, cfg, [0, 1], learning_rates=[1e-3, 1e-2])
    assert grid.learning_rates == [1e-3, 1e-3, 1e-2, 1e-2] and grid.seeds == [0, 1, 0, 1]
    cfg_fast = train.FitConfig(
        epochs=2,
        batch_size=32,
        optimizer=optim.OptimizerConfig(learning_rate=1e-2, schedule="warmup_cosine"),
    )
    fast = train.train_seeds(model, ds.train, cfg_fast, [0, 1])
    for i in (0, 1):
        chex.assert_trees_all_close(
            grid.state(2 + i).params, fast.state(i).params, rtol=1e-5, atol=1e-6
        )


def test_train_seeds_params_replace_the_named_modules_only():
    ds, model = _iris_mlp()
    cfg = train.FitConfig(epochs=1, batch_size=32)
    donor = train.create_state(model, optax.identity(), ds.input_shape, seed=9).params
    # A rate of 1e-12 leaves every run where it started.
    tiny = train.train_seeds(
        model, ds.train, cfg, [0, 1], params={"dense0": donor["dense0"]}, learning_rates=[1e-12]
    )
    for i in (0, 1):
        np.testing.assert_allclose(
            tiny.state(i).params["dense0"]["kernel"], donor["dense0"]["kernel"], atol=1e-7
        )
    own = [train.create_state(model, optax.identity(), ds.input_shape, seed=s) for s in (0, 1)]
    np.testing.assert_allclose(
        tiny.state(1).params["head"]["kernel"], own[1].params["head"]["kernel"], atol=1e-7
    )
    with pytest.raises(ValueError, match="does not have"):
        train.train_seeds(model, ds.train, cfg, [0], params={"conv0": donor["dense0"]})


def test_train_seeds_per_seed_params_and_frozen_modules():
    ds, model = _iris_mlp()
    cfg = train.FitConfig(epochs=2, batch_size=32)
    donors = [
        train.create_state(model, optax.identity(), ds.input_shape, seed=s).params for s in (7, 8)
    ]
    stacked = jax.tree.map(lambda *a: np.stack(a), donors[0]["dense0"], donors[1]["dense0"])
    res = train.train_seeds(
        model,
        ds.train,
        cfg,
        [0, 1],
        params={"dense0": stacked},
        per_seed_params=True,
        frozen=["dense0"],
    )
    for i in (0, 1):  # each run kept its own donor's frozen layer, bit for bit
        chex.assert_trees_all_equal(res.state(i).params["dense0"], donors[i]["dense0"])
        own = train.create_state(model, optax.identity(), ds.input_shape, seed=i).params
        assert not np.allclose(res.state(i).params["head"]["kernel"], own["head"]["kernel"])
    # The same runs one at a time, with train_seeds' own single-seed path.
    alone = train.train_seeds(
        model, ds.train, cfg, [1], params={"dense0": donors[1]["dense0"]}, frozen=["dense0"]
    )
    chex.assert_trees_all_close(res.state(1).params, alone.state(0).params, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="after a leading axis of 2 seeds"):
        train.train_seeds(
            model,
            ds.train,
            cfg,
            [0, 1],
            params={"dense0": donors[0]["dense0"]},
            per_seed_params=True,
        )
    with pytest.raises(ValueError, match="params\\['dense0'\\] of shapes"):
        train.train_seeds(model, ds.train, cfg, [0], params={"dense0": donors[0]["head"]})
    with pytest.raises(ValueError, match="does not have"):
        train.train_seeds(model, ds.train, cfg, [0], frozen=["conv9"])


@pytest.mark.parametrize(
    "seeds, rates, match",
    [([1, 1], None, "distinct seeds"), ([], None, "distinct seeds"), ([0], [0.0], "positive")],
)
def test_train_seeds_rejects_bad_input(seeds, rates, match):
    ds, model = _iris_mlp()
    with pytest.raises(ValueError, match=match):
        train.train_seeds(model, ds.train, train.FitConfig(epochs=1), seeds, learning_rates=rates)


def test_train_seeds_per_seed_data_equals_separate_runs():
    ds, model = _iris_mlp()
    x, y = ds.train
    halves = [(x[:48], y[:48]), (x[48:96], y[48:96])]
    cfg = train.FitConfig(epochs=2, batch_size=16)
    both = train.train_seeds(
        model,
        (np.stack([h[0] for h in halves]), np.stack([h[1] for h in halves])),
        cfg,
        [0, 1],
        per_seed_data=True,
        learning_rates=[1e-3, 1e-2],
    )
    for i, (seed, half) in enumerate(((0, halves[0]), (1, halves[1]))):
        alone = train.train_seeds(model, half, cfg, [seed], learning_rates=[1e-2])
        chex.assert_trees_all_close(
            both.state(2 + i).params, alone.state(0).params, rtol=1e-5, atol=1e-6
        )
    with pytest.raises(ValueError, match="one training set per seed"):
        train.train_seeds(model, ds.train, cfg, [0, 1, 2], per_seed_data=True)


def test_train_seeds_sequential_runs_equal_vmapped_ones():
    ds, model = _iris_mlp()
    cfg = train.FitConfig(epochs=2, batch_size=32, eval_every=1)
    kw = dict(eval_data={"test": ds.test}, learning_rates=[1e-3, 1e-2])
    vm = train.train_seeds(model, ds.train, cfg, [0, 1], **kw)
    sq = train.train_seeds(model, ds.train, cfg, [0, 1], runs="sequential", **kw)
    chex.assert_trees_all_close(vm.states.params, sq.states.params, rtol=1e-5, atol=1e-6)
    for a, b in zip(vm.history, sq.history, strict=True):
        np.testing.assert_allclose(a["test/loss"], b["test/loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="runs must be"):
        train.train_seeds(model, ds.train, cfg, [0], runs="pmap")


def test_train_seeds_needs_epochs_a_multiple_of_eval_every():
    ds, model = _iris_mlp()
    with pytest.raises(ValueError, match="epochs=5, eval_every=2"):
        train.train_seeds(model, ds.train, train.FitConfig(epochs=5, eval_every=2), [0])


def test_fit_records_the_evaluation_time_apart():
    ds, model = _iris_mlp()
    res = train.train(
        model, ds.train, train.FitConfig(epochs=2), eval_data={"test": ds.test}, progress=False
    )
    for h in res.history:
        assert 0 < h["eval_time_s"] < h["epoch_time_s"]
