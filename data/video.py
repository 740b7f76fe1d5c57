"""The ``h264`` codec: an episode's frames as H.264 video in groups of pictures (GOPs).

An episode of T frames is cut into groups of `VideoOptions.gop` frames (the last one
shorter); each group is one self-contained H.264 stream that starts with an IDR
keyframe carrying its own SPS/PPS, so any group decodes on its own. In the steps
table a group is one binary value (a "row-level blob") in the pixels cell of the row of
its first frame (step ``k * gop``); the cells of the group's other rows are empty.
Frame ``t`` of an episode is frame ``t % gop`` of group ``t // gop``. Extra cameras
(uint8 (H, W, 3) extras) are stored the same way in their own columns.

Why plain binary values and not Lance's blob encoding: groups are small (0.5–5 kB at
224²), and a plain binary column returns them in the same ``take`` as any other
column; a ``take_blobs`` of 128 values of 0.5–3 kB measured 5.9 ms against 2.2 ms for
a plain ``take`` (pylance 14.0.2, ad-hoc script, 2-core machine).

A group blob (little-endian)::

    b"WMH1"                 magic
    uint32 crc32            of everything after this field
    uint32 n                frames in the group
    uint32[n] sizes         bytes of each frame's access unit
    access units            Annex-B H.264, frame after frame in display order

Encoding (`encode_groups`, PyAV/FFmpeg): one libx264 encoder per episode, one thread (so
the output does not depend on the machine's core count; byte-identical re-encodes are not
guaranteed: repeating one 21-frame encode 1,000 times on a loaded 2-core machine gave 0-16
encodes whose access units differed by a few bytes, each decoding to a valid frame), no B-frames (frame i is access unit i, so frame j of
a group needs exactly the first j+1 units), an IDR forced every `gop` frames and no
other keyframe (``keyint = min-keyint = gop``, ``scenecut=0``), ``tune=fastdecode``
(no CABAC, no deblocking: decoding a 224² PushT frame takes 0.034 ms against 0.058 ms,
for 7-9% more bytes). x264's SEI (its version and options string, 610 bytes in the
first keyframe) is removed. Colour (`VideoOptions.pix_fmt`):

- ``yuv444p`` (default, High 4:4:4 Predictive profile): full chroma resolution,
  BT.601 full-range YCbCr (the JPEG matrix; stream tagged ``pc``/``smpte170m``);
- ``yuv420p`` (High profile): chroma at half resolution each way, BT.601 limited range
  (tagged ``tv``); needs even H and W;
- ``lossless``: libx264rgb at ``qp 0`` on the RGB planes (High 4:4:4 Predictive,
  ``gbrp`` decoded): every frame comes back bit-exact.

RGB <-> YCbCr conversions use OpenCV's fixed-point ``cvtColor`` (the same result on
every machine), never swscale.

Decoding (`decode_group`) uses a fresh FFmpeg ``h264`` decoder per group (nothing
carries over from one group to the next, so a frame decodes to the same values
whichever read path asks for it, whatever the decode thread count), decodes access
units 0..j for the highest frame j asked for, and converts only the frames asked for.
A blob whose magic, CRC, frame count, frame size or H.264 data is wrong raises
`CorruptGroupError` naming where it came from (episode id, column, group index): the
CRC-32 catches bytes changed on disk, and the decoder runs with ``err_detect=explode``
so a damaged access unit is an error rather than a concealed, silently wrong picture.

Default group length: the frames one training window spans, ``(frames - 1) *
frameskip + 1``. A dataset does not know the window it will be trained with (its rows
are one env step apart, meta ``frameskip`` 1), so the default is the window of the
data benchmark and the demo's training, 4 frames at frameskip 5: ``(4 - 1) * 5 + 1 =
16`` frames (`DEFAULT_GOP`); pass ``gop=window_span(n, f)`` (``--gop`` on the command
line) for another window. A window then touches at most two groups.
"""

from __future__ import annotations

import difflib
import struct
import zlib
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import DatasetError

