"""Planning at LeWorldModel scale, fast: model presets, the cached rollout, bf16 planning,
MPC skipping ended episodes, and `wm bench solvers`' JSON contract (tiny models only)."""

from __future__ import annotations

import json
import warnings

import numpy as np

import pytest
import torch

from worldmodel.config import MODEL_PRESETS, ModelConfig, UnknownPresetError
from worldmodel.model import JEPA, PlanningModel, planning_model


def _model(context: int, residual: bool = True, seed: int = 0) -> JEPA:
    """A tiny eval-mode JEPA whose AdaLN modulations are not zero (zero-init blocks are identities)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(image_size=16, context=context, pred_steps=2, embed_dim=16, predictor_width=32,
                      predictor_depth=3, predictor_heads=4, predictor_head_dim=8, predictor_mlp_dim=48,
                      predictor_residual=residual, projector_hidden=24)
    model = JEPA(cfg).eval()
    with torch.no_grad():
        for block in model.predictor.blocks:
            block.ada[1].weight.normal_(0, 0.3)
            block.ada[1].bias.normal_(0, 0.3)
        bn = model.predictor.projector.net[1]
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model


def _inputs(model: JEPA, B: int, T0: int, S: int, H: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    A, D = model.config.block_dim, model.config.embed_dim
    return (torch.randn(B, T0, D, generator=g), torch.randn(B, S, H, A, generator=g),
            torch.randn(B, T0 - 1, A, generator=g))


# ------------------------------------------------------------------ the fast rollout
@pytest.mark.parametrize("context", [1, 2, 3])
@pytest.mark.parametrize("residual", [True, False])
def test_fast_rollout_equals_sliding_window(context: int, residual: bool) -> None:
    model = _model(context, residual)
    for T0 in range(1, context + 2):  # fewer, as many and more context frames than the model keeps
        for H in (1, 4):
            emb, actions, past = _inputs(model, B=2, T0=T0, S=3, H=H)
            with torch.no_grad():
                fast = model.rollout(emb, actions, past)
                ref = model.rollout_reference(emb, actions, past)
                # without past actions only the last embedding is context
                fast1, ref1 = model.rollout(emb, actions), model.rollout_reference(emb, actions)
            assert fast.shape == (2, 3, H, 16)
            torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5, msg=f"context={context} T0={T0} H={H}")
            torch.testing.assert_close(fast1, ref1, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("token_major", [True, False])
@pytest.mark.parametrize("context", [1, 2, 3])
def test_token_major_attention_rollout_equals_sliding_window(context: int, token_major: bool, monkeypatch) -> None:
    """The rollout's wiring of ``_attend_few`` (history keys, candidate keys, mask), which the CPU
    takes, and of the head-major branch (GPUs, float32 gradients), checked in float32 against the
    sliding window (bf16 rounding would hide a wrong key)."""
    import worldmodel.predictor as predictor

    monkeypatch.setattr(predictor, "use_few_key_attention", lambda q: token_major)
    model = _model(context)
    for T0 in range(1, context + 2):
        emb, actions, past = _inputs(model, B=2, T0=T0, S=3, H=4)
        with torch.no_grad():
            torch.testing.assert_close(model.rollout(emb, actions, past), model.rollout_reference(emb, actions, past),
                                       rtol=1e-4, atol=1e-5, msg=f"context={context} T0={T0}")


def test_cpu_rollouts_attend_token_major_in_float32_without_grad_and_in_bf16(monkeypatch) -> None:
    """Which branch a CPU rollout takes: token-major without autograd (float32 and bf16) and in
    bf16 with it; head-major for float32 gradients (the gradient solvers), as measured."""
    import worldmodel.predictor as predictor

    calls = []
    real = predictor._attend_few
    monkeypatch.setattr(predictor, "_attend_few", lambda *a: calls.append(1) or real(*a))
    model = _model(3)
    emb, actions, past = _inputs(model, B=2, T0=3, S=3, H=2)
    with torch.no_grad():
        model.rollout(emb, actions, past)
    assert calls, "float32 without grad: token-major"
    calls.clear()
    model.rollout(emb, actions.requires_grad_(), past)
    assert not calls, "float32 with grad: head-major"
    bf16 = planning_model(model, "bfloat16")
    with torch.inference_mode():
        bf16.rollout(emb, actions.detach(), past)
    assert calls, "bf16: token-major"


def test_fast_rollout_does_less_work_for_the_same_result() -> None:
    """Per candidate, the fast path's FLOPs are well below the sliding window's (context 3, H 5)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = _model(3)
    emb, actions, past = _inputs(model, B=2, T0=3, S=64, H=5)
    counts = []
    for fn in (model.rollout, model.rollout_reference):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn(emb, actions, past)
        counts.append(counter.get_total_flops())
    # 0.514 here (0.665 at LeWorldModel scale); 0.569 if the last block computed every token's output
    assert counts[0] < 0.54 * counts[1], counts


