"""Figures written to files with matplotlib's object API (no pyplot global state)."""

from __future__ import annotations

import os
from collections.abc import Sequence


def plot_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> None:
    """Write loss and accuracy curves per epoch (train and every eval set) to `path`.

    Args:
      history: `FitResult.history`: dicts with "epoch" and "<set>/<metric>" keys.
      path: output file, e.g. "curves.png".
      title: figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    keys = sorted({k for h in history for k in h if "/" in k and not k.endswith("/count")})
    for i, metric in enumerate(("loss", "accuracy")):
        ax = fig.add_subplot(1, 2, i + 1)
        for key in (k for k in keys if k.endswith("/" + metric)):
            pts = [(h["epoch"], h[key]) for h in history if key in h]
            ax.plot(
                *zip(*pts, strict=True),
                marker="." if len(pts) < 30 else None,
                label=key.split("/")[0],
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        if metric == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
