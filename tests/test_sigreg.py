"""SIGReg: ~0 for isotropic Gaussian embeddings, large for collapsed ones."""

import pytest
import torch

from worldmodel.sigreg import SIGReg


def _stat(z: torch.Tensor, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    return SIGReg(knots=17, num_projections=256)(z, generator=g).item()


def test_gaussian_scores_low_and_collapse_scores_high():
    g = torch.Generator().manual_seed(0)
    gaussian = torch.randn(1, 512, 32, generator=g)
    constant = torch.ones(1, 512, 32)
    rank1 = torch.randn(1, 512, 1, generator=g) * torch.randn(1, 1, 32, generator=g)
    low, const, r1 = _stat(gaussian), _stat(constant), _stat(rank1)
    # Under the null, N * E|ecf - cf|^2 = 1 - exp(-t^2) at each t, so the statistic
    # is ~ integral (1 - exp(-t^2)) exp(-t^2 / 2) dt ~= 1.06, whatever N is.
    assert low < 2.0, low
    assert const > 100 * low and r1 > 20 * low, (low, const, r1)


def test_scaled_or_shifted_gaussian_is_penalised():
    z = torch.randn(1, 512, 16, generator=torch.Generator().manual_seed(1))
    base = _stat(z)
    assert _stat(3 * z) > 10 * base
    assert _stat(z + 2) > 10 * base


def test_per_time_step_mean_and_generator_reproducible():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(3, 256, 8, generator=g)
    assert _stat(z, seed=5) == _stat(z, seed=5)
    # the statistic over T is the mean of the per-step statistics (same projections)
    reg = SIGReg(num_projections=64)
    per_step = [reg(z[t : t + 1], generator=torch.Generator().manual_seed(3)) for t in range(3)]
    whole = reg(z, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(whole, torch.stack(per_step).mean())


def test_gradient_flows_and_bad_shape_raises():
    z = torch.randn(2, 64, 8, requires_grad=True)
    SIGReg(num_projections=32)(z * 0.1).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(T, N, D\)"):
        SIGReg()(torch.randn(64, 8))


def test_no_persistent_buffers():
    assert SIGReg().state_dict() == {}
