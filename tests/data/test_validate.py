import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dl.data import check_arrays


def test_accepts_good_data_and_casts():
    x, y = check_arrays(np.ones((3, 2), np.uint8), np.array([0.0, 1.0, 2.0]), num_classes=3)
    assert x.dtype == np.float32 and y.dtype == np.int32


@pytest.mark.parametrize(
    "x, y, kw, match",
    [
        (
            np.ones((3, 2)),
            np.array([0, 1, 5]),
            dict(num_classes=3),
            r"\[0, 3\).*got labels in \[0, 5\]",
        ),
        (np.ones((3, 2)), np.array([0, -1, 1]), dict(num_classes=3), r"got labels in \[-1, 1\]"),
        (np.array([[np.nan, 1.0]] * 3), np.zeros(3, int), {}, "NaN or Inf"),
        (
            np.ones((3, 4)),
            np.zeros(3, int),
            dict(input_shape=(2, 2, 1)),
            r"shape \(4,\).*\(2, 2, 1\).*Reshape",
        ),
        (np.ones((3, 4)), np.zeros(2, int), {}, "3 examples but y has 2"),
        (np.ones((0, 4)), np.zeros(0, int), {}, "empty"),
        (np.ones((3, 4)), np.eye(3), {}, "one-hot"),
        (np.ones((3, 4)), np.array([0.5, 1, 2]), {}, "integer class labels"),
        (np.array([["a", "b"]] * 3), np.zeros(3, int), {}, "numeric"),
    ],
)
def test_bad_data_errors_name_the_value(x, y, kw, match):
    with pytest.raises(ValueError, match=match):
        check_arrays(x, y, **kw)


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int32]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4),
    ),
    y=hnp.arrays(
        np.int64, hnp.array_shapes(max_dims=2, min_side=0, max_side=4), elements=st.integers(-3, 5)
    ),
)
def test_never_a_cryptic_failure(x, y):
    """Malformed arrays either pass every check or raise a ValueError, nothing else."""
    try:
        xc, yc = check_arrays(x, y, input_shape=(2,), num_classes=3)
    except ValueError as e:
        assert str(e)
        return
    assert xc.shape[1:] == (2,) and len(xc) == len(yc) > 0
    assert np.isfinite(xc).all() and yc.min() >= 0 and yc.max() < 3
