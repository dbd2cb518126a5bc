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
`fit` with `dl.xla.jit(step, donate_argnums=0)`, or with
`jax.jit(step, compiler_options=dl.xla.compiler_options())`.

`tune_host_allocator` (opt-in: `DL_MALLOC_TUNING=1`, read by `import dl`) keeps
glibc's malloc from handing XLA:CPU a fresh mapping for every call's temporaries: a
1.5x faster step for the benchmark LM and CNN, a slower one for steps made of many small
operations. See its docstring.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax

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


def compiler_options(backend: str | None = None) -> dict[str, str]:
    """The XLA options `dl` compiles with on `backend` (default: JAX's default backend).

    {} unless on CPU (see the module docstring for when it is left out)."""
    backend = backend or jax.default_backend()
    if backend != "cpu" or os.environ.get("DL_XLA_DEFAULTS", "1") == "0":
        return {}
    if YNN_OPTION in os.environ.get("XLA_FLAGS", ""):
        return {}  # the user's own setting wins
    if not _supported(backend, YNN_OPTION, YNN_NO_CONVOLUTIONS):
        return {}
    return {YNN_OPTION: YNN_NO_CONVOLUTIONS}


def jit(fun: Callable, **kwargs) -> Callable:
    """`jax.jit(fun, **kwargs)` with `compiler_options()` added (options given in
    `kwargs["compiler_options"]` take precedence)."""
    options = {**compiler_options(), **(kwargs.pop("compiler_options", None) or {})}
    return jax.jit(fun, compiler_options=options or None, **kwargs)
