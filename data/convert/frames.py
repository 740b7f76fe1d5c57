"""Frames in foreign containers: sniffing PNG/JPEG bytes, MP4 video (written as H.264 through PyAV, read through OpenCV)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..video_file import Mp4Writer


def sniff_codec(data: bytes, where: str) -> str:
    """"png" or "jpeg" from the first bytes of an encoded frame."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"\xff\xd8":
        return "jpeg"
    raise ValueError(f"{where}: image bytes are neither PNG nor JPEG (starts {data[:8]!r})")


def encoded_shape(data: bytes, codec: str, where: str) -> tuple[int, int, int]:
    """(H, W, 3) of one encoded frame."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{where}: cannot decode a {codec} frame")
    return tuple(int(s) for s in img.shape)  # type: ignore[return-value]


class VideoCursor:
    """Reads one MP4 front to back: asking for earlier frames than the last read reopens it."""

    def __init__(self, path: Path):
        self.path, self.cap, self.pos = path, None, 0

    def read(self, start: int, count: int, where: str) -> np.ndarray:
        """Frames ``start .. start+count-1`` as uint8 RGB (count, H, W, 3)."""
        import cv2

        if self.cap is None or start < self.pos:
            self.close()
            if not self.path.is_file():
                raise FileNotFoundError(f"{where}: video {self.path} is missing")
            self.cap, self.pos = cv2.VideoCapture(str(self.path)), 0
            if not self.cap.isOpened():
                raise ValueError(f"{where}: OpenCV cannot open {self.path}")
        frames = []
        while self.pos < start + count:
            ok, img = self.cap.read()
            if not ok:
                break
            if self.pos >= start:
                frames.append(img[:, :, ::-1])
            self.pos += 1
        if len(frames) != count:
            raise ValueError(f"{where}: {self.path} ends after {self.pos} frames; expected frames {start}..{start + count - 1}")
        return np.ascontiguousarray(np.stack(frames))

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def read_video(path: Path, start: int, count: int, where: str) -> np.ndarray:
    """Frames ``start .. start+count-1`` of an MP4 as uint8 RGB (count, H, W, 3)."""
    cursor = VideoCursor(path)
    try:
        return cursor.read(start, count, where)
    finally:
        cursor.close()


def video_writer(path: Path, fps: float, shape: Sequence[int], where: Path) -> Mp4Writer:
    """An H.264 writer (`data.video_file.Mp4Writer`) for frames of `shape` (H, W, 3); `where` names it in errors."""
    h, w = int(shape[0]), int(shape[1])
    if h % 2 or w % 2:
        raise ValueError(f"{where}: MP4 needs even frame sizes, got {h}x{w}; export with --to hdf5 or --to lerobot --codec png instead")
    return Mp4Writer(path, fps, h, w)


def write_frames(writer: Mp4Writer, pixels: np.ndarray) -> None:
    """Append uint8 RGB frames (T, H, W, 3) to an MP4 writer."""
    for frame in pixels:
        writer.write(frame)
