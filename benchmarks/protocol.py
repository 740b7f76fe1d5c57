"""The standard planning protocol, as data.

A protocol says where start/goal pairs come from and how long the agent has. The
standard one (used by ``wm eval`` and ``wm demo``) draws pairs from the held-out
episodes of a dataset: the start is the state at a random step ``t`` of an episode,
the goal is the state ``offset`` steps later in the same episode, pairs whose start is
already within the success radius are rejected, and the agent has ``budget`` env steps.
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
    start_state: np.ndarray  # (S,) float64
    goal_state: np.ndarray  # (S,) float64
    factors: dict
    seed: int


def sample_pairs(dataset, protocol: PlanningProtocol, env) -> list[StartGoalPair]:
    """Draw ``protocol.episodes`` start/goal pairs from a dataset's episodes.

    Episodes are visited in a seeded random order, each giving at most one pair
    while there are enough of them (then they are reused with new start steps). A
    pair whose start already satisfies the env's success test is rejected.

    Args:
        dataset: an opened ``data.EpisodeDataset``.
        protocol: the protocol (offset, episodes, seed).
        env: an environment of the dataset's env id, used only to judge the
            success test at the start (``set_state``/``set_goal``).

    Returns:
        the list of pairs, of length ``protocol.episodes``.

    Raises:
        ValueError: if no episode is longer than ``protocol.offset`` steps.
    """
    rng = np.random.default_rng(protocol.seed)
    episodes = [ep for ep in dataset.episodes() if ep["length"] > protocol.offset]
    if not episodes:
        raise ValueError(
            f"no episode in {dataset.path} is longer than offset={protocol.offset} steps; "
            "collect longer episodes or lower --offset"
        )
    pairs: list[StartGoalPair] = []
    attempts = 0
    order: list[int] = []
    while len(pairs) < protocol.episodes:
        attempts += 1
        if attempts > 100 * protocol.episodes:
            raise ValueError(
                f"could only draw {len(pairs)} of {protocol.episodes} start/goal pairs from "
                f"{dataset.path}: most starts are already within the success radius"
            )
        if not order:
            order = list(rng.permutation(len(episodes)))
        ep = episodes[order.pop()]
        t = int(rng.integers(0, ep["length"] - protocol.offset))
        states = dataset.load_episode(ep["episode_id"], columns=("state",))["state"]
        start, goal = np.asarray(states[t], np.float64), np.asarray(states[t + protocol.offset], np.float64)
        _, info = env.reset(
            seed=int(ep["seed"]), options={"factors": ep["factors"], "state": start, "goal_state": goal}
        )
        if info["success"]:
            continue
        pairs.append(
            StartGoalPair(
                episode_id=int(ep["episode_id"]),
                start_step=t,
                start_state=start,
                goal_state=goal,
                factors=dict(ep["factors"]),
                seed=int(ep["seed"]),
            )
        )
    return pairs
