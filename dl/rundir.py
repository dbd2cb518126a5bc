"""A run folder belongs to one run: `dl train --out DIR` claims DIR for one run.

- A new run into a folder that already holds a run's files (config, checkpoints,
  results, metrics) is refused: continue that run with `--resume DIR`, pick another
  `--out`, or pass `--overwrite` to clear those files first.
- While a run writes, it holds an exclusive lock on `DIR/.dl.lock` (an OS lock: it is
  released when the process ends, even by SIGKILL), so a second process cannot write
  into the same folder at the same time.
- The folder is checked up front: it must be (or become) a writable folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# What a run writes into its folder; any of them present means "this folder has a run".
RUN_FILES = (
    "config.json",
    "checkpoints",
    "results.json",
    "metrics.jsonl",
    "curves.png",
    "samples.txt",
    "samples.png",
    "samples_by_class.png",
    "reconstructions.png",
    "denoising.png",
    "interpolation.png",
)
LOCK_NAME = ".dl.lock"


class RunFolderError(ValueError):
    """The run folder cannot be used: it holds another run, is locked, or is unwritable."""


def run_files(out: Path) -> list[str]:
    """The run files present in `out`, in `RUN_FILES` order. An empty `checkpoints`
    folder does not count: in a multi-process run the other processes' checkpoint
    manager may create it before process 0 claims the folder."""

    def present(name: str) -> bool:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            return any(path.iterdir())
        return path.exists() or path.is_symlink()

    return [n for n in RUN_FILES if present(n)]


class RunFolder:
    """Claim `out` for one run (a context manager; the lock is released on exit).

    Args:
      out: the run folder (created if missing).
      resume: the run continues the one already in `out` (its files must be there).
      overwrite: a new run may replace the run files already in `out` (they are
        deleted once the lock is held; other files are left alone).
    """

    def __init__(self, out, *, resume: bool = False, overwrite: bool = False):
        self.out = Path(out)
        self.resume, self.overwrite = resume, overwrite
        self._fd: int | None = None

    def __enter__(self) -> RunFolder:
        out = self.out
        if out.exists() and not out.is_dir():
            raise RunFolderError(
                f"--out {out} exists and is not a folder; name a folder (new or holding "
                "this run) instead."
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunFolderError(
                f"Cannot write to the run folder {out} ({e.strerror or e}); choose a "
                "writable --out."
            ) from e
        self._lock(out)
        try:
            self._check_contents(out)
        except BaseException:
            self._release()
            raise
        return self

    def _lock(self, out: Path) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; the content check remains
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self._release()
            raise RunFolderError(
                f"The run folder {out} is in use by another dl process (it holds "
                f"{out / LOCK_NAME}). Wait for it to finish, or choose another --out."
            ) from e
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def _check_contents(self, out: Path) -> None:
        present = run_files(out)
        if self.resume:
            if "config.json" not in present:
                raise RunFolderError(
                    f"Cannot resume from {out}: no config.json there. Pass the --out folder "
                    "of an earlier `dl train` run."
                )
            return
        if not present:
            return
        if not self.overwrite:
            raise RunFolderError(
                f"The run folder {out} already holds a run ({', '.join(present)}). Continue "
                f"it with `dl train --resume {out}`, choose a new --out, or pass --overwrite "
                "to delete that run's files first."
            )
        for name in present:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __exit__(self, *exc) -> None:
        self._release()