H264 = "h264"
MAGIC = b"WMH1"
_HEAD = struct.Struct("<4sII")  # magic, crc32, frames
FORMAT_VERSION = 1
DEFAULT_WINDOW_FRAMES = 4
DEFAULT_WINDOW_FRAMESKIP = 5
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
PIX_FMTS = ("yuv444p", "yuv420p")
TUNE = "fastdecode"
MAX_GOP = 1 << 16


def window_span(frames: int, frameskip: int) -> int:
    """Rows one training window of `frames` frames at `frameskip` spans: ``(frames - 1) * frameskip + 1``."""
    frames, frameskip = int(frames), int(frameskip)
    if frames < 1 or frameskip < 1:
        raise ValueError(f"window of {frames} frames at frameskip {frameskip}: both must be >= 1")
    return (frames - 1) * frameskip + 1


DEFAULT_GOP = window_span(DEFAULT_WINDOW_FRAMES, DEFAULT_WINDOW_FRAMESKIP)  # 16
"""Frames per group by default: one window of 4 frames at frameskip 5 (see the module docstring)."""


class CorruptGroupError(DatasetError):
    """An H.264 group blob that cannot be decoded (names the episode, column and group)."""


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}{hint}")
    return str(value)


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name}={value!r}: expected an integer in [{low}, {high}]")
    return int(value)


