"""Checks on output paths, made before a long job starts rather than when it first writes."""

from __future__ import annotations

import os
from pathlib import Path


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Return ``path`` as a ``Path`` if it can be (or already is) a folder; else raise ``ValueError``.

    A folder cannot be made when ``path`` itself, or any folder above it, exists as a
    file; the error names the option, the path and the file in the way. Nothing is created.
    """
    from data.owned import file_in_the_way

    out = Path(path)
    if out.exists() and not out.is_dir():
        where = "is a file"
    elif (blocker := file_in_the_way(out)) is not None:
        where = f"is under {blocker}, which is a file"
    else:
        return out
    raise ValueError(f"{option}={str(out)!r} {where}: expected a folder (or a path where one can be made)")
