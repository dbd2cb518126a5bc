import jax
import jax.numpy as jnp
import numpy as np

from dl.data import random_flip_lr, random_shift


def test_shift_keeps_shape_and_mass_and_moves_content():
    x = jnp.zeros((16, 12, 12, 1)).at[:, 5:7, 5:7, :].set(1.0)
    out = random_shift(jax.random.key(0), x, max_shift=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_allclose(out.sum(axis=(1, 2, 3)), 4.0)  # content away from borders
    moved = [not np.array_equal(out[i], x[i]) for i in range(16)]
    assert sum(moved) >= 10  # P(no shift) = 1/25 per example
    # each example moved by at most 2 pixels in each axis
    ys, xs = np.nonzero(np.asarray(out[..., 0]).sum(0))
    assert ys.min() >= 3 and ys.max() <= 8 and xs.min() >= 3 and xs.max() <= 8


def test_shift_1d_and_zero_shift_identity():
    x = jnp.arange(2 * 10 * 1, dtype=jnp.float32).reshape(2, 10, 1)
    assert random_shift(jax.random.key(1), x, max_shift=3).shape == x.shape
    np.testing.assert_array_equal(random_shift(jax.random.key(1), x, max_shift=0), x)


def test_flip_is_mirror_or_identity():
    x = jax.random.normal(jax.random.key(0), (8, 5, 5, 1))
    out = random_flip_lr(jax.random.key(2), x)
    for i in range(8):
        assert np.array_equal(out[i], x[i]) or np.array_equal(out[i], x[i, :, ::-1])
