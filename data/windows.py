"""`WindowDataset`: fixed-shape training windows over an episode dataset; `WindowSampler`, `EpisodeGroupSampler`.

Window i starts at (episode e, step t) and covers n = context + horizon frames at rows
t, t+f, ..., t+(n-1)f of that episode (f = frameskip). Actions come in blocks: block k
concatenates the raw actions of rows t+k*f ... t+(k+1)*f-1, so a window has n-1 blocks
of size f*A.

Episode edges (episode of T rows):

- ``pad=False`` (default): windows that would run past row T-1 are dropped, so an
  episode gives max(T - (n-1)f, 0) windows and every frame is real (``mask`` all True).
- ``pad=True``: a window starts at every row (T windows per episode); frames past row
  T-1 repeat row T-1, actions of rows past T-1 are zeros, and ``mask[k]`` is False for
  those padded frames. Action block k holds only real actions where ``mask[k+1]``.

Episodes can be chosen by id, split and factor values (read from the episodes table)
for train / held-out sets; `WindowSampler` shuffles them deterministically per
(seed, epoch) and shards them across ranks; `EpisodeGroupSampler` does the same with
batches made of several windows of each episode.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from . import columns as C
from .codecs import GROUPED_CODECS, arrow_frames, decode_frame
from .dataset import open_dataset
from .mapped import MappedFrames, map_raw_frames

CACHE_CHUNK_ROWS = 4096
MAPPED_SPLIT_BYTES = 32 << 10
"""Memory-mapped raw frames of at least this many bytes are copied into a reused batch
buffer one OpenCV channel split at a time (224x224: 3.4 vs 8.2 ms a batch); smaller ones
by one NumPy gather into a new array (64x64: 0.4 vs 1.4-1.8 ms)."""
OUTPUT_BUFFERS = 3
"""Batch pixel buffers a `WindowDataset` keeps per process for reuse (a training loop
holds one or two batches at a time). A fresh 38 MB batch (64 windows of 4 frames at
224x224) costs 6-8 ms of page faults on the 2-core reference machine; a reused one none."""
MIN_FRAMES_PER_THREAD = 8  # below this many frames a decode thread costs more than it saves
MIN_GROUPS_PER_THREAD = 2  # h264: below this many groups a decode thread costs more than it saves
RAW_TAKE_BYTES = 4 << 20
"""Raw frames read with ``take`` come in takes of at most this many bytes: Lance
allocates every take's result afresh, and first touches of fresh memory are slow (a
38 MB take of 256 frames at 224x224 ran 2-3x slower than the same rows read 32 at a
time)."""

FactorFilter = Mapping[str, Any] | Callable[[dict], bool]
"""``{name: spec}`` (all must hold) or a callable on an episode row (`EpisodeDataset.episodes`).

