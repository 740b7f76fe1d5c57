"""The lewm family's optional inverse-dynamics term (``ModelConfig.idm_weight``)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from worldmodel.checkpoint import load_checkpoint, save_checkpoint
from worldmodel.config import ModelConfig
from worldmodel.families import build_model

SMALL = dict(image_size=16, encoder_width=8, embed_dim=16, projector_hidden=32, predictor_width=32,
             predictor_depth=2, predictor_heads=2, frameskip=2, sigreg_projections=16)


def _batch(B: int = 8, n: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (B, n, 3, 16, 16), dtype=torch.uint8, generator=g)
    return pixels, torch.randn(B, n - 1, 4, generator=g)


def test_without_the_term_the_model_and_its_loss_are_leworldmodels() -> None:
    model = build_model(ModelConfig(**SMALL))
    assert model.idm is None
    assert not any(k.startswith("idm.") for k in model.state_dict())
    assert set(model.loss(*_batch())) == {"loss", "pred_loss", "sigreg_loss", "rollout_loss"}


def test_the_term_is_the_heads_action_mse_weighted_into_the_loss() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL, idm_weight=0.5, idm_hidden=24))
    pixels, actions = _batch()
    torch.manual_seed(1)  # SIGReg draws its projections
    out = model.loss(pixels, actions)
    assert set(out) == {"loss", "pred_loss", "sigreg_loss", "rollout_loss", "idm_loss"}
    with torch.no_grad():
        emb = model.encode(pixels)
        expected_idm = F.mse_loss(model.idm(emb[:, :-1], emb[:, 1:]), actions)
    torch.testing.assert_close(out["idm_loss"], expected_idm)
    c = model.config
    torch.testing.assert_close(out["loss"], out["pred_loss"] + c.sigreg_weight * out["sigreg_loss"]
                               + c.rollout_weight * out["rollout_loss"] + 0.5 * out["idm_loss"])
    # it measures the actions: other actions, another (larger) idm_loss
    torch.manual_seed(1)
    other = model.loss(pixels, actions * 3)
    assert other["idm_loss"].item() > out["idm_loss"].item()
    # and its gradient reaches the encoder: the embedding is asked to keep what the actions move
    model.zero_grad()
    out["idm_loss"].backward()
    assert sum(p.grad.abs().sum().item() for p in model.encoder.parameters() if p.grad is not None) > 0


def test_a_few_training_steps_reduce_the_inverse_dynamics_error() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL, idm_weight=1.0, idm_hidden=32))
    pixels, actions = _batch()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model.loss(pixels, actions)["idm_loss"].item()
    for _ in range(60):
        out = model.loss(pixels, actions)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert model.loss(pixels, actions)["idm_loss"].item() < 0.5 * first


def test_checkpoints_with_the_head_round_trip_and_older_ones_load_without_it(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL, idm_weight=1.0, idm_hidden=24)).eval()
    save_checkpoint(tmp_path / "idm", model, step=1)
    loaded = load_checkpoint(tmp_path / "idm")
    assert loaded.config.idm_weight == 1.0 and loaded.idm is not None
    pixels, actions = _batch()
    outs = []
    with torch.no_grad():
        for m in (model, loaded):
            torch.manual_seed(1)  # SIGReg draws its projections
            outs.append(m.loss(pixels, actions))
    for key in outs[0]:
        torch.testing.assert_close(outs[1][key], outs[0][key])
    # a config.json written before the term existed (no idm keys) loads as LeWorldModel's model
    plain = build_model(ModelConfig(**SMALL)).eval()
    save_checkpoint(tmp_path / "old", plain)
    config_file = tmp_path / "old" / "config.json"
    saved = json.loads(config_file.read_text())
    for key in ("idm_weight", "idm_hidden"):
        del saved["model"][key]
    config_file.write_text(json.dumps(saved))
    old = load_checkpoint(tmp_path / "old")
    assert old.config.idm_weight == 0.0 and old.idm is None


@pytest.mark.parametrize("field, value", [("idm_weight", -1.0), ("idm_weight", math.nan), ("idm_weight", math.inf),
                                          ("idm_hidden", 0)])
def test_bad_values_are_refused_by_name(field, value) -> None:
    with pytest.raises(ValueError, match=f"ModelConfig.{field} must be .*got {value}"):
        ModelConfig(**SMALL, **{field: value})
