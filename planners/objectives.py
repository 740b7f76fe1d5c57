"""Planning objectives: turn a world model, a context and a goal into a ``CostFn``.

An objective is a factory ``(model, context_emb, goal_emb, past_actions=None) -> CostFn``;
the returned cost function rolls the model out for every candidate and compares the
predicted embeddings with the goal embedding. Registered by name in ``OBJECTIVES``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from planners.base import CostFn, WorldModel

__all__ = ["Objective", "OBJECTIVES", "UnknownObjectiveError", "get_objective", "terminal_l2", "all_steps_l2"]

Objective = Callable[..., CostFn]
"""(model, context_emb (B, T0, D), goal_emb (B, D), past_actions (B, T0-1, A) | None) -> CostFn."""


class UnknownObjectiveError(ValueError):
    """An objective name that is not in ``OBJECTIVES``."""


def _check_inputs(context_emb: torch.Tensor, goal_emb: torch.Tensor, past_actions: torch.Tensor | None) -> None:
    if context_emb.ndim != 3:
        raise ValueError(f"context_emb must have shape (B, T0, D), got {tuple(context_emb.shape)}")
    B, T0, D = context_emb.shape
    if goal_emb.shape != (B, D):
        raise ValueError(f"goal_emb must have shape (B, D) = {(B, D)}, got {tuple(goal_emb.shape)}")
    if past_actions is not None and (past_actions.ndim != 3 or past_actions.shape[:2] != (B, T0 - 1)):
        raise ValueError(f"past_actions must have shape (B, T0 - 1, A) = ({B}, {T0 - 1}, A), got {tuple(past_actions.shape)}")


def _rollout(
    model: WorldModel, context_emb: torch.Tensor, actions: torch.Tensor, past_actions: torch.Tensor | None
) -> torch.Tensor:
    """actions (B, S, H, A) -> predicted embeddings (B, S, H, D), shape-checked.

    ``past_actions`` is passed only when given, so models without that argument work
    with a single context frame.
    """
    if past_actions is None:
        pred = model.rollout(context_emb, actions)
    else:
        pred = model.rollout(context_emb, actions, past_actions=past_actions)
    B, S, H = actions.shape[:3]
    D = context_emb.shape[-1]
    if pred.shape != (B, S, H, D):
        raise ValueError(f"model.rollout must return (B, S, H, D) = {(B, S, H, D)}, got {tuple(pred.shape)}")
    return pred


def terminal_l2(
    model: WorldModel,
    context_emb: torch.Tensor,
    goal_emb: torch.Tensor,
    past_actions: torch.Tensor | None = None,
) -> CostFn:
    """Cost = squared L2 distance between the LAST predicted embedding and the goal.

    Args:
        model: the world model to roll out.
        context_emb: (B, T0, D) context embeddings, the last one is the current observation.
        goal_emb: (B, D) goal embedding per environment.
        past_actions: (B, T0 - 1, A) blocks executed between the context frames, or None.

    Returns:
        CostFn mapping actions (B, S, H, A) -> ``sum_D (pred[:, :, -1] - goal)^2`` (B, S).
    """
    _check_inputs(context_emb, goal_emb, past_actions)

    def cost_fn(actions: torch.Tensor) -> torch.Tensor:
        pred = _rollout(model, context_emb, actions, past_actions)  # (B, S, H, D)
        return (pred[:, :, -1] - goal_emb[:, None]).pow(2).sum(-1)  # (B, S)

    return cost_fn


def all_steps_l2(
    model: WorldModel,
    context_emb: torch.Tensor,
    goal_emb: torch.Tensor,
    past_actions: torch.Tensor | None = None,
) -> CostFn:
    """Cost = squared L2 distance to the goal, averaged over all H predicted steps.

    Args and shapes as in ``terminal_l2``. Returns a CostFn (B, S, H, A) -> (B, S) equal to
    ``mean_H sum_D (pred - goal)^2``; it rewards getting to the goal early.
    """
    _check_inputs(context_emb, goal_emb, past_actions)

    def cost_fn(actions: torch.Tensor) -> torch.Tensor:
        pred = _rollout(model, context_emb, actions, past_actions)  # (B, S, H, D)
        return (pred - goal_emb[:, None, None]).pow(2).sum(-1).mean(-1)  # (B, S)

    return cost_fn


OBJECTIVES: dict[str, Objective] = {
    "terminal_l2": terminal_l2,
    "all_steps_l2": all_steps_l2,
}


def get_objective(name: str) -> Objective:
    """Look an objective up by name; raises ``UnknownObjectiveError`` listing the valid names."""
    try:
        return OBJECTIVES[name]
    except (KeyError, TypeError):
        raise UnknownObjectiveError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}") from None