A spec is a ``(low, high)`` pair (inclusive range; component-wise for vector factors),
a set (membership), a callable on the value, or a value (equality)."""


def _factor_matches(value: Any, spec: Any) -> bool:
    """Does one factor value satisfy one spec (see `FactorFilter`)?"""
    if value is None:
        return False
    if callable(spec):
        return bool(spec(value))
    if isinstance(spec, (set, frozenset)):
        return value in spec
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        try:
            v = np.asarray(value, dtype=np.float64)
            return bool(np.all(v >= np.asarray(spec[0], np.float64)) and np.all(v <= np.asarray(spec[1], np.float64)))
        except (TypeError, ValueError):
            raise ValueError(f"factor range {spec!r} needs numeric values, got {value!r}") from None
    return bool(np.all(np.asarray(value) == np.asarray(spec)))


def select_episodes(
    episodes: Sequence[dict],
    episode_ids: Sequence[int] | None = None,
    split: str | Sequence[str] | None = None,
    factor_filter: FactorFilter | None = None,
) -> np.ndarray:
    """Sorted ids (int64) of the episode rows passing every given filter.

    episodes: rows as returned by `EpisodeDataset.episodes()`. episode_ids: keep only
    these (each must exist: KeyError otherwise). split: one split name or several.
    factor_filter: see `FactorFilter`; an unknown factor name raises KeyError.
    """
    all_ids = np.array(sorted(int(e[C.EPISODE_ID]) for e in episodes), dtype=np.int64)
    keep = np.ones(len(episodes), dtype=bool)
    ids = np.array([int(e[C.EPISODE_ID]) for e in episodes], dtype=np.int64)
    if episode_ids is not None:
        wanted = np.unique(np.asarray(list(episode_ids), dtype=np.int64))
        missing = np.setdiff1d(wanted, all_ids)
        if len(missing):
            raise KeyError(f"episode ids {missing[:10].tolist()} are not in the dataset ({len(all_ids)} episodes)")
        keep &= np.isin(ids, wanted)
    if split is not None:
        splits = {split} if isinstance(split, str) else {str(s) for s in split}
        keep &= np.array([str(e[C.SPLIT]) in splits for e in episodes], dtype=bool)
    if factor_filter is not None:
        if callable(factor_filter):
            keep &= np.array([bool(factor_filter(e)) for e in episodes], dtype=bool)
        else:
            known = sorted({k for e in episodes for k in e[C.FACTORS]})
            unknown = sorted(set(factor_filter) - set(known))
            if unknown and episodes:
                raise KeyError(f"unknown factors {unknown} in factor_filter; the dataset has {known}")
            for name, spec in factor_filter.items():
                keep &= np.array([_factor_matches(e[C.FACTORS].get(name), spec) for e in episodes], dtype=bool)
    return np.sort(ids[keep])


def _episode_rows(idx: Any, sel: np.ndarray) -> np.ndarray:
    """Table rows (M,) of episodes `sel` (positions in `idx.episode_ids`), episode after episode, in step order."""
    if not len(sel):
        return np.zeros(0, np.int64)
    return np.concatenate([idx.rows[s : s + c] for s, c in zip(idx.start[sel], idx.count[sel])])


class ReusableBuffers:
    """uint8 arrays handed out again once nothing refers to them any more.

    `get(shape)` returns a view of a kept buffer that no earlier view (or tensor made from
    one) still uses, else of a new buffer; at most `keep` buffers are kept. A buffer is
    free when its reference count is back to the count measured right after it was
    created, with the same expression, so the test does not depend on how the
    interpreter counts temporaries. Thread-safe.
    """

    def __init__(self, keep: int):
        self.keep = int(keep)
        self._bufs: list[np.ndarray] = []
        self._free_count: list[int] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"keep": self.keep}  # an empty pool in the other process: never ship the buffers

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["keep"])

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        """A C-contiguous uint8 array of `shape` (contents undefined) that nothing else uses."""
        shape = tuple(int(s) for s in shape)
        with self._lock:
            bufs = self._bufs
            for i in range(len(bufs)):
                if bufs[i].shape == shape and sys.getrefcount(bufs[i]) == self._free_count[i]:
                    return bufs[i][...]
            free = [i for i in range(len(bufs)) if sys.getrefcount(bufs[i]) == self._free_count[i]]
            if len(bufs) >= self.keep:
                if not free:  # every kept buffer is in use: hand out one that is not kept
                    return np.empty(shape, dtype=np.uint8)
                del bufs[free[0]], self._free_count[free[0]]  # a free buffer of another shape makes room
            bufs.append(np.empty(shape, dtype=np.uint8))
            self._free_count.append(sys.getrefcount(bufs[-1]))
            return bufs[-1][...]


class WindowDataset(Dataset):
    """Training windows `{"pixels": uint8 (n, 3, H, W), "actions": float32 (n-1, f*A),
    "mask": bool (n,), "episode_id": int, "start": int}` with n = context + horizon,
    f = frameskip; `mask` marks real (not padded) frames (all True unless ``pad``).

    `__getitems__(indices)` returns the same keys with a leading batch axis B, read
    with one sorted, de-duplicated Lance `take` of only the frames the windows use; use
    `collate_fn=collate_windows` in a DataLoader, and `WindowSampler` for a seeded,
    sharded order. Lance is opened lazily in each process (safe in DataLoader workers
    of any start method); the table version seen at construction is pinned, and if a
    writer later appends and compacts (deleting that version's files) reads move to the
    latest version, where the same episodes are found by id (`_follow_latest`).

    pad: keep windows that run past an episode's end (see the module docstring).
    episode_ids / split / factor_filter: only windows of episodes passing every given
    filter (`select_episodes`; e.g. ``split="train"``, ``factor_filter={"door_width":
    (0.1, 0.2)}`` or ``factor_filter=lambda ep: ep["seed"] % 10 != 0``).
    cache: decode every frame of the selected episodes once into one uint8 array in
    RAM (for small datasets). mmap: read ``raw`` frames through read-only memory maps
    of Lance's data files where their layout allows (`data.mapped`; checked and
    verified against Lance at construction, else Lance ``take``); ``mapped`` says
    whether it is in use. decode_threads: JPEG/PNG/H.264 decode threads per process
    (OpenCV and FFmpeg release the GIL). Actions of the selected episodes are always
    held in RAM (A floats per row); window indices are NumPy arrays, never Python lists.

    h264 datasets (`data/video.py`): a batch reads only the groups its windows touch
    (one ``take`` of their first rows per decode thread) and decodes each group up to the
    last frame a window needs from it, converting only those frames; a frame comes out
    the same whatever window, batch or thread count asks for it, and the same as
    `EpisodeDataset.load_episode` gives.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        context: int,
        horizon: int,
        frameskip: int = 1,
        episode_ids: Sequence[int] | None = None,
        cache: bool = False,
        decode_threads: int = 2,
        pad: bool = False,
        split: str | Sequence[str] | None = None,
        factor_filter: FactorFilter | None = None,
        mmap: bool = True,
    ):
        for name, value, low in (("context", context, 1), ("horizon", horizon, 0), ("frameskip", frameskip, 1)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if int(decode_threads) != decode_threads or decode_threads < 1:
            raise ValueError(f"decode_threads must be an integer >= 1, got {decode_threads!r}")
        self.path = Path(path)
        self.context, self.horizon, self.frameskip = int(context), int(horizon), int(frameskip)
        self.num_frames = self.context + self.horizon
        self.decode_threads = int(decode_threads)
        self.pad = bool(pad)

        ds = open_dataset(self.path)
        self.meta = ds.meta
        self.codec: str = ds.codec
        self.video_options = ds.video_options  # h264 settings (gop, ...), None for per-frame codecs
        self.image_shape: tuple[int, int, int] = ds.image_shape
        self.action_dim: int = ds.action_dim
        self._version = ds._steps.version
        idx = ds.index

        if episode_ids is None and split is None and factor_filter is None:
            sel = np.arange(len(idx.episode_ids))
        else:
            try:
                chosen = select_episodes(ds.episodes(), episode_ids, split, factor_filter)
            except KeyError as err:
                raise KeyError(f"{self.path}: {err.args[0]}") from None
            sel = np.searchsorted(idx.episode_ids, chosen)
        self.episode_ids: np.ndarray = idx.episode_ids[sel]  # (E,) selected episodes, sorted
        counts = idx.count[sel]
        self._ep_len = counts.astype(np.int64)  # (E,) rows per selected episode
        # rows of the selected episodes, episode after episode, in step order
        self._ep_off = (np.cumsum(counts) - counts).astype(np.int64)  # (E,) first position of each episode in _rows
        self._rows = _episode_rows(idx, sel)  # (M,) table rows of the selected episodes
        span = (self.num_frames - 1) * self.frameskip
        per_ep = counts if self.pad else np.maximum(counts - span, 0)
        self._win_ep = np.repeat(np.arange(len(sel), dtype=np.int64), per_ep)  # (W,) index into episode_ids
        first_win = (np.cumsum(per_ep) - per_ep).astype(np.int64)  # (E,) index of each episode's first window
        self._win_t = np.arange(int(per_ep.sum()), dtype=np.int64) - np.repeat(first_win, per_ep)  # (W,) start step

        acts = ds._steps.to_table(columns=[C.ACTION]).column(C.ACTION).combine_chunks()
        all_actions = acts.flatten().to_numpy(zero_copy_only=False).reshape(len(acts), self.action_dim)
        self._actions = np.ascontiguousarray(all_actions[self._rows], dtype=np.float32)  # (M, A)

        self._frames: np.ndarray | None = None
        self._steps = ds._steps
        self._mapped: MappedFrames | None = None
        if mmap and self.codec == "raw" and not cache:
            self._mapped = map_raw_frames(ds._steps, C.PIXELS, self.image_shape)
        self._pid = os.getpid()
        self._pool: ThreadPoolExecutor | None = None
        self._outputs = ReusableBuffers(OUTPUT_BUFFERS)  # decoded batches, reused once no batch refers to them
        if cache:
            self._frames = self._load_all_frames()

    @classmethod
    def from_config(cls, path: str | os.PathLike, config: Any, **kwargs: Any) -> "WindowDataset":
        """Windows matching a model config (`config.context`, `.pred_steps`, `.frameskip`).

        The window predicts `config.pred_steps` frames (a config object from before that
        rename may carry `.horizon` instead). Checks `config.action_dim` and
        `config.image_size` against the dataset when present.
        """
        pred_steps = getattr(config, "pred_steps", None)
        if pred_steps is None:
            pred_steps = config.horizon
        ds = cls(path, config.context, pred_steps, config.frameskip, **kwargs)
        a = getattr(config, "action_dim", None)
        if a is not None and int(a) != ds.action_dim:
            raise ValueError(f"model config action_dim={a} but dataset {path} has action_dim={ds.action_dim}")
        size = getattr(config, "image_size", None)
        if size is not None and tuple(ds.image_shape[:2]) != (int(size), int(size)):
            raise ValueError(f"model config image_size={size} but dataset {path} has frames of shape {ds.image_shape}")
        return ds

    # -- per-process state: Lance handle, decode threads, scratch buffer ------------------
    def _table(self):
        if self._steps is None or self._pid != os.getpid():
            import lance

            try:
                self._steps = lance.dataset(str(self.path / C.STEPS_TABLE), version=self._version)
            except ValueError as err:  # Lance's answer when the pinned version's manifest was deleted
                raise FileNotFoundError(f"{self.path}: cannot open table version {self._version}: {err}") from err
            self._pid = os.getpid()
            self._pool = None  # threads do not survive a fork
        return self._steps

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_steps"] = None  # never ship a Lance handle, threads or batch buffers to another process
        state["_pool"] = None
        return state

    @property
    def _chw_shape(self) -> tuple[int, int, int]:
        h, w, c = self.image_shape
        return (c, h, w)

    def _read_into(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fill `out` uint8 (*rows.shape, 3, H, W) with the frames of table `rows` (any
        shape, any order, repeats allowed), channel first.

        Each distinct row is read once, by one sorted Lance ``take`` per chunk, and
        decoded straight into its first slot of `out` (repeats are copied from there). The
        distinct rows are split into one contiguous chunk per decode thread (Lance and
        OpenCV release the GIL, so one thread's read overlaps another's decode); raw
        chunks hold at most `RAW_TAKE_BYTES`.
        """
        table = self._table()
        uniq, inverse = np.unique(rows, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")  # slots of out, grouped by distinct row
        bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))  # group j: order[bounds[j]:bounds[j+1]]
        slots = out.reshape((-1,) + self._chw_shape)
        u = len(uniq)
        if self.codec == "raw":
            per_take = max(1, RAW_TAKE_BYTES // int(np.prod(self.image_shape)))
            if self.decode_threads > 1 and u >= 2 * MIN_FRAMES_PER_THREAD:
                # a take costs one I/O request per row: concurrent takes overlap their latency
                per_take = min(per_take, -(-u // min(self.decode_threads, u // MIN_FRAMES_PER_THREAD)))
        else:
            per_take = -(-u // max(1, min(self.decode_threads, u // MIN_FRAMES_PER_THREAD)))

        def read(lo: int) -> None:
            col = table.take(uniq[lo : lo + per_take].tolist(), columns=[C.PIXELS]).column(C.PIXELS)
            for j, data in enumerate(arrow_frames(col, self.codec, self.image_shape), start=lo):
                dest = order[bounds[j] : bounds[j + 1]]
                first = slots[dest[0]]
                decode_frame(data, self.codec, self.image_shape, out=first, channels_first=True)
                for k in dest[1:]:
                    slots[k] = first

        self._run_chunks(read, range(0, u, per_take))
        return out

    def _run_chunks(self, read: Any, starts: range) -> None:
        """``read(lo)`` for every chunk start, on the decode threads when there are several chunks."""
        if self.decode_threads > 1 and len(starts) > 1:
            if self._pool is None:  # `_table()` drops it in a forked child
                self._pool = ThreadPoolExecutor(max_workers=self.decode_threads, thread_name_prefix="window-read")
            for job in [self._pool.submit(read, lo) for lo in starts]:
                job.result()
        else:
            for lo in starts:
                read(lo)

    def _read_groups(self, pos: np.ndarray, out: np.ndarray) -> np.ndarray:
        """h264: fill `out` uint8 (*pos.shape, 3, H, W) with the frames at positions `pos`
        (any shape, any order, repeats allowed) of `_rows`.

        Each distinct frame is decoded once, into its first slot of `out` (repeats are
        copied from there): its group (the rows from step ``t - t % gop`` of its
        episode) is read and decoded up to the last frame wanted from it. Groups are
        split into one contiguous chunk per decode thread, each read with one ``take``.
        """
        from .video import decode_group

        table = self._table()
        g = int(self.video_options.gop)
        uniq, inverse = np.unique(pos, return_inverse=True)  # distinct frames, by position
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")  # slots of out, grouped by distinct frame
        bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))  # frame j: order[bounds[j]:bounds[j+1]]
        slots = out.reshape((-1,) + self._chw_shape)
        ep = np.searchsorted(self._ep_off, uniq, side="right") - 1  # episode (index into episode_ids) of each frame
        step = uniq - self._ep_off[ep]
        start = uniq - step % g  # position of each frame's group's first row
        groups, first = np.unique(start, return_index=True)  # frames of group k: first[k] .. first[k+1]-1 (uniq is sorted)
        first = np.append(first, len(uniq))
        n = len(groups)
        if n == 0:
            return out
        per_chunk = -(-n // max(1, min(self.decode_threads, n // MIN_GROUPS_PER_THREAD)))

        def read(lo: int) -> None:
            ks = range(lo, min(lo + per_chunk, n))
            rows = self._rows[groups[lo : lo + per_chunk]]
            col = table.take(rows.tolist(), columns=[C.PIXELS]).column(C.PIXELS)
            for k, blob in zip(ks, arrow_frames(col, self.codec, self.image_shape)):
                js = range(first[k], first[k + 1])
                e = int(ep[first[k]])
                where = f"{self.path}: episode {int(self.episode_ids[e])} {C.PIXELS} group {int(step[first[k]]) // g}"
                decode_group(blob, self.image_shape, self.video_options, frames=[int(step[j]) % g for j in js],
                             out=[slots[order[bounds[j]]] for j in js], channels_first=True, where=where)
                for j in js:
                    dest = order[bounds[j] : bounds[j + 1]]
                    for d in dest[1:]:
                        slots[d] = slots[dest[0]]

        self._run_chunks(read, range(0, n, per_chunk))
        return out

    def _load_all_frames(self) -> np.ndarray:
        """Every selected row's frame, uint8 (M, 3, H, W), in `_rows` order."""
        frames = np.empty((len(self._rows),) + self._chw_shape, dtype=np.uint8)
        for s in range(0, len(self._rows), CACHE_CHUNK_ROWS):
            if self.codec in GROUPED_CODECS:
                self._read_groups(np.arange(s, min(s + CACHE_CHUNK_ROWS, len(self._rows))), frames[s : s + CACHE_CHUNK_ROWS])
            else:
                self._read_into(self._rows[s : s + CACHE_CHUNK_ROWS], frames[s : s + CACHE_CHUNK_ROWS])
        return frames

    # -- items --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._win_ep)

    @property
    def mapped(self) -> bool:
        """Whether raw frames are read through memory maps (see `data.mapped`) rather than Lance ``take``."""
        return self._mapped is not None

    @property
    def episode_lengths(self) -> np.ndarray:
        """Rows of each selected episode, int64 (E,), in `episode_ids` order (a copy)."""
        return self._ep_len.copy()

    @property
    def window_episodes(self) -> np.ndarray:
        """The episode of each window, int64 (W,): its position in `episode_ids` (a copy);
        what `EpisodeGroupSampler` groups windows by."""
        return self._win_ep.copy()

    @property
    def block_dim(self) -> int:
        """Size of one action block: frameskip * action_dim."""
        return self.frameskip * self.action_dim

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One window: pixels uint8 (n, 3, H, W), actions float32 (n-1, f*A), mask bool (n,), episode_id, start."""
        b = self.__getitems__([i])
        return {
            "pixels": b["pixels"][0],
            "actions": b["actions"][0],
            "mask": b["mask"][0],
            "episode_id": int(b["episode_id"][0]),
            "start": int(b["start"][0]),
        }

    def __getitems__(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """A batch: pixels uint8 (B, n, 3, H, W), actions float32 (B, n-1, f*A),
        mask bool (B, n), episode_id int64 (B,), start int64 (B,)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n_win = len(self._win_ep)
        if len(idx) and (idx.min() < -n_win or idx.max() >= n_win):
            raise IndexError(f"window index out of range for {n_win} windows: {idx[(idx < -n_win) | (idx >= n_win)][:5].tolist()}")
        idx = np.where(idx < 0, idx + n_win, idx)
        e, t = self._win_ep[idx], self._win_t[idx]
        off = self._ep_off[e]
        n, f, b = self.num_frames, self.frameskip, len(idx)
        frame_t = t[:, None] + np.arange(n, dtype=np.int64) * f  # (B, n) step of each frame
        act_t = t[:, None] + np.arange((n - 1) * f, dtype=np.int64)  # (B, (n-1)f) step of each raw action
        if self.pad:
            last = self._ep_len[e][:, None] - 1  # (B, 1)
            mask = frame_t <= last
            frame_pos = off[:, None] + np.minimum(frame_t, last)
            actions = self._actions[off[:, None] + np.minimum(act_t, last)]  # (B, (n-1)f, A)
            actions[act_t > last] = 0.0
        else:
            mask = np.ones((b, n), dtype=bool)
            frame_pos = off[:, None] + frame_t
            actions = self._actions[off[:, None] + act_t]
        actions = actions.reshape(b, n - 1, f * self.action_dim)
        try:
            pixels = self._pixels(frame_pos)
        except OSError as err:  # Lance's missing file, or a map's FileNotFoundError
            if not self._follow_latest(err):
                raise
            pixels = self._pixels(frame_pos)
        return {
            "pixels": torch.from_numpy(pixels),
            "actions": torch.from_numpy(actions),
            "mask": torch.from_numpy(mask),
            "episode_id": torch.from_numpy(self.episode_ids[e].copy()),
            "start": torch.from_numpy(t.copy()),
        }

    def _pixels(self, frame_pos: np.ndarray) -> np.ndarray:
        """Frames uint8 (B, n, 3, H, W) at positions `frame_pos` (B, n) of `_rows`."""
        shape = frame_pos.shape + self._chw_shape
        if self._mapped is not None and np.prod(self.image_shape) < MAPPED_SPLIT_BYTES:
            return self._mapped.gather(self._rows[frame_pos])  # straight from the page cache, one NumPy gather
        if self._mapped is not None:
            return self._mapped.gather(self._rows[frame_pos], out=self._outputs.get(shape))
        pixels = self._outputs.get(shape)
        if self._frames is not None:
            return np.take(self._frames, frame_pos, axis=0, out=pixels, mode="clip")  # in range; "clip" skips a buffered copy
        if self.codec in GROUPED_CODECS:
            return self._read_groups(frame_pos, pixels)
        return self._read_into(self._rows[frame_pos], pixels)

    def _follow_latest(self, err: OSError) -> bool:
        """After a read failed with `err`: if the dataset has moved past the pinned table
        version (a writer appended and compacted, deleting the old version's files),
        re-point at the latest version and return True; False if it has not moved.

        Committed episodes never change, so the selected episodes (the same ones: later
        episodes are not added) are found again by id and read from their new rows.
        """
        from .errors import DatasetError

        ds = open_dataset(self.path)
        if ds._steps.version == self._version:
            return False
        idx = ds.index
        k = np.minimum(np.searchsorted(idx.episode_ids, self.episode_ids), max(len(idx.episode_ids) - 1, 0))
        if len(self.episode_ids) and (
            not len(idx.episode_ids) or not np.array_equal(idx.episode_ids[k], self.episode_ids)
            or not np.array_equal(idx.count[k], self._ep_len)
        ):
            raise DatasetError(
                f"{self.path}: table version {self._version} this WindowDataset read is gone ({err}), and the latest "
                f"version {ds._steps.version} no longer holds the same episodes"
            ) from err
        self._rows = _episode_rows(idx, k)
        self._version, self._steps, self._pid = ds._steps.version, ds._steps, os.getpid()
        if self._mapped is not None:
            self._mapped = map_raw_frames(ds._steps, C.PIXELS, self.image_shape)
        return True

    def __repr__(self) -> str:
        return (
            f"WindowDataset({str(self.path)!r}, context={self.context}, horizon={self.horizon}, frameskip={self.frameskip}, "
            f"pad={self.pad}, windows={len(self)}, episodes={len(self.episode_ids)}, cached={self._frames is not None}, "
            f"mapped={self.mapped})"
        )


def _check_shard(rank: int, world_size: int) -> None:
    """ValueError unless `world_size` is an integer >= 1 and `rank` one in [0, world_size)."""
    if int(world_size) != world_size or world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    if int(rank) != rank or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in [0, {world_size}), got {rank!r}")


class WindowSampler(Sampler):
    """Seeded, shardable order over `num_windows` windows: yields indices, or batches of
    indices (lists) when `batch_size` is given (pass it as a DataLoader `batch_sampler`).

    Epoch ``k`` (set with `set_epoch`) draws one permutation from ``(seed, k)`` (the
    same on every rank when `shuffle`; ``0..N-1`` otherwise); rank r of `world_size`
    takes positions r, r + world_size, ... of it. With ``drop_last=False`` the shards are
    disjoint and together hold every window exactly once (their sizes differ by at most
    one window, so by at most one batch). With ``drop_last=True`` the order is cut to a
    multiple of ``world_size * batch_size`` first: every rank gets the same number of
    full batches (what DDP needs), still disjoint, and at most ``world_size *
    batch_size - 1`` windows per epoch are left out.
    """

    def __init__(
        self,
        num_windows: int | Dataset,
        batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        n = num_windows if isinstance(num_windows, (int, np.integer)) else len(num_windows)  # type: ignore[arg-type]
        if n < 0:
            raise ValueError(f"num_windows must be >= 0, got {n}")
        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
        _check_shard(rank, world_size)
        self.num_windows = int(n)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose permutation the next iteration yields."""
        self.epoch = int(epoch)

    def shard(self) -> np.ndarray:
        """This rank's window indices for the current epoch, int64 (N_rank,), in order."""
        n = self.num_windows
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n, dtype=np.int64)
        if self.drop_last:
            unit = self.world_size * (self.batch_size or 1)
            order = order[: n - n % unit]
        return order[self.rank :: self.world_size].astype(np.int64, copy=False)

    def __iter__(self) -> Iterator[Any]:
        mine = self.shard()
        if self.batch_size is None:
            yield from mine.tolist()
            return
        for s in range(0, len(mine), self.batch_size):
            batch = mine[s : s + self.batch_size]
            if len(batch) < self.batch_size and self.drop_last:
                return
            yield batch.tolist()

    def __len__(self) -> int:
        n, w = self.num_windows, self.world_size
        if self.drop_last:
            mine = (n - n % (w * (self.batch_size or 1))) // w
            return mine if self.batch_size is None else mine // self.batch_size
        mine = max(0, -(-(n - self.rank) // w))  # positions rank, rank + w, ... below n
        return mine if self.batch_size is None else -(-mine // self.batch_size)


class EpisodeGroupSampler(Sampler):
    """Seeded, shardable batches of windows made of whole groups: ``group`` windows of one
    episode each, ``batch_size // group`` episodes per batch (pass it as a DataLoader
    `batch_sampler`). What ``sigreg_center="episode"`` needs: SIGReg on each window's
    deviation from its episode's mean in the batch sees the variation over an episode,
    which a batch of one window per episode has none of.

    Epoch ``k`` (`set_epoch`) draws from ``(seed, k)``: each episode's windows in a random
    order, cut into groups of ``group`` (an episode's last ``len % group`` windows sit out
    that epoch; another epoch cuts differently), the groups in a random order. Rank r of
    `world_size` takes groups r, r + world_size, ... of it, cut to the same number of full
    batches on every rank (what DDP needs); the ranks' windows are disjoint. Incomplete
    batches are dropped.

    Args:
        window_episodes: int (W,): the episode of each window (`WindowDataset.window_episodes`).
        batch_size: windows per batch, a multiple of `group`.
        group: windows per episode in a batch, >= 1.
    """

    def __init__(self, window_episodes: np.ndarray | Sequence[int], batch_size: int, group: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        eps = np.asarray(window_episodes)
        if eps.ndim != 1 or (eps.size and not np.issubdtype(eps.dtype, np.integer)):
            raise ValueError(f"window_episodes must be a 1-D integer array, got {eps.dtype} {eps.shape}")
        if int(group) != group or group < 1:
            raise ValueError(f"group must be an integer >= 1, got {group!r}")
        if int(batch_size) != batch_size or batch_size < 1 or batch_size % group:
            raise ValueError(f"batch_size must be a positive multiple of group={group}, got {batch_size!r}")
        _check_shard(rank, world_size)
        self.window_episodes = eps.astype(np.int64)
        self.batch_size, self.group, self.seed = int(batch_size), int(group), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        _, counts = np.unique(self.window_episodes, return_counts=True)
        self.num_groups = int((counts // self.group).sum())  # the same every epoch
        per_batch = self.batch_size // self.group
        self._batches = self.num_groups // (self.world_size * per_batch)  # full batches per rank

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields."""
        self.epoch = int(epoch)

    def groups(self) -> np.ndarray:
        """All groups of the current epoch in order, int64 (num_groups, group) window indices."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.window_episodes))
        order = order[np.argsort(self.window_episodes[order], kind="stable")]  # by episode, random within
        eps = self.window_episodes[order]
        starts = np.flatnonzero(np.r_[True, eps[1:] != eps[:-1]]) if len(eps) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(eps)]
        keep = [order[s : s + (e - s) // self.group * self.group] for s, e in zip(starts, ends)]
        flat = np.concatenate(keep) if keep else np.zeros(0, np.int64)
        groups = flat.reshape(-1, self.group)
        return groups[rng.permutation(len(groups))]

    def __iter__(self) -> Iterator[list[int]]:
        per_batch = self.batch_size // self.group
        mine = self.groups()[self.rank :: self.world_size][: self._batches * per_batch]
        for b in range(self._batches):
            yield mine[b * per_batch : (b + 1) * per_batch].reshape(-1).tolist()

    def __len__(self) -> int:
        return self._batches


def collate_windows(batch: Any) -> dict[str, Any]:
    """DataLoader `collate_fn` for WindowDataset: passes `__getitems__` batches through,
    stacks a list of single items otherwise."""
    if isinstance(batch, dict):
        return batch
    from torch.utils.data import default_collate

    return default_collate(batch)
