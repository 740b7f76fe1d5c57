"""iCEM: the improved cross-entropy method of Pinneri et al. (2020), batched over environments.

Differences from CEM (``planners/cem.py``), each from the paper:

- coloured noise: each candidate's deviation from the mean has a power spectrum
  ~ 1/f^beta along time (``beta=0``: white noise, plain CEM), so sampled sequences are
  smooth and reach further;
- the population decays by a factor ``decay`` per iteration, ``S_i = max(S / decay^i, 2k)``;
- a fraction ``keep_fraction`` of the elites is carried into the next iteration, and
  across ``plan`` calls: after ``shift(steps)`` (``MPCPolicy`` calls it with the blocks
  it executed) the last plan's elites, shifted in time, seed the next plan;
- mean and std move with momentum ``momentum`` towards the elites' statistics;
- the best candidate seen is executed (``execute_best``), not the mean.

Sources of the defaults: Pinneri et al., "Sample-efficient Cross-Entropy Method for
Real-time Planning", CoRL 2020: decay 1.25, keep fraction 0.3, momentum 0.1, beta 2.0
(the paper uses 2.0-3.5 per task), best executed. Samples, iterations, elites and initial
std as this platform's reference for the same models, stable-worldmodel's
``ICEMSolver`` (300 samples, 30 iterations, top 30, var_scale 1, noise_beta 2, alpha 0.1).
"""

from __future__ import annotations

import torch

from planners.base import CostFn, PlanResult
from planners.solver import BestSoFar, Bound, Solver, finite_float, positive_int

__all__ = ["ICEM", "coloured_noise"]


def _colouring_matrix(horizon: int, beta: float, device: torch.device) -> torch.Tensor:
    """(H, H) real matrix M: ``white (..., H) @ M.T`` has spectrum ~ 1/f^beta along H and
    unit variance at every time step (exact normalisation, not per sample)."""
    if horizon == 1 or beta == 0:
        return torch.eye(horizon, device=device)
    freqs = torch.fft.rfftfreq(horizon, device=device)  # (H//2 + 1,)
    scale = torch.empty_like(freqs)
    scale[1:] = freqs[1:].pow(-beta / 2)  # amplitude ~ f^(-beta/2): power ~ f^-beta
    scale[0] = scale[1]  # the mean (f = 0) gets the lowest frequency's amplitude
    eye = torch.eye(horizon, device=device)
    m = torch.fft.irfft(torch.fft.rfft(eye, dim=-1) * scale, n=horizon, dim=-1)  # row t: response to impulse t
    m = m.T  # column t: the colouring applied to white noise's step t
    return m / m.pow(2).sum(dim=1, keepdim=True).sqrt()  # unit variance per output step


