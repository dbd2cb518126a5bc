"""dl.kernels' compiler options and CPU convolutions (the
single-channel sum, the input gradient by rows): all are speed changes, so all must leave
the results as they were."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from dl import data, models, train
from dl.kernels import compiler as xla
from dl.kernels import convolution as layers

CPU = jax.default_backend() == "cpu"


def test_compiler_options_on_cpu_and_when_left_out(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert xla.compiler_options("cpu", "gpu") == {}
    assert xla.compiler_options("cpu", "tpu") == {}
    assert xla.compiler_options("xla", "cpu") == {}
    if CPU:  # set where this jaxlib knows the option (0.10 does, 0.7 does not)
        known = xla._supported("cpu", xla.YNN_OPTION, xla.YNN_NO_CONVOLUTIONS)
        want = {xla.YNN_OPTION: xla.YNN_NO_CONVOLUTIONS} if known else {}
        assert xla.compiler_options("cpu") == want
        assert xla.compiler_options("auto") == want
    monkeypatch.setenv("XLA_FLAGS", f"--{xla.YNN_OPTION}=")
    assert xla.compiler_options("cpu", "cpu") == {}
    assert isinstance(xla.jit(lambda x: x, kernels="xla"), type(jax.jit(lambda x: x)))


def test_unknown_option_is_detected():
    assert not xla._supported("cpu", xla.YNN_OPTION, "NOT_A_FUSION_TYPE")


def _cnn_state_and_batch():
    rng = np.random.default_rng(0)
    model = models.get_model("cnn", 10, channels=(8, 16), dense=(32,))
    tx = optax.adam(1e-3)
    state = train.create_state(model, tx, (28, 28, 1), seed=0)
    batch = {
        "x": jnp.asarray(rng.normal(size=(16, 28, 28, 1)).astype(np.float32)),
        "y": jnp.asarray(rng.integers(0, 10, 16).astype(np.int32)),
    }
    return train.make_train_step(model, tx), state, batch


@pytest.mark.skipif(not CPU, reason="the options are for the CPU backend")
def test_jit_with_options_trains_like_plain_jit():
    step, state, batch = _cnn_state_and_batch()
    ours, plain = xla.jit(step, kernels="cpu"), jax.jit(step)
    s1, s2 = state, state
    for _ in range(3):
        s1, m1 = ours(s1, batch)
        s2, m2 = plain(s2, batch)
    np.testing.assert_allclose(float(m1["loss_sum"]), float(m2["loss_sum"]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def _ynn_convs(jitted, *args) -> int:
    hlo = jitted.lower(*args).compile().as_text()
    return sum("__ynn_fusion" in ln and "conv_general_dilated" in ln for ln in hlo.splitlines())


@pytest.mark.skipif(not CPU, reason="the options are for the CPU backend")
def test_jit_keeps_convolutions_out_of_ynnpack():
    # The benchmark's CNN size, compiled only: YNNPACK takes convolutions this large.
    model = models.get_model("cnn", 10, channels=(32, 64), dense=(128,))
    tx = optax.adam(1e-3)
    state = train.create_state(model, tx, (28, 28, 1), seed=0)
    batch = {"x": jnp.zeros((128, 28, 28, 1)), "y": jnp.zeros((128,), jnp.int32)}
    step = train.make_train_step(model, tx)
    assert _ynn_convs(xla.jit(step, kernels="cpu"), state, batch) == 0
    convs = "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
    if xla._supported("cpu", xla.YNN_OPTION, convs):  # the check does see them when on
        on = jax.jit(step, compiler_options={xla.YNN_OPTION: convs})
        assert _ynn_convs(on, state, batch) > 0


def _conv_cases():
    rng = np.random.default_rng(1)
    f = lambda *s: jnp.asarray(rng.normal(size=s).astype(np.float32))  # noqa: E731
    return [
        (f(3, 12, 10, 1), f(3, 3, 1, 5), "SAME"),
        (f(3, 12, 10, 1), f(3, 3, 1, 5), "VALID"),
        (f(3, 12, 10, 1), f(2, 3, 1, 4), ((1, 0), (2, 1))),
        (f(4, 20, 1), f(5, 1, 7), "SAME"),  # 1-D signal
        (f(2, 5, 6, 7, 1), f(2, 2, 2, 1, 3), "SAME"),  # 3-D
        (f(3, 28, 28, 1), f(5, 5, 1, 6), "SAME"),  # LeNet-5's first layer
    ]


def _lax(x, w, padding):
    nd = x.ndim - 2
    specs = layers._channels_last_specs(nd)
    dn = lax.conv_dimension_numbers(x.shape, w.shape, specs)
    return lax.conv_general_dilated(x, w, (1,) * nd, padding, dimension_numbers=dn)


def _ours(x, w, padding):
    nd = x.ndim - 2
    dn = lax.conv_dimension_numbers(x.shape, w.shape, layers._channels_last_specs(nd))
    return layers.conv_general_dilated(x, w, (1,) * nd, padding, dimension_numbers=dn)


@pytest.mark.skipif(not CPU, reason="the shifted sum is used on the CPU backend only")
@pytest.mark.parametrize("case", range(6))
def test_single_channel_conv_equals_lax_values_and_gradients(case):
    x, w, padding = _conv_cases()[case]
    jaxpr = str(jax.make_jaxpr(_ours, static_argnums=2)(x, w, padding))
    assert "custom_vjp" in jaxpr
    # materialised by a conditional where it has more taps than channels, with the
    # same bits as the sum alone
    more_taps = np.prod(w.shape[:-2]) > w.shape[-1]
    assert ("cond[" in jaxpr) == more_taps
    y = _ours(x, w, padding)
    pads = layers._explicit_padding(x, w, padding)
    np.testing.assert_array_equal(  # both compiled: XLA contracts a * b + c to an FMA
        jax.jit(_ours, static_argnums=2)(x, w, padding),
        jax.jit(layers._shifted_sum, static_argnums=2)(x, w, pads),
    )
    if more_taps:  # the conditional survives XLA's passes (else the sum is refused)
        hlo = jax.jit(_ours, static_argnums=2).lower(x, w, padding).compile().as_text()
        assert "conditional(" in hlo
    np.testing.assert_allclose(y, _lax(x, w, padding), rtol=1e-5, atol=1e-5)
    dy = jnp.asarray(np.random.default_rng(2).normal(size=y.shape).astype(np.float32))
    g_ours = jax.vjp(lambda x, w: _ours(x, w, padding), x, w)[1](dy)
    g_lax = jax.vjp(lambda x, w: _lax(x, w, padding), x, w)[1](dy)
    for a, b in zip(g_ours, g_lax, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _row_cases():
    rng = np.random.default_rng(5)
    f = lambda *s: jnp.asarray(rng.normal(size=s).astype(np.float32))  # noqa: E731
    return [
        (f(4, 14, 14, 6), f(5, 5, 6, 16), "VALID"),  # LeNet-5's second convolution
        (f(3, 9, 11, 8), f(3, 3, 8, 5), "SAME"),
        (f(3, 9, 11, 3), f(3, 5, 3, 4), ((1, 0), (2, 1))),
        (f(2, 7, 8, 16), f(2, 3, 16, 4), ((0, 1), (2, 0))),  # MAX_ROW_GRAD_CHANNELS
        (f(2, 7, 8, 3), f(4, 2, 3, 4), "SAME"),
        (f(2, 6, 5, 2), f(3, 3, 2, 3), ((2, 2), (0, 2))),  # the largest padding, k - 1
    ]


@pytest.mark.skipif(not CPU, reason="the input gradient by rows is used on the CPU only")
@pytest.mark.parametrize("case", range(6))
def test_few_channel_conv_input_gradient_by_rows_equals_lax(case):
    x, w, padding = _row_cases()[case]
    assert "custom_vjp" in str(jax.make_jaxpr(_ours, static_argnums=2)(x, w, padding))
    y = _ours(x, w, padding)
    np.testing.assert_array_equal(y, _lax(x, w, padding))  # lax's forward pass
    dy = jnp.asarray(np.random.default_rng(6).normal(size=y.shape).astype(np.float32))
    dx, dw = jax.vjp(lambda x, w: _ours(x, w, padding), x, w)[1](dy)
    dx_lax, dw_lax = jax.vjp(lambda x, w: _lax(x, w, padding), x, w)[1](dy)
    np.testing.assert_array_equal(dw, dw_lax)  # lax's kernel gradient
    # the rows sum in another order: a few ulps of the largest value
    np.testing.assert_allclose(dx, dx_lax, rtol=0, atol=1e-6 * float(jnp.abs(dx_lax).max()))
    assert dx.shape == x.shape


def _compiled_grad(conv):
    return jax.jit(jax.grad(lambda x, k: (conv(x, k) ** 2).sum(), (0, 1)))


def test_other_convolutions_go_to_lax_unchanged():
    rng = np.random.default_rng(3)
    x3 = jnp.asarray(rng.normal(size=(2, 8, 8, 3)).astype(np.float32))
    x1 = x3[..., :1]
    x17 = jnp.asarray(rng.normal(size=(2, 8, 8, 17)).astype(np.float32))
    w = lambda k, ci: jnp.asarray(rng.normal(size=(k, k, ci, 4)).astype(np.float32))  # noqa: E731
    dn = lambda x, w: lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))  # noqa: E731
    # plain stride-1 float32 convolutions that are neither shifted sums nor take the
    # input gradient by rows: lax's forward pass, gradients in the form that loops well
    plain = [
        (x17, w(3, 17), (1, 1), {}),  # 17 input channels > MAX_ROW_GRAD_CHANNELS
        (x3, w(3, 3)[:1], (1, 1), {}),  # a 1 x 3 kernel
        (x1, jnp.tile(w(9, 1), 2), (1, 1), {}),  # 81 taps x 8 channels > MAX_SHIFTED_WORK
        (x1, jnp.tile(w(5, 1), 8), (1, 1), {}),  # 25 taps x 32 channels > MAX_SHIFTED_WORK
    ]
    others = [
        (x3, w(3, 3), (1, 1), {"lhs_dilation": (2, 2), "padding": ((1, 1), (1, 1))}),
        (x3, w(3, 1)[..., :3], (1, 1), {"feature_group_count": 3}),
        (x3.astype(jnp.bfloat16), w(3, 3).astype(jnp.bfloat16), (1, 1), {}),
        (x1, w(3, 1), (1, 1), {"rhs_dilation": (2, 2)}),
        (x1.astype(jnp.bfloat16), w(3, 1).astype(jnp.bfloat16), (1, 1), {}),
        (x3, w(3, 3), (1, 1), {"padding": ((-1, 0), (0, 0))}),  # negative padding
        (x1, w(3, 1), (1, 1), {"padding": ((-1, 0), (0, 0))}),  # (the shifted sum raised)
        (x3, w(3, 3), (1, 1), {"padding": "SAME_LOWER"}),
    ]
    for cases, custom in ((plain, True), (others, False)):
        for x, k, strides, kw in cases:
            pad = kw.pop("padding", "SAME")

            def ours(x, k, strides=strides, kw=kw, pad=pad):
                d = dn(x, k)
                return layers.conv_general_dilated(x, k, strides, pad, dimension_numbers=d, **kw)

            def ref(x, k, strides=strides, kw=kw, pad=pad):
                d = dn(x, k)
                return lax.conv_general_dilated(x, k, strides, pad, dimension_numbers=d, **kw)

            assert ("custom_vjp" in str(jax.make_jaxpr(ours)(x, k))) == custom
            np.testing.assert_array_equal(np.asarray(ours(x, k), "f4"), np.asarray(ref(x, k), "f4"))
            if custom:  # and the gradients are lax's, bit for bit (both compiled)
                pairs = zip(_compiled_grad(ours)(x, k), _compiled_grad(ref)(x, k), strict=True)
                for a, b in pairs:
                    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "shape, kernel, strides, padding",
    [
        ((2, 20, 20, 16), (9, 9, 16, 8), (2, 2), "VALID"),  # the capsule network's
        ((2, 8, 8, 3), (3, 3, 3, 4), (2, 2), "SAME"),  # a ResNet's downsampling
        ((2, 9, 7, 3), (3, 2, 3, 4), (2, 3), ((1, 0), (2, 1))),  # odd sizes, asymmetric
        ((2, 28, 28, 1), (5, 5, 1, 6), (2, 2), "SAME"),  # one channel: then a shifted sum
        ((2, 20, 3), (4, 3, 5), (3,), "SAME"),  # 1-D
        ((1, 5, 5, 2), (5, 5, 2, 3), (2, 2), "VALID"),  # one output position
        ((1, 6, 6, 2), (1, 1, 2, 3), (2, 2), "VALID"),  # 1x1, stride 2
    ],
)
def test_strided_convolutions_as_stride_one_equal_lax(shape, kernel, strides, padding):
    """A strided convolution runs as a stride-1 one on stride-sized blocks of the input:
    lax's values and gradients to float32 rounding (another summation order)."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    k = jnp.asarray(rng.normal(size=kernel).astype(np.float32))
    specs = ("NWC", "WIO", "NWC") if len(shape) == 3 else ("NHWC", "HWIO", "NHWC")
    d = lax.conv_dimension_numbers(x.shape, k.shape, specs)

    def ours(x, k):
        return layers.conv_general_dilated(x, k, strides, padding, dimension_numbers=d)

    def ref(x, k):
        return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=d)

    assert "custom_vjp" in str(jax.make_jaxpr(ours)(x, k))
    a, b = jax.jit(ours)(x, k), jax.jit(ref)(x, k)
    assert a.shape == b.shape

    def close(got, want):  # float32 sums of up to 1296 terms, in another order
        want = np.asarray(want)
        np.testing.assert_allclose(np.asarray(got), want, atol=2e-6 * np.abs(want).max())

    close(a, b)
    for g, h in zip(_compiled_grad(ours)(x, k), _compiled_grad(ref)(x, k), strict=True):
        close(g, h)


