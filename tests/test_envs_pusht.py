"""PushT behaviour: success and angle wrapping, exact state restore, factors, geometry, expert."""

from __future__ import annotations

import math

import numpy as np
import pytest

import envs
from envs.push_t import (
    ANGLE_WEIGHT,
    DT,
    OUTER_WALL,
    START_DISTANCE,
    SUCCESS_ANGLE,
    SUCCESS_POSITION,
    PushTEnv,
    wrap_angle,
)
from tests.envs_helpers import expert_success_rate

PUSH_T = "wm/PushT-v0"
RIGHT = np.array([1.0, 0.0], np.float32)


def push_t(**kwargs):
    return envs.make(PUSH_T, **kwargs)


def run(env, actions) -> dict:
    info = {}
    for a in actions:
        _, _, _, _, info = env.step(np.asarray(a, np.float32))
    return info


def test_registered_with_300_steps() -> None:
    env = push_t()
    assert env.spec.max_episode_steps == 300 and env.unwrapped.state_dim == 10
    assert isinstance(env.unwrapped, PushTEnv)


def test_success_needs_position_and_wrapped_angle() -> None:
    env = push_t()
    goal = [0.5, 0.5, math.pi - 0.05]
    # across the -pi/pi seam the angle error is 0.1 rad, not 2 pi - 0.1
    _, info = env.reset(seed=0, options={"goal_state": goal, "state": [0.15, 0.15, 0.5, 0.5, -math.pi + 0.05]})
    assert info["success"] and info["goal_distance"] == pytest.approx(ANGLE_WEIGHT * 0.1)
    _, info = env.reset(seed=0, options={"goal_state": goal, "state": [0.15, 0.15, 0.5, 0.5, goal[2] - SUCCESS_ANGLE - 0.01]})
    assert not info["success"]
    off = SUCCESS_POSITION + 0.005
    _, info = env.reset(seed=0, options={"goal_state": goal, "state": [0.15, 0.15, 0.5 + off, 0.5, goal[2]]})
    assert not info["success"] and info["goal_distance"] == pytest.approx(off)
    _, info = env.reset(seed=0, options={"goal_state": goal, "state": [0.15, 0.15, 0.5 + 0.015, 0.5, goal[2] + 0.1]})
    assert info["success"]
    _, reward, terminated, _, info = env.step(np.zeros(2, np.float32))
    assert terminated and reward == -info["goal_distance"]
    assert wrap_angle(3 * math.pi) == pytest.approx(-math.pi) and wrap_angle(-0.5) == pytest.approx(-0.5)


def test_set_state_restores_the_dynamics_exactly() -> None:
    env = push_t()
    env.reset(seed=1, options={"state": [0.2, 0.5, 0.45, 0.5, 0.3]})
    rng = np.random.default_rng(0)
    actions = np.clip(RIGHT + rng.normal(0.0, 0.5, (40, 2)), -1, 1).astype(np.float32)
    states = [run(env, [a])["state"] for a in actions]
    assert np.linalg.norm(states[-1][2:4] - [0.45, 0.5]) > 0.1  # the block was pushed: contacts involved
    for source in (env, push_t()):  # the same env, and a fresh one with a different history
        source.reset(seed=7)
        source.unwrapped.set_state(states[10])
        replay = [run(source, [a])["state"] for a in actions[11:]]
        np.testing.assert_allclose(replay, states[11:], rtol=0, atol=1e-9)


def test_state_layout_and_pose_only_states() -> None:
    env = push_t()
    _, info = env.reset(seed=0, options={"state": [0.2, 0.3, 0.6, 0.55, 7.0]})
    s = info["state"]
    assert s.shape == (10,) and s[:4].tolist() == [0.2, 0.3, 0.6, 0.55]
    assert s[4] == pytest.approx(7.0 - 2 * math.pi) and np.all(s[5:] == 0.0)
    info = run(env, [RIGHT] * 3)
    assert info["state"][5] > 0.0  # agent velocity is part of the state
    assert -math.pi <= info["state"][4] < math.pi


