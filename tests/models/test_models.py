import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dl.models import MODELS, get_model

# (name, kwargs, input shape): every model on the input kinds it supports.
CASES = [
    ("linear", {}, (8, 8, 1)),
    ("linear", {}, (40, 1)),
    ("mlp", {"widths": (16, 8)}, (28, 28, 1)),
    ("mlp", {"widths": (16,), "dropout": 0.5, "batch_norm": True}, (40, 1)),
    ("lenet5", {}, (28, 28, 1)),
    ("lenet5", {"activation": "tanh", "pool": "avg"}, (32, 32, 1)),
    ("cnn", {"channels": (4, 8)}, (28, 28, 1)),
    (
        "cnn",
        {"channels": (4, 8), "batch_norm": True, "convs_per_block": 2, "dropout": 0.1},
        (8, 8, 1),
    ),
    ("cnn", {"channels": (4, 4, 4), "kernel_size": 5, "dense": ()}, (40, 1)),
    ("cnn", {"channels": (4,), "global_pool": True, "pool": "avg"}, (32, 32, 3)),
    ("resnet", {"blocks_per_stage": (1, 1, 1), "width": 4}, (28, 28, 1)),
    ("capsnet", {"conv_channels": 4, "primary_types": 2, "decoder": (8,)}, (28, 28, 1)),
    ("capsnet", {"conv_channels": 4, "primary_types": 2, "kernel_size": 3}, (8, 8, 3)),
    ("resnet", {"blocks_per_stage": (1, 1), "width": 4}, (40, 1)),
    ("rnn", {"hidden": 8}, (40, 1)),
    ("lstm", {"hidden": 8, "bidirectional": True, "num_layers": 2}, (28, 28)),
    ("gru", {"hidden": 8, "head": "mean", "dropout": 0.1}, (28, 28, 1)),
    ("transformer", {"d_model": 16, "num_heads": 2, "pool": "cls"}, (40, 1)),
    ("vit", {"patch_size": 7, "d_model": 16, "num_layers": 1}, (28, 28, 1)),
    ("gcn", {"hidden": 8}, (8, 14)),  # dense graphs: 8 nodes, [adjacency | flag | 5 features]
    ("gat", {"hidden": 4, "heads": 2, "readout": "sum"}, (8, 14)),
]


@pytest.mark.parametrize("name, kwargs, shape", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_output_shapes_and_collections(name, kwargs, shape):
    model = get_model(name, 7, **kwargs)
    x = jnp.ones((3, *shape))
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    out = model.apply(variables, x, train=False)
    chex.assert_shape(out, (3, 7))
    chex.assert_tree_all_finite(out)
    has_bn = name == "resnet" or kwargs.get("batch_norm", False)
    assert ("batch_stats" in variables) == has_bn
    if has_bn:
        out_t, mutated = model.apply(
            variables, x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
        )
        chex.assert_shape(out_t, (3, 7))
        # the running statistics are returned updated, not mutated in place
        assert jax.tree.structure(mutated["batch_stats"]) == jax.tree.structure(
            variables["batch_stats"]
        )
        changed = jax.tree.leaves(
            jax.tree.map(
                lambda a, b: bool(jnp.any(a != b)), mutated["batch_stats"], variables["batch_stats"]
            )
        )
        assert any(changed)


@pytest.mark.parametrize("name", ["ae", "conv_ae", "dae", "vae"])
def test_autoencoders_reconstruct_the_input_shape(name):
    model = get_model(name, 7, latent_dim=4, hidden=(16,), channels=(4, 8))
    x = jnp.ones((3, 28, 28, 1))
    variables = model.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, x)
    out = model.apply(variables, x, train=True, rngs={"noise": jax.random.key(2)})
    chex.assert_shape(out, x.shape)
    chex.assert_tree_all_finite(out)


def test_every_registered_model_is_covered():
    # The language model reads token ids (test_sequence_models.py); the GANs map noise
    # to images (test_gan.py).
    covered = {c[0] for c in CASES} | {"ae", "conv_ae", "dae", "vae"}
    assert covered | {"lm", "dcgan", "cgan"} == set(MODELS)


