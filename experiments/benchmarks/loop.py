"""The whole fit loop against (b) the usual hand-written Flax loop and (c) our own bare
jitted step, per epoch, on small models where the loop's overhead shows.

- dl fit: `dl.train.fit` as users call it (data checked and kept on the device, a
  shuffle per epoch, batches gathered on the device, metrics summed on the device, many
  steps per compiled call); per repeat, a fresh `fit` of 4 epochs and the median of its
  epochs 2-4 (from its history), so that, like the two loops below, which keep their
  state from repeat to repeat, it is timed warm and not on the epoch after compiling.
- hand-written Flax: `flax.training.train_state.TrainState`, a `@jax.jit` step taking
  (state, x, y), host NumPy batches cut from a NumPy permutation, `float(loss)` logged
  every step: the pattern of the Flax and JAX tutorials.
- bare step: `dl.kernels.jit(make_train_step(...), donate_argnums=0, kernels="cpu")`
  called once per step on one batch already on the device, no shuffle, gather or
  metrics: the floor for a loop that calls a step per batch.

    python experiments/benchmarks/loop.py [--quick]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import interleaved, quick, save
from flax.training import train_state

from dl import data, models, train
from dl.kernels import compiler as xla

CASES = {
    "mlp-64 digits": dict(
        data="digits", model=lambda c: models.get_model("mlp", c, widths=(64,)), batch=32
    ),
    "mlp-128 mnist5k": dict(
        data="mnist5k", model=lambda c: models.get_model("mlp", c, widths=(128,)), batch=64
    ),
    "lenet5 mnist5k": dict(
        data="mnist5k", model=lambda c: models.get_model("lenet5", c, kernels="cpu"), batch=64
    ),
}


def hand_written(model, x, y, batch, seed=0):
    """The tutorial pattern, one epoch per call."""
    params = model.init(jax.random.key(seed), x[:1])["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-3))

    @jax.jit
    def step(state, xb, yb):
        def loss_fn(p):
            logits = state.apply_fn({"params": p}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    rng = np.random.default_rng(seed)
    holder = {"state": state}

    def epoch() -> float:
        t0 = time.perf_counter()
        s, losses = holder["state"], []
        perm = rng.permutation(len(x))
        for i in range(len(x) // batch):
            idx = perm[i * batch : (i + 1) * batch]
            s, loss = step(s, x[idx], y[idx])
            losses.append(float(loss))
        holder["state"] = s
        return time.perf_counter() - t0

    return epoch


def ours_fit(model, x, y, batch):
    tx = optax.adam(1e-3)
    state = train.create_state(model, tx, x.shape[1:], seed=0)
    step, evals = train.make_train_step(model, tx), train.make_eval_step(model)

    def epoch() -> float:
        res = train.fit(
            state,
            step,
            evals,
            (x, y),
            epochs=4,
            batch_size=batch,
            progress=False,
            steps_per_call=train.default_steps_per_call(model),
            kernels="cpu",
        )
        return float(np.median([h["epoch_time_s"] for h in res.history[1:]]))

    return epoch


def bare_step(model, x, y, batch):
    tx = optax.adam(1e-3)
    state = train.create_state(model, tx, x.shape[1:], seed=0)
    step = xla.jit(train.make_train_step(model, tx), donate_argnums=0, kernels="cpu")
    b = {"x": jnp.asarray(x[:batch]), "y": jnp.asarray(y[:batch])}
    holder = {"state": state}
    steps = len(x) // batch

    def epoch() -> float:
        t0 = time.perf_counter()
        s = holder["state"]
        for _ in range(steps):
            s, _ = step(s, b)
        holder["state"] = jax.block_until_ready(s)
        return time.perf_counter() - t0

    return epoch


def main() -> None:
    repeats = 3 if quick() else 9
    rows = []
    for name, case in CASES.items():
        ds = data.load(case["data"])
        x, y = ds.x_train.astype(np.float32), ds.y_train.astype(np.int32)
        model = case["model"](ds.num_classes)
        b = case["batch"]
        res = interleaved(
            {
                "fit": ours_fit(model, x, y, b),
                "hand": hand_written(model, x, y, b),
                "bare": bare_step(model, x, y, b),
            },
            repeats,
        )
        med = {k: v["median_s"] for k, v in res.items()}
        rows.append(
            {
                "model": name,
                "data": f"{case['data']} ({len(x)} examples), batch {b}, {len(x) // b} steps/epoch",
                "repeats": repeats,
                "fit_epoch_ms": 1e3 * med["fit"],
                "hand_epoch_ms": 1e3 * med["hand"],
                "bare_epoch_ms": 1e3 * med["bare"],
                "fit_over_bare": med["fit"] / med["bare"],
                "speedup_vs_hand": med["hand"] / med["fit"],
                **{f"{k}_all_ms": [1e3 * t for t in v["all_s"]] for k, v in res.items()},
            }
        )
        print(
            name,
            f"fit/bare {rows[-1]['fit_over_bare']:.2f}",
            f"vs hand {rows[-1]['speedup_vs_hand']:.2f}x",
            flush=True,
        )
    save("fit_loop", rows, notes="Per-epoch times; fit's the median of epochs 2-4 of each fit.")


if __name__ == "__main__":
    main()
