"""World-model families: the registry, the training history fix, the pldm and pixel families, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from worldmodel.checkpoint import CheckpointError, load_checkpoint, load_config, save_checkpoint
from worldmodel.config import ModelConfig, PixelConfig, PLDMConfig, UnknownPresetError
from worldmodel.families import FAMILIES, UnknownFamilyError, WorldModel, build_model, get_family, register_family
from worldmodel.model import JEPA
from worldmodel.pixel import PixelModel
from worldmodel.pldm import PLDM
from worldmodel.regularizers import VICReg

SMALL = dict(image_size=16, encoder_width=8, embed_dim=16, projector_hidden=32, predictor_width=32,
             predictor_depth=2, predictor_heads=2, frameskip=2)
CONFIGS = {"lewm": ModelConfig(**SMALL, sigreg_projections=16), "pldm": PLDMConfig(**SMALL, idm_hidden=32),
           "pixel": PixelConfig(**SMALL, decoder_width=8)}


def _batch(B: int = 8, n: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (B, n, 3, 16, 16), dtype=torch.uint8, generator=g)
    return pixels, torch.randn(B, n - 1, 4, generator=g)


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero weights everywhere (AdaLN-zero blocks start as the identity, hiding the attention)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_registry_names_families_and_suggests_on_a_typo() -> None:
    assert {"lewm", "pldm", "pixel"} <= set(FAMILIES)
    assert get_family("lewm").model_cls is JEPA and get_family("pldm").model_cls is PLDM
    assert get_family("pixel").config_cls is PixelConfig
    with pytest.raises(UnknownFamilyError, match="unknown world-model family 'pldn'; did you mean 'pldm'"):
        get_family("pldn")
    with pytest.raises(ValueError, match="already registered"):
        register_family("lewm", JEPA, ModelConfig, "again")
    with pytest.raises(ValueError, match="ModelConfig.FAMILY is 'lewm', expected 'other'"):
        register_family("other", JEPA, ModelConfig, "mismatch")
    for name, cfg in CONFIGS.items():
        model = build_model(cfg)
        assert isinstance(model, WorldModel) and type(model) is get_family(name).model_cls


@pytest.mark.parametrize("cls, cfg, family", [(PLDM, CONFIGS["lewm"], "lewm"), (JEPA, CONFIGS["pldm"], "pldm"),
                                              (PixelModel, CONFIGS["pldm"], "pldm")])
def test_a_config_of_another_family_is_refused_naming_both(cls, cfg, family) -> None:
    with pytest.raises(TypeError, match=rf"\(family '{cls.FAMILY}'\) needs a .*config of family '{family}'"):
        cls(cfg)


def test_config_of_another_family_in_a_dict_is_refused() -> None:
    with pytest.raises(ValueError, match="config of family 'lewm' was given to PLDMConfig, the config of family 'pldm'"):
        PLDMConfig.from_dict(CONFIGS["lewm"].to_dict())
    with pytest.raises(ValueError, match="PixelConfig.family must be 'pixel'"):
        PixelConfig(family="lewm")
    with pytest.raises(UnknownPresetError, match="preset 'pldm-tiny' belongs to family 'pldm', not 'lewm'"):
        ModelConfig.preset("pldm-tiny")


@pytest.mark.parametrize("context, pred_steps", [(2, 3), (3, 2), (1, 3)])
def test_teacher_forced_prediction_sees_the_history_planning_gives_it(context, pred_steps) -> None:
    """predict (the training loss's teacher forcing) at every t equals a rollout from that same history:
    the last min(t + 1, context) embeddings, at window positions 0.. ."""
    torch.manual_seed(0)
    model = JEPA(ModelConfig(**SMALL, context=context, pred_steps=pred_steps, sigreg_projections=16))
    _randomise(model)
    model.eval()
    B, T = 3, context + pred_steps - 1
    emb, actions = torch.randn(B, T, 16), torch.randn(B, T, 4)
    with torch.no_grad():
        pred = model.predict(emb, actions)
        for t in range(T):
            s = max(0, t + 1 - context)
            ref = model.rollout_reference(emb[:, s : t + 1], actions[:, t][:, None, None], past_actions=actions[:, s:t])
            torch.testing.assert_close(pred[:, t], ref[:, 0, 0], atol=1e-5, rtol=1e-5)
        # longer sequences than a training window are fine: every window has at most `context` tokens
        long = model.predict(torch.randn(B, 9, 16), torch.randn(B, 9, 4))
    assert long.shape == (B, 9, 16)


def _vicreg_terms(z: torch.Tensor, std_margin: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """pldm's variance and covariance terms of samples z (N, D), as PLDM.loss computes them."""
    terms = VICReg(std_coeff=1.0, cov_coeff=1.0, gamma=std_margin, cov_norm="pairs").terms(z[None])
    return terms["variance"], terms["covariance"]


def test_vicreg_terms_match_their_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 5, generator=g) * torch.tensor([0.1, 0.5, 1.0, 2.0, 3.0])
    std, cov = _vicreg_terms(z, std_margin=1.0)
    expected_std = torch.relu(1.0 - torch.sqrt(z.var(dim=0) + 1e-4)).mean()
    c = torch.cov(z.T)
    expected_cov = (c.pow(2).sum() - c.diagonal().pow(2).sum()) / (5 * 4)
    torch.testing.assert_close(std, expected_std)
    torch.testing.assert_close(cov, expected_cov)
    # a collapsed embedding pays the whole margin; a decorrelated unit-variance one pays ~nothing
    assert _vicreg_terms(torch.zeros(10, 4))[0].item() == pytest.approx(1.0 - 1e-2, abs=1e-6)
    white = torch.randn(20000, 4, generator=g)
    std_w, cov_w = _vicreg_terms(white)
    assert std_w.item() < 0.02 and cov_w.item() < 1e-3