def test_dropout_active_only_in_training():
    model = get_model("mlp", 4, widths=(64,), dropout=0.5)
    x = jnp.ones((2, 10))
    v = model.init(jax.random.key(0), x)
    a = model.apply(v, x, train=False)
    b = model.apply(v, x, train=False)
    c = model.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
    chex.assert_trees_all_equal(a, b)
    assert not jnp.allclose(a, c)


def test_linear_model_is_one_dense_layer():
    v = get_model("linear", 10).init(jax.random.key(0), jnp.ones((1, 40, 1)))
    assert list(v["params"]) == ["head"]
    chex.assert_shape(v["params"]["head"]["kernel"], (40, 10))


def test_unknown_model_and_bad_options():
    with pytest.raises(ValueError, match=r"Unknown model 'cnnn'.*Did you mean 'cnn'"):
        get_model("cnnn", 10)
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['depth'\] for model 'mlp'"):
        get_model("mlp", 10, depth=3)
    with pytest.raises(ValueError, match="Unknown activation 'relu6'"):
        get_model("mlp", 10, activation="relu6")
    with pytest.raises(ValueError, match="num_classes must be a positive integer; got 0"):
        get_model("mlp", 0)
    with pytest.raises(ValueError, match="dropout must be in"):
        get_model("mlp", 10, dropout=1.5)


def test_input_shape_errors_are_clear():
    with pytest.raises(
        ValueError, match=r"lenet5 needs images .* H, W >= 16; got shape \(1, 8, 8, 1\)"
    ):
        get_model("lenet5", 10).init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"channels last; got shape \(1, 784\).*x\[\.\.\., None\]"):
        get_model("cnn", 10).init(jax.random.key(0), jnp.ones((1, 784)))


# ---- pooling by reshape (dl.models.layers.pool), checked against flax's reduce_window


@pytest.mark.parametrize("shape", [(3, 8, 8, 4), (2, 7, 9, 3), (2, 11, 5)])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_matches_flax_pooling_and_its_gradient(shape, kind):
    import flax.linen as nn

    from dl.models.layers import pool

    x = jax.random.normal(jax.random.key(0), shape)  # no ties: one gradient is right
    window = (2,) * (len(shape) - 2)
    ref_pool = nn.max_pool if kind == "max" else nn.avg_pool

    def ref(x):
        return ref_pool(x, window, strides=window)

    def ours(x):
        return pool(x, kind, 2)

    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-6, atol=1e-7)
    assert ours(x).shape == ref(x).shape  # odd sizes drop the remainder ("VALID")
    w = jax.random.normal(jax.random.key(1), ref(x).shape)
    g_ours = jax.grad(lambda x: jnp.sum(jnp.sin(ours(x)) * w))(x)
    g_ref = jax.grad(lambda x: jnp.sum(jnp.sin(ref(x)) * w))(x)
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "shape, window, dtype",
    [
        ((4, 28, 28, 6), 2, "float32"),  # LeNet-5's first pooling
        ((3, 10, 11, 16), 2, "float32"),  # a remainder column
        ((3, 9, 5), 2, "float32"),  # 1-D
        ((2, 9, 9, 3), 3, "float32"),
        ((2, 4, 5, 6, 3), 2, "float32"),  # 3-D
        ((4, 8, 8, 4), 2, "bfloat16"),
    ],
)
def test_max_pool_vjp_equals_the_differentiated_reduction_bitwise(shape, window, dtype):
    """layers.pool's own max-pool VJP gives what JAX's reduce_max gradient gives (each
    window's gradient split over its maxima), bit for bit, with many ties."""
    from dl import kernels
    from dl.models import layers

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(-2, 3, size=shape), dtype)  # five values: ties everywhere
    ref = jax.vjp(lambda x: kernels.window_reduce(x, window, jnp.max), x)
    ours = jax.vjp(lambda x: layers.pool(x, "max", window, "cpu"), x)
    jaxpr = str(jax.make_jaxpr(lambda x: layers.pool(x, "max", window, "cpu"))(x))
    assert "custom_vjp" in jaxpr
    assert "custom_vjp" not in str(jax.make_jaxpr(lambda x: layers.pool(x, "max", window))(x))
    g = jnp.asarray(rng.normal(size=ref[0].shape), dtype)
    np.testing.assert_array_equal(np.asarray(ours[0], "f4"), np.asarray(ref[0], "f4"))
    dx_ours, dx_ref = ours[1](g)[0], ref[1](g)[0]
    assert dx_ours.shape == x.shape and dx_ours.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(dx_ours, "f4"), np.asarray(dx_ref, "f4"))
    assert float(jnp.abs(dx_ours).sum()) > 0


