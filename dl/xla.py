"""XLA compiler options that `dl` compiles its steps with, and `jit`, which adds them.

On the CPU backend, jaxlib 0.10's XLA hands convolutions to YNNPACK ("ynn fusions")
by default. On the 2-core machine of `experiments/benchmarks/` that made a small CNN's
train step 1.33x slower than XLA's own (Eigen) convolutions (47.5 vs 35.8 ms per step,
LeNet-5 8.6 vs 7.7 ms; `cnn_cpu.py`), while YNNPACK's matrix products are as fast as or faster than
the alternatives (MLP 1.97 vs 2.28 ms with every YNNPACK fusion off). So `dl` keeps
YNNPACK for dot products and reductions and turns it off for convolutions, per compiled
function through `jax.jit`'s `compiler_options`: the process's XLA_FLAGS and the
user's own `jax.jit` calls are left alone. The reductions stay with YNNPACK for
precision: with XLA's own float32 reductions, a BatchNorm CNN trained for 15 steps on
one device and on 8 differed by 1e-3 (with YNNPACK's, by 5e-6, as on the default
settings; tests/test_parallel.py).

The option is left out where it does not apply or where the user chose: on other
backends, when XLA_FLAGS already sets `xla_cpu_experimental_ynn_fusion_type`, when
`DL_XLA_DEFAULTS=0`, or when this jaxlib does not know the option (checked once by
compiling a one-op program with it).

Users who compile `dl.train.make_train_step` themselves get the same programs as
`fit` with `dl.xla.jit(step, donate_argnums=0)`.

XLA:CPU allocates a call's temporaries afresh on every call, by default as one block
(175 MB for the benchmark decoder LM's train step, 46 MB for its CNN's). glibc's malloc
serves blocks that large with mmap and returns them with munmap, so each call pays a
page fault for every page it touches (45,500 per LM step). `dl.xla.jit` therefore also
asks XLA to split the temporaries into blocks of at most 16 MiB
(`xla_multiheap_size_constraint_per_heap`), and `tune_host_allocator` (applied by
`import dl` unless `DL_MALLOC_TUNING=0`) makes malloc keep such blocks' memory between
calls. XLA logs a warning for every single buffer larger than the limit, so the limit
is chosen per program from its largest intermediate value (the program is traced once
at the first call or `lower`, a trace that `jax.jit` reuses): 16 MiB, or the largest
value where that is larger, and no split at all where a value exceeds 30 MiB (glibc
would map such a block afresh anyway). Measured in `experiments/benchmarks/allocator.py`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import jax.extend
import numpy as np

from dl._host import host_allocator_tuned, tune_host_allocator  # noqa: F401  (this module's API)

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


def cpu_defaults_apply(backend: str | None = None) -> bool:
    """Whether dl's CPU-specific choices apply on `backend` (default: JAX's default
    backend): the compiler options and the split here, and the CPU formulations of
    `dl.models.attention` and `dl.models.layers.dense_dot_general`. True on the CPU
    backend, unless the environment sets `DL_XLA_DEFAULTS=0`."""
    backend = backend or jax.default_backend()
    return backend == "cpu" and os.environ.get("DL_XLA_DEFAULTS", "1") != "0"


def compiler_options(backend: str | None = None) -> dict[str, str]:
    """The XLA options `dl` compiles with on `backend` (default: JAX's default backend).

    {} unless on CPU (see the module docstring for when it is left out)."""
    backend = backend or jax.default_backend()
    if not cpu_defaults_apply(backend):
        return {}
    if YNN_OPTION in os.environ.get("XLA_FLAGS", ""):
        return {}  # the user's own setting wins
    if not _supported(backend, YNN_OPTION, YNN_NO_CONVOLUTIONS):
        return {}
    return {YNN_OPTION: YNN_NO_CONVOLUTIONS}


HEAP_OPTION = "xla_multiheap_size_constraint_per_heap"
_MiB = 1 << 20
HEAP_LIMIT = 16 * _MiB  # alone, it took the CNN step from 31.5 to 18.5 ms (allocator.py)
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

    def __init__(self, fun: Callable, options: dict[str, str], kwargs: dict):
        functools.update_wrapper(self, fun)  # first: fun's __dict__ must not replace ours
        self._fun, self._options, self._kwargs = fun, options, kwargs
        self._base = jax.jit(fun, compiler_options=options or None, **kwargs)
        split = options.get(HEAP_OPTION) is None and _split_applies()
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


def _split_applies(backend: str | None = None) -> bool:
    backend = backend or jax.default_backend()
    if not cpu_defaults_apply(backend):
        return False
    if HEAP_OPTION in os.environ.get("XLA_FLAGS", ""):
        return False  # the user's own setting wins
    return _supported(backend, HEAP_OPTION, str(HEAP_LIMIT))


def jit(fun: Callable, **kwargs) -> Jitted:
    """`jax.jit(fun, **kwargs)` with `compiler_options()` added (options given in
    `kwargs["compiler_options"]` take precedence) and, on CPU, XLA's temporaries split
    into blocks (see `Jitted`)."""
    options = {**compiler_options(), **(kwargs.pop("compiler_options", None) or {})}
    return Jitted(fun, options, kwargs)
