"""Graph datasets: Zachary's karate club as semi-supervised node classification."""

import numpy as np
import pytest

from dl import data, metrics
from dl.data.validate import check_arrays


def test_karate_club_has_one_labelled_node_per_club():
    ds = data.load("karate")
    assert ds.x_train.shape == (1, 34, 34 + 1 + 34)
    adj = ds.x_train[0, :, :34]
    assert adj.sum() == 2 * 78 and np.array_equal(adj, adj.T)
    assert (ds.x_train[0, :, 34] == 1).all()  # all 34 nodes are real
    labelled = np.flatnonzero(ds.y_train[0] >= 0)
    assert labelled.tolist() == [0, 33]
    assert sorted(ds.y_train[0, labelled].tolist()) == [0, 1]  # one per club
    # The test labels are exactly the other 32 nodes, both clubs present.
    assert (ds.y_test[0, [0, 33]] == metrics.UNLABELLED).all()
    assert (ds.y_test[0] >= 0).sum() == 32 and set(ds.y_test[0].tolist()) == {-1, 0, 1}
    with pytest.raises(ValueError, match=r"labelled must name nodes in \[0, 34\)"):
        data.load("karate", labelled=(40,))


def test_unlabelled_positions_are_accepted_only_where_allowed():
    x = np.zeros((2, 3, 4), np.float32)
    y = np.array([[0, -1, 1], [-1, -1, 1]])
    _, got = check_arrays(x, y, num_classes=2, label_shape=(3,), allow_unlabelled=True)
    assert got.dtype == np.int32
    with pytest.raises(ValueError, match=r"labels in \[-1, 1\]"):
        check_arrays(x, y, num_classes=2, label_shape=(3,))
    with pytest.raises(ValueError, match=r"labels in \[-2, 1\]"):
        check_arrays(x, y - (y < 0), num_classes=2, label_shape=(3,), allow_unlabelled=True)
    with pytest.raises(ValueError, match="every label is -1"):
        check_arrays(x, -np.ones_like(y), num_classes=2, label_shape=(3,), allow_unlabelled=True)
