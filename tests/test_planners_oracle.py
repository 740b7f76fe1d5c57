"""The oracle planner: batched true-simulator rollouts (`simulate_many`), `OracleCost` and `oracle_policy`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from planners.oracle import OracleCost, oracle_policy

ENV_IDS = ["wm/TwoRoom-v0", "wm/PushT-v0", "wm/PointMaze-v0", "wm/Reacher-v0", "wm/Cube-v0"]
# Cube gates its action on the state at each env step, so its rollout goes one env step per
# mujoco.rollout call and MuJoCo's solver warm start is not carried across env steps (~1e-8).
TOL = {"wm/Cube-v0": 1e-6}


def _started(env_id: str, seed: int, history: np.ndarray):
    """An env reset on `seed` (train-split factors) and stepped through `history` (K, 2)."""
    env = envs.make(env_id, resolution=16)
    env.reset(seed=seed, options={"split": "train"})
    for a in history:
        env.step(a)
    return env


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_simulate_many_equals_stepping_the_env(env_id: str) -> None:
    """Each candidate's rollout (goal distance after every step, last state) is what stepping the
    real env with its actions gives, for two envs with different factors and states in one call;
    the envs themselves are left as they were."""
    rng = np.random.default_rng(0)
    B, N, T = 2, 3, 12
    history = rng.uniform(-1, 1, (B, 3, 2))
    batch = [_started(env_id, seed, history[seed]) for seed in range(B)]
    assert batch[0].unwrapped.factors != batch[1].unwrapped.factors
    actions = rng.uniform(-1.3, 1.3, (B, N, T, 2))  # some out of the box: clipped as step clips
    actions[:, 0] = np.sign(actions[:, 0])  # full-speed pushes, into walls and limits
    before = [e.unwrapped.state for e in batch]
    dist, last = type(batch[0].unwrapped).simulate_many(batch, actions, final_state=True)
    assert dist.shape == (B, N, T) and last.shape == (B, N, batch[0].unwrapped.state_dim)
    tol = TOL.get(env_id, 1e-12)
    for b in range(B):
        assert np.array_equal(batch[b].unwrapped.state, before[b])
        for n in range(N):
            twin = _started(env_id, b, history[b])
            seen = [twin.step(a)[4]["goal_distance"] for a in actions[b, n]]
            np.testing.assert_allclose(dist[b, n], seen, rtol=0, atol=tol)
            np.testing.assert_allclose(last[b, n], twin.unwrapped.state, rtol=0, atol=tol)
    # simulating did not disturb the env: its next steps are those of an untouched twin
    twin = _started(env_id, 0, history[0])
    for a in actions[0, 1, :4]:
        assert batch[0].step(a)[4]["goal_distance"] == twin.step(a)[4]["goal_distance"]
    assert np.array_equal(batch[0].unwrapped.state, twin.unwrapped.state)


def test_mujoco_rollouts_in_chunks_give_the_same_numbers(monkeypatch) -> None:
    """Candidates split over several mujoco.rollout calls (a small state buffer) are scored as in one call."""
    import envs.mujoco_common as mc

    batch = [_started("wm/PointMaze-v0", seed, np.zeros((2, 2))) for seed in range(2)]
    actions = np.random.default_rng(0).uniform(-1, 1, (2, 5, 6, 2))
    whole = type(batch[0].unwrapped).simulate_many(batch, actions, final_state=True)
    monkeypatch.setattr(mc, "ROLLOUT_BUFFER_BYTES", 3 * 6 * 20 * 5 * 8)  # 3 candidates per call
    parts = type(batch[0].unwrapped).simulate_many(batch, actions, final_state=True)
    for a, b in zip(whole, parts):
        assert np.array_equal(a, b)


def test_cube_rollout_gates_pushes_at_the_pusher_limit() -> None:
    """At its slide limit the pusher's outward command is zeroed by step; the rollout does the same."""
    env = envs.make("wm/Cube-v0", resolution=16)
    start = np.zeros(17)
    start[:2] = (0.2, -0.2)  # pusher at the (+x, -y) corner of its range
    start[2:5] = (0.0, 0.0, 0.03)
    start[5] = 1.0
    env.reset(seed=0, options={"state": start})
    actions = np.tile([1.0, -1.0], (1, 8, 1))  # straight out of the range, then in
    actions[0, 4:] = (-1.0, 1.0)
    dist, last = env.unwrapped.simulate(actions, final_state=True)
    seen = [env.step(a)[4]["goal_distance"] for a in actions[0]]
    np.testing.assert_allclose(dist[0], seen, rtol=0, atol=1e-6)
    np.testing.assert_allclose(last[0], env.unwrapped.state, rtol=0, atol=1e-6)


