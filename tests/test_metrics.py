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
