"""The Lance-backed episode store: writer, reader, training windows, collection.

Public names are imported lazily so `import data` stays fast (torch and lance load
on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

from .collect import collect  # light; binds `data.collect` to the function, not the module
from .errors import DatasetError, SchemaMismatchError

_LAZY = {
    "EpisodeWriter": "writer",
    "compact_dataset": "writer",
    "EpisodeDataset": "dataset",
    "open_dataset": "dataset",
    "validate_dataset": "dataset",
    "repair_dataset": "repair",
    "WindowDataset": "windows",
    "WindowSampler": "windows",
    "EpisodeGroupSampler": "windows",
    "select_episodes": "windows",
    "collate_windows": "windows",
    "SCHEMA_VERSION": "schema",
}

__all__ = ["DatasetError", "SchemaMismatchError", "collect", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
