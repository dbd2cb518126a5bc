"""The small pure helpers the experiments compute their verdicts with, checked by hand."""

import numpy as np
import pytest

from dl.experiments import data_scaling, depth, regularisation, transfer_learning
from dl.experiments import vanishing_gradients as vg
from dl.experiments import weight_sharing as ws


def test_band_margin_counts_decades_inside_the_band_at_the_worst_layer():
    lo, hi = np.log10(vg.BAND[0]), np.log10(vg.BAND[1])
    norms = np.array([[1.0, 10.0], [10.0 ** (lo - 1), 1.0], [10.0 ** (hi + 2), 1.0]])
    np.testing.assert_allclose(vg.band_margin(norms), [min(-lo, hi - 1), -1.0, -2.0])
    # A gradient that underflowed to zero is far below the band, not an error.
    assert vg.band_margin(np.array([[0.0, 1.0]]))[0] < -30


def test_sawtooth_has_two_to_the_k_linear_pieces():
    x = np.linspace(0, 1, 2**12 + 1)
    for k in (1, 3, 5):
        y = depth.sawtooth(x, k)
        slopes = np.sign(np.diff(y))
        assert 1 + np.count_nonzero(np.diff(slopes)) == 2**k
        assert y.min() == pytest.approx(0) and y.max() == pytest.approx(1)


def test_matched_width_matches_the_parameter_count():
    for width, layers in ((8, 12), (4, 3), (16, 6)):
        deep = 2 * width + (layers - 1) * (width**2 + width) + width + 1
        w = depth.matched_width(width, layers)
        assert abs((3 * w + 1) - deep) <= 3


def test_slope_of_an_exact_power_law():
    n = np.array([100, 200, 400, 800])
    assert data_scaling.slope(n, 3.0 * n**-0.5) == pytest.approx(-0.5)


def test_regularisation_picks_by_validation_never_by_test():
    options = {
        0.1: {"train": [0.9, 0.9], "val": [0.80, 0.70], "test": [0.50, 0.99]},
        0.5: {"train": [0.8, 0.8], "val": [0.75, 0.90], "test": [0.99, 0.50]},
    }
    t = regularisation._tuned(options)
    assert t["chosen"] == [0.1, 0.5] and t["test"] == [0.50, 0.50]
    curves = {"val": np.array([[0.5, 0.9], [0.8, 0.6]]), "test": np.array([[0.1, 0.2], [0.3, 0.4]])}
    e = regularisation._early_stopped(curves)
    assert e["epoch"] == [2, 1] and e["test"] == [0.3, 0.2]


def test_transfer_chooses_the_rate_on_validation():
    class Res:
        seeds = [0, 1, 0, 1]
        learning_rates = [1e-3, 1e-3, 3e-3, 3e-3]
        history = [
            {
                "val/accuracy": np.array([0.5, 0.9, 0.7, 0.1]),
                "test/accuracy": np.array([0.1, 0.2, 0.3, 0.4]),
            }
        ]

    c = transfer_learning.best_rate(Res(), [0, 1])
    assert c["learning_rate"] == [3e-3, 1e-3] and c["test"] == [0.3, 0.2]


def test_shift_moves_pixels_and_fills_zeros():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1) + 1
    right = ws.shift(x, 0, 1)
    np.testing.assert_array_equal(right[0, :, 1:, 0], x[0, :, :-1, 0])
    assert not right[0, :, 0].any()
    up = ws.shift(x, -2, 0)
    np.testing.assert_array_equal(up[0, :2, :, 0], x[0, 2:, :, 0])
    assert not up[0, 2:].any()


def test_params_at_interpolates_in_log_parameters():
    params, accs = [100, 1000, 10000], [0.5, 0.7, 0.9]
    assert ws.params_at(0.8, params, accs) == pytest.approx(10**3.5)
    assert ws.params_at(0.6, params, accs) == pytest.approx(10**2.5)
    assert ws.params_at(0.4, params, accs) == 100
    assert ws.params_at(0.95, params, accs) == float("inf")


def test_viewpoint_rotation_turns_the_digits_and_keeps_the_range():
    from dl.experiments.viewpoint import rotate

    x = np.random.default_rng(0).random((2, 6, 6, 1)).astype(np.float32)
    np.testing.assert_array_equal(rotate(x, 90), np.rot90(x, 1, axes=(1, 2)))  # a quarter turn
    np.testing.assert_array_equal(rotate(x, 0), x)
    r = rotate(x, 30)
    assert r.shape == x.shape and r.min() >= 0 and r.max() <= 1
    assert not np.allclose(r, x)
