"""What a checkpoint has seen: the episodes it trained and validated on, compactly.

A training run records, per dataset it read, every training and validation episode's
identity: its id in that dataset and the rollout it is (env id, seed, policy, split,
factor values). ``wm eval`` compares the record with its evaluation data
(`benchmarks.leaks`): an episode with the same id in the same dataset, or one collected
anywhere with the same env id, seed, policy, split and factors (the same rollout: an
episode is a function of those), has been seen.

Layout (JSON, written beside the checkpoint by `worldmodel.checkpoint.save_episode_record`)::

    {"format": 1,
     "datasets": [
       {"path": "runs/train.lance",            as training was given it
        "realpath": "/abs/runs/train.lance",   resolved, what "the same dataset" compares
        "env_id": "wm/TwoRoom-v0",
        "policies": ["expert", "random"],      the strings runs index
        "splits": ["default"],
        "train": [RUN, ...],
        "val":   [RUN, ...]}]}

    RUN = [first_id, count, first_seed, policy_index, split_index, factors]
      episodes first_id .. first_id + count - 1 with seeds first_seed .. first_seed + count - 1
      (first_seed null: no seed recorded), one policy and one split; ``factors`` is one
      FACTOR_DIGEST_CHARS-character digest (`factors_digest`) shared by all of them, or
      count digests concatenated, one per episode.

10,000 episodes collected in one go with default factors take two runs; with factors
randomised per episode, about 90 kB.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RECORD_FORMAT = 1
FACTOR_DIGEST_CHARS = 8
ROLES = ("train", "val")


@dataclass(frozen=True)
class SeenEpisode:
    """One recorded episode: where it was (``path``, ``episode_id``) and which rollout it is."""

    path: str
    realpath: str
    role: str  # "train" | "val"
    episode_id: int
    env_id: str | None
    seed: int | None
    policy: str | None
    split: str | None
    factors: str  # `factors_digest` of its factor values

    def rollout_key(self) -> tuple | None:
        """``(env_id, seed, policy, split, factors)``; None without a seed (no rollout identity)."""
        return None if self.seed is None else (self.env_id, self.seed, self.policy, self.split, self.factors)


def _canonical(value: Any) -> Any:
    """Factor values in one spelling: numbers as floats to 6 significant digits (a float32
    round trip or an int/float difference is the same value), sequences as lists."""
    if value is None or isinstance(value, (bool, np.bool_, str)):
        return bool(value) if isinstance(value, np.bool_) else value
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(f"{float(value):.6g}")
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_canonical(v) for v in value]
    raise ValueError(f"factor value {value!r} of type {type(value).__name__}: expected numbers, strings or sequences")


def factors_digest(factors: Mapping[str, Any] | None) -> str:
    """A ``FACTOR_DIGEST_CHARS``-hex-character digest of an episode's factor values (``{}`` and None alike)."""
    text = json.dumps(_canonical(dict(factors or {})), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:FACTOR_DIGEST_CHARS]


def episode_identity(episode: Mapping[str, Any]) -> tuple[int, int | None, str | None, str | None, str]:
    """``(episode_id, seed, policy, split, factors digest)`` of a row of `data.EpisodeDataset.episodes()`."""
    seed = episode.get("seed")
    return (int(episode["episode_id"]), None if seed is None else int(seed), episode.get("policy"),
            episode.get("split"), factors_digest(episode.get("factors")))


def _encode_runs(rows: list[tuple], policies: list[str | None], splits: list[str | None]) -> list[list]:
    """Identity tuples sorted by id -> RUNs (see the module docstring); fills ``policies``/``splits``."""
    runs: list[list] = []
    digests: list[list[str]] = []
    for eid, seed, policy, split, digest in rows:
        if policy not in policies:
            policies.append(policy)
        if split not in splits:
            splits.append(split)
        p, s = policies.index(policy), splits.index(split)
        if runs:
            first, n, seed0, p0, s0, _ = runs[-1]
            next_seed = seed is None if seed0 is None else seed == seed0 + n
            if eid == first + n and next_seed and (p, s) == (p0, s0):
                runs[-1][1] += 1
                digests[-1].append(digest)
                continue
        runs.append([eid, 1, seed, p, s, None])
        digests.append([digest])
    for run, ds in zip(runs, digests):
        run[5] = ds[0] if len(set(ds)) == 1 else "".join(ds)
    return runs


def dataset_entry(path: str | os.PathLike, episodes: Sequence[Mapping[str, Any]], train_ids: Sequence[int],
                  val_ids: Sequence[int] = ()) -> dict:
    """One dataset's part of a record.

    Args:
        path: the dataset folder, as training was given it.
        episodes: its episode rows (`data.EpisodeDataset.episodes()`: episode_id, env_id,
            seed, policy, split, factors).
        train_ids, val_ids: the episode ids training and validation read.

    Raises:
        KeyError: an id that is not among ``episodes``.
    """
    by_id = {int(e["episode_id"]): e for e in episodes}
    entry: dict[str, Any] = {"path": str(path), "realpath": os.path.realpath(path), "env_id": None,
                             "policies": [], "splits": []}
    for role, ids in (("train", train_ids), ("val", val_ids)):
        rows = []
        for eid in sorted({int(i) for i in ids}):
            if eid not in by_id:
                raise KeyError(f"episode {eid} is not in {path} ({len(by_id)} episodes)")
            ep = by_id[eid]
            entry["env_id"] = entry["env_id"] or ep.get("env_id")
            rows.append(episode_identity(ep))
        entry[role] = _encode_runs(rows, entry["policies"], entry["splits"])
    return entry


