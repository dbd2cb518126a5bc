"""Checkpoints on orbax-checkpoint: whole or not at all, verified on restore.

A checkpoint (one step folder, committed by orbax with an atomic rename) holds two items:

- "state": the `TrainState` arrays (the PRNG key stored as its raw uint32 data);
- "meta": JSON with the data-iterator position (epoch, batch within the epoch), the
  partial metric sums of the current epoch, the metrics history, the run's config, the
  tree layout (path -> shape, dtype), a SHA-256 of every array, and a SHA-256 of the
  metadata itself (so an edited position, history or config is detected too).

On restore the layout is compared with the model's (another model's checkpoint is
rejected with the first difference named) and every array's checksum is verified
(truncated or altered files are detected even where the storage layer would not notice).
Restoring "latest" falls back to the newest intact checkpoint and warns about the ones
it skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

META_VERSION = 2  # 2: the metadata carries its own checksum ("meta_sha256")


def _meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the metadata's canonical JSON, without its own checksum field."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or does not match the model it is restored into."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint is intact but was written for another model or configuration."""


@dataclasses.dataclass
class Restored:
    """What `CheckpointManager.restore` returns.

    Attributes:
      state: the restored `TrainState`.
      step: the checkpoint's step.
      meta: the JSON item: "epoch" (epochs completed), "batch" (batches done in the
        current epoch), "history", "epoch_sums", "config", "metrics", ...
      skipped: damaged newer steps that were skipped, as (step, reason) pairs.
    """

    state: Any
    step: int
    meta: dict[str, Any]
    skipped: list[tuple[int, str]]


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _to_saveable(state) -> dict[str, Any]:
    """The state's arrays as a plain dict; a typed PRNG key becomes its uint32 data."""
    rng = state.rng
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    tree = {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "rng": rng,
    }
    if getattr(state, "ema_params", None) is not None:  # `create_state(ema=True)`
        tree["ema_params"] = state.ema_params
    return tree


