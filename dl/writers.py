"""Metric writers for `dl.train.fit(..., writers=...)`: each gets every epoch record's
scalars (losses, accuracies, the learning rate, times) with the step count.

A writer is any object with `write(step: int, scalars: dict[str, float])`; `fit` calls
`flush()` at the end when it has one. JSON lines (`fit(metrics_path=...)`) stay the
default record; `TensorBoardWriter` adds TensorBoard event files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping


class TensorBoardWriter:
    """Scalars to TensorBoard event files in `logdir` (`tensorboard --logdir DIR`).

    Written with tensorboardX (`pip install "dl-toolkit[tensorboard]"`), a small,
    well-kept writer of the event-file format that needs neither TensorFlow nor PyTorch.
    """

    def __init__(self, logdir: str | os.PathLike):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise ImportError(
                "TensorBoard logging needs tensorboardX: pip install tensorboardX "
                '(or pip install "dl-toolkit[tensorboard]").'
            ) from e
        self.logdir = os.fspath(logdir)
        self._writer = SummaryWriter(logdir=self.logdir)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                if math.isfinite(value):
                    self._writer.add_scalar(name, float(value), global_step=int(step))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
