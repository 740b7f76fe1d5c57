"""Scripted collection policies: a (noisy) expert, a tour expert and a uniform random policy.

A policy is built for one env with `make_policy`, seeded with ``reset(seed)`` and called
as ``policy(obs, info) -> float32 (action_dim,)``. Its randomness comes only from its
own `np.random.Generator`, never from the env's.

``"expert-tour"`` (envs with a ``tour_expert``, e.g. TwoRoom) heads for target after target
of its own drawing and never stops: the long, goal-free episodes that long-horizon
start/goal pairs are taken from (``offset`` 100 needs episodes past the time limit, see
`data.collect`'s ``max_steps``). It does not pursue the episode's goal
(``pursues_env_goal = False``), so its episodes record no first success.
"""

from __future__ import annotations

import difflib
import importlib
import math
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

POLICIES: tuple[str, ...] = ("expert", "expert-tour", "random")
DEFAULT_EXPERT_NOISE = 0.3
"""Std of the Gaussian action noise of the ``"expert"`` policy unless ``noise`` is given."""


class Policy(Protocol):
    """What `make_policy` returns."""

    def reset(self, seed: int | None = None) -> None:
        """Re-seed the policy's generator and clear per-episode state."""

    def __call__(self, obs: np.ndarray, info: dict) -> np.ndarray:
        """Action for the current step, float32 (action_dim,)."""


class RandomPolicy:
    """Actions drawn uniformly from the env's (bounded) Box action space."""

    def __init__(self, env: gym.Env) -> None:
        """Read the action bounds of `env`."""
        space = env.action_space
        if not isinstance(space, gym.spaces.Box) or not np.all(np.isfinite(space.low) & np.isfinite(space.high)):
            raise ValueError(f"the random policy needs a bounded Box action space, got {space}")
        self.low = space.low.astype(np.float64)
        self.high = space.high.astype(np.float64)
        self._rng = np.random.default_rng()

    def reset(self, seed: int | None = None) -> None:
        """Re-seed the generator."""
        self._rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray, info: dict) -> np.ndarray:
        """A uniform action, float32 (action_dim,)."""
        return self._rng.uniform(self.low, self.high).astype(np.float32)


def into_box(action: np.ndarray) -> np.ndarray:
    """`action` scaled down, direction kept, until every component is in [-1, 1]; same shape."""
    peak = float(np.max(np.abs(action)))
    return action / peak if peak > 1.0 else action


class ScriptedExpert:
    """Base of the scripted experts: bound to ``env.unwrapped``, with its own noise generator.

    A subclass computes a clean action and returns ``self._finish(action)``: Gaussian
    noise of std `noise` added, clipped to [-1, 1], float32.
    """

    def __init__(self, env: gym.Env, noise: float = DEFAULT_EXPERT_NOISE) -> None:
        """Bind to `env` (read through ``env.unwrapped``)."""
        self.env: Any = env.unwrapped
        self.noise = float(noise)
        self._rng = np.random.default_rng()

    def reset(self, seed: int | None = None) -> None:
        """Re-seed the noise generator."""
        self._rng = np.random.default_rng(seed)

    def _finish(self, action: np.ndarray) -> np.ndarray:
        """`action` (A,) plus the noise, clipped to [-1, 1], float32 (A,)."""
        if self.noise > 0.0:
            action = action + self._rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class TwoRoomExpert(ScriptedExpert):
    """Steers the TwoRoom agent to its goal, through the door when needed.

    Each step it picks a target by line of sight (so it needs no memory and recovers
    from any position, the doorway included):

    1. the goal, if the straight path to it clears every wall;
    2. else the *exit* waypoint (x = 0.5 +/- `WAYPOINT_OFFSET` on the goal's side, at the
       door's centre line), if that path is clear;
    3. else, inside the doorway, the door's centre line (a vertical move);
    4. else the *entry* waypoint, the mirror of the exit one on the agent's side
       (always in sight: rooms are convex).

    The action is the unit direction to the target (scaled down when the target is
    closer than one step) plus Gaussian noise of std `noise`, clipped to [-1, 1].
    """

    WAYPOINT_OFFSET = 0.1
    CLEARANCE = 0.005  # margin inside the door span for paths that cross the whole doorway

    def target(self) -> tuple[float, float]:
        """The point the expert heads for now (world units)."""
        from envs.two_room import AGENT_RADIUS, MIDDLE, WALL_THICKNESS

        env = self.env
        pos, goal = env.state, self.destination()
        if self._clear(pos, goal):
            return float(goal[0]), float(goal[1])
        lo, hi = env.door_span()
        door_y = 0.5 * (lo + hi)
        side = 1.0 if goal[0] >= MIDDLE else -1.0
        exit_wp = np.array([MIDDLE + side * self.WAYPOINT_OFFSET, door_y])
        if self._clear(pos, exit_wp):
            return float(exit_wp[0]), door_y
        if abs(pos[0] - MIDDLE) < WALL_THICKNESS / 2 + AGENT_RADIUS:  # in the doorway
            return float(pos[0]), door_y
        return MIDDLE - side * self.WAYPOINT_OFFSET, door_y

    def destination(self) -> np.ndarray:
        """Where the expert is going, float64 (2,): the episode's goal."""
        return self.env.goal_state

    def _clear(self, a: np.ndarray, b: np.ndarray) -> bool:
        """True if the agent can move straight from a to b without touching the middle wall.

        The only obstacles inside the outer walls are the two halves of the middle wall,
        so a segment is clear iff, wherever it is inside the doorway strip (the middle wall
        expanded by the agent radius), its y lies in the door span. Rooms are convex, so a
        segment between two points of one room is always clear. Between two points outside
        the strip the span is narrowed by `CLEARANCE`, to keep off the wall corners.
        """
        from envs.two_room import AGENT_RADIUS, MIDDLE, WALL_THICKNESS

        half = WALL_THICKNESS / 2 + AGENT_RADIUS
        ax, ay, bx, by = float(a[0]), float(a[1]), float(b[0]), float(b[1])
        a_in, b_in = abs(ax - MIDDLE) < half, abs(bx - MIDDLE) < half
        if not a_in and not b_in and (ax < MIDDLE) == (bx < MIDDLE):
            return True
        lo, hi = self.env.door_span()
        m = 0.0 if (a_in or b_in) else self.CLEARANCE
        ys = [y for y, inside in ((ay, a_in), (by, b_in)) if inside]
        if ax != bx:
            for face in (MIDDLE - half, MIDDLE + half):
                if min(ax, bx) <= face <= max(ax, bx):
                    ys.append(ay + (face - ax) / (bx - ax) * (by - ay))
        return all(lo + m <= y <= hi - m for y in ys)

    def __call__(self, obs: np.ndarray, info: dict) -> np.ndarray:
        """Action toward the current target, float32 (2,)."""
        tx, ty = self.target()
        pos = self.env.state
        vx, vy = tx - float(pos[0]), ty - float(pos[1])
        dist = math.hypot(vx, vy)
        step = self.env.agent_speed
        if dist > 0.0:
            scale = min(1.0, dist / step) / dist
            action = np.array([vx * scale, vy * scale])
        else:
            action = np.zeros(2)
        return self._finish(action)


