"""Host-memory settings (no JAX import here, so that `import dl` can apply them and stay
cheap). `dl.xla` re-exports them."""

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

    `import dl` calls it unless `DL_MALLOC_TUNING=0` is in the environment. The settings
    are read by every later malloc and free, so it can be called at any time.

    Why: XLA:CPU allocates each call's temporaries afresh on a worker thread (for the
    decoder LM step of `experiments/benchmarks/steps.py`, 175 MB in one block). glibc
    serves a block over its mmap threshold with mmap and returns it with munmap, and it
    deletes a worker thread's heap once nothing in it is in use; either way the next
    call takes a page fault per 4 KiB page it touches (45,500 per LM step). `dl.xla.jit`
    has XLA split the temporaries into blocks of at most 16 MiB (see `dl.xla`); these
    settings then keep those blocks' memory mapped:

    - M_MMAP_THRESHOLD = 32 MiB: blocks below it come from malloc's heaps, not mmap (the
      value glibc's own sliding threshold reaches, fixed from the start);
    - M_TOP_PAD = 64 MiB: a heap keeps 64 MiB of slack, so a worker thread's heap
      is not deleted and made again on every call;
    - M_TRIM_THRESHOLD = 256 MiB: up to 256 MiB of free memory at the top of a heap is
      kept rather than returned to the system.

    The cost is memory: freed memory up to those amounts stays with the process.
    Measured in `experiments/benchmarks/allocator.py` (child processes per configuration
    in turn, medians of 3 each; `report.py --run` of 2026-11-21): with the split and
    these settings the CNN step took 16.6 ms and the LM's 69.2 ms, with the split alone
    18.5 and 97.0 ms, with neither 31.5 and 112.6 ms; the MLP, LeNet-5 and LSTM steps
    moved by 3% or less, and PyTorch's steps in the same processes by 5% or less.
    Results are bit-for-bit the same (tests/test_xla_options.py).

    (An earlier version also set M_ARENA_MAX=1, so that all threads shared one heap:
    as fast for the LM, but threads then wait on that heap's lock, and steps made of
    many small operations got slower, PyTorch's too: LSTM 11.5 -> 14.9 ms.)

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
