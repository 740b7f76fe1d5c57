"""SIGReg: Sketched Isotropic Gaussian Regularisation (LeJEPA / LeWorldModel).

Pushes a batch of embeddings towards an isotropic standard Gaussian by testing
many random 1-D projections of it with the Epps-Pulley statistic: the squared
distance between the empirical characteristic function of the projected samples
and that of N(0, 1), exp(-t^2 / 2), integrated against a Gaussian window. A
collapsed (constant or low-rank) embedding scores high; N(0, I) scores ~0.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class SIGReg(nn.Module):
    """Epps-Pulley statistic averaged over random unit projections.

    Args:
        knots: integration points t in linspace(0, t_max, knots).
        num_projections: P random directions drawn per call.
        t_max: upper integration limit.

    The directions are resampled on every call from ``generator`` if one is passed
    to ``forward`` (drawn on the generator's device, then moved), else from torch's
    global RNG on the input's device, so ``torch.manual_seed`` makes training
    reproducible. The buffers are not persistent: they are rebuilt from the config
    and never appear in a checkpoint.
    """

    def __init__(self, knots: int = 17, num_projections: int = 512, t_max: float = 3.0):
        super().__init__()
        self.num_projections = num_projections
        t = torch.linspace(0.0, t_max, knots)
        dt = t_max / (knots - 1)
        # Trapezoid weights on [0, t_max], doubled because the integrand is even in t
        # (the integral runs over [-t_max, t_max]), times the Gaussian window.
        weights = torch.full((knots,), 2 * dt)
        weights[[0, -1]] = dt
        target = torch.exp(-t.square() / 2)  # characteristic function of N(0, 1)
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("target", target, persistent=False)
        self.register_buffer("weights", weights * target, persistent=False)

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z (T, N, D) -> scalar statistic (mean over T and projections, tested over N).

        Each time step is tested separately over its N batch samples.
        """
        if z.ndim != 3:
            raise ValueError(f"SIGReg expects z of shape (T, N, D), got {tuple(z.shape)}")
        z = z.float()  # the trigonometric sums need float32 even under autocast
        D, N = z.shape[-1], z.shape[-2]
        if generator is None:
            A = torch.randn(D, self.num_projections, device=z.device)
        else:
            A = torch.randn(D, self.num_projections, generator=generator, device=generator.device).to(z.device)
        A = A / A.norm(dim=0, keepdim=True)  # unit-norm columns
        x = (z @ A).unsqueeze(-1) * self.t  # (T, N, P, K)
        ecf_cos = x.cos().mean(dim=1)  # (T, P, K)
        ecf_sin = x.sin().mean(dim=1)
        err = (ecf_cos - self.target).square() + ecf_sin.square()  # (T, P, K)
        statistic = (err @ self.weights) * N  # (T, P)
        return statistic.mean()
