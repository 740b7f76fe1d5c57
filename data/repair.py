"""`repair_dataset` (``wm data repair``): mend a dataset whose step rows were committed
twice or only in part, keeping every whole episode.

What it fixes (what `validate_dataset` reports for such damage):

- step rows of an episode that appear more than once (the same ``(episode_id, step)``
  committed twice, e.g. by a writer interrupted between a commit and its book-keeping,
  before that was made impossible): one copy is kept when the copies are identical;
- episodes rows that appear more than once: one is kept when they are identical;
- step rows with a step number outside ``0 .. length - 1`` of their episode, and orphan
  step rows (no episodes row);
- an episode still missing some of its rows after that is not whole: its episodes row
  and its remaining rows are dropped (reported by id), as are episodes whose duplicated
  rows differ (there is no telling which copy is right).

Every whole episode is kept unchanged. Crash-safe: the writer lock is held, each table
changes in one atomic Lance commit (episodes first, then steps; an interruption between
them leaves a dataset that a second `repair_dataset` finishes), old versions are kept
(`wm data compact` removes them). A sound dataset is left untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import columns as C
from .dataset import EpisodeDataset, file_problems, read_meta
from .errors import DatasetError
from .interrupts import checkpoint, deferred_signals
from .writer import _lock, _unlock


def repair_dataset(path: str | os.PathLike) -> dict[str, Any]:
    """Repair the dataset at `path` in place (see the module docstring).

    Returns ``{"path", "changed" (bool), "duplicate_step_rows", "duplicate_episode_rows",
    "stray_step_rows" (orphans and out-of-range steps), "episodes_dropped" (ids of
    episodes that were not whole), "episodes" (kept), "notes" (one line per finding)}``.
    Raises `DatasetError` for damage it cannot mend (unreadable meta, damaged data
    files, a steps table that does not match meta), naming the path and the problem.
    """
    path = Path(path)
    read_meta(path)
    fd = _lock(path / C.LOCK_FILE)
    try:
        ds = EpisodeDataset(path)
        for name, table in ((C.STEPS_TABLE, ds._steps), (C.EPISODES_TABLE, ds._episodes)):
            damaged = file_problems(path, name, table)
            if damaged:
                raise DatasetError(f"{path}: cannot repair damaged data files: " + "; ".join(damaged[:3]))
        return _repair(path, ds)
    finally:
        _unlock(fd)


def _fragment_columns(table: Any, columns: list[str]) -> list[pa.Table]:
    return [frag.to_table(columns=columns) for frag in table.get_fragments()]


def _first_occurrence(keys: np.ndarray) -> np.ndarray:
    """Boolean mask of the first occurrence of each row of `keys` (N, k) in order."""
    if len(keys) == 0:
        return np.zeros(0, bool)
    _, first = np.unique(keys, axis=0, return_index=True)
    mask = np.zeros(len(keys), bool)
    mask[first] = True
    return mask


def _repair(path: Path, ds: EpisodeDataset) -> dict[str, Any]:
    notes: list[str] = []
    # -- episodes table: one row per id ------------------------------------------------
    ep_frags = _fragment_columns(ds._episodes, ds._episodes.schema.names)
    ep_all = pa.concat_tables(ep_frags) if ep_frags else ds._episodes.schema.empty_table()
    ep_ids = np.asarray(ep_all.column(C.EPISODE_ID).to_numpy(zero_copy_only=False), np.int64)
    ep_first = _first_occurrence(ep_ids[:, None])
    rows = ep_all.to_pylist()
    first_row = {int(ep_ids[i]): rows[i] for i in np.flatnonzero(ep_first)}
    differ_ep = sorted({int(ep_ids[i]) for i in np.flatnonzero(~ep_first) if rows[i] != first_row[int(ep_ids[i])]})
    dup_episode_rows = int((~ep_first).sum())
    if dup_episode_rows:
        notes.append(f"{dup_episode_rows} duplicated rows in {C.EPISODES_TABLE} (episodes {_ids(np.unique(ep_ids[~ep_first]))})")
    for e in differ_ep:
        notes.append(f"episode {e}: its duplicated {C.EPISODES_TABLE} rows differ; dropped (no telling which is right)")

    # -- steps table: first copy of each (episode, step) inside the episode's length ------
    st_frags = _fragment_columns(ds._steps, [C.EPISODE_ID, C.STEP])
    eid = np.concatenate([f.column(C.EPISODE_ID).to_numpy() for f in st_frags]).astype(np.int64) if st_frags else np.zeros(0, np.int64)
    step = np.concatenate([f.column(C.STEP).to_numpy() for f in st_frags]).astype(np.int64) if st_frags else np.zeros(0, np.int64)
    known = np.array(sorted(first_row), np.int64)
    length_of = np.array([int(first_row[int(k)][C.LENGTH] or 0) for k in known], np.int64)
    committed = np.isin(eid, known)
    row_len = np.zeros(len(eid), np.int64)
    row_len[committed] = length_of[np.searchsorted(known, eid[committed])]
    in_range = committed & (step >= 0) & (step < row_len)
    first = _first_occurrence(np.stack([eid, step], axis=1)) & in_range
    duplicate = in_range & ~first
    out_of_range = committed & ~in_range
    orphans = ~committed
    differ_st = [int(e) for e in np.unique(eid[duplicate]) if not _copies_identical(ds, eid, step, int(e))]
    for e in differ_st:
        notes.append(f"episode {e}: its duplicated step rows differ; dropped (no telling which copy is right)")
    have = np.bincount(np.searchsorted(known, eid[first]), minlength=len(known)) if len(known) else np.zeros(0, np.int64)
    not_whole = [int(k) for k, n, want in zip(known, have, length_of) if n != want]
    for e in not_whole:
        notes.append(f"episode {e}: {int(have[np.searchsorted(known, e)])} of its {int(length_of[np.searchsorted(known, e)])} "
                     f"step rows exist; dropped (not whole)")
    dropped = np.array(sorted(set(not_whole) | set(differ_ep) | set(differ_st)), np.int64)
    if duplicate.any():
        notes.append(f"{int(duplicate.sum())} duplicated step rows (episodes {_ids(np.unique(eid[duplicate]))})")
    if out_of_range.any():
        notes.append(f"{int(out_of_range.sum())} step rows past their episode's length (episodes {_ids(np.unique(eid[out_of_range]))})")

    keep_ep = ep_first & ~np.isin(ep_ids, dropped)
    keep_st = first & ~np.isin(eid, dropped)
    # orphan rows alone are harmless (invisible; the next writer deletes them): they change nothing by themselves
    changed = bool(dup_episode_rows or duplicate.any() or out_of_range.any() or len(dropped))
    if changed:
        if orphans.any():
            notes.append(f"{int(orphans.sum())} orphan step rows (no {C.EPISODES_TABLE} row) removed")
        with deferred_signals():  # each commit is atomic; deferring keeps Ctrl-C from becoming a Lance error
            _drop_rows(ds._episodes, ep_frags, keep_ep)
            checkpoint("repair:episodes")
            _drop_rows(ds._steps, st_frags, keep_st)
            checkpoint("repair:steps")
    return {
        "path": str(path),
        "changed": changed,
        "duplicate_step_rows": int(duplicate.sum()),
        "duplicate_episode_rows": dup_episode_rows,
        "stray_step_rows": int((out_of_range | orphans).sum()) if changed else int(out_of_range.sum()),
        "episodes_dropped": [int(e) for e in dropped],
        "episodes": int(keep_ep.sum()),
        "notes": notes,
    }


def _ids(ids: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:10])
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def _copies_identical(ds: EpisodeDataset, eid: np.ndarray, step: np.ndarray, episode: int) -> bool:
    """Whether every copy of each step row of `episode` equals its first copy (all columns)."""
    rows = np.flatnonzero(eid == episode)
    tbl = ds._steps.take(rows.tolist())
    steps = step[rows]
    seen: dict[int, int] = {}
    for k, s in enumerate(steps.tolist()):
        if s in seen:
            if not tbl.slice(k, 1).equals(tbl.slice(seen[s], 1)):
                return False
        else:
            seen[s] = k
    return True


def _drop_rows(table: Any, frags: list[pa.Table], keep: np.ndarray) -> None:
    """Rewrite the fragments of Lance `table` holding rows where `keep` (over the
    fragments' rows in order) is False, without those rows; one atomic ``Rewrite`` commit."""
    import lance
    from lance.fragment import write_fragments

    groups, start = [], 0
    for frag, cols in zip(table.get_fragments(), frags):
        mask = keep[start : start + len(cols)]
        start += len(cols)
        if mask.all():
            continue
        data = frag.to_table().filter(pa.array(mask)).combine_chunks()
        new = write_fragments(data, table.uri, schema=table.schema, max_rows_per_file=max(len(data), 1)) if len(data) else []
        groups.append(lance.LanceOperation.RewriteGroup([frag.metadata], new))
    if groups:
        lance.LanceDataset.commit(table.uri, lance.LanceOperation.Rewrite(groups, []), read_version=table.version)