@pytest.mark.parametrize("family", ["lewm", "pldm", "pixel"])
def test_config_regularizers_add_weighted_terms(family: str) -> None:
    """``regularizers="straightening=0.5,vicreg=0.25"``: each term logged as NAME_reg and added to the
    loss times its weight; the family's own terms are unchanged."""
    from worldmodel.families import build_model, get_family
    from worldmodel.regularizers import Straightening

    cls = get_family(family).config_cls
    preset = {"lewm": "lewm-micro", "pldm": "pldm-tiny", "pixel": "pixel-tiny"}[family]
    base_cfg = cls.preset(preset, image_size=28, pred_steps=2)
    extra_cfg = cls.preset(preset, image_size=28, pred_steps=2, regularizers="straightening=0.5, vicreg=0.25")
    torch.manual_seed(0)
    base = build_model(base_cfg)
    torch.manual_seed(0)
    extra = build_model(extra_cfg)
    extra.load_state_dict(base.state_dict(), strict=False)
    base.eval(), extra.eval()  # batch statistics aside, both see the same weights
    g = torch.Generator().manual_seed(1)
    n = base_cfg.window
    pixels = torch.randint(0, 256, (6, n, 3, 28, 28), generator=g, dtype=torch.uint8)
    actions = torch.randn(6, n - 1, base_cfg.block_dim, generator=g)
    with torch.no_grad():
        torch.manual_seed(5)  # eval-mode SIGReg draws its projections from torch's RNG
        a = base.loss(pixels, actions)
        torch.manual_seed(5)
        b = extra.loss(pixels, actions)
        z = extra.encode(pixels).transpose(0, 1)
    for key in a:
        if key != "loss":
            torch.testing.assert_close(b[key], a[key], msg=key)
    torch.testing.assert_close(b["straightening_reg"], Straightening()(z))
    torch.testing.assert_close(b["vicreg_reg"], VICReg()(z))
    torch.testing.assert_close(b["loss"], a["loss"] + 0.5 * b["straightening_reg"] + 0.25 * b["vicreg_reg"])


def test_config_regularizers_refuse_bad_specs() -> None:
    from worldmodel.config import ModelConfig

    with pytest.raises(ValueError, match="'straighten'.*did you mean 'straightening'"):
        ModelConfig(regularizers="straighten=0.1")
    with pytest.raises(ValueError, match="finite number >= 0"):
        ModelConfig(regularizers="vicreg=-1")
    with pytest.raises(ValueError, match="NAME=WEIGHT"):
        ModelConfig(regularizers="vicreg")
    with pytest.raises(ValueError, match="named twice"):
        ModelConfig(regularizers="vicreg=1,vicreg=2")
    assert ModelConfig.from_dict({k: v for k, v in ModelConfig().to_dict().items() if k != "regularizers"},
                                 strict=True).regularizers == ""  # configs written before the field load


def test_regularizer_names_match_the_registry() -> None:
    from worldmodel.config import REGULARIZER_NAMES
    from worldmodel.regularizers import REGULARIZERS

    assert set(REGULARIZER_NAMES) == set(REGULARIZERS)


