"""Regularisers against reference formulas written out independently (numpy loops)."""

from statistics import NormalDist

import numpy as np
import pytest
import torch

from worldmodel.regularizers import (
    REGULARIZERS,
    SIGReg,
    Straightening,
    UnknownRegularizerError,
    VICReg,
    VISReg,
    get_regularizer,
    set_regularizer_step,
)


def _directions(D: int, P: int, seed: int) -> np.ndarray:
    """The unit directions a regulariser draws from ``torch.Generator().manual_seed(seed)``."""
    a = torch.randn(D, P, generator=torch.Generator().manual_seed(seed)).double().numpy()
    return a / np.linalg.norm(a, axis=0, keepdims=True)


def sigreg_reference(z: np.ndarray, a: np.ndarray, knots: int, t_max: float) -> float:
    """N * integral over [-t_max, t_max] of |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt (trapezoid rule),
    for every time step and direction, averaged."""
    t = np.linspace(-t_max, t_max, 2 * knots - 1)  # the same knots, mirrored
    stats = []
    for zt in z:
        n = len(zt)
        for p in range(a.shape[1]):
            x = zt @ a[:, p]
            vals = []
            for tk in t:
                ecf = np.mean(np.exp(1j * tk * x))
                vals.append(abs(ecf - np.exp(-tk**2 / 2)) ** 2 * np.exp(-tk**2 / 2))
            stats.append(n * np.trapezoid(vals, t))
    return float(np.mean(stats))


def test_sigreg_matches_reference():
    z = np.random.default_rng(0).normal(size=(2, 40, 5)) * [1.0, 0.3, 2.0, 1.0, 0.5] + 0.2
    reg = SIGReg(knots=9, num_projections=6, t_max=3.0)
    got = reg(torch.tensor(z, dtype=torch.float32), generator=torch.Generator().manual_seed(7)).item()
    want = sigreg_reference(z, _directions(5, 6, 7), knots=9, t_max=3.0)
    assert got == pytest.approx(want, rel=1e-4)


def vicreg_reference(z: np.ndarray, std_coeff: float, cov_coeff: float, gamma: float, eps: float) -> dict:
    var_terms, cov_terms = [], []
    for zt in z:
        n, d = zt.shape
        mean = zt.sum(0) / n
        var_hinge, cov_sq = 0.0, 0.0
        for i in range(d):
            var_i = sum((zt[k, i] - mean[i]) ** 2 for k in range(n)) / (n - 1)
            var_hinge += max(0.0, gamma - np.sqrt(var_i + eps))
            for j in range(d):
                if i != j:
                    c = sum((zt[k, i] - mean[i]) * (zt[k, j] - mean[j]) for k in range(n)) / (n - 1)
                    cov_sq += c * c
        var_terms.append(var_hinge / d)
        cov_terms.append(cov_sq / d)
    v, c = np.mean(var_terms), np.mean(cov_terms)
    return {"variance": v, "covariance": c, "loss": std_coeff * v + cov_coeff * c}


def test_vicreg_matches_reference():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 12, 4)) * [0.2, 1.5, 0.7, 0.05]
    z[..., 3] += 0.8 * z[..., 1]  # a correlated pair
    got = VICReg(std_coeff=25.0, cov_coeff=2.0, gamma=1.0, eps=1e-4).terms(torch.tensor(z, dtype=torch.float32))
    want = vicreg_reference(z, 25.0, 2.0, 1.0, 1e-4)
    for k in ("variance", "covariance", "loss"):
        assert got[k].item() == pytest.approx(want[k], rel=1e-4), k
    # whitened data with unit std: both terms ~0
    w = torch.randn(1, 4096, 8, generator=torch.Generator().manual_seed(0))
    assert VICReg()(w).item() < 0.5


def visreg_reference(z: np.ndarray, a: np.ndarray, weights: tuple[float, float, float]) -> dict:
    quantile = NormalDist().inv_cdf
    centers, scales, shapes = [], [], []
    for zt in z:
        n, d = zt.shape
        mu = [sum(zt[:, j]) / n for j in range(d)]
        sd = [max(np.sqrt(sum((zt[k, j] - mu[j]) ** 2 for k in range(n)) / n), 1e-6) for j in range(d)]
        centers += [m * m for m in mu]
        scales += [(s - 1) ** 2 for s in sd]
        u = (zt - np.array(mu)) / np.array(sd)
        for p in range(a.shape[1]):
            x = sorted(u @ a[:, p])
            shapes += [(x[i] - quantile((i + 1) / (n + 1))) ** 2 for i in range(n)]
    c, s, h = np.mean(centers), np.mean(scales), np.mean(shapes)
    return {"center": c, "scale": s, "shape": h, "loss": weights[0] * c + weights[1] * s + weights[2] * h}