@pytest.mark.parametrize(
    "shape, kernel, padding",
    [
        ((4, 14, 14, 32), (3, 3, 32, 64), ((1, 1), (1, 1))),
        ((4, 28, 28, 1), (5, 5, 1, 6), ((2, 2), (2, 2))),
        ((4, 14, 14, 6), (5, 5, 6, 16), ((0, 0), (0, 0))),
        ((4, 20, 3), (4, 3, 5), ((2, 1),)),  # 1-D
        ((2, 9, 8, 3), (3, 2, 3, 4), ((0, 2), (1, 0))),  # asymmetric
        ((2, 6, 6, 2), (2, 2, 2, 3), ((3, 3), (0, 0))),  # padding wider than the kernel
    ],
)
def test_convolution_gradients_in_the_loop_friendly_form_equal_lax(shape, kernel, padding):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    w = jnp.asarray(rng.normal(size=kernel).astype(np.float32))
    f = lambda x, w: layers._lax_conv(x, w, padding)  # noqa: E731
    dy = jnp.asarray(rng.normal(size=f(x, w).shape).astype(np.float32))
    want = jax.jit(lambda x, w, dy: jax.vjp(f, x, w)[1](dy))(x, w, dy)
    got = jax.jit(
        lambda x, w, dy: (
            layers._input_grad(x, w, padding, dy),
            layers._kernel_grad(x, dy, padding),
        )
    )(x, w, dy)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.skipif(not CPU, reason="the CPU formulations apply on the CPU only")
