"""dl.parallel: single, sharded and pmap give the same training; N->M checkpoints; hosts.

conftest.py forces 8 CPU devices, so the multi-device paths run here for real.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from dl import models, optim, parallel, train
from dl.checkpoint import CheckpointManager

STRATEGIES = ("single", "sharded", "pmap")


def _leaves(state):
    return [np.asarray(jax.device_get(a)) for a in jax.tree.leaves(state.params)] + [
        np.asarray(jax.device_get(a)) for a in jax.tree.leaves(state.batch_stats)
    ]


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(_leaves(a), _leaves(b), strict=True))


def _setup(name, ds, **kw):
    model = models.get_model(name, ds.num_classes, **kw)
    tx = optim.make_optimizer("momentum", learning_rate=0.05, momentum=0.9)
    return model, tx, train.create_state(model, tx, ds.input_shape, seed=0)


def _for(strategy, model):
    """The model and the steps' pmap axis for `strategy` (explicit, as in Flax's examples)."""
    axis = parallel.DATA_AXIS if strategy == "pmap" else None
    if hasattr(model, "axis_name"):
        model = model.clone(axis_name=axis)
    return model, axis


def _fit(ds, model, tx, state, strategy, *, epochs=2, batch_size=64, **kw):
    model, axis = _for(strategy, model)
    return train.fit(
        state,
        train.make_train_step(model, tx, axis_name=axis),
        train.make_eval_step(model, axis_name=axis),
        (ds.x_train[:960], ds.y_train[:960]),
        epochs=epochs,
        batch_size=batch_size,
        eval_data={"test": (ds.x_test, ds.y_test)},
        progress=False,
        strategy=strategy,
        **kw,
    )


CASES = {
    "mlp": ("digits", "mlp", {"widths": (64, 32)}),
    "bn_cnn": ("mnist5k", "cnn", {"channels": (8, 16), "batch_norm": True, "dense": ()}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_single_sharded_pmap_give_the_same_training(case, digits, mnist5k):
    dataset, name, kw = CASES[case]
    ds = digits if dataset == "digits" else mnist5k
    model, tx, state = _setup(name, ds, **kw)
    # K = 15 steps. The float sums run in another order on 8 devices, so the states agree
    # to float32 rounding (~1e-6 here), not bitwise; the unsynchronised-BN control below
    # differs by ~6e-3 after the same steps.
    runs = {s: _fit(ds, model, tx, state, s, epochs=1) for s in STRATEGIES}
    assert runs["single"].num_devices == 1
    assert runs["sharded"].num_devices == runs["pmap"].num_devices == 8
    single = runs["single"]
    assert int(single.state.step) == 960 // 64
    if case == "bn_cnn":  # the running statistics moved, so BN really ran in training
        assert _max_diff(single.state, state) > 0.01
    for s in ("sharded", "pmap"):
        other = runs[s]
        assert int(other.state.step) == int(single.state.step)
        assert _max_diff(single.state, other.state) < 1e-5, s
        for a, b in zip(single.history, other.history, strict=True):
            assert a["train/count"] == b["train/count"] == 960
            assert a["test/count"] == b["test/count"] == len(ds.x_test)  # padded batch masked
            assert a["test/accuracy"] == b["test/accuracy"]  # exact integer sums
            assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)


class _LocalBN(nn.Module):
    """A CNN whose BatchNorm ignores the collective axis: per-device statistics."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(10)(nn.relu(x).mean(axis=(1, 2)))


def test_unsynchronised_batchnorm_under_pmap_differs(mnist5k):
    """The control for the test above: without the synchronisation, pmap's BN statistics
    are per-device and training diverges from the single-device run measurably."""
    model = _LocalBN()
    tx = optim.make_optimizer("momentum", learning_rate=0.05, momentum=0.9)
    state = train.create_state(model, tx, mnist5k.input_shape, seed=0)
    single = _fit(mnist5k, model, tx, state, "single", epochs=1)
    sharded = _fit(mnist5k, model, tx, state, "sharded", epochs=1)
    pmapped = _fit(mnist5k, model, tx, state, "pmap", epochs=1)
    assert _max_diff(single.state, sharded.state) < 2e-5  # jit shardings: global BN
    assert _max_diff(single.state, pmapped.state) > 1e-3


