"""The oracle planner: the same solvers and the same MPC loop, planning through the true simulator.

Where `MPCPolicy` scores candidates by rolling a world model out in latent space, the
oracle scores them by rolling them out in copies of the real environments, from each
environment's exact current state, factors and goal, and reads the environment's own
``goal_distance`` (what ``info["goal_distance"]`` reports). Run under the same protocol
as a model, its success is the upper bound that separates model error from planner
error: a failure of the oracle is the solver's (budget, horizon, samples) or the
protocol's, not the model's.

Everything else is shared with model planning, so the same solver settings mean the
same thing: `oracle_policy` is an `MPCPolicy` (action blocks of ``frameskip`` raw
actions, or one raw action held for ``frameskip`` steps with ``hold_actions``; replanning
every ``receding_horizon`` blocks; warm start from the previous plan's tail; actions
clipped) whose model is a `SimulatorModel` stand-in and whose objective is `OracleCost`.

The engines are the environments' own batched simulators (`envs.base.WorldModelEnv.
simulate_many`): MuJoCo's threaded ``mujoco.rollout`` for PointMaze, Reacher and Cube,
vectorised NumPy for TwoRoom, restored pymunk states for PushT; nothing is rendered.

Cost: the goal distance at the end of the candidate (``reduce="final"``, the default,
matching the latent ``terminal`` objectives, so that the oracle is the model's planner
with a perfect model), or the smallest goal distance along it (``reduce="min"``, matching
the success test, which is applied after every env step). The two differ where the agent
carries momentum: with "final" the plan only has to be at the goal when its horizon ends,
and that end moves on at every replan, so on PointMaze and Reacher the agent passes near
the goal, or circles it, without entering the success radius; "min" rewards entering it
(the measured sweep is in ``benchmarks/RESULTS.md``). The cost is not differentiable:
gradient solvers are refused.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch

from planners.base import Planner

__all__ = ["OracleCost", "SimulatorModel", "oracle_objective", "oracle_policy", "refuse_gradient_solver", "REDUCTIONS"]

REDUCTIONS = ("final", "min")
"""How a candidate's per-step goal distances (T,) become its cost."""


def check_reduce(reduce: str) -> str:
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r}: expected one of {list(REDUCTIONS)}")
    return reduce


def refuse_gradient_solver(planner: Any) -> None:
    """ValueError if `planner` (a solver or its class) optimises through gradients of the cost
    (``requires_grad``): the oracle's simulator has none."""
    if getattr(planner, "requires_grad", False):
        name = planner.__name__ if isinstance(planner, type) else type(planner).__name__
        raise ValueError(
            f"{name} is a gradient solver and the oracle cost (a simulator rollout) has no gradient: "
            "use a sampling solver (cem, icem, mppi, random_shooting) with the oracle"
        )


