"""dl: a JAX functional research toolkit for deep learning.

Importing `dl` does no device work, reads no files and parses no flags; the
submodules are imported lazily so that `import dl` stays cheap.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("data", "models", "losses", "metrics", "optim", "train", "plotting", "cli", "xla")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"dl.{name}")
    raise AttributeError(f"module 'dl' has no attribute {name!r}; submodules: {_SUBMODULES}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
