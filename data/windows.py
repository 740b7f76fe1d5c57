"""`WindowDataset`: fixed-shape training windows over an episode dataset.

Window i starts at (episode e, step t) and covers n = context + horizon frames at rows
t, t+f, ..., t+(n-1)f of that episode (f = frameskip); windows that would run past the
episode's last row are dropped. Actions come in blocks: block k concatenates the raw
actions of rows t+k*f ... t+(k+1)*f-1, so a window has n-1 blocks of size f*A.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import columns as C
from .codecs import decode_arrow
from .dataset import open_dataset

CACHE_CHUNK_ROWS = 4096


class WindowDataset(Dataset):
    """Training windows `{"pixels": uint8 (n, 3, H, W), "actions": float32 (n-1, f*A),
    "episode_id": int, "start": int}` with n = context + horizon, f = frameskip.

    `__getitems__(indices)` returns the same keys with a leading batch axis B, read
    with one sorted, de-duplicated Lance `take`; use `collate_fn=collate_windows` in a
    DataLoader. Lance is opened lazily in each process (safe in DataLoader workers of
    any start method); the table version seen at construction is pinned.

    episode_ids: only windows of these episodes. cache: decode every frame of the
    selected episodes once into one uint8 array in RAM (for small datasets).
    Actions of the selected episodes are always held in RAM (A floats per row).
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
    ):
        for name, value, low in (("context", context, 1), ("horizon", horizon, 0), ("frameskip", frameskip, 1)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.path = Path(path)
        self.context, self.horizon, self.frameskip = int(context), int(horizon), int(frameskip)
        self.num_frames = self.context + self.horizon
        self.decode_threads = int(decode_threads)

        ds = open_dataset(self.path)
        self.meta = ds.meta
        self.codec: str = ds.codec
        self.image_shape: tuple[int, int, int] = ds.image_shape
        self.action_dim: int = ds.action_dim
        self._version = ds._steps.version
        idx = ds.index

        if episode_ids is None:
            sel = np.arange(len(idx.episode_ids))
        else:
            wanted = np.unique(np.asarray(list(episode_ids), dtype=np.int64))
            sel = np.searchsorted(idx.episode_ids, wanted)
            sel = np.minimum(sel, max(len(idx.episode_ids) - 1, 0))
            missing = wanted[(len(idx.episode_ids) == 0) | (idx.episode_ids[sel] != wanted)] if len(wanted) else wanted
            if len(missing):
                raise KeyError(f"episode ids {missing[:10].tolist()} are not in {self.path} ({len(idx.episode_ids)} episodes)")
        self.episode_ids: np.ndarray = idx.episode_ids[sel]  # (E,) selected episodes, sorted
        counts = idx.count[sel]
        # rows of the selected episodes, episode after episode, in step order
        self._ep_off = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(sel) else np.zeros(0, np.int64)
        self._rows = (
            np.concatenate([idx.rows[s : s + c] for s, c in zip(idx.start[sel], counts)]) if len(sel) else np.zeros(0, np.int64)
        )
        span = (self.num_frames - 1) * self.frameskip
        per_ep = np.maximum(counts - span, 0)
        self._win_ep = np.repeat(np.arange(len(sel), dtype=np.int64), per_ep)  # (W,) index into episode_ids
        self._win_t = np.arange(int(per_ep.sum()), dtype=np.int64) - np.repeat(
            np.concatenate([[0], np.cumsum(per_ep)[:-1]]).astype(np.int64), per_ep
        )  # (W,) start step

        acts = ds._steps.to_table(columns=[C.ACTION]).column(C.ACTION).combine_chunks()
        all_actions = acts.flatten().to_numpy(zero_copy_only=False).reshape(len(acts), self.action_dim)
        self._actions = np.ascontiguousarray(all_actions[self._rows], dtype=np.float32)  # (M, A)

        self._frames: np.ndarray | None = None
        self._steps = ds._steps
        self._pid = os.getpid()
        if cache:
            self._frames = self._load_all_frames()

    @classmethod
    def from_config(cls, path: str | os.PathLike, config: Any, **kwargs: Any) -> "WindowDataset":
        """Windows matching a model config (`config.context`, `.horizon`, `.frameskip`).

        Checks `config.action_dim` and `config.image_size` against the dataset when present.
        """
        ds = cls(path, config.context, config.horizon, config.frameskip, **kwargs)
        a = getattr(config, "action_dim", None)
        if a is not None and int(a) != ds.action_dim:
            raise ValueError(f"model config action_dim={a} but dataset {path} has action_dim={ds.action_dim}")
        size = getattr(config, "image_size", None)
        if size is not None and tuple(ds.image_shape[:2]) != (int(size), int(size)):
            raise ValueError(f"model config image_size={size} but dataset {path} has frames of shape {ds.image_shape}")
        return ds

    # -- lance handle, one per process ---------------------------------------------------
    def _table(self):
        if self._steps is None or self._pid != os.getpid():
            import lance

            self._steps = lance.dataset(str(self.path / C.STEPS_TABLE), version=self._version)
            self._pid = os.getpid()
        return self._steps

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_steps"] = None  # never ship a Lance handle to another process
        return state

    def _load_all_frames(self) -> np.ndarray:
        frames = np.empty((len(self._rows),) + self.image_shape, dtype=np.uint8)
        table = self._table()
        for s in range(0, len(self._rows), CACHE_CHUNK_ROWS):
            rows = self._rows[s : s + CACHE_CHUNK_ROWS]
            order = np.argsort(rows, kind="stable")
            col = table.take(rows[order].tolist(), columns=[C.PIXELS]).column(C.PIXELS)
            frames[s + order] = decode_arrow(col, self.codec, self.image_shape, threads=self.decode_threads)
        return frames

    # -- items --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._win_ep)

    @property
    def block_dim(self) -> int:
        """Size of one action block: frameskip * action_dim."""
        return self.frameskip * self.action_dim

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One window: pixels uint8 (n, 3, H, W), actions float32 (n-1, f*A), episode_id, start."""
        b = self.__getitems__([i])
        return {"pixels": b["pixels"][0], "actions": b["actions"][0], "episode_id": int(b["episode_id"][0]), "start": int(b["start"][0])}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch: pixels uint8 (B, n, 3, H, W), actions float32 (B, n-1, f*A), episode_id (B,), start (B,)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n_win = len(self._win_ep)
        if len(idx) and (idx.min() < -n_win or idx.max() >= n_win):
            raise IndexError(f"window index out of range for {n_win} windows: {idx[(idx < -n_win) | (idx >= n_win)][:5].tolist()}")
        idx = np.where(idx < 0, idx + n_win, idx)
        e, t = self._win_ep[idx], self._win_t[idx]
        base = self._ep_off[e] + t  # (B,) position in self._rows
        n, f = self.num_frames, self.frameskip
        frame_pos = base[:, None] + np.arange(n, dtype=np.int64) * f  # (B, n)
        act_pos = base[:, None] + np.arange((n - 1) * f, dtype=np.int64)  # (B, (n-1)f)
        actions = self._actions[act_pos].reshape(len(idx), n - 1, f * self.action_dim)
        if self._frames is not None:
            source, where = self._frames, frame_pos
        else:
            uniq, inverse = np.unique(self._rows[frame_pos], return_inverse=True)
            col = self._table().take(uniq.tolist(), columns=[C.PIXELS]).column(C.PIXELS)
            source = decode_arrow(col, self.codec, self.image_shape, threads=self.decode_threads)
            where = inverse.reshape(frame_pos.shape)
        pixels = source.transpose(0, 3, 1, 2)[where]  # (B, n, 3, H, W): gather and transpose in one copy
        return {
            "pixels": torch.from_numpy(pixels),
            "actions": torch.from_numpy(actions),
            "episode_id": torch.from_numpy(self.episode_ids[e].copy()),
            "start": torch.from_numpy(t.copy()),
        }

    def __repr__(self) -> str:
        return (
            f"WindowDataset({str(self.path)!r}, context={self.context}, horizon={self.horizon}, frameskip={self.frameskip}, "
            f"windows={len(self)}, episodes={len(self.episode_ids)}, cached={self._frames is not None})"
        )


def collate_windows(batch: Any) -> dict[str, Any]:
    """DataLoader `collate_fn` for WindowDataset: passes `__getitems__` batches through,
    stacks a list of single items otherwise."""
    if isinstance(batch, dict):
        return batch
    from torch.utils.data import default_collate

    return default_collate(batch)
