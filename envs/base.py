"""`WorldModelEnv`: the contract every ``wm/`` environment shares, written once.

An env subclasses `WorldModelEnv` and fills in only what is its own: the world
(`_apply_factors`), the dynamics (`_simulate`), the observation (`_observe`), how a
start and a goal are sampled and checked, and how far the goal is (`_progress`). The
base validates the constructor arguments and actions, runs ``reset`` (seed, options,
factors, start, goal) and ``step``, and builds ``info``, so the error messages, the
``info`` keys and the order in which the seeded generator is used are the same in
every env. The MuJoCo envs go through `envs.mujoco_common.MujocoEnv`.

Hooks, in the order ``reset`` calls them::

    _apply_factors(factors)        write validated factor values into the world
    _sample_start() / _check_state(value, name)
    _sample_goal(start) / _check_goal(value, name)
    _begin_episode(start, goal)    install them (default: `_write_goal`, `_write_state`)
    _observe()                     the frame, uint8 (resolution, resolution, 3)
    _progress()                    (goal_distance, success) for ``info``

and ``step`` calls ``_simulate(action)`` with the checked, clipped action.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.factors import FactorSpace, check_reset_options, factors_from_options, side_stream


def check_vector(value: Any, name: str, sizes: tuple[int, ...], finite: bool = True) -> np.ndarray:
    """`value` as a new float64 (n,) array with n in `sizes`, or ValueError naming `name`.

    With `finite` (default) a NaN or infinite component is an error too.
    """
    try:
        a = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected a float array of shape {_shapes(sizes)}") from None
    if a.ndim != 1 or a.shape[0] not in sizes:
        raise ValueError(f"{name}={value!r} has shape {a.shape}: expected shape {_shapes(sizes)}")
    if finite and not np.all(np.isfinite(a)):
        raise ValueError(f"{name}={value!r} is not finite")
    return a


def episode_key(rng: np.random.Generator) -> int:
    """The key of an episode's time-varying visuals (e.g. `envs.distractors`), an int in [0, 2**63).

    Drawn from a `side_stream` of `rng`, so `rng` is not advanced: taking it changes no
    factor, start or goal that a reset samples.
    """
    return int(side_stream(rng, 3).integers(0, 2**63))


def _shapes(sizes: tuple[int, ...]) -> str:
    return " or ".join(f"({n},)" for n in sizes)


class WorldModelEnv(gym.Env):
    """Base of the ``wm/`` environments: pixels in, a bounded Box action, typed factors.

    Args:
        resolution: image side in pixels (>= 8).
        render_mode: None or ``"rgb_array"``.

    - observation: ``uint8 (resolution, resolution, 3)``.
    - action: ``Box(-1, 1, (action_dim,), float32)``; `step` rejects a wrong shape or a
      non-finite value and clips the rest to the box.
    - ``info``: ``state`` (float64 (state_dim,)), ``goal_state``, ``success``,
      ``goal_distance`` and ``factors``, all copies; reward ``-goal_distance``,
      ``terminated = success``.
    - reset options: ``factors``, ``split``, ``severity`` (see `envs.factors`), ``state``
      and ``goal_state`` (checked by the env's `_check_state` / `_check_goal`).
    - `goal_from_state` maps a recorded state to the goal it stands for (what a
      planning protocol passes as ``goal_state``).

    Args (besides the above):
        terminate_on_success: True (default): ``terminated = success``. False: the
            episode never terminates (``success`` is still reported in ``info``), so a
            rollout can run on past success until the time limit truncates it, as
            fixed-length datasets are recorded, without stepping a terminated env.

    A subclass sets ``factor_space``, ``state_dim`` and ``expert`` (``"module:Class"``)
    and implements the hooks listed in the module docstring.

    Version history:
        v0: initial version (the envs' own histories are in their docstrings); later
            added without changing any default behaviour: the ``terminate_on_success``
            constructor argument and `goal_from_state`; an episode key and a frame index
            (steps since reset) for time-varying visuals such as `envs.distractors`;
            the ``tour_expert`` and ``goal_angle_dims`` class attributes.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    factor_space: FactorSpace
    state_dim: int
    action_dim: int = 2
    expert: str = ""
    """``"module:Class"`` of the scripted expert, built by `make_expert`."""
    tour_expert: str = ""
    """``"module:Class"`` of the env's tour expert (policy ``"expert-tour"``, `envs.make_policy`):
    it heads for target after target of its own drawing, ignoring the episode's goal; empty: none."""
    goal_angle_dims: tuple[int, ...] = ()
    """Indices of `goal_from_state`'s layout that are angles in radians (the scene looks the same at
    θ and θ + 2π): a read-out of them is scored as (cos, sin) by `benchmarks.diagnose`."""

    def __init__(self, resolution: int = 64, render_mode: str | None = None, terminate_on_success: bool = True) -> None:
        """Check the arguments and set up the spaces; the subclass then builds its world."""
        if not isinstance(terminate_on_success, (bool, np.bool_)):
            raise ValueError(f"terminate_on_success={terminate_on_success!r}: expected True or False")
        self.terminate_on_success = bool(terminate_on_success)
        if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 8:
            raise ValueError(f"resolution={resolution!r}: expected an integer >= 8")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: expected None or one of {self.metadata['render_modes']}")
        self.resolution = int(resolution)
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, (self.resolution, self.resolution, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        self._factors: dict = {}
        self._goal: Any = None
        self._episode_key = 0  # set by reset: see `episode_key`
        self._frame_index = 0  # steps since reset: the clock of time-varying visuals

    # -- hooks -----------------------------------------------------------------------------
    def _apply_factors(self, factors: dict) -> None:
        """Write validated factor values into the world."""
        raise NotImplementedError

    def _sample_start(self) -> Any:
        """A start state drawn from ``self.np_random``, in the form `_check_state` returns."""
        raise NotImplementedError

    def _sample_goal(self, start: Any) -> Any:
        """A goal for `start` drawn from ``self.np_random``."""
        raise NotImplementedError

    def _check_state(self, value: Any, name: str) -> Any:
        """A user-given state, checked; ValueError naming `name` otherwise."""
        raise NotImplementedError

    def _check_goal(self, value: Any, name: str) -> Any:
        """A user-given goal, checked; ValueError naming `name` otherwise."""
        raise NotImplementedError

    def _write_state(self, state: Any) -> None:
        """Put the world in a checked or sampled `state`."""
        raise NotImplementedError

    def _write_goal(self, goal: Any) -> None:
        """Make a checked or sampled `goal` current."""
        self._goal = goal

    def _simulate(self, action: list[float]) -> None:
        """Advance the world by one env step under the clipped `action` (action_dim,)."""
        raise NotImplementedError

    def _observe(self) -> np.ndarray:
        """The current frame, a fresh ``uint8 (resolution, resolution, 3)``."""
        raise NotImplementedError

    def _progress(self) -> tuple[float, bool]:
        """``(goal_distance, success)`` of the current state."""
        raise NotImplementedError

    def _goal_from_state(self, state: np.ndarray) -> np.ndarray:
        """The goal reached at a recorded `state` (checked float64 (state_dim,)); default: the state itself."""
        return state.copy()

    # -- properties ------------------------------------------------------------------------
    @property
    def state(self) -> np.ndarray:
        """The true state, float64 (state_dim,) (a copy); the layout is in the class docstring."""
        raise NotImplementedError

    @property
    def goal_state(self) -> np.ndarray:
        """The goal, float64 (a copy); the layout is in the class docstring."""
        return self._goal.copy()

    @property
    def factors(self) -> dict:
        """Current factor values (a copy)."""
        return dict(self._factors)

    # -- gym API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode; see the class docstring for `options`."""
        super().reset(seed=seed)
        self._episode_key, self._frame_index = episode_key(self.np_random), 0
        options = check_reset_options(options)
        self._set_factors(factors_from_options(self.factor_space, options, self.np_random))
        start, goal = self._start_and_goal(options)
        self._begin_episode(start, goal)
        return self._observe(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Advance one step under ``clip(action, -1, 1)``; returns the gymnasium five-tuple."""
        self._simulate(self._check_action(action))
        self._frame_index += 1
        info = self._info()
        return self._observe(), -info["goal_distance"], info["success"] and self.terminate_on_success, False, info

    def render(self) -> np.ndarray | None:
        """The current frame (``render_mode="rgb_array"``); None without a render mode."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        return self._observe()

    # -- public helpers --------------------------------------------------------------------
    def make_expert(self, env: gym.Env, noise: float) -> Any:
        """The scripted expert of this env (class ``expert``) for `env`, action noise std `noise`."""
        module, _, name = self.expert.partition(":")
        return getattr(importlib.import_module(module), name)(env, noise)

    def set_state(self, state: Any) -> None:
        """Put the world in `state` (checked; the accepted layouts are in the class docstring)."""
        self._write_state(self._check_state(state, "state"))

    def goal_from_state(self, state: Any) -> np.ndarray:
        """The goal that a recorded `state` stands for: float64, the layout `set_goal` takes.

        `state` is one row of a dataset's ``state`` column, float (state_dim,), e.g. the
        state `offset` steps after a planning start. Setting the result as the goal makes
        `success` true at that state. Only the shape and finiteness are checked here (the
        world, e.g. the maze layout, is checked when the goal is set). ValueError naming
        the shape and the expected one otherwise, without printing the whole array.
        """
        name = type(self).__name__
        try:
            a = np.array(state, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name}.goal_from_state: expected a float array of shape ({self.state_dim},), "
                             f"got {type(state).__name__}") from None
        if a.shape != (self.state_dim,):
            raise ValueError(f"{name}.goal_from_state: state has shape {a.shape}, expected ({self.state_dim},) "
                             f"(a recorded {name} state); is the data from another environment?")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}.goal_from_state: state {a.tolist()} is not finite")
        return self._goal_from_state(a)

    def set_goal(self, goal_state: Any) -> None:
        """Make `goal_state` (checked; layout in the class docstring) the goal."""
        self._write_goal(self._check_goal(goal_state, "goal_state"))

    # -- batched simulation (the oracle planner's dynamics) ------------------------------------
    def simulate(self, actions: Any, final_state: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Roll N raw-action sequences out from the current state and goal, leaving the env as it is.

        Args:
            actions: float (N, T, action_dim), N candidate sequences of T raw actions;
                each action is clipped to [-1, 1] as `step` does; non-finite values are an error.
            final_state: also return each sequence's last ``state``.

        Returns:
            float64 (N, T): ``info["goal_distance"]`` after each of the T steps of each
            sequence, as `step` would report it from the current state (no frame is
            rendered); with `final_state`, also float64 (N, state_dim), ``info["state"]``
            after the last step.
        """
        out = type(self).simulate_many([self], np.asarray(actions)[None], final_state)
        return (out[0][0], out[1][0]) if final_state else out[0]

    @classmethod
    def simulate_many(
        cls, envs: Sequence[Any], actions: Any, final_state: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """`simulate` for B envs of this class at once, each from its own state, goal and factors.

        Args:
            envs: B environments (wrappers allowed) whose ``unwrapped`` is a `cls`.
            actions: float (B, N, T, action_dim): N sequences of T raw actions per env.
            final_state: also return the last states.

        Returns:
            float64 (B, N, T) goal distances after each step (with `final_state`, also the
            last states float64 (B, N, state_dim)). No env changes state.

        The default restores each env's state before each sequence and runs `_simulate`
        (the dynamics `step` runs, bit for bit), one sequence after another; envs with a
        faster batched engine override `_simulate_many` (MuJoCo's threaded rollouts,
        vectorised NumPy).
        """
        bases = [getattr(e, "unwrapped", e) for e in envs]
        for i, b in enumerate(bases):
            if not isinstance(b, cls):
                raise ValueError(f"envs[{i}] is a {type(b).__name__}, expected a {cls.__name__} (one env class per call)")
        try:
            a = np.array(actions, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"actions: expected a float array (B, N, T, {cls.action_dim}), got {type(actions).__name__}") from None
        if a.ndim != 4 or a.shape[0] != len(bases) or a.shape[3] != cls.action_dim:
            raise ValueError(
                f"actions has shape {a.shape}: expected (B, N, T, action_dim) = ({len(bases)}, N, T, {cls.action_dim})"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"actions (shape {a.shape}) hold non-finite values: expected finite raw actions")
        np.clip(a, -1.0, 1.0, out=a)  # as `_check_action`
        if a.shape[1] == 0 or a.shape[2] == 0:
            raise ValueError(f"actions has shape {a.shape}: expected at least one sequence (N >= 1) of one step (T >= 1)")
        distances, states = cls._simulate_many(bases, a)
        return (distances, states) if final_state else distances

    @classmethod
    def _simulate_many(cls, envs: list[Any], actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Checked, clipped float64 actions (B, N, T, A) -> goal distances (B, N, T) and last
        states (B, N, state_dim); see `simulate_many`."""
        B, N, T, _ = actions.shape
        out, last = np.empty((B, N, T)), np.empty((B, N, cls.state_dim))
        for b, env in enumerate(envs):
            saved = env.state
            for n in range(N):
                env._write_state(saved.copy())
                for t, action in enumerate(actions[b, n].tolist()):
                    env._simulate(action)
                    out[b, n, t] = env._progress()[0]
                last[b, n] = env.state
            env._write_state(saved)
        return out, last

    # -- internals -------------------------------------------------------------------------
    def _set_factors(self, factors: dict) -> None:
        """Make validated `factors` current: kept for ``info`` and applied by `_apply_factors`."""
        self._factors = factors
        self._apply_factors(factors)

    def _start_and_goal(self, options: Mapping[str, Any]) -> tuple[Any, Any]:
        """The episode's start and goal: the checked options, else sampled (the start first)."""
        state, goal = options.get("state"), options.get("goal_state")
        start = self._sample_start() if state is None else self._check_state(state, "state")
        goal = self._sample_goal(start) if goal is None else self._check_goal(goal, "goal_state")
        return start, goal

    def _begin_episode(self, start: Any, goal: Any) -> None:
        """Install the start and goal of an episode."""
        self._write_goal(goal)
        self._write_state(start)

    def _check_action(self, action: Any) -> list[float]:
        """`action` clipped to [-1, 1] as floats (action_dim,); ValueError naming it otherwise.

        Plain Python floats: cheaper than NumPy for two numbers, at 40k steps/s.
        """
        n = self.action_dim
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"action={action!r}: expected a float array of shape ({n},)") from None
        if a.shape != (n,):
            raise ValueError(f"action={action!r} has shape {a.shape}: expected shape ({n},)")
        out = []
        for x in a.tolist():
            if not math.isfinite(x):
                raise ValueError(f"action={action!r} is not finite: expected finite values of shape ({n},)")
            out.append(-1.0 if x < -1.0 else (1.0 if x > 1.0 else x))
        return out

    def _info(self) -> dict:
        distance, success = self._progress()
        return {
            "state": self.state,
            "goal_state": self._goal.copy(),
            "success": bool(success),
            "goal_distance": float(distance),
            "factors": dict(self._factors),
        }
