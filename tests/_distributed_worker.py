"""One process of the 2-process `jax.distributed` test (run by tests/test_parallel.py),
and the run both that test and its single-process reference make (`run`).

Usage: python _distributed_worker.py OUT_DIR STRATEGY
Environment: DL_COORDINATOR_ADDRESS, DL_NUM_PROCESSES, DL_PROCESS_ID, and XLA_FLAGS with
the number of CPU devices of this process.
"""

import sys
from pathlib import Path

import jax
import numpy as np


def setup():
    """The dataset, model, optimizer and initial state of the run."""
    from dl import data, models, optim, train

    ds = data.load("digits")
    model = models.get_model("mlp", ds.num_classes, widths=(32,))
    tx = optim.make_optimizer("sgd", learning_rate=0.1, momentum=0.9)
    return ds, model, tx, train.create_state(model, tx, ds.input_shape, seed=0)


def run(strategy: str, checkpoint_dir=None):
    """Two epochs of the MLP on digits with `strategy`; returns the FitResult."""
    from dl import parallel, train

    ds, model, tx, state = setup()
    axis = parallel.DATA_AXIS if strategy == "pmap" else None
    return train.fit(
        state,
        train.make_train_step(model, tx, axis_name=axis),
        train.make_eval_step(model, axis_name=axis),
        (ds.x_train, ds.y_train),
        epochs=2,
        batch_size=64,
        eval_data={"test": (ds.x_test, ds.y_test)},
        progress=False,
        strategy=strategy,
        checkpoint_dir=checkpoint_dir,
    )


def main(out_dir: Path, strategy: str) -> None:
    from dl import parallel

    assert parallel.initialize(), "expected a multi-process run"
    res = run(strategy, checkpoint_dir=out_dir / "checkpoints")
    leaves = jax.tree.leaves(res.state.params)
    last = res.history[-1]
    np.savez(
        out_dir / f"process{jax.process_index()}.npz",
        devices=res.num_devices,
        processes=jax.process_count(),
        test_correct=round(last["test/accuracy"] * last["test/count"]),
        test_count=last["test/count"],
        train_loss=last["train/loss"],
        **{f"p{i}": np.asarray(jax.device_get(a)) for i, a in enumerate(leaves)},
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
