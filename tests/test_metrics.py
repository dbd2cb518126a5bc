import jax
import jax.numpy as jnp
import numpy as np

from dl.metrics import add, loss_and_accuracy, summarize


def test_sums_add_up_exactly_and_mask_excludes_padding():
    logits = jax.random.normal(jax.random.key(0), (10, 3))
    labels = jnp.arange(10) % 3
    per_ex = jnp.arange(10, dtype=jnp.float32)
    full = loss_and_accuracy(logits, labels, per_ex, jnp.ones(10))
    a = loss_and_accuracy(logits[:6], labels[:6], per_ex[:6], jnp.ones(6))
    b = loss_and_accuracy(logits[6:], labels[6:], per_ex[6:], jnp.ones(4))
    both = add(a, b)
    for k in full:
        np.testing.assert_array_equal(both[k], full[k])
    assert full["count"].dtype == jnp.int32 and full["correct"].dtype == jnp.int32
    masked = loss_and_accuracy(logits, labels, per_ex, (jnp.arange(10) < 6).astype(jnp.float32))
    for k in full:
        np.testing.assert_array_equal(masked[k], a[k])
    s = summarize(full)
    assert s["count"] == 10 and s["loss"] == 4.5
    hits = int((np.argmax(np.asarray(logits), -1) == np.asarray(labels)).sum())
    assert s["accuracy"] == hits / 10


def test_unlabelled_positions_count_nowhere():
    import jax.numpy as jnp

    from dl import metrics

    logits = jnp.array([[[2.0, 0.0], [0.0, 2.0], [5.0, 0.0]]])  # (1, 3 nodes, 2 classes)
    labels = jnp.array([[0, metrics.UNLABELLED, 1]])
    per = jnp.array([[0.5, 100.0, 2.0]])
    out = metrics.loss_and_accuracy(logits, labels, per, jnp.ones((1,)))
    assert int(out["count"]) == 2 and int(out["correct"]) == 1
    assert float(out["loss_sum"]) == 2.5
