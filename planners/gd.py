"""Gradient descent on the action sequence through a differentiable cost (``gd``).

S restarts per environment (candidate 0 starts at the warm start, the others at the warm
start plus Gaussian noise) are optimised together: ONE ``cost_fn`` call per iteration
scores all B x S sequences, Adam takes a step on each from the gradient of the summed
cost (the sequences are independent, so each gets its own gradient), optional Gaussian
action noise is added, and the sequences are projected back into the bounds. The answer
is the lowest-cost sequence evaluated. ``cost_fn`` must be differentiable w.r.t. its
input (a world-model rollout is; a simulator is not: ``NonDifferentiableCostError``).

Defaults: stable-worldmodel's gradient planner config (``scripts/plan/config/solver/adam.yaml``:
Adam(W) lr 0.1, 30 steps, 100 samples, action_noise 0, var_scale 1 for the restarts).
DINO-WM's GD planner (``conf/planner/gd.yaml``) uses SGD lr 1 with action noise 0.003.
"""

from __future__ import annotations

import math

import torch

from planners.base import CostFn, PlanResult
from planners.solver import BestSoFar, Bound, NonDifferentiableCostError, Solver, finite_float, positive_int

__all__ = ["GD", "gradient_descent"]


def _not_differentiable(name: str, why: str) -> NonDifferentiableCostError:
    return NonDifferentiableCostError(
        f"solver {name!r} needs a cost_fn differentiable w.r.t. the actions, but {why} (a cost computed "
        "outside autograd: a simulator/oracle cost, numpy, .detach(), torch.no_grad() or inference_mode); "
        "use a sampling solver instead: cem, icem, mppi or random_shooting"
    )


def gradient_descent(
    solver: Solver,
    cost_fn: CostFn,
    start: torch.Tensor,
    iterations: int,
    lr: float,
    action_noise: float,
    best: BestSoFar,
) -> torch.Tensor:
    """Adam on ``start`` (B, S, H, A) for ``iterations`` cost evaluations (one ``cost_fn``
    call each, a step after each but the last), projecting to ``solver``'s bounds.

    Every evaluated sequence goes through ``best``. NaN costs count as +inf and do not
    contribute gradients. Returns the final sequences (B, S, H, A), detached.

    Raises:
        NonDifferentiableCostError: ``cost_fn``'s output carries no gradient to the actions.
    """
    B, S = start.shape[:2]
    with torch.enable_grad():
        x = start.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for i in range(iterations):
            costs = solver._check_costs(cost_fn(x), B, S)
            if not costs.requires_grad:
                raise _not_differentiable(solver.name, "the costs it returned do not require grad")
            scored = torch.nan_to_num(costs.detach().to(solver.device, torch.float32), nan=math.inf)
            best.update(x.detach(), scored)
            if i == iterations - 1:
                break  # the last evaluation only scores
            finite = torch.isfinite(scored).to(costs.device)
            loss = torch.where(finite, costs, torch.zeros_like(costs)).sum()
            (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
            if grad is None:
                raise _not_differentiable(solver.name, "its costs do not depend on the actions through autograd")
            x.grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            opt.step()
            with torch.no_grad():
                if action_noise > 0:
                    x.add_(action_noise * solver._randn(*x.shape))
                x.copy_(solver._clamp(x))
    return x.detach()


class GD(Solver):
    """Adam over the action sequence, several restarts in parallel, batched over environments.

    Args:
        horizon, action_dim, low, high, seed, device: as for every ``Solver``.
        num_samples: S, restarts per environment, optimised in parallel (restart 0 starts
            at the warm start itself).
        iterations: cost evaluations per plan (one ``cost_fn`` call each; an Adam step
            follows each but the last).
        lr: Adam learning rate (absolute action units per step, roughly).
        init_std: std of the Gaussian noise added to the warm start for restarts 1..S-1.
        action_noise: std of Gaussian noise added to the actions after every step.
    """

    name = "gd"
    requires_grad = True

    def __init__(
        self,
        horizon: int,
        action_dim: int,
        low: Bound,
        high: Bound,
        num_samples: int = 100,
        iterations: int = 30,
        lr: float = 0.1,
        init_std: float = 1.0,
        action_noise: float = 0.0,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(horizon, action_dim, low, high, seed=seed, device=device)
        self._set_population(num_samples, iterations)
        self.lr = finite_float("lr", lr, low=0)
        self.init_std = finite_float("init_std", init_std, low=0, strict=False)
        self.action_noise = finite_float("action_noise", action_noise, low=0, strict=False)

    def call_sizes(self) -> list[int]:
        """S of each ``cost_fn`` call of one plan: ``num_samples`` for each iteration."""
        return [self.num_samples] * self.iterations

    def plan(self, cost_fn: CostFn, batch_size: int, init: torch.Tensor | None = None) -> PlanResult:
        """Minimise ``cost_fn`` for ``batch_size`` environments at once by gradient descent.

        Args:
            cost_fn: candidates (B, S, H, A) -> costs (B, S), differentiable; called once
                per iteration (with autograd enabled). NaN costs count as +inf.
            batch_size: B.
            init: optional warm start (B, H, A) or (H, A); clamped to bounds.

        Returns:
            PlanResult: ``actions`` (B, H, A) lowest-cost sequence evaluated, ``cost`` (B,);
            ``stats`` with ``iterations`` and ``cost_history`` ((iterations, B)).

        Raises:
            NonDifferentiableCostError: ``cost_fn`` is not differentiable.
        """
        B = positive_int("batch_size", batch_size)
        S, H, A = self.num_samples, self.horizon, self.action_dim
        mean = self._initial_mean(B, init)  # (B, H, A)
        start = mean[:, None].expand(B, S, H, A).clone()
        if S > 1:
            start[:, 1:] += self.init_std * self._randn(B, S - 1, H, A)
        best = BestSoFar(mean)
        gradient_descent(self, cost_fn, self._clamp(start), self.iterations, self.lr, self.action_noise, best)
        return best.result()
