"""Converters between the episode store (Lance) and HDF5, MP4 folders, LeRobot v3 and
stable-worldmodel datasets (``wm data convert SRC DST --to FORMAT``).

`convert(src, dst, to)` detects the source format, reads it episode by episode into the
shared `Episode` (the store's row convention, T rows = N actions + 1, see
`data/dataset.py`) and writes the destination. Every destination is built in a hidden
sibling and renamed into place (Lance ones through `EpisodeWriter`, whole-episode
commits), so an existing DST is never damaged: ``mode="error"`` refuses it,
``"overwrite"`` replaces it only once the new one is complete, and only when it is an
output of that format this project wrote (`data/owned.py`: a Lance dataset's meta.json,
our HDF5 root attribute, our MP4/LeRobot markers, nothing foreign inside) or an empty
folder; anything else (a user's folder or file) is refused, naming it, and left as it
was. ``"append"`` adds episodes to an existing Lance dataset (one commit per episode).

Native dtypes and shapes are kept end to end: actions in their own dtype (float16/32/64,
int8..int64), states in their own float dtype and shape, extra per-step observations
(``extras``: extra cameras uint8 (H, W, 3) and other arrays) under their names.

Lossless wherever both sides are: raw/PNG frames and lossless H.264 (JPEG frames are
passed through as the same bytes when source and destination both hold JPEG, H.264
groups when both hold h264 with the same settings), actions, states, extras,
rewards, end flags, int64 episode ids, seeds, factors. Lossy, and reported in the
result's ``lossy`` list: MP4 video (frames and extra cameras are re-encoded, pixel values
change by a few levels), JPEG or lossy H.264 encoding of decoded frames or extra cameras, foreign
data the store cannot hold (per-step string columns, columns holding NaN/inf, foreign
datasets/features that are not one numeric row per frame).

Formats, one module each (its docstring draws the layout)
--------------------------------------------------------
======================  ==========  =====================================================
``lance``               read/write  `lance_store.py`: a worldmodel dataset directory
``hdf5``                read/write  `hdf5.py`: our layout (episode groups, extras as extra
                                    datasets); foreign per-episode groups, DINO-WM
                                    stacked arrays, stable-worldmodel flat files
``mp4``                 read/write  `mp4.py`: MP4 per episode (and per extra camera) +
                                    ``episodes.jsonl`` (actions, states, other extras)
``lerobot``             read/write  `lerobot.py`: LeRobot v3.0; extras as
                                    ``observation.<name>`` features, extra cameras as
                                    image/video features
``swm-lance``           read        `swm.py`: stable-worldmodel Lance tables; extra image
                                    columns become extra cameras, varying columns extras
======================  ==========  =====================================================

Shared pieces: `episode.py` (`Episode`, `Source`, `make_episode`), `frames.py` (PNG/JPEG
sniffing, MP4 through OpenCV), `fields.py` (the names foreign layouts give each field),
`output.py` (refuse what this project did not write, build beside, swap into place; the
recognisers live beside each writer, the Lance one in `data/owned.py`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from .. import columns as C
from ..codecs import check_codec
from .episode import Episode, Source, make_episode
from ..owned import dataset_not_ours, replaceable
from .output import MODES, check_destination, fresh_output

__all__ = ["convert", "detect_format", "open_source", "parse_ids", "Episode", "Source", "make_episode",
           "FORMATS", "SOURCE_FORMATS", "MODES"]

FORMATS = ("lance", "hdf5", "mp4", "lerobot")
SOURCE_FORMATS = ("lance", "hdf5", "mp4", "lerobot", "swm-lance")


def parse_ids(text: str) -> list[int]:
    """Parse an id list such as ``"0,2,5-7"`` into ``[0, 2, 5, 6, 7]``."""
    ids: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"--episodes {text!r}: bad item {part!r}; expected ids like 0,2,5-7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"--episodes {text!r}: range {part!r} runs backwards")
        ids.extend(range(lo, hi + 1))
    if not ids:
        raise ValueError(f"--episodes {text!r}: no ids; expected ids like 0,2,5-7")
    return sorted(set(ids))


def detect_format(path: str | os.PathLike) -> str:
    """Name the format of `path`: one of `SOURCE_FORMATS`; ValueError if none fits."""
    from .swm import swm_table

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    expected = (
        "expected a worldmodel dataset directory (meta.json), an .h5/.hdf5 file, a folder of MP4s "
        "with episodes.jsonl, a LeRobot v3 folder (meta/info.json) or a stable-worldmodel Lance table (NAME.lance)"
    )
    if p.is_file():
        with open(p, "rb") as f:
            magic = f.read(8)
        if magic == b"\x89HDF\r\n\x1a\n":
            return "hdf5"
        if p.suffix.lower() in (".h5", ".hdf5"):
            raise ValueError(f"{p}: named like HDF5 but not an HDF5 file (starts {magic!r})")
        raise ValueError(f"{p}: unknown format ({expected})")
    if (p / C.META_FILE).is_file():
        return "lance"
    if (p / "meta" / "info.json").is_file():
        return "lerobot"
    if (p / "episodes.jsonl").is_file():
        return "mp4"
    if swm_table(p) is not None:
        return "swm-lance"
    raise ValueError(f"{p}: unknown format ({expected})")


def open_source(path: str | os.PathLike, fmt: str | None = None) -> Source:
    """Open `path` for reading (format detected unless `fmt` is given)."""
    from .hdf5 import hdf5_source
    from .lance_store import lance_source
    from .lerobot import lerobot_source
    from .mp4 import mp4_source
    from .swm import swm_lance_source

    p = Path(path)
    fmt = fmt or detect_format(p)
    readers = {"lance": lance_source, "hdf5": hdf5_source, "mp4": mp4_source, "lerobot": lerobot_source, "swm-lance": swm_lance_source}
    if fmt not in readers:
        raise ValueError(f"unknown source format {fmt!r}; expected one of {', '.join(SOURCE_FORMATS)}")
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    return readers[fmt](p)


def check_output(dst: str | os.PathLike, to: str, mode: str) -> None:
    """Raise ValueError unless a `to` output may be written at `dst` with `mode`.

    "error" refuses an existing DST; "overwrite" replaces only an output of that format
    this project wrote (or an empty folder, for folder formats), never anything else;
    "append" needs an existing Lance dataset, or no DST (or an empty folder) to create.
    """
    dst_p = Path(dst)
    if to == "lance":
        if mode == "append" and (dst_p.exists() or dst_p.is_symlink()):
            if (dst_p / C.META_FILE).is_file():
                return  # the writer checks the dataset itself
            why = replaceable(dst_p, lambda p: f"not a dataset (no {C.META_FILE}) and not empty", is_dir=True)
            if why is not None:
                raise ValueError(f"{dst_p}: {why}; refusing to write into it (mode 'append' adds to a dataset this project wrote)")
            return
        check_destination(dst_p, mode, dataset_not_ours, is_dir=True)
        return
    from .hdf5 import hdf5_not_ours
    from .lerobot import lerobot_not_ours
    from .mp4 import mp4_not_ours

    recognise = {"hdf5": hdf5_not_ours, "mp4": mp4_not_ours, "lerobot": lerobot_not_ours}[to]
    check_destination(dst_p, mode, recognise, is_dir=to != "hdf5")


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    to: str,
    *,
    codec: str | None = None,
    episodes: Sequence[int] | None = None,
    mode: str = "error",
    src_format: str | None = None,
    codec_options: Any = None,
) -> dict:
    """Convert the dataset at `src` (format detected, or `src_format`) into `dst` as `to`.

    to: "lance" | "hdf5" | "mp4" | "lerobot". codec: frame codec of a Lance destination
    (raw | jpeg | png | h264; default: the source's when known) or of a LeRobot one (png | jpeg
    images in parquet; default MP4 video); HDF5 and MP4 take none. codec_options: h264
    settings of a new Lance destination (`data.video.VideoOptions` or a mapping of some of
    gop, crf, preset, pix_fmt, lossless; the rest default); None: the source's when it
    is h264 (its groups are then copied unchanged), else the defaults. episodes: source
    episode ids to convert (default all). mode: "error" (default) refuses an existing
    `dst`, "overwrite" replaces it once the new one is complete, "append" adds episodes to
    an existing Lance dataset.

    Returns ``{"src", "src_format", "dst", "to", "episodes", "frames", "episode_ids", "lossy"}``
    where ``lossy`` lists every way the copy differs from the source (empty = exact).
    """
    if to not in FORMATS:
        raise ValueError(f"unknown destination format {to!r}; expected one of {', '.join(FORMATS)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if codec is not None:
        check_codec(codec)
        if to in ("hdf5", "mp4"):
            raise ValueError(f"--codec {codec} does not apply to {to} (HDF5 stores raw uint8 frames, MP4 is video)")
    if codec_options is not None and (to != "lance" or codec not in (None, "h264")):
        raise ValueError(f"h264 options (gop, crf, ...) apply to a Lance destination with codec h264, not --to {to}"
                         + (f" --codec {codec}" if codec else ""))
    src_p, dst_p = Path(src), Path(dst)
    if src_p.resolve() == dst_p.resolve():
        raise ValueError(f"{dst_p}: source and destination are the same path")
    check_output(dst_p, to, mode)  # before reading anything: a refused DST costs no conversion
    source = open_source(src_p, src_format)
    ids = list(source.ids)
    if episodes is not None:
        wanted = sorted({int(e) for e in episodes})
        missing = sorted(set(wanted) - set(ids))
        if missing:
            have = f"{ids[0]}..{ids[-1]}" if ids else "none"
            raise ValueError(f"episodes {missing[:10]} are not in {src_p} ({len(ids)} episodes, ids {have})")
        ids = wanted
    if not ids:
        raise ValueError(f"{src_p}: no episodes to convert")
    lossy = source.lossy  # readers and writers add to it while converting
    frames = [0]

    def counted() -> Iterator[Episode]:
        for ep in source.read(ids):
            frames[0] += ep.length
            lossy.extend(n for n in ep.notes if n not in lossy)
            yield ep

    if to == "lance":
        from .lance_store import write_lance

        lance_codec = codec
        appending = mode == "append" and (dst_p / C.META_FILE).is_file()
        if lance_codec is None and not appending and source.codec in ("raw", "png", "jpeg", "h264"):
            lance_codec = source.codec  # keep the source's codec (an existing dataset keeps its own)
        options = codec_options
        if options is None and not appending and lance_codec == "h264" and source.codec == "h264":
            options = source.codec_options  # the source's settings: its groups are copied as they are
        if codec_options is not None and lance_codec != "h264" and not appending:
            raise ValueError(f"h264 options (gop, crf, ...) need --codec h264 (the source {src_p} holds {source.codec} frames)")
        if appending:  # each episode commits on its own: a failure keeps the episodes before it
            written = write_lance(counted(), dst_p, lance_codec, "append", source.env_id, source.fps, lossy, options)
        else:  # built beside DST and moved into place: a failure leaves DST as it was
            build_mode = "overwrite" if mode == "append" else mode  # append to nothing (or an empty folder) creates
            with fresh_output(dst_p, build_mode, is_dir=True, recognise=dataset_not_ours) as tmp:
                written = write_lance(counted(), tmp, lance_codec, "append", source.env_id, source.fps, lossy, options)
    elif to == "hdf5":
        from .hdf5 import write_hdf5

        written = write_hdf5(counted(), dst_p, source, mode)
    elif to == "mp4":
        from .mp4 import write_mp4

        written = write_mp4(counted(), dst_p, source, mode, lossy)
        lossy.append("frames encoded as MP4 video (lossy)")
    else:
        from .lerobot import write_lerobot

        written = write_lerobot(counted(), dst_p, source, mode, codec, lossy)
        if codec is None:
            lossy.append("frames encoded as MP4 video (lossy; pass codec png for lossless images)")
        elif codec == "jpeg" and source.codec != "jpeg":
            lossy.append("frames encoded as JPEG (lossy)")
    return {
        "src": str(src_p), "src_format": source.format, "dst": str(dst_p), "to": to, "episodes": len(written),
        "frames": frames[0], "episode_ids": written, "lossy": lossy,
    }
