"""Helpers for the Colab notebooks in `colab/`: what runs where, and showing results inline.

The notebooks hold no library logic: they call these and the rest of `dl`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Environment:
    """Where a notebook runs.

    Attributes:
      platform: "tpu", "gpu" or "cpu".
      device_count: number of devices of that platform (a single TPU chip counts as its
        cores or as 1, whatever JAX reports).
      device_kind: e.g. "TPU v2", "NVIDIA T4", "cpu".
      in_colab: running inside Google Colab.
      network: the package index / dataset hosts are reachable.
      quick: run experiments in quick mode (CPU, or DL_NOTEBOOK_QUICK=1 as in CI).
    """

    platform: str
    device_count: int
    device_kind: str
    in_colab: bool
    network: bool
    quick: bool

    def __str__(self) -> str:
        mode = "quick mode" if self.quick else "full mode"
        net = "network available" if self.network else "offline"
        return (
            f"{self.device_count} x {self.device_kind} ({self.platform}); {net}; "
            f"experiments in {mode}"
        )


def _reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def environment(*, check_network: bool = True) -> Environment:
    """Detect the accelerator (TPU, GPU or CPU; any device count) and the network.

    Quick mode is chosen on a CPU, or when the environment variable DL_NOTEBOOK_QUICK is
    "1" (CI executes the notebooks that way); DL_NOTEBOOK_QUICK=0 forces full mode.
    """
    import sys

    import jax

    devices = jax.devices()
    platform = devices[0].platform
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)
    forced = os.environ.get("DL_NOTEBOOK_QUICK")
    quick = platform == "cpu" if forced is None else forced == "1"
    network = check_network and forced != "1" and _reachable("pypi.org")
    return Environment(
        platform=platform,
        device_count=len(devices),
        device_kind=getattr(devices[0], "device_kind", platform),
        in_colab="google.colab" in sys.modules,
        network=network,
        quick=quick,
    )


def show_images(paths, *, width: int = 700) -> None:
    """Display PNG files inline (in a notebook), else print their paths."""
    try:
        from IPython.display import Image, display
    except ImportError:  # not in IPython
        for p in paths:
            print(p)
        return
    for p in paths:
        display(Image(filename=str(p), width=width))


def show_markdown(text: str) -> None:
    """Render Markdown inline (in a notebook), else print it."""
    try:
        from IPython.display import Markdown, display
    except ImportError:
        print(text)
        return
    display(Markdown(text))


def show_experiment(results: dict[str, Any], out: str | Path) -> None:
    """An experiment's verdict table and figures, inline."""
    from dl.experiments.common import verdict_table

    show_markdown(verdict_table(results["verdicts"]))
    show_images([Path(out) / f for f in results.get("figures", [])])
