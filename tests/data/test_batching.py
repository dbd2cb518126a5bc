import jax
import numpy as np
import pytest

from dl.data import batches, epoch_indices, num_batches


def _epoch(n=10, bs=4, **kw):
    x = np.arange(n, dtype=np.float32)[:, None]
    y = np.arange(n, dtype=np.int32)
    return list(batches(x, y, bs, **kw))


def test_same_seed_and_epoch_same_order_and_epochs_differ():
    a = [np.asarray(b["y"]) for b in _epoch(100, 10, seed=1, epoch=3)]
    b = [np.asarray(b["y"]) for b in _epoch(100, 10, seed=1, epoch=3)]
    c = [np.asarray(b["y"]) for b in _epoch(100, 10, seed=1, epoch=4)]
    d = [np.asarray(b["y"]) for b in _epoch(100, 10, seed=2, epoch=3)]
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    assert not np.array_equal(np.concatenate(a), np.concatenate(d))


def test_pad_covers_every_example_once_with_mask():
    out = _epoch(10, 4, remainder="pad", seed=0)
    assert [b["x"].shape for b in out] == [(4, 1)] * 3
    ys = np.concatenate([np.asarray(b["y"]) for b in out])
    mask = np.concatenate([np.asarray(b["mask"]) for b in out])
    assert mask.sum() == 10 and mask[-2:].sum() == 0
    assert sorted(ys[mask > 0]) == list(range(10))


def test_drop_leaves_out_partial_batch():
    out = _epoch(10, 4, remainder="drop")
    assert len(out) == 2 == num_batches(10, 4, "drop")
    ys = np.concatenate([np.asarray(b["y"]) for b in out])
    assert len(set(ys.tolist())) == 8
    assert all(np.asarray(b["mask"]).all() for b in out)


def test_x_and_y_stay_paired_and_on_device():
    for b in _epoch(50, 8, seed=5):
        assert isinstance(b["x"], jax.Array)
        np.testing.assert_array_equal(np.asarray(b["x"])[:, 0], np.asarray(b["y"]))


def test_no_shuffle_keeps_order():
    idx, mask = epoch_indices(7, 3, shuffle=False, remainder="pad")
    np.testing.assert_array_equal(np.asarray(idx).ravel()[:7], np.arange(7))


@pytest.mark.parametrize("seed", [0, 5, 2**31, 2**32 + 5, np.uint32(9)])
def test_plan_equals_jax_random_permutation(seed):
    # epoch_indices sorts by jax's random keys in NumPy; its order must be
    # jax.random.permutation's, so that training results did not change with it.
    cases = [(1, 1, "drop"), (2, 1, "drop"), (100, 10, "drop"), (103, 10, "drop")]
    for n, bs, remainder in [*cases, (103, 10, "pad"), (60_000, 128, "pad")]:
        for epoch in (0, 3):
            idx, mask = epoch_indices(n, bs, seed=seed, epoch=epoch, remainder=remainder)
            key = jax.random.fold_in(jax.random.key(seed), epoch)
            perm = np.asarray(jax.random.permutation(key, n))
            nb = num_batches(n, bs, remainder)
            want = np.zeros(nb * bs, np.int32)
            want[: min(n, nb * bs)] = perm[: nb * bs]
            assert idx.dtype == np.int32 and idx.shape == mask.shape == (nb, bs)
            np.testing.assert_array_equal(np.asarray(idx).ravel(), want)
            np.testing.assert_array_equal(np.asarray(mask).ravel(), np.arange(nb * bs) < n)


def test_bad_arguments():
    x, y = np.zeros((5, 2), np.float32), np.zeros(5, np.int32)
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got 0"):
        next(batches(x, y, 0))
    with pytest.raises(ValueError, match="larger than the 5 examples"):
        next(batches(x, y, 8))
    with pytest.raises(ValueError, match="5 examples in x, 4 labels"):
        next(batches(x, y[:4], 2))
    with pytest.raises(ValueError, match="remainder must be 'drop' or 'pad'; got 'keep'"):
        next(batches(x, y, 2, remainder="keep"))


def test_epoch_plans_drawn_ahead_equal_epoch_plan():
    # fit's plans, drawn and sorted during the previous epoch or not, are epoch_plan's
    from dl.data.batching import EpochPlans, epoch_plan

    plans = EpochPlans(103, 10, seed=7)
    for epoch, ahead in [(0, False), (1, True), (2, True), (3, False)]:
        if ahead:
            plans.draw_ahead(epoch)
            if epoch == 2:
                plans.sort_ahead(epoch)
        idx, mask = plans.get(epoch, 0)
        want = epoch_plan(103, 10, 7, epoch, True, "drop", 0)
        np.testing.assert_array_equal(idx, np.asarray(want[0]))
        np.testing.assert_array_equal(mask, np.asarray(want[1]))
    plans.draw_ahead(5)  # drawn for another epoch: not used for this one
    np.testing.assert_array_equal(
        plans.get(4, 0)[0], np.asarray(epoch_plan(103, 10, 7, 4, True, "drop", 0)[0])
    )
    with pytest.raises(ValueError, match=r"start must be in \[0, 10\]; got 11"):
        plans.get(0, 11)
    with pytest.raises(ValueError, match="larger than the 103 examples"):
        EpochPlans(103, 200, seed=0)
