"""Converters between the episode store (Lance) and HDF5, MP4 folders, LeRobot v3 and
stable-worldmodel datasets (``wm data convert SRC DST --to FORMAT``).

`convert(src, dst, to)` detects the source format, reads it episode by episode into the
store's row convention (T rows = N actions + 1, see `data/dataset.py`) and writes the
destination. Every destination is built in a hidden sibling and renamed into place (Lance
ones through `EpisodeWriter`, whole-episode commits), so an existing DST is never damaged:
``mode="error"`` refuses it, ``"overwrite"`` replaces it only once the new one is complete;
``"append"`` adds episodes to an existing Lance dataset (one commit per episode).

Lossless wherever both sides are: raw/PNG frames (JPEG frames are passed through as the
same bytes when source and destination both hold JPEG), actions (float32), states in
their own float dtype, rewards, end flags, int64 episode ids, seeds, factors. Lossy, and
reported in the result's ``lossy`` list: MP4 video (frames are re-encoded, pixel values
change by a few levels), JPEG re-encoding of decoded frames, foreign data that the store
cannot hold (float64 actions cast to float32, stable-worldmodel goal images dropped).

Formats
-------
``lance`` (read/write) — a worldmodel dataset directory (`data/dataset.py`).

``hdf5`` (write: our layout; read: the layouts below), one ``.h5``/``.hdf5`` file:

- worldmodel (written here)::

      /                       attrs: format="worldmodel-episodes-hdf5", schema_version, env_id,
                              fps, codec (the source's frame codec), state_dtype
      /episode_<id:06d>/      attrs: episode_id (int64), env_id, seed (absent = None),
                              policy, split, factors (JSON)
          pixels     uint8 (T, H, W, 3)        gzip-compressed, one chunk per frame
          action     float32 (T, A)            zeros on the last row, as in the store
          state      float16/32/64 (T, S)      the store's dtype
          reward     float32 (T,)
          terminated bool (T,)
          truncated  bool (T,)

- per-episode groups (any group holding frames + actions, e.g. DINO-WM style exports):
  frames under ``pixels``/``obses``/``observations``/``obs``/``images``, actions under
  ``action``/``actions``, state under ``state``/``states``/``proprio``/``proprios``;
  optional ``reward(s)``, ``terminated``/``terminals``, ``truncated``/``timeouts``.
- DINO-WM stacked arrays (its ``states.pth``/``actions.pth``/``seq_lengths`` saved as
  HDF5): top-level ``obses``/``observations`` (N, T, H, W, 3) (or (N, T, 3, H, W)),
  ``actions`` (N, T, A), ``states`` (N, T, S), optional ``seq_lengths`` (N,) giving each
  episode's valid frames (default: all T).
- stable-worldmodel HDF5: flat per-step columns plus ``ep_len`` (E,) and ``ep_offset``
  (E,); mapped like its Lance tables (below).

In every layout frames must be uint8; actions may have T entries (one per frame, the last
one kept) or T-1 (the last row gets zeros); any other count is an error.

``mp4`` (read/write) — a folder::

      DST/info.json           {"format": "worldmodel-mp4", fps, env_id, image_shape,
                               action_dim, state_dim, state_dtype, codec}
      DST/episodes.jsonl      one line per episode: episode_id, file, length, env_id, seed,
                              factors, policy, split, and per step action, state, reward,
                              terminated, truncated (JSON numbers: exact for float32/64)
      DST/episode_<id:06d>.mp4  the frames (MPEG-4 part 2 via OpenCV: lossy)

``lerobot`` (read/write) — LeRobot v3.0, written with pyarrow and OpenCV::

      meta/info.json          codebase_version "v3.0", fps, features {dtype, shape, names},
                              total_episodes, total_frames, total_tasks, chunks_size,
                              data_path / video_path templates, splits, and a "worldmodel"
                              block (codec, env_id, fps, state_dtype) for exact round trips
      meta/tasks.parquet      task_index, task (one task per env id)
      meta/episodes/chunk-000/file-000.parquet
                              episode_index, tasks, length, data/chunk_index, data/file_index,
                              dataset_from_index, dataset_to_index,
                              videos/observation.image/{chunk_index, file_index,
                              from_timestamp, to_timestamp}, meta/episodes/{chunk,file}_index,
                              and ours: episode_id, env_id, seed, policy, split, factors (JSON)
      data/chunk-000/file-000.parquet
                              episode_index, frame_index, timestamp, index, task_index,
                              observation.state, action, next.reward, next.done, and ours:
                              reward, terminated, truncated (the store's exact row convention);
                              observation.image {bytes, path} when frames are images
      videos/observation.image/chunk-000/file-000.mp4
                              all episodes' frames back to back (default; lossy)

  ``codec="png"`` stores frames as PNG bytes in the data parquet (feature dtype "image",
  no MP4): lossless. ``"jpeg"`` stores JPEG bytes. Reading accepts other v3 datasets: the
  first image/video feature, ``observation.state`` and ``action``; without our exact
  columns, reward[t] = next.reward[t-1] and the last row is terminated if next.done is set.

``swm-lance`` (read only) — a stable-worldmodel Lance table (``NAME.lance/``, or a folder
holding one): flat rows with ``episode_idx``/``step_idx`` (int32, or coerced to float32
scalars / ``fixed_size_list<float32>[1]``), JPEG ``pixels`` (binary), and every other
column as ``fixed_size_list<float32>[k]``. Mapping: ids are repaired to int64 (an error
if any is not integral); ``pixels`` -> frames (JPEG bytes kept as is); ``action``;
``state`` (else ``proprio``); ``reward``/``terminated``/``truncated`` when present;
``seed`` -> seed; every other numeric or string column constant within each episode ->
a factor (``variation_`` prefix dropped; size-1 lists become scalars); per-step columns
that vary, and extra image columns (goal images), are dropped and listed in ``lossy``.
A sibling ``NAME_episodes.lance`` table adds per-episode columns as factors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from . import columns as C
from .codecs import EncodedFrame, check_codec, decode_frame

FORMATS = ("lance", "hdf5", "mp4", "lerobot")
SOURCE_FORMATS = ("lance", "hdf5", "mp4", "lerobot", "swm-lance")
MODES = ("append", "overwrite", "error")
HDF5_FORMAT = "worldmodel-episodes-hdf5"
MP4_FORMAT = "worldmodel-mp4"
HDF5_SCHEMA_VERSION = 1
DEFAULT_FPS = 10.0
LEROBOT_IMAGE_KEY = "observation.image"
LEROBOT_STATE_KEY = "observation.state"
LEROBOT_ACTION_KEY = "action"
_LEROBOT_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_LEROBOT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
_LEROBOT_EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
_FLOAT32_EXACT_INT = 2**24  # float32 holds every integer up to here exactly

_PIXEL_KEYS = ("pixels", "obses", "observations", "obs", "images", "image")
_ACTION_KEYS = ("action", "actions")
_STATE_KEYS = ("state", "states", "proprio", "proprios")
_REWARD_KEYS = ("reward", "rewards")
_TERMINATED_KEYS = ("terminated", "terminals")
_TRUNCATED_KEYS = ("truncated", "timeouts")


# -- the in-memory episode ----------------------------------------------------------------
@dataclass
class Episode:
    """One episode in the store's row convention (T rows = N actions + 1).

    Frames are either decoded (`pixels` uint8 (T, H, W, 3)) or encoded (`encoded`: T
    bytes in `encoded_codec`, decoded on first access of `pixels`). `action` float32 (T, A)
    (zeros on the last row when none was taken), `state` (T, S) float16/32/64, `reward`
    float32 (T,), `terminated`/`truncated` bool (T,).
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
    encoded: list[bytes] | None = None
    encoded_codec: str | None = None
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
            out = np.empty((len(self.encoded),) + tuple(self.image_shape), np.uint8)
            for t, data in enumerate(self.encoded):
                decode_frame(data, self.encoded_codec, self.image_shape, out=out[t])
            self._pixels = out
        return self._pixels


