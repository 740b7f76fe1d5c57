"""Evaluation conditions: the factors (and goal source) under which start/goal pairs are drawn.

``wm eval --env ID --split NAME --severity K --factor NAME=VALUE --goal-source random``
evaluates a checkpoint under a condition instead of on a given dataset: it collects the
start/goal episodes for that condition itself (`collect_condition_pairs`) and plans on
them under the standard protocol. The episodes:

- come from the env's scripted expert (``goal_source="expert"``, the default) or from
  uniformly random actions (``"random"``: stable-worldmodel's goal-source shift, where
  goals are states a random walk reaches rather than states an expert passes through);
- use seeds from `EVAL_SEED_BASE` on, disjoint from the seeds training data is collected
  with (0.., and the held-out 1,000,000.. of ``wm demo``), the same seeds for every
  condition, so conditions differ in their factors and not in their start layouts (another
  first seed, ``--pair-seed``, draws other episodes: apart from pairs a recipe was chosen on);
- record the factors each episode ran with, which every planned episode restores
  exactly at reset (`benchmarks.planning.run_episodes` resets with the pair's factors).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the first seed of condition episodes (training data: 0.., held-out data of ``wm demo``: 1,000,000..)
EVAL_SEED_BASE = 2_000_000


def check_pair_seed(seed: Any) -> int:
    """`seed` as the first seed of condition episodes: a non-negative integer, else a ValueError naming it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"pair seed {seed!r}: expected a non-negative integer (the first seed of the condition's "
                         f"start/goal episodes; default {EVAL_SEED_BASE:,})")
    return seed


#: the policies start/goal episodes can come from
GOAL_SOURCES = ("expert", "random")

#: the file beside a pairs dataset that says which condition it was collected for
CONDITION_FILE = "condition.json"


@dataclass(frozen=True)
class EvalCondition:
    """A factor condition for start/goal pairs.

    Args:
        split: factor split sampled per episode (``envs.factors.SPLITS``: train, ood,
            ood_visual, ood_geometry, ood_physics, ood_all); None: the env's default factors.
        severity: OOD severity 1..3 (OOD splits only).
        factors: factors fixed in every episode on top of the split's draw, ``{name: value}``.
        ood_factors: factors drawn from their OOD ranges (at `severity`) in every episode,
            the others following `split` (a one-factor-at-a-time shift).
        goal_source: ``"expert"`` or ``"random"``: the policy whose episodes give the pairs.
    """

    split: str | None = None
    severity: int | None = None
    factors: Mapping[str, Any] = field(default_factory=dict)
    goal_source: str = "expert"
    ood_factors: tuple[str, ...] = ()

    def check(self, env_id: str) -> "EvalCondition":
        """This condition with its factors validated for `env_id`, or a clear error.

        Raises:
            UnknownSplitError (closest split named), ValueError (severity not 1..3, or
            without an OOD split; unknown goal source), UnknownFactorError (closest
            factor named), FactorOutOfRange (a value outside every range of its factor).
        """
        import envs
        from envs.factors import SPLITS, UnknownSplitError, _suggest, check_severity

        if self.split is not None and self.split not in SPLITS:
            raise UnknownSplitError(
                f"unknown split {self.split!r}; valid splits: {list(SPLITS)}{_suggest(str(self.split), SPLITS)}"
            )
        if self.severity is not None:
            check_severity(self.severity)
            if (self.split is None or self.split == "train") and not self.ood_factors:
                raise ValueError(f"severity={self.severity!r} needs an OOD split (e.g. --split ood_visual) or "
                                 f"--ood-factor, got split={self.split!r}")
        if self.goal_source not in GOAL_SOURCES:
            raise ValueError(f"goal source {self.goal_source!r}: expected one of {', '.join(GOAL_SOURCES)}")
        space = envs.factor_space(env_id)
        fixed = {name: space[name].validate(value) for name, value in dict(self.factors).items()}
        shifted = tuple(space[name].name for name in self.ood_factors)  # UnknownFactorError naming the closest
        if len(set(shifted)) != len(shifted) or set(shifted) & set(fixed):
            raise ValueError(f"ood_factors {list(shifted)}: each factor at most once, and not also fixed by --factor")
        return EvalCondition(self.split, self.severity, fixed, self.goal_source, shifted)

    def label(self) -> str:
        """A short name: ``default``, ``train``, ``ood_visual@2``, ``factor:door_width@2`` (an OOD
        factor), ``door_width=0.3``, ``goal_source:random``, or several joined by ``+``."""
        parts = []
        sev = f"@{self.severity}" if self.severity is not None else ""
        if self.split is not None:
            parts.append(self.split + (sev if self.split != "train" else ""))
        parts += [f"factor:{name}{sev}" for name in self.ood_factors]
        for name, value in self.factors.items():
            parts.append(f"{name}={_fmt(value)}")
        if self.goal_source != "expert":
            parts.append(f"goal_source:{self.goal_source}")
        return "+".join(parts) or "default"

    def to_dict(self) -> dict:
        """JSON-serialisable form (vectors as lists)."""
        return {
            "split": self.split,
            "severity": self.severity,
            "factors": {k: list(v) if isinstance(v, tuple) else v for k, v in self.factors.items()},
            "goal_source": self.goal_source,
            "ood_factors": list(self.ood_factors),
            "label": self.label(),
        }


