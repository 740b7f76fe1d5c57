"""Building a destination beside its final path and moving it into place.

Only this project's own earlier output is ever replaced (`data/owned.py`): each writer
passes a recogniser of its format, and ``mode="overwrite"`` refuses anything else (a
folder of the user's, a file it did not write, a symbolic link) before converting, naming
the path. The new output is built under a fresh hidden name in the same folder; the old
one is moved aside only once the new one is complete, and is put back if the swap fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..owned import Recogniser, file_in_the_way, refuse_message, replaceable

MODES = ("append", "overwrite", "error")


def check_destination(dst: Path, mode: str, recognise: Recogniser, is_dir: bool) -> None:
    """Raise ValueError unless `dst` may be written with `mode`: absent, or (overwrite) an
    output `recognise` says this project wrote (an empty folder for folder outputs)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if not (dst.exists() or dst.is_symlink()):
        return
    if mode == "error":
        raise ValueError(f"{dst}: already exists (mode 'error'); pass mode 'overwrite' to replace it")
    if mode == "append":
        raise ValueError(f"{dst}: mode 'append' is supported for Lance destinations only; use 'overwrite' or a new path")
    why = replaceable(dst, recognise, is_dir)
    if why is not None:
        raise ValueError(refuse_message(dst, why))


@contextmanager
def fresh_output(dst: Path, mode: str, is_dir: bool, recognise: Recogniser) -> Iterator[Path]:
    """Yield a fresh hidden sibling path to build DST in; move it into place on success.

    mode "error" refuses an existing DST; "overwrite" replaces it, only if `recognise`
    says this project wrote it, only after the new one is complete; on any failure the
    old DST is as it was and the sibling is gone. A folder output's sibling exists (empty)
    when yielded; a file output's is an empty file to overwrite.
    """
    check_destination(dst, mode, recognise, is_dir)
    blocker = file_in_the_way(dst)
    if blocker is not None:
        raise ValueError(f"{dst}: cannot be created, {blocker} is a file, not a folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_sibling(dst, "converting", is_dir)
    try:
        yield tmp
        _move_into_place(tmp, dst, mode, recognise, is_dir)
    except BaseException:
        _remove(tmp)
        raise


def _fresh_sibling(dst: Path, tag: str, is_dir: bool) -> Path:
    """Create and return ``DST_PARENT/.NAME.<tag>-<pid>-<random>`` (never an existing path)."""
    while True:
        p = dst.parent / f".{dst.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            if is_dir:
                p.mkdir()
            else:
                with open(p, "x"):
                    pass
            return p
        except FileExistsError:
            continue


def _move_into_place(tmp: Path, dst: Path, mode: str, recognise: Recogniser, is_dir: bool) -> None:
    if not (dst.exists() or dst.is_symlink()):
        if is_dir:
            try:
                os.rename(tmp, dst)  # fails if a non-empty folder appeared meanwhile
            except OSError as e:
                raise ValueError(f"{dst}: appeared while converting; not overwritten ({e.strerror})") from None
        else:
            try:
                os.link(tmp, dst)  # never clobbers a file that appeared meanwhile
            except FileExistsError:
                raise ValueError(f"{dst}: appeared while converting; not overwritten") from None
            except OSError:  # a file system without hard links: check, then rename
                if dst.exists() or dst.is_symlink():
                    raise ValueError(f"{dst}: appeared while converting; not overwritten") from None
                os.rename(tmp, dst)
                return
            os.unlink(tmp)
        return
    check_destination(dst, mode, recognise, is_dir)  # again: DST may have changed while converting
    holder = _fresh_sibling(dst, "old", is_dir=True)
    os.rename(dst, holder / dst.name)
    try:
        os.rename(tmp, dst)
    except BaseException:
        os.rename(holder / dst.name, dst)  # put the old output back
        os.rmdir(holder)
        raise
    shutil.rmtree(holder)  # the old output, recognised as ours above


def _remove(p: Path) -> None:
    """Delete the sibling this module created (a file or a folder tree), if still there."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()
