"""What every solver shares: argument checks, action bounds, the warm-start mean, its own
``torch.Generator``, and scoring candidates through ``cost_fn`` (shape check, NaN -> +inf,
best candidate seen so far).

Shapes: B environments, S candidates, H horizon (action blocks), A planning action size.
A solver subclasses ``Solver``, sets ``name``, and implements ``plan`` and ``call_sizes``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch

from planners.base import CostFn, PlanResult

__all__ = ["Bound", "NonDifferentiableCostError", "Solver", "positive_int", "finite_float"]

Bound = float | Sequence[float] | torch.Tensor


class NonDifferentiableCostError(ValueError):
    """A gradient solver was given a ``cost_fn`` whose cost has no gradient w.r.t. the actions."""


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (bools refused), else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def finite_float(name: str, value: object, low: float | None = None, strict: bool = True, high: float | None = None) -> float:
    """``value`` as a float if it is a finite number (> low, or >= low when not ``strict``; <= high).

    Raises:
        ValueError naming ``name``, the value and the expected range.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        what = "a finite float"
        if low is not None:
            what += f" {'>' if strict else '>='} {low:g}"
        if high is not None:
            what += f"{' and' if low is not None else ''} <= {high:g}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


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


class Solver:
    """Base of the batched solvers: bounds, seed, device, warm start and scoring.

    Args:
        horizon: H, number of planning steps (action blocks).
        action_dim: A, size of one planning action.
        low, high: action bounds, floats or (A,) sequences/tensors; ``low < high``.
        seed: seed of this solver's own ``torch.Generator``; two solvers built with the
            same arguments return identical plans for the same sequence of calls.
        device: where samples are drawn; ``cost_fn`` must accept tensors on it.

    Class attributes:
        name: the registry name.
        requires_grad: whether ``plan`` needs gradients of ``cost_fn`` (``MPCPolicy``
            enables autograd around ``plan`` only for such solvers).
    """

    name: str = "solver"
    requires_grad: bool = False

    def __init__(
        self,
        horizon: int,
        action_dim: int,
        low: Bound,
        high: Bound,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.horizon = positive_int("horizon", horizon)
        self.action_dim = positive_int("action_dim", action_dim)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.device = torch.device(device)
        low_t, high_t = _bound("low", low, self.action_dim), _bound("high", high, self.action_dim)
        if not (low_t < high_t).all():
            raise ValueError(f"low must be < high in every dimension, got low={low_t.tolist()}, high={high_t.tolist()}")
        self.low = low_t.to(self.device)  # (A,)
        self.high = high_t.to(self.device)  # (A,)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self._row_generators: list[torch.Generator] | None = None  # per-environment streams (`reseed`)

    # ------------------------------------------------------------------ description
    def settings(self) -> dict[str, Any]:
        """Every constructor argument with its value (JSON-serialisable), for reports."""
        out: dict[str, Any] = {}
        for name in inspect.signature(type(self).__init__).parameters:
            if name == "self":
                continue
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                value = value.tolist()
            elif isinstance(value, torch.device):
                value = str(value)
            out[name] = value
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k not in ("low", "high"))
        return f"{type(self).__name__}({args})"

    def call_sizes(self) -> list[int]:
        """S of each ``cost_fn`` call one ``plan`` makes, in order (one call per iteration)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget state kept between ``plan`` calls (none by default)."""

    def plan(self, cost_fn: CostFn, batch_size: int, init: torch.Tensor | None = None) -> PlanResult:
        """Minimise ``cost_fn`` (B, S, H, A) -> (B, S) for ``batch_size`` environments at once."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _set_population(self, num_samples: object, iterations: object | None = None,
                        num_elites: object | None = None) -> None:
        """Check and set ``num_samples`` (and ``iterations``, ``num_elites <= num_samples`` when given)."""
        self.num_samples = positive_int("num_samples", num_samples)
        if iterations is not None:
            self.iterations = positive_int("iterations", iterations)
        if num_elites is not None:
            self.num_elites = positive_int("num_elites", num_elites)
            if self.num_elites > self.num_samples:
                raise ValueError(f"num_elites={num_elites} must be <= num_samples={num_samples}")

    def _initial_mean(self, batch_size: int, init: torch.Tensor | None) -> torch.Tensor:
        """-> (B, H, A) starting mean: ``init`` clamped to the bounds, else the box centre."""
        shape = (batch_size, self.horizon, self.action_dim)
        if init is None:
            return ((self.low + self.high) / 2).expand(shape).clone()
        init = torch.as_tensor(init, dtype=torch.float32, device=self.device).detach()
        if init.shape == shape[1:]:
            init = init.expand(shape)
        if init.shape != shape:
            raise ValueError(f"init must have shape {shape} (B, H, A) or {shape[1:]}, got {tuple(init.shape)}")
        if not torch.isfinite(init).all():
            raise ValueError(f"init must be finite, got {int((~torch.isfinite(init)).sum())} NaN/inf values")
        return init.clamp(self.low, self.high).clone()

    def _clamp(self, actions: torch.Tensor) -> torch.Tensor:
        """(..., A) -> the same clamped into [low, high]."""
        return actions.clamp(self.low, self.high)

    def reseed(self, seed: int | Sequence[int]) -> None:
        """Restart the random draws.

        Args:
            seed: an int seeds the one generator the whole batch draws from (what the
                constructor does); a sequence of B ints gives each environment row its own
                generator: row b of every draw (B, ...) then comes from ``seed[b]``, so an
                environment's plans do not depend on which environments share its batch
                (``wm eval --batch-envs``). Every ``plan`` must then be for B environments.
        """
        if isinstance(seed, bool) or not isinstance(seed, (int, Sequence)) or isinstance(seed, str):
            raise ValueError(f"seed must be an int or a sequence of ints (one per environment), got {seed!r}")
        if isinstance(seed, int):
            self.generator.manual_seed(seed)
            self._row_generators = None
            return
        seeds = list(seed)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**64 for s in seeds):
            raise ValueError(f"per-environment seeds must be a non-empty sequence of ints in [0, 2**64), got {seeds!r}")
        self._row_generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    def _draw(self, fn: Any, shape: tuple[int, ...]) -> torch.Tensor:
        """``fn(shape)`` from this solver's generator, or row by row from the per-environment ones."""
        rows = self._row_generators
        if rows is None:
            return fn(shape, generator=self.generator, device=self.device)
        if not shape or shape[0] != len(rows):
            raise ValueError(f"a draw of shape {tuple(shape)} with {len(rows)} per-environment random streams "
                             f"(reseed): expected {len(rows)} rows, one per environment")
        return torch.stack([fn(shape[1:], generator=g, device=self.device) for g in rows])

    def _randn(self, *shape: int) -> torch.Tensor:
        """Standard normal samples from this solver's generator(s)."""
        return self._draw(torch.randn, shape)

    def _rand(self, *shape: int) -> torch.Tensor:
        """Uniform [0, 1) samples from this solver's generator(s)."""
        return self._draw(torch.rand, shape)

    @staticmethod
    def _check_costs(costs: object, batch: int, samples: int) -> torch.Tensor:
        """``cost_fn``'s output checked to be a (B, S) tensor; returned as is (grad kept)."""
        if not isinstance(costs, torch.Tensor):
            raise ValueError(f"cost_fn must return a torch.Tensor of shape (B, S) = {(batch, samples)}, got {type(costs).__name__}")
        if costs.shape != (batch, samples):
            raise ValueError(f"cost_fn must return shape (B, S) = {(batch, samples)}, got {tuple(costs.shape)}")
        return costs

    def _score(self, cost_fn: CostFn, samples: torch.Tensor) -> torch.Tensor:
        """samples (B, S, H, A) -> float32 costs (B, S) on the solver's device, NaN as +inf."""
        B, S = samples.shape[:2]
        costs = self._check_costs(cost_fn(samples), B, S)
        return torch.nan_to_num(costs.detach().to(self.device, torch.float32), nan=math.inf)