@dataclass(frozen=True)
class VideoOptions:
    """Settings of the ``h264`` codec, fixed per dataset and recorded in ``meta.json``
    under ``codec_options`` (`to_meta`)."""

    gop: int = DEFAULT_GOP
    """frames per group of pictures (each group starts with a keyframe and decodes on its own)"""
    crf: int = 20
    """libx264 constant rate factor, 0-51 (lower: better quality, more bytes); unused when lossless.
    20 (x264's own default is 23): at 64x64 every env's expert frames stay at >= 38 dB
    PSNR (crf 23: 35.9 dB for Cube) for ~15% more bytes (``python -m benchmarks.codec_quality``)"""
    preset: str = "veryfast"
    """libx264 speed preset (ultrafast .. placebo); slower presets save few bytes on rendered frames"""
    pix_fmt: str = "yuv444p"
    """yuv444p (full chroma, default) or yuv420p (half-resolution chroma); lossless codes RGB"""
    lossless: bool = False
    """libx264rgb at qp 0: frames round-trip bit-exactly (crf and pix_fmt unused)"""

    def __post_init__(self) -> None:
        if not isinstance(self.lossless, (bool, np.bool_)):
            raise ValueError(f"lossless={self.lossless!r}: expected True or False")
        object.__setattr__(self, "lossless", bool(self.lossless))
        if self.lossless:  # crf and pix_fmt do not apply: one canonical value, so equal settings compare equal
            object.__setattr__(self, "crf", type(self).crf)
            object.__setattr__(self, "pix_fmt", type(self).pix_fmt)
        object.__setattr__(self, "gop", _int("gop", self.gop, 1, MAX_GOP))
        object.__setattr__(self, "crf", _int("crf", self.crf, 0, 51))
        _choice("preset", self.preset, PRESETS)
        _choice("pix_fmt", self.pix_fmt, PIX_FMTS)

    @classmethod
    def build(cls, options: "VideoOptions | Mapping[str, Any] | None" = None, **overrides: Any) -> "VideoOptions":
        """Options from a `VideoOptions`, a mapping of some of its fields (the rest default;
        unknown names raise ValueError with a suggestion) or None (all defaults)."""
        if isinstance(options, VideoOptions) and not any(v is not None for v in overrides.values()):
            return options  # already checked (the per-group read path calls this for every group)
        base = dict(options.fields() if isinstance(options, VideoOptions) else (options or {}))
        base.update({k: v for k, v in overrides.items() if v is not None})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(base) - set(names))
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown h264 option {unknown[0]!r}: expected some of {', '.join(names)}{hint}")
        return cls(**base)

    def fields(self) -> dict[str, Any]:
        """The five settings as a dict (``gop, crf, preset, pix_fmt, lossless``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def encoder(self) -> str:
        """FFmpeg encoder name: libx264rgb when lossless, else libx264."""
        return "libx264rgb" if self.lossless else "libx264"

    @property
    def stored_pix_fmt(self) -> str:
        """Pixel format of the coded pictures: gbrp when lossless, else `pix_fmt`."""
        return "gbrp" if self.lossless else self.pix_fmt

    def to_meta(self) -> dict[str, Any]:
        """The ``codec_options`` record of ``meta.json``: the settings plus what they imply."""
        return {
            **self.fields(),
            "crf": None if self.lossless else self.crf,
            "pix_fmt": None if self.lossless else self.pix_fmt,
            "qp": 0 if self.lossless else None,
            "encoder": self.encoder,
            "profile": "high444" if self.lossless or self.pix_fmt == "yuv444p" else "high",
            "stored_pix_fmt": self.stored_pix_fmt,
            "color": "rgb" if self.lossless else ("bt601 full range" if self.pix_fmt == "yuv444p" else "bt601 limited range"),
            "tune": TUNE,
            "bframes": 0,
            "format_version": FORMAT_VERSION,
        }

    @classmethod
    def from_meta(cls, record: Any) -> "VideoOptions":
        """Options from a ``codec_options`` record (`to_meta`); ValueError naming what is wrong."""
        if not isinstance(record, Mapping):
            raise ValueError(f"codec_options must be an object with {', '.join(f.name for f in fields(cls))}, got {record!r}")
        version = record.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"codec_options format_version {version!r} is not supported (supports {FORMAT_VERSION})")
        missing = [f.name for f in fields(cls) if f.name not in record]
        if missing:
            raise ValueError(f"codec_options lacks {missing}")
        kw = {f.name: record[f.name] for f in fields(cls)}
        if kw["lossless"] is True:  # written as None: they do not apply
            kw["crf"] = cls.crf if kw["crf"] is None else kw["crf"]
            kw["pix_fmt"] = cls.pix_fmt if kw["pix_fmt"] is None else kw["pix_fmt"]
        return cls(**kw)

    def differences(self, given: Mapping[str, Any]) -> list[str]:
        """``name given vs ours`` for each field of `given` (a partial mapping) that differs."""
        ours = self.fields()
        return [f"{k}={v!r} (the dataset's {k}={ours.get(k)!r})" for k, v in given.items() if ours.get(k) != v]


# -- colour conversions (OpenCV, fixed-point: the same values on every machine) -----------


def _to_video_frame(frame: np.ndarray, opts: VideoOptions) -> Any:
    """An `av.VideoFrame` in the coded pixel format from one uint8 RGB frame (H, W, 3)."""
    import av
    import cv2

    if opts.lossless:
        return av.VideoFrame.from_ndarray(frame, format="rgb24")
    if opts.pix_fmt == "yuv420p":
        return av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
    y, cr, cb = cv2.split(cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb))
    return av.VideoFrame.from_ndarray(np.stack([y, cb, cr]), format="yuv444p")


def _planes(vf: Any) -> list[np.ndarray]:
    """Zero-copy uint8 views of a decoded frame's planes (each (h, w), rows padded in memory)."""
    out = []
    for p in vf.planes:
        h, w = p.height, p.width
        out.append(np.frombuffer(p, np.uint8).reshape(h, p.line_size)[:, :w])
    return out