def test_pool_rejects_bad_kind_and_too_small_inputs():
    from dl.models.layers import pool

    with pytest.raises(ValueError, match="pool must be 'max', 'avg' or 'none'; got 'min'"):
        pool(jnp.zeros((1, 4, 4, 1)), "min", 2)
    with pytest.raises(ValueError, match=r"spatial shape \(1, 4\)"):
        pool(jnp.zeros((1, 1, 4, 1)), "max", 2)


def test_relu_cnn_gradients_unchanged_by_the_pooling_rewrite(monkeypatch):
    """After a ReLU, max-pool windows of zeros tie; the reshape pooling shares their
    gradient where flax gives it to one, and the ReLU zeroes it either way: the
    parameter gradients of a LeNet-5 and a CNN equal those with flax's max_pool."""
    import flax.linen as nn

    from dl.models import cnn as cnn_module

    x = jax.random.normal(jax.random.key(0), (8, 28, 28, 1))
    y = jnp.arange(8) % 10
    built = [get_model("lenet5", 10, kernels=k) for k in ("xla", "cpu")] + [
        get_model("cnn", 10, channels=(8, 16), kernels=k) for k in ("xla", "cpu")
    ]
    for model in built:
        params = model.init(jax.random.key(1), x)

        def loss(p, model=model):
            logits = model.apply(p, x)
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), y])

        g_ours = jax.grad(loss)(params)
        with monkeypatch.context() as m:
            m.setattr(
                cnn_module,
                "pool",
                lambda x, kind, w, kernels="xla": nn.max_pool(
                    x, (w,) * (x.ndim - 2), strides=(w,) * (x.ndim - 2)
                ),
            )
            g_ref = jax.grad(loss)(params)
        chex.assert_trees_all_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)


# Every model of `dl models`, small, with the input it reads: (kwargs, input, extra args).
_SMALL = {name: (kw, shape) for name, kw, shape in reversed(CASES)}
_SMALL.update(
    lm=(dict(d_model=16, num_layers=1, num_heads=2, mlp_dim=32, max_len=16), (6,)),
    ae=(dict(hidden=(16,), latent_dim=4), (8, 8, 1)),
    conv_ae=(dict(channels=(4, 8), latent_dim=4), (8, 8, 1)),
    dae=(dict(hidden=(16,), latent_dim=4), (8, 8, 1)),
    vae=(dict(hidden=(16,), latent_dim=4), (8, 8, 1)),
    dcgan=(dict(image_shape=(8, 8, 1), latent_dim=4, base=4), (4,)),
    capsnet=(dict(conv_channels=4, primary_types=2, decoder=(8,), kernel_size=3), (8, 8, 1)),
    cgan=(dict(image_shape=(8, 8, 1), latent_dim=4, base=4), (4,)),
)


def _small_apply(name):
    kw, shape = _SMALL[name]
    model = get_model(name, 3, **kw)
    if name == "lm":
        x = jnp.arange(2 * shape[0], dtype=jnp.int32).reshape(2, *shape) % 3
    else:
        x = jnp.linspace(0.0, 1.0, 2 * int(np.prod(shape))).reshape(2, *shape)
    args = (jnp.array([0, 1]),) if name == "cgan" else ()
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1), "noise": jax.random.key(2)}
    variables = model.init(rngs, x, *args)

    def apply(params):
        out = model.apply({**variables, "params": params}, x, *args, rngs={"noise": rngs["noise"]})
        return jnp.sum(jnp.asarray(out, jnp.float32) ** 2)

    return apply, variables["params"]


