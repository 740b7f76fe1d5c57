"""Anti-collapse and trajectory regularisers for JEPA world models, as ``nn.Module``s.

Every regulariser takes embeddings ``z`` of shape ``(T, N, D)``, time-major: T time steps
(or views), each a batch of N samples of D features (a batch without time: ``z[None]``).
``forward(z)`` returns the weighted scalar loss; ``terms(z)`` returns the named terms
(``dict[str, Tensor]`` of scalars, ``"loss"`` being the weighted total), which a model can
log as they are. They compute in float32 whatever the autocast setting.

    name            what it penalises                                        reference
    sigreg          distance of random 1-D projections' empirical characteristic
                    function from that of N(0, 1) (Epps-Pulley)               LeJEPA / LeWorldModel
    vicreg          per-feature std below gamma (hinge) + off-diagonal covariance   Bardes et al. 2022
    visreg          centre + per-feature std != 1 (scale) + sorted random projections
                    vs Gaussian quantiles (shape, sliced Wasserstein)        Wu, Balestriero, Levine 2026
    straightening   1 - cosine similarity of consecutive latent velocities   temporal straightening

Multi-process training (DDP): the batch statistics of ``sigreg``, ``vicreg`` and ``visreg``
are computed over the union of all ranks' batches in train mode (``sync=True``, the
default; see ``worldmodel.distributed`` for why the gradients then equal the
single-process ones); ``straightening`` is a per-sample mean and needs no communication.
The random projections of ``sigreg`` and ``visreg`` are the same on every rank: in train
mode they are drawn from a CPU generator seeded by ``(seed, step, call)``, where
``set_step`` (called by the training loop before each micro-batch) fixes ``seed`` and
``step``; without ``set_step`` the seed is drawn once from torch's RNG (rank 0's, broadcast).
In eval mode nothing is communicated (each rank evaluates its own batch) and projections
come from torch's global RNG, or from the ``generator`` passed to ``forward``.

``get_regularizer(name, **kwargs)`` builds one by name (``REGULARIZERS``), suggesting the
closest name on a typo.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel.distributed import all_reduce_sum, broadcast_int, gather_batch, is_distributed


class UnknownRegularizerError(ValueError):
    """A regulariser name that is not in ``REGULARIZERS``."""


def _as_tnd(z: torch.Tensor, who: str, min_t: int = 1, min_n: int = 1) -> torch.Tensor:
    """Check ``z`` is (T, N, D) with T >= min_t, N >= min_n; return it in float32."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{who} expects a torch.Tensor z of shape (T, N, D), got {type(z).__name__}")
    if z.ndim != 3:
        raise ValueError(f"{who} expects z of shape (T, N, D), got {tuple(z.shape)}")
    T, N, D = z.shape
    if T < min_t or N < min_n or D < 1:
        raise ValueError(f"{who} needs z (T, N, D) with T >= {min_t}, N >= {min_n}, D >= 1, got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"{who} expects floating-point embeddings, got dtype {z.dtype}")
    return z.float()


def _no_autocast(device: torch.device) -> Any:
    """Disable autocast on ``device`` (the statistics need float32 matrix products)."""
    try:
        return torch.autocast(device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not know
        return contextlib.nullcontext()


def _check_positive(who: str, **values: float) -> None:
    for name, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{who}: {name} must be a finite number >= 0, got {v!r}")


class ProjectedRegularizer(nn.Module):
    """Base of the regularisers that test random 1-D projections (``sigreg``, ``visreg``).

    Holds the synchronised projection seed: ``set_step(seed, step)`` makes the next
    train-mode calls draw from ``(seed, step, 0)``, ``(seed, step, 1)``, ...; the same on
    every rank and, on resume, the same as an uninterrupted run.
    """

    def __init__(self, num_projections: int, sync: bool = True):
        super().__init__()
        if not isinstance(num_projections, int) or isinstance(num_projections, bool) or num_projections < 1:
            raise ValueError(f"{type(self).__name__}: num_projections must be an integer >= 1, got {num_projections!r}")
        self.num_projections = num_projections
        self.sync = bool(sync)
        self._seed: int | None = None
        self._step = 0
        self._call = 0

    def set_step(self, seed: int, step: int) -> None:
        """Seed the train-mode projections from ``(seed, step)``; calls within a step are counted."""
        self._seed, self._step, self._call = int(seed), int(step), 0

    def _synced(self) -> bool:
        return self.training and self.sync and is_distributed()

    def projections(self, D: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """Unit-norm random directions (D, P) as columns, float32 on ``device``."""
        if generator is not None:
            A = torch.randn(D, self.num_projections, generator=generator, device=generator.device).to(device)
        elif self.training:
            if self._seed is None:  # no set_step: one seed from torch's RNG, rank 0's under DDP
                self._seed = broadcast_int(int(torch.randint(0, 2**62, (1,)).item()))
            words = np.random.SeedSequence([self._seed, self._step, self._call]).generate_state(2, dtype=np.uint32)
            self._call += 1
            g = torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))
            A = torch.randn(D, self.num_projections, generator=g).to(device)
        else:
            A = torch.randn(D, self.num_projections, device=device)
        return A / A.norm(dim=0, keepdim=True)


class _ECFSums(torch.autograd.Function):
    """``stack([cos(x t).sum(1), sin(x t).sum(1)])`` for x (T, N, P), t (K,) -> (2, T, P, K).

    Autograd would save x t and recompute sine and cosine in the backward pass (and negate
    one); this saves the cosines and sines the forward computed, so the backward is two
    products and sums: d/dx_n = sum_k t_k (cos(x_n t_k) g_sin - sin(x_n t_k) g_cos).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xt = x.unsqueeze(-1) * t  # (T, N, P, K)
        cos, sin = xt.cos(), xt.sin()
        ctx.save_for_backward(cos, sin, t)
        return torch.stack([cos.sum(dim=1), sin.sum(dim=1)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        cos, sin, t = ctx.saved_tensors
        g_cos, g_sin = (grad[0] * t).unsqueeze(1), (grad[1] * t).unsqueeze(1)  # (T, 1, P, K)
        return (cos * g_sin).sum(-1) - (sin * g_cos).sum(-1), None


def _ecf_sums(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Sums over N of cos and sin of x (T, N, P) times each knot t (K,): (2, T, P, K) (``_ECFSums``)."""
    return _ECFSums.apply(x, t)


class SIGReg(ProjectedRegularizer):
    """Epps-Pulley statistic of random unit projections, averaged over projections and T.

    Args:
        knots: integration points t in linspace(0, t_max, knots).
        num_projections: P random directions drawn per call.
        t_max: upper integration limit.
        sync: under DDP in train mode, all-reduce the empirical characteristic function
            (weighted by each rank's sample count) so the statistic is that of the union batch.

    For each time step, with x_n = <z_n, a_p> the N projected samples,
    ``N_total * sum_k w_k |mean_n exp(i t_k x_n) - exp(-t_k^2/2)|^2`` with trapezoid weights
    ``w_k`` on [-t_max, t_max] times the Gaussian window ``exp(-t_k^2/2)``. N(0, I) scores
    ~1; collapsed embeddings score high. The buffers are not persistent (never in a checkpoint).
    """

    def __init__(self, knots: int = 17, num_projections: int = 512, t_max: float = 3.0, sync: bool = True):
        super().__init__(num_projections, sync)
        if not isinstance(knots, int) or knots < 2:
            raise ValueError(f"SIGReg: knots must be an integer >= 2, got {knots!r}")
        if not (isinstance(t_max, (int, float)) and math.isfinite(t_max) and t_max > 0):
            raise ValueError(f"SIGReg: t_max must be a finite number > 0, got {t_max!r}")
        t = torch.linspace(0.0, float(t_max), knots)
        dt = float(t_max) / (knots - 1)
        # Trapezoid weights on [0, t_max], doubled because the integrand is even in t
        # (the integral runs over [-t_max, t_max]), times the Gaussian window.
        weights = torch.full((knots,), 2 * dt)
        weights[[0, -1]] = dt
        target = torch.exp(-t.square() / 2)  # characteristic function of N(0, 1)
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("target", target, persistent=False)
        self.register_buffer("weights", weights * target, persistent=False)

    def terms(self, z: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """z (T, N, D) -> ``{"loss": statistic}`` (float32 scalar)."""
        return {"loss": self(z, generator)}

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z (T, N, D) -> scalar statistic (mean over T and projections, tested over N).

        Each time step is tested separately over its N batch samples (all ranks' samples
        under DDP in train mode: every rank must pass the same T and D).
        """
        z = _as_tnd(z, "SIGReg")
        with _no_autocast(z.device):
            A = self.projections(z.shape[-1], z.device, generator)
            n = torch.tensor(float(z.shape[1]), device=z.device)
            sums = _ecf_sums(z @ A, self.t)  # (2, T, P, K)
            if self._synced():
                sums = all_reduce_sum(sums)  # the union batch's characteristic function
                n = all_reduce_sum(n)
            ecf_cos, ecf_sin = sums[0] / n, sums[1] / n
            err = (ecf_cos - self.target).square() + ecf_sin.square()  # (T, P, K)
            statistic = (err @ self.weights) * n  # (T, P)
            return statistic.mean()


class VICReg(nn.Module):
    """VICReg's variance and covariance terms (Bardes, Ponce, LeCun, ICLR 2022).

    Args:
        std_coeff: weight of the variance hinge (25 in the paper).
        cov_coeff: weight of the covariance term (1 in the paper).
        gamma: target standard deviation of each feature.
        eps: added to the variance before the square root.
        sync: under DDP in train mode, compute the statistics over the union batch.
        cov_norm: ``"dim"`` divides the summed squared off-diagonal covariances by D (the
            paper), ``"pairs"`` by D (D - 1) (EB-JEPA's CovarianceLoss, which the ``pldm``
            family's published coefficients assume).

    Per time step, over the N samples: ``variance = mean_j relu(gamma - sqrt(Var[z_j] + eps))``
    (unbiased variance) and ``covariance = sum_{i != j} C_ij^2 / D`` (or ``/ D (D - 1)``)
    with C the unbiased covariance matrix; each averaged over T. The invariance (similarity) term of VICReg is
    the model's prediction loss and is not part of this module.
    """

    def __init__(self, std_coeff: float = 25.0, cov_coeff: float = 1.0, gamma: float = 1.0, eps: float = 1e-4,
                 sync: bool = True, cov_norm: str = "dim"):
        super().__init__()
        _check_positive("VICReg", std_coeff=std_coeff, cov_coeff=cov_coeff, gamma=gamma, eps=eps)
        if cov_norm not in ("dim", "pairs"):
            raise ValueError(f"VICReg: cov_norm must be 'dim' or 'pairs', got {cov_norm!r}")
        self.cov_norm = cov_norm
        self.std_coeff, self.cov_coeff, self.gamma, self.eps = float(std_coeff), float(cov_coeff), float(gamma), float(eps)
        self.sync = bool(sync)

    def terms(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """z (T, N, D), N >= 2 -> ``{"loss", "variance", "covariance"}`` scalars."""
        z = _as_tnd(z, "VICReg", min_n=2)
        with _no_autocast(z.device):
            if self.training and self.sync and is_distributed():
                z = gather_batch(z, dim=1)
            T, N, D = z.shape
            zc = z - z.mean(dim=1, keepdim=True)
            cov = zc.transpose(1, 2) @ zc / (N - 1)  # (T, D, D)
            var = torch.diagonal(cov, dim1=1, dim2=2)  # (T, D)
            variance = F.relu(self.gamma - torch.sqrt(var + self.eps)).mean()
            off = cov.square().sum(dim=(1, 2)) - var.square().sum(dim=1)  # (T,)
            covariance = (off / (D if self.cov_norm == "dim" else max(D * (D - 1), 1))).mean()
            loss = self.std_coeff * variance + self.cov_coeff * covariance
        return {"loss": loss, "variance": variance, "covariance": covariance}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (T, N, D) -> ``std_coeff * variance + cov_coeff * covariance`` (scalar)."""
        return self.terms(z)["loss"]


class VISReg(ProjectedRegularizer):
    """VISReg's regulariser: centre, scale and shape terms (Wu, Balestriero, Levine 2026,
    "VISReg: Variance-Invariance-Sketching Regularization for JEPA training",
    arXiv:2606.02572; formula as in the authors' code, github.com/HaiyuWu/visreg,
    ``visreg/losses/visreg.py``).

    Args:
        num_projections: K random unit directions per call (4096 in the authors' config).
        scale_weight, shape_weight, center_weight: term weights (1, 1, 1 there).
        sync: under DDP in train mode, compute the statistics over the union batch.

    Per time step, over the N samples, with mu_j the mean and s_j = sqrt(mean_n (z_nj - mu_j)^2)
    (biased std, clamped at 1e-6) of feature j:
    ``center = mean_j mu_j^2``; ``scale = mean_j (s_j - 1)^2``; ``shape = mean_{k,i}
    (sort_n(<u_n, w_k>)_i - Phi^-1(i / (N + 1)))^2`` with u = (z - mu) / s (s not
    differentiated: the shape term does not act on the scale) and Phi^-1 the standard normal
    quantile: the squared 1-D Wasserstein-2 distance of each sorted projection to N(0, 1).
    All averaged over T. The invariance term is the model's prediction loss.
    """

    def __init__(self, num_projections: int = 256, scale_weight: float = 1.0, shape_weight: float = 1.0,
                 center_weight: float = 1.0, sync: bool = True):
        super().__init__(num_projections, sync)
        _check_positive("VISReg", scale_weight=scale_weight, shape_weight=shape_weight, center_weight=center_weight)
        self.scale_weight, self.shape_weight, self.center_weight = float(scale_weight), float(shape_weight), float(center_weight)

    @staticmethod
    def gaussian_quantiles(n: int, device: torch.device) -> torch.Tensor:
        """Phi^-1(i / (n + 1)) for i = 1..n, float32 (n,)."""
        q = torch.arange(1, n + 1, device=device, dtype=torch.float32) / (n + 1)
        return torch.erfinv(2 * q - 1) * math.sqrt(2.0)

    def terms(self, z: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """z (T, N, D), N >= 2 -> ``{"loss", "center", "scale", "shape"}`` scalars."""
        z = _as_tnd(z, "VISReg", min_n=2)
        with _no_autocast(z.device):
            if self._synced():
                z = gather_batch(z, dim=1)
            T, N, D = z.shape
            mu = z.mean(dim=1, keepdim=True)  # (T, 1, D)
            center = mu.square().mean()
            zc = z - mu
            std = zc.square().mean(dim=1, keepdim=True).sqrt().clamp_min(1e-6)  # (T, 1, D)
            scale = (std - 1.0).square().mean()
            W = self.projections(D, z.device, generator)  # (D, K)
            proj = (zc / std.detach()) @ W  # (T, N, K)
            target = self.gaussian_quantiles(N, z.device).view(1, N, 1)
            shape = (proj.sort(dim=1).values - target).square().mean()
            loss = self.center_weight * center + self.scale_weight * scale + self.shape_weight * shape
        return {"loss": loss, "center": center, "scale": scale, "shape": shape}

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z (T, N, D) -> weighted sum of the centre, scale and shape terms (scalar)."""
        return self.terms(z, generator)["loss"]


class Straightening(nn.Module):
    """Temporal straightening: penalise the curvature of latent trajectories.

    With velocities ``v_t = z_{t+1} - z_t``, the loss is ``mean_{t,n} (1 - cos(v_t, v_{t+1}))``
    over the T - 2 consecutive velocity pairs of each of the N trajectories: 0 for
    trajectories moving along straight lines, 2 for ones that reverse at every step.
    ``cos`` uses ``F.cosine_similarity`` (each norm clamped at ``eps``).
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        _check_positive("Straightening", eps=eps)
        self.eps = float(eps)

    def terms(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """z (T, N, D), T >= 3 -> ``{"loss", "cosine"}`` (cosine: the mean cosine similarity)."""
        z = _as_tnd(z, "Straightening", min_t=3)
        with _no_autocast(z.device):
            v = z[1:] - z[:-1]  # (T - 1, N, D)
            cos = F.cosine_similarity(v[1:], v[:-1], dim=-1, eps=self.eps).mean()
        return {"loss": 1.0 - cos, "cosine": cos}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (T, N, D) -> mean (1 - cosine similarity) of consecutive velocities (scalar)."""
        return self.terms(z)["loss"]


#: name -> (class, one-line help)
REGULARIZERS: dict[str, tuple[type[nn.Module], str]] = {
    "sigreg": (SIGReg, "Epps-Pulley test of random projections against N(0, 1) (LeJEPA, LeWorldModel)"),
    "vicreg": (VICReg, "variance hinge + off-diagonal covariance (VICReg)"),
    "visreg": (VISReg, "centre + scale + sliced-Wasserstein shape vs N(0, 1) (VISReg)"),
    "straightening": (Straightening, "1 - cosine of consecutive latent velocities (temporal straightening)"),
}


def get_regularizer(name: str, **kwargs: Any) -> nn.Module:
    """Build the regulariser registered as ``name`` with keyword arguments ``kwargs``.

    Raises:
        UnknownRegularizerError: ``name`` is not registered (the closest name is suggested).
        ValueError: a keyword the regulariser does not take (the valid ones are listed), or a bad value.
    """
    if not isinstance(name, str) or name not in REGULARIZERS:
        close = difflib.get_close_matches(str(name), list(REGULARIZERS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownRegularizerError(f"unknown regularizer {name!r}{hint} (registered: {', '.join(REGULARIZERS)})")
    cls = REGULARIZERS[name][0]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"regularizer {name!r} takes no argument(s) {unknown}; valid: {valid}")
    return cls(**kwargs)


def set_regularizer_step(model: nn.Module, seed: int, step: int) -> None:
    """``set_step(seed, step)`` on every projection-based regulariser inside ``model``."""
    for m in model.modules():
        if isinstance(m, ProjectedRegularizer):
            m.set_step(seed, step)
