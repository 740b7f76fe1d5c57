"""Frame codecs: uint8 RGB frames (H, W, 3) to bytes and back.

`raw` frames are stored as a fixed-size list of H*W*3 bytes and need no codec call;
`jpeg` (quality 95) and `png` go through OpenCV, which works in BGR order, so every
encode/decode here swaps channels to keep the public convention RGB. `h264` is not a
per-frame codec: an episode's frames are encoded together in groups of pictures
(`data/video.py`); `encode_frames` encodes a whole episode with any codec.
"""

from __future__ import annotations

import difflib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

CODECS = ("raw", "jpeg", "png", "h264")
GROUPED_CODECS = ("h264",)
"""Codecs that encode an episode's frames together (groups of pictures, `data/video.py`),
not one frame at a time."""
JPEG_QUALITY = 95
RAW_MAX_PIXELS = 64 * 64  # default codec: raw up to 64x64, jpeg above


@dataclass(frozen=True)
class EncodedFrame:
    """A frame already encoded with `codec` (e.g. in a collection worker process).

    `EpisodeWriter.add_step` takes one in place of a pixel array and stores `data` as
    is, after checking `codec` and `shape` (H, W, 3) against the dataset's. For `h264`
    (made by `encode_frames` for a whole episode) `data` is the row's value: the group
    blob on a group's first row, ``b""`` on the others, and `options` the
    `data.video.VideoOptions` it was encoded with (checked against the dataset's).
    """

    data: bytes
    shape: tuple[int, int, int]
    codec: str
    options: Any = None

    @classmethod
    def encode(cls, frame: np.ndarray, codec: str) -> "EncodedFrame":
        """Encode a uint8 RGB frame (H, W, 3) with `codec` (raw, jpeg or png; h264 encodes
        whole episodes: `encode_frames`)."""
        return cls(encode_frame(frame, codec), tuple(int(s) for s in frame.shape), codec)  # type: ignore[arg-type]


def encode_frames(frames: np.ndarray | Sequence[np.ndarray], codec: str, options: Any = None) -> list[EncodedFrame]:
    """Encode the frames of one episode, uint8 (T, H, W, 3), with `codec`: one
    `EncodedFrame` per row, ready for `EpisodeWriter.add_step`. `options`: the
    `data.video.VideoOptions` (or a mapping of some of its fields) for h264; unused otherwise."""
    check_codec(codec)
    if codec not in GROUPED_CODECS:
        return [EncodedFrame.encode(np.asarray(f), codec) for f in frames]
    from .video import VideoOptions, encode_groups, episode_values

    opts = VideoOptions.build(options)
    frames = np.asarray(frames)
    shape = tuple(int(s) for s in frames.shape[1:])
    values = episode_values(encode_groups(frames, opts), len(frames), opts.gop)
    return [EncodedFrame(v, shape, codec, opts) for v in values]  # type: ignore[arg-type]


def default_codec(image_shape: Sequence[int]) -> str:
    """Codec used when none is given: raw when H*W <= 64*64, jpeg above."""
    h, w = int(image_shape[0]), int(image_shape[1])
    return "raw" if h * w <= RAW_MAX_PIXELS else "jpeg"


def check_codec(codec: str) -> str:
    """Return `codec` if known, else raise ValueError listing the known codecs (and the closest name)."""
    if codec not in CODECS:
        close = difflib.get_close_matches(str(codec), CODECS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}{hint}")
    return codec


def _not_per_frame(codec: str) -> None:
    if codec in GROUPED_CODECS:
        raise ValueError(f"codec {codec!r} stores an episode's frames in groups, not one by one: encode with "
                         f"encode_frames(episode_frames, {codec!r}) and read with EpisodeDataset.load_episode, "
                         f"WindowDataset or data.video.decode_group")


def encode_frame(frame: np.ndarray, codec: str) -> bytes:
    """Encode one uint8 RGB frame (H, W, 3) with `codec` ("raw", "jpeg" or "png")."""
    import cv2

    check_codec(codec)
    _not_per_frame(codec)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
    if codec == "raw":
        return np.ascontiguousarray(frame).tobytes()
    bgr = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR)  # ~10x faster than a reversed-stride copy
    if codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"OpenCV failed to encode a {frame.shape} frame as {codec}")
    return buf.tobytes()