def episode_record(path: str | os.PathLike, train_ids: Sequence[int], val_ids: Sequence[int] = ()) -> dict:
    """The record (module docstring) of a run that trained on ``train_ids`` and validated on
    ``val_ids`` of the dataset at ``path`` (its episodes table is read; no frames)."""
    from data import open_dataset  # lazy: the data layer pulls in Lance

    ds = open_dataset(path)
    entry = dataset_entry(path, ds.episodes(), train_ids, val_ids)
    entry["env_id"] = entry["env_id"] or ds.meta.get("env_id")
    return {"format": RECORD_FORMAT, "datasets": [entry]}


def seen_episodes(record: Mapping[str, Any]) -> list[SeenEpisode]:
    """Every episode a record holds, decoded.

    Raises:
        ValueError: not a record of format `RECORD_FORMAT`, or a malformed run (named).
    """
    if not isinstance(record, Mapping) or record.get("format") != RECORD_FORMAT:
        got = record.get("format") if isinstance(record, Mapping) else type(record).__name__
        raise ValueError(f"not an episode record of format {RECORD_FORMAT} (format {got!r})")
    out: list[SeenEpisode] = []
    for entry in record.get("datasets") or []:
        policies, splits = entry.get("policies") or [], entry.get("splits") or []
        for role in ROLES:
            for run in entry.get(role) or []:
                try:
                    first, n, seed0, p, s, factors = run
                    first, n = int(first), int(n)
                    if n < 1 or not isinstance(factors, str) or len(factors) not in (FACTOR_DIGEST_CHARS, n * FACTOR_DIGEST_CHARS):
                        raise ValueError("its count and factor digests do not fit")
                    digests = [factors] * n if len(factors) == FACTOR_DIGEST_CHARS else [
                        factors[k * FACTOR_DIGEST_CHARS:(k + 1) * FACTOR_DIGEST_CHARS] for k in range(n)]
                    policy, split = policies[p], splits[s]
                except (TypeError, ValueError, IndexError) as err:
                    raise ValueError(f"malformed {role} run {run!r} of {entry.get('path')} in the episode record: {err}") from None
                for k in range(n):
                    out.append(SeenEpisode(entry.get("path"), entry.get("realpath"), role, first + k, entry.get("env_id"),
                                           None if seed0 is None else int(seed0) + k, policy, split, digests[k]))
    return out


def record_counts(record: Mapping[str, Any]) -> dict[str, int]:
    """``{"train": episodes, "val": episodes}`` over every dataset of a record."""
    counts = {role: 0 for role in ROLES}
    for entry in record.get("datasets") or []:
        for role in ROLES:
            counts[role] += sum(int(run[1]) for run in entry.get(role) or [])
    return counts


def merge_records(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict:
    """The union of two records (a resumed run keeps what it saw before): per dataset (by
    realpath), the ids of each role joined; an episode both trained and validated on stays
    in both."""
    if not old:
        return dict(new)
    by_path: dict[str, dict[str, dict[int, tuple]]] = {}
    meta: dict[str, tuple[str, str | None]] = {}
    for ep in seen_episodes(old) + seen_episodes(new):
        meta[ep.realpath] = (ep.path, ep.env_id)
        by_path.setdefault(ep.realpath, {r: {} for r in ROLES})[ep.role][ep.episode_id] = (
            ep.episode_id, ep.seed, ep.policy, ep.split, ep.factors)
    datasets = []
    for realpath, roles in by_path.items():
        path, env_id = meta[realpath]
        entry: dict[str, Any] = {"path": path, "realpath": realpath, "env_id": env_id, "policies": [], "splits": []}
        for role in ROLES:
            rows = [roles[role][i] for i in sorted(roles[role])]
            entry[role] = _encode_runs(rows, entry["policies"], entry["splits"])
        datasets.append(entry)
    return {"format": RECORD_FORMAT, "datasets": datasets}


def record_of_datasets(train: Any, val: Any = None) -> dict | None:
    """The record of training windows ``train`` and held-out ones ``val`` (objects with the
    ``path`` and ``episode_ids`` of a `data.WindowDataset`); None when ``train`` has neither
    (a dataset made otherwise: nothing can be recorded)."""
    if getattr(train, "path", None) is None or getattr(train, "episode_ids", None) is None:
        return None
    train_path = Path(train.path)
    val_ids = getattr(val, "episode_ids", None) if val is not None else None
    val_path = getattr(val, "path", None)
    if val_ids is None or val_path is None:
        return episode_record(train_path, list(train.episode_ids))
    if os.path.realpath(val_path) == os.path.realpath(train_path):
        return episode_record(train_path, list(train.episode_ids), list(val_ids))
    return merge_records(episode_record(train_path, list(train.episode_ids)),
                         episode_record(Path(val_path), [], list(val_ids)))
