"""The standard planning protocol, as data.

A protocol says where start/goal pairs come from and how long the agent has. The
standard one (used by ``wm eval`` and ``wm demo``) draws pairs from the held-out
episodes of a dataset: the start is the state at a random step ``t`` of an episode
(before the episode's first recorded success, if any), the goal is the env's goal for
the state ``offset`` steps later in the same episode (``env.goal_from_state``), pairs
whose start is already within the success radius are rejected, no pair is used twice,
and the agent has ``budget`` env steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PlanningProtocol:
    """Start/goal source and step budget of a planning evaluation."""

    offset: int = field(default=25, metadata={"help": "goal = dataset state this many steps after the start"})
    budget: int = field(default=50, metadata={"help": "env steps the agent gets to reach the goal"})
    episodes: int = field(default=50, metadata={"help": "number of start/goal pairs evaluated"})
    seed: int = field(default=0, metadata={"help": "seed for pair sampling and the random baseline"})

    def __post_init__(self) -> None:
        for name in ("offset", "budget", "episodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")

    def to_dict(self) -> dict:
        """JSON-serialisable copy."""
        return dataclasses.asdict(self)


@dataclass
class StartGoalPair:
    """One evaluation task taken from a recorded episode."""

    episode_id: int
    start_step: int
    start_state: np.ndarray  # (S,) float64, a recorded state
    goal_state: np.ndarray  # float64, the env's goal layout (``goal_from_state`` of the state ``offset`` rows later)
    factors: dict
    seed: int


class TooFewPairsError(ValueError):
    """The data cannot give the protocol's number of distinct start/goal pairs (too few pairs at
    all, or too many of them starting already within the success radius)."""


def pair_candidates(dataset, protocol: PlanningProtocol) -> list[tuple[dict, int]]:
    """The episodes that can give start/goal pairs and how many start steps each has.

    Episode of L rows: starts ``t = 0 .. L - offset - 1`` (the goal row ``t + offset``
    must exist), and when the dataset recorded the episode's first success step s
    (``success_step``, see `data.EpisodeDataset.success_steps`), only starts before it
    (``t < s``): in an episode collected on past success, a later start is at the goal
    already. Returns ``[(episode dict, number of start steps > 0), ...]`` in id order;
    the total is the number of distinct pairs the dataset can give.
    """
    success = dataset.success_steps() if hasattr(dataset, "success_steps") else {}
    out = []
    for ep in dataset.episodes():
        n = int(ep["length"]) - protocol.offset
        s = success.get(int(ep["episode_id"]))
        if s is not None and s >= 0:
            n = min(n, int(s))
        if n > 0:
            out.append((ep, n))
    return out


def sample_pairs(dataset, protocol: PlanningProtocol, env) -> list[StartGoalPair]:
    """Draw ``protocol.episodes`` distinct start/goal pairs from a dataset's episodes.

    Episodes are visited in a seeded random order, each giving at most one pair per
    pass, at a random start step among its candidates (`pair_candidates`); a pair is
    never drawn twice. The goal is the env's goal for the recorded state ``offset``
    rows after the start (``env.unwrapped.goal_from_state``). A pair whose start already
    satisfies the env's success test is rejected.

    Args:
        dataset: an opened ``data.EpisodeDataset`` of the env's id.
        protocol: the protocol (offset, episodes, seed).
        env: an environment of the dataset's env id, used to map states to goals and
            to judge the success test at the start (reset with the pair's options).

    Returns:
        the list of pairs, of length ``protocol.episodes``.

    Raises:
        ValueError: the dataset's states do not fit the env; no episode is longer than
            ``protocol.offset`` steps; ``protocol.episodes`` is more than the distinct
            pairs the dataset has (the message gives their number), or than those left
            once the starts already at their goal are rejected.
    """
    base = env.unwrapped
    name = getattr(getattr(env, "spec", None), "id", None) or type(base).__name__
    state_dim = int(dataset.meta.get("state_dim", -1))
    if state_dim != base.state_dim:
        raise ValueError(
            f"{dataset.path} holds states of size {state_dim} (env {dataset.meta.get('env_id')!r}) but {name} "
            f"has states of size {base.state_dim}: the data comes from another environment"
        )
    candidates = pair_candidates(dataset, protocol)
    total = sum(n for _, n in candidates)
    where = f"{dataset.path} (offset={protocol.offset})"
    if not candidates:
        raise ValueError(
            f"no episode in {dataset.path} is longer than offset={protocol.offset} steps before its first success; "
            "collect longer episodes (wm collect runs them to the time limit unless --stop-on-success) or lower --offset"
        )
    if protocol.episodes > total:
        raise TooFewPairsError(
            f"episodes={protocol.episodes} is more than the {total} distinct start/goal pairs in {where}, "
            f"from {len(candidates)} episodes; pass --episodes {total} or fewer, or collect more held-out episodes"
        )
    rng = np.random.default_rng(protocol.seed)
    tried: list[set[int]] = [set() for _ in candidates]
    states_of: dict[int, np.ndarray] = {}
    pairs: list[StartGoalPair] = []
    rejected = 0
    order: list[int] = []
    while len(pairs) < protocol.episodes:
        if not order:
            open_ = [k for k, (_, n) in enumerate(candidates) if len(tried[k]) < n]
            if not open_:
                raise TooFewPairsError(
                    f"could only draw {len(pairs)} of {protocol.episodes} start/goal pairs from {where}: "
                    f"{rejected} of its {total} distinct pairs start already within the success radius; "
                    f"pass --episodes {len(pairs)} or fewer"
                )
            order = [open_[k] for k in rng.permutation(len(open_))]
        k = order.pop()
        ep, n = candidates[k]
        t = int(rng.integers(0, n))
        if t in tried[k]:  # never the same pair twice: take one of this episode's untried starts
            t = int(rng.choice(sorted(set(range(n)) - tried[k])))
        tried[k].add(t)
        eid = int(ep["episode_id"])
        if eid not in states_of:
            states_of[eid] = dataset.load_episode(eid, columns=("state",))["state"]
        states = states_of[eid]
        start = np.asarray(states[t], np.float64)
        goal = base.goal_from_state(states[t + protocol.offset])
        _, info = env.reset(
            seed=int(ep["seed"]), options={"factors": ep["factors"], "state": start, "goal_state": goal}
        )
        if info["success"]:
            rejected += 1
            continue
        pairs.append(
            StartGoalPair(
                episode_id=eid,
                start_step=t,
                start_state=start,
                goal_state=goal,
                factors=dict(ep["factors"]),
                seed=int(ep["seed"]),
            )
        )
    return pairs
