"""dl around a researcher's own code (issue 31): modules without dl's `train` argument,
own random streams, callable losses, own steps and the metrics contract."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_package import _readme_python_blocks  # tests/test_package.py

from dl import data, models, optim, train


def test_the_readme_block_with_ones_own_module_and_loss():
    """The README's second to fourth blocks, run after its first (which they build on):
    the Flax tutorial's CNN with a callable loss, an NNX module, and the NNX module on
    streamed memory-mapped data reach what dl's own digits recipes reach."""
    first, second, nnx_block, stream_block = _readme_python_blocks()[:4]
    ns: dict = {}
    exec(compile(first, "README.md", "exec"), ns)  # noqa: S102
    exec(compile(second, "README.md", "exec"), ns)  # noqa: S102
    assert ns["result"].history[-1]["test/accuracy"] > 0.95
    assert "nnx.Module" in nnx_block  # the README's NNX block, the same way
    exec(compile(nnx_block, "README.md", "exec"), ns)  # noqa: S102
    # The same MLP as the first block's Linen one, which reaches 0.94 here.
    assert ns["result"].history[-1]["test/accuracy"] > 0.9
    assert "array_source" in stream_block  # the README's streamed data, the same way
    exec(compile(stream_block, "README.md", "exec"), ns)  # noqa: S102
    assert ns["result"].history[-1]["test/accuracy"] > 0.9


