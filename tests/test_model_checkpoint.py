"""Checkpoints: exact round trip, resumable train state, and clear load errors."""

import json

import pytest
import torch

from worldmodel import CheckpointError, JEPA, ModelConfig, load_checkpoint, load_train_state, save_checkpoint

TINY = dict(image_size=32, encoder_width=8, embed_dim=16, projector_hidden=32, predictor_width=32,
            predictor_depth=1, predictor_heads=2, sigreg_projections=32, frameskip=2, action_dim=2)


def trained_model(steps: int = 2, **kw):
    torch.manual_seed(0)
    model = JEPA(ModelConfig(**{**TINY, **kw}))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    for _ in range(steps):  # moves BatchNorm running stats and fills the optimiser state
        out = model.loss(torch.randint(0, 256, (8, 2, 3, 32, 32), dtype=torch.uint8), torch.randn(8, 1, 4))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("encoder", ["cnn", "cnn-spatial", "cnn-keypoints"])
def test_round_trip_gives_identical_outputs(tmp_path, encoder):
    model, _ = trained_model(encoder=encoder)
    save_checkpoint(tmp_path / "ckpt", model, extra={"note": "hi"})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert not loaded.training and loaded.config == model.config
    model.eval()
    px = torch.randint(0, 256, (3, 2, 3, 32, 32), dtype=torch.uint8)
    actions = torch.randn(3, 4, 5, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(px), model.encode(px), rtol=0, atol=0)
        emb = model.encode(px)
        torch.testing.assert_close(loaded.rollout(emb, actions), model.rollout(emb, actions), rtol=0, atol=0)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["format_version"] == 1 and config["extra"] == {"note": "hi"}


def test_keypoints_without_projector_and_an_expander_round_trip(tmp_path):
    """KP4's layout (cnn-keypoints, projector 'none', sigreg_expander): the expander's weights are saved
    and loaded with the rest, and the loaded model encodes and scores a window as the trained one."""
    model, _ = trained_model(encoder="cnn-keypoints", projector="none", embed_dim=64, sigreg_expander=12)
    save_checkpoint(tmp_path / "ckpt", model)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config.sigreg_expander == 12 and loaded.expander is not None
    model.eval()
    px = torch.randint(0, 256, (4, 2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(px), model.encode(px), rtol=0, atol=0)
        torch.testing.assert_close(loaded.expander(model.encode(px)[:, 0]), model.expander(model.encode(px)[:, 0]),
                                   rtol=0, atol=0)


def test_a_reconstruction_decoder_round_trips(tmp_path):
    """recon_weight > 0: the decoder's weights are saved and loaded with the rest (the loaded model
    scores the same reconstruction term); a config.json written before the fields existed loads
    without a decoder."""
    model, _ = trained_model(recon_weight=1.0, recon_size=8, recon_hidden=16)
    save_checkpoint(tmp_path / "ckpt", model)
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config.recon_size == 8 and loaded.recon is not None
    assert loaded.recon.net[-1].weight.abs().sum() > 0  # trained: no longer the zero-initialised layer
    model.eval()
    px = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        emb = model.encode(px[:, None])[:, 0]
        torch.testing.assert_close(loaded.recon.loss(emb, px), model.recon.loss(emb, px), rtol=0, atol=0)
    plain, _ = trained_model()
    save_checkpoint(tmp_path / "old", plain)
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    for key in ("recon_weight", "recon_size", "recon_hidden"):
        config["model"].pop(key)
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    old = load_checkpoint(tmp_path / "old")
    assert old.recon is None and old.config.recon_weight == 0.0


def test_train_state_round_trip(tmp_path):
    model, opt = trained_model()
    save_checkpoint(tmp_path, model, train_state={"last": {"loss": 1.5}}, optimizer=opt, step=7)
    assert not list(tmp_path.glob(".*tmp*"))  # temporary files were moved into place
    fresh = JEPA(model.config)
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=5.0)
    assert load_train_state(tmp_path, opt2) == 7
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for i, state in s1["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(s2["state"][i][key], value, rtol=0, atol=0)
    # and the restored optimiser can keep stepping
    fresh.loss(torch.zeros(4, 2, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, 1, 4))["loss"].backward()
    opt2.step()


def test_interrupted_save_is_detected(tmp_path):
    model, opt = trained_model()
    save_checkpoint(tmp_path, model, optimizer=opt, step=2)
    save_checkpoint(tmp_path, model, step=3)  # as if a save died after replacing the model
    with pytest.raises(CheckpointError, match="inconsistent.*step 2.*step 3"):
        load_train_state(tmp_path, opt)


def test_missing_directory_or_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    model, _ = trained_model(0)
    save_checkpoint(tmp_path, model)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: "{not json", "not valid JSON"),
        (lambda c: json.dumps({**c, "model": {**c["model"], "wings": 2}}), r"unknown ModelConfig keys \['wings'\]"),
        (lambda c: json.dumps({**c, "model": {k: v for k, v in c["model"].items() if k != "embed_dim"}}),
         r"missing keys \['embed_dim'\]"),
        (lambda c: json.dumps({**c, "model": {**c["model"], "embed_dim": "16"}}), "embed_dim must be int"),
        (lambda c: json.dumps({**c, "format_version": 99}), "format_version=99"),
        (lambda c: json.dumps({**c, "model": {**c["model"], "embed_dim": 24}}),
         r"tensor 'encoder.projector.net.3.weight' has shape \(16, 32\), the model expects \(24, 32\)"),
    ],
)
def test_bad_config_raises_checkpoint_error(tmp_path, edit, match):
    model, _ = trained_model(0)
    save_checkpoint(tmp_path, model)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(edit(config))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path)


def test_corrupted_weights(tmp_path):
    model, _ = trained_model(0)
    save_checkpoint(tmp_path, model)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path)


def test_checkpoint_error_is_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_config_written_before_the_pred_steps_rename_loads(tmp_path):
    """A config.json from before `horizon` became `pred_steps` (the training window's
    predicted frames) loads with the same window and the same outputs."""
    torch.manual_seed(0)
    model = JEPA(ModelConfig(**TINY, context=2, pred_steps=3)).eval()
    save_checkpoint(tmp_path, model)
    config = json.loads((tmp_path / "config.json").read_text())
    old_layout = {("horizon" if k == "pred_steps" else k): v for k, v in config["model"].items()}
    assert "pred_steps" not in old_layout and old_layout["horizon"] == 3
    (tmp_path / "config.json").write_text(json.dumps({**config, "model": old_layout}))
    loaded = load_checkpoint(tmp_path)
    assert loaded.config.pred_steps == 3 and loaded.config.window == 5 and loaded.config == model.config
    emb, actions = torch.randn(2, 2, 16), torch.randn(2, 3, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.rollout(emb, actions), model.rollout(emb, actions), rtol=0, atol=0)
    both = {**old_layout, "pred_steps": 3}
    (tmp_path / "config.json").write_text(json.dumps({**config, "model": both}))
    with pytest.raises(CheckpointError, match="both 'pred_steps' and its old name 'horizon'"):
        load_checkpoint(tmp_path)
