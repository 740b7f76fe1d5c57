"""The dinowm family: the DINOv2-layout encoder and its safetensors loader, and the DINO-WM
world model (frozen encoder, frame-causal predictor, rollout, loss, save/load)."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from worldmodel.dinov2 import (
    DINOV2_ARCHS, DinoV2, DinoV2Arch, DinoV2WeightsError, dinov2_to_hf, load_dinov2_weights,
)
from worldmodel.dinowm import DINOWM_PRESETS, DinoWM, DinoWMConfig, frame_causal_mask

torch.set_num_threads(1)

SMALL = DinoV2Arch(width=32, depth=2, heads=2, patch_size=14, pos_grid=3)
SMALL_REG = dataclasses.replace(SMALL, registers=4, interpolate_offset=0.0, interpolate_antialias=True)


def small_vit(arch: DinoV2Arch = SMALL, seed: int = 0) -> DinoV2:
    """A randomly initialised DINOv2-layout ViT whose every tensor is random (norms and gammas too)."""
    torch.manual_seed(seed)
    model = DinoV2(arch).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def tiny_config(**overrides) -> DinoWMConfig:
    return DinoWMConfig.preset("dinowm-tiny", **{"dropout": 0.0, **overrides})


def pixels(B: int, T: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, T, 3, size, size), generator=g, dtype=torch.uint8)


# --------------------------------------------------------------- DINOv2 layout
def test_vits14_state_dict_is_the_official_layout():
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = DinoV2(DINOV2_ARCHS["dinov2_vits14_reg"])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    top = {"cls_token": (1, 1, 384), "pos_embed": (1, 1370, 384), "mask_token": (1, 384),
           "register_tokens": (1, 4, 384), "patch_embed.proj.weight": (384, 3, 14, 14), "patch_embed.proj.bias": (384,),
           "norm.weight": (384,), "norm.bias": (384,)}
    block = {"norm1.weight": (384,), "norm1.bias": (384,), "attn.qkv.weight": (1152, 384), "attn.qkv.bias": (1152,),
             "attn.proj.weight": (384, 384), "attn.proj.bias": (384,), "ls1.gamma": (384,), "norm2.weight": (384,),
             "norm2.bias": (384,), "mlp.fc1.weight": (1536, 384), "mlp.fc1.bias": (1536,),
             "mlp.fc2.weight": (384, 1536), "mlp.fc2.bias": (384,), "ls2.gamma": (384,)}
    expected = dict(top) | {f"blocks.{i}.{k}": s for i in range(12) for k, s in block.items()}
    assert shapes == expected
    with torch.device("meta"):
        plain = DinoV2(DINOV2_ARCHS["dinov2_vits14"])
    assert set(plain.state_dict()) == set(expected) - {"register_tokens"}
    norms = [m for m in plain.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 25 and all(m.eps == 1e-6 for m in norms)


@pytest.mark.parametrize("arch", [SMALL, SMALL_REG], ids=["plain", "registers"])
def test_official_layout_file_round_trips(tmp_path, arch):
    src = small_vit(arch)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = small_vit(arch, seed=1)
    state = load_dinov2_weights(path, dst)
    assert set(state) == set(src.state_dict())
    x = torch.randn(2, 3, 42, 42)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
        assert not torch.equal(small_vit(arch, seed=1)(x), src(x))  # the load changed the outputs


def test_hugging_face_layout_is_mapped(tmp_path):
    src = small_vit(SMALL_REG)
    hf = dinov2_to_hf(src.state_dict())
    # the key names of transformers' Dinov2Model (facebook/dinov2-small)
    for key in ("embeddings.cls_token", "embeddings.mask_token", "embeddings.position_embeddings",
                "embeddings.register_tokens", "embeddings.patch_embeddings.projection.weight",
                "encoder.layer.1.attention.attention.query.weight", "encoder.layer.1.attention.attention.value.bias",
                "encoder.layer.1.attention.output.dense.weight", "encoder.layer.0.layer_scale1.lambda1",
                "encoder.layer.0.mlp.fc2.bias", "layernorm.weight"):
        assert key in hf, key
    qkv = src.state_dict()["blocks.1.attn.qkv.weight"]  # rows: query, key, value (DINOv2's reshape order)
    for i, name in enumerate(("query", "key", "value")):
        assert torch.equal(hf[f"encoder.layer.1.attention.attention.{name}.weight"], qkv[32 * i : 32 * (i + 1)]), name
    path = tmp_path / "hf.safetensors"
    save_file({f"dinov2.{k}": v.contiguous() for k, v in hf.items()}, str(path))  # with the classifier's prefix
    dst = small_vit(SMALL_REG, seed=1)
    load_dinov2_weights(path, dst)
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def _write(path, state):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_bad_weight_files_are_refused_naming_the_key(tmp_path):
    model = small_vit()
    state = model.state_dict()
    wrong = dict(state, **{"blocks.1.mlp.fc1.weight": torch.zeros(100, 32)})
    with pytest.raises(DinoV2WeightsError, match=r"'blocks\.1\.mlp\.fc1\.weight' has shape \(100, 32\), the model "
                                                 r"expects \(128, 32\)"):
        load_dinov2_weights(_write(tmp_path / "shape.safetensors", wrong), model)
    missing = {k: v for k, v in state.items() if k != "blocks.0.ls2.gamma"}
    with pytest.raises(DinoV2WeightsError, match=r"lacks tensor 'blocks\.0\.ls2\.gamma' \(expected shape \(32,\)\)"):
        load_dinov2_weights(_write(tmp_path / "missing.safetensors", missing), model)
    extra = dict(state, register_tokens=torch.zeros(1, 4, 32))
    with pytest.raises(DinoV2WeightsError, match=r"'register_tokens' \(shape \(1, 4, 32\)\)"):
        load_dinov2_weights(_write(tmp_path / "extra.safetensors", extra), model)
    other = {f"backbone.{k}": v for k, v in state.items()}
    with pytest.raises(DinoV2WeightsError, match="unknown weights layout.*patch_embed.proj.weight"):
        load_dinov2_weights(_write(tmp_path / "layout.safetensors", other), model)
    nan = dict(state, **{"norm.bias": torch.full((32,), float("nan"))})
    with pytest.raises(DinoV2WeightsError, match="'norm.bias' holds NaN"):
        load_dinov2_weights(_write(tmp_path / "nan.safetensors", nan), model)
    hf = dinov2_to_hf(state)
    del hf["encoder.layer.0.attention.attention.key.bias"]
    with pytest.raises(DinoV2WeightsError, match=r"encoder\.layer\.0\.attention\.attention\.key\.bias"):
        load_dinov2_weights(_write(tmp_path / "hf.safetensors", hf), model)
    (tmp_path / "w.pth").write_bytes(b"\x80\x04not read")
    with pytest.raises(DinoV2WeightsError, match=r"pickle \(\.pth\).*safetensors"):
        load_dinov2_weights(tmp_path / "w.pth", model)
    with pytest.raises(DinoV2WeightsError, match="does not exist.*never downloaded"):
        load_dinov2_weights(tmp_path / "absent.safetensors", model)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(DinoV2WeightsError, match="not a readable safetensors file"):
        load_dinov2_weights(tmp_path / "junk.safetensors", model)


def _deterministic_state(model: DinoV2) -> dict:
    """Every tensor from a formula (by sorted key): norm weights and LayerScale gammas near 1, the rest small."""
    out = {}
    for i, (k, v) in enumerate(sorted(model.state_dict().items())):
        t = torch.sin(torch.arange(v.numel(), dtype=torch.float64) * 0.37 + i).float().reshape(v.shape) * 0.2
        out[k] = t + 1 if k.endswith("gamma") or ("norm" in k and k.endswith("weight")) else t
    return out


def _image(size: int) -> torch.Tensor:
    return torch.cos(torch.arange(3 * size * size, dtype=torch.float64) * 0.013).float().reshape(1, 3, size, size)


# Patch tokens of facebookresearch/dinov2's DinoVisionTransformer (commit b8931f7, as the hub
# builds it: init_values=1.0, block_chunks=0, MLP FFN; width 8, depth 2, 2 heads, patch 14,
# positions for a 3 x 3 grid) with `_deterministic_state` weights, on `_image(28)` (all 4
# tokens: positions interpolated down) and `_image(70)` (tokens 0, 12, 24: interpolated up), and
# the normalised CLS token on `_image(28)`.
OFFICIAL_TOKENS = {
    "plain": (
        [[-0.63849, 0.73687, -1.4068, 1.03673, 0.94768, -1.07927, 1.57687, -1.24869],
         [-0.63511, 0.74768, -1.40153, 1.01978, 0.96956, -1.09401, 1.56296, -1.24777],
         [-0.54556, 0.18854, -1.25969, 1.24748, 1.20955, -0.46426, 1.40608, -1.79153],
         [-0.54146, 0.44865, -1.31245, 1.20441, 1.07496, -0.74844, 1.45714, -1.64034]],
        [[-0.38128, -1.77345, 0.14548, 0.93346, 0.95259, 1.60007, 0.28316, -1.56491],
         [0.1704, -1.68154, -0.14021, 1.13802, 0.32714, 1.53319, 0.46248, -1.76015],
         [0.2082, -1.66916, -0.32962, 1.11627, 0.37377, 1.4673, 0.65366, -1.76133]],
        [0.03955, -1.80632, -0.52715, -0.24313, 1.69357, 1.61295, 0.55464, -1.11983],
    ),
    "registers": (  # num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0
        [[-0.60785, 0.76263, -1.41515, 1.04896, 0.92761, -1.08977, 1.54279, -1.25797],
         [-0.63214, 0.75726, -1.41219, 1.03791, 0.96092, -1.08771, 1.54078, -1.24578],
         [-0.5555, 0.19186, -1.28276, 1.29074, 1.19728, -0.42696, 1.36225, -1.78361],
         [-0.54523, 0.45429, -1.34094, 1.23291, 1.06086, -0.73044, 1.4356, -1.62296]],
        [[-0.31484, -1.7449, 0.17459, 0.97483, 0.89917, 1.60838, 0.17177, -1.60378],
         [0.16427, -1.67883, -0.15116, 1.16625, 0.29743, 1.56719, 0.41758, -1.73256],
         [0.20521, -1.66536, -0.34577, 1.1434, 0.34551, 1.50524, 0.60772, -1.73642]],
        [-0.03393, -1.83187, -0.52484, -0.19642, 1.69933, 1.64708, 0.52867, -1.06103],
    ),
}


@pytest.mark.parametrize("variant", ["plain", "registers"])
def test_outputs_match_the_official_implementation(variant):
    arch = DinoV2Arch(width=8, depth=2, heads=2, patch_size=14, pos_grid=3)
    if variant == "registers":
        arch = dataclasses.replace(arch, registers=4, interpolate_offset=0.0, interpolate_antialias=True)
    model = DinoV2(arch).eval()
    model.load_state_dict(_deterministic_state(model))
    small, large, cls = OFFICIAL_TOKENS[variant]
    with torch.no_grad():
        torch.testing.assert_close(model.forward_tokens(_image(28))[0, 0], torch.tensor(cls), rtol=0, atol=2e-5)
        torch.testing.assert_close(model(_image(28))[0], torch.tensor(small), rtol=0, atol=2e-5)
        torch.testing.assert_close(model(_image(70))[0, [0, 12, 24]], torch.tensor(large), rtol=0, atol=2e-5)


def test_positions_are_interpolated_to_other_sizes():
    model = small_vit()
    with torch.no_grad():
        model.pos_embed[:, 1:] = torch.arange(32.0)  # the same position vector everywhere
    for size, n in ((42, 9), (28, 4), (70, 25)):
        pos = model.interpolate_pos_embed(size, size)
        assert pos.shape == (1, 1 + n, 32)
        torch.testing.assert_close(pos[0, 1:], torch.arange(32.0).expand(n, 32))  # bicubic keeps a constant
        assert model(torch.randn(1, 3, size, size)).shape == (1, n, 32)
    assert model.interpolate_pos_embed(42, 42) is model.pos_embed  # the stored grid is used as is
    with pytest.raises(ValueError, match="multiples of patch_size=14"):
        model(torch.randn(1, 3, 40, 40))


# ----------------------------------------------------------------- the config
def test_config_presets_sizes_and_errors():
    cfg = DinoWMConfig.preset("dinowm")
    assert (cfg.family, cfg.image_size, cfg.encoder_input_size, cfg.num_tokens, cfg.token_dim) == ("dinowm", 224, 196,
                                                                                                   196, 384)
    assert cfg.embed_dim == 196 * 384 and cfg.block_dim == 10 and cfg.window == 4
    assert set(DINOWM_PRESETS) == {"dinowm", "dinowm-tiny"}
    tiny = DinoWMConfig.preset("dinowm-tiny", token_pool=2)
    assert tiny.embed_dim == 4 * 32
    assert DinoWMConfig.from_dict(json.loads(json.dumps(tiny.to_dict())), strict=True) == tiny
    with pytest.raises(ValueError, match="did you mean 'dinowm-tiny'"):
        DinoWMConfig.preset("dinowm-tin")
    with pytest.raises(ValueError, match="model family 'lewm', not 'dinowm'"):
        DinoWMConfig.from_dict({**tiny.to_dict(), "family": "lewm"})
    with pytest.raises(ValueError, match=r"unknown DinoWMConfig keys \['sigreg_weight'\]"):
        DinoWMConfig.from_dict({"sigreg_weight": 0.1})
    with pytest.raises(ValueError, match="encoder_size=40.*multiple of patch_size=14"):
        DinoWMConfig.preset("dinowm-tiny", encoder_size=40)
    with pytest.raises(ValueError, match=r"token_pool must be None or in \[1, 3\]"):
        DinoWMConfig.preset("dinowm-tiny", token_pool=4)
    with pytest.raises(ValueError, match="'w.pth'.*never loaded"):
        DinoWMConfig(encoder_weights="w.pth")
    with pytest.raises(ValueError, match="pixel_norm must be one of symmetric, imagenet, got 'zscore'"):
        DinoWMConfig(pixel_norm="zscore")


def test_published_preset_has_dino_wm_sizes():
    with torch.device("meta"):
        model = DinoWM(DinoWMConfig.preset("dinowm"), load_encoder=False)
    encoder = sum(p.numel() for p in model.encoder.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 21.5e6 < encoder < 22.5e6  # ViT-S/14
    assert 18.5e6 < trainable < 20.5e6  # DINO-WM: ~19 M trainable


# ------------------------------------------------------------------ the model
def test_predictions_are_frame_causal():
    torch.manual_seed(0)
    model = DinoWM(tiny_config()).eval()
    px, actions = pixels(2, 3), torch.randn(2, 3, 10)
    changed = px.clone()
    changed[:, 2] = 255 - changed[:, 2]  # frame 2 only
    with torch.no_grad():
        emb, emb2 = model.encode(px), model.encode(changed)
        assert torch.equal(emb[:, :2], emb2[:, :2]) and not torch.allclose(emb[:, 2], emb2[:, 2])
        out, out2 = model.predict(emb, actions), model.predict(emb2, actions)
        torch.testing.assert_close(out[:, :2], out2[:, :2], rtol=0, atol=1e-6)
        assert (out[:, 2] - out2[:, 2]).abs().max() > 1e-3
        acts2 = actions.clone()
        acts2[:, 2] += 1.0
        torch.testing.assert_close(model.predict(emb, acts2)[:, :2], out[:, :2], rtol=0, atol=1e-6)
    assert torch.equal(frame_causal_mask(2, 2), torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1],
                                                              [1, 1, 1, 1]], dtype=torch.bool))
    # without the mask (DINO-WM's ablation) the future leaks into earlier predictions
    torch.manual_seed(0)
    full = DinoWM(tiny_config(frame_causal=False)).eval()
    with torch.no_grad():
        assert (full.predict(emb, actions)[:, :2] - full.predict(emb2, actions)[:, :2]).abs().max() > 1e-3


def test_long_windows_are_predicted_from_context_frames():
    torch.manual_seed(0)
    model = DinoWM(tiny_config(pred_steps=3)).eval()  # context 3, windows of 6
    emb = torch.randn(2, 5, model.config.embed_dim)
    actions = torch.randn(2, 5, 10)
    with torch.no_grad():
        out = model.predict(emb, actions)
        torch.testing.assert_close(out[:, :3], model.predict(emb[:, :3], actions[:, :3]))
        for t in (3, 4):  # from the 3 frames ending at t, as planning gives them
            torch.testing.assert_close(out[:, t], model.predict(emb[:, t - 2 : t + 1], actions[:, t - 2 : t + 1])[:, -1])


def test_rollout_equals_a_step_by_step_reference():
    torch.manual_seed(0)
    model = DinoWM(tiny_config()).eval()
    B, S, H, k = 2, 3, 4, model.config.context
    emb = torch.randn(B, 4, model.config.embed_dim)
    past = torch.randn(B, 3, 10)
    cand = torch.randn(B, S, H, 10)
    with torch.no_grad():
        out = model.rollout(emb, cand, past)
        assert out.shape == (B, S, H, model.config.embed_dim)
        for b in range(B):
            for s in range(S):
                embs, acts = list(emb[b, -k:]), list(past[b, -(k - 1):])
                for h in range(H):
                    window_e, window_a = torch.stack(embs[-k:])[None], torch.stack([*acts[-(k - 1):], cand[b, s, h]])[None]
                    pred = model.predict(window_e, window_a)[0, -1]
                    torch.testing.assert_close(out[b, s, h], pred, rtol=1e-5, atol=1e-5)
                    embs.append(pred)
                    acts.append(cand[b, s, h])
        # without past actions only the last embedding is the context
        first = model.rollout(emb, cand[:, :, :1])
        torch.testing.assert_close(first[:, :, 0], model.predict(emb[:, -1:].expand(B, S, -1).reshape(B * S, 1, -1),
                                                                 cand[:, :, 0].reshape(B * S, 1, 10)).view(B, S, -1))
    with pytest.raises(ValueError, match=r"past_actions .*\(2, 3, 10\)"):
        model.rollout(emb, cand, past[:, :2])
    with pytest.raises(ValueError, match=r"emb must have shape \(B, T, 288\)"):
        model.rollout(emb[..., :10], cand, past)


@pytest.mark.parametrize("frame_causal", [True, False])
def test_eval_rollout_equals_the_sliding_window_reference(frame_causal):
    """The eval-mode rollout (shared context prefix, last layer on the predicted frame only) computes
    what the whole-window reference does, for every context length the planner gives it."""
    torch.manual_seed(0)
    model = DinoWM(tiny_config(frame_causal=frame_causal)).eval()
    B, S, H, D = 2, 3, 5, model.config.embed_dim
    for T0, with_past in ((4, True), (3, True), (2, True), (1, True), (4, False)):
        emb = torch.randn(B, T0, D)
        past = torch.randn(B, T0 - 1, 10) if with_past else None
        cand = torch.randn(B, S, H, 10)
        with torch.no_grad():
            fast = model.rollout(emb, cand, past)
            torch.testing.assert_close(fast, model.rollout_reference(emb, cand, past), rtol=1e-5, atol=1e-5)
    if not frame_causal:  # without the mask a prefix would see the candidates' tokens: not shareable
        W, N = model.predictor.pos_embedding.shape[-1], model.predictor.tokens
        with pytest.raises(ValueError, match="shared prefix needs the frame-causal mask"):
            model.predictor.last_frame(torch.randn(1, N, W), torch.randn(3, N, W))


def test_bf16_planning_rollout_is_close_to_float32():
    """`wm eval --dtype bfloat16` on a dinowm checkpoint: a bf16 copy rolls out, float32 in and out."""
    from worldmodel.model import PlanningModel, planning_model

    torch.manual_seed(0)
    model = DinoWM(tiny_config()).eval()
    bf16 = planning_model(model, "bfloat16")
    assert isinstance(bf16, PlanningModel) and next(model.parameters()).dtype == torch.float32
    emb, past, cand = torch.randn(2, 3, model.config.embed_dim), torch.randn(2, 2, 10), torch.randn(2, 4, 3, 10)
    with torch.inference_mode():
        low, full = bf16.rollout(emb, cand, past), model.rollout(emb, cand, past)
        torch.testing.assert_close(bf16.encode(pixels(1, 1)), model.encode(pixels(1, 1)))
    assert low.dtype == torch.float32 and 0 < (low - full).norm() / full.norm() < 0.05
    with pytest.raises(ValueError, match="compiled planning needs a model with the JEPA predictor.*DinoWM"):
        planning_model(model, "float32", compile=True)


def test_encoder_stays_frozen_through_an_optimiser_step():
    torch.manual_seed(0)
    model = DinoWM(tiny_config()).train()
    assert model.training and not model.encoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    out = model.loss(pixels(4, 4), torch.randn(4, 3, 10))
    assert set(out) == {"loss", "pred_loss"} and out["loss"].ndim == 0
    with torch.no_grad():  # dropout is 0: the loss is the MSE of the next-frame predictions
        px, acts = pixels(4, 4), torch.randn(4, 3, 10)
        emb = model.encode(px)
        torch.testing.assert_close(model.loss(px, acts)["pred_loss"],
                                   torch.nn.functional.mse_loss(model.predict(emb[:, :-1], acts), emb[:, 1:]))
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    after = model.state_dict()
    for k, v in before.items():
        if k.startswith("encoder."):
            assert torch.equal(after[k], v), k
    assert not torch.equal(after["predictor.pos_embedding"], before["predictor.pos_embedding"])
    assert not torch.equal(after["action_encoder.weight"], before["action_encoder.weight"])


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    model = DinoWM(tiny_config()).train()
    px, actions = pixels(8, 4, seed=1), torch.randn(8, 3, 10)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model.loss(px, actions)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_save_and_load_through_safetensors(tmp_path):
    torch.manual_seed(0)
    model = DinoWM(tiny_config(token_pool=2)).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "model": model.config.to_dict()}))
    from safetensors.torch import load_file

    config = DinoWMConfig.from_dict(json.loads((tmp_path / "config.json").read_text())["model"], strict=True)
    torch.manual_seed(1)
    loaded = DinoWM(config, load_encoder=False)
    loaded.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    loaded.eval()
    px, cand = pixels(2, 3), torch.randn(2, 2, 3, 10)
    with torch.no_grad():
        emb = model.encode(px)
        assert emb.shape == (2, 3, 4 * 32)
        torch.testing.assert_close(loaded.encode(px), emb, rtol=0, atol=0)
        torch.testing.assert_close(loaded.rollout(emb, cand, torch.randn(2, 2, 10).mul(0)),
                                   model.rollout(emb, cand, torch.zeros(2, 2, 10)), rtol=0, atol=0)


def test_encoder_from_a_weights_file(tmp_path):
    src = small_vit(SMALL)  # the dinowm-tiny encoder's shape
    path = _write(tmp_path / "enc.safetensors", src.state_dict())
    model = DinoWM(tiny_config(encoder_weights=str(path)))
    for k, v in src.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[k], v), k
    bad = _write(tmp_path / "bad.safetensors", dict(src.state_dict(), pos_embed=torch.zeros(1, 5, 32)))
    with pytest.raises(DinoV2WeightsError, match=r"'pos_embed' has shape \(1, 5, 32\), the model expects \(1, 10, 32\)"):
        DinoWM(tiny_config(encoder_weights=str(bad)))


def test_encoder_from_another_checkpoint(tmp_path):
    from worldmodel import JEPA, ModelConfig, save_checkpoint

    # a lewm checkpoint with a ViT encoder: its patch tokens, mapped to the DINOv2 layout
    torch.manual_seed(0)
    lewm = JEPA(ModelConfig.preset("lewm-micro")).eval()
    save_checkpoint(tmp_path / "lewm", lewm)
    config = tiny_config().with_encoder_from_ckpt(tmp_path / "lewm")
    assert (config.vit_width, config.encoder_input_size, config.vit_layer_scale, config.vit_ln_eps) == (32, 28, False, 1e-5)
    model = DinoWM(config)
    x = pixels(3, 1, size=28)[:, 0]
    with torch.no_grad():
        cls = model.encoder.forward_tokens(x.float() / 127.5 - 1)[:, 0]
        torch.testing.assert_close(cls, lewm.encoder.backbone(x.float() / 127.5 - 1), rtol=1e-5, atol=1e-5)
        assert model.encode(pixels(1, 2)).shape == (1, 2, 4 * 32)
    with pytest.raises(DinoV2WeightsError, match=r"vit_layer_scale=True \(checkpoint: False\).*with_encoder_from_ckpt"):
        DinoWM(tiny_config(encoder_from_ckpt=str(tmp_path / "lewm")))

    # a dinowm checkpoint: its frozen encoder as it is
    src = DinoWM(tiny_config(encoder_weights=str(_write(tmp_path / "e.safetensors", small_vit().state_dict()))))
    (tmp_path / "dino").mkdir()
    _write(tmp_path / "dino" / "model.safetensors", src.state_dict())
    (tmp_path / "dino" / "config.json").write_text(json.dumps({"model": src.config.to_dict()}))
    again = DinoWM(tiny_config().with_encoder_from_ckpt(tmp_path / "dino"))
    with torch.no_grad():
        torch.testing.assert_close(again.encode(pixels(2, 2)), src.encode(pixels(2, 2)), rtol=0, atol=0)

    # a CNN encoder has no patch tokens
    save_checkpoint(tmp_path / "cnn", JEPA(ModelConfig(encoder="cnn")))
    with pytest.raises(DinoV2WeightsError, match="encoder is 'cnn', which has no patch tokens"):
        tiny_config().with_encoder_from_ckpt(tmp_path / "cnn")
    with pytest.raises(DinoV2WeightsError, match="config.json is missing"):
        tiny_config().with_encoder_from_ckpt(tmp_path / "nowhere")


def test_bad_inputs_are_named():
    model = DinoWM(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"pixels must have shape \(B, T, 3, 64, 64\) uint8"):
        model.encode(pixels(1, 2, size=28))
    with pytest.raises(ValueError, match="pixels must be uint8"):
        model.encode(pixels(1, 2).float())
    with pytest.raises(ValueError, match=r"actions must have shape \(B, n - 1, A_block\)"):
        model.loss(pixels(2, 3), torch.randn(2, 3, 10))
    with pytest.raises(ValueError, match="NaN"):
        model.loss(pixels(2, 3), torch.full((2, 2, 10), float("nan")))
    with pytest.raises(TypeError, match="needs a DinoWMConfig"):
        DinoWM(dict(tiny_config().to_dict()))


def test_token_pooling_averages_the_patch_grid():
    torch.manual_seed(0)
    full = DinoWM(tiny_config(encoder_size=56)).eval()  # 4 x 4 patches
    pooled = DinoWM(tiny_config(encoder_size=56, token_pool=2), load_encoder=False).eval()
    pooled.encoder.load_state_dict(full.encoder.state_dict())
    px = pixels(2, 2)
    with torch.no_grad():
        tokens = full.encode_tokens(px).view(2, 2, 2, 2, 2, 2, 32)  # (B, T, rows/2, 2, cols/2, 2, d)
        torch.testing.assert_close(pooled.encode_tokens(px), tokens.mean(dim=(3, 5)).reshape(2, 2, 4, 32))
    assert pooled.config.embed_dim == 4 * 32 and full.config.embed_dim == 16 * 32


def test_rollout_speed_benchmark_times_a_checkpoints_rollouts(tmp_path, capsys):
    """``python -m benchmarks.rollout_speed --ckpt DIR``: reference, fast and bf16 rollouts of a saved dinowm."""
    from benchmarks.rollout_speed import main
    from worldmodel.checkpoint import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ckpt", DinoWM(tiny_config(token_pool=2)).eval())
    main(["--ckpt", str(tmp_path / "ckpt"), "--envs", "1", "--samples", "2", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert "DinoWM, dinowm" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == ["sliding window float32", "fast float32", "fast bfloat16"]
    flops = [float(line.split("(")[1].split(" GFLOP")[0]) for line in lines[1:]]
    assert flops[1] < flops[0]  # the fast rollout does less work than the sliding window