def _fmt(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(f"{float(x):g}" for x in value)
    return f"{float(value):g}"


def pair_episodes(episodes: int) -> int:
    """Episodes collected for `episodes` start/goal pairs: one pair per episode, plus a margin
    (20%, at least 2) for starts already within the success radius, which are rejected."""
    return episodes + max(2, math.ceil(0.2 * episodes))


#: the most episodes `plan_on_condition` collects for N pairs: this many times `pair_episodes(N)`
MAX_PAIR_EPISODE_FACTOR = 8


def plan_on_condition(
    evaluate: Callable[[Any], dict],
    env_id: str,
    condition: EvalCondition,
    out: str | os.PathLike,
    episodes: int,
    resolution: int,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    seed: int = EVAL_SEED_BASE,
) -> dict:
    """``evaluate(dataset)`` on the start/goal episodes of `condition`, collecting more of them
    while they give too few pairs.

    Collects `pair_episodes(episodes)` episodes of seeds ``seed..`` (`collect_condition_pairs`) and returns
    `evaluate`'s summary. Where the episodes cannot give `episodes` pairs (`evaluate` raises
    `benchmarks.protocol.TooFewPairsError`: random-action Cube episodes whose cube never
    moves start almost every pair already at its goal), the dataset is grown to twice as
    many episodes (seeds continuing) and `evaluate` called again, up to
    `MAX_PAIR_EPISODE_FACTOR` times the first count.

    Raises:
        benchmarks.protocol.TooFewPairsError: still too few pairs from that many episodes
            (its message says how many were collected); `collect_condition_pairs`'s errors.
    """
    from benchmarks.protocol import TooFewPairsError

    first = pair_episodes(episodes)
    n = first
    while True:
        dataset = collect_condition_pairs(env_id, condition, out, episodes, resolution, seed=seed, progress=progress,
                                          log=log, collect_episodes=n)
        n = len(dataset.episodes())  # a dataset grown by an earlier run is evaluated whole
        try:
            return evaluate(dataset)
        except TooFewPairsError as err:
            if n >= MAX_PAIR_EPISODE_FACTOR * first:
                raise TooFewPairsError(f"{err} (from {n} episodes of condition {condition.label()!r}, "
                                       f"{MAX_PAIR_EPISODE_FACTOR}x the {first} collected for {episodes} pairs)") from err
            n = min(2 * n, MAX_PAIR_EPISODE_FACTOR * first)
            if log:
                log(f"too few start/goal pairs for condition {condition.label()!r} ({err}): "
                    f"growing its episodes to {n}")


def collect_condition_pairs(
    env_id: str,
    condition: EvalCondition,
    out: str | os.PathLike,
    episodes: int,
    resolution: int,
    seed: int = EVAL_SEED_BASE,
    workers: int = 1,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    collect_episodes: int | None = None,
) -> Any:
    """Collect (or reuse) the start/goal episodes of `condition` into the dataset `out`.

    Collects `collect_episodes` (default `pair_episodes(episodes)`) episodes of `env_id` at
    `resolution` with the condition's policy, split, severity and fixed factors, seeds
    ``seed..``, running to the env's time limit, and writes `CONDITION_FILE` beside them. A
    dataset already at `out` that was collected for the same env, condition, resolution and
    seed is reused as it is when it holds at least as many episodes, and otherwise grown by
    the missing ones (seeds continuing where it stopped: the same episodes as collecting
    them all at once; the ones already written are not touched); one whose collection by
    this function was interrupted (its marker says ``"complete": false``) is collected again.

    Returns:
        the opened `data.EpisodeDataset`.

    Raises:
        ValueError: `out` holds another condition's episodes or anything else (nothing is
            overwritten), `episodes` < 1; the errors of `EvalCondition.check`.
    """
    from data import collect, open_dataset

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes={episodes!r}: expected a positive integer")
    check_pair_seed(seed)
    condition = condition.check(env_id)
    out = Path(out)
    want = {"env_id": env_id, "condition": condition.to_dict(), "resolution": int(resolution), "seed": int(seed)}
    n = pair_episodes(episodes) if collect_episodes is None else int(collect_episodes)
    if n < 1:
        raise ValueError(f"collect_episodes={collect_episodes!r}: expected a positive integer")
    marker = out.parent / f"{out.name}.{CONDITION_FILE}"
    recorded = json.loads(marker.read_text()) if marker.is_file() else None
    if out.exists() and recorded is not None and recorded.get("complete") is False and \
            {k: recorded.get(k) for k in want} == want:  # this function's own collection, interrupted: start again
        shutil.rmtree(out)
    if out.exists():
        if recorded is None or {k: recorded.get(k) for k in want} != want:
            raise ValueError(
                f"{out} exists but was not collected for condition {condition.label()!r} of {env_id} "
                f"(resolution {resolution}, seeds {seed}..): choose another --out, or remove it"
            )
        ds = open_dataset(out)
        have = len(ds.episodes())
        if have >= n:
            if log:
                log(f"reusing the {have} episodes of condition {condition.label()!r} in {out}")
            return ds
    else:
        have = 0
    if log:
        seeds = f"seeds {seed + have}..{seed + n - 1}, {n} in all" if have else f"seeds {seed}.."
        log(f"collecting {n - have}{' more' if have else ''} {condition.goal_source} episodes of {env_id} under "
            f"condition {condition.label()!r} ({seeds}) into {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**want, "episodes": n, "complete": False}, indent=2) + "\n")
    collect(
        env_id, n - have, out, policy=condition.goal_source, split=condition.split, severity=condition.severity,
        factors=dict(condition.factors) or None, ood_factors=list(condition.ood_factors) or None, seed=seed + have,
        mode="append" if have else "error", progress=progress, workers=workers, resolution=int(resolution),
    )
    marker.write_text(json.dumps({**want, "episodes": n, "complete": True}, indent=2) + "\n")
    return open_dataset(out)
