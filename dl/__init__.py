"""dl: a JAX functional research toolkit for deep learning.

`import dl` has no side effects: it does no device work, reads no files, parses no
flags and changes no process-wide setting (host-allocator tuning is the explicit
`dl.kernels.tune_host_allocator()`). Every submodule is reachable as `dl.NAME`,
imported on first use.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "adversarial",
    "analysis",
    "baselines",
    "checkpoint",
    "cli",
    "data",
    "elm",
    "experiments",
    "gan",
    "generative",
    "kernels",
    "losses",
    "metrics",
    "models",
    "notebook",
    "optim",
    "parallel",
    "plotting",
    "recipes",
    "train",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"dl.{name}")
    raise AttributeError(f"module 'dl' has no attribute {name!r}; submodules: {_SUBMODULES}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