EXPECTED_TERMS = {
    "lewm": {"loss", "pred_loss", "sigreg_loss", "rollout_loss"},
    "pldm": {"loss", "pred_loss", "std_loss", "cov_loss", "sim_t_loss", "idm_loss", "rollout_loss"},
    "pixel": {"loss", "pred_loss", "recon_loss", "pred_recon_loss", "rollout_loss"},
}


@pytest.mark.parametrize("family", ["pldm", "pixel"])
def test_a_few_training_steps_reduce_the_loss_and_every_term_is_returned(family) -> None:
    torch.manual_seed(0)
    model = build_model(CONFIGS[family])
    pixels, actions = _batch()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        out = model.loss(pixels, actions)
        assert set(out) == EXPECTED_TERMS[family]
        assert all(v.ndim == 0 and torch.isfinite(v) for v in out.values())
        first = out["loss"].item() if first is None else first
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert model.loss(pixels, actions)["loss"].item() < 0.7 * first


def test_pldm_terms_respond_to_what_they_measure() -> None:
    model = build_model(CONFIGS["pldm"])
    pixels, actions = _batch()
    out = model.loss(pixels, actions)
    # the inverse-dynamics head is trained on the actions: other actions, another idm_loss
    other = model.loss(pixels, actions * 3)
    assert other["idm_loss"].item() > out["idm_loss"].item()
    # identical frames in time: no temporal change to penalise
    still = model.loss(pixels[:, :1].expand(-1, 3, -1, -1, -1).contiguous(), actions)
    assert still["sim_t_loss"].item() == pytest.approx(0.0, abs=1e-8)


def test_pixel_decoder_reconstructs_frames_of_the_input_shape() -> None:
    model = build_model(CONFIGS["pixel"]).eval()
    pixels, _ = _batch(B=2, n=2)
    with torch.no_grad():
        frames = model.decode(model.encode(pixels))
    assert frames.shape == (2, 2, 3, 16, 16)
    for size in (28, 64):
        cfg = PixelConfig(**{**SMALL, "image_size": size}, decoder_width=4)
        dec = build_model(cfg).decoder
        assert dec(torch.zeros(1, 16)).shape == (1, 3, size, size)


@pytest.mark.parametrize("family", ["lewm", "pldm", "pixel"])
def test_save_load_round_trip_builds_the_family_with_equal_outputs(family, tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(CONFIGS[family])
    pixels, actions = _batch()
    model.loss(pixels, actions)["loss"].backward()  # train-mode step: BatchNorm running statistics move
    model.eval()
    save_checkpoint(tmp_path / "ckpt", model, step=1)
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["model"]["family"] == family
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        emb = model.encode(pixels)
        torch.testing.assert_close(loaded.encode(pixels), emb)
        future = torch.randn(8, 4, 3, 4)
        torch.testing.assert_close(loaded.rollout(emb[:, :1], future), model.rollout(emb[:, :1], future))
        losses = []
        for m in (loaded, model):
            torch.manual_seed(1)  # SIGReg draws its projections
            losses.append(m.loss(pixels, actions))
        assert set(losses[0]) == EXPECTED_TERMS[family]
        for k in losses[0]:
            torch.testing.assert_close(losses[0][k], losses[1][k])


def test_checkpoint_family_errors_and_old_checkpoints(tmp_path) -> None:
    model = build_model(CONFIGS["pldm"])
    save_checkpoint(tmp_path / "ckpt", model)
    config_file = tmp_path / "ckpt" / "config.json"
    saved = json.loads(config_file.read_text())
    # an unknown family is named, with the closest registered one
    config_file.write_text(json.dumps({**saved, "model": {**saved["model"], "family": "pldn"}}))
    with pytest.raises(CheckpointError, match="model.family='pldn' is not a registered.*did you mean 'pldm'"):
        load_checkpoint(tmp_path / "ckpt")
    # a pldm config relabelled as lewm: the fields that are not lewm's are named
    config_file.write_text(json.dumps({**saved, "model": {**saved["model"], "family": "lewm"}}))
    with pytest.raises(CheckpointError, match="unknown ModelConfig keys"):
        load_config(tmp_path / "ckpt")
    # a config.json written before families existed (no "family" key) is a lewm checkpoint
    lewm = build_model(CONFIGS["lewm"]).eval()
    save_checkpoint(tmp_path / "old", lewm)
    old_file = tmp_path / "old" / "config.json"
    old = json.loads(old_file.read_text())
    del old["model"]["family"]
    old_file.write_text(json.dumps(old))
    loaded = load_checkpoint(tmp_path / "old")
    assert type(loaded) is JEPA and loaded.config == lewm.config
