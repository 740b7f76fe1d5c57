"""Random shooting: one round of uniform samples in the action box, the best one kept.

The cheapest reference solver: ONE ``cost_fn`` call per plan. With a warm start, the warm
start itself is candidate 0, so a replanning policy never does worse than its previous
plan's tail under the model.
"""

from __future__ import annotations

import torch

from planners.base import CostFn, PlanResult
from planners.solver import BestSoFar, Bound, Solver, positive_int

__all__ = ["RandomShooting"]


class RandomShooting(Solver):
    """Uniform random candidates in [low, high], batched over environments.

    Args:
        horizon, action_dim, low, high, seed, device: as for every ``Solver``.
        num_samples: S, candidates per environment (300, one CEM iteration's worth, as
            stable-worldmodel's sampling solvers).
    """

    name = "random_shooting"

    def __init__(
        self,
        horizon: int,
        action_dim: int,
        low: Bound,
        high: Bound,
        num_samples: int = 300,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(horizon, action_dim, low, high, seed=seed, device=device)
        self._set_population(num_samples)

    def call_sizes(self) -> list[int]:
        """One call of ``num_samples`` candidates."""
        return [self.num_samples]

    @torch.no_grad()
    def plan(self, cost_fn: CostFn, batch_size: int, init: torch.Tensor | None = None) -> PlanResult:
        """Score S uniform candidates per environment (candidate 0 = ``init`` when given).

        Args:
            cost_fn: candidates (B, S, H, A) -> costs (B, S); called once. NaN counts as +inf.
            batch_size: B.
            init: optional warm start (B, H, A) or (H, A), clamped to bounds.

        Returns:
            PlanResult: ``actions`` (B, H, A) best candidate, ``cost`` (B,) its cost.
        """
        B = positive_int("batch_size", batch_size)
        S, H, A = self.num_samples, self.horizon, self.action_dim
        samples = self.low + (self.high - self.low) * self._rand(B, S, H, A)  # (B, S, H, A)
        start = self._initial_mean(B, init)
        if init is not None:
            samples[:, 0] = start
        best = BestSoFar(start)
        best.update(samples, self._score(cost_fn, samples))
        return best.result()
