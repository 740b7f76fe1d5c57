"""Write evaluation frames to video and still images with OpenCV (no extra dependency)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: int = 10, scale: int = 4) -> Path:
    """Write RGB frames ``(H, W, 3)`` uint8 to an MP4 file, upscaled ``scale``x (nearest).

    Raises:
        ValueError: on an empty frame list or frames of mixed shapes.
        RuntimeError: if OpenCV cannot open a video writer.
    """
    if not frames:
        raise ValueError("write_mp4 got no frames")
    h, w = frames[0].shape[:2]
    size = (w * scale, h * scale)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open an MP4 writer for {path}")
    try:
        for frame in frames:
            if frame.shape[:2] != (h, w):
                raise ValueError(f"frame of shape {frame.shape} in a video of {(h, w, 3)} frames")
            big = cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST)
            writer.write(cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return Path(path)


def write_filmstrip(path: str | Path, frames: list[np.ndarray], count: int = 8, scale: int = 2) -> Path:
    """Save ``count`` evenly spaced RGB frames side by side as one PNG."""
    if not frames:
        raise ValueError("write_filmstrip got no frames")
    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    strip = np.concatenate([frames[i] for i in idx], axis=1)
    strip = cv2.resize(strip, (strip.shape[1] * scale, strip.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    return Path(path)