@pytest.mark.parametrize("name", ["lenet5", "cnn"])
def test_convolutions_inside_the_compiled_train_loop_are_all_in_eigens_form(name):
    # XLA:CPU rewrites lax's convolution gradients for Eigen outside loops only; inside
    # fit's loop they were 10-100x slower. dl's Conv gives every convolution of the
    # step, forward and gradients, that form (b01f_01io->b01f) itself.
    ds = data.load("mnist5k")
    model, tx = models.get_model(name, 10, kernels="cpu"), optax.adam(1e-3)
    state = train.create_state(model, tx, ds.input_shape, seed=0)
    step = train.make_train_step(model, tx)
    x, y = jnp.asarray(ds.x_train[:256]), jnp.asarray(ds.y_train[:256])
    batch = {"x": x[:64], "y": y[:64]}
    idx, mask = data.epoch_indices(256, 64)
    zero = train.zero_metrics(step, state, batch)
    hlo = (
        jax.jit(train.make_train_loop(step))
        .lower(state, zero, x, y, idx, mask, 0, 2)
        .compile()
        .as_text()
    )
    labels = re.findall(r" convolution\(.*?dim_labels=([^,\s]+)", hlo)
    assert len(labels) == 4 and set(labels) == {"b01f_01io->b01f"}, labels