def test_render_goal_is_the_scene_with_the_block_at_the_goal() -> None:
    env = push_t(render_mode="rgb_array")
    obs, info = env.reset(seed=3, options={"split": "train"})
    u = env.unwrapped
    goal_img = u.render_goal()
    assert not np.array_equal(goal_img, obs)
    u.set_state(np.concatenate([info["state"][:2], info["goal_state"]]))
    assert np.array_equal(env.render(), goal_img)
    u.set_goal([0.5, 0.5, 1.0])
    assert not np.array_equal(u.render_goal(), goal_img)


def test_goal_is_not_drawn() -> None:
    env = push_t()
    state = [0.2, 0.2, 0.6, 0.6, 0.5]
    a, _ = env.reset(seed=0, options={"state": state, "goal_state": [0.5, 0.5, 0.0]})
    b, _ = env.reset(seed=0, options={"state": state, "goal_state": [0.4, 0.45, 2.0]})
    assert np.array_equal(a, b)


def test_state_and_goal_are_validated() -> None:
    env = push_t()
    bad_states = {
        "shape": [0.2, 0.2, 0.5],
        "finite": [np.nan, 0.2, 0.5, 0.5, 0.0],
        "agent centre": [0.01, 0.2, 0.5, 0.5, 0.0],
        "leaves the arena": [0.2, 0.2, 0.05, 0.5, 0.0],
        "overlaps": [0.5, 0.5, 0.5, 0.5, 0.0],
    }
    for what, state in bad_states.items():
        with pytest.raises(ValueError, match=f"state.*{what}"):
            env.reset(seed=0, options={"state": state})
    with pytest.raises(ValueError, match="goal_state.*leaves the arena"):
        env.reset(seed=0, options={"goal_state": [0.95, 0.5, 0.0]})
    # a pose a random pusher left against the top wall (5e-6 into it): a reachable state, a valid goal
    # (`wm ood`'s goal-source shift takes goals from random-policy episodes)
    against_wall = [0.48172208167504554, 0.8497677546436703, -1.7263761557173394]
    env.reset(seed=0, options={"goal_state": against_wall})
    np.testing.assert_allclose(env.unwrapped.goal_state, against_wall)
    with pytest.raises(ValueError, match=r"goal_state.*shape.*\(3,\)"):
        env.unwrapped.set_goal([0.5, 0.5])


def test_sampled_starts_and_goals() -> None:
    env = push_t()
    u = env.unwrapped
    for seed in range(30):
        _, info = env.reset(seed=seed, options={"split": "train"})
        s, g = info["state"], info["goal_state"]
        assert np.hypot(*(g[:2] - 0.5)) == pytest.approx(info["factors"]["goal_offset"])
        assert START_DISTANCE[0] <= np.hypot(*(s[2:4] - g[:2])) <= START_DISTANCE[1]
        assert u.block_distance(s[:2]) - u.agent_radius > 0.02
        poly = u.block_polygon()
        assert poly.min() > OUTER_WALL and poly.max() < 1 - OUTER_WALL
        assert not info["success"]


def test_walls_keep_agent_and_block_inside() -> None:
    env = push_t()
    u = env.unwrapped
    env.reset(seed=0, options={"state": [0.3, 0.5, 0.7, 0.5, math.pi / 2], "factors": {"agent_gain": 200.0}})
    info = run(env, [RIGHT] * 60)  # shove the T into the right wall
    assert u.block_polygon().max() < 1 - OUTER_WALL + 0.01
    assert info["state"][0] < 1 - OUTER_WALL
    env.reset(seed=0, options={"state": [0.2, 0.2, 0.6, 0.6, 0.0]})
    info = run(env, [(-1.0, -1.0)] * 30)
    r = u.agent_radius
    assert np.all(info["state"][:2] > OUTER_WALL + r - 0.01)