def test_every_listed_model_is_covered():
    assert set(_SMALL) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_mode_and_hessians_work_on_every_model_built_with_defaults(name):
    """The library default (kernels="xla") keeps JAX's semantics: jvp, jacfwd and
    Hessians (forward over reverse) go through every listed model."""
    apply, params = _small_apply(name)

    @jax.jit
    def derivatives(params):
        def scaled(t):
            return apply(jax.tree.map(lambda p: p * t, params))

        value, tangent = jax.jvp(apply, (params,), (params,))
        return value, tangent, jax.hessian(scaled)(1.0), jax.grad(scaled)(1.0)

    value, tangent, hess, grad = (float(a) for a in derivatives(params))
    assert np.isfinite([value, tangent, hess]).all()
    # d/dt f(t p) at t=1 is the jvp along p: forward and reverse mode agree
    np.testing.assert_allclose(grad, tangent, rtol=1e-3)


@pytest.mark.parametrize(
    "name, kw, shape, layer",
    [
        ("cnn", {"channels": (4,), "dense": (8,)}, (8, 8, 1), "conv0_0"),
        ("lenet5", {}, (16, 16, 1), "conv0"),
        ("transformer", {"d_model": 16, "num_heads": 2}, (6, 3), "embed"),
    ],
)
def test_forward_mode_through_cpu_kernels_names_the_layer_and_the_fix(name, kw, shape, layer):
    from dl.kernels import ForwardModeError

    model = get_model(name, 3, kernels="cpu", **kw)
    x = jnp.ones((1024 if name == "transformer" else 2, *shape))
    params = model.init(jax.random.key(0), x)["params"]

    def apply(p):
        return model.apply({"params": p}, x).sum()

    with pytest.raises(ForwardModeError, match=rf"layer '{layer}.*kernels='xla'"):
        jax.jvp(apply, (params,), (params,))
    assert np.isfinite(float(jax.jit(jax.grad(lambda p: apply(p)))(params)["head"]["bias"].sum()))


def test_mlp_scan_layers_is_the_unrolled_network():
    """scan_layers changes how the net is compiled, not what it computes: with the
    unrolled net's parameters stacked into "layers", outputs, batch statistics and
    gradients agree."""
    kw = dict(widths=(8, 8, 8, 8), batch_norm=True, residual=True)
    flat = get_model("mlp", 3, **kw)
    scan = get_model("mlp", 3, scan_layers=True, **kw)
    x = jax.random.normal(jax.random.key(0), (5, 6))
    v = flat.init(jax.random.key(1), x)

    def stack(col, name):
        return jax.tree.map(lambda *a: jnp.stack(a), *[v[col][f"{name}_{i}"] for i in (1, 2, 3)])

    p, b = v["params"], v["batch_stats"]
    params = {
        "dense0": p["dense0"],
        "BatchNorm_0": p["BatchNorm_0"],
        "head": p["head"],
        "layers": {
            "dense": jax.tree.map(lambda *a: jnp.stack(a), *[p[f"dense{i}"] for i in (1, 2, 3)]),
            "BatchNorm_0": stack("params", "BatchNorm"),
        },
    }
    stats = {
        "BatchNorm_0": b["BatchNorm_0"],
        "layers": {"BatchNorm_0": stack("batch_stats", "BatchNorm")},
    }
    sv = {"params": params, "batch_stats": stats}
    assert jax.tree.structure(sv) == jax.tree.structure(scan.init(jax.random.key(1), x))
    out_f, new_f = flat.apply(v, x, train=True, mutable=["batch_stats"])
    out_s, new_s = scan.apply(sv, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out_s, out_f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        new_s["batch_stats"]["layers"]["BatchNorm_0"]["mean"][2],
        new_f["batch_stats"]["BatchNorm_3"]["mean"],
        rtol=1e-5,
        atol=1e-6,
    )
    g_f = jax.grad(lambda q: flat.apply({**v, "params": q}, x).sum())(p)
    g_s = jax.grad(lambda q: scan.apply({**sv, "params": q}, x).sum())(params)
    np.testing.assert_allclose(
        g_s["layers"]["dense"]["kernel"][1], g_f["dense2"]["kernel"], rtol=1e-4, atol=1e-6
    )
    with pytest.raises(ValueError, match="one width"):
        get_model("mlp", 3, widths=(8, 8, 4), scan_layers=True).init(jax.random.key(0), x)
