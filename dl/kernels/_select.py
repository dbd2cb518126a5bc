"""The one argument that chooses dl's kernels: "xla", "cpu" or "auto"."""

from __future__ import annotations

import jax

from dl._errors import unknown_name

KERNELS = ("xla", "cpu", "auto")


def resolve(kernels: str) -> str:
    """ "xla" or "cpu" for a `kernels` choice: "auto" is "cpu" on JAX's CPU backend and
    "xla" elsewhere (the one backend check of dl's kernels)."""
    if kernels not in KERNELS:
        raise unknown_name("kernels", kernels, KERNELS)
    if kernels == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "xla"
    return kernels