def test_step_on_a_padded_batch_is_exact_under_every_strategy(digits):
    """A last partial batch (padded, masked) whose real examples sit unevenly on the
    devices: the loss is still the mean over the real examples of the global batch."""
    model, tx, state = _setup("mlp", digits, widths=(32,))
    step = train.make_train_step(model, tx)
    x, y = digits.x_train[:45], digits.y_train[:45]  # 64-batch: 45 real, 19 padded
    out = {}
    for name in STRATEGIES:
        strategy = parallel.get_strategy(name)
        data_ = strategy.put_data(x, y)
        batch = next(strategy.batches(data_, 64, shuffle=False, remainder="pad"))
        placed = strategy.put_state(state)
        pstep = train.make_train_step(model, tx, axis_name=_for(name, model)[1])
        fn = strategy.compile_train_step(pstep, placed, batch, donate=False)
        new, metrics = fn(placed, batch)
        out[name] = (strategy.get_state(new), metrics)
    for name in ("sharded", "pmap"):
        assert _max_diff(out["single"][0], out[name][0]) < 1e-6
        assert int(out[name][1]["count"]) == 45
        assert int(out[name][1]["correct"]) == int(out["single"][1]["correct"])
    # The padded rows really do not count: training on the 45 rows alone agrees.
    alone = jax.jit(step)(state, {"x": jnp.asarray(x), "y": jnp.asarray(y)})[0]
    assert _max_diff(out["single"][0], alone) < 1e-6


def test_batch_that_does_not_divide_over_devices_is_a_clear_error(digits):
    model, tx, state = _setup("mlp", digits)
    for name in ("sharded", "pmap"):
        with pytest.raises(ValueError, match=r"batch_size 100 does not divide over the 8 dev"):
            _fit(digits, model, tx, state, name, batch_size=100)
    with pytest.raises(ValueError, match=r"multiple of 3"):
        _fit(digits, model, tx, state, "sharded", batch_size=64, devices=3)


def test_auto_uses_the_devices_the_batch_divides_over(digits):
    model, tx, state = _setup("mlp", digits)
    with pytest.warns(UserWarning, match="using 5 of them"):
        res = _fit(digits, model, tx, state, "auto", batch_size=100, epochs=1)
    assert (res.strategy, res.num_devices) == ("sharded", 5)
    res = _fit(digits, model, tx, state, "auto", batch_size=64, epochs=1)
    assert (res.strategy, res.num_devices) == ("sharded", 8)
    res = _fit(digits, model, tx, state, "auto", batch_size=64, epochs=1, devices=1)
    assert (res.strategy, res.num_devices) == ("single", 1)


def test_strategy_and_device_errors():
    with pytest.raises(ValueError, match=r"Unknown strategy 'shardd'.*sharded"):
        parallel.get_strategy("shardd")
    with pytest.raises(ValueError, match=r"Asked for 9 devices but 8 are visible.*XLA_FLAGS"):
        parallel.get_strategy("sharded", 9)
    with pytest.raises(ValueError, match="positive integer"):
        parallel.get_strategy("sharded", "4")
    with pytest.raises(ValueError, match="one device"):
        parallel.get_strategy("single", 2)
    mesh = parallel.make_mesh(4)
    assert mesh.shape == {"data": 4}


def test_pmap_is_a_per_device_program_without_flax_jax_utils():
    """The "pmap" strategy runs `jax.shard_map` over the data axis: each device sees its
    rows, and a psum inside gives the global sum (replicated out)."""
    strategy = parallel.get_strategy("pmap", 4)
    fn = strategy.per_device(
        lambda s, b: (s, jax.lax.psum(b.shape[0] * s, parallel.DATA_AXIS)), (P(), P())
    )
    state, out = jax.jit(fn)(jnp.float32(2.0), jnp.ones((8, 3)))
    assert float(out) == 2.0 * 8  # 4 devices x 2 rows each x 2.0
    assert parallel.get_strategy("sharded", 4).per_device(fn, P()) is fn