class OracleCost:
    """A `planners.base.CostFn` that rolls every candidate out in the real environments.

    Args:
        envs: the B environments being planned for (wrappers allowed), all of one class.
            Each call reads their current state, factors and goal; none is changed.
        frameskip: f, raw actions per action block.
        reduce: ``"final"`` (goal distance after the last raw action) or ``"min"``
            (smallest goal distance after any of them).
        skip_terminated: give cost 0 without simulating to the envs whose episode has
            ended (``terminate_on_success`` and at the goal now): their actions are never
            executed.

    Call: candidates (B, S, H, f * action_dim) action blocks (each block is f raw actions,
    flattened) -> float32 (B, S) costs on the candidates' device. One call simulates all
    B x S candidates (``simulate_many``), each for H * f env steps. ``rows`` (B',) indices
    into `envs` scores candidates (B', S, H, f * action_dim) for those envs only (what
    `MPCPolicy` asks when some episodes have ended).

    Attributes:
        calls, simulated_steps, seconds: totals since construction (env steps are counted
            per candidate).
    """

    def __init__(self, envs: Sequence[Any], frameskip: int, reduce: str = "final", skip_terminated: bool = True) -> None:
        if not envs:
            raise ValueError("envs is empty: expected the B environments to plan for")
        self.envs = [getattr(e, "unwrapped", e) for e in envs]
        cls = type(self.envs[0])
        if not hasattr(cls, "simulate_many"):
            raise ValueError(f"{cls.__name__} has no simulate_many: the oracle needs a wm/ environment (envs.base.WorldModelEnv)")
        if isinstance(frameskip, bool) or not isinstance(frameskip, (int, np.integer)) or frameskip < 1:
            raise ValueError(f"frameskip={frameskip!r}: expected a positive int")
        self.cls = cls
        self.frameskip = int(frameskip)
        self.action_dim = int(cls.action_dim)
        self.reduce = check_reduce(reduce)
        self.skip_terminated = bool(skip_terminated)
        self.calls = 0
        self.simulated_steps = 0
        self.seconds = 0.0

    def __call__(self, actions: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
        """candidates (B, S, H, frameskip * action_dim) -> costs (B, S), lower is better; with
        `rows`, candidates (len(rows), S, H, frameskip * action_dim) of the envs ``envs[rows]``."""
        if actions.requires_grad:
            raise ValueError(
                "the oracle cost is computed by a simulator and has no gradient: use a sampling solver "
                "(cem, icem, mppi, random_shooting), not a gradient one"
            )
        batch = self.envs if rows is None else [self.envs[int(r)] for r in rows]
        B = len(batch)
        block = self.frameskip * self.action_dim
        if actions.ndim != 4 or actions.shape[0] != B or actions.shape[3] != block:
            raise ValueError(
                f"candidates have shape {tuple(actions.shape)}: expected (B, S, H, frameskip * action_dim) = "
                f"({B}, S, H, {self.frameskip} * {self.action_dim})"
            )
        start = time.perf_counter()
        _, S, H, _ = actions.shape
        raw = actions.detach().to("cpu", torch.float64).numpy().reshape(B, S, H * self.frameskip, self.action_dim)
        costs = np.zeros((B, S))
        active = [b for b, e in enumerate(batch) if not (self.skip_terminated and self._ended(e))]
        if active:
            dist = self.cls.simulate_many([batch[b] for b in active], raw[active])  # (B', S, H*f)
            costs[active] = dist[..., -1] if self.reduce == "final" else dist.min(-1)
            self.simulated_steps += len(active) * S * H * self.frameskip
        self.calls += 1
        self.seconds += time.perf_counter() - start
        return torch.from_numpy(costs).to(device=actions.device, dtype=torch.float32)

    @staticmethod
    def _ended(env: Any) -> bool:
        return bool(getattr(env, "terminate_on_success", False) and env._progress()[1])


class SimulatorModel:
    """The true simulator in a `WorldModel`'s place, so that `MPCPolicy` plans with it unchanged.

    It has the config `MPCPolicy` reads (``frameskip``, ``action_dim``, ``context = 1``);
    `encode` returns each frame's row in the batch as its "embedding", so that the oracle's
    objective (`oracle_objective`), handed the embeddings of a subset of the envs (episodes
    that ended are not planned for), knows which envs it scores; `rollout` is refused (there
    is no latent space).
    """

    def __init__(self, frameskip: int, action_dim: int) -> None:
        self.config = SimpleNamespace(frameskip=int(frameskip), action_dim=int(action_dim), context=1)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, T, 3, H, W) -> (B, T, 1): the row index b of each frame, as a float."""
        B, T = pixels.shape[:2]
        return torch.arange(B, dtype=torch.float32, device=pixels.device).view(B, 1, 1).expand(B, T, 1)

    def rollout(self, emb: torch.Tensor, actions: torch.Tensor, past_actions: torch.Tensor | None = None) -> torch.Tensor:
        """Refused: the oracle has no latent rollout (its cost is `OracleCost`)."""
        raise TypeError("SimulatorModel has no latent rollout: the oracle scores candidates with OracleCost")


def oracle_objective(envs: Sequence[Any], frameskip: int, reduce: str = "final") -> Any:
    """An `MPCPolicy` objective factory ``(model, context_emb (B', T0, 1), goal_emb, past) -> CostFn``
    scoring candidates in the envs whose rows `SimulatorModel.encode` wrote into
    ``context_emb`` (all of `envs`, or those `MPCPolicy` still plans for); see `OracleCost`."""
    cost = OracleCost(envs, frameskip, reduce)

    def objective(model: Any, context_emb: torch.Tensor, goal_emb: torch.Tensor, past: torch.Tensor | None = None,
                  **known: Any) -> Any:
        rows = context_emb[:, -1, 0].round().long().tolist()
        if rows == list(range(len(cost.envs))):
            return cost
        return lambda actions: cost(actions, rows)

    objective.cost = cost  # type: ignore[attr-defined]
    return objective


def oracle_policy(
    envs: Sequence[Any],
    planner: Planner,
    frameskip: int,
    receding_horizon: int = 1,
    hold_actions: bool = True,
    reduce: str = "final",
) -> Any:
    """A batched MPC policy over B real environments that plans through their simulator.

    Args:
        envs: the B environments the policy acts in (their current states are planned from,
            so step exactly these envs with its actions).
        planner: a sampling solver whose ``action_dim`` is ``action_dim`` with
            `hold_actions`, else ``frameskip * action_dim``. Gradient solvers are refused.
        frameskip: raw actions per action block (a model's ``config.frameskip`` for a
            like-for-like comparison).
        receding_horizon, hold_actions: as `MPCPolicy`.
        reduce: ``"final"`` or ``"min"`` (see `OracleCost`).

    Returns:
        an `MPCPolicy` (``act(obs (B,H,W,3), goal (B,H,W,3)) -> (B, action_dim)``; the pixels
        are not used for planning); its `OracleCost` is ``policy.oracle_cost``.
    """
    from planners.mpc import MPCPolicy

    refuse_gradient_solver(planner)
    if not envs:
        raise ValueError("envs is empty: expected the B environments to plan for")
    base = getattr(envs[0], "unwrapped", envs[0])
    space = base.action_space
    objective = oracle_objective(envs, frameskip, reduce)
    policy = MPCPolicy(
        SimulatorModel(frameskip, int(space.shape[0])),
        planner,
        objective=objective,
        receding_horizon=receding_horizon,
        action_low=float(np.min(space.low)),
        action_high=float(np.max(space.high)),
        hold_actions=hold_actions,
    )
    policy.oracle_cost = objective.cost
    return policy