def _to_rgb(vf: Any, opts: VideoOptions, out: np.ndarray, channels_first: bool) -> None:
    """Write decoded frame `vf` as uint8 RGB into `out` ((3, H, W) when `channels_first`, else (H, W, 3))."""
    import cv2

    planes = _planes(vf)
    if opts.lossless:  # gbrp: the planes are the channels
        g, b, r = planes
        if channels_first:
            np.copyto(out[0], r)
            np.copyto(out[1], g)
            np.copyto(out[2], b)
        else:
            cv2.merge([r, g, b], out)
        return
    if opts.pix_fmt == "yuv420p":
        y, u, v = planes
        h, w = y.shape
        i420 = np.empty((h * 3 // 2, w), np.uint8)
        flat = i420.reshape(-1)
        i420[:h] = y
        flat[h * w : h * w + u.size] = u.reshape(-1) if u.flags.c_contiguous else np.ascontiguousarray(u).reshape(-1)
        flat[h * w + u.size :] = v.reshape(-1) if v.flags.c_contiguous else np.ascontiguousarray(v).reshape(-1)
        rgb = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    else:
        y, cb, cr = planes
        rgb = cv2.cvtColor(cv2.merge([y, cr, cb]), cv2.COLOR_YCrCb2RGB)
    if channels_first:
        from .codecs import split_channels

        split_channels(rgb, out)
    else:
        out[...] = rgb


# -- encoding ------------------------------------------------------------------------------


def _nal_starts(data: bytes) -> list[int]:
    """Offsets of the Annex-B start codes (00 00 01, with a leading 00 when it is a 4-byte one)."""
    starts, i = [], data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i - 1 if i > 0 and data[i - 1] == 0 else i)
        i = data.find(b"\x00\x00\x01", i + 3)
    return starts


def _nal_units(data: bytes) -> list[tuple[int, bytes]]:
    """``(nal_unit_type, bytes with start code)`` of each NAL unit of an Annex-B access unit."""
    starts = _nal_starts(data)
    out = []
    for k, s in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(data)
        unit = data[s:end]
        head = unit.index(b"\x00\x00\x01") + 3
        out.append((unit[head] & 0x1F if head < len(unit) else -1, unit))
    return out


def _pack(units: list[bytes]) -> bytes:
    body = struct.pack(f"<{len(units)}I", *(len(u) for u in units)) + b"".join(units)
    crc = zlib.crc32(struct.pack("<I", len(units)) + body)
    return _HEAD.pack(MAGIC, crc, len(units)) + body


def encode_groups(frames: np.ndarray, options: VideoOptions | Mapping[str, Any] | None = None) -> list[bytes]:
    """Encode an episode's frames uint8 (T, H, W, 3) RGB into ``ceil(T / gop)`` group
    blobs (layout in the module docstring); group k holds frames ``k*gop .. k*gop+gop-1``."""
    import av

    opts = VideoOptions.build(options)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"h264: frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
    t_len, h, w = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
    if not opts.lossless and opts.pix_fmt == "yuv420p" and (h % 2 or w % 2):
        raise ValueError(f"h264 yuv420p needs even frame sizes, got {h}x{w}; use pix_fmt yuv444p")
    ctx = av.CodecContext.create(opts.encoder, "w")
    ctx.thread_count = 1  # x264 gets one thread from FFmpeg too (0 = auto): its output must not depend on timing
    ctx.width, ctx.height = w, h
    ctx.pix_fmt = "rgb24" if opts.lossless else opts.pix_fmt
    ctx.time_base = Fraction(1, 30)  # fixed: rate control must not depend on the dataset's fps
    if not opts.lossless:
        ctx.colorspace = 6  # smpte170m (BT.601)
        ctx.color_primaries = 6
        ctx.color_trc = 6
        ctx.color_range = 2 if opts.pix_fmt == "yuv444p" else 1  # pc (full) / tv (limited)
    g = opts.gop
    rate = "qp=0" if opts.lossless else f"crf={opts.crf}"
    ctx.options = {
        "preset": opts.preset,
        "tune": TUNE,
        "x264-params": f"{rate}:keyint={g}:min-keyint={g}:scenecut=0:bframes=0:threads=1:sliced-threads=0:forced-idr=1",
    }
    import av.video.frame as avf

    packets = []
    for t in range(t_len):
        vf = _to_video_frame(np.ascontiguousarray(frames[t]), opts)
        vf.pts = t
        if t % g == 0:
            vf.pict_type = avf.PictureType.I
        packets.extend(ctx.encode(vf))
    packets.extend(ctx.encode(None))
    if [p.pts for p in packets] != list(range(t_len)):
        raise RuntimeError(f"{opts.encoder} returned access units for frames {[p.pts for p in packets][:20]}..., "
                           f"expected 0..{t_len - 1} in order")
    groups: list[bytes] = []
    units: list[bytes] = []
    for t, packet in enumerate(packets):
        nals = _nal_units(bytes(packet))
        types = {n for n, _ in nals}
        if t % g == 0:
            if not packet.is_keyframe or not {5, 7, 8} <= types:
                raise RuntimeError(f"{opts.encoder}: frame {t} should open a group with an IDR and its SPS/PPS, "
                                   f"got NAL types {sorted(types)}")
            if units:
                groups.append(_pack(units))
            units = []
        elif packet.is_keyframe or 5 in types:
            raise RuntimeError(f"{opts.encoder}: an unexpected keyframe at frame {t} (groups of {g})")
        units.append(b"".join(u for n, u in nals if n != 6))  # drop SEI (x264's version/options string)
    groups.append(_pack(units))
    return groups


# -- decoding ------------------------------------------------------------------------------


def group_sizes(blob: bytes | np.ndarray | memoryview, where: str = "h264 group") -> tuple[int, list[int], int]:
    """Parse and check a group blob's header: ``(frames, access-unit sizes, payload offset)``.
    Raises `CorruptGroupError` (naming `where`) on a bad magic, CRC or size."""
    buf = memoryview(blob).cast("B") if not isinstance(blob, bytes) else memoryview(blob)
    if len(buf) < _HEAD.size:
        raise CorruptGroupError(f"{where}: corrupt h264 group (holds {len(buf)} bytes, expected a group blob starting {MAGIC!r})")
    magic, crc, n = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CorruptGroupError(f"{where}: corrupt h264 group (starts {bytes(magic)!r}, expected {MAGIC!r})")
    off = _HEAD.size + 4 * n
    if n < 1 or off > len(buf):
        raise CorruptGroupError(f"{where}: corrupt h264 group (header says {n} frames in {len(buf)} bytes)")
    if zlib.crc32(buf[_HEAD.size - 4 :]) != crc:
        raise CorruptGroupError(f"{where}: corrupt h264 group (CRC-32 mismatch: the bytes changed after encoding)")
    sizes = list(struct.unpack_from(f"<{n}I", buf, _HEAD.size))
    if off + sum(sizes) != len(buf):
        raise CorruptGroupError(f"{where}: corrupt h264 group (access units add up to {sum(sizes)} bytes, "
                                f"{len(buf) - off} stored)")
    return n, sizes, off


def decode_group(
    blob: bytes | np.ndarray | memoryview,
    shape: Sequence[int],
    options: VideoOptions | Mapping[str, Any] | None = None,
    frames: Sequence[int] | None = None,
    out: np.ndarray | Sequence[np.ndarray] | None = None,
    channels_first: bool = False,
    where: str = "h264 group",
) -> np.ndarray | Sequence[np.ndarray]:
    """Decode frames of one group blob to uint8 RGB.

    shape: (H, W, 3) of a frame. frames: indices within the group to return (default:
    all), in the order wanted; only units up to the highest one are decoded. out: where
    to write them, indexable by position in `frames` (an array (len(frames), H, W, 3),
    or (len(frames), 3, H, W) with `channels_first`, or a list of per-frame arrays);
    allocated when None. where: names the group in errors (e.g. ``"episode 3 pixels
    group 2"``). Decodes in the calling thread (one FFmpeg thread: parallelism comes
    from decoding several groups at once, see `decode_episode`). Returns `out`.
    """
    import av

    opts = VideoOptions.build(options)
    h, w, c = (int(s) for s in shape)
    n, sizes, off = group_sizes(blob, where)
    want = list(range(n)) if frames is None else [int(i) for i in frames]
    if want and (min(want) < 0 or max(want) >= n):
        raise IndexError(f"{where}: frames {want} asked of a group of {n}")
    if out is None:
        out = np.empty((len(want),) + ((c, h, w) if channels_first else (h, w, c)), np.uint8)
    if not want:
        return out
    slots: dict[int, list[int]] = {}
    for k, i in enumerate(want):
        slots.setdefault(i, []).append(k)
    last = max(want)
    data = bytes(blob) if not isinstance(blob, bytes) else blob
    ctx = av.CodecContext.create("h264", "r")
    ctx.thread_count = 1
    ctx.options = {"err_detect": "explode"}  # a damaged access unit is an error, never a concealed picture
    decoded = 0
    expected = opts.stored_pix_fmt
    accepted = {expected, expected.replace("yuv", "yuvj")}  # FFmpeg names full-range YUV yuvj...

    def take(vf: Any) -> None:
        nonlocal decoded
        i = decoded
        decoded += 1
        if i not in slots:
            return
        if vf.width != w or vf.height != h or vf.format.name not in accepted:
            raise CorruptGroupError(f"{where}: decoded a {vf.width}x{vf.height} {vf.format.name} frame, "
                                    f"expected {w}x{h} {expected}")
        first = out[slots[i][0]]
        _to_rgb(vf, opts, first, channels_first)
        for k in slots[i][1:]:
            out[k][...] = first

    try:
        pos = off
        for size in sizes[: last + 1]:
            for vf in ctx.decode(av.Packet(data[pos : pos + size])):
                take(vf)
            pos += size
        for vf in ctx.decode(None):
            take(vf)
    except av.error.FFmpegError as err:
        raise CorruptGroupError(f"{where}: corrupt h264 group (FFmpeg: {err})") from None
    if decoded != last + 1:
        raise CorruptGroupError(f"{where}: corrupt h264 group ({decoded} frames decoded from {last + 1} access units)")
    return out


def decode_episode(
    values: Sequence[bytes | np.ndarray],
    shape: Sequence[int],
    options: VideoOptions | Mapping[str, Any] | None,
    out: np.ndarray | None = None,
    where: str = "h264 episode",
    threads: int = 1,
) -> np.ndarray:
    """All frames uint8 (T, H, W, 3) of an episode from its T per-row values in step
    order (a group blob at every row ``k * gop``, empty values between: `check_layout`).
    `threads` > 1 decodes groups in parallel (FFmpeg releases the GIL). `where`
    names the episode and column in errors."""
    opts = VideoOptions.build(options)
    t_len = len(values)
    check_layout(values, opts.gop, where)
    shape = tuple(int(s) for s in shape)
    if out is None:
        out = np.empty((t_len,) + shape, np.uint8)
    starts = list(range(0, t_len, opts.gop))

    def one(s: int) -> None:
        decode_group(values[s], shape, opts, out=out[s : s + opts.gop], where=f"{where} group {s // opts.gop}")

    if threads > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=int(threads)) as pool:
            list(pool.map(one, starts))
    else:
        for s in starts:
            one(s)
    return out