class TwoRoomTourExpert(TwoRoomExpert):
    """Tours TwoRoom: steers like `TwoRoomExpert` to a target of its own and, each time the
    agent centre comes within `REACH` of it, draws the next one and goes on, never stopping.

    Targets are drawn from the policy's own generator (seeded by ``reset(seed)``: the same
    seed gives the same tour) with the env's goal distribution (`TwoRoomEnv.draw_goal`: the
    other room with probability 0.8, at least 0.25 away), the first one at the first call.
    The episode's own goal is ignored (``pursues_env_goal = False``), so the env's success
    flag means nothing for its episodes and `data.collect` records no first success for
    them: every step of a tour can start a long-horizon pair. ``targets_reached`` counts the
    targets reached since the last reset.
    """

    REACH = 0.06  # = envs.two_room.SUCCESS_RADIUS: a target counts as reached as a goal would
    pursues_env_goal = False

    def __init__(self, env: gym.Env, noise: float = DEFAULT_EXPERT_NOISE) -> None:
        """Bind to `env` (read through ``env.unwrapped``)."""
        super().__init__(env, noise)
        self._target: np.ndarray | None = None
        self.targets_reached = 0

    def reset(self, seed: int | None = None) -> None:
        """Re-seed the generator (noise and targets) and forget the current target."""
        super().reset(seed)
        self._target = None
        self.targets_reached = 0

    def destination(self) -> np.ndarray:
        """The current target, float64 (2,) (drawn at the first call of an episode)."""
        if self._target is None:
            self._target = self.env.draw_goal(self.env.state, self._rng)
        return self._target

    def __call__(self, obs: np.ndarray, info: dict) -> np.ndarray:
        """Action toward the current target (the next one once it is reached), float32 (2,)."""
        pos = self.env.state
        target = self.destination()
        if math.hypot(float(pos[0] - target[0]), float(pos[1] - target[1])) < self.REACH:
            self.targets_reached += 1
            self._target = self.env.draw_goal(pos, self._rng)
        return super().__call__(obs, info)


def make_policy(name: str, env: gym.Env, noise: float | None = None) -> Policy:
    """Build the policy `name` (one of `POLICIES`: ``"expert"``, ``"expert-tour"``, ``"random"``) for `env`.

    The expert comes from the env class: ``env.unwrapped.make_expert(env, noise)``; the tour
    expert from its ``tour_expert`` (``"module:Class"``; envs without one refuse it).

    ``noise`` is the std of the experts' Gaussian action noise (default
    `DEFAULT_EXPERT_NOISE`; 0 gives the clean expert); the random policy ignores it.

    Raises:
        ValueError: an unknown name (the closest one suggested), a bad noise, an env
            without the expert asked for.
    """
    if name not in POLICIES:
        close = difflib.get_close_matches(str(name), POLICIES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown policy {name!r}; valid policies: {list(POLICIES)}{hint}")
    if noise is not None and (not math.isfinite(float(noise)) or float(noise) < 0.0):
        raise ValueError(f"noise={noise!r}: expected a finite std >= 0")
    if name == "random":
        return RandomPolicy(env)
    if name == "expert-tour":
        path = getattr(env.unwrapped, "tour_expert", "")
        if not path:
            raise ValueError(f"no tour expert (policy 'expert-tour') for {type(env.unwrapped).__name__} (envs with one "
                             "name it in their tour_expert class attribute, e.g. TwoRoom); use 'expert' or 'random'")
        module, _, cls = path.partition(":")
        return getattr(importlib.import_module(module), cls)(env, DEFAULT_EXPERT_NOISE if noise is None else float(noise))
    make_expert = getattr(env.unwrapped, "make_expert", None)
    if make_expert is None:
        raise ValueError(f"no expert policy for {type(env.unwrapped).__name__}; use policy 'random'")
    return make_expert(env, DEFAULT_EXPERT_NOISE if noise is None else float(noise))
