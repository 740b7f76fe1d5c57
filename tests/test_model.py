"""JEPA shapes, causality, rollout semantics, input validation and config round trips."""

import pytest
import torch

from worldmodel import JEPA, ModelConfig

TINY = dict(image_size=32, encoder_width=8, embed_dim=16, projector_hidden=32, predictor_width=32,
            predictor_depth=2, predictor_heads=2, sigreg_projections=32, frameskip=2, action_dim=2)


def tiny(**kw) -> JEPA:
    torch.manual_seed(0)
    return JEPA(ModelConfig(**{**TINY, **kw}))


def pixels(B: int, T: int, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (B, T, 3, size, size), dtype=torch.uint8)


@pytest.mark.parametrize("encoder", ["cnn", "cnn-spatial", "vit"])
@pytest.mark.parametrize("size", [32, 64, 96])
def test_encode_shape_any_image_size(encoder, size):
    model = tiny(encoder=encoder, image_size=size, patch_size=8, vit_width=32, vit_depth=1, vit_heads=2).eval()
    emb = model.encode(pixels(3, 2, size))
    assert emb.shape == (3, 2, 16) and emb.dtype == torch.float32


def test_the_spatial_encoder_keeps_each_cell_apart():
    """cnn-spatial: the projector sees one cell of the 4x4 map at a time, so changing one cell of the
    map changes only that cell's embed_dim / 16 channels of the embedding (channel-major: c * 16 + cell)."""
    model = tiny(encoder="cnn-spatial", embed_dim=32).eval()
    assert model.encode(pixels(2, 1)).shape == (2, 1, 32)
    projector = model.encoder.projector
    feature_map = torch.randn(2, 64, 4, 4)  # (N, 8 * encoder_width, 4, 4)
    changed = feature_map.clone()
    changed[:, :, 1, 2] += 3.0  # cell 1 * 4 + 2 = 6
    with torch.no_grad():
        diff = (projector(changed) - projector(feature_map)).abs().amax(0)  # (32,)
    moved = {int(i) for i in torch.nonzero(diff > 1e-6).flatten()}
    assert moved == {6, 16 + 6}  # both channels of cell 6, nothing else
    with pytest.raises(ValueError, match="embed_dim=24: the cnn-spatial encoder needs a multiple of 16"):
        ModelConfig(**{**TINY, "encoder": "cnn-spatial", "embed_dim": 24})


def test_encode_accepts_non_contiguous_input():
    model = tiny().eval()
    x = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    emb = model.encode(x.permute(0, 3, 1, 2).unsqueeze(1))  # as the MPC policy calls it
    torch.testing.assert_close(emb, model.encode(x.permute(0, 3, 1, 2).contiguous().unsqueeze(1)))


def test_predict_and_rollout_shapes():
    model = tiny(context=2, pred_steps=2).eval()
    emb = model.encode(pixels(2, 3))
    assert model.predict(emb, torch.randn(2, 3, 4)).shape == (2, 3, 16)
    assert model.rollout(emb, torch.randn(2, 5, 4, 4)).shape == (2, 5, 4, 16)
    assert model.rollout(emb, torch.randn(2, 5, 4, 4), past_actions=torch.randn(2, 2, 4)).shape == (2, 5, 4, 16)


def _perturb_gates(model: JEPA) -> None:
    # make the blocks non-trivial so the rollout tests mean something
    with torch.no_grad():
        for block in model.predictor.blocks:
            block.ada[1].weight.normal_(0, 0.2)


def test_predict_is_causal():
    model = tiny(context=3, pred_steps=1).eval()
    _perturb_gates(model)  # open the attention gates so later tokens could leak
    emb, actions = torch.randn(2, 4, 16), torch.randn(2, 4, 4)
    base = model.predict(emb, actions)
    emb2, actions2 = emb.clone(), actions.clone()
    emb2[:, 2:] += 5.0
    actions2[:, 2:] -= 3.0
    changed = model.predict(emb2, actions2)
    torch.testing.assert_close(changed[:, :2], base[:, :2])
    assert not torch.allclose(changed[:, 2:], base[:, 2:])


