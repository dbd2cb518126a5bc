"""Listeners told when a training run ends (`dl.train.fit`, `dl.train.train_seeds`, an
ELM's fit): how `dl reproduce` counts an experiment's runs for its progress bar. Empty,
and so free, unless a caller registers one."""

from __future__ import annotations

from collections.abc import Callable

listeners: list[Callable[[str], None]] = []


def ran(kind: str) -> None:
    """Tell every listener that a run of `kind` ("fit", "train_seeds", "elm") ended."""
    for listener in list(listeners):
        listener(kind)