def test_pmap_needs_a_step_that_sums_over_the_device_axis(digits):
    """The pmap axis is an explicit argument of the step (as in Flax's ImageNet example);
    a step built without it would train each device alone, so fit refuses it."""
    model, tx, state = _setup("mlp", digits)
    plain = train.make_train_step(model, tx)
    with pytest.raises(ValueError, match="axis_name='data'"):
        train.fit(
            state,
            plain,
            train.make_eval_step(model),
            digits.train,
            epochs=1,
            batch_size=64,
            strategy="pmap",
            devices=4,
            progress=False,
        )
    mapped = jax.pmap(
        lambda x: jax.lax.psum(x, parallel.DATA_AXIS),
        axis_name=parallel.DATA_AXIS,
        devices=parallel.get_strategy("pmap", 4).local_devices,
    )
    assert np.asarray(mapped(jnp.ones((4, 2)))).tolist() == [[4.0, 4.0]] * 4


@pytest.mark.parametrize(("first", "second"), [("sharded", "single"), ("single", "sharded")])
def test_checkpoint_from_n_devices_resumes_on_m(first, second, digits, tmp_path):
    """8 -> 1 and 1 -> 8: a checkpoint holds the logical state, restorable anywhere."""
    model, tx, state = _setup("mlp", digits)
    straight = _fit(digits, model, tx, state, first, epochs=2)
    _fit(digits, model, tx, state, first, epochs=1, checkpoint_dir=tmp_path)
    # Restore into a state living on the other layout and check the arrays.
    other = parallel.get_strategy(second)
    target = other.put_state(state)
    restored = CheckpointManager(tmp_path).restore(target, "latest")
    n = len(jax.tree.leaves(restored.state.params)[0].sharding.device_set)
    assert n == other.num_devices
    resumed = _fit(digits, model, tx, state, second, epochs=2, checkpoint_dir=tmp_path, resume=True)
    assert resumed.num_devices == other.num_devices
    assert int(resumed.state.step) == int(straight.state.step)
    assert _max_diff(straight.state, resumed.state) < 2e-5
    for a, b in zip(resumed.history, straight.history, strict=True):
        assert a["test/accuracy"] == b["test/accuracy"]
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)


def test_initialize_is_a_no_op_for_one_process(monkeypatch):
    for var in ("DL_NUM_PROCESSES", "JAX_NUM_PROCESSES", "DL_DISTRIBUTED"):
        monkeypatch.delenv(var, raising=False)
    assert parallel.initialize() is False
    monkeypatch.setenv("DL_NUM_PROCESSES", "1")
    assert parallel.initialize() is False
    monkeypatch.setenv("DL_NUM_PROCESSES", "2")
    monkeypatch.delenv("DL_COORDINATOR_ADDRESS", raising=False)
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="DL_COORDINATOR_ADDRESS"):
        parallel.initialize()
    monkeypatch.setenv("DL_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="'two'"):
        parallel.initialize()
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
        parallel.initialize("localhost:1", 2, 5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("strategy", ["sharded", "pmap"])
def test_two_processes_agree_with_one(strategy, digits, tmp_path):
    """2 processes x 2 CPU devices over jax.distributed (gloo collectives on localhost)
    train as one process on one device does; their checkpoint restores in this one."""
    worker = Path(__file__).with_name("_distributed_worker.py")
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(
            os.environ,
            DL_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            DL_NUM_PROCESSES="2",
            DL_PROCESS_ID=str(pid),
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
            JAX_PLATFORMS="cpu",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(worker), str(tmp_path), strategy],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the 2-process run did not finish in 240 s")
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]

    sys.path.insert(0, str(worker.parent))
    try:
        import _distributed_worker
    finally:
        sys.path.remove(str(worker.parent))
    ref = _distributed_worker.run("single")
    state = _distributed_worker.setup()[-1]
    ref_leaves = [np.asarray(a) for a in jax.tree.leaves(ref.state.params)]
    for pid in range(2):
        z = np.load(tmp_path / f"process{pid}.npz")
        assert int(z["devices"]) == 4 and int(z["processes"]) == 2
        for i, a in enumerate(ref_leaves):
            np.testing.assert_allclose(z[f"p{i}"], a, rtol=1e-5, atol=2e-6)
        assert int(z["test_count"]) == len(digits.x_test)
        assert int(z["test_correct"]) == round(
            ref.history[-1]["test/accuracy"] * len(digits.x_test)
        )
    # The checkpoint the two processes wrote together restores here, on one device.
    restored = CheckpointManager(tmp_path / "checkpoints").restore(state, "latest")
    assert int(restored.state.step) == int(ref.state.step)
    assert _max_diff(restored.state, ref.state) < 2e-5
