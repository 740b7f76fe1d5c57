"""CEM, then gradient refinement of its best candidates (``cem_gd``), batched over environments.

A sampling phase finds the basin (CEM iterations, ``planners/cem.py``), a gradient phase
polishes inside it (Adam on the best candidates through the differentiable cost,
``planners/gd.py``), as in the hybrid sampling + gradient planners (e.g. GRASP-style
CEM-then-GD) that beat CEM alone at long horizons. The refined set is the best candidate
seen by CEM plus the lowest-cost candidates of its last iteration.

Defaults: the CEM phase uses CEM's sample and elite counts (300, top 30, DINO-WM /
stable-worldmodel) with a third of its iterations; the gradient phase stable-worldmodel's
Adam learning rate 0.1. There is no published configuration of this hybrid for these
models: the split (10 CEM iterations, 10 Adam evaluations of 10 candidates) is this
platform's choice, about 40% of CEM 300 x 30's model evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from planners.base import CostFn, PlanResult
from planners.cem import CEM
from planners.gd import gradient_descent
from planners.solver import Bound, Solver, finite_float, positive_int

__all__ = ["CEMGD"]


class CEMGD(Solver):
    """CEM iterations, then Adam refinement of the best ``num_refine`` candidates.

    Args:
        horizon, action_dim, low, high, seed, device: as for every ``Solver``.
        num_samples, iterations, num_elites, init_std, min_std: the CEM phase (``CEM``).
        num_refine: candidates refined by gradient per environment (``1 <= num_refine <= num_samples``).
        gd_iterations: cost evaluations of the gradient phase (one ``cost_fn`` call each).
        lr: Adam learning rate of the gradient phase.
        action_noise: std of Gaussian noise added after each gradient step.
    """

    name = "cem_gd"
    requires_grad = True

    def __init__(
        self,
        horizon: int,
        action_dim: int,
        low: Bound,
        high: Bound,
        num_samples: int = 300,
        iterations: int = 10,
        num_elites: int = 30,
        init_std: float = 1.0,
        min_std: float = 0.05,
        num_refine: int = 10,
        gd_iterations: int = 10,
        lr: float = 0.1,
        action_noise: float = 0.0,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(horizon, action_dim, low, high, seed=seed, device=device)
        self._cem = CEM(horizon, action_dim, low, high, num_samples=num_samples, iterations=iterations,
                        num_elites=num_elites, init_std=init_std, min_std=min_std, seed=seed, device=device)
        self._cem.generator = self.generator  # one random stream for both phases
        self.num_samples, self.iterations, self.num_elites = num_samples, iterations, num_elites
        self.init_std, self.min_std = self._cem.init_std, self._cem.min_std
        self.num_refine = positive_int("num_refine", num_refine)
        if self.num_refine > self.num_samples:
            raise ValueError(f"num_refine={num_refine} must be <= num_samples={num_samples}")
        self.gd_iterations = positive_int("gd_iterations", gd_iterations)
        self.lr = finite_float("lr", lr, low=0)
        self.action_noise = finite_float("action_noise", action_noise, low=0, strict=False)

    def reseed(self, seed: int | Sequence[int]) -> None:
        """As `Solver.reseed`, for both phases (they share one random stream)."""
        super().reseed(seed)
        self._cem._row_generators = self._row_generators

    def call_sizes(self) -> list[int]:
        """``num_samples`` for each CEM iteration, then ``num_refine`` for each gradient one."""
        return self._cem.call_sizes() + [self.num_refine] * self.gd_iterations

    def plan(self, cost_fn: CostFn, batch_size: int, init: torch.Tensor | None = None) -> PlanResult:
        """Minimise ``cost_fn`` for ``batch_size`` environments at once.

        Args:
            cost_fn: candidates (B, S, H, A) -> costs (B, S), differentiable; called once per
                iteration (CEM phase without autograd, gradient phase with it). NaN -> +inf.
            batch_size: B.
            init: optional warm start (B, H, A) or (H, A); clamped to bounds.

        Returns:
            PlanResult: ``actions`` (B, H, A) lowest-cost sequence evaluated in either phase,
            ``cost`` (B,); ``stats`` with ``iterations`` (both phases), ``cem_cost`` ((B,),
            the best cost after the CEM phase) and ``cost_history``.

        Raises:
            NonDifferentiableCostError: ``cost_fn`` is not differentiable (after the CEM phase).
        """
        B = positive_int("batch_size", batch_size)
        with torch.no_grad():
            best, _, samples, costs = self._cem._iterate(cost_fn, B, init)
        cem_cost = best.cost.clone()
        rows = torch.arange(B, device=self.device)
        top = costs.topk(self.num_refine, dim=1, largest=False).indices  # (B, R)
        start = samples[rows[:, None], top].clone()  # (B, R, H, A)
        start[:, 0] = best.actions  # the best seen in any CEM iteration
        gradient_descent(self, cost_fn, start, self.gd_iterations, self.lr, self.action_noise, best)
        return best.result(cem_cost=cem_cost)