class _Plain(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


class _Training(nn.Module):
    @nn.compact
    def __call__(self, x, training: bool = False):
        return nn.Dense(3)(x.reshape((x.shape[0], -1))) * (2.0 if training else 1.0)


class _Deterministic(nn.Module):
    """Dropout plus a random stream of its own, "augment", in training only."""

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = nn.relu(nn.Dense(64)(x.reshape((x.shape[0], -1))))
        x = nn.Dropout(0.2, deterministic=deterministic)(x)
        if not deterministic:
            x = x + 0.01 * jax.random.normal(self.make_rng("augment"), x.shape)
        return nn.Dense(10)(x)


class _Kwargs(nn.Module):
    @nn.compact
    def __call__(self, x, **kwargs):
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


class _DropoutWithoutFlag(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.Dropout(0.5)(x.reshape((x.shape[0], -1))))


def test_mode_kwargs_follow_each_modules_signature():
    assert models.mode_kwargs(models.get_model("mlp", 3), True) == {"train": True}
    assert models.mode_kwargs(_Training(), True) == {"training": True}
    assert models.mode_kwargs(_Deterministic(), True) == {"deterministic": False}
    assert models.mode_kwargs(_Deterministic(), False) == {"deterministic": True}
    assert models.mode_kwargs(_Plain(), True) == {}
    assert models.mode_kwargs(_Kwargs(), False) == {"train": False}


def test_training_mode_reaches_a_training_argument():
    tx = optax.sgd(0.0)
    state = train.create_state(_Training(), tx, (4,))
    step = train.make_train_step(_Training(), tx, loss="mse")
    ev = train.make_eval_step(_Training(), loss="mse")
    batch = {"x": jnp.ones((2, 4)), "y": jnp.zeros((2, 3))}
    out = _Training().apply({"params": state.params}, batch["x"])
    _, m = step(state, batch)
    # Two identical examples, targets 0: training doubles the outputs, evaluation not.
    np.testing.assert_allclose(m["loss_sum"], 2 * jnp.mean((2 * out[0]) ** 2), rtol=1e-6)
    np.testing.assert_allclose(ev(state, batch)["loss_sum"], 2 * jnp.mean(out[0] ** 2), rtol=1e-6)


def test_a_module_with_its_own_random_stream_trains():
    ds = data.load("digits")
    model, rngs = _Deterministic(), ("dropout", "augment")
    tx = optim.make_optimizer("adam", learning_rate=3e-3)
    state = train.create_state(model, tx, ds.input_shape, rngs=rngs)
    step, ev = train.make_steps(model, tx, rngs=rngs)
    res = train.fit(state, step, ev, ds.train, eval_data={"test": ds.test}, epochs=10,
                    batch_size=32, progress=False)  # fmt: skip
    assert res.history[-1]["test/accuracy"] > 0.9
    # Without the stream named, Flax's own error surfaces in the step.
    with pytest.raises(Exception, match="augment"):
        jax.eval_shape(train.make_train_step(model, tx), state, {"x": ds.x_train[:4],
                       "y": ds.y_train[:4]})  # fmt: skip
    with pytest.raises(ValueError, match="rngs must be a sequence of stream names"):
        train.make_train_step(model, tx, rngs="augment")


def test_a_module_without_a_flag_that_needs_one_is_explained():
    with pytest.raises(ValueError, match="takes none of train, training, deterministic"):
        train.create_state(_DropoutWithoutFlag(), optax.sgd(0.1), (4,))


def test_a_callable_loss_is_the_named_one():
    ds = data.load("digits")
    model = models.get_model("mlp", 10, widths=(16,))
    tx = optax.sgd(0.1)
    state = train.create_state(model, tx, ds.input_shape)
    batch = {"x": ds.x_train[:32], "y": ds.y_train[:32]}

    def my_ce(logits, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits, y)

    named = train.make_train_step(model, tx)(state, batch)
    mine = train.make_train_step(model, tx, loss=my_ce)(state, batch)
    np.testing.assert_allclose(mine[1]["loss_sum"], named[1]["loss_sum"], rtol=1e-6)
    assert int(mine[1]["correct"]) == int(named[1]["correct"])
    jax.tree.map(np.testing.assert_array_equal, mine[0].params, named[0].params)
    ev = train.make_eval_step(model, loss=my_ce)(state, batch)
    assert int(ev["count"]) == 32 and "correct" in ev

    def mean_loss(logits, y):
        return my_ce(logits, y).mean()

    with pytest.raises(ValueError, match="must return one value per example"):
        train.make_train_step(model, tx, loss=mean_loss)(state, batch)
    with pytest.raises(ValueError, match="Unknown loss 'hinge'"):
        train.make_train_step(model, tx, loss="hinge")


def test_train_with_a_callable_loss_in_the_config_equals_the_named_loss():
    ds = data.load("digits")
    model = models.get_model("mlp", 10, widths=(64,))

    def my_ce(logits, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits, y)

    runs = [
        train.train(model, ds.train, train.FitConfig(epochs=3, loss=loss),
                    eval_data={"test": ds.test}, progress=False)
        for loss in ("cross_entropy", my_ce)
    ]  # fmt: skip
    named, mine = (r.history[-1] for r in runs)
    assert mine["test/accuracy"] == named["test/accuracy"]
    np.testing.assert_allclose(mine["train/loss"], named["train/loss"], rtol=1e-6)


def test_a_step_returning_means_is_refused_with_the_contract():
    ds = data.load("digits")
    model = models.get_model("mlp", 10, widths=(16,))
    tx = optax.sgd(0.1)
    state = train.create_state(model, tx, ds.input_shape)

    def mean_step(state, batch):
        return state, {"loss": jnp.float32(0.0), "accuracy": jnp.float32(1.0)}

    with pytest.raises(
        ValueError, match=r"(?s)lack a 'count' or 'loss_sum'.*means per batch.*SUMS over the batch"
    ):
        train.fit(state, mean_step, train.make_eval_step(model), ds.train, epochs=1,
                  batch_size=32, progress=False)  # fmt: skip


def test_an_nnx_module_trains_checkpoints_and_resumes_bitwise(tmp_path):
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(64, 64, rngs=rngs)
            self.bn = nnx.BatchNorm(64, rngs=rngs)
            self.do = nnx.Dropout(0.3, rngs=rngs)
            self.l2 = nnx.Linear(64, 10, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.bn(self.l1(x.reshape((x.shape[0], -1)))))
            return self.l2(self.do(x))

    ds = data.load("digits")
    net = Net(nnx.Rngs(0))
    tx = optim.make_optimizer("adam", learning_rate=3e-3)
    state = train.create_state(net, tx, ds.input_shape, seed=1)
    assert set(state.params) == {"l1", "bn", "l2"} and set(state.batch_stats) == {"bn"}
    step, ev = train.make_steps(net, tx)
    batch = {"x": ds.x_train[:64], "y": ds.y_train[:64]}
    # Training mode: dropout on (the step's own key) and batch statistics updated.
    new, _ = jax.jit(step)(state, batch)
    assert not np.allclose(new.batch_stats["bn"]["mean"], state.batch_stats["bn"]["mean"])
    a = train.make_train_step(net, tx)(state.replace(rng=jax.random.key(5)), batch)[1]
    b = train.make_train_step(net, tx)(state.replace(rng=jax.random.key(6)), batch)[1]
    assert float(a["loss_sum"]) != float(b["loss_sum"])
    # Evaluation: deterministic.
    assert float(ev(state, batch)["loss_sum"]) == float(ev(state, batch)["loss_sum"])

    def run(folder, epochs, resume=False):
        kw = dict(eval_data={"test": ds.test}, batch_size=64, progress=False)
        return train.fit(
            state, step, ev, ds.train, epochs=epochs, checkpoint_dir=folder, resume=resume, **kw
        )

    whole = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4, resume=True)
    jax.tree.map(np.testing.assert_array_equal, resumed.state.params, whole.state.params)
    assert whole.history[-1]["test/accuracy"] > 0.9


