"""MPPI (model-predictive path integral control), batched over environments.

Each iteration samples S candidates ``mean + sigma * eps`` (candidate 0 is the mean),
clamps them to the bounds, scores them in one ``cost_fn`` call, and moves the mean to the
softmax-weighted average of the (top-k) candidates with weights
``exp(-(c - min c) / temperature)``. The noise ``sigma`` stays fixed, as in MPPI. The
answer is the lowest-cost candidate seen (the means are candidates too).

Defaults: stable-worldmodel's ``MPPISolver`` (300 samples, 30 iterations, top 30,
temperature 0.5, var_scale 1.0 as sigma), the configuration this platform is compared
with; PLDM and EB-JEPA use the same update with task-specific temperatures.
"""

from __future__ import annotations

import math

import torch

from planners.base import CostFn, PlanResult
from planners.solver import BestSoFar, Bound, Solver, finite_float, positive_int

__all__ = ["MPPI", "mppi_weights"]


def mppi_weights(costs: torch.Tensor, temperature: float) -> torch.Tensor:
    """costs (B, K) -> weights (B, K) ∝ exp(-(c - min c) / temperature), summing to 1.

    Infinite (or NaN-turned-infinite) costs get weight 0; a row whose costs are all
    infinite gets uniform weights.
    """
    finite = torch.isfinite(costs)
    low = torch.where(finite, costs, torch.full_like(costs, math.inf)).min(dim=1, keepdim=True).values
    low = torch.where(torch.isfinite(low), low, torch.zeros_like(low))
    logits = torch.where(finite, -(costs - low) / temperature, torch.full_like(costs, -math.inf))
    logits = torch.where(finite.any(dim=1, keepdim=True), logits, torch.zeros_like(logits))
    return torch.softmax(logits, dim=1)


class MPPI(Solver):
    """MPPI planner, batched over environments.

    Args:
        horizon, action_dim, low, high, seed, device: as for every ``Solver``.
        num_samples: S, candidates per environment and iteration (candidate 0 is the mean).
        iterations: iterations per plan; ``cost_fn`` is called once per iteration.
        num_elites: k, the lowest-cost candidates averaged (``1 <= k <= S``; k = S: all).
        temperature: lambda of the softmax weights ``exp(-(c - min c) / lambda)``; smaller
            follows the best candidate more closely.
        noise_std: sigma, standard deviation of the sampling noise (fixed).
    """

    name = "mppi"

    def __init__(
        self,
        horizon: int,
        action_dim: int,
        low: Bound,
        high: Bound,
        num_samples: int = 300,
        iterations: int = 30,
        num_elites: int = 30,
        temperature: float = 0.5,
        noise_std: float = 1.0,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(horizon, action_dim, low, high, seed=seed, device=device)
        self._set_population(num_samples, iterations, num_elites)
        self.temperature = finite_float("temperature", temperature, low=0)
        self.noise_std = finite_float("noise_std", noise_std, low=0)

    def call_sizes(self) -> list[int]:
        """S of each ``cost_fn`` call of one plan: ``num_samples`` for each iteration."""
        return [self.num_samples] * self.iterations

    @torch.no_grad()
    def plan(self, cost_fn: CostFn, batch_size: int, init: torch.Tensor | None = None) -> PlanResult:
        """Minimise ``cost_fn`` for ``batch_size`` environments at once.

        Args:
            cost_fn: candidates (B, S, H, A) -> costs (B, S); called once per iteration.
                NaN costs count as +inf (weight 0).
            batch_size: B.
            init: optional warm start for the mean, (B, H, A) or (H, A); clamped to bounds.

        Returns:
            PlanResult: ``actions`` (B, H, A) lowest-cost candidate seen, ``cost`` (B,);
            ``stats`` with ``iterations`` and ``cost_history`` ((iterations, B)).
        """
        B = positive_int("batch_size", batch_size)
        S, K, H, A = self.num_samples, self.num_elites, self.horizon, self.action_dim
        mean = self._initial_mean(B, init)  # (B, H, A)
        best = BestSoFar(mean)
        rows = torch.arange(B, device=self.device)

        for _ in range(self.iterations):
            samples = mean.unsqueeze(1) + self.noise_std * self._randn(B, S, H, A)  # (B, S, H, A)
            samples[:, 0] = mean
            samples = self._clamp(samples)

            costs = self._score(cost_fn, samples)  # (B, S)
            best.update(samples, costs)

            top_cost, top_idx = costs.topk(K, dim=1, largest=False)  # (B, K)
            weights = mppi_weights(top_cost, self.temperature)  # (B, K)
            mean = (weights[:, :, None, None] * samples[rows[:, None], top_idx]).sum(dim=1)

        return best.result()