@pytest.mark.parametrize(
    "name, kwargs, first",
    [("cnn", dict(channels=(6, 8), dense=(16,)), "conv0_0"), ("lenet5", {}, "conv0")],
)
def test_models_with_the_cpu_convolutions_have_the_plain_gradients(
    monkeypatch, name, kwargs, first
):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(8, 16, 16, 1)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, 8).astype(np.int32))
    model = models.get_model(name, 10, kernels="cpu", **kwargs)
    params = model.init(jax.random.key(0), x)["params"]
    assert params[first]["kernel"].shape[2:] == (1, 6)  # nn.Conv's names and shapes
    reference = models.get_model(name, 10, kernels="xla", **kwargs)
    assert jax.tree.map(np.shape, reference.init(jax.random.key(0), x)["params"]) == (
        jax.tree.map(np.shape, params)
    )

    def grads():
        def loss(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        return jax.grad(loss)(params), jax.make_jaxpr(loss)(params)

    fast, fast_jaxpr = grads()
    limits = layers.MAX_SHIFTED_WORK, layers.MAX_ROW_GRAD_CHANNELS
    monkeypatch.setattr(layers, "MAX_SHIFTED_WORK", 0)  # lax's forward and gradients,
    monkeypatch.setattr(layers, "MAX_ROW_GRAD_CHANNELS", 0)  # in the loop-friendly form
    plain, plain_jaxpr = grads()
    monkeypatch.setattr(layers, "MAX_SHIFTED_WORK", limits[0])
    monkeypatch.setattr(layers, "MAX_ROW_GRAD_CHANNELS", limits[1])
    model = reference  # kernels="xla": everything is lax's
    off, off_jaxpr = grads()
    # two convolutions and two poolings with their own VJPs; kernels="xla" has none
    calls = [str(j).count("custom_vjp_call[") for j in (fast_jaxpr, plain_jaxpr, off_jaxpr)]
    assert calls == [4, 4, 0], calls
    for other in (plain, off):
        for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(other), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_largest_value_bytes_looks_inside_nested_jaxprs():
    def f(x):
        def body(c, _):
            big = jnp.outer(c, c)  # (300, 300) float32 inside the scan body only
            return c + big.sum(0), None

        c, _ = lax.scan(body, x, None, length=2)
        return c.sum()

    jaxpr = jax.make_jaxpr(f)(jnp.ones(300, jnp.float32))
    assert xla.largest_value_bytes(jaxpr) == 300 * 300 * 4
    jaxpr = jax.make_jaxpr(lambda x: x.astype(jnp.bfloat16) * 2)(jnp.ones((5, 7)))
    assert xla.largest_value_bytes(jaxpr) == 5 * 7 * 4  # the float32 input


def test_heap_limit_rules():
    mib = 1 << 20
    assert xla.heap_limit(0) == xla.HEAP_LIMIT == 16 * mib
    assert xla.heap_limit(16 * mib) == 16 * mib
    assert xla.heap_limit(17 * mib + 1) == 18 * mib  # no buffer over the limit: no warning
    assert xla.heap_limit(xla.HEAP_LARGEST) == xla.HEAP_LARGEST
    assert xla.heap_limit(xla.HEAP_LARGEST + 1) is None  # no split: one block, as XLA does


@pytest.mark.skipif(not CPU, reason="the split is for the CPU backend")
def test_jit_picks_the_heap_limit_from_the_program_and_gives_the_same_bits(monkeypatch):
    f = lambda x: jnp.tanh(x @ x).sum(0)  # noqa: E731

    def run(n):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)).astype(np.float32))
        ours = xla.jit(f, kernels="cpu")
        y = ours(x)
        return ours.heap_limit, np.asarray(y), np.asarray(jax.jit(f)(x))

    limit, y, plain = run(64)
    assert limit == xla.HEAP_LIMIT
    np.testing.assert_array_equal(y, plain)
    limit, y, plain = run(2100)  # 17.6 MB values
    assert limit == 17 << 20
    np.testing.assert_array_equal(y, plain)
    limit, _, _ = run(3000)  # values of 34 MiB: no split
    assert limit is None
    # lower() makes the same choice as a call, and the options reach the compiler
    ours = xla.jit(f, kernels="cpu")
    text = ours.lower(jnp.ones((64, 64))).compile().as_text()
    assert ours.heap_limit == xla.HEAP_LIMIT and text