def _hashes(tree) -> dict[str, str]:
    """path -> SHA-256 of the array's bytes, for every array."""
    return {
        _path_str(path): hashlib.sha256(
            np.ascontiguousarray(jax.device_get(leaf)).tobytes()
        ).hexdigest()
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _compare_layouts(saved: dict[str, list], expected: dict[str, list]) -> str | None:
    """The first difference between two layouts, in words, or None."""
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing:
        return (
            f"the model has {missing[0]!r} ({len(missing)} such arrays) that the checkpoint lacks"
        )
    if extra:
        return f"the checkpoint has {extra[0]!r} ({len(extra)} such arrays) that the model lacks"
    for key in sorted(expected):
        if list(saved[key][0]) != list(expected[key][0]) or saved[key][1] != expected[key][1]:
            return (
                f"{key!r} is {saved[key][1]}{tuple(saved[key][0])} in the checkpoint but "
                f"{expected[key][1]}{tuple(expected[key][0])} in the model"
            )
    return None


class CheckpointManager:
    """Save every N steps and at the end; keep the last K and the best; restore safely.

    Args:
      directory: folder of the step sub-folders (created if missing).
      keep_last: how many of the newest checkpoints to keep (>= 1).
      best_metric: a metric name passed to `save(metrics=...)`, e.g. "val/accuracy";
        the best checkpoint by it is kept as well as the last `keep_last`.
      best_mode: "max" or "min" for `best_metric`.

    Example:
      >>> mngr = CheckpointManager("runs/x/checkpoints", keep_last=2)  # doctest: +SKIP
      >>> mngr.save(state, meta={"epoch": 1, "batch": 0})  # doctest: +SKIP
      >>> restored = mngr.restore(state, "latest")  # doctest: +SKIP
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep_last: int = 3,
        best_metric: str | None = None,
        best_mode: str = "max",
    ):
        import orbax.checkpoint as ocp

        from dl._errors import check_positive_int

        self.keep_last = check_positive_int("keep_last", keep_last)
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min'; got {best_mode!r}.")
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(f"Checkpoint path {self.directory} exists and is not a folder.")
        self.best_metric, self.best_mode = best_metric, best_mode
        # Only orbax's current (non-deprecated) arguments: the items' handlers through a
        # registry, and no preservation policy or best_fn: orbax keeps every step and
        # `_prune` keeps the last `keep_last` and the best by dl's own verified metadata.
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        for item, save_args, restore_args in (
            ("state", ocp.args.StandardSave, ocp.args.StandardRestore),
            ("meta", ocp.args.JsonSave, ocp.args.JsonRestore),
        ):
            registry.add(item, save_args)
            registry.add(item, restore_args)
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=False,  # a save returns only once it is committed
            create=True,
            cleanup_tmp_directories=True,  # leftovers of a killed save are removed, never read
        )
        self._ocp = ocp
        self._mngr = ocp.CheckpointManager(
            self.directory, options=options, handler_registry=registry
        )

    def steps(self) -> list[int]:
        """The committed checkpoint steps, oldest first."""
        self._mngr.reload()
        return sorted(self._mngr.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """Step of the best checkpoint by `best_metric` (None without one)."""
        if self.best_metric is None:
            return None
        scored = []
        for s in self.steps():
            try:
                m = self._read_meta(s).get("metrics") or {}
            except CheckpointError:
                continue
            if self.best_metric in m:
                scored.append((m[self.best_metric], s))
        if not scored:
            return None
        pick = max if self.best_mode == "max" else min
        return pick(scored)[1]

    def save(
        self,
        state,
        *,
        meta: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> int:
        """Write a checkpoint of `state` at `state.step`, whole or not at all.

        Args:
          state: a `TrainState`.
          meta: JSON-serialisable run information (iterator position, history, config).
          metrics: scalar metrics of this step; `best_metric` must be among them to
            take part in best-checkpoint selection.

        Returns:
          The step written.
        """
        step = int(state.step)
        tree = _to_saveable(state)
        if self.best_metric is not None and self.best_metric not in (metrics or {}):
            metrics = None  # not a candidate for "best"; kept only while among the last K
        full_meta = dict(
            meta or {},
            version=META_VERSION,
            step=step,
            layout=_layout(tree),
            sha256=_hashes(tree),
            metrics=metrics or {},
        )
        # Through JSON first, so the digest is of exactly what is stored and read back.
        full_meta = json.loads(json.dumps(full_meta, allow_nan=True))
        full_meta["meta_sha256"] = _meta_digest(full_meta)
        if step in self.steps():  # e.g. the end-of-run save right after a periodic one
            self._mngr.delete(step)
        args = self._ocp.args
        self._mngr.save(
            step,
            args=args.Composite(state=args.StandardSave(tree), meta=args.JsonSave(full_meta)),
            force=True,
        )
        self._mngr.wait_until_finished()
        self._prune()
        return step

    def _prune(self) -> None:
        """Delete all but the newest `keep_last` checkpoints and the best one."""
        steps = self.steps()
        keep = set(steps[-self.keep_last :])
        best = self.best_step()
        if best is not None:
            keep.add(best)
        for step in steps:
            if step not in keep:
                self._mngr.delete(step)

    def _read_meta(self, step: int) -> dict[str, Any]:
        args = self._ocp.args
        try:
            out = self._mngr.restore(step, args=args.Composite(meta=args.JsonRestore()))
            meta = dict(out["meta"])
        except Exception as e:  # orbax raises many types for unreadable files
            raise CheckpointError(f"its metadata cannot be read ({type(e).__name__}: {e})") from e
        if not isinstance(meta.get("layout"), dict) or not isinstance(meta.get("sha256"), dict):
            raise CheckpointError("its metadata lacks the layout and checksums")
        if meta.get("version") != META_VERSION:
            raise CheckpointError(
                f"its metadata is version {meta.get('version')!r}, this dl reads version "
                f"{META_VERSION} (an older dl wrote it without the metadata checksum)"
            )
        if meta.get("meta_sha256") != _meta_digest(meta):
            raise CheckpointError("its metadata fails its checksum (edited or damaged)")
        return meta

    def _restore_step(self, target, step: int) -> Restored:
        meta = self._read_meta(step)
        expected_tree = _to_saveable(target)
        expected_layout = _layout(expected_tree)
        diff = _compare_layouts(meta["layout"], expected_layout)
        if diff is not None:
            raise CheckpointMismatchError(
                f"Checkpoint step {step} in {self.directory} does not fit the model: {diff}. "
                "It was written by another model or configuration; restore it into the same "
                "model, or start a fresh run in another folder."
            )
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, expected_tree)
        args = self._ocp.args
        try:
            out = self._mngr.restore(
                step, args=args.Composite(state=args.StandardRestore(abstract))
            )
            tree = out["state"]
        except Exception as e:
            raise CheckpointError(f"its arrays cannot be read ({type(e).__name__}: {e})") from e
        hashes = _hashes(tree)
        bad = sorted(k for k in hashes if hashes[k] != meta["sha256"].get(k))
        if bad:
            raise CheckpointError(f"checksum mismatch in {len(bad)} arrays, first {bad[0]!r}")
        rng = tree["rng"]
        if jax.dtypes.issubdtype(target.rng.dtype, jax.dtypes.prng_key):
            rng = jax.random.wrap_key_data(rng, impl=jax.random.key_impl(target.rng))
        state = target.replace(
            step=tree["step"],
            params=tree["params"],
            batch_stats=tree["batch_stats"],
            opt_state=tree["opt_state"],
            rng=rng,
        )
        if "ema_params" in tree:
            state = state.replace(ema_params=tree["ema_params"])
        return Restored(state=state, step=step, meta=meta, skipped=[])

    def restore(self, target, which: str | int = "latest") -> Restored:
        """Restore into the structure of `target` (a `TrainState` of the same model).

        Args:
          target: a state whose tree layout the checkpoint must match (e.g. a fresh
            `create_state` of the same model and optimizer).
          which: "latest", "best" or a step number. "latest" skips damaged checkpoints
            (with a warning naming each) and returns the newest intact one.

        Returns:
          A `Restored`.

        Raises:
          CheckpointError: no (intact) checkpoint, or the requested one is damaged.
          CheckpointMismatchError: the checkpoint belongs to another model.
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"No checkpoint in {self.directory}: nothing to restore.")
        if which == "latest":
            candidates = steps[::-1]
        elif which == "best":
            best = self.best_step()
            if best is None:
                raise CheckpointError(
                    f"No best checkpoint in {self.directory}: best_metric is "
                    f"{self.best_metric!r} and no checkpoint recorded it."
                )
            candidates = [best]
        elif isinstance(which, int) and not isinstance(which, bool):
            if which not in steps:
                raise CheckpointError(
                    f"No checkpoint at step {which} in {self.directory}; steps present: {steps}."
                )
            candidates = [which]
        else:
            raise ValueError(f"which must be 'latest', 'best' or a step; got {which!r}.")
        skipped: list[tuple[int, str]] = []
        for step in candidates:
            try:
                restored = self._restore_step(target, step)
            except CheckpointMismatchError:
                raise
            except CheckpointError as e:
                if which != "latest":
                    raise CheckpointError(
                        f"Checkpoint step {step} in {self.directory} is damaged: {e}."
                    ) from e
                skipped.append((step, str(e)))
                continue
            if skipped:
                warnings.warn(
                    "Skipped damaged checkpoint(s) "
                    + "; ".join(f"step {s}: {r}" for s, r in skipped)
                    + f". Restored step {step}, the newest intact one.",
                    stacklevel=2,
                )
            restored.skipped = skipped
            return restored
        raise CheckpointError(
            f"Every checkpoint in {self.directory} is damaged: "
            + "; ".join(f"step {s}: {r}" for s, r in skipped)
        )

    def close(self) -> None:
        self._mngr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _layout(tree) -> dict[str, list]:
    """path -> [shape, dtype] of every array, without reading the values."""
    return {
        _path_str(path): [list(np.shape(leaf)), str(np.dtype(leaf.dtype))]
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }
