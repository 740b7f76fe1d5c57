"""Reading an episode dataset: `open_dataset`, `EpisodeDataset`, `validate_dataset`.

On-disk layout of a dataset directory::

    PATH/
    ├── meta.json          written once, atomically, at creation:
    │                      {schema_version, format, codec, image_shape [H, W, 3],
    │                       action_dim, action_dtype, state_dim, state_shape, state_dtype,
    │                       extras, env_id,
    │                       frameskip (env steps per row: 1), fps, created_by,
    │                       codec_options (h264 only: gop, crf, preset, pix_fmt,
    │                       lossless, encoder, profile, ...; data/video.py)}
    ├── steps.lance/       one row per observation (an episode of N actions = N+1 rows)
    │     episode_id  int64
    │     step        int32                      0 .. length-1 within the episode
    │     pixels      fixed_size_list<uint8>[H*W*3]   (codec "raw")
    │                 binary, one JPEG/PNG per frame  (codec "jpeg" / "png")
    │                 binary, codec "h264": an H.264 group of codec_options.gop
    │                   frames in the row of its first frame (step k*gop), empty
    │                   values on the group's other rows (data/video.py)
    │     action      fixed_size_list<float32 (or the native dtype)>[A]  action taken at this row (zeros on the last)
    │     state       fixed_size_list<float64|float32|float16>[S]  flat; meta state_shape gives its shape
    │     reward      float32                    received on arriving here (0 on row 0)
    │     terminated  bool                       only ever true on the last row
    │     truncated   bool                       only ever true on the last row
    │     extra_<name>  optional extra observations (meta "extras": dtype, shape); uint8 (H, W, 3)
    │                   ones are extra cameras, stored like pixels with the dataset's codec
    ├── episodes.lance/    one row per committed episode
    │     episode_id  int64
    │     env_id      string
    │     seed        int64
    │     factors     struct<...>                typed from the first episode; vectors list<double>
    │     policy      string
    │     length      int32                      number of rows (frames) of the episode
    │     split       string
    └── writer.lock        held (flock) by the one open EpisodeWriter

An episode exists for readers only once its episodes row is committed; step rows of
an episode without one (left by a crash between the two commits) are "orphans":
invisible, reported by `info()["orphan_steps"]`, deleted by the next writer.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import columns as C
from .codecs import GROUPED_CODECS, arrow_frames, decode_arrow
from .errors import DatasetError
from .schema import EXTRA_PREFIX, SCHEMA_VERSION, FORMAT, factors_from_row, is_camera, meta_steps_schema, schema_differences

_META_KEYS = ("schema_version", "codec", "image_shape", "action_dim", "state_dim", "env_id")


def read_meta(path: str | os.PathLike) -> dict:
    """Read and check `PATH/meta.json`; raises DatasetError naming the path and the problem."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset (the path does not exist)")
    if not path.is_dir():
        raise DatasetError(f"{path}: not a dataset (a file, expected a directory holding {C.META_FILE}, {C.STEPS_TABLE}, {C.EPISODES_TABLE})")
    meta_path = path / C.META_FILE
    if not meta_path.exists():
        raise DatasetError(f"{path}: not a dataset (no {C.META_FILE}; expected {C.META_FILE}, {C.STEPS_TABLE}, {C.EPISODES_TABLE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{meta_path}: unreadable ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DatasetError(f"{meta_path}: not a worldmodel dataset (format {meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise DatasetError(f"{meta_path}: missing keys {missing}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise DatasetError(
            f"{path}: schema_version {meta['schema_version']!r} is not supported by this code (supports {SCHEMA_VERSION})"
        )
    return meta


def read_video_options(meta: dict, path: str | os.PathLike) -> Any:
    """The `data.video.VideoOptions` of an h264 dataset's meta (None for other codecs);
    DatasetError naming the path when ``codec_options`` is missing or invalid."""
    if meta.get("codec") not in GROUPED_CODECS:
        return None
    from .video import VideoOptions

    if "codec_options" not in meta:
        raise DatasetError(f"{path}: {C.META_FILE} of an {meta['codec']} dataset has no codec_options (gop, crf, ...)")
    try:
        return VideoOptions.from_meta(meta["codec_options"])
    except ValueError as e:
        raise DatasetError(f"{path}: {C.META_FILE}: invalid codec_options ({e})") from None


def _open_table(path: Path, name: str):
    import lance

    uri = path / name
    if not uri.is_dir():
        raise DatasetError(f"{path}: missing table {name}")
    try:
        return lance.dataset(str(uri))
    except Exception as e:  # lance raises plain ValueError/OSError flavours
        raise DatasetError(f"{path}: cannot open table {name} ({e})") from e


def file_problems(path: Path, name: str, table: Any) -> list[str]:
    """Data files of Lance `table` (``PATH/name``) that are missing or whose size differs
    from the size its manifest recorded (a truncated or overwritten file); cheap: one
    ``stat`` per file, no data read."""
    out = []
    for frag in table.get_fragments():
        for f in frag.metadata.files:
            expected = getattr(f, "file_size_bytes", None)
            file = path / name / "data" / f.path
            try:
                size = file.stat().st_size
            except OSError:
                out.append(f"{name}: data file data/{f.path} is missing (fragment {frag.fragment_id})")
                continue
            if expected and size != expected:
                out.append(f"{name}: data file data/{f.path} is {size} bytes, its manifest says {expected} "
                           f"(truncated or overwritten; fragment {frag.fragment_id})")
    return out


def _unreadable(path: Path, name: str, table: Any, err: Exception) -> DatasetError:
    """A DatasetError naming the dataset and, when the files explain it, which file is damaged."""
    try:
        found = file_problems(path, name, table)
    except Exception:  # the manifest itself is unusable: the original error says more
        found = []
    what = "; ".join(found[:3]) if found else f"{name}: {err}"
    return DatasetError(f"{path}: cannot read the dataset: {what} (wm data validate {path} lists every problem)")


class _StepIndex:
    """Where each committed episode's rows are in the steps table.

    `rows` (N,) int64: table offsets of the committed rows, sorted by (episode_id, step);
    episode k (sorted by id) owns `rows[start[k] : start[k] + count[k]]`.
    """

    def __init__(self, steps_ds, episode_ids: np.ndarray, lengths: np.ndarray, path: Path | None = None):
        try:
            tbl = steps_ds.to_table(columns=[C.EPISODE_ID, C.STEP])
        except Exception as err:  # a damaged data file: Lance's raw error does not name the dataset
            if path is None:
                raise
            raise _unreadable(path, C.STEPS_TABLE, steps_ds, err) from err
        eid = tbl.column(C.EPISODE_ID).to_numpy()
        step = tbl.column(C.STEP).to_numpy()
        order = np.argsort(episode_ids, kind="stable")
        self.episode_ids = episode_ids[order]
        self.lengths = lengths[order].astype(np.int64)
        committed = np.isin(eid, self.episode_ids)
        self.orphan_steps = int((~committed).sum())
        rows = np.flatnonzero(committed)
        rows = rows[np.lexsort((step[rows], eid[rows]))]
        self.rows = rows.astype(np.int64)
        self.row_episode = eid[rows]
        self.row_step = step[rows].astype(np.int64)
        self.start = np.searchsorted(self.row_episode, self.episode_ids, side="left").astype(np.int64)
        self.count = np.searchsorted(self.row_episode, self.episode_ids, side="right").astype(np.int64) - self.start

    def position(self, episode_id: int) -> int:
        """Index k of `episode_id` in the sorted episode ids; KeyError if not committed."""
        k = int(np.searchsorted(self.episode_ids, episode_id))
        if k >= len(self.episode_ids) or self.episode_ids[k] != episode_id:
            raise KeyError(episode_id)
        return k

    def problems(self) -> list[str]:
        out = []
        bad = np.flatnonzero(self.count != self.lengths)
        for k in bad[:10]:
            out.append(f"episode {int(self.episode_ids[k])}: {int(self.count[k])} step rows, its length says {int(self.lengths[k])}")
        if len(bad) > 10:
            out.append(f"... and {len(bad) - 10} more episodes with a wrong number of rows")
        # step numbers must be 0..count-1 within each episode (sorted, so no gaps/duplicates)
        k_of_row = np.repeat(np.arange(len(self.episode_ids)), self.count)
        expected = np.arange(len(self.rows)) - np.repeat(self.start, self.count)
        wrong = np.unique(k_of_row[self.row_step != expected])
        for k in wrong[:10]:
            out.append(f"episode {int(self.episode_ids[k])}: step numbers are not contiguous 0..{int(self.lengths[k]) - 1}")
        if len(wrong) > 10:
            out.append(f"... and {len(wrong) - 10} more episodes with non-contiguous steps")
        return out


class EpisodeDataset:
    """A read-only view of one episode dataset (see the module docstring for the layout).

    Opened with `open_dataset(path)`. Sees the versions of both tables at open time.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta: dict = read_meta(self.path)
        self._steps = _open_table(self.path, C.STEPS_TABLE)
        self._episodes = _open_table(self.path, C.EPISODES_TABLE)
        for col in (C.EPISODE_ID, C.STEP, C.PIXELS):
            if self._steps.schema.get_field_index(col) < 0:
                raise DatasetError(f"{self.path}: table {C.STEPS_TABLE} has no column {col!r}")
        for col in C.EPISODE_COLUMNS:
            if self._episodes.schema.get_field_index(col) < 0:
                raise DatasetError(f"{self.path}: table {C.EPISODES_TABLE} has no column {col!r}")
        try:
            expected = meta_steps_schema(self.meta)
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{self.path}: {C.META_FILE} does not describe a valid steps schema ({e})") from None
        diffs = schema_differences(expected, self._steps.schema)
        if diffs:
            raise DatasetError(f"{self.path}: table {C.STEPS_TABLE} does not match {C.META_FILE}: " + "; ".join(diffs))
        self.video_options = read_video_options(self.meta, self.path)
        """`data.video.VideoOptions` of an h264 dataset (meta ``codec_options``), None for other codecs."""

    def __repr__(self) -> str:
        return f"EpisodeDataset({str(self.path)!r}, episodes={self.num_episodes}, codec={self.codec!r}, image_shape={tuple(self.image_shape)})"

    # -- meta shortcuts ---------------------------------------------------------------
    @property
    def codec(self) -> str:
        return self.meta["codec"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.meta["image_shape"])  # type: ignore[return-value]

    @property
    def action_dim(self) -> int:
        return int(self.meta["action_dim"])

    @property
    def state_dim(self) -> int:
        return int(self.meta["state_dim"])

    # -- episodes ---------------------------------------------------------------------
    @cached_property
    def _episode_rows(self) -> list[dict]:
        try:
            rows = self._episodes.to_table().to_pylist()
        except Exception as err:
            raise _unreadable(self.path, C.EPISODES_TABLE, self._episodes, err) from err
        rows.sort(key=lambda r: r[C.EPISODE_ID])
        return rows

    def episodes(self) -> list[dict]:
        """One dict per committed episode, sorted by id: episode_id, env_id, seed, factors, policy, length, split."""
        out = []
        for r in self._episode_rows:
            d = {k: r[k] for k in C.EPISODE_COLUMNS}
            d[C.FACTORS] = factors_from_row(r[C.FACTORS])
            out.append(d)
        return out

    def success_steps(self) -> dict[int, int | None]:
        """Episode id -> the first row at which the env reported success (-1: never; None:
        not recorded, e.g. a converted dataset or one written before the column existed)."""
        return {int(r[C.EPISODE_ID]): r.get(C.SUCCESS_STEP) for r in self._episode_rows}

    def success_summary(self) -> dict[str, Any]:
        """What the recorded success steps say: ``recorded`` (episodes with one), ``succeeded``,
        ``continued_after_success`` (episodes with rows after their first success, i.e.
        collected on to a fixed length) and ``first_success_step`` (min/mean/max or None)."""
        rows = [r for r in self._episode_rows if r.get(C.SUCCESS_STEP) is not None]
        steps = [int(r[C.SUCCESS_STEP]) for r in rows if r[C.SUCCESS_STEP] >= 0]
        return {
            "recorded": len(rows),
            "succeeded": len(steps),
            "continued_after_success": sum(1 for r in rows if 0 <= r[C.SUCCESS_STEP] < r[C.LENGTH] - 1),
            "first_success_step": {"min": min(steps), "mean": round(float(np.mean(steps)), 2), "max": max(steps)} if steps else None,
        }

    @property
    def num_episodes(self) -> int:
        return len(self._episode_rows)

    @cached_property
    def index(self) -> _StepIndex:
        """Row index of the committed episodes (built on first use from episode_id/step only)."""
        index = self._raw_index()
        problems = index.problems()
        if problems:
            raise DatasetError(f"{self.path}: episodes are not contiguous: " + "; ".join(problems[:3]) + " (wm data validate lists all)")
        return index

    def _raw_index(self) -> _StepIndex:
        ids = np.array([r[C.EPISODE_ID] for r in self._episode_rows], dtype=np.int64)
        lengths = np.array([r[C.LENGTH] for r in self._episode_rows], dtype=np.int64)
        ids, first = np.unique(ids, return_index=True)
        return _StepIndex(self._steps, ids, lengths[first], self.path)

    @property
    def num_steps(self) -> int:
        """Rows (observations) of the committed episodes; orphan rows are not counted."""
        return int(self.index.count.sum())

    def load_episode(self, episode_id: int, columns: Sequence[str] | None = None, decode_threads: int = 1) -> dict[str, np.ndarray]:
        """All rows of one committed episode as numpy arrays (T rows = N actions + 1).

        Returns `pixels (T, H, W, 3) uint8`, `action (T, A)` in its stored dtype (float32
        for collected data), `state (T, *state_shape)` in its stored float dtype, `reward
        (T,) float32`, `terminated (T,) bool`, `truncated (T,) bool`, and every extra
        observation under its name (T, *shape); only the keys in ``columns`` when given
        (e.g. ``("state",)`` decodes no frames). `decode_threads`: h264 groups decoded in
        parallel (the frames do not depend on it).
        """
        idx = self.index
        try:
            k = idx.position(int(episode_id))
        except KeyError:
            raise KeyError(f"episode {episode_id} is not in {self.path} ({self.num_episodes} episodes)") from None
        rows = idx.rows[idx.start[k] : idx.start[k] + idx.count[k]]
        return self._take(rows, columns, episode_id=int(episode_id), decode_threads=decode_threads)

    @property
    def extras(self) -> dict[str, dict]:
        """Extra per-step observations: ``name -> {"dtype", "shape"}`` (column ``extra_<name>``)."""
        return dict(self.meta.get("extras") or {})

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one state (stored flat; ``(state_dim,)`` for most envs)."""
        return tuple(int(x) for x in (self.meta.get("state_shape") or [self.state_dim]))

    def _take(self, rows: np.ndarray, columns: Sequence[str] | None = None, episode_id: int | None = None,
              decode_threads: int = 1) -> dict[str, np.ndarray]:
        """Columns of table `rows`; h264 frames need `rows` to be one whole episode
        (`episode_id`) in step order."""
        extras = self.extras
        all_cols = [C.PIXELS, C.ACTION, C.STATE, C.REWARD, C.TERMINATED, C.TRUNCATED, *extras]
        cols = all_cols if columns is None else list(columns)
        unknown = sorted(set(cols) - set(all_cols))
        if unknown:
            raise ValueError(f"unknown episode columns {unknown}; expected a subset of {all_cols}")
        uniq, inverse = np.unique(rows, return_inverse=True)
        tbl = self._steps.take(uniq.tolist(), columns=[EXTRA_PREFIX + c if c in extras else c for c in cols])
        out: dict[str, np.ndarray] = {}
        grouped: dict[str, np.ndarray] = {}  # h264 frames, decoded in `rows` order
        if self.video_options is not None:  # pixels and extra cameras
            cams = [(C.PIXELS, "pixels", self.image_shape)] if C.PIXELS in cols else []
            cams += [(EXTRA_PREFIX + n, n, sp["shape"]) for n, sp in extras.items() if n in cols and is_camera(sp)]
            for column, key, shape in cams:
                grouped[key] = self._decode_groups(tbl.column(column), inverse, shape, episode_id, column, decode_threads)
        if C.PIXELS in cols and "pixels" not in grouped:
            out["pixels"] = decode_arrow(tbl.column(C.PIXELS), self.codec, self.image_shape)
        for name, key, shape in ((C.ACTION, "action", (-1,)), (C.STATE, "state", self.state_shape)):
            if name in cols:
                col = tbl.column(name).combine_chunks()
                out[key] = col.flatten().to_numpy(zero_copy_only=False).reshape((len(col), *shape))
        for name, spec in extras.items():
            if name in cols and name not in grouped:
                col = tbl.column(EXTRA_PREFIX + name).combine_chunks()
                if is_camera(spec):
                    out[name] = decode_arrow(col, self.codec, spec["shape"])
                else:
                    out[name] = col.flatten().to_numpy(zero_copy_only=False).reshape((len(col), *spec["shape"]))
        for name in (C.REWARD, C.TERMINATED, C.TRUNCATED):
            if name in cols:
                out[name] = tbl.column(name).to_numpy()
        if not np.array_equal(uniq, rows):
            out = {k: v[inverse] for k, v in out.items()}
        out.update(grouped)
        order = ["pixels", "action", "state", *extras, "reward", "terminated", "truncated"]
        return {k: np.ascontiguousarray(out[k]) for k in order if k in out}

    def _decode_groups(self, column: Any, inverse: np.ndarray, shape: Sequence[int], episode_id: int | None,
                       name: str, threads: int) -> np.ndarray:
        """Frames uint8 (T, *shape) of one episode's h264 `column` (values of the distinct
        rows, `inverse` putting them in step order)."""
        from .video import decode_episode

        if episode_id is None:
            raise ValueError(f"{self.path}: h264 frames are read one whole episode at a time (load_episode)")
        values = arrow_frames(column, self.codec, shape)
        return decode_episode([values[i] for i in inverse], shape, self.video_options,
                              where=f"{self.path}: episode {episode_id} {name}", threads=threads)

    # -- summary ----------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Summary: episodes, steps, codec, codec_options (h264 settings, else None),
        image_shape, action_dim, state_dim, env_id, schema_version, size_bytes,
        bytes_per_frame (size_bytes / steps), pixel_bytes_per_frame (bytes Lance stores
        for the pixels column per stored row, from its files' metadata; None if unknown),
        splits and policies (counts), success (`success_summary`), orphan_steps,
        fragments, fps, frameskip, created_by, and factor distributions per split
        (`factor_summary`)."""
        eps = self._episode_rows
        size = _dir_size(self.path)
        steps = self.num_steps
        pixel_bytes = column_bytes(self._steps, C.PIXELS)
        stored_rows = self._steps.count_rows()
        return {
            "path": str(self.path),
            "episodes": len(eps),
            "steps": steps,
            "codec": self.codec,
            "codec_options": self.meta.get("codec_options"),
            "image_shape": list(self.image_shape),
            "action_dim": self.action_dim,
            "state_dim": self.state_dim,
            "state_dtype": self.meta.get("state_dtype", "float64"),
            "env_id": self.meta["env_id"],
            "schema_version": self.meta["schema_version"],
            "size_bytes": size,
            "bytes_per_frame": round(size / steps, 1) if steps else None,
            "pixel_bytes_per_frame": round(pixel_bytes / stored_rows, 1) if pixel_bytes is not None and stored_rows else None,
            "splits": dict(Counter(r[C.SPLIT] for r in eps)),
            "policies": dict(Counter(r[C.POLICY] for r in eps)),
            "success": self.success_summary(),
            "orphan_steps": self.index.orphan_steps,
            "fragments": len(self._steps.get_fragments()),
            "fps": self.meta.get("fps"),
            "frameskip": self.meta.get("frameskip", 1),
            "created_by": self.meta.get("created_by"),
            "factors": self.factor_summary(),
        }

    def factor_summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Factor distributions per split: ``{split: {factor: {"min", "mean", "max"}}}``.

        Scalars give numbers, vectors (colours) per-component lists.
        """
        by_split: dict[str, list[dict]] = {}
        for ep in self.episodes():
            by_split.setdefault(str(ep[C.SPLIT]), []).append(ep[C.FACTORS])
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for split, rows in sorted(by_split.items()):
            names = sorted({k for r in rows for k in r})
            stats = {}
            for name in names:
                vals = [r[name] for r in rows if r.get(name) is not None]
                try:
                    arr = np.asarray(vals, dtype=np.float64)
                except (TypeError, ValueError):
                    continue  # a non-numeric factor: no distribution
                if arr.size == 0:
                    continue
                stats[name] = {k: np.round(f(arr, axis=0), 6).tolist() for k, f in (("min", np.min), ("mean", np.mean), ("max", np.max))}
            out[split] = stats
        return out


def column_bytes(table: Any, column: str) -> int | None:
    """Bytes Lance stores for `column` of Lance `table`: the sizes of its pages' buffers,
    from each data file's metadata (no data read; deleted rows still count). None when a
    file's metadata cannot be read or does not list the column."""
    try:
        from lance.file import LanceFileReader

        root = str(table.uri).removeprefix("file://")
        field_id = table.lance_schema.field(column).id()
        total = 0
        for frag in table.get_fragments():
            for f in frag.metadata.files:
                if field_id not in f.fields:
                    continue
                col = f.column_indices[f.fields.index(field_id)]
                meta = LanceFileReader(os.path.join(root, "data", f.path)).metadata()
                total += sum(b.size for page in meta.columns[col].pages for b in page.buffers)
        return total
    except Exception:  # a remote table, another file layout: unknown, not an error
        return None


def _dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def open_dataset(path: str | os.PathLike) -> EpisodeDataset:
    """Open the episode dataset at `path`; raises DatasetError if it is not one."""
    return EpisodeDataset(path)


def validate_dataset(path: str | os.PathLike) -> list[str]:
    """Check a dataset; returns a list of problems (empty = sound).

    Checks: meta readable, table schemas match meta, every data file present with the
    size its manifest recorded and readable, no duplicate episode ids, every
    committed episode's rows exist and are steps 0..length-1. Orphan step rows (from a
    crash between the two commits of an episode) are invisible and not a problem.
    """
    try:
        ds = open_dataset(path)
    except DatasetError as e:
        return [str(e)]
    problems = []
    for col in C.EPISODE_COLUMNS:
        if ds._episodes.schema.get_field_index(col) < 0:
            problems.append(f"{C.EPISODES_TABLE}: column {col!r} missing")
    if problems:
        return problems
    for name, table in ((C.STEPS_TABLE, ds._steps), (C.EPISODES_TABLE, ds._episodes)):
        try:
            table.validate()
        except Exception as e:
            problems.append(f"{name}: lance validation failed ({e})")
        problems.extend(file_problems(ds.path, name, table))
    if problems:
        return problems
    try:
        ds._episode_rows
        index = ds._raw_index()
    except DatasetError as e:
        return problems + [str(e)]
    ids = np.array([r[C.EPISODE_ID] for r in ds._episode_rows], dtype=np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    for eid in uniq[counts > 1][:10]:
        problems.append(f"episode id {int(eid)} appears {int(counts[uniq == eid][0])} times in {C.EPISODES_TABLE}")
    bad_len = [r[C.EPISODE_ID] for r in ds._episode_rows if r[C.LENGTH] is None or r[C.LENGTH] < 1]
    for eid in bad_len[:10]:
        problems.append(f"episode {eid}: length must be >= 1")
    env_ids = {r[C.ENV_ID] for r in ds._episode_rows}
    if ds.meta["env_id"] is not None and env_ids - {ds.meta["env_id"]}:
        problems.append(f"episodes with env_id {sorted(map(str, env_ids - {ds.meta['env_id']}))} in a dataset of {ds.meta['env_id']!r}")
    problems.extend(index.problems())
    return problems
