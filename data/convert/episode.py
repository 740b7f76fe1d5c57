"""The in-memory episode every reader yields and every writer takes, and its checks.

`make_episode` normalises one episode read from any format into the store's row
convention (T rows = N actions + 1, see `data/dataset.py`) while keeping native dtypes:
actions in their own dtype, states in their own float dtype and shape, extra per-step
observations (extra cameras, other arrays) under their names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .. import columns as C
from ..codecs import GROUPED_CODECS, decode_frame
from ..schema import ACTION_DTYPES, EXTRA_DTYPES, STATE_DTYPES, is_camera

RESERVED_NAMES = (C.EPISODE_ID, C.STEP, C.PIXELS, C.ACTION, C.STATE, C.REWARD, C.TERMINATED, C.TRUNCATED)
"""Names an extra observation may not take (they are the store's fixed columns)."""


@dataclass
class Episode:
    """One episode in the store's row convention (T rows = N actions + 1).

    Frames are either decoded (`pixels` uint8 (T, H, W, 3)) or encoded (`encoded`: T
    bytes in `encoded_codec`, decoded on first access of `pixels`; for h264 the rows'
    values, a group blob on each group's first row, with `encoded_options` the
    `data.video.VideoOptions` they were encoded with). `action` (T, A) in its
    native dtype (float16/32/64 or int8..int64; zeros on the last row when none was
    taken), `state` (T, *state_shape) float16/32/64, `reward` float32 (T,),
    `terminated`/`truncated` bool (T,), `extras` ``name -> (T, *shape)`` more
    observations per row (uint8 (T, H, W, 3) ones are extra cameras).
    """

    action: np.ndarray
    state: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    image_shape: tuple[int, int, int]
    episode_id: int | None = None
    env_id: str | None = None
    seed: int | None = None
    factors: dict = field(default_factory=dict)
    policy: str = "unknown"
    split: str = "default"
    success_step: int | None = None  # first success row, -1 for none, None when the source does not record it
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    encoded: list[bytes] | None = None
    encoded_codec: str | None = None
    encoded_options: Any = None
    encoded_extras: dict[str, list[bytes]] = field(default_factory=dict)  # h264 extra cameras' stored row values
    notes: list[str] = field(default_factory=list)  # ways this episode differs from its source
    _pixels: np.ndarray | None = None

    @property
    def length(self) -> int:
        return int(len(self.action))

    @property
    def pixels(self) -> np.ndarray:
        """Frames uint8 (T, H, W, 3), decoded from `encoded` on first use."""
        if self._pixels is None:
            assert self.encoded is not None and self.encoded_codec is not None
            self._pixels = decode_blobs(self.encoded, self.encoded_codec, self.image_shape, self.encoded_options,
                                        where=f"episode {self.episode_id}")
        return self._pixels

    @property
    def extra_specs(self) -> dict[str, dict]:
        """``name -> {"dtype", "shape"}`` of one row of each extra (as in the store's meta)."""
        return {k: {"dtype": v.dtype.name, "shape": [int(s) for s in v.shape[1:]]} for k, v in self.extras.items()}

    @property
    def cameras(self) -> list[str]:
        """Names of the extras that are extra cameras (uint8 (T, H, W, 3))."""
        return [k for k, spec in self.extra_specs.items() if is_camera(spec)]


@dataclass
class Source:
    """An opened source: its format, episode ids (sorted) and a reader of episodes."""

    format: str
    path: Path
    ids: list[int]
    read: Callable[[Sequence[int]], Iterator[Episode]]
    env_id: str | None = None
    fps: float | None = None
    codec: str | None = None  # how the source stores frames (raw, png, jpeg, h264, mp4)
    lossy: list[str] = field(default_factory=list)
    codec_options: Any = None  # the `data.video.VideoOptions` of an h264 source


def decode_blobs(blobs: Sequence[bytes], codec: str, shape: Sequence[int], options: Any = None,
                 where: str = "episode") -> np.ndarray:
    """Decode T encoded frames into uint8 (T, H, W, 3) (h264: the T rows' values of one
    episode, encoded with `options`; `where` names it in errors)."""
    if codec in GROUPED_CODECS:
        from ..video import decode_episode

        return decode_episode(blobs, shape, options, where=where)
    out = np.empty((len(blobs),) + tuple(int(s) for s in shape), np.uint8)
    for t, data in enumerate(blobs):
        decode_frame(data, codec, shape, out=out[t])
    return out


def _channels_last(frames: np.ndarray) -> np.ndarray:
    """(T, 3, H, W) uint8 -> (T, H, W, 3); anything else unchanged."""
    if frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] != 3 and frames.shape[1] == 3:
        return np.ascontiguousarray(frames.transpose(0, 2, 3, 1))
    return frames