def _episode(
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
    **meta: Any,
) -> Episode:
    """Check and normalise one episode's arrays; `where` names it in errors."""
    if pixels is not None:
        pixels = np.asarray(pixels)
        if pixels.ndim == 4 and pixels.shape[-1] != 3 and pixels.shape[1] == 3:
            pixels = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))  # (T, 3, H, W) -> (T, H, W, 3)
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
    state = np.asarray(state)
    if state.ndim == 1:
        state = state[:, None]
    if state.ndim != 2 or state.dtype.name not in ("float16", "float32", "float64"):
        if state.ndim == 2 and np.issubdtype(state.dtype, np.number):
            state = state.astype(np.float64)
        else:
            raise ValueError(f"{where}: state is {state.dtype} {state.shape}, expected floats (T, S)")
    if len(state) != n:
        raise ValueError(f"{where}: {len(state)} states for {n} frames (expected one state per frame)")
    action = np.asarray(action)
    if action.ndim == 1:
        action = action[:, None]
    if action.ndim != 2 or not np.issubdtype(action.dtype, np.number):
        raise ValueError(f"{where}: action is {action.dtype} {action.shape}, expected numbers (T, A)")
    if len(action) == n - 1:  # no action at the last observation
        action = np.concatenate([action, np.zeros((1, action.shape[1]), action.dtype)])
    if len(action) != n:
        raise ValueError(f"{where}: {len(action)} actions for {n} frames (expected {n} or {n - 1})")
    notes = []
    cast = action.astype(np.float32)
    if action.dtype != np.float32 and not np.array_equal(cast.astype(action.dtype), action):
        notes.append(f"{action.dtype} actions rounded to float32 (the store's action dtype)")
    action = cast

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
        encoded=encoded, encoded_codec=encoded_codec, _pixels=pixels, notes=notes, **meta,
    )


@dataclass
class Source:
    """An opened source: its format, episode ids (sorted) and a reader of episodes."""

    format: str
    path: Path
    ids: list[int]
    read: Callable[[Sequence[int]], Iterator[Episode]]
    env_id: str | None = None
    fps: float | None = None
    codec: str | None = None  # how the source stores frames (raw, png, jpeg, mp4)
    lossy: list[str] = field(default_factory=list)


# -- helpers ------------------------------------------------------------------------------
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


def _sniff_codec(data: bytes, where: str) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"\xff\xd8":
        return "jpeg"
    raise ValueError(f"{where}: image bytes are neither PNG nor JPEG (starts {data[:8]!r})")


def _encoded_shape(data: bytes, codec: str, where: str) -> tuple[int, int, int]:
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{where}: cannot decode a {codec} frame")
    return tuple(int(s) for s in img.shape)  # type: ignore[return-value]


def _json_factors(factors: Mapping[str, Any]) -> str:
    return json.dumps({k: (list(v) if isinstance(v, (tuple, list, np.ndarray)) else v) for k, v in factors.items()})


def _factors_from_json(text: Any, where: str) -> dict:
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