def test_agent_moves_through_pd_control() -> None:
    def travel(gain: float) -> float:
        env = push_t()
        env.reset(seed=0, options={"state": [0.1, 0.2, 0.6, 0.6, 0.0], "factors": {"agent_gain": gain}})
        return run(env, [RIGHT] * 5)["state"][0] - 0.1

    slow, default, fast = travel(50.0), travel(100.0), travel(180.0)
    assert 0.1 < default < 0.3 and slow < default < fast
    clipped, full = push_t(), push_t()
    for env in (clipped, full):
        env.reset(seed=0, options={"state": [0.1, 0.2, 0.6, 0.6, 0.0]})
    assert np.array_equal(run(clipped, [RIGHT * 5])["state"], run(full, [RIGHT])["state"])


def test_block_damping_and_mass_change_the_pushed_block() -> None:
    def slide(damping: float) -> tuple[float, float]:
        env = push_t()
        state = [0.1, 0.1, 0.4, 0.5, 0.0, 0, 0, 0.5, 0.0, 1.0]  # the block slides right, spinning
        env.reset(seed=0, options={"state": state, "factors": {"block_damping": damping}})
        info = run(env, [(0.0, 0.0)] * 20)
        return info["state"][2] - 0.4, float(np.abs(info["state"][7:]).max())

    def expected(damping: float) -> float:  # 200 substeps, each moving then damping the velocity
        decay = math.exp(-damping * DT)
        return 0.5 * DT * (1 - decay**200) / (1 - decay)

    (low, v_low), (high, v_high) = slide(4.0), slide(15.0)
    assert low == pytest.approx(expected(4.0), rel=1e-6) and high == pytest.approx(expected(15.0), rel=1e-6)
    assert v_low < 0.1 and v_high < 1e-3  # the block settles

    def pushed(mass: float) -> float:
        env = push_t()
        env.reset(seed=0, options={"state": [0.2, 0.5, 0.4, 0.5, math.pi / 2], "factors": {"block_mass": mass}})
        return run(env, [RIGHT] * 10)["state"][2] - 0.4

    assert pushed(0.5) > pushed(1.0) > pushed(2.0) > 0.02


def test_geometric_factors_change_the_scene() -> None:
    env = push_t()
    u = env.unwrapped
    state = [0.2, 0.2, 0.6, 0.6, 0.0]
    base, _ = env.reset(seed=0, options={"state": state})
    width = np.ptp(u.block_outline[:, 0])
    for name, value in (("block_scale", 1.2), ("stem_length", 0.95), ("agent_radius", 0.035)):
        obs, _ = env.reset(seed=0, options={"state": state, "factors": {name: value}})
        assert not np.array_equal(obs, base), name
    env.reset(seed=0, options={"factors": {"block_scale": 1.2}})
    assert np.ptp(u.block_outline[:, 0]) == pytest.approx(1.2 * width)
    env.reset(seed=0, options={"factors": {"stem_length": 0.95}})
    assert np.ptp(u.block_outline[:, 1]) == pytest.approx(0.22 * (0.25 + 0.95))


def test_random_actions_in_ood_physics_stay_sane() -> None:
    env = push_t()
    u = env.unwrapped
    rng = np.random.default_rng(0)
    for seed in range(4):
        env.reset(seed=seed, options={"split": "ood", "severity": 3})
        for t in range(100):
            _, _, terminated, _, info = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
            s = info["state"]
            assert np.all(np.isfinite(s))
            poly = u.block_polygon()
            assert poly.min() > OUTER_WALL - 0.01 and poly.max() < 1 - OUTER_WALL + 0.01
            assert u.block_distance(s[:2]) > u.agent_radius - 0.01
            u.set_state(s)  # every state the env produces is accepted back
            if terminated:
                break


def _expert_success(seeds, noise: float, options: dict) -> float:
    return expert_success_rate(PUSH_T, noise, options, seeds, resolution=64)


def test_expert_solves_a_few_episodes() -> None:
    assert _expert_success(range(4), 0.0, {"split": "train"}) == 1.0


@pytest.mark.slow
def test_expert_success_rates() -> None:
    assert _expert_success(range(100, 150), 0.0, {"split": "train"}) >= 0.9
    assert _expert_success(range(100, 150), 0.3, {"split": "train"}) >= 0.8
    assert _expert_success(range(100, 130), 0.0, {"split": "ood"}) >= 0.8