_WARN_SCRIPT = """
import sys
import jax, jax.numpy as jnp
from dl.kernels import compiler as xla
x = jnp.ones((2100, 2100))  # values of 16.8 MiB, over the 16 MiB default limit

def f(x):  # two such temporaries live at once
    y = jnp.tanh(x @ x)
    return (jnp.sin(y @ y) @ y).sum()

if sys.argv[1] == "dl":
    xla.jit(f, kernels="cpu")(x).block_until_ready()
else:  # the fixed limit that dl.xla.jit avoids
    jax.jit(f, compiler_options={xla.HEAP_OPTION: str(xla.HEAP_LIMIT)})(x).block_until_ready()
"""


@pytest.mark.skipif(not CPU, reason="the split is for the CPU backend")
def test_jit_does_not_make_xla_warn_about_buffers_over_the_limit():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def stderr(which):
        cmd = [sys.executable, "-c", _WARN_SCRIPT, which]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stderr

    assert "larger than the per-heap size limit" in stderr("fixed")
    assert "per-heap size limit" not in stderr("dl")


# Run in fresh interpreters: the malloc settings are process-wide. Prints whether the
# tuning is on, the median page faults per train step of the benchmark's decoder LM
# (175 MB of temporaries per step in one block without the split), and a digest of the
# parameters after the steps.
_ALLOCATOR_SCRIPT = """
import hashlib, resource, sys
import dl
import jax, numpy as np, optax
from dl import data, kernels, models, train
from dl.kernels import compiler as xla

if sys.argv[2] == "1":
    kernels.tune_host_allocator()
model = models.get_model("lm", 65, d_model=128, num_layers=2, num_heads=4, mlp_dim=512, max_len=128)
tx = optax.adam(1e-3)
state = train.create_state(model, tx, (128,), seed=0, input_dtype="int32")
fun = train.make_train_step(model, tx)
step = xla.jit(fun, kernels="cpu") if sys.argv[1] == "dl" else jax.jit(fun)
tokens = np.random.default_rng(0).integers(0, 65, (32, 129)).astype(np.int32)
batch = {"x": tokens[:, :-1], "y": tokens[:, 1:]}
faults = []
for i in range(10):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    state, _ = step(state, batch)
    jax.block_until_ready(state)
    if i >= 2:  # the heaps grow to their working size in the first steps
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
leaves = jax.tree_util.tree_leaves(state.params)
digest = hashlib.sha256(b"".join(np.asarray(p).tobytes() for p in leaves)).hexdigest()
print(kernels.host_allocator_tuned(), np.median(faults), digest)
"""