def check_layout(values: Sequence[bytes | np.ndarray], gop: int, where: str = "h264 episode") -> None:
    """Check an episode's per-row values: a group blob at each row ``k * gop`` whose header
    says ``min(gop, T - k*gop)`` frames, and empty values on every other row. Raises
    `CorruptGroupError` naming the group; the CRC is checked when a group is decoded."""
    t_len = len(values)
    for t, v in enumerate(values):
        size = len(v)
        if t % gop:
            if size:
                raise CorruptGroupError(f"{where}: row {t} holds {size} bytes; only the first row of each group "
                                        f"of {gop} (rows 0, {gop}, ...) holds data")
            continue
        k = t // gop
        if size < _HEAD.size:
            raise CorruptGroupError(f"{where} group {k}: corrupt h264 group (row {t} holds {size} bytes, expected a group blob)")
        magic, _crc, n = _HEAD.unpack_from(memoryview(v).cast("B") if not isinstance(v, bytes) else v, 0)
        want = min(gop, t_len - t)
        if magic != MAGIC:
            raise CorruptGroupError(f"{where} group {k}: corrupt h264 group (starts {bytes(magic)!r}, expected {MAGIC!r})")
        if n != want:
            raise CorruptGroupError(f"{where} group {k}: corrupt h264 group (header says {n} frames, the episode has "
                                    f"{want} rows for it)")


def episode_values(groups: Sequence[bytes], length: int, gop: int) -> list[bytes]:
    """Per-row values of an episode of `length` rows from its group blobs: group k at row
    ``k * gop``, ``b""`` on the other rows."""
    if len(groups) != -(-int(length) // int(gop)):
        raise ValueError(f"{len(groups)} groups for {length} rows in groups of {gop}: expected {-(-int(length) // int(gop))}")
    values = [b""] * int(length)
    for k, blob in enumerate(groups):
        values[k * gop] = blob
    return values
