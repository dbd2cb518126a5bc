"""Host-memory settings that `import dl` applies (no JAX import here: `import dl` stays
cheap). Documented in `dl.xla`, which re-exports `tune_host_allocator`."""

from __future__ import annotations

import ctypes
import functools
import os
import sys

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_INT_MAX = 2**31 - 1  # mallopt takes an int


@functools.cache
def tune_host_allocator() -> bool:
    """Make glibc's malloc keep and reuse the memory that XLA:CPU frees between calls.

    Sets, for the whole process (malloc is shared with NumPy, PyTorch and the rest):
    one malloc arena for all threads (M_ARENA_MAX=1, so that XLA's worker threads
    allocate from the heap that the two settings below govern), no mmap for large
    blocks (M_MMAP_MAX=0) and up to 2 GiB of freed memory at the top of the heap kept
    rather than returned to the system (M_TRIM_THRESHOLD). The cost: the process's
    resident memory stays near its peak instead of shrinking after big temporaries.

    Measured on the 2-core benchmark machine: the decoder LM train step of
    `experiments/benchmarks/steps.py` took 45,500 page faults and 110 ms per step
    before, none and 73 ms after (`--quick`, one run; the report's numbers are medians
    over repeats). Results are bit-for-bit the same: only where memory comes from changes.

    `import dl` calls this once, before JAX starts its threads (threads that already
    hold another arena keep it, so calling it later helps less). It does nothing and
    returns False off Linux/glibc, or when `DL_XLA_DEFAULTS=0` or `DL_MALLOC_TUNING=0`.
    Returns True when all three settings were accepted.
    """
    if os.environ.get("DL_XLA_DEFAULTS", "1") == "0" or os.environ.get("DL_MALLOC_TUNING") == "0":
        return False
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
    ok = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, _INT_MAX)]
    return all(r == 1 for r in ok)