def test_predict_depends_on_actions_after_training_a_step():
    # AdaLN-zero gates start at 0; one optimiser step makes actions matter.
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = model.loss(pixels(8, 2), torch.randn(8, 1, 4))
    out["loss"].backward()
    opt.step()
    model.eval()
    emb = torch.randn(2, 1, 16)
    assert not torch.allclose(model.predict(emb, torch.zeros(2, 1, 4)), model.predict(emb, torch.ones(2, 1, 4)))


@pytest.mark.parametrize("context", [1, 2, 3])
def test_rollout_equals_repeated_predict(context):
    model = tiny(context=context, pred_steps=2).eval()
    _perturb_gates(model)
    B, S, H, T0 = 2, 3, 4, 3
    emb, past = torch.randn(B, T0, 16), torch.randn(B, T0 - 1, 4)
    actions = torch.randn(B, S, H, 4)
    with torch.no_grad():
        out = model.rollout(emb, actions, past_actions=past)
        for s in range(S):
            embs = list(emb.unbind(1))  # T0 x (B, D)
            acts = list(past.unbind(1))  # T0-1 x (B, A)
            for h in range(H):
                k = min(context, len(embs))
                e = torch.stack(embs[-k:], 1)
                a = torch.stack((acts[len(acts) - (k - 1):] if k > 1 else []) + [actions[:, s, h]], 1)
                pred = model.predict(e, a)[:, -1]
                torch.testing.assert_close(out[:, s, h], pred, rtol=1e-4, atol=1e-5)
                embs.append(pred)
                acts.append(actions[:, s, h])


def test_rollout_without_past_actions_uses_last_embedding():
    model = tiny(context=2, pred_steps=1).eval()
    _perturb_gates(model)
    emb, actions = torch.randn(2, 3, 16), torch.randn(2, 2, 3, 4)
    torch.testing.assert_close(model.rollout(emb, actions), model.rollout(emb[:, -1:], actions))


def test_loss_keys_and_gradients():
    model = tiny(pred_steps=2)
    out = model.loss(pixels(8, 3), torch.randn(8, 2, 4))
    assert set(out) == {"loss", "pred_loss", "sigreg_loss", "rollout_loss"}
    assert out["rollout_loss"] > 0  # 2 frames after the context: an open-loop rollout is scored
    expected = out["pred_loss"] + model.config.sigreg_weight * out["sigreg_loss"] + out["rollout_loss"]
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_rollout_loss_scores_the_open_loop_rollout():
    model = tiny(pred_steps=2).eval()  # eval: BatchNorm uses running statistics in both paths
    px, act = pixels(4, 3), torch.randn(4, 2, 4)
    with torch.no_grad():
        out = model.loss(px, act)
        emb = model.encode(px)
        rolled = model.rollout(emb[:, :1], act[:, None])[:, 0]  # (B, 2, D)
    torch.testing.assert_close(out["rollout_loss"], torch.nn.functional.mse_loss(rolled, emb[:, 1:]))
    # One frame after the context: nothing to roll out, the term is zero.
    assert tiny(pred_steps=1).loss(pixels(4, 2), torch.randn(4, 1, 4))["rollout_loss"] == 0


def test_residual_predictor_predicts_changes():
    model = tiny(pred_steps=2).eval()
    emb, act = torch.randn(3, 2, 16), torch.randn(3, 2, 4)
    with torch.no_grad():
        delta = model.predictor(emb, act) - emb
        plain = tiny(pred_steps=2, predictor_residual=False).eval()
        plain.load_state_dict(model.state_dict())
        torch.testing.assert_close(plain.predictor(emb, act), delta)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m.encode(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)), r"\(B, T, 3, 32, 32\).*got \(2, 3, 32, 32\)"),
        (lambda m: m.encode(torch.zeros(2, 1, 3, 64, 64, dtype=torch.uint8)), r"got \(2, 1, 3, 64, 64\)"),
        (lambda m: m.encode(torch.zeros(2, 1, 3, 32, 32)), r"uint8.*float32"),
        (lambda m: m.predict(torch.zeros(2, 2, 16), torch.zeros(2, 2, 3)), r"A_block = frameskip \* action_dim = 4"),
        (lambda m: m.predict(torch.zeros(2, 2, 8), torch.zeros(2, 2, 4)), r"emb must have shape \(B, T, 16\)"),
        (lambda m: m.predict(torch.zeros(1, 0, 16), torch.zeros(1, 0, 4)), r"emb must have shape \(B, T, 16\)"),
        (lambda m: m.rollout(torch.zeros(2, 1, 16), torch.zeros(2, 5, 4)), r"\(B, S, H, A_block\)"),
        (lambda m: m.rollout(torch.zeros(2, 2, 16), torch.zeros(2, 5, 3, 4), torch.zeros(2, 2, 4)), r"past_actions"),
        (lambda m: m.loss(torch.zeros(2, 2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, 2, 4)), r"\(B, n - 1, A_block\)"),
        (lambda m: m.loss(torch.zeros(2, 1, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, 0, 4)), r"n >= 2"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny().eval())


