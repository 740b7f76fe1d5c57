"""``wm data preview``: a video grid of a dataset's episodes (H.264 MP4, or GIF when OpenCV can write one).

Episodes play side by side in a grid, frame t of each at grid frame t; an episode that
has ended holds its last frame. Each tile carries its episode id and split.

The video is written beside its path under a fresh hidden name and renamed into place.
An existing file there is replaced only when it is a preview written here: each carries a
marker (`PREVIEW_MARK`, in a trailing MP4 ``free`` box or a GIF comment block, both
ignored by players); anything else at that path is refused, naming it.
"""

from __future__ import annotations

import math
import os
import secrets
from pathlib import Path
from typing import Sequence

import numpy as np

from . import columns as C
from .dataset import open_dataset
from .owned import file_in_the_way

PREVIEW_MARK = b"worldmodel-preview v1"
MAX_SIDE = 4096  # pixels per side of the grid (H.264 level 5.2 tops out near 4096x2304)
SUFFIXES = (".mp4", ".gif")


def _positive(name: str, value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"--{name} {value!r}: expected an integer >= 1 ({what})")
    return int(value)


def _mp4_mark() -> bytes:
    return (8 + len(PREVIEW_MARK)).to_bytes(4, "big") + b"free" + PREVIEW_MARK


def _gif_mark() -> bytes:
    return b"\x21\xfe" + bytes([len(PREVIEW_MARK)]) + PREVIEW_MARK + b"\x00\x3b"  # comment block, then the trailer


def is_our_preview(path: str | os.PathLike) -> bool:
    """Whether `path` is a regular file this module wrote (it ends with its marker)."""
    p = Path(path)
    if p.is_symlink() or not p.is_file():
        return False
    tail = max(len(_mp4_mark()), len(_gif_mark()))
    with open(p, "rb") as f:
        f.seek(max(0, p.stat().st_size - tail))
        end = f.read()
    return end.endswith(_mp4_mark()) or end.endswith(_gif_mark())


def check_preview_out(out: str | os.PathLike) -> Path:
    """`out` as a Path if a preview may be written there, else a ValueError naming it: the
    suffix must be .mp4 or .gif, nothing above it may be a file, and an existing file there
    must be a preview written here (anything else is the user's and is never replaced)."""
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise ValueError(f"--out {out}: a preview is a .mp4 or .gif file (got suffix {out.suffix or 'none'!r})")
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise ValueError(f"--out {out}: cannot be created, {blocker} is a file, not a folder")
    if out.is_symlink() or out.exists():
        if out.is_dir() and not out.is_symlink():
            raise ValueError(f"--out {out}: is a folder; expected a .mp4 or .gif file path")
        if not is_our_preview(out):
            raise ValueError(f"--out {out}: exists and is not a preview written by wm data preview; refusing to replace it "
                             "(choose another --out, or move it away yourself)")
    return out


def preview_frames(
    path: str | os.PathLike, episode_ids: Sequence[int] | None = None, count: int = 8, cols: int = 4, scale: int = 2,
    max_frames: int = 300,
) -> list[np.ndarray]:
    """Grid frames ``uint8 (rows*H*scale, cols*W*scale, 3)`` RGB for the chosen episodes.

    episode_ids: which episodes (default: the first `count`); cols: grid columns (at most
    one per episode); scale: integer upscaling of each tile; max_frames caps the length.
    A bad value is a ValueError naming it and the range expected.
    """
    import cv2

    count, cols, scale = _positive("count", count, "episodes in the grid"), _positive("cols", cols, "grid columns"), \
        _positive("scale", scale, "upscaling of each tile")
    ds = open_dataset(path)
    rows_meta = {e[C.EPISODE_ID]: e for e in ds.episodes()}
    if episode_ids is None:
        episode_ids = sorted(rows_meta)[:count]
    episode_ids = [int(e) for e in episode_ids]
    if not episode_ids:
        raise ValueError(f"{path}: no episodes to preview")
    for e in episode_ids:
        if e not in rows_meta:
            raise KeyError(f"episode {e} is not in {path} ({len(rows_meta)} episodes)")
    cols = max(1, min(cols, len(episode_ids)))
    grid_rows = math.ceil(len(episode_ids) / cols)
    h, w, _ = ds.image_shape
    th, tw = h * scale, w * scale
    if grid_rows * th > MAX_SIDE or cols * tw > MAX_SIDE:
        raise ValueError(f"--scale {scale}: the grid would be {cols * tw}x{grid_rows * th} pixels ({cols} x {grid_rows} tiles of "
                         f"{w}x{h} scaled {scale}x); at most {MAX_SIDE} per side: lower --scale or --cols")
    clips = [ds.load_episode(e, columns=[C.PIXELS])["pixels"] for e in episode_ids]
    length = min(max(len(c) for c in clips), max_frames)
    out = []
    for t in range(length):
        canvas = np.full((grid_rows * th, cols * tw, 3), 255, np.uint8)
        for k, (eid, clip) in enumerate(zip(episode_ids, clips)):
            tile = cv2.resize(clip[min(t, len(clip) - 1)], (tw, th), interpolation=cv2.INTER_NEAREST)
            r, c = divmod(k, cols)
            canvas[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
            label = f"{eid} {rows_meta[eid][C.SPLIT]}"
            cv2.putText(canvas, label, (c * tw + 2, r * th + 10), cv2.FONT_HERSHEY_PLAIN, 0.7, (0, 0, 0), 1, cv2.LINE_AA)
        out.append(canvas)
    return out


def write_preview(
    path: str | os.PathLike, out: str | os.PathLike, episode_ids: Sequence[int] | None = None, count: int = 8,
    cols: int = 4, scale: int = 2, fps: float | None = None,
) -> Path:
    """Write the preview grid of `path` to `out` (``.mp4``, or ``.gif`` if this OpenCV writes GIFs).

    `out` is checked first (`check_preview_out`): an existing file there is replaced only
    if it is an earlier preview; the new one is built beside it and renamed into place.
    """
    import cv2

    out = check_preview_out(out)
    gif = out.suffix.lower() == ".gif"
    if gif and not hasattr(cv2, "imwriteanimation"):
        raise ValueError(f"--out {out}: this OpenCV cannot write GIFs; use a .mp4 output")
    frames = preview_frames(path, episode_ids, count, cols, scale)
    fps = fps or open_dataset(path).meta.get("fps") or 10
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.stem}.writing-{os.getpid()}-{secrets.token_hex(4)}{out.suffix}"
    try:
        if gif:
            anim = cv2.Animation()
            anim.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
            anim.durations = [int(1000 / fps)] * len(frames)
            if not cv2.imwriteanimation(str(tmp), anim):
                raise ValueError(f"{out}: OpenCV failed to write the GIF")
            body = tmp.read_bytes()
            if not body.endswith(b"\x3b"):
                raise ValueError(f"{out}: OpenCV wrote a GIF without its trailer")
            tmp.write_bytes(body[:-1] + _gif_mark())
        else:
            from .video_file import write_mp4

            write_mp4(tmp, frames, fps=float(fps), scale=1)  # H.264, playable in a browser
            with open(tmp, "ab") as f:
                f.write(_mp4_mark())
        check_preview_out(out)  # again: something may have appeared there meanwhile
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