def coloured_noise(shape: tuple[int, ...], beta: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard-normal noise of ``shape`` (..., H, A), coloured along H with exponent ``beta``."""
    *lead, H, A = shape
    white = torch.randn((*lead, A, H), generator=generator, device=device)
    return (white @ _colouring_matrix(H, beta, device).T).transpose(-1, -2)


class ICEM(Solver):
    """Improved CEM (Pinneri et al. 2020), batched over environments.

    Args:
        horizon, action_dim, low, high, seed, device: as for every ``Solver``.
        num_samples: S_0, candidates per environment in the first iteration.
        iterations: iterations per plan; ``cost_fn`` is called once per iteration.
        num_elites: k, elites used to refit mean and std (``1 <= k <= S_0``).
        init_std: initial standard deviation of the sampling distribution.
        min_std: floor of the std after each refit.
        beta: coloured-noise exponent (power spectrum ~ 1/f^beta along time; 0 = white).
        decay: population decay per iteration (>= 1): ``S_i = max(round(S_0 / decay^i), 2k)``,
            never above S_0.
        keep_fraction: fraction of the k elites carried into the next iteration and, shifted,
            into the next plan (in [0, 1]).
        momentum: weight of the old mean/std in each refit (in [0, 1); 0 = plain CEM refit).
        execute_best: return the best candidate seen (True, the paper's choice), else the
            last iteration's mean (candidate 0 of the last iteration, whose cost is known).
    """

    name = "icem"

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
        beta: float = 2.0,
        decay: float = 1.25,
        keep_fraction: float = 0.3,
        momentum: float = 0.1,
        execute_best: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(horizon, action_dim, low, high, seed=seed, device=device)
        self._set_population(num_samples, iterations, num_elites)
        self.init_std = finite_float("init_std", init_std, low=0)
        self.min_std = finite_float("min_std", min_std, low=0, strict=False)
        self.beta = finite_float("beta", beta, low=0, strict=False)
        self.decay = finite_float("decay", decay, low=1, strict=False)
        self.keep_fraction = finite_float("keep_fraction", keep_fraction, low=0, strict=False, high=1)
        self.momentum = finite_float("momentum", momentum, low=0, strict=False)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be a finite float in [0, 1), got {momentum!r}")
        if not isinstance(execute_best, bool):
            raise ValueError(f"execute_best must be a bool, got {execute_best!r}")
        self.execute_best = execute_best
        self.num_keep = int(round(self.keep_fraction * self.num_elites))
        self._colour = _colouring_matrix(self.horizon, self.beta, self.device)  # (H, H)
        self.reset()

    def reset(self) -> None:
        """Forget the elites kept from the last plan (``MPCPolicy.reset`` calls this)."""
        self._kept: torch.Tensor | None = None  # (B, num_keep, H, A) elites of the last plan

    def shift(self, steps: int) -> None:
        """The first ``steps`` blocks of the last plan were executed: shift its kept elites
        ``steps`` blocks earlier in time (the freed tail is filled at the next plan)."""
        steps = positive_int("steps", steps)
        if self._kept is None:
            return
        if steps >= self.horizon:
            self._kept = None
        else:
            self._kept = self._kept[:, :, steps:]

    def call_sizes(self) -> list[int]:
        """S_i of each iteration: ``max(round(S_0 / decay^i), 2k)``, capped at S_0."""
        floor = min(2 * self.num_elites, self.num_samples)
        return [max(int(round(self.num_samples / self.decay**i)), floor) for i in range(self.iterations)]

    def _noise(self, B: int, S: int) -> torch.Tensor:
        """(B, S, H, A) unit-variance noise, coloured along H."""
        white = self._randn(B, S, self.action_dim, self.horizon)
        return (white @ self._colour.T).transpose(-1, -2)

    @torch.no_grad()
    def plan(self, cost_fn: CostFn, batch_size: int, init: torch.Tensor | None = None) -> PlanResult:
        """Minimise ``cost_fn`` for ``batch_size`` environments at once.

        Args:
            cost_fn: candidates (B, S_i, H, A) -> costs (B, S_i); called once per iteration
                with the sizes of ``call_sizes()``. NaN costs count as +inf.
            batch_size: B. A different B than the last plan's drops the kept elites.
            init: optional warm start for the mean, (B, H, A) or (H, A); clamped to bounds.

        Returns:
            PlanResult: ``actions`` (B, H, A), ``cost`` (B,) its cost; ``stats`` with
            ``iterations``, ``std_mean``, ``samples`` (the S_i) and ``cost_history``
            ((iterations, B), each iteration's lowest cost).
        """
        B = positive_int("batch_size", batch_size)
        K, H = self.num_elites, self.horizon
        mean = self._initial_mean(B, init)  # (B, H, A)
        std = torch.full_like(mean, self.init_std)  # (B, H, A)
        best = BestSoFar(mean)
        rows = torch.arange(B, device=self.device)

        kept = self._kept
        if kept is not None and kept.shape[0] != B:
            kept = None  # another batch of environments
        if kept is not None and kept.shape[2] < H:  # shifted: fill the freed tail from the new mean
            kept = torch.cat([kept, mean[:, None, kept.shape[2] :].expand(-1, kept.shape[1], -1, -1)], dim=2)

        sizes = self.call_sizes()
        last = mean
        for S in sizes:
            samples = mean.unsqueeze(1) + std.unsqueeze(1) * self._noise(B, S)  # (B, S, H, A)
            samples[:, 0] = mean
            if kept is not None:
                n = min(kept.shape[1], S - 1)
                samples[:, 1 : 1 + n] = kept[:, :n]
            samples = self._clamp(samples)

            costs = self._score(cost_fn, samples)  # (B, S)
            best.update(samples, costs)
            last = samples[:, 0]

            order = costs.argsort(dim=1)[:, :K]  # (B, K) elites, best first
            elites = samples[rows[:, None], order]  # (B, K, H, A)
            kept = elites[:, : self.num_keep] if self.num_keep else None
            a = self.momentum
            mean = a * mean + (1 - a) * elites.mean(dim=1)
            std = (a * std + (1 - a) * elites.std(dim=1, unbiased=False)).clamp_min(self.min_std)

        self._kept = None if kept is None else kept.clone()
        result = best.result(std_mean=std.mean().item(), samples=sizes)  # .item() syncs the device
        if not self.execute_best:
            result.actions = last
            result.cost = costs[:, 0].clone()
        return result
