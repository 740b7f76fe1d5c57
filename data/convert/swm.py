"""``swm-lance`` (read only) and stable-worldmodel HDF5: flat per-step tables.

A stable-worldmodel Lance table (``NAME.lance/``, or a folder holding one) has flat rows
with ``episode_idx``/``step_idx`` (int32, or coerced to float32 scalars /
``fixed_size_list<float32>[1]``), JPEG ``pixels`` (binary), and every other column as
``fixed_size_list<float32>[k]``; its HDF5 files hold the same columns plus ``ep_len`` (E,)
and ``ep_offset`` (E,) (read by `hdf5.swm_hdf5_source` through `flat_source`). Mapping:

- ids are repaired to int64 (an error if any is not integral);
- ``pixels`` -> frames (JPEG bytes kept as is; else the first image column);
- ``action``; ``state`` (else ``proprio``); ``reward``/``terminated``/``truncated`` when present;
  ``seed`` -> seed;
- rows: the current writer stores an episode of N steps as N + 1 rows aligned on
  observations, the store's own convention, with a NaN reward on the first row and a NaN
  action on the last; these become 0 and zeros (`align_steps`; listed in ``lossy`` as a
  realignment). Its 0.1.1 writer's N rows without NaN pass unchanged;
- every other image column (goal images, more cameras) -> an extra camera;
- every other numeric column that is constant within every episode -> a factor
  (``variation_`` prefix dropped; size-1 lists become scalars); one that varies -> an
  extra observation in its dtype (dropped, and listed in ``lossy``, if it holds NaN/inf,
  which the store refuses); string columns that vary are dropped and listed;
- a sibling ``NAME_episodes.lance`` table adds per-episode columns as factors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .episode import Episode, Source, decode_blobs, make_episode, safe_name, str_attr
from .fields import ACTION_KEYS, REWARD_KEYS, STATE_KEYS, TERMINATED_KEYS, TRUNCATED_KEYS
from .frames import encoded_shape, sniff_codec
from .lerobot import arrow_values

_FLOAT32_EXACT_INT = 2**24  # float32 holds every integer up to here exactly


def repair_ids(values: np.ndarray, name: str, where: str) -> np.ndarray:
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


class FlatColumns:
    """Per-step columns of a flat table: ``names``, ``kinds`` (image | string | number),
    ``fetch(name, start, stop)`` a row slice, ``whole(name)`` every row, ``close()``."""

    def __init__(self, names: list[str], kinds: dict[str, str], fetch: Callable[[str, int, int], Any],
                 whole: Callable[[str], Any], close: Callable[[], None] | None = None):
        self.names, self.kinds, self.fetch, self.whole = names, kinds, fetch, whole
        self.close = close or (lambda: None)


class _Varying:
    pass


_VARYING = _Varying()


def _constant(values: Any) -> Any:
    """The episode-constant value of a column slice as a factor value, or `_VARYING`."""
    if isinstance(values, list):  # strings
        vals = [str_attr(v) for v in values]
        return vals[0] if all(v == vals[0] for v in vals) else _VARYING
    arr = np.asarray(values)
    if arr.dtype.kind in "SUO":
        vals = [str_attr(v) for v in arr.reshape(-1).tolist()]
        return vals[0] if all(v == vals[0] for v in vals) else _VARYING
    arr = arr.reshape(len(arr), -1)
    if not (arr == arr[:1]).all():
        return _VARYING
    first = arr[0]
    if first.size == 1:
        v = first[0]
        return bool(v) if arr.dtype == bool else (int(v) if np.issubdtype(arr.dtype, np.integer) else float(v))
    return tuple(float(x) for x in first)


def flat_source(fmt: str, path: Path, cols: FlatColumns, ep_ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
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
    act = next((k for k in ACTION_KEYS if k in names), None)
    state = next((k for k in STATE_KEYS if k in names), None)
    for what, key, options in (("action", act, ACTION_KEYS), ("state", state, STATE_KEYS)):
        if key is None:
            raise ValueError(f"{path}: no {what} column (expected one of {', '.join(options)}); columns {names}")
    special = {pix, act, state, "episode_idx", "step_idx", "pixels_h", "pixels_w", "seed", "policy"}
    flags = {n: next((k for k in keys if k in names), None) for n, keys in (("reward", REWARD_KEYS), ("terminated", TERMINATED_KEYS), ("truncated", TRUNCATED_KEYS))}
    special |= {k for k in flags.values() if k}
    lossy: list[str] = []
    cameras = [n for n in names if n not in special and cols.kinds[n] == "image"]
    factor_cols, extra_cols, dropped = [], [], []
    for name in (n for n in names if n not in special and cols.kinds[n] != "image"):
        values = cols.whole(name)
        varies = any(_constant(values[int(s) : int(s) + int(n)]) is _VARYING for s, n in zip(starts, lengths))
        if not varies:
            factor_cols.append(name)
        elif cols.kinds[name] == "number" and np.isfinite(np.asarray(values, np.float64)).all():
            extra_cols.append(name)
        else:
            dropped.append(name)
    if dropped:
        lossy.append(f"columns {dropped} vary within episodes and are strings or hold NaN/inf: dropped")
    extra_names = {n: safe_name(n) for n in cameras + extra_cols}
    if len(set(extra_names.values())) != len(extra_names):
        raise ValueError(f"{path}: columns {sorted(extra_names)} give clashing extra names")
    order = {int(e): k for k, e in enumerate(ep_ids)}

    def read(ids: Sequence[int]) -> Iterator[Episode]:
        try:
            yield from read_episodes(ids)
        finally:
            cols.close()

    def camera(values: Any, where: str) -> dict[str, Any]:
        if isinstance(values, list):
            codec = sniff_codec(values[0], where)
            return {"pixels": None, "encoded": values, "encoded_codec": codec, "image_shape": encoded_shape(values[0], codec, where)}
        return {"pixels": values}

    def read_episodes(ids: Sequence[int]) -> Iterator[Episode]:
        for eid in ids:
            k = order[eid]
            s, n = int(starts[k]), int(lengths[k])
            where = f"{path} episode {eid}"
            if "step_idx" in names:
                steps = repair_ids(cols.fetch("step_idx", s, s + n), "step_idx", where)
                if not np.array_equal(steps, np.arange(n)):
                    raise ValueError(f"{where}: step_idx is not 0..{n - 1} in row order (got {steps[:8].tolist()}...)")
            seed = int(repair_ids(cols.fetch("seed", s, s + 1), "seed", where)[0]) if "seed" in names else None
            factors: dict[str, Any] = {}
            for name in factor_cols:
                factors[name.removeprefix("variation_")] = _constant(cols.fetch(name, s, s + n))
            factors.update((episode_meta or {}).get(int(eid), {}))
            extras = {}
            for name in cameras:
                got = camera(cols.fetch(name, s, s + n), where)
                extras[extra_names[name]] = got["pixels"] if got["pixels"] is not None else decode_blobs(
                    got["encoded"], got["encoded_codec"], got["image_shape"])
            for name in extra_cols:
                extras[extra_names[name]] = np.asarray(cols.fetch(name, s, s + n))
            opt = {key: (np.asarray(cols.fetch(col, s, s + n)).reshape(n, -1)[:, 0] if col else None) for key, col in flags.items()}
            action, opt["reward"], notes = align_steps(np.asarray(cols.fetch(act, s, s + n)).reshape(n, -1), opt["reward"], where)
            for key in ("terminated", "truncated"):
                bad = [] if opt[key] is None else np.flatnonzero(~np.isfinite(np.asarray(opt[key], np.float64)))
                if len(bad):  # NaN would silently read as True
                    raise ValueError(f"{where}: {key} at step {int(bad[0])} is {opt[key][bad[0]]!r} (expected 0 or 1)")
            ep = make_episode(where, **camera(cols.fetch(pix, s, s + n), where), action=action,
                              state=cols.fetch(state, s, s + n), **opt, extras=extras, episode_id=int(eid), seed=seed,
                              factors=factors, policy="stable-worldmodel")
            ep.notes.extend(notes)
            yield ep

    return Source(fmt, path, sorted(order), read, lossy=lossy, codec="jpeg" if fmt == "swm-lance" else None)


REALIGNED = "stable-worldmodel N + 1-row episodes realigned to the store's rows (N actions, N + 1 observations, the final one kept): "
REALIGNED_ACTION = REALIGNED + "the NaN action on each last row stored as zeros"
REALIGNED_REWARD = REALIGNED + "the NaN reward on each first row stored as 0"


def align_steps(action: np.ndarray, reward: np.ndarray | None, where: str) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Actions (T, A) and rewards (T,) of one episode of T rows in the store's row convention.

    stable-worldmodel's current writer stores an episode of N steps as N + 1 rows aligned
    on observations: row t holds the action taken at observation t (NaN on the last row,
    where none is taken) and the reward received on arriving there (NaN on row 0). That is
    the store's convention but for the NaNs: the last action row is dropped (the store
    pads zeros) and the first reward becomes 0. Its 0.1.1 writer's rows hold no NaN and
    pass unchanged. Any other non-finite action or reward is a ValueError naming the step.

    Returns ``(action (T, A) or (T - 1, A), reward (T,) or None, notes)``, notes naming
    each realignment made (`REALIGNED_ACTION`, `REALIGNED_REWARD`).
    """
    n = len(action)
    finite = np.isfinite(action.astype(np.float64))
    notes: list[str] = []
    if n > 0 and not finite[-1].any():
        action, finite = action[:-1], finite[:-1]  # no action at the last observation
        notes.append(REALIGNED_ACTION)
    bad = np.flatnonzero(~finite.all(axis=1))
    if len(bad):
        r = int(bad[0])
        raise ValueError(f"{where}: action at step {r} is {action[r].tolist()} (expected finite numbers)")
    if reward is not None:
        reward = np.asarray(reward, np.float64)
        if n > 0 and np.isnan(reward[0]):
            reward = np.concatenate([[0.0], reward[1:]])  # nothing is received before the first observation
            notes.append(REALIGNED_REWARD)
        bad = np.flatnonzero(~np.isfinite(reward))
        if len(bad):
            r = int(bad[0])
            raise ValueError(f"{where}: reward at step {r} is {reward[r]} (expected a finite number; only row 0 may be NaN, "
                             "as in stable-worldmodel's N + 1-row layout)")
    return action, reward, notes