@pytest.mark.slow  # 27 s: out of the default run, which aims at ~15 minutes
@pytest.mark.skipif(
    not (CPU and __import__("sys").platform.startswith("linux")), reason="glibc on Linux"
)
def test_split_and_malloc_tuning_stop_per_step_page_faults_and_change_no_result():
    import subprocess
    import sys

    def run(tuning, which):
        cmd = [sys.executable, "-c", _ALLOCATOR_SCRIPT, which, tuning]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        tuned, faults, digest = out.stdout.split()
        return tuned == "True", float(faults), digest

    tuned, ours, ours_digest = run("1", "dl")  # as `dl train` does
    untuned, plain, plain_digest = run("0", "jax")  # neither measure
    assert tuned and not untuned
    # Without them each step maps its 175 MB of temporaries afresh and touches most
    # pages (about 45,000 faults); with them the memory is kept from step to step.
    assert plain > 20_000, plain
    # Alone about 1,000; 4,000 was seen with another test worker busy beside it: still a
    # tenth of the untuned faults.
    assert ours < 0.2 * plain, (ours, plain)
    assert ours_digest == plain_digest  # the same bits: only where memory comes from


def test_import_dl_reads_no_malloc_variable_and_tunes_nothing():
    import os
    import subprocess
    import sys

    env = {**os.environ, "DL_MALLOC_TUNING": "yes"}  # the old switch is no longer read
    code = "import dl, dl.train; from dl.kernels import host_allocator_tuned as t; print(t())"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
