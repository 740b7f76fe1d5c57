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


@pytest.mark.parametrize("encoder", ["cnn", "cnn-spatial", "cnn-keypoints", "vit"])
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
    assert ModelConfig(**{**TINY, "encoder": "cnn-keypoints", "embed_dim": 24}).embed_dim == 24  # no cells there


def test_spatial_softmax_reads_each_maps_peak_position():
    """spatial_softmax: a sharp peak at column c, row r reads (x, y) = (-1 + 2c / (W - 1), -1 + 2r / (H - 1))."""
    from worldmodel.encoder import spatial_softmax

    maps = torch.zeros(2, 3, 5, 9)
    peaks = [[(0, 0), (4, 8), (2, 3)], [(1, 6), (3, 2), (0, 8)]]  # (row, column) per channel
    for n, row in enumerate(peaks):
        for k, (r, c) in enumerate(row):
            maps[n, k, r, c] = 50.0
    out = spatial_softmax(maps)
    assert out.shape == (2, 6)
    want = torch.tensor([[-1 + 2 * c / 8 for _, c in row] + [-1 + 2 * r / 4 for r, _ in row] for row in peaks])
    torch.testing.assert_close(out, want, atol=1e-4, rtol=0)
    # a flat map reads the centre; a high temperature pulls a peak toward it
    assert spatial_softmax(torch.zeros(1, 1, 4, 4)).abs().max() < 1e-6
    assert spatial_softmax(maps, 1e3)[0, 1].abs() < 0.1


def test_the_keypoint_encoder_follows_an_object_that_moves():
    """cnn-keypoints: its backbone's features are positions, so shifting an object by 8 pixels (2 cells of
    the 16 x 16 map of a 64-pixel frame, 4 / 15 in [-1, 1]) moves the keypoints that sit on it by that much
    to the right and not up or down (the conv stack is translation-equivariant inside the frame)."""
    torch.manual_seed(0)
    model = tiny(encoder="cnn-keypoints", image_size=64).eval()
    backbone = model.encoder.backbone
    with torch.no_grad():
        backbone.log_temperature.fill_(-4.0)  # sharp maps: each keypoint sits on its channel's peak
    frame = torch.full((1, 3, 64, 64), -1.0)
    frame[:, :, 24:36, 20:28] = 1.0  # a bright block on a dark floor, away from the border
    moved = torch.roll(frame, shifts=8, dims=3)
    with torch.no_grad():
        a, b = backbone(frame)[0], backbone(moved)[0]
    assert a.shape == (8 * 8,)  # 8 * encoder_width: 32 x's, 32 y's
    k = len(a) // 2
    ax, ay, bx, by = a[:k], a[k:], b[:k], b[k:]
    # keypoints within the block's region (pixels 20-28 x, 24-36 y, one cell of margin) in the first frame
    on = (ax > -1 + 2 * (20 / 4 - 1) / 15) & (ax < -1 + 2 * (28 / 4 + 1) / 15) \
        & (ay > -1 + 2 * (24 / 4 - 1) / 15) & (ay < -1 + 2 * (36 / 4 + 1) / 15)
    assert on.sum() >= 3
    torch.testing.assert_close(bx[on] - ax[on], torch.full((int(on.sum()),), 4 / 15), atol=0.03, rtol=0)
    assert (by[on] - ay[on]).abs().max() < 0.03


@pytest.mark.parametrize("encoder", ["cnn", "cnn-spatial", "cnn-keypoints"])
def test_the_linear_projector_keeps_the_embedding_linear_in_the_features(encoder):
    """projector 'linear': the embedding is one affine map of the backbone's features (doubling a
    feature change doubles the embedding change), where the default MLP is not; configs written before
    the field existed load with 'mlp'; a typo is named with the closest choice."""
    model = tiny(encoder=encoder, projector="linear", embed_dim=32).eval()
    backbone_out = model.encoder.backbone(torch.zeros(1, 3, 32, 32))
    f0 = torch.randn(3, *backbone_out.shape[1:])
    df = torch.randn_like(f0)
    proj = model.encoder.projector
    with torch.no_grad():
        d1, d2 = proj(f0 + df) - proj(f0), proj(f0 + 2 * df) - proj(f0)
    assert d1.shape == (3, 32)
    torch.testing.assert_close(d2, 2 * d1, atol=1e-4, rtol=1e-4)
    mlp = tiny(encoder=encoder, embed_dim=32).eval().encoder.projector
    with torch.no_grad():
        m1, m2 = mlp(f0 + df) - mlp(f0), mlp(f0 + 2 * df) - mlp(f0)
    assert not torch.allclose(m2, 2 * m1, atol=1e-3, rtol=1e-3)
    assert ModelConfig.from_dict({k: v for k, v in ModelConfig(**TINY).to_dict().items() if k != "projector"},
                                 strict=True).projector == "mlp"
    with pytest.raises(ValueError, match="projector must be one of 'mlp', 'linear', 'none', got 'linaer'; did you mean 'linear'"):
        ModelConfig(**{**TINY, "projector": "linaer"})


