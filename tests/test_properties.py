"""Property-based: malformed configs, shapes and arrays at the public entry points get a
clear ValueError (or work), never a cryptic failure from deep inside XLA."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dl import models, optim, train
from dl.recipes import default_config

numbers = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.text(max_size=3),
    st.booleans(),
)


@settings(max_examples=80, deadline=None)
@given(
    epochs=numbers,
    batch_size=numbers,
    lr=numbers,
    val=numbers,
    patience=numbers,
    model=st.sampled_from(["cnn", "mlp", "linear", "cnnx", ""]),
    dataset=st.sampled_from(["mnist5k", "digits", "mnist", "shapes"]),
)
def test_train_config_validates(epochs, batch_size, lr, val, patience, model, dataset):
    try:
        cfg = default_config(
            model,
            dataset,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=lr,
            val_fraction=val,
            patience=patience,
        )
    except ValueError as e:
        assert str(e)
        return
    assert cfg.epochs >= 1 and cfg.batch_size >= 1 and cfg.learning_rate > 0
    assert 0 <= cfg.val_fraction < 1


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["sgd", "adam", "adamw", "rmsprop", "nesterov", "lion"]),
    lr=numbers,
    wd=numbers,
    clip=numbers,
    schedule=st.sampled_from(["constant", "cosine", "x"]),
)
def test_optimizer_factory_validates(name, lr, wd, clip, schedule):
    try:
        tx = optim.make_optimizer(
            name, 10, learning_rate=lr, weight_decay=wd or 0.0, clip_norm=clip, schedule=schedule
        )
    except ValueError as e:
        assert str(e)
        return
    params = {"w": jnp.ones((2, 2))}
    upd, _ = tx.update(params, tx.init(params), params)
    if lr < 1e6 and (wd or 0.0) < 1e6:  # huge accepted values may overflow float32
        assert bool(jnp.all(jnp.isfinite(upd["w"])))


@pytest.fixture(scope="module")
def mlp_state():
    model = models.get_model("mlp", 3, widths=(4,))
    tx = optim.make_optimizer("sgd", learning_rate=0.1)
    return model, tx, train.create_state(model, tx, (2, 2))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    x=hnp.arrays(
        st.sampled_from([np.float32, np.float64, np.int8]),
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    ),
    y=hnp.arrays(
        st.sampled_from([np.int32, np.float32]),
        hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5),
    ),
    bs=st.integers(-2, 6),
)
def test_fit_never_fails_cryptically(mlp_state, x, y, bs):
    model, tx, state = mlp_state
    try:
        res = train.fit(
            state,
            train.make_train_step(model, tx),
            train.make_eval_step(model),
            (x, y),
            epochs=1,
            batch_size=bs,
            progress=False,
            handle_signals=False,
        )
    except (ValueError, FloatingPointError) as e:
        assert str(e)
        return
    # accepted: it really was a valid dataset and training produced finite numbers
    assert x.shape[1:] == (2, 2) and len(x) == len(y) >= bs >= 1
    assert np.isfinite(res.history[-1]["train/loss"])


@settings(max_examples=30, deadline=None)
@given(
    # Sides up to 20: a 4-D shape of 40s gave the MLP 2.56M inputs, a 5 GB first layer
    # and Adam's two copies, which took 20 GB and was killed (CI, stop 41).
    shape=st.lists(st.integers(-1, 20), min_size=0, max_size=4),
    name=st.sampled_from(["mlp", "cnn", "lenet5", "resnet", "linear"]),
)
def test_create_state_shapes(shape, name):
    model = models.get_model(
        name, 4, **({"blocks_per_stage": (1,), "width": 2} if name == "resnet" else {})
    )
    tx = optim.make_optimizer("adam")
    try:
        state = train.create_state(model, tx, tuple(shape))
    except ValueError as e:
        assert str(e)
        return
    assert state.input_shape == tuple(shape) and state.num_classes == 4


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), 2.5, 0, True])
def test_positive_int_rejects_non_finite_and_fractional_values_clearly(bad):
    from dl._errors import check_positive_int

    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        check_positive_int("epochs", bad)
