"""``hdf5`` (write: our layout; read: the layouts below), one ``.h5``/``.hdf5`` file.

- worldmodel (written here)::

      /                       attrs: format="worldmodel-episodes-hdf5", schema_version, env_id,
                              fps, codec (the source's frame codec), state_dtype, action_dtype
      /episode_<id:06d>/      attrs: episode_id (int64), env_id, seed (absent = None),
                              policy, split, factors (JSON), extras (JSON {name: {dtype, shape}})
          pixels     uint8 (T, H, W, 3)        gzip-compressed, one chunk per frame
          action     (T, A)                    the store's dtype (float16/32/64, int8..int64);
                                               zeros on the last row, as in the store
          state      (T, *state_shape)         the store's float dtype and shape
          reward     float32 (T,)
          terminated bool (T,)
          truncated  bool (T,)
          <name>     (T, *shape)               one dataset per extra observation, in its dtype;
                                               extra cameras uint8 (T, H, W, 3), gzip like pixels

- per-episode groups (any group holding frames + actions, e.g. DINO-WM style exports):
  frames under ``pixels``/``obses``/``observations``/``obs``/``images``, actions under
  ``action``/``actions``, state under ``state``/``states``/``proprio``/``proprios``;
  optional ``reward(s)``, ``terminated``/``terminals``, ``truncated``/``timeouts``. Every
  other dataset that has one row per frame in every group (same dtype and row shape
  everywhere) becomes an extra observation; the rest are dropped and listed in ``lossy``.
- DINO-WM stacked arrays (its ``states.pth``/``actions.pth``/``seq_lengths`` saved as
  HDF5): top-level ``obses``/``observations`` (N, T, H, W, 3) (or (N, T, 3, H, W)),
  ``actions`` (N, T, A), ``states`` (N, T, S), optional ``seq_lengths`` (N,) giving each
  episode's valid frames (default: all T).
- stable-worldmodel HDF5: flat per-step columns plus ``ep_len`` (E,) and ``ep_offset``
  (E,); mapped like its Lance tables (`data/convert/swm.py`).

In every layout frames must be uint8; actions may have T entries (one per frame, the last
one kept) or T-1 (the last row gets zeros); any other count is an error. Dtypes are kept.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..schema import EXTRA_DTYPES, is_camera
from .episode import RESERVED_NAMES, Episode, Source, factors_from_json, json_factors, make_episode, str_attr
from .fields import ACTION_KEYS, PIXEL_KEYS, REWARD_KEYS, STATE_KEYS, TERMINATED_KEYS, TRUNCATED_KEYS
from .output import fresh_output
from .swm import FlatColumns, flat_source, repair_ids

HDF5_FORMAT = "worldmodel-episodes-hdf5"
HDF5_SCHEMA_VERSION = 1
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def h5py_module() -> Any:
    """`h5py`, or a ValueError with the install line."""
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


def hdf5_source(path: Path) -> Source:
    """Open an HDF5 file in any of the layouts of the module docstring."""
    h5py = h5py_module()
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
        elif _pick(f, ACTION_KEYS) and _pick(f, PIXEL_KEYS) and f[_pick(f, PIXEL_KEYS)].ndim == 5:
            layout = "stacked"
        elif groups and any(_pick(f[g], ACTION_KEYS) and _pick(f[g], PIXEL_KEYS) for g in groups):
            layout = "groups"
        else:
            raise ValueError(
                f"{path}: unknown HDF5 layout (top-level datasets {sorted(top)}, groups {groups[:5]}); expected per-episode "
                f"groups with frames ({'/'.join(PIXEL_KEYS)}) and actions ({'/'.join(ACTION_KEYS)}), stacked DINO-WM arrays "
                "(obses (N,T,H,W,3), actions, states, seq_lengths), or a stable-worldmodel file (ep_len, ep_offset)"
            )
    env_id = str_attr(attrs.get("env_id"))
    fps = float(attrs["fps"]) if "fps" in attrs else None
    codec = str_attr(attrs.get("codec"))  # the codec of the dataset it was exported from
    if layout == "swm":
        return swm_hdf5_source(path)
    if layout == "stacked":
        return _dino_stacked_source(path, env_id, fps)
    return _groups_source(path, groups, env_id, fps, codec)


def _groups_source(path: Path, groups: list[str], env_id: str | None, fps: float | None, codec: str | None) -> Source:
    h5py = h5py_module()

    def group_id(name: str, g: Any, k: int) -> int:
        if "episode_id" in g.attrs:
            return int(g.attrs["episode_id"])
        m = re.search(r"(\d+)$", name)
        return int(m.group(1)) if m else k

    lossy: list[str] = []
    with h5py.File(path, "r") as f:
        by_id: dict[int, str] = {}
        for k, name in enumerate(g for g in groups if _pick(f[g], ACTION_KEYS) and _pick(f[g], PIXEL_KEYS)):
            eid = group_id(name, f[name], k)
            if eid in by_id:
                raise ValueError(f"{path}: groups {by_id[eid]!r} and {name!r} both hold episode {eid}")
            by_id[eid] = name
        ours = str_attr(f.attrs.get("format")) == HDF5_FORMAT
        extras = [] if ours else _foreign_extras(f, list(by_id.values()), lossy)

    def read(ids: Sequence[int]) -> Iterator[Episode]:
        with h5py.File(path, "r") as f:
            for eid in ids:
                name = by_id[eid]
                g = f[name]
                where = f"{path}:/{name}"
                state_key = _pick(g, STATE_KEYS)
                if state_key is None:
                    raise ValueError(f"{where}: no state dataset (expected one of {', '.join(STATE_KEYS)}); found {sorted(g.keys())}")
                opt = {n: (g[k][()] if k else None) for n, k in (
                    ("reward", _pick(g, REWARD_KEYS)), ("terminated", _pick(g, TERMINATED_KEYS)), ("truncated", _pick(g, TRUNCATED_KEYS)))}
                a = g.attrs
                names = list(json.loads(str_attr(a["extras"]))) if "extras" in a else extras
                seed = int(a["seed"]) if "seed" in a else None
                yield make_episode(
                    where, g[_pick(g, PIXEL_KEYS)][()], g[_pick(g, ACTION_KEYS)][()], g[state_key][()], **opt,
                    extras={n: g[n][()] for n in names}, episode_id=int(eid), env_id=str_attr(a.get("env_id", env_id)), seed=seed,
                    factors=factors_from_json(a.get("factors"), where), policy=str(str_attr(a.get("policy", "unknown"))),
                    split=str(str_attr(a.get("split", "default"))),
                )

    return Source("hdf5", path, sorted(by_id), read, env_id=env_id, fps=fps, codec=codec, lossy=lossy)


def _foreign_extras(f: Any, groups: list[str], lossy: list[str]) -> list[str]:
    """Datasets of foreign episode groups that become extras: one row per frame, same dtype
    and row shape in every group, a name the store accepts; the others are noted as dropped."""
    used = PIXEL_KEYS + ACTION_KEYS + STATE_KEYS + REWARD_KEYS + TERMINATED_KEYS + TRUNCATED_KEYS
    seen: dict[str, set] = {}
    bad: set[str] = set()
    for name in groups:
        g = f[name]
        frames = g[_pick(g, PIXEL_KEYS)]
        for key in g.keys():
            d = g[key]
            if key in used or hasattr(d, "keys"):
                continue
            seen.setdefault(key, set()).add((d.dtype.str, tuple(d.shape[1:])))
            if d.ndim == 0 or d.shape[0] != frames.shape[0]:
                bad.add(key)
    keep = []
    for key, kinds in sorted(seen.items()):
        ok_dtype = all(np.dtype(dt).name in EXTRA_DTYPES or np.dtype(dt).kind in "uf" for dt, _ in kinds)
        if key not in bad and len(kinds) == 1 and ok_dtype and key.isidentifier() and key not in RESERVED_NAMES \
                and sum(key in f[g] for g in groups) == len(groups):
            keep.append(key)
    dropped = sorted(set(seen) - set(keep))
    if dropped:
        lossy.append(f"HDF5 datasets {dropped} dropped (not one numeric row per frame in every episode group)")
    return keep


def _dino_stacked_source(path: Path, env_id: str | None, fps: float | None) -> Source:
    h5py = h5py_module()
    with h5py.File(path, "r") as f:
        obs_key, act_key, state_key = _pick(f, PIXEL_KEYS), _pick(f, ACTION_KEYS), _pick(f, STATE_KEYS)
        if state_key is None:
            raise ValueError(f"{path}: DINO-WM layout without states (expected one of {', '.join(STATE_KEYS)}); found {sorted(f.keys())}")
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
                yield make_episode(f"{path} episode {i}", f[obs_key][i, :n], act, f[state_key][i, :n], episode_id=int(i),
                                   env_id=env_id, policy="dino_wm")

    return Source("hdf5", path, list(range(n_obs)), read, env_id=env_id, fps=fps)


def hdf5_not_ours(path: Path) -> str | None:
    """None if `path` is an HDF5 file this project wrote (root attribute ``format`` is
    `HDF5_FORMAT`), else the reason it is not (a `Recogniser`)."""
    with open(path, "rb") as f:
        magic = f.read(len(HDF5_SIGNATURE))
    if magic != HDF5_SIGNATURE:
        return "not an HDF5 file"
    h5py = h5py_module()
    try:
        with h5py.File(path, "r") as f:
            fmt = str_attr(f.attrs.get("format"))
    except OSError as e:
        return f"an HDF5 file that cannot be read ({e})"
    if fmt != HDF5_FORMAT:
        return f"an HDF5 file this project did not write (no root attribute format={HDF5_FORMAT!r})"
    return None


def write_hdf5(episodes: Iterator[Episode], dst: Path, src: Source, mode: str) -> list[int]:
    """Write `episodes` as one HDF5 file in our layout; returns the episode ids written."""
    h5py = h5py_module()
    written = []
    with fresh_output(dst, mode, is_dir=False, recognise=hdf5_not_ours) as tmp:
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
                g.attrs["factors"] = json_factors(ep.factors)
                specs = ep.extra_specs
                g.attrs["extras"] = json.dumps(specs)
                for name, arr in (("pixels", ep.pixels), *ep.extras.items()):
                    if name == "pixels" or is_camera(specs[name]):
                        g.create_dataset(name, data=arr, chunks=(1,) + arr.shape[1:], compression="gzip", compression_opts=4)
                    else:
                        g.create_dataset(name, data=arr)
                for name in ("action", "state", "reward", "terminated", "truncated"):
                    g.create_dataset(name, data=getattr(ep, name))
                f.attrs["state_dtype"] = ep.state.dtype.name
                f.attrs["action_dtype"] = ep.action.dtype.name
                written.append(int(eid))
    return written


def swm_hdf5_source(path: Path) -> Source:
    """Open a stable-worldmodel HDF5 file (flat columns plus ep_len / ep_offset)."""
    h5py = h5py_module()
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
            ep_ids = repair_ids(f["episode_idx"][()][offsets] if len(offsets) else np.zeros(0), "episode_idx", str(path))
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
            return [str_attr(v) for v in d[start:stop].tolist()]
        return d[start:stop]

    def whole(name: str) -> Any:
        with h5py.File(path, "r") as f:
            d = f[name]
            return [str_attr(v) for v in d[()].tolist()] if kinds[name] == "string" else d[()]

    def close() -> None:
        if "f" in handle:
            handle.pop("f").close()

    return flat_source("hdf5", path, FlatColumns(names, kinds, fetch, whole, close), ep_ids, offsets, lengths)
