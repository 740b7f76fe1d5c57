"""``wm data preview``: a video grid of a dataset's episodes (MP4, or GIF when OpenCV can write one).

Episodes play side by side in a grid, frame t of each at grid frame t; an episode that
has ended holds its last frame. Each tile carries its episode id, split and policy.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from . import columns as C
from .dataset import open_dataset


def preview_frames(
    path: str | os.PathLike, episode_ids: Sequence[int] | None = None, count: int = 8, cols: int = 4, scale: int = 2,
    max_frames: int = 300,
) -> list[np.ndarray]:
    """Grid frames ``uint8 (rows*H*scale, cols*W*scale, 3)`` RGB for the chosen episodes.

    episode_ids: which episodes (default: the first `count`); max_frames caps the length.
    """
    import cv2

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
    """Write the preview grid of `path` to `out` (``.mp4``, or ``.gif`` if this OpenCV writes GIFs)."""
    import cv2

    out = Path(out)
    frames = preview_frames(path, episode_ids, count, cols, scale)
    fps = fps or open_dataset(path).meta.get("fps") or 10
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":
        if not hasattr(cv2, "imwriteanimation"):
            raise ValueError(f"{out}: this OpenCV cannot write GIFs; use a .mp4 output")
        anim = cv2.Animation()
        anim.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
        anim.durations = [int(1000 / fps)] * len(frames)
        if not cv2.imwriteanimation(str(out), anim):
            raise ValueError(f"{out}: OpenCV failed to write the GIF")
        return out
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"{out}: preview output must end in .mp4 or .gif")
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise ValueError(f"{out}: OpenCV could not open an MP4 writer")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return out