def _str_attr(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def _fresh_output(dst: Path, mode: str, is_dir: bool) -> Iterator[Path]:
    """Yield a hidden sibling path to build DST in; move it into place on success.

    mode "error" refuses an existing DST; "overwrite" replaces it only after the new one
    is complete; the old one is untouched if anything fails."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if dst.exists() or dst.is_symlink():
        if mode == "error":
            raise ValueError(f"{dst}: already exists (mode 'error'); pass mode 'overwrite' to replace it")
        if mode == "append":
            raise ValueError(f"{dst}: mode 'append' is supported for Lance destinations only; use 'overwrite' or a new path")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.converting-{os.getpid()}"
    _remove(tmp)
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
        if dst.exists():
            old = dst.parent / f".{dst.name}.old-{os.getpid()}"
            _remove(old)
            os.rename(dst, old)
            os.rename(tmp, dst)
            _remove(old)
        else:
            os.rename(tmp, dst)
    except BaseException:
        _remove(tmp)
        raise


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


# -- format detection ---------------------------------------------------------------------
def detect_format(path: str | os.PathLike) -> str:
    """Name the format of `path`: one of `SOURCE_FORMATS`; ValueError if none fits."""
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
    if _swm_table(p) is not None:
        return "swm-lance"
    raise ValueError(f"{p}: unknown format ({expected})")


def _is_lance_table(p: Path) -> bool:
    return p.is_dir() and ((p / "_versions").is_dir() or any(p.glob("_latest.manifest")))


def _swm_table(p: Path) -> Path | None:
    if _is_lance_table(p):
        return p
    if p.is_dir():
        tables = [t for t in sorted(p.glob("*.lance")) if _is_lance_table(t) and not t.stem.endswith("_episodes")]
        if len(tables) == 1:
            return tables[0]
        if len(tables) > 1:
            raise ValueError(f"{p}: holds several Lance tables {[t.name for t in tables]}; pass the one to convert")
    return None


def open_source(path: str | os.PathLike, fmt: str | None = None) -> Source:
    """Open `path` for reading (format detected unless `fmt` is given)."""
    p = Path(path)
    fmt = fmt or detect_format(p)
    readers = {"lance": _lance_source, "hdf5": _hdf5_source, "mp4": _mp4_source, "lerobot": _lerobot_source, "swm-lance": _swm_lance_source}
    if fmt not in readers:
        raise ValueError(f"unknown source format {fmt!r}; expected one of {', '.join(SOURCE_FORMATS)}")
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    return readers[fmt](p)


# -- reading: our Lance store ---------------------------------------------------------------
def _lance_source(path: Path) -> Source:
    from .dataset import open_dataset

    ds = open_dataset(path)
    rows = {e[C.EPISODE_ID]: e for e in ds.episodes()}

    def read(ids: Sequence[int]) -> Iterator[Episode]:
        for eid in ids:
            meta = rows[eid]
            if ds.codec == "raw":
                arrays = ds.load_episode(eid)
                frames = {"pixels": arrays.pop("pixels")}
            else:  # keep the stored bytes: PNG/JPEG pass through without re-encoding
                arrays = ds.load_episode(eid, columns=[C.ACTION, C.STATE, C.REWARD, C.TERMINATED, C.TRUNCATED])
                idx = ds.index
                k = idx.position(int(eid))
                take = idx.rows[idx.start[k] : idx.start[k] + idx.count[k]]
                uniq, inverse = np.unique(take, return_inverse=True)
                blobs = ds._steps.take(uniq.tolist(), columns=[C.PIXELS]).column(C.PIXELS).to_pylist()
                frames = {"pixels": None, "encoded": [blobs[i] for i in inverse], "encoded_codec": ds.codec, "image_shape": ds.image_shape}
            yield _episode(
                f"{path} episode {eid}", **frames, action=arrays["action"], state=arrays["state"], reward=arrays["reward"],
                terminated=arrays["terminated"], truncated=arrays["truncated"], episode_id=int(eid), env_id=meta[C.ENV_ID],
                seed=meta[C.SEED], factors=dict(meta[C.FACTORS]), policy=meta[C.POLICY], split=meta[C.SPLIT],
            )

    return Source("lance", path, sorted(rows), read, env_id=ds.meta.get("env_id"), fps=ds.meta.get("fps"), codec=ds.codec)


# -- reading: HDF5 ------------------------------------------------------------------------
def _h5py():
    try:
        import h5py
    except ImportError:
        raise ValueError('HDF5 conversion needs h5py: pip install "worldmodel[convert]" (or pip install h5py)') from None
    return h5py


def _pick(group: Any, keys: Sequence[str]) -> str | None:
    for k in keys:
        if k in group and not hasattr(group[k], "keys"):
            return k
    return None


def _hdf5_source(path: Path) -> Source:
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        attrs = dict(f.attrs)
        top = {k for k in f.keys() if not hasattr(f[k], "keys")}
        groups = sorted(k for k in f.keys() if hasattr(f[k], "keys"))
        if "ep_len" in top and "ep_offset" in top:
            layout = "swm"
        elif _pick(f, _ACTION_KEYS) and _pick(f, _PIXEL_KEYS) and f[_pick(f, _PIXEL_KEYS)].ndim == 5:
            layout = "stacked"
        elif groups and any(_pick(f[g], _ACTION_KEYS) and _pick(f[g], _PIXEL_KEYS) for g in groups):
            layout = "groups"
        else:
            raise ValueError(
                f"{path}: unknown HDF5 layout (top-level datasets {sorted(top)}, groups {groups[:5]}); expected per-episode "
                f"groups with frames ({'/'.join(_PIXEL_KEYS)}) and actions ({'/'.join(_ACTION_KEYS)}), stacked DINO-WM arrays "
                "(obses (N,T,H,W,3), actions, states, seq_lengths), or a stable-worldmodel file (ep_len, ep_offset)"
            )
    env_id = _str_attr(attrs.get("env_id"))
    fps = float(attrs["fps"]) if "fps" in attrs else None
    codec = _str_attr(attrs.get("codec"))  # the codec of the dataset it was exported from
    if layout == "swm":
        return _swm_hdf5_source(path)
    if layout == "stacked":
        return _dino_stacked_source(path, env_id, fps)

    def group_id(name: str, g: Any, k: int) -> int:
        if "episode_id" in g.attrs:
            return int(g.attrs["episode_id"])
        m = re.search(r"(\d+)$", name)
        return int(m.group(1)) if m else k

    with h5py.File(path, "r") as f:
        by_id: dict[int, str] = {}
        for k, name in enumerate(g for g in groups if _pick(f[g], _ACTION_KEYS) and _pick(f[g], _PIXEL_KEYS)):
            eid = group_id(name, f[name], k)
            if eid in by_id:
                raise ValueError(f"{path}: groups {by_id[eid]!r} and {name!r} both hold episode {eid}")
            by_id[eid] = name

    def read(ids: Sequence[int]) -> Iterator[Episode]:
        with h5py.File(path, "r") as f:
            for eid in ids:
                name = by_id[eid]
                g = f[name]
                where = f"{path}:/{name}"
                state_key = _pick(g, _STATE_KEYS)
                if state_key is None:
                    raise ValueError(f"{where}: no state dataset (expected one of {', '.join(_STATE_KEYS)}); found {sorted(g.keys())}")
                opt = {n: (g[k][()] if k else None) for n, k in (
                    ("reward", _pick(g, _REWARD_KEYS)), ("terminated", _pick(g, _TERMINATED_KEYS)), ("truncated", _pick(g, _TRUNCATED_KEYS)))}
                a = g.attrs
                seed = int(a["seed"]) if "seed" in a else None
                yield _episode(
                    where, g[_pick(g, _PIXEL_KEYS)][()], g[_pick(g, _ACTION_KEYS)][()], g[state_key][()], **opt,
                    episode_id=int(eid), env_id=_str_attr(a.get("env_id", env_id)), seed=seed,
                    factors=_factors_from_json(a.get("factors"), where), policy=str(_str_attr(a.get("policy", "unknown"))),
                    split=str(_str_attr(a.get("split", "default"))),
                )

    return Source("hdf5", path, sorted(by_id), read, env_id=env_id, fps=fps, codec=codec)


def _dino_stacked_source(path: Path, env_id: str | None, fps: float | None) -> Source:
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        obs_key, act_key, state_key = _pick(f, _PIXEL_KEYS), _pick(f, _ACTION_KEYS), _pick(f, _STATE_KEYS)
        if state_key is None:
            raise ValueError(f"{path}: DINO-WM layout without states (expected one of {', '.join(_STATE_KEYS)}); found {sorted(f.keys())}")
        n_obs, n_act, n_state = len(f[obs_key]), len(f[act_key]), len(f[state_key])
        if not n_obs == n_act == n_state:
            raise ValueError(f"{path}: {obs_key} has {n_obs} episodes, {act_key} {n_act}, {state_key} {n_state}; expected the same number")
        t_max = f[obs_key].shape[1]
        if "seq_lengths" in f:
            lengths = np.asarray(f["seq_lengths"][()]).astype(np.int64).reshape(-1)
            if len(lengths) != n_obs:
                raise ValueError(f"{path}: seq_lengths has {len(lengths)} entries for {n_obs} episodes")
            bad = np.flatnonzero((lengths < 1) | (lengths > t_max))
            if len(bad):
                raise ValueError(f"{path}: seq_lengths[{int(bad[0])}]={int(lengths[bad[0]])} outside 1..{t_max}")
        else:
            lengths = np.full(n_obs, t_max, np.int64)

    def read(ids: Sequence[int]) -> Iterator[Episode]:
        with h5py.File(path, "r") as f:
            for i in ids:
                n = int(lengths[i])
                act = f[act_key][i]
                act = act[:n] if len(act) >= n else act
                yield _episode(f"{path} episode {i}", f[obs_key][i, :n], act, f[state_key][i, :n], episode_id=int(i), env_id=env_id, policy="dino_wm")

    return Source("hdf5", path, list(range(n_obs)), read, env_id=env_id, fps=fps)


# -- reading: stable-worldmodel flat layouts (Lance table, HDF5 file) ---------------------------
def _repair_ids(values: np.ndarray, name: str, where: str) -> np.ndarray:
    """Float32-coerced ids back to int64; ValueError naming the first non-integral value."""
    arr = np.asarray(values)
    if arr.ndim == 2:
        if arr.shape[1] != 1:
            raise ValueError(f"{where}: column {name!r} has {arr.shape[1]} values per row, expected 1")
        arr = arr[:, 0]
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{where}: column {name!r} is {arr.dtype}, expected integers (or integral floats)")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) > _FLOAT32_EXACT_INT))
    if len(bad):
        r = int(bad[0])
        raise ValueError(
            f"{where}: {name}={float(arr[r])!r} at row {r} is not an integer id (float32-coerced ids must be integral and at most 2**24)"
        )
    return arr.astype(np.int64)


class _FlatColumns:
    """Row-sliceable per-step columns of a flat table: ``names``, ``kind(name)``, ``rows(name, start, stop)``."""

    def __init__(self, names: list[str], kinds: dict[str, str], fetch: Callable[[str, int, int], Any],
                 close: Callable[[], None] | None = None):
        self.names, self.kinds, self.fetch = names, kinds, fetch
        self.close = close or (lambda: None)


def _flat_source(fmt: str, path: Path, cols: _FlatColumns, ep_ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                 episode_meta: dict[int, dict] | None = None) -> Source:
    """Source over flat rows where episode k is rows ``starts[k] : starts[k] + lengths[k]``."""
    names = cols.names
    image_cols = [n for n in names if cols.kinds[n] == "image" and n not in ("pixels_h", "pixels_w")]
    if "pixels" in image_cols:
        pix = "pixels"
    elif image_cols:
        pix = sorted(image_cols)[0]
    else:
        raise ValueError(f"{path}: no image column (expected 'pixels' holding JPEG/PNG bytes or uint8 frames); columns {names}")
    act = next((k for k in _ACTION_KEYS if k in names), None)
    state = next((k for k in _STATE_KEYS if k in names), None)
    for what, key, options in (("action", act, _ACTION_KEYS), ("state", state, _STATE_KEYS)):
        if key is None:
            raise ValueError(f"{path}: no {what} column (expected one of {', '.join(options)}); columns {names}")
    special = {pix, act, state, "episode_idx", "step_idx", "pixels_h", "pixels_w", "seed", "policy"}
    flags = {n: next((k for k in keys if k in names), None) for n, keys in (("reward", _REWARD_KEYS), ("terminated", _TERMINATED_KEYS), ("truncated", _TRUNCATED_KEYS))}
    special |= {k for k in flags.values() if k}
    extra = [n for n in names if n not in special]
    lossy: list[str] = []
    dropped_images = [n for n in extra if cols.kinds[n] == "image"]
    if dropped_images:
        lossy.append(f"image columns {dropped_images} dropped (the store holds one camera; goal images are not stored)")
    extra = [n for n in extra if cols.kinds[n] != "image"]
    order = {int(e): k for k, e in enumerate(ep_ids)}
    dropped_varying: set[str] = set()

    def read(ids: Sequence[int]) -> Iterator[Episode]:
        try:
            yield from read_episodes(ids)
        finally:
            cols.close()

    def read_episodes(ids: Sequence[int]) -> Iterator[Episode]:
        for eid in ids:
            k = order[eid]
            s, n = int(starts[k]), int(lengths[k])
            where = f"{path} episode {eid}"
            frames = cols.fetch(pix, s, s + n)
            if "step_idx" in names:
                steps = _repair_ids(cols.fetch("step_idx", s, s + n), "step_idx", where)
                if not np.array_equal(steps, np.arange(n)):
                    raise ValueError(f"{where}: step_idx is not 0..{n - 1} in row order (got {steps[:8].tolist()}...)")
            factors: dict[str, Any] = {}
            seed = None
            if "seed" in names:
                seed = int(_repair_ids(cols.fetch("seed", s, s + 1), "seed", where)[0])
            for name in extra:
                values = cols.fetch(name, s, s + n)
                const = _constant(values)
                if const is _VARYING:
                    if name not in dropped_varying:
                        dropped_varying.add(name)
                        lossy.append(f"column {name!r} varies within episodes: dropped (only per-episode constants become factors)")
                    continue
                factors[name.removeprefix("variation_")] = const
            factors.update((episode_meta or {}).get(int(eid), {}))
            action = np.asarray(cols.fetch(act, s, s + n)).reshape(n, -1)
            finite = np.isfinite(action.astype(np.float64))
            if n > 0 and not finite[-1].any():
                action, finite = action[:-1], finite[:-1]  # NaN padding: no action at the last observation
            bad = np.flatnonzero(~finite.all(axis=1))
            if len(bad):
                r = int(bad[0])
                raise ValueError(f"{where}: action at step {r} is {action[r].tolist()} (expected finite numbers)")
            opt = {key: (np.asarray(cols.fetch(col, s, s + n)).reshape(n, -1)[:, 0] if col else None) for key, col in flags.items()}
            if isinstance(frames, list):
                codec = _sniff_codec(frames[0], where)
                shape = _encoded_shape(frames[0], codec, where)
                frame_args = {"pixels": None, "encoded": frames, "encoded_codec": codec, "image_shape": shape}
            else:
                frame_args = {"pixels": frames}
            yield _episode(where, **frame_args, action=action, state=cols.fetch(state, s, s + n), **opt,
                           episode_id=int(eid), seed=seed, factors=factors, policy="stable-worldmodel")

    return Source(fmt, path, sorted(order), read, lossy=lossy, codec="jpeg" if fmt == "swm-lance" else None)


class _Varying:
    pass


_VARYING = _Varying()


def _constant(values: Any) -> Any:
    """The episode-constant value of a column slice as a factor value, or `_VARYING`."""
    if isinstance(values, list):  # strings
        vals = [_str_attr(v) for v in values]
        return vals[0] if all(v == vals[0] for v in vals) else _VARYING
    arr = np.asarray(values)
    if arr.dtype.kind in "SUO":
        vals = [_str_attr(v) for v in arr.reshape(-1).tolist()]
        return vals[0] if all(v == vals[0] for v in vals) else _VARYING
    arr = arr.reshape(len(arr), -1)
    if not (arr == arr[:1]).all():
        return _VARYING
    first = arr[0]
    if first.size == 1:
        v = first[0]
        return bool(v) if arr.dtype == bool else (int(v) if np.issubdtype(arr.dtype, np.integer) else float(v))
    return tuple(float(x) for x in first)


def _arrow_values(col: Any) -> Any:
    """A pyarrow column as numpy (fixed-size lists -> (N, k)) or a list of bytes/str."""
    import pyarrow as pa

    if hasattr(col, "combine_chunks"):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.to_pylist()
    if pa.types.is_fixed_size_list(t):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), t.list_size)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return np.asarray(col.to_pylist())
    return col.to_numpy(zero_copy_only=False)


def _swm_lance_source(path: Path) -> Source:
    import lance
    import pyarrow as pa

    table = _swm_table(path)
    if table is None:
        raise ValueError(f"{path}: not a stable-worldmodel Lance table (expected NAME.lance or a folder holding one)")
    try:
        ds = lance.dataset(str(table))
    except Exception as e:
        raise ValueError(f"{table}: cannot open as a Lance table ({e})") from None
    schema = ds.schema
    if "episode_idx" not in schema.names:
        raise ValueError(f"{table}: no 'episode_idx' column; not a stable-worldmodel table (columns {schema.names})")
    kinds = {}
    for f in schema:
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            kinds[f.name] = "image"
        elif pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            kinds[f.name] = "string"
        else:
            kinds[f.name] = "number"
    eids = _repair_ids(_arrow_values(ds.to_table(columns=["episode_idx"]).column("episode_idx")), "episode_idx", str(table))
    ep_ids, starts, lengths = _runs(eids, str(table))

    def fetch(name: str, start: int, stop: int) -> Any:
        return _arrow_values(ds.take(list(range(start, stop)), columns=[name]).column(name))

    episode_meta = None
    sidecar = table.parent / f"{table.stem}_episodes.lance"
    if _is_lance_table(sidecar):
        rows = lance.dataset(str(sidecar)).to_table()
        if "episode_idx" in rows.column_names:
            ids = _repair_ids(_arrow_values(rows.column("episode_idx")), "episode_idx", str(sidecar))
            episode_meta = {}
            other = [c for c in rows.column_names if c != "episode_idx"]
            vals = {c: _arrow_values(rows.column(c)) for c in other}
            for k, eid in enumerate(ids.tolist()):
                meta = {}
                for c in other:
                    v = vals[c][k]
                    if isinstance(v, (bytes, bytearray)):
                        continue
                    meta[c.removeprefix("variation_")] = _constant(np.asarray([v])) if not isinstance(v, str) else v
                episode_meta[int(eid)] = meta
    src = _flat_source("swm-lance", path, _FlatColumns(schema.names, kinds, fetch), ep_ids, starts, lengths, episode_meta)
    float_cols = [f.name for f in schema if f.name in ("episode_idx", "step_idx") and not pa.types.is_integer(f.type)]
    if float_cols:
        src.lossy.append(f"{float_cols} were float32-coerced ids: repaired to int64 (all integral)")
    return src


def _runs(eids: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episode ids, start rows and lengths of contiguous runs; ValueError if an id recurs."""
    if len(eids) == 0:
        raise ValueError(f"{where}: no rows")
    change = np.flatnonzero(np.diff(eids) != 0) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    lengths = np.diff(np.concatenate([starts, [len(eids)]])).astype(np.int64)
    ids = eids[starts]
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{where}: the rows of episode_idx={int(uniq[counts > 1][0])} are not contiguous (expected episode-contiguous rows)")
    return ids, starts, lengths


def _swm_hdf5_source(path: Path) -> Source:
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        lengths = np.asarray(f["ep_len"][()]).astype(np.int64)
        offsets = np.asarray(f["ep_offset"][()]).astype(np.int64)
        if len(lengths) != len(offsets):
            raise ValueError(f"{path}: ep_len has {len(lengths)} entries, ep_offset {len(offsets)}; expected the same")
        names = [k for k in f.keys() if k not in ("ep_len", "ep_offset") and not hasattr(f[k], "keys")]
        kinds = {}
        for k in names:
            d = f[k]
            if d.dtype == np.uint8 and d.ndim == 4:
                kinds[k] = "image"
            elif h5py.check_string_dtype(d.dtype) or d.dtype.kind in "SUO":
                kinds[k] = "string"
            else:
                kinds[k] = "number"
        if "episode_idx" in names:
            first = _repair_ids(f["episode_idx"][()][offsets] if len(offsets) else np.zeros(0), "episode_idx", str(path))
            ep_ids = first
        else:
            ep_ids = np.arange(len(lengths), dtype=np.int64)
    if len(np.unique(ep_ids)) != len(ep_ids):
        raise ValueError(f"{path}: episode_idx values repeat across episodes")
    handle: dict[str, Any] = {}

    def fetch(name: str, start: int, stop: int) -> Any:
        if "f" not in handle:
            handle["f"] = h5py.File(path, "r")
        d = handle["f"][name]
        if kinds[name] == "string":
            return [_str_attr(v) for v in d[start:stop].tolist()]
        return d[start:stop]

    def close() -> None:
        if "f" in handle:
            handle.pop("f").close()

    return _flat_source("hdf5", path, _FlatColumns(names, kinds, fetch, close), ep_ids, offsets, lengths)


# -- reading: MP4 folder ----------------------------------------------------------------------
class _VideoCursor:
    """Reads one MP4 front to back: asking for earlier frames than the last read reopens it."""

    def __init__(self, path: Path):
        self.path, self.cap, self.pos = path, None, 0

    def read(self, start: int, count: int, where: str) -> np.ndarray:
        """Frames ``start .. start+count-1`` as uint8 RGB (count, H, W, 3)."""
        import cv2

        if self.cap is None or start < self.pos:
            self.close()
            if not self.path.is_file():
                raise FileNotFoundError(f"{where}: video {self.path} is missing")
            self.cap, self.pos = cv2.VideoCapture(str(self.path)), 0
            if not self.cap.isOpened():
                raise ValueError(f"{where}: OpenCV cannot open {self.path}")
        frames = []
        while self.pos < start + count:
            ok, img = self.cap.read()
            if not ok:
                break
            if self.pos >= start:
                frames.append(img[:, :, ::-1])
            self.pos += 1
        if len(frames) != count:
            raise ValueError(f"{where}: {self.path} ends after {self.pos} frames; expected frames {start}..{start + count - 1}")
        return np.ascontiguousarray(np.stack(frames))

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def _read_video(path: Path, start: int, count: int, where: str) -> np.ndarray:
    """Frames ``start .. start+count-1`` of an MP4 as uint8 RGB (count, H, W, 3)."""
    cursor = _VideoCursor(path)
    try:
        return cursor.read(start, count, where)
    finally:
        cursor.close()


def _mp4_source(path: Path) -> Source:
    info = {}
    if (path / "info.json").is_file():
        info = json.loads((path / "info.json").read_text())
    lines = {}
    for n, line in enumerate((path / "episodes.jsonl").read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}/episodes.jsonl line {n + 1}: not JSON ({e})") from None
        missing = [k for k in ("episode_id", "length", "action", "state") if k not in rec]
        if missing:
            raise ValueError(f"{path}/episodes.jsonl line {n + 1}: missing keys {missing}")
        lines[int(rec["episode_id"])] = rec
    state_dtype = info.get("state_dtype", "float64")

    def read(ids: Sequence[int]) -> Iterator[Episode]:
        for eid in ids:
            rec = lines[eid]
            where = f"{path} episode {eid}"
            video = path / rec.get("file", f"episode_{eid:06d}.mp4")
            pixels = _read_video(video, 0, int(rec["length"]), where)
            yield _episode(
                where, pixels, np.asarray(rec["action"], np.float32), np.asarray(rec["state"], state_dtype),
                rec.get("reward"), rec.get("terminated"), rec.get("truncated"), episode_id=int(eid),
                env_id=rec.get("env_id", info.get("env_id")), seed=rec.get("seed"), factors=dict(rec.get("factors") or {}),
                policy=str(rec.get("policy", "unknown")), split=str(rec.get("split", "default")),
            )

    return Source("mp4", path, sorted(lines), read, env_id=info.get("env_id"), fps=info.get("fps"),
                  codec=info.get("codec"), lossy=["frames decoded from MP4 video (lossy)"])


# -- reading: LeRobot v3 ----------------------------------------------------------------------
def _lerobot_source(path: Path) -> Source:
    import pyarrow as pa
    import pyarrow.parquet as pq

    info_path = path / "meta" / "info.json"
    try:
        info = json.loads(info_path.read_text())
    except ValueError as e:
        raise ValueError(f"{info_path}: not JSON ({e})") from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise ValueError(f"{path}: LeRobot codebase_version {version!r}; only v3.x is supported (convert v2.1 with lerobot's converter first)")
    features = info.get("features") or {}
    missing = [k for k in ("fps", "features", "data_path") if k not in info]
    if missing:
        raise ValueError(f"{info_path}: missing keys {missing}")
    visual = [k for k, v in features.items() if v.get("dtype") in ("video", "image")]
    if not visual:
        raise ValueError(f"{info_path}: no image or video feature (features {sorted(features)})")
    key = LEROBOT_IMAGE_KEY if LEROBOT_IMAGE_KEY in visual else sorted(visual)[0]
    for need in (LEROBOT_STATE_KEY, LEROBOT_ACTION_KEY):
        if need not in features:
            raise ValueError(f"{info_path}: no {need!r} feature (features {sorted(features)})")
    is_video = features[key]["dtype"] == "video"
    fps = float(info["fps"])
    wm = info.get("worldmodel") or {}
    ep_files = sorted((path / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not ep_files:
        raise ValueError(f"{path}: no meta/episodes/chunk-*/file-*.parquet")
    episodes = pa.concat_tables([pq.read_table(p) for p in ep_files], promote_options="default").to_pylist()
    if any("episode_index" not in e for e in episodes):
        raise ValueError(f"{path}: episodes parquet has no episode_index column")
    by_id: dict[int, dict] = {}
    for e in episodes:
        eid = int(e["episode_id"]) if e.get("episode_id") is not None else int(e["episode_index"])
        if eid in by_id:
            raise ValueError(f"{path}: episode {eid} listed twice in meta/episodes")
        by_id[eid] = e
    lossy = [f"frames decoded from MP4 video {key!r} (lossy)"] if is_video else []
    if len(visual) > 1:
        lossy.append(f"only image feature {key!r} converted; {sorted(set(visual) - {key})} dropped")
    tasks: dict[int, str] = {}
    if (path / "meta" / "tasks.parquet").is_file():
        tt = pq.read_table(path / "meta" / "tasks.parquet").to_pylist()
        for r in tt:
            task = r.get("task", r.get("__index_level_0__"))
            if "task_index" in r and task is not None:
                tasks[int(r["task_index"])] = str(task)
    cache: dict[str, Any] = {}
    videos: dict[Path, _VideoCursor] = {}

    def data_for(e: dict) -> dict[str, Any]:
        rel = info["data_path"].format(chunk_index=int(e.get("data/chunk_index") or 0), file_index=int(e.get("data/file_index") or 0))
        if cache.get("path") != rel:
            file = path / rel
            if not file.is_file():
                raise FileNotFoundError(f"{path}: data file {rel} is missing")
            cache["path"], cache["table"] = rel, pq.read_table(file)
            cache["episode_index"] = cache["table"].column("episode_index").to_numpy()
        tbl = cache["table"]
        rows = np.flatnonzero(cache["episode_index"] == int(e["episode_index"]))
        part = tbl.take(pa.array(rows))
        if "frame_index" in part.column_names:
            part = part.take(pa.array(np.argsort(part.column("frame_index").to_numpy(), kind="stable")))
        return {c: part.column(c) for c in part.column_names}

    def read(ids: Sequence[int]) -> Iterator[Episode]:
        try:
            yield from read_episodes(ids)
        finally:
            for cursor in videos.values():
                cursor.close()

    def read_episodes(ids: Sequence[int]) -> Iterator[Episode]:
        for eid in ids:
            e = by_id[eid]
            where = f"{path} episode {eid}"
            cols = data_for(e)
            n = len(cols["episode_index"])
            if "length" in e and e["length"] is not None and int(e["length"]) != n:
                raise ValueError(f"{where}: {n} data rows, its length says {int(e['length'])}")
            if is_video:
                rel = info["video_path"].format(
                    video_key=key, chunk_index=int(e.get(f"videos/{key}/chunk_index") or 0),
                    file_index=int(e.get(f"videos/{key}/file_index") or 0))
                start = int(round(float(e.get(f"videos/{key}/from_timestamp") or 0.0) * fps))
                cursor = videos.setdefault(path / rel, _VideoCursor(path / rel))
                frame_args = {"pixels": cursor.read(start, n, where)}
            else:
                structs = cols[key].to_pylist()
                blobs = []
                for t, s in enumerate(structs):
                    data = s.get("bytes") if isinstance(s, dict) else s
                    if data is None and isinstance(s, dict) and s.get("path"):
                        data = (path / s["path"]).read_bytes()
                    if data is None:
                        raise ValueError(f"{where}: frame {t} of {key!r} has neither bytes nor path")
                    blobs.append(bytes(data))
                codec = _sniff_codec(blobs[0], where)
                frame_args = {"pixels": None, "encoded": blobs, "encoded_codec": codec,
                              "image_shape": _encoded_shape(blobs[0], codec, where)}
            state = _arrow_values(cols[LEROBOT_STATE_KEY])
            action = _arrow_values(cols[LEROBOT_ACTION_KEY])
            if "reward" in cols:
                reward, term, trunc = (_arrow_values(cols[c]) for c in ("reward", "terminated", "truncated"))
            else:
                reward = np.zeros(n, np.float32)
                if "next.reward" in cols:
                    reward[1:] = np.asarray(_arrow_values(cols["next.reward"])).reshape(n, -1)[:-1, 0]
                term = np.zeros(n, bool)
                if "next.done" in cols:
                    term[-1] = bool(np.asarray(_arrow_values(cols["next.done"])).reshape(n, -1)[:, 0].any())
                trunc = None
            if "factors" in e:
                factors = _factors_from_json(e.get("factors"), where)
            else:
                task_ids = np.unique(np.asarray(_arrow_values(cols["task_index"]))) if "task_index" in cols else []
                factors = {"task": tasks[int(task_ids[0])]} if len(task_ids) == 1 and int(task_ids[0]) in tasks else {}
            seed = e.get("seed")
            yield _episode(
                where, **frame_args, action=action, state=state, reward=reward, terminated=term, truncated=trunc,
                episode_id=int(eid), env_id=e.get("env_id", wm.get("env_id")), seed=None if seed is None else int(seed),
                factors=factors, policy=str(e.get("policy") or "lerobot"), split=str(e.get("split") or "default"),
            )

    codec = wm.get("codec") if wm else None
    src_fps = wm.get("fps", fps) if wm else fps
    return Source("lerobot", path, sorted(by_id), read, env_id=wm.get("env_id"), fps=src_fps, codec=codec, lossy=lossy)


# -- writing ------------------------------------------------------------------------------
def _check_env_id(ep: Episode, env_id: str | None, dst: Path) -> None:
    if ep.env_id is not None and env_id is not None and ep.env_id != env_id:
        raise ValueError(f"{dst}: episode {ep.episode_id} has env_id {ep.env_id!r}, the others {env_id!r}; convert one env id at a time")


def _write_lance(episodes: Iterator[Episode], dst: Path, codec: str | None, mode: str, env_id: str | None,
                 fps: float | None, lossy: list[str]) -> list[int]:
    from .writer import EpisodeWriter

    written = []
    renumbered = 0
    first = next(episodes, None)
    if first is None:
        return written
    env_id = env_id if env_id is not None else first.env_id
    with EpisodeWriter(dst, mode=mode, codec=codec, env_id=env_id, fps=fps) as w:
        for ep in _chain(first, episodes):
            _check_env_id(ep, env_id, dst)
            target = w.codec  # None only before the first frame of a new dataset without a codec
            if ep.encoded is not None and ep.encoded_codec in ("png", "jpeg") and target in (None, ep.encoded_codec):
                # stored bytes pass through unchanged (an EncodedFrame also fixes a new dataset's codec)
                frames = [EncodedFrame(b, ep.image_shape, ep.encoded_codec) for b in ep.encoded]  # type: ignore[arg-type]
            else:
                frames = list(ep.pixels)
                if (target or codec) == "jpeg" and "frames encoded as JPEG (lossy)" not in lossy:
                    lossy.append("frames encoded as JPEG (lossy)")
            for t in range(ep.length):
                last = t == ep.length - 1
                w.add_step(frames[t], ep.state[t], ep.action[t], float(ep.reward[t]), bool(ep.terminated[t]) and last,
                           bool(ep.truncated[t]) and last)
            # keep the source's episode id when the writer can (ids only grow); else it renumbers
            if ep.episode_id is not None and ep.episode_id >= w._next_id:
                w._next_id = int(ep.episode_id)
            elif ep.episode_id is not None:
                renumbered += 1
            written.append(w.save_episode(seed=ep.seed, factors=ep.factors, policy=ep.policy, split=ep.split))
    if renumbered:
        lossy.append(f"{renumbered} episode ids renumbered (they collide with ids already in {dst})")
    return written


def _chain(first: Episode, rest: Iterator[Episode]) -> Iterator[Episode]:
    yield first
    yield from rest


def _write_hdf5(episodes: Iterator[Episode], dst: Path, src: Source, mode: str) -> list[int]:
    h5py = _h5py()
    written = []
    with _fresh_output(dst, mode, is_dir=False) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = HDF5_FORMAT
            f.attrs["schema_version"] = HDF5_SCHEMA_VERSION
            if src.env_id is not None:
                f.attrs["env_id"] = src.env_id
            if src.fps is not None:
                f.attrs["fps"] = float(src.fps)
            f.attrs["codec"] = src.codec or "raw"
            for k, ep in enumerate(episodes):
                eid = ep.episode_id if ep.episode_id is not None else k
                g = f.create_group(f"episode_{eid:06d}")
                g.attrs["episode_id"] = np.int64(eid)
                for name, value in (("env_id", ep.env_id), ("policy", ep.policy), ("split", ep.split)):
                    if value is not None:
                        g.attrs[name] = value
                if ep.seed is not None:
                    g.attrs["seed"] = np.int64(ep.seed)
                g.attrs["factors"] = _json_factors(ep.factors)
                pix = ep.pixels
                g.create_dataset("pixels", data=pix, chunks=(1,) + pix.shape[1:], compression="gzip", compression_opts=4)
                g.create_dataset("action", data=ep.action)
                g.create_dataset("state", data=ep.state)
                g.create_dataset("reward", data=ep.reward)
                g.create_dataset("terminated", data=ep.terminated)
                g.create_dataset("truncated", data=ep.truncated)
                f.attrs["state_dtype"] = ep.state.dtype.name
                written.append(int(eid))
    return written


def _video_writer(path: Path, fps: float, shape: Sequence[int], where: Path):
    """An OpenCV MPEG-4 writer for frames of `shape` (H, W, 3); `where` names it in errors."""
    import cv2

    h, w = int(shape[0]), int(shape[1])
    if h % 2 or w % 2:
        raise ValueError(f"{where}: MP4 needs even frame sizes, got {h}x{w}; export with --to hdf5 or --to lerobot --codec png instead")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise ValueError(f"{where}: OpenCV could not open an MP4 writer")
    return writer


def _write_frames(writer: Any, pixels: np.ndarray) -> None:
    for frame in pixels:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))


def _write_mp4(episodes: Iterator[Episode], dst: Path, src: Source, mode: str) -> list[int]:
    fps = float(src.fps or DEFAULT_FPS)
    written = []
    with _fresh_output(dst, mode, is_dir=True) as tmp:
        header: dict[str, Any] = {"format": MP4_FORMAT, "version": 1, "fps": fps, "env_id": src.env_id, "codec": src.codec}
        with open(tmp / "episodes.jsonl", "w") as out:
            for k, ep in enumerate(episodes):
                eid = ep.episode_id if ep.episode_id is not None else k
                name = f"episode_{eid:06d}.mp4"
                writer = _video_writer(tmp / name, fps, ep.image_shape, dst / name)
                try:
                    _write_frames(writer, ep.pixels)
                finally:
                    writer.release()
                header.update(image_shape=list(ep.image_shape), action_dim=int(ep.action.shape[1]),
                              state_dim=int(ep.state.shape[1]), state_dtype=ep.state.dtype.name)
                rec = {
                    "episode_id": int(eid), "file": name, "length": ep.length, "env_id": ep.env_id, "seed": ep.seed,
                    "factors": {k2: (list(v) if isinstance(v, tuple) else v) for k2, v in ep.factors.items()},
                    "policy": ep.policy, "split": ep.split, "action": ep.action.tolist(), "state": ep.state.tolist(),
                    "reward": ep.reward.tolist(), "terminated": ep.terminated.tolist(), "truncated": ep.truncated.tolist(),
                }
                out.write(json.dumps(rec) + "\n")
                written.append(int(eid))
        (tmp / "info.json").write_text(json.dumps(header, indent=2) + "\n")
    return written


def _write_lerobot(episodes: Iterator[Episode], dst: Path, src: Source, mode: str, codec: str | None) -> list[int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if codec not in (None, "png", "jpeg"):
        raise ValueError(f"codec {codec!r} for LeRobot: expected png (lossless images in parquet), jpeg, or none (MP4 video)")
    fps = float(src.fps or DEFAULT_FPS)
    fps_out: float | int = int(fps) if fps == int(fps) else fps
    use_video = codec is None
    written: list[int] = []
    data_tables, ep_rows = [], []
    env_ids: list[str | None] = []
    total = 0
    spec: dict[str, Any] = {}
    with _fresh_output(dst, mode, is_dir=True) as tmp:
        video = None
        video_path = tmp / _LEROBOT_VIDEO_PATH.format(video_key=LEROBOT_IMAGE_KEY, chunk_index=0, file_index=0)
        try:
            for k, ep in enumerate(episodes):
                eid = ep.episode_id if ep.episode_id is not None else k
                n = ep.length
                if not spec:
                    spec = {"shape": ep.image_shape, "A": ep.action.shape[1], "S": ep.state.shape[1], "state_dtype": ep.state.dtype}
                elif (ep.image_shape, ep.action.shape[1], ep.state.shape[1]) != (spec["shape"], spec["A"], spec["S"]):
                    raise ValueError(f"episode {eid}: image/action/state shapes differ from the first episode's")
                if ep.env_id not in env_ids:
                    env_ids.append(ep.env_id)
                task_index = env_ids.index(ep.env_id)
                done = np.zeros(n, bool)
                done[-1] = bool(ep.terminated[-1] or ep.truncated[-1])
                next_reward = np.zeros(n, np.float32)
                next_reward[:-1] = ep.reward[1:]
                cols = {
                    "episode_index": pa.array(np.full(n, k, np.int64)),
                    "frame_index": pa.array(np.arange(n, dtype=np.int64)),
                    "timestamp": pa.array((np.arange(n) / fps).astype(np.float32)),
                    "index": pa.array(np.arange(total, total + n, dtype=np.int64)),
                    "task_index": pa.array(np.full(n, task_index, np.int64)),
                    LEROBOT_STATE_KEY: pa.FixedSizeListArray.from_arrays(pa.array(ep.state.reshape(-1)), int(spec["S"])),
                    LEROBOT_ACTION_KEY: pa.FixedSizeListArray.from_arrays(pa.array(ep.action.reshape(-1)), int(spec["A"])),
                    "next.reward": pa.array(next_reward),
                    "next.done": pa.array(done),
                    "reward": pa.array(ep.reward.astype(np.float32)),
                    "terminated": pa.array(ep.terminated.astype(bool)),
                    "truncated": pa.array(ep.truncated.astype(bool)),
                }
                row: dict[str, Any] = {
                    "episode_index": k, "tasks": [str(ep.env_id)], "length": n, "data/chunk_index": 0, "data/file_index": 0,
                    "dataset_from_index": total, "dataset_to_index": total + n,
                }
                if use_video:
                    if video is None:
                        video_path.parent.mkdir(parents=True, exist_ok=True)
                        video = _video_writer(video_path, fps, ep.image_shape, dst)
                    _write_frames(video, ep.pixels)
                    row.update({f"videos/{LEROBOT_IMAGE_KEY}/chunk_index": 0, f"videos/{LEROBOT_IMAGE_KEY}/file_index": 0,
                                f"videos/{LEROBOT_IMAGE_KEY}/from_timestamp": total / fps,
                                f"videos/{LEROBOT_IMAGE_KEY}/to_timestamp": (total + n) / fps})
                else:
                    if ep.encoded is not None and ep.encoded_codec == codec:
                        blobs = list(ep.encoded)
                    else:
                        blobs = [EncodedFrame.encode(f, codec).data for f in ep.pixels]  # type: ignore[arg-type]
                    cols[LEROBOT_IMAGE_KEY] = pa.StructArray.from_arrays(
                        [pa.array(blobs, pa.binary()), pa.array([None] * n, pa.string())], names=["bytes", "path"])
                row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0, "episode_id": int(eid),
                            "env_id": ep.env_id, "seed": ep.seed, "policy": ep.policy, "split": ep.split,
                            "factors": _json_factors(ep.factors)})
                data_tables.append(pa.table(cols))
                ep_rows.append(row)
                written.append(int(eid))
                total += n
        finally:
            if video is not None:
                video.release()
        if not written:
            raise ValueError("no episodes to write")
        data_file = tmp / _LEROBOT_DATA_PATH.format(chunk_index=0, file_index=0)
        data_file.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(data_tables), data_file)
        ep_file = tmp / _LEROBOT_EPISODES_PATH
        ep_file.parent.mkdir(parents=True, exist_ok=True)
        ep_schema_extra = {"tasks": pa.list_(pa.string()), "seed": pa.int64(), "env_id": pa.string()}
        ep_cols = {}
        for name in ep_rows[0]:
            values = [r[name] for r in ep_rows]
            ep_cols[name] = pa.array(values, ep_schema_extra.get(name))
        pq.write_table(pa.table(ep_cols), ep_file)
        _write_tasks(tmp / "meta" / "tasks.parquet", [str(e) for e in env_ids])
        h, w, c = spec["shape"]
        image_feature: dict[str, Any] = {"dtype": "video" if use_video else "image", "shape": [h, w, c], "names": ["height", "width", "channels"]}
        if use_video:
            image_feature["info"] = {"video.height": h, "video.width": w, "video.codec": "mpeg4", "video.pix_fmt": "yuv420p",
                                     "video.is_depth_map": False, "video.fps": fps_out, "video.channels": c, "has_audio": False}
        scalar = lambda dtype: {"dtype": dtype, "shape": [1], "names": None}  # noqa: E731
        info = {
            "codebase_version": "v3.0", "robot_type": None, "total_episodes": len(written), "total_frames": total,
            "total_tasks": len(env_ids), "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
            "fps": fps_out, "splits": {"train": f"0:{len(written)}"}, "data_path": _LEROBOT_DATA_PATH,
            "video_path": _LEROBOT_VIDEO_PATH if use_video else None,
            "features": {
                LEROBOT_IMAGE_KEY: image_feature,
                LEROBOT_STATE_KEY: {"dtype": np.dtype(spec["state_dtype"]).name, "shape": [int(spec["S"])], "names": None},
                LEROBOT_ACTION_KEY: {"dtype": "float32", "shape": [int(spec["A"])], "names": None},
                "next.reward": scalar("float32"), "next.done": scalar("bool"),
                "reward": scalar("float32"), "terminated": scalar("bool"), "truncated": scalar("bool"),
                "timestamp": scalar("float32"), "frame_index": scalar("int64"), "episode_index": scalar("int64"),
                "index": scalar("int64"), "task_index": scalar("int64"),
            },
            "worldmodel": {"format": "worldmodel-episodes", "codec": src.codec, "env_id": src.env_id, "fps": src.fps,
                           "state_dtype": np.dtype(spec["state_dtype"]).name},
        }
        (tmp / "meta" / "info.json").write_text(json.dumps(info, indent=4) + "\n")
    return written


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """tasks.parquet as LeRobot reads it: task strings as the (pandas) index, column task_index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        import pandas as pd
    except ImportError:
        table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    else:
        table = pa.Table.from_pandas(pd.DataFrame({"task_index": np.arange(len(tasks), dtype=np.int64)}, index=pd.Index(tasks, name="task")))
    pq.write_table(table, path)


# -- the one entry point ----------------------------------------------------------------------
def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    to: str,
    *,
    codec: str | None = None,
    episodes: Sequence[int] | None = None,
    mode: str = "error",
    src_format: str | None = None,
) -> dict:
    """Convert the dataset at `src` (format detected, or `src_format`) into `dst` as `to`.

    to: "lance" | "hdf5" | "mp4" | "lerobot". codec: frame codec of a Lance destination
    (raw | jpeg | png; default: the source's when known) or of a LeRobot one (png | jpeg
    images in parquet; default MP4 video); HDF5 and MP4 take none. episodes: source
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
    src_p, dst_p = Path(src), Path(dst)
    if src_p.resolve() == dst_p.resolve():
        raise ValueError(f"{dst_p}: source and destination are the same path")
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
    lossy = source.lossy  # readers add to it while reading (e.g. dropped columns)
    frames = [0]

    def counted() -> Iterator[Episode]:
        for ep in source.read(ids):
            frames[0] += ep.length
            lossy.extend(n for n in ep.notes if n not in lossy)
            yield ep

    if to == "lance":
        lance_codec = codec
        appending = mode == "append" and (dst_p / C.META_FILE).is_file()
        if lance_codec is None and not appending and source.codec in ("raw", "png", "jpeg"):
            lance_codec = source.codec  # keep the source's codec (an existing dataset keeps its own)
        if appending:  # each episode commits on its own: a failure keeps the episodes before it
            written = _write_lance(counted(), dst_p, lance_codec, "append", source.env_id, source.fps, lossy)
        else:  # built beside DST and moved into place: a failure leaves DST as it was
            with _fresh_output(dst_p, mode, is_dir=True) as tmp:
                written = _write_lance(counted(), tmp, lance_codec, "append", source.env_id, source.fps, lossy)
    elif to == "hdf5":
        written = _write_hdf5(counted(), dst_p, source, mode)
    elif to == "mp4":
        written = _write_mp4(counted(), dst_p, source, mode)
        lossy.append("frames encoded as MP4 video (lossy)")
    else:
        written = _write_lerobot(counted(), dst_p, source, mode, codec)
        if codec is None:
            lossy.append("frames encoded as MP4 video (lossy; pass codec png for lossless images)")
        elif codec == "jpeg" and source.codec != "jpeg":
            lossy.append("frames encoded as JPEG (lossy)")
    return {
        "src": str(src_p), "src_format": source.format, "dst": str(dst_p), "to": to, "episodes": len(written),
        "frames": frames[0], "episode_ids": written, "lossy": lossy,
    }
