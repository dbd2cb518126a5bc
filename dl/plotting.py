"""Figures written to files with matplotlib's object API (no pyplot global state)."""

from __future__ import annotations

import os
from collections.abc import Sequence


def plot_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> None:
    """Write loss and accuracy curves per epoch (train and every eval set), and the
    learning rate when the history records it ("lr"), to `path`.

    Args:
      history: `FitResult.history`: dicts with "epoch" and "<set>/<metric>" keys.
      path: output file, e.g. "curves.png".
      title: figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = ["loss", "accuracy"] + (["lr"] if any("lr" in h for h in history) else [])
    fig = Figure(figsize=(5 * len(panels), 4), dpi=100)
    FigureCanvasAgg(fig)
    keys = sorted({k for h in history for k in h if "/" in k and not k.endswith("/count")})
    for i, metric in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        chosen = ["lr"] if metric == "lr" else [k for k in keys if k.endswith("/" + metric)]
        for key in chosen:
            pts = [(h["epoch"], h[key]) for h in history if key in h]
            ax.plot(
                *zip(*pts, strict=True),
                marker="." if len(pts) < 30 else None,
                label=key.split("/")[0],
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel("learning rate" if metric == "lr" else metric)
        if metric == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.lines and metric != "lr":
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)


def tile_images(images, ncols: int = 10, pad: int = 1):
    """(N, H, W[, C]) images -> one (rows*(H+pad)-pad, cols*(W+pad)-pad[, C]) array."""
    import numpy as np

    images = np.asarray(images, np.float32)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or len(images) == 0:
        raise ValueError(f"Expected images (N, H, W) or (N, H, W, C); got {images.shape}.")
    n, h, w = images.shape[:3]
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    grid = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad, *images.shape[3:]))
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = img
    return grid


def save_image_grid(images, path: str | os.PathLike, ncols: int = 10) -> None:
    """Write images with values in [0, 1] as one grid PNG (white gaps between them)."""
    import numpy as np
    from matplotlib.image import imsave

    grid = np.clip(tile_images(images, ncols), 0.0, 1.0)
    imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0)
