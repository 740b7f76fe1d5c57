"""Cross-entropy method (CEM) over action sequences, batched over environments.

One Gaussian per environment over its (H, A) action sequence. Each iteration samples
S candidates around the mean (candidate 0 is the mean itself, as in iCEM), clamps them
to the action bounds, scores every environment's candidates in ONE ``cost_fn`` call,
refits mean and std to the top-k elites and floors the std at ``min_std``. The answer
is the lowest-cost candidate seen over all iterations.
"""

from __future__ import annotations

import torch

from planners.base import CostFn, PlanResult
from planners.solver import BestSoFar, Bound, Solver, finite_float, positive_int

__all__ = ["CEM"]


class CEM(Solver):
    """Cross-entropy method planner, batched over environments.

    Defaults are those of DINO-WM's and stable-worldmodel's CEM planning configs
    (``conf/planner/cem.yaml``, ``scripts/plan/config/solver/cem.yaml``: 300 samples,
    30 iterations, top 30, var_scale 1).

    Args:
        horizon: H, number of planning steps (action blocks).
        action_dim: A, size of one planning action.
        low, high: action bounds, floats or (A,) sequences/tensors; ``low < high``.
        num_samples: S, candidates per environment per iteration (candidate 0 is the mean).
        iterations: refinement iterations; ``cost_fn`` is called exactly once per iteration.
        num_elites: k, candidates kept to refit mean/std (``1 <= k <= S``).
        init_std: initial standard deviation of the sampling Gaussian (absolute units).
        min_std: floor for the standard deviation after each refit.
        seed: seed of this planner's own ``torch.Generator``; two planners built with the
            same arguments return identical plans for the same sequence of calls.
        device: where samples are drawn; ``cost_fn`` must accept tensors on it.
    """

    name = "cem"

    def __init__(
        self,
        horizon: int,
        action_dim: int,
        low: Bound,
        high: Bound,
        num_samples: int = 300,
        iterations: int = 30,
        num_elites: int = 30,
        init_std: float = 1.0,
        min_std: float = 0.05,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(horizon, action_dim, low, high, seed=seed, device=device)
        self._set_population(num_samples, iterations, num_elites)
        self.init_std = finite_float("init_std", init_std, low=0)
        self.min_std = finite_float("min_std", min_std, low=0, strict=False)

    def call_sizes(self) -> list[int]:
        """S of each ``cost_fn`` call of one plan: ``num_samples`` for each iteration."""
        return [self.num_samples] * self.iterations

    @torch.no_grad()
    def plan(self, cost_fn: CostFn, batch_size: int, init: torch.Tensor | None = None) -> PlanResult:
        """Minimise ``cost_fn`` for ``batch_size`` environments at once.

        Args:
            cost_fn: candidates (B, S, H, A) -> costs (B, S); called once per iteration.
                NaN costs count as +inf.
            batch_size: B.
            init: optional warm start for the mean, (B, H, A) or (H, A); clamped to bounds.

        Returns:
            PlanResult: ``actions`` (B, H, A) lowest-cost candidate seen per environment,
            ``cost`` (B,) its cost, ``stats`` with ``iterations`` (int), ``std_mean``
            (float, mean final std) and ``cost_history`` ((iterations, B) CPU tensor of
            each iteration's lowest cost per environment).
        """
        best, std, _, _ = self._iterate(cost_fn, positive_int("batch_size", batch_size), init)
        return best.result(std_mean=std.mean().item())  # .item() syncs the device

    def _iterate(
        self, cost_fn: CostFn, B: int, init: torch.Tensor | None
    ) -> tuple[BestSoFar, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The CEM loop -> (best seen, final std (B, H, A), last samples (B, S, H, A),
        their costs (B, S))."""
        S, K, H, A = self.num_samples, self.num_elites, self.horizon, self.action_dim
        mean = self._initial_mean(B, init)  # (B, H, A)
        std = torch.full_like(mean, self.init_std)  # (B, H, A)
        best = BestSoFar(mean)
        rows = torch.arange(B, device=self.device)

        for _ in range(self.iterations):
            # Sample around the mean; keep the mean itself as candidate 0.
            samples = mean.unsqueeze(1) + std.unsqueeze(1) * self._randn(B, S, H, A)  # (B, S, H, A)
            samples[:, 0] = mean
            samples = self._clamp(samples)

            # Score every environment's candidates in one call; remember the best seen.
            costs = self._score(cost_fn, samples)  # (B, S)
            best.update(samples, costs)

            # Refit the Gaussian to the elites.
            elite_idx = costs.topk(K, dim=1, largest=False).indices  # (B, K)
            elites = samples[rows[:, None], elite_idx]  # (B, K, H, A)
            mean = elites.mean(dim=1)
            std = elites.std(dim=1, unbiased=False).clamp_min(self.min_std)

        return best, std, samples, costs