def test_visreg_matches_reference():
    z = np.random.default_rng(2).gamma(2.0, size=(2, 30, 5)) * [1.0, 0.2, 3.0, 1.0, 0.6]
    reg = VISReg(num_projections=7, center_weight=0.5, scale_weight=2.0, shape_weight=3.0)
    got = reg.terms(torch.tensor(z, dtype=torch.float32), generator=torch.Generator().manual_seed(3))
    want = visreg_reference(z, _directions(5, 7, 3), (0.5, 2.0, 3.0))
    for k in ("center", "scale", "shape", "loss"):
        assert got[k].item() == pytest.approx(want[k], rel=1e-4), k


def straightening_reference(z: np.ndarray) -> float:
    T, N, _ = z.shape
    total, count = 0.0, 0
    for n in range(N):
        for t in range(T - 2):
            v0, v1 = z[t + 1, n] - z[t, n], z[t + 2, n] - z[t + 1, n]
            total += 1 - v0 @ v1 / (np.linalg.norm(v0) * np.linalg.norm(v1))
            count += 1
    return total / count


def test_straightening_matches_reference_and_known_answers():
    z = np.random.default_rng(3).normal(size=(5, 6, 4))
    got = Straightening()(torch.tensor(z, dtype=torch.float32)).item()
    assert got == pytest.approx(straightening_reference(z), rel=1e-5)
    t = torch.arange(6.0).view(6, 1, 1)
    line = t * torch.tensor([1.0, -2.0, 0.5])  # uniform motion on a line: straight
    assert Straightening()(line).item() == pytest.approx(0.0, abs=1e-6)
    zigzag = (-1.0) ** t * torch.tensor([1.0, 1.0, 0.0])  # reverses every step
    assert Straightening()(zigzag).item() == pytest.approx(2.0, abs=1e-6)


def test_gradients_flow_through_every_regularizer():
    for name in REGULARIZERS:
        z = torch.randn(4, 16, 6, generator=torch.Generator().manual_seed(0)).mul(0.3).requires_grad_()
        get_regularizer(name)(z).backward()
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0, name


def test_registry_suggests_close_names_and_checks_arguments():
    assert isinstance(get_regularizer("vicreg", std_coeff=1.0), VICReg)
    assert get_regularizer("sigreg", num_projections=8).num_projections == 8
    with pytest.raises(UnknownRegularizerError, match="did you mean 'visreg'"):
        get_regularizer("visrg")
    with pytest.raises(ValueError, match=r"takes no argument\(s\) \['num_projection'\]"):
        get_regularizer("sigreg", num_projection=8)
    with pytest.raises(ValueError, match="std_coeff must be a finite number >= 0"):
        VICReg(std_coeff=-1.0)
    with pytest.raises(ValueError, match=r"\(T, N, D\)"):
        SIGReg()(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="T >= 3"):
        Straightening()(torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="N >= 2"):
        VICReg()(torch.randn(3, 1, 4))


def test_projection_seed_follows_set_step():
    z = torch.randn(2, 64, 8, generator=torch.Generator().manual_seed(4))
    for cls in (SIGReg, VISReg):
        a, b = cls(num_projections=16), cls(num_projections=16)
        set_regularizer_step(a, seed=3, step=10)
        set_regularizer_step(b, seed=3, step=10)
        first = a(z)
        assert first.item() == b(z).item(), cls  # same (seed, step, call): same projections
        assert a(z).item() != first.item(), cls  # the next call in the step draws new ones
        b.set_step(3, 11)
        assert b(z).item() != first.item(), cls  # another step: new ones
    # without set_step, torch.manual_seed makes the train-mode draws reproducible
    torch.manual_seed(0)
    x = SIGReg(num_projections=16)(z)
    torch.manual_seed(0)
    assert SIGReg(num_projections=16)(z).item() == x.item()


def test_sigreg_ignores_autocast():
    z = torch.randn(1, 128, 16, generator=torch.Generator().manual_seed(5))
    reg = SIGReg(num_projections=32)
    plain = reg(z, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = reg(z.bfloat16(), generator=torch.Generator().manual_seed(1))
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, reg(z.bfloat16().float(), generator=torch.Generator().manual_seed(1)))
    assert plain.item() == pytest.approx(auto.item(), rel=0.05)


def test_sigreg_ecf_sums_gradient_equals_autograd_of_the_formula() -> None:
    """SIGReg's hand-written backward (cosines and sines saved) gives autograd's gradient of the formula."""
    from worldmodel.regularizers import _ecf_sums

    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 3, 17, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: _ecf_sums(x, t), (x,))
    xt = x.unsqueeze(-1) * t
    torch.testing.assert_close(_ecf_sums(x, t), torch.stack([xt.cos().sum(1), xt.sin().sum(1)]))