def test_prefix_is_reused_across_calls_and_recomputed_when_inputs_or_weights_change(monkeypatch) -> None:
    model = _model(3)
    calls = []
    original = model.predictor.rollout_prefix
    monkeypatch.setattr(model.predictor, "rollout_prefix", lambda *a, **k: calls.append(1) or original(*a, **k))
    emb, actions, past = _inputs(model, B=2, T0=3, S=4, H=3)
    with torch.inference_mode():
        first = model.rollout(emb, actions, past)
        model.rollout(emb, actions.flip(1), past)  # new candidates, same context: a CEM iteration
        assert len(calls) == 1
        model.rollout(emb + 1, actions, past)  # another context
        assert len(calls) == 2
        model.rollout(emb, actions, past)
        assert len(calls) == 3
    with torch.no_grad():
        model.predictor.in_proj.weight.mul_(1.5)  # an in-place weight update (an optimiser step)
        second = model.rollout(emb, actions, past)
    assert len(calls) == 4
    assert not torch.allclose(first, second)
    with torch.no_grad():
        torch.testing.assert_close(second, model.rollout_reference(emb, actions, past), rtol=1e-4, atol=1e-5)


def test_fast_rollout_gradient_equals_sliding_window_gradient() -> None:
    model = _model(3)
    emb, actions, past = _inputs(model, B=2, T0=3, S=3, H=4)
    grads = []
    for fn in (model.rollout, model.rollout_reference):
        a = actions.clone().requires_grad_(True)
        fn(emb, a, past).pow(2).sum().backward()
        grads.append(a.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_train_mode_rollout_is_the_sliding_window() -> None:
    """Batch statistics see every token in training: rollout must not take the fast path there."""
    model = _model(3).train()
    emb, actions, past = _inputs(model, B=2, T0=3, S=3, H=3)
    torch.manual_seed(0)
    a = model.rollout(emb, actions, past)
    torch.manual_seed(0)
    b = model.rollout_reference(emb, actions, past)
    torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ bf16 planning
def test_bf16_planning_model_is_close_and_float32_outside() -> None:
    model = _model(3)
    bf16 = planning_model(model, "bfloat16")
    assert isinstance(bf16, PlanningModel) and planning_model(model, "float32") is model
    assert next(model.parameters()).dtype == torch.float32  # the original is untouched
    emb, actions, past = _inputs(model, B=2, T0=3, S=8, H=5)
    with torch.inference_mode():
        low, full = bf16.rollout(emb, actions, past), model.rollout(emb, actions, past)
    assert low.dtype == torch.float32
    assert (low - full).norm() / full.norm() < 0.05
    with pytest.raises(ValueError, match="float32, bfloat16, got .float16."):
        planning_model(model, "float16")


def test_bf16_planning_warns_on_a_cpu_without_native_bf16(monkeypatch) -> None:
    model = _model(3)
    monkeypatch.setattr("worldmodel.device.cpu_has_fast_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without native bf16 matrix products"):
        planning_model(model, "bfloat16")
    monkeypatch.setattr("worldmodel.device.cpu_has_fast_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        planning_model(model, "bfloat16")


@pytest.mark.parametrize("encoder", ["cnn", "vit"])
def test_bf16_planning_model_encodes_with_any_encoder(encoder: str) -> None:
    """The demo's CNN encoder too: encoding runs in float32, equal to the model's own."""
    from worldmodel.config import ModelConfig
    from worldmodel.model import JEPA

    cfg = ModelConfig(image_size=32, action_dim=2, encoder=encoder, embed_dim=16, context=2, frameskip=2)
    model = JEPA(cfg).eval()
    pixels = torch.randint(0, 256, (2, 1, 3, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        emb = planning_model(model, "bfloat16").encode(pixels)
        torch.testing.assert_close(emb, model.encode(pixels))
    assert emb.dtype == torch.float32


def test_bf16_cem_plan_costs_about_what_the_float32_plan_costs() -> None:
    """bf16 plans improve on random actions about as much as float32 plans, pooled over 16 envs.

    Per env the comparison is noise: a bf16 rounding changes which candidates become elites,
    and over 120 envs of this toy (30 seeds) single-env ratios of bf16 to float32 gain ranged
    from 0.37 to 1.1 around a mean of 0.93 (eager and oneDNN bf16 layers alike). A broken bf16
    rollout plans no better than random: ratio near 0.
    """
    from planners import CEM
    from planners.objectives import terminal_l2

    model = _model(3)
    g = torch.Generator().manual_seed(3)
    B = 16
    emb, past = torch.randn(B, 3, 16, generator=g), torch.rand(B, 2, 10, generator=g) * 2 - 1
    goal = torch.randn(B, 16, generator=g)
    exact = terminal_l2(model, emb, goal, past)
    costs = {}
    for dtype in ("float32", "bfloat16"):
        cem = CEM(horizon=4, action_dim=10, low=-1, high=1, num_samples=64, iterations=6, num_elites=8, seed=0)
        with torch.inference_mode():
            plan = cem.plan(terminal_l2(planning_model(model, dtype), emb, goal, past), B).actions
            costs[dtype] = exact(plan[:, None])[:, 0]  # each plan scored by the float32 model
    with torch.inference_mode():
        random_cost = exact(torch.rand(B, 64, 4, 10, generator=g) * 2 - 1).mean(1)
    gain32, gain16 = random_cost - costs["float32"], random_cost - costs["bfloat16"]
    assert (gain32 > 0).all()
    assert gain16.sum() > 0.85 * gain32.sum(), (costs, random_cost)


# ------------------------------------------------------------------ oneDNN linear layers (bf16 on CPU)
_needs_onednn = pytest.mark.skipif(not __import__("worldmodel.cpu_fused", fromlist=["x"]).fused_mlp_available(),
                                   reason="this PyTorch build or CPU has no oneDNN bf16 linear ops")


def _eager_bf16(model: JEPA, monkeypatch) -> PlanningModel:
    """The bf16 planning model without the oneDNN layers (plain modules, as before them)."""
    import worldmodel.cpu_fused as cpu_fused

    with monkeypatch.context() as m:
        m.setattr(cpu_fused, "fused_mlp_available", lambda: False)
        return planning_model(model, "bfloat16")


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("n, m, mq", [(2, 1, 1), (1, 2, 2), (0, 3, 3), (0, 3, 1), (1, 2, 1)])
def test_few_key_attention_equals_sdpa(n: int, m: int, mq: int, grad: bool) -> None:
    """bf16 rollouts on CPU attend token-major (``_attend_few``): shared history keys broadcast
    over the candidates, causal mask as the rollout builds it (each query row visits only its
    allowed keys, written into one output without grad, concatenated with it); float32 here:
    exact up to rounding."""
    import torch.nn.functional as F

    from worldmodel.predictor import _attend_few

    g = torch.Generator().manual_seed(n * 10 + m + mq)
    B, S, h, d = 2, 3, 4, 8
    q = torch.randn(B, S, mq, h, d, generator=g)
    keys = [torch.randn(B, 1, 1, h, d, generator=g) for _ in range(n)] + [torch.randn(B, S, 1, h, d, generator=g) for _ in range(m)]
    values = [torch.randn(B, 1, 1, h, d, generator=g) for _ in range(n)] + [torch.randn(B, S, 1, h, d, generator=g) for _ in range(m)]
    mask = None if mq == 1 else torch.ones(mq, n + m, dtype=torch.bool).tril(n)
    with torch.set_grad_enabled(grad):
        out = _attend_few(q, keys, values, mask)

    def heads(ts: list) -> torch.Tensor:  # (B * S, h, L, d)
        return torch.cat([t.expand(B, S, 1, h, d) for t in ts], dim=2).reshape(B * S, -1, h, d).transpose(1, 2)

    ref = F.scaled_dot_product_attention(q.reshape(B * S, mq, h, d).transpose(1, 2), heads(keys), heads(values),
                                         attn_mask=mask)
    torch.testing.assert_close(out, ref.transpose(1, 2).reshape(B, S, mq, h, d), rtol=1e-5, atol=1e-6)
    if grad:  # the gradient solvers differentiate through it (the weighted sum accumulates in place)
        inputs = [q, *keys, *values]
        weight = torch.randn(B, S, mq, h, d, generator=g)
        for t in inputs:
            t.requires_grad_()
        got = torch.autograd.grad((_attend_few(q, keys, values, mask) * weight).sum(), inputs)
        ref = F.scaled_dot_product_attention(q.reshape(B * S, mq, h, d).transpose(1, 2), heads(keys), heads(values),
                                             attn_mask=mask).transpose(1, 2).reshape(B, S, mq, h, d)
        for a, b in zip(got, torch.autograd.grad((ref * weight).sum(), inputs)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@_needs_onednn
def test_bf16_planning_model_runs_onednn_layers_with_the_eager_result(monkeypatch) -> None:
    from worldmodel.cpu_fused import FusedFeedForward, PackedLinear

    model = _model(3)
    fused, eager = planning_model(model, "bfloat16"), _eager_bf16(model, monkeypatch)
    kinds = {type(m) for m in fused.inner.predictor.modules()}
    assert FusedFeedForward in kinds and PackedLinear in kinds
    assert not {FusedFeedForward, PackedLinear} & {type(m) for m in eager.inner.modules()}
    for ff in (m for m in fused.inner.modules() if isinstance(m, FusedFeedForward)):  # it packs its own linears
        assert PackedLinear not in {type(m) for m in ff.modules()}
    emb, actions, past = _inputs(model, B=2, T0=3, S=8, H=5)
    with torch.inference_mode():
        a, b, full = fused.rollout(emb, actions, past), eager.rollout(emb, actions, past), model.rollout(emb, actions, past)
    # the same bf16 arithmetic up to rounding: as close to the float32 result as the eager bf16 layers are
    assert (a - b).norm() / full.norm() < 0.02
    assert (a - full).norm() <= 1.5 * (b - full).norm() + 1e-3


@_needs_onednn
def test_bf16_planning_gradients_run_the_plain_layers(monkeypatch) -> None:
    """Gradient solvers: with autograd on, the oneDNN layers step aside (they have no backward)."""
    model = _model(3)
    fused, eager = planning_model(model, "bfloat16"), _eager_bf16(model, monkeypatch)
    emb, actions, past = _inputs(model, B=2, T0=3, S=4, H=3)
    grads = []
    for pm in (fused, eager):
        a = actions.clone().requires_grad_(True)
        pm.rollout(emb, a, past).square().sum().backward()
        grads.append(a.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


@_needs_onednn
def test_packed_linear_repacks_when_its_weight_changes() -> None:
    from worldmodel.cpu_fused import FusedFeedForward, PackedLinear
    from worldmodel.encoder import FeedForward

    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 20).to(torch.bfloat16).eval()
    ff = FeedForward(12, 2.0).to(torch.bfloat16).eval()
    packed, fused = PackedLinear.from_linear(lin), FusedFeedForward(ff).eval()
    x = torch.randn(5, 3, 12, dtype=torch.bfloat16)
    for _ in range(2):
        with torch.inference_mode():
            torch.testing.assert_close(packed(x), lin(x), rtol=0.02, atol=0.02)
            torch.testing.assert_close(packed.forward_rows(x, 4, 9), lin(x)[..., 4:9], rtol=0.02, atol=0.02)
            torch.testing.assert_close(fused(x), ff(x), rtol=0.02, atol=0.02)
        with torch.no_grad():  # an in-place update (an optimiser step): the packed copies must follow
            lin.weight.mul_(-2.0)
            ff.net[2].weight.add_(0.5)


@_needs_onednn
def test_plan_flops_are_counted_the_same_through_the_onednn_layers(monkeypatch) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from worldmodel.cpu_fused import flop_formulas

    model = _model(3)
    emb, actions, past = _inputs(model, B=2, T0=3, S=4, H=3)
    counts = []
    for pm in (planning_model(model, "bfloat16"), _eager_bf16(model, monkeypatch)):
        with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter:
            pm.rollout(emb, actions, past)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


@pytest.mark.slow
def test_compiled_planning_rollout_equals_eager() -> None:
    """torch.compile of the fast rollout (minutes to compile on 2 cores): same predictions."""
    model = _model(3)
    compiled = planning_model(model, "float32", compile=True)
    emb, actions, past = _inputs(model, B=2, T0=3, S=4, H=3)
    with torch.inference_mode():
        torch.testing.assert_close(compiled.rollout(emb, actions, past), model.rollout(emb, actions, past),
                                   rtol=1e-4, atol=1e-5)
    a = actions.clone().requires_grad_(True)  # with a gradient: the eager rollout, gradients reach the actions
    compiled.rollout(emb, a, past).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


# ------------------------------------------------------------------ presets
def test_lewm_preset_matches_leworldmodel() -> None:
    c = ModelConfig.preset("lewm")
    assert (c.image_size, c.patch_size, c.encoder, c.vit_width, c.vit_depth, c.vit_heads) == (224, 14, "vit", 192, 12, 3)
    assert (c.embed_dim, c.projector_hidden, c.context, c.frameskip) == (192, 2048, 3, 5)
    assert (c.predictor_depth, c.predictor_heads, c.predictor_head_dim, c.predictor_mlp_dim) == (6, 16, 64, 2048)
    model = JEPA(c)
    params = sum(p.numel() for p in model.predictor.blocks.parameters())
    assert 10.7e6 < params < 10.9e6  # LeWorldModel's 6 blocks: 10.8 M parameters
    assert ModelConfig.preset("lewm", context=2).context == 2


def test_every_preset_builds_and_plans() -> None:
    for name in MODEL_PRESETS:
        if name == "lewm":
            continue  # built above; 30 M parameters
        model = JEPA(ModelConfig.preset(name)).eval()
        emb, actions, past = _inputs(model, B=1, T0=3, S=2, H=2)
        with torch.inference_mode():
            assert model.rollout(emb, actions, past).shape == (1, 2, 2, model.config.embed_dim)


def test_unknown_preset_suggests_the_closest(capsys) -> None:
    with pytest.raises(UnknownPresetError, match="did you mean 'lewm'"):
        ModelConfig.preset("lewn")
    from worldmodel.cli import main

    assert main(["train", "--data", "/nonexistent", "--preset", "lewm_tiny"]) == 2  # before the data is read
    err = capsys.readouterr().err
    assert "did you mean 'lewm-tiny'" in err and "Traceback" not in err


def test_config_without_the_new_predictor_fields_loads_as_before() -> None:
    values = ModelConfig().to_dict()
    del values["predictor_head_dim"], values["predictor_mlp_dim"]
    assert ModelConfig.from_dict(values, strict=True) == ModelConfig()


# ------------------------------------------------------------------ MPC skips ended episodes
def test_mpc_does_not_roll_out_ended_envs_and_plans_the_others_as_before() -> None:
    from planners import CEM, MPCPolicy

    model = _model(3)
    rolled: list[int] = []
    original = model.rollout

    def counting_rollout(emb, actions, past_actions=None):
        rolled.append(actions.shape[0])
        return original(emb, actions, past_actions)

    model.rollout = counting_rollout
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    goal = rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)

    def policy() -> MPCPolicy:
        cem = CEM(horizon=2, action_dim=10, low=-1, high=1, num_samples=8, iterations=2, num_elites=2, seed=0)
        return MPCPolicy(model, cem, receding_horizon=1)

    everyone, some = policy(), policy()
    a_all = everyone.act(obs, goal)
    a_some = some.act(obs, goal, active=np.array([True, False, True]))
    assert rolled == [3, 3, 2, 2]  # two CEM iterations each: all 3 envs, then only the 2 active ones
    np.testing.assert_allclose(a_some[[0, 2]], a_all[[0, 2]], atol=1e-5)
    rolled.clear()
    for _ in range(4):  # the rest of the block: no replanning
        some.act(obs, goal, active=np.array([False, False, False]))
    some.act(obs, goal, active=np.array([False, False, False]))  # block boundary: a plan, but no rollout
    assert rolled == []
    with pytest.raises(ValueError, match="active must be a bool array of shape \\(3,\\)"):
        some.act(obs, goal, active=np.array([1, 0, 1]))


# ------------------------------------------------------------------ wm bench solvers
def test_bench_solvers_quick_json_contract(capsys) -> None:
    from worldmodel.cli import main

    assert main(["bench", "solvers", "--quick", "--json", "--solver", "cem", "--solver", "gd", "--envs", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["gemm_gflops"]) == {"float32", "bfloat16"}
    assert all(isinstance(v, float) and v > 0 for v in result["gemm_gflops"].values())
    assert set(result["solvers"]) == {"cem", "gd"}
    for name, entry in result["solvers"].items():
        for key in ("seconds_per_env_plan", "flops_per_env_plan", "flop_bound_fraction"):
            assert isinstance(entry[key], float) and entry[key] > 0, (name, key)
        assert entry["dtype"] == "float32"
        assert set(entry["envs"]) == {"1", "2"}
        assert entry["seconds_per_env_plan"] == entry["envs"]["2"]["seconds_per_env_plan"]
        expected = entry["flops_per_env_plan"] / (entry["seconds_per_env_plan"] * result["gemm_gflops"]["float32"] * 1e9)
        assert entry["flop_bound_fraction"] == pytest.approx(expected)
    # a gradient solver's plan counts its backward passes: more FLOPs per sample than CEM's forward-only plan
    cem, gd = result["solvers"]["cem"], result["solvers"]["gd"]
    per_eval = {n: e["flops_per_env_plan"] / (e["options"]["num_samples"] * e["options"]["iterations"])
                for n, e in (("cem", cem), ("gd", gd))}
    assert per_eval["gd"] > 1.2 * per_eval["cem"]


def test_bench_solvers_unknown_solver_is_one_line(capsys) -> None:
    from worldmodel.cli import main

    assert main(["bench", "solvers", "--quick", "--solver", "cme"]) != 0
    err = capsys.readouterr().err
    assert "cme" in err and "'cem'" in err and "Traceback" not in err


def test_plan_flops_are_linear_in_the_number_of_envs() -> None:
    """What `wm bench solvers` relies on to count FLOPs once, on a 1-env plan."""
    import planners
    from benchmarks.solvers import _problem, count_plan_flops
    from planners.objectives import get_objective

    model = JEPA(ModelConfig.preset("lewm-micro")).eval()
    for name in ("cem", "gd"):
        flops = {}
        for n in (1, 3):
            ctx, past, goal = _problem(model, n, torch.Generator().manual_seed(n))
            opts = {"num_samples": 8, "iterations": 2, **({"num_elites": 2} if name == "cem" else {})}
            solver = planners.get(name, horizon=3, action_dim=10, low=-1.0, high=1.0, **opts)
            flops[n] = count_plan_flops(solver, get_objective("terminal_l2")(model, ctx, goal, past), n)
        assert flops[1] > 0 and flops[3] == 3 * flops[1], (name, flops)
