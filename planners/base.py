"""The seams of the planners package: what a planner returns, what it optimises, and
the few methods of a world model that planning relies on.

Shapes: B batch (environments), S candidate samples, T time, T0 context frames,
H planning horizon (in action blocks), D embedding size, A planning action size
(one action block = ``frameskip * action_dim`` raw action values).

Everything here is a ``typing.Protocol``: ``planners`` never imports a concrete world
model; any object with these attributes and methods plans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["PlanResult", "CostFn", "ModelConfigLike", "WorldModel", "Planner"]


@dataclass
class PlanResult:
    """The outcome of one ``Planner.plan`` call, for every environment of the batch."""

    actions: torch.Tensor
    """(B, H, A) the best action sequence found for each environment."""
    cost: torch.Tensor
    """(B,) its cost under the planned objective (lower is better)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Solver diagnostics (e.g. ``iterations``, ``std_mean``, ``cost_history``)."""


@runtime_checkable
class CostFn(Protocol):
    """Scores candidate action sequences for every environment in one batched call."""

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        """actions (B, S, H, A) -> cost (B, S), lower is better."""
        ...


class ModelConfigLike(Protocol):
    """The part of a world model's config that planning reads."""

    frameskip: int
    """Raw environment actions per action block (one planning step)."""
    action_dim: int
    """Size of one raw environment action."""
    context: int
    """Most past block-boundary embeddings the model conditions on."""


@runtime_checkable
class WorldModel(Protocol):
    """An action-conditioned latent world model, as seen by a planner."""

    config: ModelConfigLike

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels uint8 (B, T, 3, H, W) -> embeddings (B, T, D)."""
        ...

    def rollout(
        self,
        emb: torch.Tensor,
        actions: torch.Tensor,
        past_actions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict future embeddings autoregressively.

        Args:
            emb: (B, T0, D) embeddings of the last T0 block-boundary observations,
                oldest first; the last one is the current observation.
            actions: (B, S, H, A_block) S candidate sequences of H future action blocks.
            past_actions: (B, T0 - 1, A_block) the blocks executed between the context
                embeddings, or None (always None when T0 == 1).

        Returns:
            (B, S, H, D): predicted embedding after each of the H blocks.
        """
        ...


@runtime_checkable
class Planner(Protocol):
    """A batched trajectory optimiser, fully built by its constructor.

    The registered solvers (``planners.get(NAME)``, ``planners/registry.py``) also have
    ``requires_grad`` (``plan`` needs autograd through ``cost_fn``), ``reset()`` (forget
    memory kept between plans), ``call_sizes()`` (S of each ``cost_fn`` call of a plan)
    and ``settings()``; iCEM has ``shift(steps)``. ``MPCPolicy`` uses them when present.
    """

    horizon: int
    """H, number of action blocks planned."""
    action_dim: int
    """A, size of one planning action (an action block)."""

    def plan(
        self,
        cost_fn: CostFn,
        batch_size: int,
        init: torch.Tensor | None = None,
    ) -> PlanResult:
        """Minimise ``cost_fn`` for ``batch_size`` environments at once.

        Args:
            cost_fn: maps candidates (B, S, H, A) to costs (B, S).
            batch_size: B.
            init: optional warm start (B, H, A) for the search distribution's mean.

        Returns:
            PlanResult with actions (B, H, A) and cost (B,).
        """
        ...
