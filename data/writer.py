"""`EpisodeWriter`: the one way episodes get into a dataset.

Lifecycle: create (or resume) -> `add_step` ... -> `save_episode` (or `discard_episode`)
-> ... -> `close`. Each `save_episode` commits the episode's step rows first, then its
episodes row; an episode exists for readers only once that second commit lands, so a
crash loses at most the episode in flight. With ``commit_every=N`` whole episodes are
committed N at a time (same two commits, never a partial episode visible). The layout
is drawn in `data/dataset.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from . import columns as C
from .codecs import GROUPED_CODECS, EncodedFrame, check_codec, default_codec, encode_frame
from .dataset import EpisodeDataset, read_meta, read_video_options
from .errors import DatasetError, SchemaMismatchError
from .owned import dataset_not_ours
from .interrupts import checkpoint, deferred_signals
from .schema import (
    ACTION_DTYPES,
    EXTRA_DTYPES,
    STATE_DTYPES,
    is_camera,
    episodes_schema,
    factors_type,
    make_meta,
    normalize_factors,
    steps_schema,
)

MODES = ("append", "overwrite", "error")
COMPACT_EVERY = 256  # uncompacted fragments before a compaction while writing (each commit costs ~5 ms more per 1k fragments)
FRAGMENT_BYTES = 256 << 20  # target size of a compacted steps fragment


def _lock(path: Path) -> int | None:
    """Take an exclusive flock on `path` (created if missing); returns the fd."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise DatasetError(f"{path.parent}: another EpisodeWriter has this dataset open") from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EpisodeWriter:
    """Writes whole episodes to the dataset at `path`.

    mode: "append" (default) creates the dataset or resumes it (episode ids continue
    after the largest on disk; orphan step rows of a crashed episode are deleted first);
    "error" refuses an existing dataset; "overwrite" replaces it when the first episode
    is saved (the old one stays untouched until the new one exists).
    codec: "raw" | "jpeg" | "png" | "h264" | None (None: the dataset's codec, or for a new
    dataset raw when H*W <= 64*64 and jpeg above). codec_options: settings of the h264
    codec (`data.video.VideoOptions`, or a mapping of some of its fields: gop, crf,
    preset, pix_fmt, lossless; the rest default): fixed when the dataset is created
    (meta ``codec_options``); when appending, the fields given must equal the
    dataset's (None: the dataset's). h264 frames are buffered raw and encoded when the
    episode is saved (groups of ``gop`` frames, `data/video.py`). env_id: stored in meta and rows.
    action_dim: needed only if the first episode has no action at all (a single row);
    otherwise taken from the first action. commit_every: episodes per commit (default 1:
    every `save_episode` commits; N > 1 batches N whole episodes into one commit, much
    faster for short episodes, and a crash then loses at most the N - 1 saved-but-pending
    episodes plus the one in flight; `flush` commits early). fps: frames per second of the recording
    (the env's ``render_fps``), stored in meta for video export; rows are one env step
    apart (meta ``frameskip`` 1): training windows choose their own frameskip.
    Appending data whose codec, image shape, action/state size, state dtype or env id
    differ from the dataset's raises `SchemaMismatchError` naming both values.

    >>> with EpisodeWriter("runs/tworoom") as w:
    ...     w.add_step(obs, state, action); ...; w.add_step(last_obs, last_state, terminated=True)
    ...     w.save_episode(seed=0, factors=info["factors"], policy="expert", split="train")
    """

    def __init__(
        self,
        path: str | os.PathLike,
        mode: str = "append",
        codec: str | None = None,
        env_id: str | None = None,
        action_dim: int | None = None,
        fps: float | None = None,
        commit_every: int = 1,
        codec_options: Any = None,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if codec is not None:
            check_codec(codec)
        self._video_given: dict[str, Any] | None = None  # h264 settings asked for (some or all fields)
        self._video: Any = None  # the dataset's `VideoOptions` (h264 only), once known
        if codec_options is not None:
            from .video import VideoOptions

            if codec not in (None, *GROUPED_CODECS):
                raise ValueError(f"codec_options apply to codec 'h264', not {codec!r}")
            if isinstance(codec_options, VideoOptions):
                self._video_given = codec_options.fields()
            else:
                self._video_given = dict(codec_options)
                VideoOptions.build(self._video_given)  # unknown names or bad values fail here, before any work
        self.path = Path(path)
        self.mode = mode
        self._codec = codec
        self._env_id = env_id
        self._fps = None if fps is None else float(fps)
        if isinstance(commit_every, bool) or not isinstance(commit_every, (int, np.integer)) or commit_every < 1:
            raise ValueError(f"commit_every={commit_every!r}: expected an integer >= 1")
        self.commit_every = int(commit_every)
        self._pending: list[tuple[pa.Table, pa.Table]] = []
        self._retry = False  # an earlier attempt at committing `_pending` failed part-way
        self._committed = 0  # episodes on disk (earlier sessions included)
        self._meta: dict | None = None  # set once the dataset (this writer's target) exists
        self._factors: pa.StructType | None = None
        self._success_column = True  # episodes table has `success_step` (False when resuming an older dataset)
        self._spec: dict[str, Any] = {}  # image_shape, action_dim, state_dim, state_dtype
        if action_dim is not None:
            self._spec["action_dim"] = int(action_dim)
        self._next_id = 0
        self._num_episodes = 0
        self._lock_fd: int | None = None
        self._replace_old = False
        self._uncompacted = 0
        self._closed = False
        self._buf: list[tuple] = []
        self._tables: tuple = (None, None)  # open (steps, episodes) Lance datasets, once the dataset exists
        self._open()
        if self._meta is None:  # a new dataset (or one replacing the old): the settings asked for
            if self._video_given is not None and self._codec is None:
                raise ValueError(f"{self.path}: codec_options given for a new dataset without codec='h264'")
            if self._codec in GROUPED_CODECS:
                from .video import VideoOptions

                self._video = VideoOptions.build(self._video_given)

    # -- opening ----------------------------------------------------------------------
    def _open(self) -> None:
        path = self.path
        for parent in path.parents:  # the first existing ancestor must be a folder
            if parent.exists() or parent.is_symlink():
                if not parent.is_dir():
                    raise DatasetError(f"{path}: {parent} is a file, not a folder; cannot create a dataset under it")
                break
        self._remove_stale_tmp()
        if path.exists():
            if not path.is_dir():
                raise DatasetError(f"{path}: exists and is not a directory; refusing to write a dataset there")
            if not (path / C.META_FILE).exists():
                if any(path.iterdir()):
                    raise DatasetError(f"{path}: not a dataset (no {C.META_FILE}) and not empty; refusing to write into it")
                return  # an empty directory: created at the first save
            if self.mode == "error":
                raise DatasetError(f"{path}: a dataset already exists (mode='error'); use mode='append' to add to it or mode='overwrite' to replace it")
            if self.mode == "overwrite":
                why = dataset_not_ours(path)  # only a dataset this project wrote, nothing of the user's inside, is replaced
                if why is not None:
                    raise DatasetError(f"{path}: {why}; refusing to replace it (mode='overwrite' replaces only a dataset this project wrote)")
            self._lock_fd = _lock(path / C.LOCK_FILE)
            if self.mode == "overwrite":
                self._replace_old = True
                return
            self._resume()

    def _resume(self) -> None:
        meta = read_meta(self.path)
        if self._codec is not None and self._codec != meta["codec"]:
            raise SchemaMismatchError(f"{self.path}: codec {self._codec!r} does not match the dataset's codec {meta['codec']!r}")
        if self._env_id is not None and meta["env_id"] is not None and self._env_id != meta["env_id"]:
            raise SchemaMismatchError(f"{self.path}: env_id {self._env_id!r} does not match the dataset's env_id {meta['env_id']!r}")
        ds = EpisodeDataset(self.path)
        self._delete_orphans(ds)
        ids = [r[C.EPISODE_ID] for r in ds._episode_rows]
        self._next_id = (max(ids) + 1) if ids else 0
        self._num_episodes = self._committed = len(ids)
        self._factors = ds._episodes.schema.field(C.FACTORS).type
        self._success_column = ds._episodes.schema.get_field_index(C.SUCCESS_STEP) >= 0  # absent in older datasets
        if "action_dim" in self._spec and self._spec["action_dim"] != int(meta["action_dim"]):
            raise SchemaMismatchError(f"{self.path}: action size {self._spec['action_dim']} does not match the dataset's action size {meta['action_dim']}")
        self._video = read_video_options(meta, self.path)
        if self._video_given is not None:
            if self._video is None:
                raise SchemaMismatchError(f"{self.path}: codec_options {self._video_given} given, but the dataset's codec is "
                                          f"{meta['codec']!r} (they apply to h264)")
            diffs = self._video.differences(self._video_given)
            if diffs:
                raise SchemaMismatchError(f"{self.path}: h264 options {', '.join(diffs)} do not match")
        self._meta = meta
        self._codec = meta["codec"]
        if self._env_id is None:
            self._env_id = meta["env_id"]
        self._spec = {
            "image_shape": tuple(meta["image_shape"]),
            "action_dim": int(meta["action_dim"]),
            "state_dim": int(meta["state_dim"]),
            "state_dtype": meta.get("state_dtype", "float64"),
            "state_shape": tuple(meta.get("state_shape") or [int(meta["state_dim"])]),
            "action_dtype": meta.get("action_dtype", "float32"),
            "extras": meta.get("extras") or {},
        }
        self._uncompacted = len(ds._steps.get_fragments())

    def _delete_orphans(self, ds: EpisodeDataset) -> None:
        import pyarrow.compute as pc

        committed = pa.array([r[C.EPISODE_ID] for r in ds._episode_rows], pa.int64())
        eid = ds._steps.to_table(columns=[C.EPISODE_ID]).column(C.EPISODE_ID)
        orphan_ids = pc.unique(pc.filter(eid, pc.invert(pc.is_in(eid, value_set=committed)))).to_pylist()
        if orphan_ids:
            ds._steps.delete(f"{C.EPISODE_ID} IN ({', '.join(str(int(i)) for i in orphan_ids)})")

    def _remove_stale_tmp(self) -> None:
        """Remove `.NAME.creating-PID` / `.NAME.old-PID` folders left by dead writers."""
        parent = self.path.parent
        if not parent.is_dir():
            return
        for p in sorted(parent.glob(f".{self.path.name}.*-*")):
            kind, _, pid = p.name.rpartition("-")
            if not (kind.endswith((".creating", ".old")) and pid.isdigit() and not _pid_alive(int(pid))):
                continue
            old = parent / f".{self.path.name}.old-{pid}"
            if kind.endswith(".creating") and old.exists() and not self.path.exists() and (p / C.META_FILE).exists():
                os.rename(p, self.path)  # an overwrite killed between its two renames: finish the swap
                continue
            shutil.rmtree(p, ignore_errors=True)

    # -- properties -------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        """Episodes committed in the dataset (earlier sessions included)."""
        return self._num_episodes

    @property
    def committed_episodes(self) -> int:
        """Episodes on disk, visible to readers (earlier sessions included; saved but
        still pending ones are not counted)."""
        return self._committed

    @property
    def codec(self) -> str | None:
        """Frame codec of the dataset (None until known)."""
        return self._codec

    @property
    def codec_options(self) -> Any:
        """`data.video.VideoOptions` of an h264 dataset (None for other codecs or until known)."""
        return self._video

    # -- steps ------------------------------------------------------------------------
    def add_step(
        self,
        pixels: np.ndarray | EncodedFrame,
        state: np.ndarray,
        action: np.ndarray | None = None,
        reward: float = 0.0,
        terminated: bool = False,
        truncated: bool = False,
        extras: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Buffer one row: observation `pixels` uint8 (H, W, 3), `state` float (S,), the
        `action` (A,) taken at it (None on the last row: stored as zeros), the `reward`
        received on arriving here, and whether the episode ended here.

        `pixels` may be an `EncodedFrame` (encoded elsewhere, e.g. in a worker process):
        its codec must be the writer's and it is stored without re-encoding.

        Dtypes and shapes are kept: `state` any float dtype and shape (stored flat, its
        shape in meta), `action` float or int (its dtype fixed by the first action; later
        ones are cast within the same kind). `extras` holds more observations of this
        row, ``name -> array`` with the same names, dtypes and shapes on every row
        (uint8 (H, W, 3) arrays are extra cameras, stored with the dataset's codec)."""
        if self._closed:
            raise ValueError("EpisodeWriter is closed")
        encoded: EncodedFrame | None = None
        if isinstance(pixels, EncodedFrame):
            encoded = pixels
            check_codec(encoded.codec)
            if self._codec is None:
                self._codec = encoded.codec
            if encoded.codec != self._codec:
                raise self._mismatch("codec", encoded.codec, self._codec)
            self._check_encoded_options(encoded, "pixels")
            shape = tuple(int(x) for x in encoded.shape)
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"EncodedFrame shape must be (H, W, 3), got {encoded.shape}")
            pixels = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=shape, strides=(0, 0, 0))
        else:
            pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"pixels must be uint8 (H, W, 3), got {pixels.dtype} {pixels.shape}")
        state = np.asarray(state)
        if state.ndim < 1 or state.size == 0 or state.dtype.name not in STATE_DTYPES:
            raise ValueError(f"state must be a non-empty float array (float16/32/64), got {state.dtype} {state.shape}")
        if not np.all(np.isfinite(state)):
            raise ValueError(f"state contains NaN or inf: {state}")
        if action is not None:
            action_in = np.asarray(action)
            if action_in.ndim != 1 or action_in.dtype.name not in ACTION_DTYPES:
                raise ValueError(f"action must be a 1-D array of one of {ACTION_DTYPES}, got {action_in.dtype} {action_in.shape}")
            if not np.all(np.isfinite(action_in)):
                raise ValueError(f"action contains NaN or inf: {action_in}")
            want = self._spec.get("action_dtype", action_in.dtype.name)
            if action_in.dtype.name != want:
                if not np.can_cast(action_in.dtype, np.dtype(want), casting="same_kind"):
                    raise self._mismatch("action dtype", action_in.dtype.name, want)
                action_in = action_in.astype(want)
            action = action_in
        reward = float(reward)
        if not np.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")

        spec = self._spec
        if "image_shape" not in spec:
            spec["image_shape"] = tuple(pixels.shape)
            spec["state_shape"] = tuple(int(x) for x in state.shape)
            spec["state_dim"] = int(state.size)
            spec["state_dtype"] = state.dtype.name
            if self._codec is None:
                self._codec = default_codec(pixels.shape)
        if tuple(pixels.shape) != spec["image_shape"]:
            raise self._mismatch("image shape", tuple(pixels.shape), spec["image_shape"])
        if tuple(state.shape) != tuple(spec.get("state_shape", (spec["state_dim"],))):
            got = state.shape[0] if state.ndim == 1 else tuple(state.shape)
            want = spec["state_dim"] if len(spec.get("state_shape", (0,))) == 1 else tuple(spec["state_shape"])
            raise self._mismatch("state size" if state.ndim == 1 else "state shape", got, want)
        if state.dtype.name != spec["state_dtype"]:
            raise self._mismatch("state dtype", state.dtype.name, spec["state_dtype"])
        if action is not None:
            if "action_dim" not in spec:
                spec["action_dim"] = int(action.shape[0])
            spec.setdefault("action_dtype", action.dtype.name)
            if action.shape[0] != spec["action_dim"]:
                raise self._mismatch("action size", action.shape[0], spec["action_dim"])
        if encoded is not None:
            if self._codec == "raw" and len(encoded.data) != int(np.prod(pixels.shape)):
                raise ValueError(f"raw EncodedFrame of {len(encoded.data)} bytes for shape {pixels.shape}: expected {int(np.prod(pixels.shape))}")
            data = encoded.data if self._codec != "raw" else np.frombuffer(encoded.data, np.uint8).reshape(pixels.shape)
        else:
            # raw and h264 (encoded with the whole episode at `save_episode`) keep the frame
            data = pixels.copy() if self._codec in ("raw", *GROUPED_CODECS) else encode_frame(pixels, self._codec)
        extras_in = self._check_extras(extras)
        self._buf.append((data, state.reshape(-1).copy(), action, reward, bool(terminated), bool(truncated), extras_in))

    def _check_extras(self, extras: Mapping[str, np.ndarray] | None) -> dict[str, Any]:
        """Validate one row's extras against the first row's (names, dtypes, shapes); encode cameras.

        An extra camera may come as an `EncodedFrame` in the writer's codec (stored as is)."""
        extras = dict(extras or {})
        spec = self._spec
        if "extras" not in spec:
            described = {}
            for name, value in extras.items():
                if not isinstance(name, str) or not name.isidentifier():
                    raise ValueError(f"extra observation name {name!r}: expected an identifier (letters, digits, _)")
                if isinstance(value, EncodedFrame):
                    described[name] = {"dtype": "uint8", "shape": [int(x) for x in value.shape]}
                    continue
                arr = np.asarray(value)
                if arr.dtype.name not in EXTRA_DTYPES:
                    raise ValueError(f"extra observation {name!r} has dtype {arr.dtype}; expected one of {EXTRA_DTYPES}")
                described[name] = {"dtype": arr.dtype.name, "shape": [int(x) for x in arr.shape]}
            spec["extras"] = described
        want = spec["extras"]
        if sorted(extras) != sorted(want):
            raise self._mismatch("extra observations", sorted(extras), sorted(want))
        out: dict[str, Any] = {}
        for name, value in extras.items():
            if isinstance(value, EncodedFrame):  # an extra camera encoded elsewhere: stored as is
                if not is_camera(want[name]) or list(value.shape) != list(want[name]["shape"]):
                    raise self._mismatch(f"extra {name!r}", f"encoded frame {tuple(value.shape)}", f"{want[name]['dtype']} {tuple(want[name]['shape'])}")
                if value.codec != self._codec:
                    raise self._mismatch(f"extra {name!r} codec", value.codec, self._codec)
                self._check_encoded_options(value, f"extra {name!r}")
                out[name] = value.data if self._codec != "raw" else np.frombuffer(value.data, np.uint8).copy()
                continue
            arr = np.asarray(value)
            if arr.dtype.name != want[name]["dtype"] or list(arr.shape) != list(want[name]["shape"]):
                raise self._mismatch(f"extra {name!r}", f"{arr.dtype} {tuple(arr.shape)}", f"{want[name]['dtype']} {tuple(want[name]['shape'])}")
            if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                raise ValueError(f"extra observation {name!r} contains NaN or inf")
            if is_camera(want[name]) and self._codec in GROUPED_CODECS:
                out[name] = arr.copy()  # encoded with the whole episode at `save_episode`
            elif is_camera(want[name]) and self._codec not in (None, "raw"):
                out[name] = encode_frame(arr, self._codec)
            else:
                out[name] = arr.reshape(-1).copy()
        return out

    def _check_encoded_options(self, encoded: EncodedFrame, what: str) -> None:
        """An h264 `EncodedFrame` must carry the dataset's `VideoOptions` (a new dataset adopts them)."""
        if encoded.codec not in GROUPED_CODECS:
            return
        from .video import VideoOptions

        if not isinstance(encoded.options, VideoOptions):
            raise ValueError(f"{what}: an {encoded.codec} EncodedFrame needs its VideoOptions (made by "
                             f"data.codecs.encode_frames), got options={encoded.options!r}")
        if self._video is None:
            self._video = encoded.options
        if encoded.options != self._video:
            raise self._mismatch(f"{what} h264 options", encoded.options.fields(), self._video.fields())

    def _video_values(self, values: list[Any], what: str, eid: int) -> list[bytes]:
        """Per-row h264 values of one episode column: encoded here from raw frames, or
        `EncodedFrame` data checked for the group layout (`data.video.check_layout`)."""
        from .video import check_layout, encode_groups, episode_values

        if all(isinstance(v, bytes) for v in values):
            check_layout(values, self._video.gop, where=f"{self.path}: episode {eid} {what}")
            return values
        if any(isinstance(v, bytes) for v in values):
            raise ValueError(f"save_episode: {what}: some rows came as EncodedFrames and some as arrays; "
                             f"an h264 episode is encoded as a whole, one way or the other")
        return episode_values(encode_groups(np.stack(values), self._video), len(values), self._video.gop)

    def _mismatch(self, what: str, got: Any, expected: Any) -> ValueError:
        if self._meta is not None:
            return SchemaMismatchError(f"{self.path}: {what} {got} does not match the dataset's {what} {expected}")
        return ValueError(f"{what} {got} does not match the first step's {what} {expected}")

    def discard_episode(self) -> None:
        """Drop the buffered steps without writing anything."""
        self._buf = []

    @property
    def buffered_steps(self) -> int:
        """Rows buffered for the episode in flight."""
        return len(self._buf)

    # -- commit -----------------------------------------------------------------------
    def save_episode(
        self,
        *,
        seed: int | None = None,
        factors: Mapping[str, Any] | None = None,
        policy: str = "unknown",
        split: str | None = "default",
        episode_id: int | None = None,
        success_step: int | None = None,
    ) -> int:
        """Save the buffered episode and return its id; it is committed (steps, then its
        episodes row) now, or with the next `flush` when ``commit_every > 1``.

        `episode_id` keeps a given id (e.g. from a converted dataset); it must be larger
        than every id already written (ids only grow). Default: the next free id.
        `success_step`: the first row at which the env reported success (-1: never;
        None: not recorded); kept in the ``success_step`` column (left out when
        appending to a dataset created before that column existed).
        """
        if success_step is not None and (
            isinstance(success_step, bool) or not isinstance(success_step, (int, np.integer))
            or not -1 <= success_step < len(self._buf)
        ):
            raise ValueError(f"save_episode: success_step={success_step!r}: expected None, -1 (never) or a row "
                             f"index in [0, {len(self._buf)})")
        if self._closed:
            raise ValueError("EpisodeWriter is closed")
        if not self._buf:
            raise ValueError("save_episode: no steps buffered (call add_step first)")
        if episode_id is not None:
            if isinstance(episode_id, bool) or not isinstance(episode_id, (int, np.integer)) or episode_id < self._next_id:
                raise ValueError(
                    f"save_episode: episode_id={episode_id!r} must be an integer >= {self._next_id} (ids only grow; "
                    f"{self.path} already uses ids below it)"
                )
            self._next_id = int(episode_id)
        n = len(self._buf)
        for t, (_, _, action, _, term, trunc, _) in enumerate(self._buf[:-1]):
            if action is None:
                raise ValueError(f"save_episode: row {t} of {n} has no action (only the last row may omit it)")
            if term or trunc:
                raise ValueError(f"save_episode: row {t} of {n} is marked terminated/truncated (only the last row may be)")
        if "action_dim" not in self._spec:
            raise ValueError("save_episode: cannot infer the action size from an episode without actions; pass EpisodeWriter(..., action_dim=A)")
        factors = dict(factors or {})
        if self._factors is None:
            self._factors = factors_type(factors)
        factors = normalize_factors(factors, self._factors)

        eid = self._next_id
        steps = self._steps_table(eid)
        episode = pa.Table.from_pylist(
            [{C.EPISODE_ID: eid, C.ENV_ID: self._env_id, C.SEED: None if seed is None else int(seed),
              C.FACTORS: factors, C.POLICY: str(policy), C.LENGTH: n, C.SPLIT: "default" if split is None else str(split),
              C.SUCCESS_STEP: None if success_step is None else int(success_step)}],
            schema=episodes_schema(self._factors, self._success_column),
        )
        with deferred_signals():  # the episode moves from the buffer to `_pending` as one step
            self._pending.append((steps, episode))
            self._buf = []
            self._next_id += 1
            self._num_episodes += 1
        if len(self._pending) >= self.commit_every:
            self.flush()
        return eid

    @property
    def pending_episodes(self) -> int:
        """Saved episodes not yet committed (at most ``commit_every - 1`` between calls)."""
        return len(self._pending)

    def flush(self) -> None:
        """Commit every saved-but-pending episode: one steps commit, then one episodes commit.

        Idempotent under interruption: SIGINT/SIGTERM wait until the commits and the
        book-keeping are done (`deferred_signals`), and a batch whose earlier attempt
        failed part-way (an exception between or inside the two commits) is checked
        against the tables by episode id before it is written again, so its rows are
        never committed twice.
        """
        if not self._pending:
            return
        with deferred_signals():
            steps = pa.concat_tables([p[0] for p in self._pending]) if len(self._pending) > 1 else self._pending[0][0]
            episodes = pa.concat_tables([p[1] for p in self._pending]) if len(self._pending) > 1 else self._pending[0][1]
            checkpoint("flush:start")
            retry, self._retry = self._retry, True  # until the book-keeping below is done
            if self._meta is None:
                self._create(steps, episodes)
            else:
                self._append(steps, episodes, retry)
            checkpoint("flush:committed")
            self._committed += len(self._pending)
            self._pending = []
            self._retry = False
        checkpoint("flush:done")
        if self._uncompacted >= COMPACT_EVERY:
            self.compact()

    def _append(self, steps: pa.Table, episodes: pa.Table, retry: bool) -> None:
        """Append one batch to an existing dataset: its step rows, then its episodes rows.

        On a `retry` (an earlier attempt at this batch raised part-way) the tables
        are asked first which of the two commits already landed; each commit is atomic,
        so a batch's rows are either all there or all absent.
        """
        import lance

        steps_uri, episodes_uri = str(self.path / C.STEPS_TABLE), str(self.path / C.EPISODES_TABLE)
        write_steps = write_episodes = True
        if retry:
            ids = ", ".join(str(int(i)) for i in episodes.column(C.EPISODE_ID).to_pylist())
            where = f"{C.EPISODE_ID} IN ({ids})"
            steps_ds, episodes_ds = lance.dataset(steps_uri), lance.dataset(episodes_uri)
            on_disk = steps_ds.count_rows(filter=where)
            write_episodes = episodes_ds.count_rows(filter=where) == 0
            if on_disk == len(steps):
                write_steps = False
            elif on_disk and write_episodes:  # cannot happen with atomic commits; never keep a partial batch
                steps_ds.delete(where)
            self._tables = (None, None)
        # passing the open datasets (not paths) saves re-reading the manifests: ~1.3 ms/commit
        steps_ds, episodes_ds = self._tables
        if write_steps:
            steps_ds = lance.write_dataset(steps, steps_uri if steps_ds is None else steps_ds, mode="append")
            self._tables = (steps_ds, episodes_ds)
            self._uncompacted += 1
        checkpoint("append:steps")
        if write_episodes:
            episodes_ds = lance.write_dataset(episodes, episodes_uri if episodes_ds is None else episodes_ds, mode="append")
            self._tables = (steps_ds, episodes_ds)
        checkpoint("append:episodes")

    def _steps_table(self, eid: int) -> pa.Table:
        spec, n = self._spec, len(self._buf)
        a_dtype = spec.get("action_dtype", "float32")
        extras = spec.get("extras") or {}
        schema = steps_schema(
            self._codec, spec["image_shape"], spec["action_dim"], spec["state_dim"], spec["state_dtype"], a_dtype, extras
        )
        a_dim = spec["action_dim"]
        if self._codec == "raw":
            flat = np.stack([b[0] for b in self._buf]).reshape(-1)
            pixels = pa.FixedSizeListArray.from_arrays(pa.array(flat), int(flat.size // n))
        elif self._codec in GROUPED_CODECS:
            pixels = pa.array(self._video_values([b[0] for b in self._buf], C.PIXELS, eid), pa.binary())
        else:
            pixels = pa.array([b[0] for b in self._buf], pa.binary())
        actions = np.stack([b[2] if b[2] is not None else np.zeros(a_dim, a_dtype) for b in self._buf]).astype(a_dtype, copy=False)
        states = np.stack([b[1] for b in self._buf])
        arrays = [
            pa.array(np.full(n, eid, np.int64)),
            pa.array(np.arange(n, dtype=np.int32)),
            pixels,
            pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), a_dim),
            pa.FixedSizeListArray.from_arrays(pa.array(states.reshape(-1)), spec["state_dim"]),
            pa.array(np.array([b[3] for b in self._buf], np.float32)),
            pa.array(np.array([b[4] for b in self._buf], bool)),
            pa.array(np.array([b[5] for b in self._buf], bool)),
        ]
        for name, ex in extras.items():
            values = [b[6][name] for b in self._buf]
            if is_camera(ex) and self._codec in GROUPED_CODECS:
                values = self._video_values(values, "extra_" + name, eid)
            if isinstance(values[0], bytes):
                arrays.append(pa.array(values, pa.binary()))
            else:
                flat = np.stack(values).reshape(-1)
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), int(flat.size // n) if n else 0))
        return pa.Table.from_arrays(arrays, schema=schema)

    def _create(self, steps: pa.Table, episode: pa.Table) -> None:
        """Build the dataset in a sibling temp folder, then rename it into place."""
        import lance

        spec = self._spec
        meta = make_meta(
            self._codec, spec["image_shape"], spec["action_dim"], spec["state_dim"], spec["state_dtype"], self._env_id,
            fps=self._fps, action_dtype=spec.get("action_dtype", "float32"), state_shape=spec.get("state_shape"),
            extras=spec.get("extras"), codec_options=self._video,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.parent / f".{self.path.name}.creating-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        lock_fd = None
        try:
            lock_fd = _lock(tmp / C.LOCK_FILE)
            lance.write_dataset(steps, str(tmp / C.STEPS_TABLE))
            lance.write_dataset(episode, str(tmp / C.EPISODES_TABLE))
            meta_tmp = tmp / (C.META_FILE + ".tmp")
            meta_tmp.write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(meta_tmp, tmp / C.META_FILE)
            checkpoint("create:written")
            old = None
            if self._replace_old:
                # a kill between these two renames leaves PATH missing; the next writer
                # finishes the swap (`_remove_stale_tmp`)
                old = self.path.parent / f".{self.path.name}.old-{os.getpid()}"
                os.rename(self.path, old)
                os.rename(tmp, self.path)
            else:
                try:
                    os.rename(tmp, self.path)  # replaces an empty directory, fails on a non-empty one
                except OSError as e:
                    raise DatasetError(f"{self.path}: appeared while this writer was creating it ({e}); not overwritten") from e
            # the dataset exists from here on: nothing between the rename and this book-keeping can fail
            previous_fd, self._lock_fd, lock_fd = self._lock_fd, lock_fd, None
            self._meta = meta
            self._uncompacted = 1
            self._replace_old = False
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            _unlock(lock_fd)
            raise
        if old is not None:
            _unlock(previous_fd)
            shutil.rmtree(old, ignore_errors=True)
        checkpoint("create:done")

    # -- maintenance ------------------------------------------------------------------
    def compact(self) -> None:
        """Merge small fragments (one per saved episode) and remove old table versions."""
        if self._meta is None:
            return
        with deferred_signals():  # atomic anyway; deferred so Ctrl-C is not turned into a Lance error
            _compact_tables(self.path, self._spec)
            self._tables = (None, None)
            self._uncompacted = 0

    def close(self, compact: bool = True) -> None:
        """Commit the saved episodes, compact (unless `compact` is False) and release the
        dataset; a buffered unsaved episode is discarded (with a warning)."""
        if self._closed:
            return
        try:
            if self._buf:
                warnings.warn(f"EpisodeWriter({self.path}): discarding {len(self._buf)} unsaved steps", stacklevel=2)
                self._buf = []
            self.flush()  # saved episodes are whole: they are committed even when closing after an error
            if compact and self._uncompacted > 1:
                self.compact()
        finally:
            self._closed = True
            self._tables = (None, None)
            _unlock(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._buf = []  # an exception mid-episode: do not commit half an episode
        # interrupted (Ctrl-C): commit what is saved and stop now; the next writer compacts
        self.close(compact=exc_type is None or not issubclass(exc_type, KeyboardInterrupt))

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            _unlock(self._lock_fd)

    def __repr__(self) -> str:
        return f"EpisodeWriter({str(self.path)!r}, mode={self.mode!r}, codec={self._codec!r}, episodes={self._num_episodes})"


def merge_fragments(table: Any, target_rows: int | None) -> bool:
    """Rewrite runs of adjacent small or partly deleted fragments of Lance `table` into
    fragments of up to `target_rows` rows (None: no limit), each written from one
    in-memory table; one atomic ``Rewrite`` commit. Returns whether anything was rewritten.

    Rows inside each merged run keep their order and deleted rows are dropped; Lance
    lists the rewritten fragments after the untouched ones, exactly as `compact_files`
    does (episodes stay contiguous, which is all readers rely on). Unlike
    `compact_files`, each new fragment is encoded from one batch, so a column is one
    large page instead of one page per source batch: a random ``take`` of ~246 raw 64x64
    frames went from 6.4 to 3.0 ms (`benchmarks/RESULTS.md`). A crash before the commit
    leaves only unreferenced data files; the table stays at its previous version.
    """
    import lance
    from lance.fragment import write_fragments

    target = int(target_rows) if target_rows else 1 << 62
    groups: list[list[Any]] = []
    run: list[Any] = []

    def close_run() -> None:
        if len(run) > 1 or (run and run[0].deletion_file() is not None):
            groups.append(list(run))
        run.clear()

    run_rows = 0
    for frag in table.get_fragments():
        rows = frag.count_rows()
        small = rows < target or frag.deletion_file() is not None
        if not small or run_rows + rows > target:
            close_run()
            run_rows = 0
        if small:
            run.append(frag)
            run_rows += rows
    close_run()
    if not groups:
        return False
    rewrites = []
    for group in groups:
        data = pa.concat_tables([f.to_table() for f in group]).combine_chunks()  # deletions applied; one batch
        new = write_fragments(data, table.uri, schema=table.schema, max_rows_per_file=max(len(data), 1)) if len(data) else []
        rewrites.append(lance.LanceOperation.RewriteGroup([f.metadata for f in group], new))
    lance.LanceDataset.commit(table.uri, lance.LanceOperation.Rewrite(rewrites, []), read_version=table.version)
    return True


def _compact_tables(path: Path, spec: Mapping[str, Any]) -> None:
    """Merge the small fragments of both tables of the dataset at `path` (steps into
    fragments of about `FRAGMENT_BYTES`, sized from `spec`'s image/action/state sizes),
    then delete old table versions."""
    import lance

    row_bytes = int(np.prod(spec["image_shape"])) + 4 * int(spec["action_dim"]) + 8 * int(spec["state_dim"]) + 32
    target_rows = int(max(1024, FRAGMENT_BYTES // row_bytes))
    for name, target in ((C.STEPS_TABLE, target_rows), (C.EPISODES_TABLE, None)):
        table = lance.dataset(str(path / name))
        if merge_fragments(table, target):
            table = lance.dataset(str(path / name))
        table.cleanup_old_versions(older_than=timedelta(seconds=0))


def compact_dataset(path: str | os.PathLike) -> dict:
    """Compact a dataset in place (``wm data compact``): merge fragments, drop deleted
    rows (crash orphans) and old table versions.

    Takes the writer lock, so it refuses a dataset an `EpisodeWriter` has open. Crash-safe:
    each table's compaction is one new Lance version committed atomically (a crash
    leaves the previous version, which stays readable), and old versions are deleted
    only after the new one is committed. Returns fragment counts before and after.
    """
    import lance

    path = Path(path)
    meta = read_meta(path)
    fd = _lock(path / C.LOCK_FILE)
    try:
        ds = EpisodeDataset(path)
        orphans = ds.index.orphan_steps
        before = {name: len(lance.dataset(str(path / name)).get_fragments()) for name in (C.STEPS_TABLE, C.EPISODES_TABLE)}
        if orphans:
            committed = ", ".join(str(int(r[C.EPISODE_ID])) for r in ds._episode_rows) or "-1"
            ds._steps.delete(f"{C.EPISODE_ID} NOT IN ({committed})")
        _compact_tables(path, meta)
        after = {name: len(lance.dataset(str(path / name)).get_fragments()) for name in (C.STEPS_TABLE, C.EPISODES_TABLE)}
    finally:
        _unlock(fd)
    return {"path": str(path), "fragments_before": before, "fragments_after": after, "orphan_steps_removed": int(orphans)}