def _is_lance_table(p: Path) -> bool:
    return p.is_dir() and ((p / "_versions").is_dir() or any(p.glob("_latest.manifest")))


def swm_table(p: Path) -> Path | None:
    """The stable-worldmodel Lance table at `p` (or the one inside folder `p`), else None."""
    if _is_lance_table(p):
        return p
    if p.is_dir():
        tables = [t for t in sorted(p.glob("*.lance")) if _is_lance_table(t) and not t.stem.endswith("_episodes")]
        if len(tables) == 1:
            return tables[0]
        if len(tables) > 1:
            raise ValueError(f"{p}: holds several Lance tables {[t.name for t in tables]}; pass the one to convert")
    return None


def swm_lance_source(path: Path) -> Source:
    """Open a stable-worldmodel Lance table (or a folder holding one)."""
    import lance
    import pyarrow as pa

    table = swm_table(path)
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
    eids = repair_ids(arrow_values(ds.to_table(columns=["episode_idx"]).column("episode_idx")), "episode_idx", str(table))
    ep_ids, starts, lengths = _runs(eids, str(table))

    def fetch(name: str, start: int, stop: int) -> Any:
        return arrow_values(ds.take(list(range(start, stop)), columns=[name]).column(name))

    def whole(name: str) -> Any:
        return arrow_values(ds.to_table(columns=[name]).column(name))

    episode_meta = None
    sidecar = table.parent / f"{table.stem}_episodes.lance"
    if _is_lance_table(sidecar):
        rows = lance.dataset(str(sidecar)).to_table()
        if "episode_idx" in rows.column_names:
            ids = repair_ids(arrow_values(rows.column("episode_idx")), "episode_idx", str(sidecar))
            episode_meta = {}
            other = [c for c in rows.column_names if c != "episode_idx"]
            vals = {c: arrow_values(rows.column(c)) for c in other}
            for k, eid in enumerate(ids.tolist()):
                meta = {}
                for c in other:
                    v = vals[c][k]
                    if isinstance(v, (bytes, bytearray)):
                        continue
                    meta[c.removeprefix("variation_")] = _constant(np.asarray([v])) if not isinstance(v, str) else v
                episode_meta[int(eid)] = meta
    src = flat_source("swm-lance", path, FlatColumns(schema.names, kinds, fetch, whole), ep_ids, starts, lengths, episode_meta)
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

