"""Recognising what this project wrote, before anything at a user's path is replaced.

Only outputs this project wrote are ever deleted or replaced: a Lance dataset (its
`meta.json` names the store's format), the converters' HDF5 files, MP4 and LeRobot
folders (their markers, checked in `data/convert/`), `wm data preview` videos (a marker
box/comment in the file, `data/preview.py`). A recogniser returns None for such an output
and otherwise a short reason naming what is missing or what does not belong there; an
output folder holding anything its writer does not write (a user's ``notes.txt``) is not
replaced either, since replacing it would delete that file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Iterable

from . import columns as C
from .schema import FORMAT

Recogniser = Callable[[Path], "str | None"]
"""``recognise(path) -> None`` when `path` is this project's output of one kind, else why not."""

DATASET_ENTRIES = (C.META_FILE, C.STEPS_TABLE, C.EPISODES_TABLE, C.LOCK_FILE)
"""The top-level entries of a dataset directory (`data/dataset.py`)."""


def foreign_entries(folder: Path, allowed: Iterable[str] = (), pattern: str | None = None) -> list[str]:
    """Names in `folder` that are neither in `allowed` nor fully match the regex `pattern`, sorted."""
    allowed = set(allowed)
    return sorted(
        name for name in os.listdir(folder) if name not in allowed and not (pattern and re.fullmatch(pattern, name))
    )


def describe_foreign(names: list[str], limit: int = 5) -> str:
    """``'a.txt', 'b'`` (and how many more) for an error message."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def json_marker(path: Path, key: str = "format") -> object:
    """``json[key]`` of the JSON object file at `path`, or None when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value.get(key) if isinstance(value, dict) else None


def dataset_not_ours(path: Path) -> str | None:
    """None if `path` is a dataset directory this project wrote (meta.json of the store's
    format, nothing but the dataset's own entries); else the reason it is not."""
    if not path.is_dir() or path.is_symlink():
        return "not a directory"
    if not (path / C.META_FILE).is_file():
        return f"not a dataset (no {C.META_FILE})"
    if json_marker(path / C.META_FILE) != FORMAT:
        return f"not a dataset this project wrote ({C.META_FILE} does not name format {FORMAT!r})"
    extra = foreign_entries(path, DATASET_ENTRIES)
    if extra:
        return f"a dataset that also holds files this project did not write ({describe_foreign(extra)})"
    return None


def replaceable(path: Path, recognise: Recogniser, is_dir: bool) -> str | None:
    """None if the existing `path` may be replaced by a new output of the kind `recognise`
    knows (an empty folder may always be, when the output is a folder); else the reason."""
    if path.is_symlink():
        return "is a symbolic link"
    if is_dir:
        if not path.is_dir():
            return "is a file, not a folder"
        if not any(path.iterdir()):
            return None
    elif not path.is_file():
        return "is a folder, not a file" if path.is_dir() else "is not a regular file"
    return recognise(path)


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing folder-or-file above `path` when it is a file (nothing can be
    created under it), else None."""
    for p in path.parents:
        if p.exists():
            return None if p.is_dir() else p
    return None


def refuse_message(path: Path, why: str) -> str:
    """The one error text for an output that will not be replaced."""
    return (f"{path}: {why}; refusing to replace it (mode 'overwrite' replaces only an output this project wrote: "
            "choose another path, or move it away yourself)")
