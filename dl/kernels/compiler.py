"""The XLA:CPU compiler options of `kernels="cpu"`, and `jit`, which adds them.

With `kernels="cpu"` on the CPU backend, `jit` compiles with two options, per compiled
function (the process's XLA_FLAGS and the user's own `jax.jit` calls are left alone):

- YNNPACK for dot products and reductions but not for convolutions, which XLA's own
  (Eigen) convolutions ran faster (`experiments/benchmarks/cnn_cpu.py`);
- XLA's per-call temporaries split into blocks of at most 16 MiB (or the program's
  largest value, when larger; no split above 30 MiB), which glibc's malloc can keep
  between calls once `tune_host_allocator()` has been called
  (`experiments/benchmarks/allocator.py`).

Either is left out when XLA_FLAGS already sets it or this jaxlib does not know it
(checked once by compiling a one-op program). With `kernels="xla"`, `jit` is `jax.jit`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import jax.extend
import numpy as np

from dl.kernels._select import resolve

YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# A repeated enum field: the value lists the YNNPACK fusion types kept, comma-separated
# (its default in jaxlib 0.10 also has LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION).
YNN_NO_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


@functools.cache
def _supported(backend: str, option: str, value: str) -> bool:
    try:
        x = jax.device_put(jax.numpy.zeros((), "float32"), jax.devices(backend)[0])
        jax.jit(lambda x: x + 1, compiler_options={option: value}).lower(x).compile()
    except Exception:  # an unknown option or value: this jaxlib cannot take it
        return False
    return True


def _cpu_options_apply(kernels: str, backend: str | None) -> bool:
    return resolve(kernels) == "cpu" and (backend or jax.default_backend()) == "cpu"


def compiler_options(kernels: str = "cpu", backend: str | None = None) -> dict[str, str]:
    """The XLA options `jit(..., kernels=kernels)` compiles with on `backend` (default:
    JAX's default backend): {} unless the CPU kernels run on the CPU backend (see the
    module docstring for when it is left out)."""
    if not _cpu_options_apply(kernels, backend):
        return {}
    backend = backend or jax.default_backend()
    if YNN_OPTION in os.environ.get("XLA_FLAGS", ""):
        return {}  # the user's own setting wins
    if not _supported(backend, YNN_OPTION, YNN_NO_CONVOLUTIONS):
        return {}
    return {YNN_OPTION: YNN_NO_CONVOLUTIONS}


HEAP_OPTION = "xla_multiheap_size_constraint_per_heap"
_MiB = 1 << 20
HEAP_LIMIT = 16 * _MiB
HEAP_LARGEST = 30 * _MiB  # above this a value's block would be mmap-ed anyway: no split


def _value_bytes(aval) -> int:
    shape, dtype = getattr(aval, "shape", None), getattr(aval, "dtype", None)
    if shape is None or dtype is None:
        return 0
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:  # extended dtypes (PRNG keys): small, and not plain buffers
        return 0
    return int(np.prod(shape, dtype=np.int64)) * itemsize


def _jaxprs_in(value):
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jax.extend.core.Jaxpr):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _jaxprs_in(v)


def largest_value_bytes(jaxpr) -> int:
    """The size in bytes of the largest value `jaxpr` (a Jaxpr or ClosedJaxpr) computes,
    in its own equations or in the jaxprs nested in them (scan bodies, branches, ...)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    best = max((_value_bytes(v.aval) for v in (*jaxpr.invars, *jaxpr.outvars)), default=0)
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            best = max(best, _value_bytes(v.aval))
        for param in eqn.params.values():
            for sub in _jaxprs_in(param):
                best = max(best, largest_value_bytes(sub))
    return best


def heap_limit(largest_bytes: int) -> int | None:
    """The per-block limit on XLA's temporaries for a program whose largest value is
    `largest_bytes`: HEAP_LIMIT, or the largest value rounded up to MiB where that is
    larger (XLA warns about every buffer over the limit), None (no split) above
    HEAP_LARGEST."""
    if largest_bytes > HEAP_LARGEST:
        return None
    return max(HEAP_LIMIT, -(-largest_bytes // _MiB) * _MiB)


class Jitted:
    """`jax.jit(fun, **kwargs)` with `compiler_options()`, plus a split of XLA:CPU's
    temporaries into blocks whose limit is chosen from the program's largest value at the
    first call or `lower` (see the module docstring). Later calls use the same choice
    (`jax.jit` still compiles once per input shape)."""

    def __init__(self, fun: Callable, options: dict[str, str], kwargs: dict, *, split: bool):
        functools.update_wrapper(self, fun)  # first: fun's __dict__ must not replace ours
        self._fun, self._options, self._kwargs = fun, options, kwargs
        self._base = jax.jit(fun, compiler_options=options or None, **kwargs)
        split = split and options.get(HEAP_OPTION) is None
        self._chosen = None if split else self._base
        self.heap_limit: int | None = None

    def _choose(self, args, kwargs):
        if self._chosen is None:
            largest = largest_value_bytes(self._base.trace(*args, **kwargs).jaxpr)
            self.heap_limit = heap_limit(largest)
            if self.heap_limit is None:
                self._chosen = self._base
            else:
                opts = {**self._options, HEAP_OPTION: str(self.heap_limit)}
                self._chosen = jax.jit(self._fun, compiler_options=opts, **self._kwargs)
        return self._chosen

    def __call__(self, *args, **kwargs):
        chosen = self._chosen or self._choose(args, kwargs)
        return chosen(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self._choose(args, kwargs).lower(*args, **kwargs)

    def trace(self, *args, **kwargs):
        return self._choose(args, kwargs).trace(*args, **kwargs)

    def eval_shape(self, *args, **kwargs):
        return self._base.eval_shape(*args, **kwargs)


def _split_applies(kernels: str = "cpu", backend: str | None = None) -> bool:
    if not _cpu_options_apply(kernels, backend):
        return False
    if HEAP_OPTION in os.environ.get("XLA_FLAGS", ""):
        return False  # the user's own setting wins
    return _supported(backend or jax.default_backend(), HEAP_OPTION, str(HEAP_LIMIT))


def jit(fun: Callable, *, kernels: str = "xla", **kwargs):
    """`jax.jit(fun, **kwargs)`; with `kernels="cpu"` (or "auto" on the CPU backend) it
    adds `compiler_options()` (options given in `kwargs["compiler_options"]` take
    precedence) and splits XLA's temporaries into blocks (see `Jitted`)."""
    if resolve(kernels) == "xla":
        return jax.jit(fun, **kwargs)
    options = {**compiler_options(kernels), **(kwargs.pop("compiler_options", None) or {})}
    return Jitted(fun, options, kwargs, split=_split_applies(kernels))
