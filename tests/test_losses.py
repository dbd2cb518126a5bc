import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dl.losses import binary_cross_entropy, cross_entropy, get_loss, mse


def test_cross_entropy_matches_definition():
    logits = jax.random.normal(jax.random.key(0), (5, 4))
    labels = jnp.array([0, 1, 2, 3, 1])
    manual = -jax.nn.log_softmax(logits)[jnp.arange(5), labels]
    np.testing.assert_allclose(cross_entropy(logits, labels), manual, rtol=1e-6)


def test_label_smoothing():
    logits = jax.random.normal(jax.random.key(1), (3, 5))
    labels = jnp.array([4, 0, 2])
    eps = 0.1
    target = jax.nn.one_hot(labels, 5) * (1 - eps) + eps / 5
    manual = -(target * jax.nn.log_softmax(logits)).sum(-1)
    np.testing.assert_allclose(cross_entropy(logits, labels, eps), manual, rtol=1e-6)


def test_mse_and_bce():
    p = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    t = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(mse(p, t), [2.0, 1.0])
    logits = jnp.array([[0.0], [100.0]])
    np.testing.assert_allclose(
        binary_cross_entropy(logits, jnp.array([1, 1])), [np.log(2), 0.0], atol=1e-6
    )


def test_unknown_loss():
    with pytest.raises(ValueError, match="Unknown loss 'hinge'"):
        get_loss("hinge")
