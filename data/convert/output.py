"""Building a destination beside its final path and moving it into place."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

MODES = ("append", "overwrite", "error")


@contextmanager
def fresh_output(dst: Path, mode: str, is_dir: bool) -> Iterator[Path]:
    """Yield a hidden sibling path to build DST in; move it into place on success.

    mode "error" refuses an existing DST; "overwrite" replaces it only after the new one
    is complete; the old one is untouched if anything fails."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if dst.exists() or dst.is_symlink():
        if mode == "error":
            raise ValueError(f"{dst}: already exists (mode 'error'); pass mode 'overwrite' to replace it")
        if mode == "append":
            raise ValueError(f"{dst}: mode 'append' is supported for Lance destinations only; use 'overwrite' or a new path")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.converting-{os.getpid()}"
    remove(tmp)
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
        if dst.exists():
            old = dst.parent / f".{dst.name}.old-{os.getpid()}"
            remove(old)
            os.rename(dst, old)
            os.rename(tmp, dst)
            remove(old)
        else:
            os.rename(tmp, dst)
    except BaseException:
        remove(tmp)
        raise


def remove(p: Path) -> None:
    """Delete a file, link or directory tree if it exists."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()
