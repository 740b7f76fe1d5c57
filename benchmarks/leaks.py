"""No evaluation on episodes a checkpoint has seen, unless asked for by name.

Training records the episodes it trained and validated on (`worldmodel.episode_record`,
a side file of the checkpoint). An evaluation episode has been seen when

  (a) it is in the training dataset itself (same folder, resolved) under an id the run
      trained or validated on, holding the same recorded rollout (a dataset overwritten
      since with other episodes is not the one trained on), or
  (b) it is the same rollout as a recorded episode, wherever it is stored: the same env
      id, seed, policy, split and factor values (an episode collected with the same seed,
      policy and factors is the same episode, whatever its frame size or codec).

Episodes without a recorded seed (some converted datasets) can only be recognised by (a).
`check_train_episodes` refuses pairs drawn from seen episodes (`TrainEpisodesError`)
unless ``allow`` (``wm eval --allow-train-episodes``), in which case the summary says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

ALLOW_FLAG = "--allow-train-episodes"
SHOWN_IDS = 8  # episode ids named in an error before "... (N in all)"


class TrainEpisodesError(ValueError):
    """Evaluation pairs come from episodes the checkpoint trained or validated on."""


def checkpoint_record(trained_on: dict | None) -> dict | None:
    """The episode record of the checkpoint `benchmarks.planning.checkpoint_data` describes
    (it names the checkpoint and whether one is recorded); None when there is none.

    Raises:
        worldmodel.checkpoint.CheckpointError: a record is named but missing or altered.
    """
    if not trained_on or not trained_on.get("checkpoint") or not trained_on.get("episodes"):
        return None
    from worldmodel.checkpoint import load_episode_record

    return load_episode_record(trained_on["checkpoint"])


def seen_in_dataset(record: dict, dataset: Any) -> dict[int, str]:
    """The episodes of ``dataset`` that the record's run trained or validated on.

    Args:
        record: an episode record (`worldmodel.episode_record`).
        dataset: an opened ``data.EpisodeDataset`` (its episodes table is read, no frames).

    Returns:
        ``{episode id in dataset: how it was seen}``, e.g. ``"training episode 3 of this
        dataset"`` or ``"the same rollout (seed 3, policy 'expert', split 'default', same
        factors) as training episode 3 of runs/train.lance"``.
    """
    from worldmodel.episode_record import episode_identity, seen_episodes

    role_name = {"train": "training", "val": "validation"}
    real = os.path.realpath(dataset.path)
    seen = seen_episodes(record)
    same = {s.episode_id: s for s in seen if s.realpath == real}
    by_rollout = {}
    for s in seen:
        key = s.rollout_key()
        if key is not None:
            by_rollout.setdefault(key, s)
    env_id = dataset.meta.get("env_id")
    out: dict[int, str] = {}
    for ep in dataset.episodes():
        eid, seed, policy, split, factors = episode_identity(ep)
        s = same.get(eid)
        if s is not None and (s.seed, s.policy, s.split, s.factors) == (seed, policy, split, factors):
            out[eid] = f"{role_name[s.role]} episode {eid} of this dataset"
            continue
        s = by_rollout.get((ep.get("env_id") or env_id, seed, policy, split, factors)) if seed is not None else None
        if s is not None:
            out[eid] = (f"the same rollout (seed {seed}, policy {policy!r}, split {split!r}, same factors) as "
                        f"{role_name[s.role]} episode {s.episode_id} of {s.path}")
    return out


def _ids_text(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > SHOWN_IDS else "")


def check_train_episodes(record: dict | None, dataset: Any, episode_ids: Sequence[int], allow: bool = False,
                         what: str = "start/goal pairs") -> tuple[dict, list[str]]:
    """Refuse evaluation items (pairs) drawn from episodes the checkpoint has seen.

    Call it before any planning, once the items are drawn.

    Args:
        record: the checkpoint's episode record (`checkpoint_record`); None: not recorded
            (an older checkpoint), which gives a note instead of a check.
        dataset: the opened evaluation ``data.EpisodeDataset``.
        episode_ids: (P,) the episode id of each item, in order.
        allow: evaluate on seen episodes anyway (``--allow-train-episodes``).
        what: what the items are called in messages.

    Returns:
        ``(summary keys, notes)``: ``allow_train_episodes`` (``allow``),
        ``train_overlap_pairs`` (items from seen episodes; None without a record) and
        ``train_overlap_episode_ids`` (their sorted distinct episode ids; None without a
        record); notes say what could not be checked or that seen episodes were allowed.

    Raises:
        TrainEpisodesError: some item comes from a seen episode and ``allow`` is False; the
        message names the episode ids (the first few and their count) and ``--allow-train-episodes``.
    """
    from worldmodel.episode_record import seen_episodes

    ids = [int(i) for i in episode_ids]
    if record is None:
        note = ("the checkpoint does not record the episodes it trained on (an older checkpoint): evaluation on "
                "training episodes could not be ruled out")
        return {"allow_train_episodes": bool(allow), "train_overlap_pairs": None, "train_overlap_episode_ids": None}, [note]
    seen = seen_in_dataset(record, dataset)
    hits = [i for i in ids if i in seen]
    overlap = sorted(set(hits))
    notes: list[str] = []
    if hits and not allow:
        n_seen = len(seen)
        raise TrainEpisodesError(
            f"{len(hits)} of the {len(ids)} {what} come from episodes the checkpoint trained or validated on: "
            f"episodes {_ids_text(overlap)} of {dataset.path} (episode {overlap[0]}: {seen[overlap[0]]}; "
            f"{n_seen} of the dataset's {dataset.num_episodes} episodes were seen). Evaluate on held-out episodes "
            f"(collected with seeds training did not use, e.g. wm collect --seed 1000000), or pass {ALLOW_FLAG} "
            f"to evaluate on them anyway (the summary then says so)"
        )
    if hits:
        notes.append(f"{len(hits)} of the {len(ids)} {what} come from episodes the checkpoint trained or validated "
                     f"on (episodes {_ids_text(overlap)}), evaluated anyway ({ALLOW_FLAG})")
    recorded_here = any(s.realpath == os.path.realpath(dataset.path) for s in seen_episodes(record))
    if not recorded_here:  # in a dataset training read, an unseeded episode is still compared by id
        seeds = {int(e["episode_id"]): e.get("seed") for e in dataset.episodes()}
        unseeded = sum(1 for i in ids if seeds.get(i) is None)
        if unseeded:
            notes.append(f"{unseeded} of the {len(ids)} {what} come from episodes without a recorded seed: they could "
                         "not be compared with the training episodes (a seed, policy, split and factors identify the "
                         "same rollout in another dataset)")
    return {"allow_train_episodes": bool(allow), "train_overlap_pairs": len(hits),
            "train_overlap_episode_ids": overlap}, notes