def _native_action(action: np.ndarray, where: str) -> tuple[np.ndarray, str | None]:
    """`action` in a dtype the store holds (its own when it can); a note when values change."""
    if action.dtype.name in ACTION_DTYPES:
        return action, None
    if action.dtype == bool:
        return action.astype(np.int8), None
    wider = {"uint8": np.int16, "uint16": np.int32, "uint32": np.int64}
    if action.dtype.name in wider:
        return action.astype(wider[action.dtype.name]), None
    if action.dtype.kind == "u" and (action.size == 0 or int(action.max()) <= np.iinfo(np.int64).max):
        return action.astype(np.int64), None
    if action.dtype.kind in "uif":
        cast = action.astype(np.float64)
        note = None if np.array_equal(cast.astype(action.dtype), action) else f"{action.dtype} actions rounded to float64"
        return cast, note
    raise ValueError(f"{where}: action is {action.dtype}, expected numbers")


def _extra(name: str, value: Any, n: int, where: str) -> tuple[np.ndarray | None, str | None]:
    """One extra observation checked and in a dtype the store holds; (None, note) when dropped."""
    if not isinstance(name, str) or not name.isidentifier() or name in RESERVED_NAMES:
        raise ValueError(f"{where}: extra observation name {name!r} must be an identifier other than {', '.join(RESERVED_NAMES)}")
    arr = _channels_last(np.asarray(value))
    if arr.ndim == 0 or len(arr) != n:
        raise ValueError(f"{where}: extra {name!r} has shape {arr.shape}, expected {n} rows (one per frame)")
    if arr.dtype.name in EXTRA_DTYPES:
        return arr, None
    if arr.dtype.kind == "u" and (arr.size == 0 or int(arr.max()) <= np.iinfo(np.int64).max):
        return arr.astype(np.int64), None
    if arr.dtype.kind == "f":
        cast = arr.astype(np.float64)
        return cast, (None if np.array_equal(cast.astype(arr.dtype), arr) else f"extra {name!r} ({arr.dtype}) rounded to float64")
    return None, f"extra {name!r} ({arr.dtype}) dropped (the store holds numbers and booleans)"