class BestSoFar:
    """The lowest-cost candidate seen per environment over a plan's iterations."""

    def __init__(self, start: torch.Tensor) -> None:
        """start (B, H, A): returned if no candidate has a finite cost."""
        B = start.shape[0]
        self.actions = start.clone()  # (B, H, A)
        self.cost = torch.full((B,), math.inf, device=start.device)  # (B,)
        self.history: list[torch.Tensor] = []  # each (B,)
        self._rows = torch.arange(B, device=start.device)

    def update(self, samples: torch.Tensor, costs: torch.Tensor) -> None:
        """samples (B, S, H, A), costs (B, S) (NaN already +inf)."""
        it_cost, it_idx = costs.min(dim=1)  # (B,), (B,)
        improved = it_cost < self.cost
        self.cost = torch.where(improved, it_cost, self.cost)
        self.actions = torch.where(improved[:, None, None], samples[self._rows, it_idx].detach(), self.actions)
        self.history.append(it_cost)

    def result(self, **stats: Any) -> PlanResult:
        """PlanResult with ``stats``, ``iterations`` and ``cost_history`` ((iterations, B), CPU)."""
        stats = {"iterations": len(self.history), **stats, "cost_history": torch.stack(self.history).cpu()}
        return PlanResult(actions=self.actions, cost=self.cost, stats=stats)
