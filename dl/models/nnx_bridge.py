"""Flax NNX modules in dl's pure steps: split into a graph definition and plain state,
merged again inside each step.

dl's steps, `create_state`, `fit` and checkpoints speak Linen's functional protocol
(`init(rngs, x)` -> variables, `apply(variables, x, rngs=, mutable=)`). `FromNNX`
gives an NNX module that protocol:

- its `nnx.Param`s are the "params" collection and its `nnx.BatchStat`s the
  "batch_stats" one, as nested dicts of arrays (so optax, orbax and `jax.tree` see
  ordinary pytrees);
- `apply` merges them with the graph definition into a fresh module, puts it in
  training or evaluation mode (`module.train()` / `module.eval()`: dropout on or off,
  batch norm on batch or running statistics), reseeds its random streams from the
  step's keys, calls it, and returns the updated batch statistics. Nothing outside the
  step is mutated, so the step stays pure (jit, grad, vmap).

An NNX module is initialised when it is built (its `nnx.Rngs`), so `create_state`'s
seed does not re-draw its parameters; the seed still sets dropout keys and data order.
"""

from __future__ import annotations

from typing import Any

import jax


def is_nnx(model) -> bool:
    """Whether `model` is a Flax NNX module (without importing NNX when it is not)."""
    try:
        from flax import nnx
    except ImportError:  # a Flax without NNX
        return False
    return isinstance(model, nnx.Module)


class FromNNX:
    """An NNX module with Linen's `init` / `apply`; see the module docstring.

    Args:
      module: an initialised `flax.nnx.Module` whose `__call__(x)` returns the outputs.
    """

    def __init__(self, module):
        from flax import nnx

        if not is_nnx(module):
            raise ValueError(f"FromNNX needs a flax.nnx.Module; got {type(module).__name__}.")
        self.name = type(module).__name__
        self._graphdef, params, stats, rest = nnx.split(module, nnx.Param, nnx.BatchStat, ...)
        self._templates = (params, stats, rest)
        self._params = _pure(params)
        self._stats = _pure(stats)

    def __repr__(self) -> str:
        return f"FromNNX({self.name})"

    def __call__(self, x, train: bool = False):
        """Not called by dl (it calls `apply`); here so that `dl.models.mode_kwargs`
        finds the `train` flag that `apply` takes."""
        raise TypeError(f"Call {self!r} through .apply(variables, x, train=...).")

    def init(self, rngs, x, train: bool = False) -> dict[str, Any]:
        """The module's own initial variables (its parameters were drawn when it was
        built); `rngs` and `x` are accepted for Linen's signature."""
        del rngs, x, train
        out = {"params": jax.tree.map(jax.numpy.asarray, self._params)}
        if self._stats:
            out["batch_stats"] = jax.tree.map(jax.numpy.asarray, self._stats)
        return out

    def apply(
        self,
        variables,
        x,
        *,
        train: bool = False,
        rngs: dict[str, jax.Array] | None = None,
        mutable=(),
    ):
        """Linen's `apply`: the outputs, and with `mutable` the updated collections
        ({"batch_stats": ...} in training when the module has batch statistics)."""
        from flax import nnx

        params, stats, rest = (jax.tree.map(lambda a: a, t) for t in self._templates)
        nnx.replace_by_pure_dict(params, variables["params"])
        if self._stats:
            nnx.replace_by_pure_dict(stats, variables.get("batch_stats", self._stats))
        module = nnx.merge(self._graphdef, params, stats, rest)
        if rngs:
            _reseed(module, rngs)
        if train:
            module.train()
        else:
            module.eval()
        out = module(x)
        if not mutable:
            return out
        mutated = {}
        if "batch_stats" in mutable and self._stats:
            mutated["batch_stats"] = _pure(nnx.state(module, nnx.BatchStat))
        return out, mutated


def _reseed(module, rngs: dict[str, jax.Array]) -> None:
    """Every random stream of `module` from this step's keys: a stream named like one of
    dl's ("dropout", "noise", ...) takes that key; any other (e.g. "default", which
    `nnx.Dropout` falls back to when the module's `nnx.Rngs` has no "dropout") is folded
    from the "dropout" key with its position, so each step draws afresh."""
    from flax import nnx

    tags = sorted(
        {node.tag for _, node in nnx.iter_graph(module) if isinstance(node, nnx.RngStream)}
    )
    if not tags:
        return
    base = rngs.get("dropout", next(iter(rngs.values())))
    keys = {
        t: rngs[t] if t in rngs else jax.random.fold_in(base, 1000 + i) for i, t in enumerate(tags)
    }
    nnx.reseed(module, **keys)


def _pure(state) -> dict:
    """An `nnx.State` as nested dicts of arrays (`nnx.to_pure_dict` where this Flax has
    it; the older `State.to_pure_dict` otherwise)."""
    from flax import nnx

    to_pure = getattr(nnx, "to_pure_dict", None)
    return to_pure(state) if to_pure is not None else state.to_pure_dict()