class _TwoHeads(nn.Module):
    """A digit classifier and an odd/even logit on one trunk; a tuple when `as_tuple`."""

    as_tuple: bool = False

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(32)(x.reshape((x.shape[0], -1))))
        digit, odd = nn.Dense(10, name="digit")(h), nn.Dense(1, name="odd")(h)[:, 0]
        return (digit, odd) if self.as_tuple else {"digit": digit, "odd": odd}


def _two_targets(y, as_tuple=False):
    odd = (y % 2).astype(np.float32)
    return (y, odd) if as_tuple else {"digit": y, "odd": odd}


def test_a_model_with_two_outputs_trains_and_reports_each():
    """Per-output metrics are what the predictions give; the loss is the weighted sum."""
    ds = data.load("digits")
    model, tx = _TwoHeads(), optax.adam(1e-3)
    state = train.create_state(model, tx, ds.input_shape)
    assert state.output_shapes == (("digit", (10,)), ("odd", ()))
    loss = {"digit": "cross_entropy", "odd": ("binary_cross_entropy", 0.5)}
    step, eval_step = train.make_steps(model, tx, loss=loss)
    test = (ds.x_test, _two_targets(ds.y_test))
    res = train.fit(state, step, eval_step, (ds.x_train, _two_targets(ds.y_train)), epochs=8,
                    batch_size=64, eval_data={"test": test}, progress=False)  # fmt: skip
    last = res.history[-1]
    out = train.predict(model, res.state, ds.x_test)
    odd = _two_targets(ds.y_test)["odd"]
    ce = optax.softmax_cross_entropy_with_integer_labels(out["digit"], ds.y_test).mean()
    bce = optax.sigmoid_binary_cross_entropy(out["odd"], odd).mean()
    np.testing.assert_allclose(last["test/digit_loss"], ce, rtol=1e-4)
    np.testing.assert_allclose(last["test/odd_loss"], bce, rtol=1e-4)
    np.testing.assert_allclose(last["test/loss"], ce + 0.5 * bce, rtol=1e-4)
    assert last["test/digit_accuracy"] == np.mean(out["digit"].argmax(1) == ds.y_test)
    assert last["test/odd_accuracy"] == np.mean((out["odd"] > 0) == (odd > 0.5))
    assert last["test/digit_accuracy"] > 0.5  # a check that it learned at all (chance: 0.1)


def test_an_output_weighted_zero_gets_no_gradient_and_tuples_work():
    ds = data.load("digits")
    model, tx = _TwoHeads(as_tuple=True), optax.sgd(0.1)
    state = train.create_state(model, tx, ds.input_shape)
    step = jax.jit(train.make_train_step(model, tx, loss=("cross_entropy", ("mse", 0.0))))
    y = _two_targets(ds.y_train[:64], as_tuple=True)
    new, metrics = step(state, {"x": jnp.asarray(ds.x_train[:64]), "y": y})
    same = jax.tree.map(np.array_equal, new.params["odd"], state.params["odd"])
    assert all(jax.tree.leaves(same))
    assert not np.array_equal(new.params["digit"]["kernel"], state.params["digit"]["kernel"])
    assert {"0_loss_sum", "0_correct", "1_loss_sum"} <= set(metrics)


def test_several_outputs_wrong_loss_or_targets_are_explained():
    ds = data.load("digits")
    model, tx = _TwoHeads(), optax.sgd(0.1)
    state = train.create_state(model, tx, ds.input_shape)
    batch = {"x": jnp.asarray(ds.x_train[:8]), "y": _two_targets(ds.y_train[:8])}
    with pytest.raises(ValueError, match=r"outputs are .*digit.*one loss.*per output"):
        train.make_train_step(model, tx, loss="cross_entropy")(state, batch)
    with pytest.raises(ValueError, match=r"names output 'parity'.*\['digit', 'odd'\]"):
        train.make_train_step(model, tx, loss={"digit": "cross_entropy", "parity": "mse"})(
            state, batch
        )
    with pytest.raises(ValueError, match=r"\(loss, weight\) pair.*dict or tuple"):
        train.make_train_step(model, tx, loss=("mse", 0.5))
    with pytest.raises(ValueError, match=r"weight must be finite and >= 0; got -1"):
        train.make_train_step(model, tx, loss={"digit": ("mse", -1)})
    step, eval_step = train.make_steps(model, tx, loss={"digit": "cross_entropy", "odd": "mse"})
    with pytest.raises(ValueError, match=r"y must be a dict with one target array per output"):
        train.fit(state, step, eval_step, ds.train, epochs=1, batch_size=32, progress=False)
    bad = _two_targets(ds.y_train)
    bad["digit"] = bad["digit"] + 5  # labels 5..14 for 10 classes
    with pytest.raises(ValueError, match=r"train y\['digit'\].*\[0, 10\)"):
        train.fit(state, step, eval_step, (ds.x_train, bad), epochs=1, batch_size=32,
                  progress=False)  # fmt: skip
