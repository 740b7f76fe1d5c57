"""Video files people watch: H.264 MP4 through PyAV, playable in a browser.

`write_mp4` writes H.264 (``libx264``) in ``yuv420p`` with the ``moov`` index at the front
of the file (``movflags=+faststart``): the combination every browser plays inline and
starts before the whole file has arrived. ``yuv420p`` needs even frame sizes; an odd
width or height is padded by one replicated edge pixel.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

#: H.264 constant rate factor: 0 lossless, 51 worst; 18 is visually lossless for rendered scenes
CRF = 18


def check_frames(frames: Sequence[np.ndarray], who: str) -> tuple[int, int]:
    """(H, W) shared by `frames`, each a uint8 RGB array ``(H, W, 3)``; a ValueError naming the first bad one."""
    if len(frames) == 0:
        raise ValueError(f"{who} got no frames")
    first = np.asarray(frames[0])
    for i, frame in enumerate(frames):
        f = np.asarray(frame)
        if f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"{who}: frame {i} has shape {f.shape}; expected RGB frames (H, W, 3)")
        if f.dtype != np.uint8:
            raise ValueError(f"{who}: frame {i} has dtype {f.dtype}; expected uint8 RGB frames")
        if f.shape != first.shape:
            raise ValueError(f"{who}: frame {i} of shape {f.shape} in a video of {first.shape} frames")
    return int(first.shape[0]), int(first.shape[1])


def even_frame(frame: np.ndarray) -> np.ndarray:
    """`frame` ``(H, W, 3)`` padded to even H and W by replicating its last row/column (yuv420p needs even sizes)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _check_fps(fps: object, who: str) -> Fraction:
    if isinstance(fps, bool) or not (isinstance(fps, (int, float, np.integer, np.floating, Fraction)) and 0 < float(fps) < 1e4):
        raise ValueError(f"{who}: fps={fps!r}; expected a number of frames per second in (0, 10000)")
    return Fraction(float(fps)).limit_denominator(1001)


class Mp4Writer:
    """An H.264 MP4 written frame by frame: ``write(frame)`` for each uint8 RGB ``(H, W, 3)``
    frame, then ``close()``; as a context manager it closes on success and removes the
    partial file on an error. Frames of odd H or W are padded to even (`even_frame`)."""

    def __init__(self, path: str | Path, fps: float, height: int, width: int, crf: int = CRF):
        import av

        self.path, self.shape = Path(path), (int(height), int(width), 3)
        if height < 1 or width < 1:
            raise ValueError(f"{self.path}: frame size {height}x{width}; expected at least 1x1 pixels")
        rate = _check_fps(fps, str(self.path))
        self._container = av.open(str(self.path), mode="w", format="mp4", container_options={"movflags": "+faststart"})
        try:
            self._stream = self._container.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height = width + width % 2, height + height % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(int(crf))}
        except BaseException:
            self.abort()
            raise

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB frame ``(H, W, 3)`` of the writer's shape."""
        import av

        f = np.asarray(frame)
        if f.shape != self.shape or f.dtype != np.uint8:
            raise ValueError(f"{self.path}: a frame of shape {f.shape} {f.dtype}; expected uint8 {self.shape}")
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(even_frame(f)), format="rgb24")
        self._container.mux(self._stream.encode(picture))

    def close(self) -> None:
        """Flush the encoder's delayed frames and finish the file (moov moved to the front)."""
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            container, self._container = self._container, None
            container.close()

    def abort(self) -> None:
        """Stop writing and remove the partial file."""
        container, self._container = self._container, None
        try:
            if container is not None:
                container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away; its trailer does not matter
            pass
        finally:
            if self.path.is_file():
                os.unlink(self.path)

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: float = 10, scale: int = 4) -> Path:
    """Write RGB frames ``(H, W, 3)`` uint8 to a browser-playable H.264 MP4, upscaled ``scale``x (nearest).

    The video is ``(H*scale + pad, W*scale + pad)`` pixels, ``pad`` 1 where that size is odd
    (the last row/column repeated). Every frame is checked before the file is opened; a
    failure while encoding removes the partial file.

    Args:
        path: the ``.mp4`` file to write (replaced if it exists).
        frames: T >= 1 uint8 arrays ``(H, W, 3)``, all of one shape.
        fps: frames per second (> 0).
        scale: integer upscaling factor (>= 1).

    Raises:
        ValueError: no frames, a frame that is not ``(H, W, 3)`` uint8, frames of mixed
            shapes, or a bad `fps` / `scale`.
    """
    h, w = check_frames(frames, "write_mp4")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"write_mp4: scale={scale!r}; expected an integer >= 1")
    _check_fps(fps, "write_mp4")
    with Mp4Writer(path, fps, h * scale, w * scale) as writer:
        for frame in frames:
            big = np.asarray(frame)
            writer.write(big.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else big)
    return Path(path)


def probe_mp4(path: str | Path) -> dict:
    """What a player sees in an MP4: ``{"codec", "pix_fmt", "width", "height", "frames", "fps"}``
    of its first video stream, the frames counted by decoding them."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        ctx = stream.codec_context
        return {"codec": ctx.name, "pix_fmt": ctx.pix_fmt, "width": ctx.width, "height": ctx.height, "frames": count,
                "fps": float(stream.average_rate) if stream.average_rate else None}


def read_mp4(path: str | Path) -> np.ndarray:
    """Every frame of an MP4's first video stream as uint8 RGB ``(T, H, W, 3)``."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    if not frames:
        raise ValueError(f"{path}: the video has no frames")
    return np.stack(frames)