def decode_frame(
    data: bytes | np.ndarray, codec: str, shape: Sequence[int], out: np.ndarray | None = None, channels_first: bool = False
) -> np.ndarray:
    """Decode one frame of `shape` (H, W, 3) to uint8 RGB (H, W, 3), or (3, H, W) with
    `channels_first`; writes into `out` (that shape) when given. `data`: the encoded
    bytes (raw: the frame's bytes, or the frame itself as an array)."""
    import cv2

    check_codec(codec)
    _not_per_frame(codec)
    shape = tuple(int(s) for s in shape)
    bgr = False
    if codec == "raw":
        img = data.reshape(shape) if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8).reshape(shape)
    else:
        rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes straight to RGB
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR if rgb_flag is None else rgb_flag)
        if img is None or img.shape != shape:
            got = None if img is None else img.shape
            raise ValueError(f"corrupt {codec} frame: decoded {got}, expected {shape}")
        bgr = rgb_flag is None
    if channels_first:
        if out is None:
            out = np.empty((shape[2], shape[0], shape[1]), dtype=np.uint8)
        split_channels(img, out, reverse=bgr)
        return out
    if bgr:
        img = img[:, :, ::-1]
    if out is None:
        return np.ascontiguousarray(img)
    out[...] = img
    return out


def split_channels(img: np.ndarray, out: np.ndarray, reverse: bool = False) -> np.ndarray:
    """Copy a uint8 frame (H, W, C) into channel-first `out` (C, H, W), channels in
    reverse order when `reverse` (BGR to RGB). OpenCV's split writes each plane in place,
    ~6x faster than NumPy's strided transpose at 224x224."""
    import cv2

    planes = [out[c] for c in range(out.shape[0])]
    if reverse:
        planes.reverse()
    if all(p.flags.c_contiguous for p in planes) and img.flags.c_contiguous:
        if all(a is b for a, b in zip(cv2.split(img, planes), planes)):
            return out
    out[...] = (img[:, :, ::-1] if reverse else img).transpose(2, 0, 1)  # strided views, or OpenCV allocated anew
    return out


def decode_batch(
    frames: Sequence[bytes | np.ndarray], codec: str, shape: Sequence[int], threads: int = 2, out: np.ndarray | None = None
) -> np.ndarray:
    """Decode a list of encoded frames into one uint8 array (N, H, W, 3).

    OpenCV releases the GIL while decoding, so `threads` > 1 decodes in parallel.
    """
    shape = tuple(int(s) for s in shape)
    n = len(frames)
    if out is None:
        out = np.empty((n,) + shape, dtype=np.uint8)
    if n == 0:
        return out
    if threads <= 1 or n < 8 or codec == "raw":
        for i, data in enumerate(frames):
            decode_frame(data, codec, shape, out=out[i])
        return out
    chunks = np.array_split(np.arange(n), threads)

    def work(idx: np.ndarray) -> None:
        for i in idx:
            decode_frame(frames[i], codec, shape, out=out[i])

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, chunks))
    return out


def arrow_frames(column, codec: str, shape: Sequence[int]) -> list[np.ndarray]:
    """The frames of a pyarrow pixels column (chunked or not), zero-copy: raw frames as
    uint8 (H, W, 3) views, jpeg/png frames as their encoded bytes (uint8 1-D views),
    each ready for `decode_frame`."""
    import pyarrow as pa

    shape = tuple(int(s) for s in shape)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    n = len(column)
    if codec == "raw":
        return list(column.flatten().to_numpy(zero_copy_only=False).reshape((n,) + shape))
    if pa.types.is_large_binary(column.type):
        offset_dtype = np.int64
    elif pa.types.is_binary(column.type):
        offset_dtype = np.int32
    else:
        raise ValueError(f"expected a binary pixels column for codec {codec!r}, got {column.type}")
    bufs = column.buffers()
    offsets = np.frombuffer(bufs[1], dtype=offset_dtype)[column.offset : column.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
    return [data[offsets[i] : offsets[i + 1]] for i in range(n)]


def decode_arrow(column, codec: str, shape: Sequence[int], threads: int = 2, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a pyarrow pixels column (chunked or not) into uint8 (N, H, W, 3).

    Raw columns (fixed_size_list<uint8>) are reshaped without a per-frame copy (a
    zero-copy view when no `out`); jpeg/png columns (binary) are sliced from the arrow
    buffers (`arrow_frames`) and decoded.
    """
    if codec != "raw":
        return decode_batch(arrow_frames(column, codec, shape), codec, shape, threads=threads, out=out)
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    frames = column.flatten().to_numpy(zero_copy_only=False).reshape((len(column),) + tuple(int(s) for s in shape))
    if out is None:
        return frames
    out[...] = frames
    return out
