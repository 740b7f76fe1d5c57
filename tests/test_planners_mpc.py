"""Objectives and MPCPolicy, tested against a fake point-mass world model.

The fake model is exact: an observation image stores the agent position (x, y) as
float32 bytes, ``encode`` reads them back, and ``rollout`` adds the summed raw actions
of each block times DT, the same dynamics as the toy environment below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from planners import (
    CEM,
    OBJECTIVES,
    MPCPolicy,
    PlanResult,
    UnknownObjectiveError,
    WorldModel,
    all_steps_l2,
    get_objective,
    terminal_l2,
)

DT = 0.25


@dataclass
class FakeConfig:
    frameskip: int = 2
    action_dim: int = 2
    context: int = 1


def render(pos: np.ndarray) -> np.ndarray:
    """pos (B, 2) -> uint8 (B, 4, 4, 3) image whose first 8 bytes are the float32 position."""
    buf = np.zeros((pos.shape[0], 48), dtype=np.uint8)
    buf[:, :8] = np.ascontiguousarray(pos, dtype=np.float32).view(np.uint8)
    return buf.reshape(-1, 4, 4, 3)


class PointModel:
    """Fake WorldModel: embedding = position, each block moves by DT * (sum of its raw actions)."""

    def __init__(self, **config):
        self.config = FakeConfig(**config)
        self.encode_calls = 0
        self.rollout_inputs: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.training = True

    def eval(self):
        self.training = False
        return self

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        assert pixels.dtype == torch.uint8 and pixels.shape[2] == 3
        self.encode_calls += 1
        B, T = pixels.shape[:2]
        raw = pixels.permute(0, 1, 3, 4, 2).reshape(B, T, -1)[..., :8].contiguous()
        return raw.view(torch.float32)  # (B, T, 2)

    def rollout(self, emb, actions, past_actions=None):
        self.rollout_inputs.append((emb.clone(), None if past_actions is None else past_actions.clone()))
        self.rollout_actions = actions.clone()
        B, S, H, _ = actions.shape
        f, a = self.config.frameskip, self.config.action_dim
        step = actions.reshape(B, S, H, f, a).sum(3) * DT
        return emb[:, -1, None, None] + step.cumsum(dim=2)


class RecordingPlanner:
    """Planner that returns a fixed plan, scores it once and records its warm starts."""

    def __init__(self, plan: torch.Tensor):
        self.fixed = plan  # (B, H, A)
        self.horizon, self.action_dim = plan.shape[1:]
        self.device = torch.device("cpu")
        self.inits: list[torch.Tensor | None] = []
        self.calls = 0

    def plan(self, cost_fn, batch_size, init=None):
        self.calls += 1
        self.inits.append(None if init is None else init.clone())
        plan = self.fixed + self.calls  # a different plan every call
        return PlanResult(plan, cost_fn(plan[:, None])[:, 0], {})


def step_env(pos: np.ndarray, action: np.ndarray) -> np.ndarray:
    return pos + np.clip(action, -1.0, 1.0) * DT


# --- objectives -----------------------------------------------------------------------


def test_terminal_l2_matches_hand_computation():
    model = PointModel(frameskip=2, action_dim=2)
    ctx = torch.tensor([[[0.0, 0.0]], [[1.0, -1.0]]])  # (B=2, T0=1, D=2)
    goal = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    actions = torch.tensor(
        [
            [[[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]], [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]],
            [[[-1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]],
        ]
    )  # (B=2, S=2, H=2, A=4)
    cost = terminal_l2(model, ctx, goal)(actions)
    # env 0: sample 0 ends at (0.5, 0.5) -> 0.25 + 0.25; sample 1 stays at (0, 0) -> 2.
    # env 1: sample 0 ends at (0.75, -0.75) -> 1.125; sample 1 ends at (2, 0) -> 4.
    torch.testing.assert_close(cost, torch.tensor([[0.5, 2.0], [1.125, 4.0]]))
    # all_steps_l2 sums over the horizon (issue 10: a true sum, not a mean): env 0 sample 0
    # visits (0.5, 0) then (0.5, 0.5).
    cost_all = all_steps_l2(model, ctx, goal)(actions)
    torch.testing.assert_close(cost_all[0, 0], torch.tensor(0.25 + 1.0 + 0.5))


def test_objectives_registry_and_errors():
    assert OBJECTIVES["terminal_l2"] is terminal_l2 and get_objective("all_steps_l2") is all_steps_l2
    with pytest.raises(UnknownObjectiveError, match=r"unknown objective 'nope'.*terminal_l2, all_steps_l2"):
        get_objective("nope")
    model = PointModel()
    with pytest.raises(ValueError, match=r"goal_emb must have shape \(B, D\)"):
        terminal_l2(model, torch.zeros(2, 1, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"past_actions must have shape"):
        terminal_l2(model, torch.zeros(2, 2, 2), torch.zeros(2, 2), past_actions=torch.zeros(2, 2, 4))


def test_fake_model_satisfies_protocol():
    assert isinstance(PointModel(), WorldModel)


# --- MPC ------------------------------------------------------------------------------


# terminal_l2 with H > receding_horizon only constrains where a plan ends, so near the
# goal the executed first block may wander; all_steps_l2 pins every step.
@pytest.mark.parametrize("objective, tolerance", [("terminal_l2", 0.4), ("all_steps_l2", 0.05)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mpc_drives_point_to_goal(objective, tolerance, seed):
    model = PointModel(frameskip=2, action_dim=2)
    planner = CEM(3, 4, low=-1.0, high=1.0, num_samples=100, iterations=8, num_elites=10, seed=seed)
    policy = MPCPolicy(model, planner, objective=objective)
    assert not model.training  # the policy puts the model in eval mode
    start = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]])
    goal_pos = np.array([[1.0, -1.0], [0.0, 0.0], [0.5, 1.0]])  # 1.1 to 1.4 away
    goal = render(goal_pos)
    pos = start.copy()
    policy.reset(3)
    for _ in range(24):
        action = policy.act(render(pos), goal)
        assert action.shape == (3, 2) and action.dtype == np.float32
        assert (action >= -1.0).all() and (action <= 1.0).all()
        pos = step_env(pos, action)
    assert np.linalg.norm(pos - goal_pos, axis=1).max() < tolerance
    assert policy.num_plans == 12  # one planner call per block for all 3 envs
    assert policy.plan_seconds >= policy.last_plan_seconds > 0


@pytest.mark.parametrize("frameskip, receding_horizon", [(1, 1), (2, 1), (2, 2), (3, 2)])
def test_replans_every_receding_horizon_times_frameskip_calls(frameskip, receding_horizon):
    model = PointModel(frameskip=frameskip)
    planner = RecordingPlanner(torch.zeros(2, 3, frameskip * 2))
    policy = MPCPolicy(model, planner, receding_horizon=receding_horizon)
    obs = render(np.zeros((2, 2)))
    period = frameskip * receding_horizon
    for t in range(3 * period):
        policy.act(obs, obs)
        assert planner.calls == t // period + 1


def test_warm_start_shifts_previous_plan_and_queues_its_first_blocks():
    B, H, f, a, r = 2, 4, 2, 2, 2
    fixed = torch.arange(B * H * f * a, dtype=torch.float32).reshape(B, H, f * a) / 100 - 2.2  # first plan (+1) straddles -1
    planner = RecordingPlanner(fixed)
    policy = MPCPolicy(PointModel(frameskip=f, action_dim=a), planner, receding_horizon=r, action_low=-1.0, action_high=1.0)
    obs = render(np.zeros((B, 2)))
    actions = np.stack([policy.act(obs, obs) for _ in range(r * f + 1)], axis=1)  # (B, r*f+1, a)

    first_plan = fixed + 1
    assert planner.inits[0] is None
    expected_init = torch.cat([first_plan[:, r:], torch.zeros(B, r, f * a)], dim=1)
    torch.testing.assert_close(planner.inits[1], expected_init)
    # The first r blocks are executed raw action by raw action, clipped to the bounds.
    expected = np.clip(first_plan[:, :r].numpy().reshape(B, r * f, a), -1.0, 1.0)
    np.testing.assert_allclose(actions[:, : r * f], expected)
    assert actions.min() >= -1.0 and (actions[:, : r * f] == -1.0).any()
    np.testing.assert_allclose(actions[:, r * f], np.clip((fixed + 2)[:, 0, :a].numpy(), -1, 1))


def test_context_history_holds_block_boundary_embeddings_and_executed_blocks():
    f, a, context = 2, 2, 3
    model = PointModel(frameskip=f, action_dim=a, context=context)
    planner = RecordingPlanner(torch.full((1, 3, f * a), -0.9))
    policy = MPCPolicy(model, planner, receding_horizon=1)
    pos = np.zeros((1, 2))
    boundary_positions, executed = [], []
    for t in range(5 * f):
        if t % f == 0:
            boundary_positions.append(pos.copy())
        action = policy.act(render(pos), render(np.ones((1, 2))))
        executed.append(action)
        pos = step_env(pos, action)
    emb, past = model.rollout_inputs[-1]  # the 5th plan: 3 boundary embeddings, 2 blocks between them
    np.testing.assert_allclose(emb[0].numpy(), np.concatenate(boundary_positions[-3:]), atol=1e-6)
    blocks = np.concatenate(executed, axis=0).reshape(5, f * a)  # (blocks, f*a)
    np.testing.assert_allclose(past[0].numpy(), blocks[2:4])
    assert model.rollout_inputs[0][1] is None and model.rollout_inputs[0][0].shape == (1, 1, 2)


def test_goal_embedding_is_cached_until_goal_changes():
    model = PointModel(frameskip=1)
    policy = MPCPolicy(model, RecordingPlanner(torch.zeros(2, 3, 2)))
    obs = render(np.zeros((2, 2)))
    goal = render(np.ones((2, 2)))
    for _ in range(4):
        policy.act(obs, goal)
    assert model.encode_calls == 4 + 1  # one obs encoding per block, the goal once
    policy.act(obs, render(np.full((2, 2), 2.0)))
    assert model.encode_calls == 5 + 2
    policy.reset(2)
    policy.act(obs, goal)
    assert model.encode_calls == 7 + 2  # reset forgets the cached goal


def test_mpc_argument_and_input_validation():
    model = PointModel(frameskip=2, action_dim=2)
    with pytest.raises(ValueError, match=r"planner.action_dim=2 must equal .* 2 \* 2 = 4"):
        MPCPolicy(model, CEM(3, 2, -1.0, 1.0))
    with pytest.raises(ValueError, match=r"receding_horizon=4 must be <= planner.horizon=3"):
        MPCPolicy(model, CEM(3, 4, -1.0, 1.0), receding_horizon=4)
    with pytest.raises(UnknownObjectiveError):
        MPCPolicy(model, CEM(3, 4, -1.0, 1.0), objective="nope")
    with pytest.raises(ValueError, match="action_low must be < action_high"):
        MPCPolicy(model, CEM(3, 4, -1.0, 1.0), action_low=1.0, action_high=-1.0)
    policy = MPCPolicy(model, RecordingPlanner(torch.zeros(2, 3, 4)))
    obs = render(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"obs must be uint8 \(B, H, W, 3\)"):
        policy.act(obs.astype(np.float32), obs)
    policy.reset(3)
    with pytest.raises(ValueError, match=r"call reset\(2\)"):
        policy.act(obs, obs)


def test_model_without_past_actions_argument_gets_context_embeddings_only():
    class NoPastModel(PointModel):
        def rollout(self, emb, actions):  # no past_actions argument
            return super().rollout(emb, actions)

    model = NoPastModel(frameskip=1, context=2)
    policy = MPCPolicy(model, RecordingPlanner(torch.zeros(1, 3, 2)))
    obs = render(np.zeros((1, 2)))
    for _ in range(3):
        policy.act(obs, obs)
    emb, past = model.rollout_inputs[-1]
    assert emb.shape == (1, 2, 2) and past is None


def test_hold_actions_plans_one_raw_action_per_block_and_repeats_it():
    B, H, f, a = 2, 3, 3, 2
    fixed = torch.tensor([[[0.1, -0.2], [0.3, 0.4], [0.5, 0.6]], [[-0.5, 0.5], [0.0, 0.1], [0.2, 0.2]]]) - 1
    planner = RecordingPlanner(fixed)  # plans (B, H, a): one raw action per block
    model = PointModel(frameskip=f, action_dim=a)
    policy = MPCPolicy(model, planner, hold_actions=True)
    obs = render(np.zeros((B, 2)))
    actions = np.stack([policy.act(obs, obs) for _ in range(f)], axis=1)  # (B, f, a)
    held = (fixed + 1)[:, 0].numpy()  # the first plan's first block
    np.testing.assert_allclose(actions, np.repeat(held[:, None], f, axis=1))
    # The model was asked to roll out whole blocks: the raw action repeated f times.
    torch.testing.assert_close(model.rollout_actions[:, 0], (fixed + 1).repeat(1, 1, f))
    with pytest.raises(ValueError, match="hold_actions"):
        MPCPolicy(model, RecordingPlanner(torch.zeros(B, H, f * a)), hold_actions=True)


def test_hold_actions_drives_point_to_goal():
    model = PointModel(frameskip=2, action_dim=2)
    planner = CEM(3, 2, low=-1.0, high=1.0, num_samples=60, iterations=6, num_elites=8, seed=0)
    policy = MPCPolicy(model, planner, hold_actions=True)
    pos = np.array([[0.0, 0.0], [1.0, 1.0]])
    goal_pos = np.array([[1.0, -1.0], [0.0, 0.0]])
    policy.reset(2)
    for _ in range(16):
        pos = step_env(pos, policy.act(render(pos), render(goal_pos)))
    assert np.linalg.norm(pos - goal_pos, axis=1).max() < 0.4


@pytest.mark.parametrize("hold", [False, True])
def test_score_gives_the_cost_the_solver_saw_for_its_plan(hold):
    """score() rolls out from the last plan's context and goal: the plan itself scores what the solver reported,
    and a sequence ending nearer the goal scores lower."""
    f, a, H = 2, 2, 3
    model = PointModel(frameskip=f, action_dim=a)
    planner = CEM(H, a if hold else f * a, low=-1.0, high=1.0, num_samples=40, iterations=3, num_elites=5, seed=0)
    policy = MPCPolicy(model, planner, hold_actions=hold)
    with pytest.raises(RuntimeError, match="no plan yet"):
        policy.score(torch.zeros(2, 1, H, f * a))
    pos, goal = np.array([[0.0, 0.0], [0.5, 0.5]]), np.array([[1.0, 0.0], [0.5, -0.5]])
    policy.reset(2)
    policy.act(render(pos), render(goal))
    res = policy.last_result
    blocks = res.actions.repeat(1, 1, f) if hold else res.actions  # (B, H, f*a)
    torch.testing.assert_close(policy.score(blocks[:, None])[:, 0], res.cost)
    # an exact path to the goal (each block moves (goal - pos) / H) scores 0; standing still scores ||goal - pos||^2
    step = torch.from_numpy((goal - pos) / H / DT / f).float()  # (B, a) raw action held over the whole plan
    exact = step[:, None, None].repeat(1, H, f, 1).reshape(2, H, f * a)
    costs = policy.score(torch.stack([exact, torch.zeros_like(exact)], 1))
    torch.testing.assert_close(costs[:, 0], torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(costs[:, 1], torch.from_numpy(((goal - pos) ** 2).sum(1)).float())
    with pytest.raises(ValueError, match=r"\(2, N, H, 4\)"):
        policy.score(torch.zeros(2, 1, H, a))