def test_config_round_trip_and_errors():
    cfg = ModelConfig(**TINY)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.block_dim == 4 and cfg.window == 2
    with pytest.raises(ValueError, match=r"unknown ModelConfig keys \['embed_size'\]"):
        ModelConfig.from_dict({"embed_size": 3})
    with pytest.raises(ValueError, match=r"ModelConfig.embed_dim must be int, got '64'"):
        ModelConfig.from_dict({"embed_dim": "64"})
    with pytest.raises(ValueError, match="missing keys"):
        ModelConfig.from_dict({"embed_dim": 64}, strict=True)
    with pytest.raises(ValueError, match="'cnn', 'cnn-spatial' or 'vit'"):
        ModelConfig(encoder="resnet")
    with pytest.raises(ValueError, match="divisible by patch_size"):
        ModelConfig(encoder="vit", image_size=60, patch_size=8)
    assert ModelConfig.from_dict({"dropout": 0}).dropout == 0.0  # ints are fine for floats


@pytest.mark.parametrize("rows", [1, 7, 24, None])
def test_rollout_in_chunks_of_candidates_equals_one_call(rows, monkeypatch):
    import worldmodel.model as wm_model

    model = tiny(context=3, pred_steps=2).eval()
    _perturb_gates(model)
    B, S, H = 2, 11, 4
    emb, past, actions = torch.randn(B, 3, 16), torch.randn(B, 2, 4), torch.randn(B, S, H, 4)
    calls = []
    rollout = model.predictor.rollout
    monkeypatch.setattr(model.predictor, "rollout", lambda *a, **k: calls.append(a[2].shape[1]) or rollout(*a, **k))
    with torch.no_grad():
        monkeypatch.setattr(wm_model, "ROLLOUT_CHUNK_ROWS", None)
        whole = model.rollout(emb, actions, past_actions=past)
        monkeypatch.setattr(wm_model, "ROLLOUT_CHUNK_ROWS", rows)
        chunked = model.rollout(emb, actions, past_actions=past)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    per = S if rows is None else max(1, rows // (B * 3))  # candidates per call: rows // (B x context)
    assert calls == [S] + [min(per, S - i) for i in range(0, S, per)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_attention_equals_sdpa(monkeypatch, causal: bool, dtype: torch.dtype) -> None:
    """The CPU bf16 attention path (two matmuls) gives SDPA's output and gradients."""
    import worldmodel.encoder as enc

    torch.manual_seed(0)
    attn = enc.Attention(32, 2, causal=causal, head_dim=16).to(dtype)
    x = torch.randn(3, 7, 32, dtype=dtype)
    q = torch.randn(3, 2, 7, 16, dtype=dtype)
    assert enc.use_matmul_attention(q) == (dtype == torch.bfloat16)
    outs = []
    for matmul in (False, True):
        monkeypatch.setattr(enc, "use_matmul_attention", lambda q: matmul)
        xi = x.clone().requires_grad_()
        y = attn(xi)
        y.float().square().sum().backward()
        outs.append((y.float(), xi.grad.float()))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(outs[1][0], outs[0][0], **tol)
    torch.testing.assert_close(outs[1][1], outs[0][1], **tol)
