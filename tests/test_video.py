"""Episode videos play in a browser: H.264 in yuv420p, moov first, even sizes, frames close to the input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.video import probe_mp4, read_mp4, write_filmstrip, write_mp4


def blocky_frames(t: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """T uint8 RGB frames (H, W, 3) of flat coloured blocks moving right, like a rendered scene."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (max(1, h // 4), max(1, w // 4), 3), dtype=np.uint8)
    base = base.repeat(4, axis=0).repeat(4, axis=1)[:h, :w]
    base = np.pad(base, ((0, h - base.shape[0]), (0, w - base.shape[1]), (0, 0)), mode="edge")
    return [np.roll(base, k, axis=1) for k in range(t)]


def top_level_boxes(path: Path) -> list[str]:
    """The MP4 box types at the top level of `path`, in file order."""
    data, boxes, pos = path.read_bytes(), [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        boxes.append(data[pos + 4 : pos + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        if size < 8:
            break
        pos += size
    return boxes


def test_h264_yuv420p_moov_first_and_frames_close(tmp_path: Path) -> None:
    frames = blocky_frames(12, 16, 24)
    out = write_mp4(tmp_path / "ep.mp4", frames, fps=10, scale=4)
    info = probe_mp4(out)
    assert info == {"codec": "h264", "pix_fmt": "yuv420p", "width": 96, "height": 64, "frames": 12, "fps": 10.0}
    boxes = top_level_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # faststart: a browser starts before the end arrives
    decoded = read_mp4(out).astype(int)
    expected = np.stack([f.repeat(4, axis=0).repeat(4, axis=1) for f in frames]).astype(int)
    assert decoded.shape == expected.shape
    assert np.abs(decoded - expected).mean() < 3.0  # visually lossless (CRF 18): a few levels per channel


def test_odd_sizes_are_padded_to_even(tmp_path: Path) -> None:
    frames = blocky_frames(5, 7, 9)
    info = probe_mp4(write_mp4(tmp_path / "odd.mp4", frames, fps=5, scale=1))
    assert (info["width"], info["height"], info["frames"]) == (10, 8, 5)
    decoded = read_mp4(tmp_path / "odd.mp4").astype(int)
    assert np.abs(decoded[:, :7, :9] - np.stack(frames).astype(int)).mean() < 6.0
    info = probe_mp4(write_mp4(tmp_path / "odd3.mp4", frames, fps=5, scale=3))  # 21x27 -> 22x28
    assert (info["width"], info["height"]) == (28, 22)


def test_opencv_still_reads_it(tmp_path: Path) -> None:
    """The demo's filmstrip reads its video back through cv2.VideoCapture."""
    import cv2

    out = write_mp4(tmp_path / "ep.mp4", blocky_frames(6, 8, 16), fps=10, scale=2)
    cap = cv2.VideoCapture(str(out))
    count, shape = 0, None
    ok, frame = cap.read()
    while ok:
        count, shape = count + 1, frame.shape
        ok, frame = cap.read()
    cap.release()
    assert (count, shape) == (6, (16, 32, 3))


@pytest.mark.parametrize("frames,expected", [
    ([], "write_mp4 got no frames"),
    ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], "frame 1 of shape (8, 10, 3) in a video of (8, 8, 3) frames"),
    ([np.zeros((8, 8), np.uint8)], "frame 0 has shape (8, 8); expected RGB frames (H, W, 3)"),
    ([np.zeros((8, 8, 3), np.float32)], "frame 0 has dtype float32; expected uint8"),
])
def test_bad_frames_are_clear_errors_and_write_nothing(tmp_path: Path, frames: list, expected: str) -> None:
    out = tmp_path / "bad.mp4"
    with pytest.raises(ValueError) as err:
        write_mp4(out, frames)
    assert expected in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize("kwargs,expected", [({"scale": 0}, "scale=0"), ({"fps": 0}, "fps=0"), ({"scale": 1.5}, "scale=1.5")])
def test_bad_settings_are_clear_errors(tmp_path: Path, kwargs: dict, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        write_mp4(tmp_path / "bad.mp4", blocky_frames(2, 8, 8), **kwargs)
    assert not (tmp_path / "bad.mp4").exists()


def test_filmstrip_is_a_png(tmp_path: Path) -> None:
    out = write_filmstrip(tmp_path / "strip.png", blocky_frames(10, 8, 8), count=4, scale=2)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
