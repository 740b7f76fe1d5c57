"""Evaluation frames as episode videos (H.264 MP4, `data.video_file`) and still filmstrips (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.video_file import CRF, check_frames, even_frame, probe_mp4, read_mp4, write_mp4

__all__ = ["CRF", "even_frame", "probe_mp4", "read_mp4", "write_filmstrip", "write_mp4"]


def write_filmstrip(path: str | Path, frames: list[np.ndarray], count: int = 8, scale: int = 2) -> Path:
    """Save ``count`` evenly spaced RGB frames ``(H, W, 3)`` side by side as one PNG, upscaled ``scale``x."""
    import cv2

    check_frames(frames, "write_filmstrip")
    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    strip = np.concatenate([frames[i] for i in idx], axis=1)
    strip = cv2.resize(strip, (strip.shape[1] * scale, strip.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    return Path(path)
