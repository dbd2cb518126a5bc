"""glibc malloc settings for XLA:CPU's per-call temporaries: an explicit, process-wide
call (`dl.kernels.tune_host_allocator()`), made by the CLI and the benchmarks, never by
`import dl`."""

from __future__ import annotations

import ctypes
import functools
import sys

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MiB = 1 << 20
# glibc refuses an mmap threshold above half its per-thread heap size (64 MiB on 64-bit
# Linux), and that is where its own sliding threshold stops, so 32 MiB is the largest.
SETTINGS = {
    "M_MMAP_THRESHOLD": (_M_MMAP_THRESHOLD, 32 * _MiB),
    "M_TOP_PAD": (_M_TOP_PAD, 64 * _MiB),
    "M_TRIM_THRESHOLD": (_M_TRIM_THRESHOLD, 256 * _MiB),
}

_STATE = {"tuned": False}


def host_allocator_tuned() -> bool:
    """Whether `tune_host_allocator` has changed this process's malloc settings."""
    return _STATE["tuned"]


@functools.cache
def tune_host_allocator() -> bool:
    """Make glibc's malloc keep, between calls, the memory that XLA:CPU frees.

    It changes a process-wide setting, so `import dl` never calls it: `dl train` and
    `dl reproduce` do, and so can a library user who trains on the CPU. The settings
    are read by every later malloc and free, so it can be called at any time.

    With `dl.kernels.jit(..., kernels="cpu")` splitting XLA's temporaries into blocks of
    at most 16 MiB, these settings keep those blocks' memory between calls instead of
    paying a page fault per page each call:

    - M_MMAP_THRESHOLD = 32 MiB: blocks below it come from malloc's heaps, not mmap;
    - M_TOP_PAD = 64 MiB: a heap keeps 64 MiB of slack, so a worker thread's heap
      is not deleted and made again on every call;
    - M_TRIM_THRESHOLD = 256 MiB: up to 256 MiB of free memory at the top of a heap is
      kept rather than returned to the system.

    The cost is memory: freed memory up to those amounts stays with the process.
    Measured in `experiments/benchmarks/allocator.py`; results are bit-for-bit the same.

    Returns True when all settings were accepted; False (and changes nothing) off
    Linux/glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only: musl has other knobs
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = [mallopt(param, value) for param, value in SETTINGS.values()]
    _STATE["tuned"] = all(r == 1 for r in ok)
    return _STATE["tuned"]
