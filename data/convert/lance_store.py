"""``lance`` (read/write): a worldmodel dataset directory, layout in `data/dataset.py`.

Read with `open_dataset`: frames (PNG/JPEG bytes and H.264 groups are kept as stored,
raw ones decoded),
actions in their stored dtype, states in their dtype and ``state_shape``, every extra
observation under its name (extra cameras decoded). Written with `EpisodeWriter`, one
commit per episode, keeping each source episode id when the writer can (ids only grow;
a colliding id is renumbered and reported). H.264 groups pass through unchanged when
the destination is h264 with the same settings (`VideoOptions`), and are decoded and
encoded again otherwise. Extra cameras go through the writer's codec: lossless for
raw/PNG and lossless h264, re-encoded (lossy, reported) for JPEG and lossy h264.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .. import columns as C
from ..codecs import EncodedFrame
from ..schema import EXTRA_PREFIX, is_camera
from .episode import Episode, Source, make_episode


def lance_source(path: Path) -> Source:
    """Open a worldmodel dataset directory as a `Source`."""
    from ..dataset import open_dataset

    ds = open_dataset(path)
    rows = {e[C.EPISODE_ID]: e for e in ds.episodes()}
    success = ds.success_steps()  # first success row per episode (None: not recorded)
    extras = list(ds.extras)

    def read(ids: Sequence[int]) -> Iterator[Episode]:
        for eid in ids:
            meta = rows[eid]
            if ds.codec == "raw":
                arrays = ds.load_episode(eid)
                frames = {"pixels": arrays.pop("pixels")}
            else:  # keep the stored bytes: PNG/JPEG frames and H.264 groups pass through without re-encoding
                arrays = ds.load_episode(eid, columns=[C.ACTION, C.STATE, C.REWARD, C.TERMINATED, C.TRUNCATED, *extras])
                idx = ds.index
                k = idx.position(int(eid))
                take = idx.rows[idx.start[k] : idx.start[k] + idx.count[k]]
                uniq, inverse = np.unique(take, return_inverse=True)
                cams = [k for k in extras if is_camera(ds.extras[k])] if ds.video_options is not None else []
                tbl = ds._steps.take(uniq.tolist(), columns=[C.PIXELS, *(EXTRA_PREFIX + k for k in cams)])
                blobs = tbl.column(C.PIXELS).to_pylist()
                frames = {"pixels": None, "encoded": [blobs[i] for i in inverse], "encoded_codec": ds.codec,
                          "image_shape": ds.image_shape, "encoded_options": ds.video_options}
                if cams:  # h264 extra cameras: their groups can pass through as well
                    values = {k: tbl.column(EXTRA_PREFIX + k).to_pylist() for k in cams}
                    frames["encoded_extras"] = {k: [v[i] for i in inverse] for k, v in values.items()}
            yield make_episode(
                f"{path} episode {eid}", **frames, action=arrays["action"], state=arrays["state"], reward=arrays["reward"],
                terminated=arrays["terminated"], truncated=arrays["truncated"], extras={k: arrays[k] for k in extras},
                episode_id=int(eid), env_id=meta[C.ENV_ID], seed=meta[C.SEED], factors=dict(meta[C.FACTORS]),
                policy=meta[C.POLICY], split=meta[C.SPLIT], success_step=success.get(int(eid)),
            )

    return Source("lance", path, sorted(rows), read, env_id=ds.meta.get("env_id"), fps=ds.meta.get("fps"), codec=ds.codec,
                  codec_options=ds.video_options)


def write_lance(episodes: Iterator[Episode], dst: Path, codec: str | None, mode: str, env_id: str | None,
                fps: float | None, lossy: list[str], codec_options: Any = None) -> list[int]:
    """Write `episodes` to the Lance dataset `dst` (created or appended to); returns the ids written.

    codec: frame codec of a new dataset (None: PNG/JPEG bytes of the first episode, else
    the writer's default). codec_options: h264 settings (`EpisodeWriter`). Notes on
    lossy steps are appended to `lossy`.
    """
    from ..dataset import open_dataset
    from ..writer import EpisodeWriter

    written: list[int] = []
    renumbered = 0
    first = next(episodes, None)
    if first is None:
        return written
    next_free = 0  # ids only grow: a source id below this one is renumbered
    if (dst / C.META_FILE).is_file():
        ids = [e[C.EPISODE_ID] for e in open_dataset(dst).episodes()]
        next_free = max(ids) + 1 if ids else 0
    env_id = env_id if env_id is not None else first.env_id
    with EpisodeWriter(dst, mode=mode, codec=codec, env_id=env_id, fps=fps, codec_options=codec_options) as w:
        for ep in _chain(first, episodes):
            if ep.env_id is not None and env_id is not None and ep.env_id != env_id:
                raise ValueError(f"{dst}: episode {ep.episode_id} has env_id {ep.env_id!r}, the others {env_id!r}; convert one env id at a time")
            target = w.codec  # None only before the first frame of a new dataset without a codec
            passed: dict[str, list[EncodedFrame]] = {}  # extra cameras whose stored groups pass through
            if ep.encoded is not None and ep.encoded_codec in ("png", "jpeg") and target in (None, ep.encoded_codec):
                # stored bytes pass through unchanged (an EncodedFrame also fixes a new dataset's codec)
                frames = [EncodedFrame(b, ep.image_shape, ep.encoded_codec) for b in ep.encoded]  # type: ignore[arg-type]
            elif (ep.encoded is not None and ep.encoded_codec == "h264" and target in (None, "h264")
                  and w.codec_options in (None, ep.encoded_options)):
                # H.264 groups encoded with the destination's settings pass through unchanged, extra cameras' too
                frames = [EncodedFrame(b, ep.image_shape, "h264", ep.encoded_options) for b in ep.encoded]  # type: ignore[arg-type]
                shapes = {k: tuple(ep.extras[k].shape[1:]) for k in ep.encoded_extras}
                passed = {k: [EncodedFrame(b, shapes[k], "h264", ep.encoded_options) for b in v]  # type: ignore[arg-type]
                          for k, v in ep.encoded_extras.items()}
            else:
                frames = list(ep.pixels)
                _note(lossy, (target or codec) == "jpeg", "frames encoded as JPEG (lossy)")
                _note(lossy, (target or codec) == "h264" and not _lossless(w), "frames encoded as H.264 (lossy)")
            for t in range(ep.length):
                last = t == ep.length - 1
                w.add_step(frames[t], ep.state[t], ep.action[t], float(ep.reward[t]), bool(ep.terminated[t]) and last,
                           bool(ep.truncated[t]) and last,
                           extras={k: passed[k][t] if k in passed else v[t] for k, v in ep.extras.items()})
            cams = [k for k in ep.cameras if k not in passed]
            _note(lossy, bool(cams) and w.codec == "jpeg", f"extra cameras {cams} encoded as JPEG (lossy)")
            _note(lossy, bool(cams) and w.codec == "h264" and not _lossless(w), f"extra cameras {cams} encoded as H.264 (lossy)")
            keep = ep.episode_id is not None and ep.episode_id >= next_free
            renumbered += ep.episode_id is not None and not keep
            eid = w.save_episode(seed=ep.seed, factors=ep.factors, policy=ep.policy, split=ep.split,
                                 episode_id=int(ep.episode_id) if keep else None,  # type: ignore[arg-type]
                                 success_step=ep.success_step)
            next_free = eid + 1
            written.append(eid)
    if renumbered:
        lossy.append(f"{renumbered} episode ids renumbered (they collide with ids already in {dst})")
    return written


def _lossless(writer: Any) -> bool:
    """Whether an h264 writer encodes losslessly."""
    return bool(writer.codec_options is not None and writer.codec_options.lossless)


def _note(lossy: list[str], cond: bool, text: str) -> None:
    if cond and text not in lossy:
        lossy.append(text)


def _chain(first: Episode, rest: Iterator[Episode]) -> Iterator[Episode]:
    yield first
    yield from rest