@pytest.mark.parametrize("encoder,features", [("cnn", 64), ("cnn-keypoints", 64), ("cnn-spatial", 1024), ("vit", 192)])
def test_without_a_projector_the_backbone_features_are_the_embedding(encoder, features):
    """projector 'none': encode returns the backbone's features themselves (embed_dim = their number,
    8 * encoder_width, x 16 cells for cnn-spatial); another embed_dim is refused naming the number."""
    model = tiny(encoder=encoder, projector="none", embed_dim=features).eval()
    px = pixels(2, 1)
    with torch.no_grad():
        emb = model.encode(px)[:, 0]
        want = model.encoder.backbone(px[:, 0].float() / 127.5 - 1.0).flatten(1)
    torch.testing.assert_close(emb, want)
    assert not any(True for _ in model.encoder.projector.parameters())
    with pytest.raises(ValueError, match=f"embed_dim=16: with projector 'none' .* so embed_dim must be {features}"):
        ModelConfig(**{**TINY, "encoder": encoder, "projector": "none"})


def test_an_encoder_that_disagrees_with_the_config_on_its_feature_count_is_refused(monkeypatch):
    """The config states each backbone's feature count without torch (``backbone_features``); building an
    encoder whose backbone gives another number fails naming both, so the two cannot drift apart silently."""
    monkeypatch.setattr(ModelConfig, "backbone_features", lambda self: 63)
    with pytest.raises(RuntimeError, match="the cnn backbone gives 64 features but .*backbone_features\\(\\) says 63"):
        tiny(encoder="cnn")


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


def test_the_sigreg_expander_is_what_sigreg_shapes():
    """sigreg_expander > 0: sigreg_loss is SIGReg of the expander's outputs (here 12-d), not of the
    16-d embedding, and its gradient reaches the encoder through the expander; without it, no expander
    exists (older checkpoints' state dicts load unchanged)."""
    model = tiny(sigreg_expander=12).eval()
    assert tiny().expander is None
    px, act = pixels(8, 2), torch.randn(8, 1, 4)
    with torch.no_grad():
        emb = model.encode(px)
        z = model.expander(emb.flatten(0, 1)).view(8, 2, 12)
        torch.manual_seed(1)
        want = model.sigreg(z.transpose(0, 1))
        torch.manual_seed(1)
        got = model.loss(px, act)["sigreg_loss"]
        torch.manual_seed(1)
        on_emb = model.sigreg(emb.transpose(0, 1))
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, on_emb)
    model.train()
    model.loss(px, act)["sigreg_loss"].backward()
    assert model.expander.net[0].weight.grad is not None
    assert model.encoder.backbone.convs[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="sigreg_expander must be >= 0, got -1"):
        ModelConfig(**{**TINY, "sigreg_expander": -1})