def make_episode(
    where: str,
    pixels: np.ndarray | None,
    action: Any,
    state: Any,
    reward: Any = None,
    terminated: Any = None,
    truncated: Any = None,
    encoded: list[bytes] | None = None,
    encoded_codec: str | None = None,
    image_shape: Sequence[int] | None = None,
    extras: Mapping[str, Any] | None = None,
    **meta: Any,
) -> Episode:
    """Check and normalise one episode's arrays; `where` names it in errors.

    pixels uint8 (T, H, W, 3) or (T, 3, H, W) (or `encoded` T bytes + `image_shape`);
    action (T, A) or (T-1, A) (the last row then gets zeros), any numeric dtype (kept
    when the store holds it); state (T, *shape) float (other numbers become float64);
    reward/terminated/truncated (T,) or None (zeros); extras ``name -> (T, *shape)``.
    """
    if pixels is not None:
        pixels = _channels_last(np.asarray(pixels))
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"{where}: frames are {pixels.dtype} {pixels.shape}, expected uint8 (T, H, W, 3)")
        n = len(pixels)
        image_shape = tuple(int(s) for s in pixels.shape[1:])
    else:
        if encoded is None or image_shape is None:
            raise ValueError(f"{where}: no frames")
        n = len(encoded)
        image_shape = tuple(int(s) for s in image_shape)
    if n < 1:
        raise ValueError(f"{where}: no frames (an episode needs at least one)")
    notes: list[str] = []
    state = np.asarray(state)
    if state.ndim == 1:
        state = state[:, None]
    if state.ndim < 2 or not np.issubdtype(state.dtype, np.number) or np.issubdtype(state.dtype, np.complexfloating):
        raise ValueError(f"{where}: state is {state.dtype} {state.shape}, expected floats (T, *shape)")
    if state.dtype.name not in STATE_DTYPES:
        cast = state.astype(np.float64)
        if not np.array_equal(cast.astype(state.dtype), state):
            notes.append(f"{state.dtype} states rounded to float64")
        state = cast
    if len(state) != n:
        raise ValueError(f"{where}: {len(state)} states for {n} frames (expected one state per frame)")
    action = np.asarray(action)
    if action.ndim == 1:
        action = action[:, None]
    if action.ndim != 2 or not (np.issubdtype(action.dtype, np.number) or action.dtype == bool):
        raise ValueError(f"{where}: action is {action.dtype} {action.shape}, expected numbers (T, A)")
    if len(action) == n - 1:  # no action at the last observation
        action = np.concatenate([action, np.zeros((1, action.shape[1]), action.dtype)])
    if len(action) != n:
        raise ValueError(f"{where}: {len(action)} actions for {n} frames (expected {n} or {n - 1})")
    action, note = _native_action(action, where)
    notes += [note] if note else []
    kept: dict[str, np.ndarray] = {}
    for name, value in (extras or {}).items():
        arr, note = _extra(name, value, n, where)
        notes += [note] if note else []
        if arr is not None:
            kept[name] = arr

    def flags(x: Any, name: str, dtype: Any) -> np.ndarray:
        if x is None:
            return np.zeros(n, dtype)
        arr = np.asarray(x).reshape(len(x), -1)[:, 0] if np.ndim(x) == 2 else np.asarray(x)
        if arr.shape != (n,):
            raise ValueError(f"{where}: {name} has shape {np.shape(x)}, expected ({n},)")
        return arr.astype(dtype)

    return Episode(
        action=action, state=state, reward=flags(reward, "reward", np.float32),
        terminated=flags(terminated, "terminated", bool), truncated=flags(truncated, "truncated", bool),
        image_shape=image_shape,  # type: ignore[arg-type]
        extras=kept, encoded=encoded, encoded_codec=encoded_codec, _pixels=pixels, notes=notes, **meta,
    )


def json_factors(factors: Mapping[str, Any]) -> str:
    """Factors as a JSON object (tuples and arrays become lists)."""
    return json.dumps({k: (list(v) if isinstance(v, (tuple, list, np.ndarray)) else v) for k, v in factors.items()})


def factors_from_json(text: Any, where: str) -> dict:
    """A factor dict from JSON text (empty for None / "")."""
    if text is None or text == "":
        return {}
    if isinstance(text, bytes):
        text = text.decode()
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{where}: factors {text!r} is not JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: factors {text!r} is not a JSON object")
    return value


def str_attr(value: Any) -> Any:
    """An HDF5 attribute / Arrow value as str when it came as bytes."""
    return value.decode() if isinstance(value, bytes) else value


def safe_name(key: str) -> str:
    """A foreign column/feature name as an extra-observation name (an identifier)."""
    import re

    name = re.sub(r"\W", "_", key.removeprefix("observation.").removeprefix("images."))
    name = name if name and not name[0].isdigit() else f"_{name}"
    return f"{name}_" if name in RESERVED_NAMES else name
