"""Helpers for the Colab notebooks in `colab/`: what runs where, and showing results inline.

The notebooks hold no library logic: they call these and the rest of `dl`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Any

# The repository the notebooks install from and the README's badges point to: the one
# place it is written (`tests/test_notebooks.py` checks every notebook and the README
# against it; `write_install_cells` rewrites the notebooks after a change).
REPOSITORY = "https://github.com/dl-toolkit/dl"
DISTRIBUTION = "dl-toolkit"  # the name on PyPI and pip; `import dl` stays

INSTALL_CELL = """\
# Install dl (pip name dl-toolkit) from its repository, unless it is already importable.
# Colab's preinstalled jax is kept. A fork or a copy: set REPO to its address.
import importlib.util
import os
import subprocess
import sys

REPO = "{repository}"
if importlib.util.find_spec("dl") is None:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")  # no password prompt for a missing repo
    try:
        found = subprocess.run(["git", "ls-remote", REPO], capture_output=True, env=env, timeout=60)
        ok = found.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        raise SystemExit(
            f"Cannot reach {{REPO}}. Set REPO above to the address of your fork, or upload "
            "a copy of dl and install it here: !pip install /content/dl (a folder) or "
            "!pip install /content/dl_toolkit-*.whl (a wheel), then run this notebook again."
        )
    pip = [sys.executable, "-m", "pip", "install", "-q", f"dl-toolkit @ git+{{REPO}}"]
    subprocess.run(pip, check=True)"""


def install_cell() -> str:
    """The source of every notebook's install cell (its first code cell)."""
    return INSTALL_CELL.format(repository=REPOSITORY)


def colab_url(notebook: str) -> str:
    """The address that opens `colab/<notebook>` of `REPOSITORY` in Colab."""
    path = REPOSITORY.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/main/colab/{notebook}"


def write_install_cells(folder: str | os.PathLike) -> list[Path]:
    """Rewrite the install cell and the Colab badge of every notebook in `folder` from
    `REPOSITORY`; returns the notebooks changed."""
    import json
    import re

    changed = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        text = path.read_text()
        nb = json.loads(text)
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        code[0]["source"] = install_cell().splitlines(keepends=True)
        badge = re.compile(r"https://colab\.research\.google\.com/github/\S+?\.ipynb")
        for cell in nb["cells"]:
            if cell["cell_type"] == "markdown":
                src = badge.sub(colab_url(path.name), "".join(cell["source"]))
                cell["source"] = src.splitlines(keepends=True)
        new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


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
