import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dl.optim import OPTIMIZERS, SCHEDULES, OptimizerConfig, make_optimizer, make_schedule


def _minimise(tx, steps=200):
    params = {"w": jnp.array([[3.0, -2.0]]), "b": jnp.array([1.0])}
    loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum((p["b"] - 0.5) ** 2)  # noqa: E731
    state = tx.init(params)
    start = loss(params)
    for _ in range(steps):
        g = jax.grad(loss)(params)
        upd, state = tx.update(g, state, params)
        params = optax.apply_updates(params, upd)
    return float(start), float(loss(params))


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_optimizer_and_schedule_minimises(name, schedule):
    lr = 0.05 if name in ("sgd", "momentum", "nesterov") else 0.1
    tx = make_optimizer(
        name, 200, learning_rate=lr, schedule=schedule, clip_norm=10.0, weight_decay=1e-4
    )
    start, end = _minimise(tx)
    assert end < 0.05 * start


def test_schedules_shape():
    cfg = OptimizerConfig(learning_rate=1.0, schedule="warmup_cosine", warmup_steps=10)
    s = make_schedule(cfg, 100)
    assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(1.0) and float(s(100)) == 0.0
    st = make_schedule(OptimizerConfig(learning_rate=1.0, schedule="step"), 100)
    assert float(st(49)) == 1.0 and float(st(60)) == pytest.approx(0.1)
    assert float(st(80)) == pytest.approx(0.01)
    cos = make_schedule(OptimizerConfig(learning_rate=1.0, schedule="cosine"), 100)
    assert float(cos(50)) == pytest.approx(0.5)


def test_weight_decay_only_on_kernels():
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    for name in ("sgd", "adamw"):
        tx = make_optimizer(name, learning_rate=0.1, weight_decay=0.5)
        upd, _ = tx.update(zeros, tx.init(params), params)
        assert float(jnp.abs(upd["kernel"]).sum()) > 0
        np.testing.assert_array_equal(upd["bias"], 0.0)


def test_clipping_bounds_the_update():
    tx = make_optimizer("sgd", learning_rate=1.0, clip_norm=1.0)
    g = {"w": jnp.full((4,), 100.0)}
    upd, _ = tx.update(g, tx.init(g))
    assert float(optax.tree.norm(upd)) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(learning_rate=-0.1), "learning_rate must be a positive finite number; got -0.1"),
        (dict(learning_rate=0.0), "got 0.0"),
        (dict(learning_rate=float("nan")), "learning_rate must be a finite number; got nan"),
        (dict(weight_decay="a"), "weight_decay must be a finite number; got 'a'"),
        (dict(weight_decay=-1.0), "weight_decay must be >= 0; got -1.0"),
        (dict(clip_norm=0.0), "clip_norm must be > 0"),
        (dict(schedule="linear"), r"Unknown schedule 'linear'. Valid choices: constant"),
        (dict(momentum=1.5), "momentum must be in"),
        (dict(betas=0.9), r"Unknown optimizer option\(s\) \['betas'\]"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer("adam", 100, **kwargs)


def test_unknown_optimizer_and_missing_total_steps():
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adm'.*Did you mean 'adam'"):
        make_optimizer("adm")
    with pytest.raises(ValueError, match="needs total_steps"):
        make_optimizer("adam", schedule="cosine")
