"""Cross-entropy method (CEM) over action sequences, batched over environments.

One Gaussian per environment over its (H, A) action sequence. Each iteration samples
S candidates around the mean (candidate 0 is the mean itself, as in iCEM), clamps them
to the action bounds, scores every environment's candidates in ONE ``cost_fn`` call,
refits mean and std to the top-k elites and floors the std at ``min_std``. The answer
is the lowest-cost candidate seen over all iterations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from planners.base import CostFn, PlanResult

__all__ = ["CEM"]

Bound = float | Sequence[float] | torch.Tensor


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _bound(name: str, value: Bound, action_dim: int) -> torch.Tensor:
    """A scalar or (A,) bound -> float32 (A,) tensor."""
    try:
        t = torch.as_tensor(value, dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a float or a sequence of {action_dim} floats, got {value!r}") from e
    if t.ndim == 0:
        t = t.expand(action_dim)
    if t.shape != (action_dim,):
        raise ValueError(f"{name} must be a float or have shape ({action_dim},), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t.clone()


class CEM:
    """Cross-entropy method planner, batched over environments.

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
        self.horizon = _positive_int("horizon", horizon)
        self.action_dim = _positive_int("action_dim", action_dim)
        self.num_samples = _positive_int("num_samples", num_samples)
        self.iterations = _positive_int("iterations", iterations)
        self.num_elites = _positive_int("num_elites", num_elites)
        if self.num_elites > self.num_samples:
            raise ValueError(f"num_elites={num_elites} must be <= num_samples={num_samples}")
        if not (isinstance(init_std, (int, float)) and math.isfinite(init_std) and init_std > 0):
            raise ValueError(f"init_std must be a finite float > 0, got {init_std!r}")
        if not (isinstance(min_std, (int, float)) and math.isfinite(min_std) and min_std >= 0):
            raise ValueError(f"min_std must be a finite float >= 0, got {min_std!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.init_std = float(init_std)
        self.min_std = float(min_std)
        self.seed = seed
        self.device = torch.device(device)

        low_t, high_t = _bound("low", low, self.action_dim), _bound("high", high, self.action_dim)
        if not (low_t < high_t).all():
            raise ValueError(f"low must be < high in every dimension, got low={low_t.tolist()}, high={high_t.tolist()}")
        self.low = low_t.to(self.device)  # (A,)
        self.high = high_t.to(self.device)  # (A,)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __repr__(self) -> str:
        return (
            f"CEM(horizon={self.horizon}, action_dim={self.action_dim}, num_samples={self.num_samples}, "
            f"iterations={self.iterations}, num_elites={self.num_elites}, init_std={self.init_std}, "
            f"min_std={self.min_std}, seed={self.seed}, device='{self.device}')"
        )

    def _initial_mean(self, batch_size: int, init: torch.Tensor | None) -> torch.Tensor:
        """-> (B, H, A) starting mean: ``init`` clamped to the bounds, else the box centre."""
        shape = (batch_size, self.horizon, self.action_dim)
        if init is None:
            return ((self.low + self.high) / 2).expand(shape).clone()
        init = torch.as_tensor(init, dtype=torch.float32, device=self.device)
        if init.shape == shape[1:]:
            init = init.expand(shape)
        if init.shape != shape:
            raise ValueError(f"init must have shape {shape} (B, H, A) or {shape[1:]}, got {tuple(init.shape)}")
        return init.clamp(self.low, self.high).clone()

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
        B = _positive_int("batch_size", batch_size)
        S, K, H, A = self.num_samples, self.num_elites, self.horizon, self.action_dim
        mean = self._initial_mean(B, init)  # (B, H, A)
        std = torch.full_like(mean, self.init_std)  # (B, H, A)
        best_actions = mean.clone()  # (B, H, A)
        best_cost = torch.full((B,), math.inf, device=self.device)  # (B,)
        history = []
        rows = torch.arange(B, device=self.device)

        for _ in range(self.iterations):
            # Sample around the mean; keep the mean itself as candidate 0.
            noise = torch.randn((B, S, H, A), generator=self.generator, device=self.device)
            samples = mean.unsqueeze(1) + std.unsqueeze(1) * noise  # (B, S, H, A)
            samples[:, 0] = mean
            samples = samples.clamp(self.low, self.high)

            # Score every environment's candidates in one call.
            costs = cost_fn(samples)
            if costs.shape != (B, S):
                raise ValueError(f"cost_fn must return shape (B, S) = {(B, S)}, got {tuple(costs.shape)}")
            costs = torch.nan_to_num(costs.to(self.device, torch.float32), nan=math.inf)

            # Remember the best candidate seen so far.
            it_cost, it_idx = costs.min(dim=1)  # (B,), (B,)
            improved = it_cost < best_cost
            best_cost = torch.where(improved, it_cost, best_cost)
            best_actions = torch.where(improved[:, None, None], samples[rows, it_idx], best_actions)
            history.append(it_cost)

            # Refit the Gaussian to the elites.
            elite_idx = costs.topk(K, dim=1, largest=False).indices  # (B, K)
            elites = samples[rows[:, None], elite_idx]  # (B, K, H, A)
            mean = elites.mean(dim=1)
            std = elites.std(dim=1, unbiased=False).clamp_min(self.min_std)

        stats = {
            "iterations": self.iterations,
            "std_mean": std.mean().item(),  # .item() syncs the device
            "cost_history": torch.stack(history).cpu(),  # (iterations, B)
        }
        return PlanResult(actions=best_actions, cost=best_cost, stats=stats)
