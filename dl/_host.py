"""Host-memory settings, opt-in (no JAX import here, so that `import dl` can apply them
before JAX starts and stays cheap). `dl.xla` re-exports them."""

from __future__ import annotations

import ctypes
import functools
import sys

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_INT_MAX = 2**31 - 1  # mallopt takes an int


_STATE = {"tuned": False}


def host_allocator_tuned() -> bool:
    """Whether `tune_host_allocator` has changed this process's malloc settings."""
    return _STATE["tuned"]


@functools.cache
def tune_host_allocator() -> bool:
    """Make glibc's malloc keep and reuse the memory that XLA:CPU frees between calls.
    Opt-in: `DL_MALLOC_TUNING=1` makes `import dl` call it, or call it yourself before
    JAX runs anything (threads that already hold a malloc arena keep it).

    Why: XLA:CPU allocates each call's temporaries as one block (175 MB for the decoder
    LM step of `experiments/benchmarks/steps.py`, 46 MB for its CNN) on a worker thread,
    and glibc serves a block that large on a worker thread with mmap and returns it with
    munmap, so every call takes a page fault per 4 KiB page it touches (45,500 per LM
    step). This sets, for the whole process (malloc is shared with NumPy, PyTorch and
    the rest): one malloc arena for all threads (M_ARENA_MAX=1, so that XLA's threads
    allocate from the heap the next two settings govern), no mmap for large blocks
    (M_MMAP_MAX=0), and up to 2 GiB of freed memory at the top of the heap kept rather
    than returned to the system (M_TRIM_THRESHOLD).

    Measured (`experiments/benchmarks/allocator.py`, child processes with and without it
    in turn, medians of 3 each): the LM step 119.8 -> 75.7 ms and the CNN step 32.4 ->
    19.5 ms (page faults per step 45,688 -> 0 and 11,704 -> 975); but one shared arena
    makes threads wait on its lock, and steps made of many small operations got slower:
    LSTM 11.5 -> 14.9 ms, LeNet-5 7.8 -> 9.8 ms, MLP 2.0 -> 2.3 ms, and PyTorch's LSTM
    step in the same process 7.5 -> 10.6 ms. Hence opt-in.
    Results are bit-for-bit the same (tests/test_xla_options.py); the process's resident
    memory stays near its peak instead of shrinking after big temporaries.

    Returns True when all three settings were accepted; False (and changes nothing) off
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
    ok = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, _INT_MAX)]
    _STATE["tuned"] = all(r == 1 for r in ok)
    return _STATE["tuned"]
