"""dl.kernels.products.dense_dot_general: lax.dot_general's values and gradients, through
flax's Dense and DenseGeneral, and lax's own product wherever it does not apply."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dl import kernels
from dl.kernels import products as layers


def _grads(layer, x, seed=0):
    params = layer.init(jax.random.key(seed), x)
    g = jnp.asarray(np.random.default_rng(1).normal(size=layer.apply(params, x).shape), x.dtype)

    def loss(p, x):
        return (layer.apply(p, x) * g).sum()

    return jax.value_and_grad(loss, (0, 1))(params, x)


def _uses_custom_vjp(layer, x) -> bool:
    params = layer.init(jax.random.key(0), x)
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: layer.apply(p, x).sum()))(params)
    return "custom_vjp" in str(jaxpr)


CASES = [
    ("Dense 2-D", lambda dg: nn.Dense(24, dot_general=dg), (1024, 40)),
    ("Dense 3-D", lambda dg: nn.Dense(24, dot_general=dg), (4, 300, 40)),
    ("qkv projection", lambda dg: nn.DenseGeneral((3, 8), dot_general=dg), (4, 300, 40)),
    (
        "out projection",
        lambda dg: nn.DenseGeneral(24, axis=(-2, -1), dot_general=dg),
        (4, 300, 3, 8),
    ),
]


@pytest.mark.parametrize("name, make, shape", CASES, ids=[c[0] for c in CASES])
def test_same_values_and_gradients_as_lax(name, make, shape):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    ours, ref = make(layers.dense_dot_general), make(lax.dot_general)
    assert _uses_custom_vjp(ours, x) and not _uses_custom_vjp(ref, x)
    (lo, (gpo, gxo)), (lr, (gpr, gxr)) = _grads(ours, x), _grads(ref, x)
    np.testing.assert_allclose(lo, lr, rtol=1e-5)
    np.testing.assert_allclose(gxo, gxr, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(gpo), jax.tree.leaves(gpr), strict=True):
        # sums over 1024+ rows, in another order: float32 rounding of the sum's size
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_bfloat16_gradients_keep_their_dtypes():
    x = jnp.ones((4, 300, 40), jnp.bfloat16)
    layer = nn.Dense(24, dtype=jnp.bfloat16, dot_general=layers.dense_dot_general)
    _, (gp, gx) = _grads(layer, x)
    assert gx.dtype == jnp.bfloat16
    assert {a.dtype for a in jax.tree.leaves(gp)} == {jnp.dtype("float32")}  # param dtype


def test_other_products_and_the_switch_go_to_lax():
    x = jnp.ones((4, 300, 40), jnp.float32)
    w = jnp.ones((4, 40, 6), jnp.float32)
    batched = (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_array_equal(
        layers.dense_dot_general(x, w, batched), lax.dot_general(x, w, batched)
    )
    assert "custom_vjp" not in str(
        jax.make_jaxpr(jax.grad(lambda w: layers.dense_dot_general(x, w, batched).sum()))(w)
    )
    layer = nn.Dense(24, dot_general=layers.dense_dot_general)
    assert not _uses_custom_vjp(
        nn.Dense(24, precision="highest", dot_general=layers.dense_dot_general), x
    )
    assert _uses_custom_vjp(layer, x)
    assert not _uses_custom_vjp(layer, x[:3])  # 900 rows: below DENSE_MIN_ROWS
    assert not _uses_custom_vjp(nn.Dense(24, dot_general=kernels.dot_general("xla")), x)