def test_simulate_many_bad_input_is_a_clear_error() -> None:
    env = envs.make("wm/TwoRoom-v0", resolution=16)
    env.reset(seed=0)
    cls = type(env.unwrapped)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 2\).*expected \(B, N, T, action_dim\) = \(1, N, T, 2\)"):
        cls.simulate_many([env], np.zeros((2, 3, 4, 2)))
    bad = np.zeros((1, 3, 4, 2))
    bad[0, 1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        cls.simulate_many([env], bad)
    other = envs.make("wm/PushT-v0", resolution=16)
    with pytest.raises(ValueError, match=r"envs\[1\] is a PushTEnv, expected a TwoRoomEnv"):
        cls.simulate_many([env, other], np.zeros((2, 1, 1, 2)))
    with pytest.raises(ValueError, match="at least one sequence"):
        cls.simulate_many([env], np.zeros((1, 0, 4, 2)))


def test_oracle_cost_scores_every_env_and_candidate_in_one_call(monkeypatch) -> None:
    """(B, S, H, f*A) action blocks -> (B, S) final goal distances, one simulate_many call for all
    B x S candidates, each env from its own state and factors; an env whose episode has ended costs 0."""
    from envs.two_room import TwoRoomEnv

    batch = [envs.make("wm/TwoRoom-v0", resolution=16) for _ in range(3)]
    batch[0].reset(seed=0, options={"factors": {"agent_speed": 0.02}, "state": [0.2, 0.3], "goal_state": [0.3, 0.3]})
    batch[1].reset(seed=1, options={"factors": {"agent_speed": 0.04}, "state": [0.2, 0.3], "goal_state": [0.3, 0.3]})
    batch[2].reset(seed=2, options={"state": [0.8, 0.8], "goal_state": [0.8, 0.82]})  # at its goal: ended
    B, S, H, f = 3, 5, 2, 4
    blocks = torch.rand(B, S, H, f * 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    calls = []
    real = TwoRoomEnv.simulate_many.__func__
    monkeypatch.setattr(TwoRoomEnv, "simulate_many", classmethod(lambda cls, e, a, *r: calls.append(len(e)) or real(cls, e, a, *r)))
    cost = OracleCost(batch, frameskip=f)(blocks)
    assert calls == [2]  # one call, the ended env left out
    assert cost.shape == (B, S) and cost.dtype == torch.float32
    raw = blocks.double().numpy().reshape(B, S, H * f, 2)
    for b in range(2):
        expected = batch[b].unwrapped.simulate(raw[b])[:, -1]
        np.testing.assert_allclose(cost[b].numpy(), expected, rtol=1e-6)
    assert not torch.allclose(cost[0], cost[1])  # same actions, different agent speeds
    assert torch.equal(cost[2], torch.zeros(S))
    best = OracleCost(batch, frameskip=f, reduce="min")(blocks)
    assert torch.all(best[:2] <= cost[:2])
    with pytest.raises(ValueError, match=r"expected \(B, S, H, frameskip \* action_dim\) = \(3, S, H, 4 \* 2\)"):
        OracleCost(batch, frameskip=f)(blocks[..., :6])
    with pytest.raises(ValueError, match="reduce='mean'"):
        OracleCost(batch, frameskip=f, reduce="mean")


def test_oracle_objective_scores_the_envs_mpc_still_plans_for() -> None:
    """`MPCPolicy` hands the objective the embeddings of the envs still running only; the
    simulator stand-in's embedding is the env's row, so the cost scores exactly those envs."""
    from planners.oracle import SimulatorModel, oracle_objective

    batch = [envs.make("wm/TwoRoom-v0", resolution=16) for _ in range(3)]
    for seed, e in enumerate(batch):
        e.reset(seed=seed)
    objective = oracle_objective(batch, frameskip=2)
    model = SimulatorModel(2, 2)
    emb = model.encode(torch.zeros(3, 1, 3, 16, 16, dtype=torch.uint8))  # (B, T, 1)
    blocks = torch.rand(3, 4, 2, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    full = objective(model, emb, emb[:, 0])(blocks)
    rows = torch.tensor([0, 2])
    part = objective(model, emb[rows], emb[rows, 0])(blocks[rows])
    assert part.shape == (2, 4)
    assert torch.equal(part, full[rows])


def test_cem_with_the_oracle_solves_an_easy_tworoom_pair() -> None:
    """CEM planning through the simulator brings the agent to a goal a few steps away, in the other
    direction than it would drift by chance."""
    from planners import CEM

    env = envs.make("wm/TwoRoom-v0", resolution=16)
    obs, _ = env.reset(seed=0, options={"state": [0.3, 0.5], "goal_state": [0.15, 0.35]})  # ~7 steps at full speed
    goal = env.unwrapped.render_goal()
    cem = CEM(horizon=3, action_dim=2, low=-1.0, high=1.0, num_samples=32, iterations=3, num_elites=4, seed=0)
    policy = oracle_policy([env], cem, frameskip=5, hold_actions=True)
    policy.reset(1)
    info = {"success": False}
    for step in range(20):
        obs, _, terminated, _, info = env.step(policy.act(obs[None], goal[None])[0])
        if terminated:
            break
    assert info["success"], info["goal_distance"]
    assert policy.oracle_cost.calls == 3 * policy.num_plans


def test_oracle_refuses_gradient_solvers() -> None:
    """The simulator has no gradient: a solver that needs one is refused up front, and a cost call
    with actions that require grad is a clear error too."""
    env = envs.make("wm/TwoRoom-v0", resolution=16)
    env.reset(seed=0)

    class GradientSolver:
        horizon, action_dim, requires_grad = 2, 2, True

    with pytest.raises(ValueError, match="GradientSolver is a gradient solver"):
        oracle_policy([env], GradientSolver(), frameskip=5)
    with pytest.raises(ValueError, match="has no gradient"):
        OracleCost([env], frameskip=1)(torch.zeros(1, 2, 3, 2, requires_grad=True))


@pytest.mark.parametrize("hold_actions", [False, True])
def test_the_cost_of_a_plan_is_what_executing_it_reaches(hold_actions: bool) -> None:
    """Same block structure as model planning: executing a whole plan (receding horizon = horizon)
    ends at the goal distance the oracle scored for it."""
    from planners import CEM

    env = envs.make("wm/TwoRoom-v0", resolution=16)
    obs, _ = env.reset(seed=3, options={"state": [0.2, 0.2], "goal_state": [0.3, 0.7]})
    goal = env.unwrapped.render_goal()
    f, H = 3, 2
    cem = CEM(horizon=H, action_dim=2 if hold_actions else 2 * f, low=-1.0, high=1.0, num_samples=16, iterations=2,
              num_elites=4, seed=1)
    policy = oracle_policy([env], cem, frameskip=f, receding_horizon=H, hold_actions=hold_actions)
    policy.reset(1)
    for _ in range(H * f):
        obs, _, _, _, info = env.step(policy.act(obs[None], goal[None])[0])
    assert policy.num_plans == 1
    assert info["goal_distance"] == pytest.approx(float(policy.last_result.cost[0]), rel=1e-6)


def test_wm_eval_oracle_reports_model_oracle_and_random_side_by_side(tmp_path, capsys) -> None:
    """``wm eval --oracle``: the oracle runs the same solver on the same pairs (``oracle_*`` keys and
    ``"policy": "oracle"`` lines beside the model's and random's, action blocks of the model's
    frameskip); ``--oracle-only`` needs no checkpoint and, same seed and frameskip, gives the same
    oracle episodes; bad combinations are one-line errors."""
    import json

    from worldmodel.cli import main

    def wm(*args) -> tuple[int, str]:
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err

    from worldmodel.checkpoint import dataset_identity, save_checkpoint
    from worldmodel.config import ModelConfig
    from worldmodel.model import JEPA

    heldout, ckpt = tmp_path / "heldout.lance", tmp_path / "ckpt"
    assert wm("collect", "--env", "wm/TwoRoom-v0", "--episodes", 2, "--out", heldout, "--resolution", 16, "--seed", 1_000_000)[0] == 0
    torch.manual_seed(0)  # an untrained model: the oracle's numbers do not depend on it
    model = JEPA(ModelConfig(image_size=16, action_dim=2, frameskip=2, embed_dim=16, encoder_width=8,
                             projector_hidden=16, predictor_width=16, predictor_depth=1, predictor_heads=2))
    save_checkpoint(ckpt, model, extra={"dataset": dataset_identity(heldout)})
    tiny = ("--episodes", 3, "--offset", 10, "--budget", 12, "--device", "cpu", "--no-video",
            "--num-samples", 16, "--iterations", 2, "--num-elites", 4, "--horizon", 2)
    code, err = wm("eval", "--ckpt", ckpt, "--data", heldout, "--out", tmp_path / "both", "--oracle", *tiny)
    assert code == 0, err
    summary = json.loads((tmp_path / "both" / "summary.json").read_text())
    lines = [json.loads(line) for line in (tmp_path / "both" / "episodes.jsonl").read_text().splitlines()]
    assert [line["policy"] for line in lines] == ["cem"] * 3 + ["oracle"] * 3 + ["random"] * 3
    key = ("episode_id", "start_step", "start_state", "goal_state", "factors", "env_seed")
    assert [[x[k] for k in key] for x in lines[:3]] == [[x[k] for k in key] for x in lines[3:6]]  # same pairs
    oracle = lines[3:6]
    assert summary["oracle_successes"] == sum(x["success"] for x in oracle)
    assert summary["oracle_success_rate"] == summary["oracle_successes"] / 3
    low, high = summary["oracle_success_ci95"]
    assert low <= summary["oracle_success_rate"] <= high
    assert summary["oracle_seconds_per_decision"] > 0 and summary["oracle_decisions"] >= 1
    assert summary["oracle"]["frameskip"] == 2 and summary["oracle"]["simulated_steps"] > 0  # the model's frameskip
    for k in ("success_rate", "baseline_success_rate", "seconds_per_decision"):  # the existing keys stay
        assert k in summary

    code, err = wm("eval", "--oracle-only", "--data", heldout, "--out", tmp_path / "alone", "--oracle-frameskip", 2, *tiny)
    assert code == 0, err
    alone = json.loads((tmp_path / "alone" / "summary.json").read_text())
    assert "success_rate" not in alone and alone["oracle_successes"] == summary["oracle_successes"]
    again = [json.loads(line) for line in (tmp_path / "alone" / "episodes.jsonl").read_text().splitlines()]
    assert [line["policy"] for line in again] == ["oracle"] * 3 + ["random"] * 3
    same = ("success", "steps", "final_distance", *key)
    assert [[x[k] for k in same] for x in again[:3]] == [[x[k] for k in same] for x in oracle]

    for args, message in (
        (("--oracle-only", "--ckpt", ckpt), "--oracle-only evaluates the oracle without a model"),
        ((), "wm eval needs --ckpt PATH"),
        (("--oracle-only", "--planner", "gd"), "is a gradient solver"),
        (("--oracle-only", "--oracle-frameskip", 0), "--oracle-frameskip=0"),
    ):
        code, err = wm("eval", "--data", heldout, "--out", tmp_path / "bad", *args)
        assert code == 2 and message in err and "Traceback" not in err, err


def test_build_oracle_ignores_the_model_side_settings() -> None:
    """`wm eval --oracle` with a model objective or planning precision builds the same solver on the
    simulator: those settings are the model's (the oracle's cost is the env's goal distance)."""
    from benchmarks.planning import PlannerConfig, build_oracle

    env = envs.make("wm/TwoRoom-v0", resolution=16)
    obs, _ = env.reset(seed=0)
    cfg = PlannerConfig(dtype="bfloat16", objective="terminal_l1", num_samples=8, iterations=1, num_elites=2, horizon=2)
    policy = build_oracle([env], cfg, frameskip=2)
    policy.reset(1)
    assert policy.act(obs[None], env.unwrapped.render_goal()[None]).shape == (1, 2)
    assert policy.oracle_cost.calls == 1 and policy.planner.settings()["num_samples"] == 8
