"""What dl's CPU kernels share: custom VJPs that keep their inputs as residuals, and a
clear error for forward-mode differentiation, which a custom VJP cannot give."""

from __future__ import annotations

from collections.abc import Callable

import jax


class ForwardModeError(TypeError):
    """Forward-mode AD (`jax.jvp`, `jax.jacfwd`, `jax.linearize` of a jvp) reached one of
    dl's CPU kernels, which are custom VJPs and have no forward-mode rule."""


def _current_layer() -> str | None:
    """The path of the Flax module being applied, e.g. "block0/attn", if any."""
    try:
        from flax.linen.module import _context

        stack = _context.module_stack
        module = stack[-1] if stack else None
        path = getattr(module, "path", None) if module is not None else None
        if path:
            return "/".join(str(p) for p in path)
        return type(module).__name__ if module is not None else None
    except Exception:  # flax's private context moved: the message just names no layer
        return None


def _under_forward_mode(x) -> bool:
    """Whether `x` is traced by a forward-mode (JVP) transformation at the top.

    Reverse mode (`jax.grad`, `jax.vjp`) traces with a LinearizeTracer on top and a
    Hessian (`jacfwd(jacrev(f))`) puts the LinearizeTracer above the JVPTracer: both
    work with a custom VJP. Only a JVPTracer on top means a jvp that would fail. JAX
    versions whose reverse mode still traces with JVPTracers are not checked here (they
    then raise JAX's own error)."""
    from jax._src.interpreters import ad

    if not isinstance(x, ad.JVPTracer):
        return False
    direct = getattr(jax.config, "jax_use_direct_linearize", True)
    return bool(direct)


def reverse_mode_only(kernel: str, *arrays) -> None:
    """Raise a `ForwardModeError` naming the layer and the fix when any of `arrays` is
    traced by forward-mode AD."""
    if not any(_under_forward_mode(a) for a in arrays):
        return
    layer = _current_layer()
    where = f" in layer {layer!r}" if layer else ""
    raise ForwardModeError(
        f"Forward-mode differentiation (jax.jvp, jax.jacfwd) reached dl's CPU {kernel} "
        f"kernel{where}, which defines reverse-mode gradients only. Build the model with "
        "kernels='xla' (the default of dl.models.get_model; `--kernels xla` on the command "
        "line) to use JAX's own operations, which support every transformation."
    )


def vjp_keeping_inputs(forward: Callable, backward: Callable) -> Callable:
    """`forward(x, w, static)` as a custom VJP (`static` hashable, not differentiated)
    whose residuals are its inputs: `backward(static, (x, w), g)` returns (dx, dw)."""
    fn = jax.custom_vjp(forward, nondiff_argnums=(2,))
    # fn, not forward: a gradient's jaxpr then still shows the custom call
    fn.defvjp(lambda x, w, static: (fn(x, w, static), (x, w)), backward)
    return fn
