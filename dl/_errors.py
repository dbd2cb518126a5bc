"""Helpers for error messages that say what was received, what was expected and the fix."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


def unknown_name(kind: str, got: object, valid: Iterable[str], hint: str = "") -> ValueError:
    """A ValueError for a name that is not one of `valid`, with a close-match suggestion."""
    valid = sorted(valid)
    msg = f"Unknown {kind} {got!r}. Valid choices: {', '.join(valid)}."
    close = difflib.get_close_matches(str(got), valid, n=1)
    if close:
        msg += f" Did you mean {close[0]!r}?"
    if hint:
        msg += f" {hint}"
    return ValueError(msg)


def check_positive_int(name: str, value: object) -> int:
    """Return `value` as an int if it is a positive integer, else raise a clear ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or int(value) != value
    ):
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}. Use a value >= 1.")
    return int(value)


def check_fraction(name: str, value: object, *, allow_zero: bool = True) -> float:
    """Return `value` as a float in [0, 1) (or (0, 1)), else raise a clear ValueError."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}.") from None
    lo_ok = v >= 0 if allow_zero else v > 0
    if not (lo_ok and v < 1):
        rng = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {rng}; got {value!r}.")
    return v


MAX_SEED = 2**32 - 1


def check_seed(value: object, name: str = "seed") -> int:
    """Return `value` as an int in [0, 2**32 - 1] (what JAX's and NumPy's generators take
    alike), else raise a clear ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, {MAX_SEED}]; got {value!r}.")
    return value


def available_memory() -> int | None:
    """Bytes this process may still allocate, as far as the OS says: the smaller of the
    physical memory not in use and the address-space limit (`ulimit -v`); None where
    neither can be read."""
    import os

    limits = []
    try:
        limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(int(soft))
    except (ImportError, ValueError, OSError):
        pass
    return min(limits) if limits else None


def format_bytes(n: float) -> str:
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"