def test_the_reconstruction_term_scores_each_frame_against_the_mean_frame():
    """recon_weight > 0: the decoder's target is each frame in grayscale, area-downsampled to recon_size,
    minus the batch's mean frame; the term is sum(err^2) / sum(var): 1 for the mean frame (the
    zero-initialised decoder's output), 0 for a perfect reconstruction; it enters ``loss`` times its
    weight and its gradient reaches the encoder. Without it, no decoder exists."""
    assert tiny().recon is None
    model = tiny(recon_weight=0.5, recon_size=8, recon_hidden=16)
    frame = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    frame[..., :, :16] = 255  # left half white
    frame[:, 0, :4, 16:20] = 255  # one colour channel of the top-left 4 x 4 of the right half: grey 1/3 there
    target = model.recon.target(frame).view(8, 8)
    assert target[:, :4].eq(1).all() and target[1:, 4:].eq(0).all()
    torch.testing.assert_close(target[0, 4:], torch.tensor([1 / 3, 0.0, 0.0, 0.0]))
    px, act = pixels(8, 2), torch.randn(8, 1, 4)
    out = model.loss(px, act)
    torch.testing.assert_close(out["recon_loss"], torch.tensor(1.0))  # the zero-initialised decoder: the mean frame
    torch.testing.assert_close(out["loss"], out["pred_loss"] + model.config.sigreg_weight * out["sigreg_loss"]
                               + out["rollout_loss"] + 0.5 * out["recon_loss"])
    emb = torch.randn(16, 16)
    flat = px.flatten(0, 1)
    want = model.recon.target(flat) - model.recon.target(flat).mean(0, keepdim=True)
    with torch.no_grad():  # a decoder that outputs the centred target exactly scores 0; half of it scores 1/4
        model.recon.net[-1].bias.copy_(torch.zeros(64))
    torch.testing.assert_close(model.recon.loss(emb, flat), torch.tensor(1.0))
    decoder = model.recon
    decoder.forward = lambda e: want
    torch.testing.assert_close(decoder.loss(emb, flat), torch.tensor(0.0))
    decoder.forward = lambda e: want / 2
    torch.testing.assert_close(decoder.loss(emb, flat), torch.tensor(0.25))
    del decoder.forward
    model.zero_grad()
    for _ in range(2):  # the first step moves the zero-initialised last layer; then the gradient flows back
        out = model.loss(px, act)
        out["recon_loss"].backward()
        with torch.no_grad():
            for p in model.recon.parameters():
                p -= 0.1 * p.grad
        assert model.recon.net[-1].weight.grad.abs().sum() > 0
    assert model.encoder.backbone.convs[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="recon_size must be in 1..image_size \\(32\\) with recon_weight > 0, got 33"):
        ModelConfig(**{**TINY, "recon_size": 33, "recon_weight": 1.0})
    assert ModelConfig(**{**TINY, "image_size": 16}).recon_size == 32  # the default is unused without the term
    with pytest.raises(ValueError, match="recon_weight must be >= 0, got -1"):
        ModelConfig(**{**TINY, "recon_weight": -1.0})
    with pytest.raises(ValueError, match="recon_size must be >= 1, got 0"):
        ModelConfig(**{**TINY, "recon_size": 0})
    with pytest.raises(ValueError, match="recon_hidden must be >= 1, got 0"):
        ModelConfig(**{**TINY, "recon_hidden": 0})


def test_a_standardised_reconstruction_target_ignores_brightness_and_contrast():
    """recon_standardise: each target frame is standardised over its pixels, so a frame and the same frame
    with another brightness and contrast (an affine map of its intensities) give the same target;
    without it they differ."""
    frame = pixels(1, 1)[:, 0]
    dimmer = (frame.float() * 0.5 + 40).round().to(torch.uint8)
    on = tiny(recon_weight=1.0, recon_size=8, recon_standardise=True).recon
    off = tiny(recon_weight=1.0, recon_size=8).recon
    torch.testing.assert_close(on.target(dimmer), on.target(frame), atol=0.03, rtol=0)
    assert (off.target(dimmer) - off.target(frame)).abs().max() > 0.1
    t = on.target(frame)
    torch.testing.assert_close(t.mean(1), torch.zeros(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.square().mean(1), torch.ones(1), atol=1e-4, rtol=0)
    assert on.target(torch.full((1, 3, 32, 32), 7, dtype=torch.uint8)).abs().max() == 0  # uniform: zeros, no NaN


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
    with pytest.raises(ValueError, match="one of 'cnn', 'cnn-spatial', 'cnn-keypoints', 'vit', got 'resnet'"):
        ModelConfig(encoder="resnet")
    with pytest.raises(ValueError, match="got 'cnn-keypoint'; did you mean 'cnn-keypoints'"):
        ModelConfig(encoder="cnn-keypoint")
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
