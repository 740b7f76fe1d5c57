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


def test_window_centred_sigreg_shapes_only_the_variation_within_a_window():
    """``sigreg_center="window"``: the model's sigreg_loss is SIGReg of the embeddings minus their
    window's mean, so adding a different constant to each window (an episode's colours) leaves
    it unchanged, while the default (``"none"``) sees the constant."""
    from worldmodel.config import ModelConfig
    from worldmodel.model import JEPA
    from worldmodel.regularizers import set_regularizer_step

    cfg = dict(image_size=16, embed_dim=8, encoder_width=8, predictor_width=16, predictor_depth=1, predictor_heads=2,
               context=1, pred_steps=2, frameskip=2, sigreg_projections=32)
    pixels = torch.randint(0, 256, (6, 3, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    actions = torch.randn(6, 2, 4, generator=torch.Generator().manual_seed(1))
    shift = 5.0 * torch.randn(6, 1, 8, generator=torch.Generator().manual_seed(2))
    losses = {}
    for center in ("none", "window", "both"):
        torch.manual_seed(0)
        model = JEPA(ModelConfig(**cfg, sigreg_center=center)).train()
        emb = model.encode(pixels)
        for shifted in (False, True):
            model.encode = (lambda e: (lambda p: e))(emb + shift if shifted else emb)
            set_regularizer_step(model, 3, 0)
            losses[center, shifted] = model.loss(pixels, actions)["sigreg_loss"].item()
        set_regularizer_step(model, 3, 0)
        terms = {"none": [emb], "window": [emb - emb.mean(1, keepdim=True)],
                 "both": [emb, emb - emb.mean(1, keepdim=True)]}[center]  # in the order the loss draws projections
        want = sum(model.sigreg(t.transpose(0, 1)).item() for t in terms) / len(terms)
        assert losses[center, False] == pytest.approx(want, rel=1e-5)
    assert losses["window", True] == pytest.approx(losses["window", False], rel=1e-4)
    assert losses["none", True] > 2 * losses["none", False]
    # both: the centred half is blind to the constants, the raw half sees them
    assert losses["both", True] - losses["both", False] == pytest.approx(
        (losses["none", True] - losses["none", False]) / 2, rel=1e-3)
    with pytest.raises(ValueError, match="sigreg_center must be one of none, window, both, episode, got 'episod'"):
        ModelConfig(sigreg_center="episod")


def test_episode_centred_sigreg_shapes_the_variation_over_each_episode_in_the_batch():
    """``sigreg_center="episode"``: SIGReg of the embeddings minus the mean over all frames of the
    batch's windows of their episode. A constant per episode (its colours) changes nothing; a constant
    per window of one episode (where the agent is) is variation it sees, which "window" does not."""
    from worldmodel.config import ModelConfig
    from worldmodel.model import JEPA
    from worldmodel.regularizers import set_regularizer_step

    cfg = dict(image_size=16, embed_dim=8, encoder_width=8, predictor_width=16, predictor_depth=1, predictor_heads=2,
               context=1, pred_steps=2, frameskip=2, sigreg_projections=32, sigreg_center="episode", sigreg_group=2)
    pixels = torch.randint(0, 256, (6, 3, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    actions = torch.randn(6, 2, 4, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([7, 7, 3, 3, 9, 9])
    per_episode = 5.0 * torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(2)).repeat_interleave(2, 0)
    per_window = 5.0 * torch.randn(6, 1, 8, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    model = JEPA(ModelConfig(**cfg)).train()
    assert model.uses_episode_ids
    emb = model.encode(pixels)

    def sigreg_loss(e: torch.Tensor) -> float:
        model.encode = lambda p: e
        set_regularizer_step(model, 3, 0)
        return model.loss(pixels, actions, episode_ids=ids)["sigreg_loss"].item()

    base = sigreg_loss(emb)
    means = torch.stack([emb[ids == i].mean((0, 1)) for i in ids.tolist()])[:, None]  # (6, 1, 8)
    set_regularizer_step(model, 3, 0)
    assert base == pytest.approx(model.sigreg((emb - means).transpose(0, 1)).item(), rel=1e-5)
    assert sigreg_loss(emb + per_episode) == pytest.approx(base, rel=1e-4)
    assert sigreg_loss(emb + per_window) > 2 * base
    with pytest.raises(ValueError, match="needs the windows' episode ids"):
        model.loss(pixels, actions)
    with pytest.raises(ValueError, match=r"episode_ids: expected shape \(6,\)"):
        model.loss(pixels, actions, episode_ids=ids[:4])
    with pytest.raises(ValueError, match="sigreg_group must be >= 1, got 0"):
        ModelConfig(sigreg_center="episode", sigreg_group=0)
