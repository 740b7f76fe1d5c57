"""Reacher behaviour: kinematics, success, state round trips, factors, expert."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import make_policy
from envs.reacher import (
    ELBOW_LIMIT,
    MIN_GOAL_DISTANCE,
    STATE_TOLERANCE,
    SUCCESS_RADIUS,
    TARGET_ELBOW,
    TARGET_SECTOR,
    fingertip,
    wrap_angle,
)
from tests.envs_helpers import (
    assert_factor_changes_image,
    assert_render_goal_is_the_goal_state,
    env_fixture,
    expert_success_rate,
    run_expert,
)

REACHER = "wm/Reacher-v0"


env = env_fixture(REACHER, resolution=48, render_mode="rgb_array")


# --- kinematics and geometry ---------------------------------------------------------------


@pytest.mark.parametrize("lengths", [(0.12, 0.12), (0.07, 0.17), (0.17, 0.08)])
def test_link_lengths_move_the_rendered_fingertip(env: gym.Env, lengths: tuple[float, float]) -> None:
    u = env.unwrapped
    factors = {"link1_length": lengths[0], "link2_length": lengths[1]}
    for q in ([0.0, 0.0], [0.7, -1.2], [-2.5, 2.0]):
        env.reset(seed=0, options={"factors": factors, "state": q})
        tip_geom = u.data.geom_xpos[u._tip][:2]
        assert np.allclose(tip_geom, fingertip(q, *lengths), atol=1e-9)
        assert np.allclose(u.fingertip(), fingertip(q, *lengths))
    link2 = u._links[1]
    assert u.model.geom_size[link2, 1] == pytest.approx(lengths[1] / 2)
    assert u.model.geom_rbound[link2] == pytest.approx(lengths[1] / 2 + u.model.geom_size[link2, 0])


def test_fingertip_and_wrap() -> None:
    assert np.allclose(fingertip([0.0, 0.0], 0.1, 0.2), [0.3, 0.0])
    assert np.allclose(fingertip([math.pi / 2, -math.pi / 2], 0.1, 0.2), [0.2, 0.1])
    assert np.allclose(wrap_angle([math.pi, -math.pi, 3 * math.pi / 2]), [-math.pi, -math.pi, -math.pi / 2])


# --- episode ------------------------------------------------------------------------------


def test_start_and_target_sampling(env: gym.Env) -> None:
    for seed in range(40):
        split = "train" if seed % 2 else "ood_geometry"
        _, info = env.reset(seed=seed, options={"split": split})
        q, goal = info["state"][:2], info["goal_state"]
        centre = info["factors"]["target_direction"]
        assert np.all(info["state"][2:] == 0.0) and abs(q[1]) <= ELBOW_LIMIT
        assert abs(wrap_angle(goal[0] - centre)) <= TARGET_SECTOR + 1e-9
        assert TARGET_ELBOW[0] <= abs(goal[1]) <= TARGET_ELBOW[1]
        assert info["goal_distance"] >= MIN_GOAL_DISTANCE


def test_success_is_fingertip_distance_and_mirror_solution_counts(env: gym.Env) -> None:
    u = env.unwrapped
    goal = np.array([0.4, 1.0])
    _, info = env.reset(seed=0, options={"state": goal + [0.0, 0.3], "goal_state": goal})
    assert not info["success"] and info["goal_distance"] > SUCCESS_RADIUS
    # the mirrored elbow reaches the same fingertip: (q1 + q2, -q2) with equal link lengths
    _, info = env.reset(seed=0, options={"state": [goal[0] + goal[1], -goal[1]], "goal_state": goal})
    assert info["success"] and info["goal_distance"] < 1e-9
    u.set_state(goal + [0.05, 0.0])
    _, reward, terminated, _, info = env.step(np.zeros(2, np.float32))
    assert reward == -info["goal_distance"]
    assert terminated == info["success"] == (info["goal_distance"] < SUCCESS_RADIUS)
    assert info["goal_distance"] == pytest.approx(np.linalg.norm(u.fingertip() - u.fingertip(goal)))


def test_set_state_set_goal_render_goal(env: gym.Env) -> None:
    u = env.unwrapped
    assert_render_goal_is_the_goal_state(env, seed=2)
    full = np.array([0.3, -0.7, 1.5, -2.0])
    u.set_state(full)
    assert np.array_equal(u.state, full)
    u.set_goal([1.0, 2.0])
    assert np.array_equal(u.goal_state, [1.0, 2.0])


def test_goal_is_not_drawn(env: gym.Env) -> None:
    a, _ = env.reset(seed=0, options={"state": [0.0, 0.5], "goal_state": [1.0, 1.0]})
    b, _ = env.reset(seed=0, options={"state": [0.0, 0.5], "goal_state": [-2.0, -1.0]})
    assert np.array_equal(a, b)


def test_state_and_goal_are_validated(env: gym.Env) -> None:
    for bad in ([0.0, 3.0], [0.1, 0.2, 0.3], [np.nan, 0.5], "x"):
        with pytest.raises(ValueError, match="state"):
            env.reset(seed=0, options={"state": bad})
        with pytest.raises(ValueError, match="goal_state"):
            env.reset(seed=0, options={"goal_state": bad})
    with pytest.raises(ValueError, match="elbow"):
        env.unwrapped.set_goal([0.0, -2.9])


def test_elbow_limit_holds_under_full_torque(env: gym.Env) -> None:
    env.reset(seed=0, options={"state": [0.0, 2.0], "factors": {"actuator_gain": 0.09, "link_mass": 0.02}})
    for _ in range(40):
        _, _, _, _, info = env.step(np.array([0.0, 1.0], np.float32))
    assert ELBOW_LIMIT - 0.02 < info["state"][1] < ELBOW_LIMIT + 0.05
    env.unwrapped.set_state(info["state"])
    rng = np.random.default_rng(0)
    for seed in range(5):  # fastest OOD arms slam into the limit: still inside the tolerance
        env.reset(seed=seed, options={"split": "ood_physics", "severity": 3})
        for t in range(60):
            action = np.sign(rng.uniform(-1, 1, 2)) if t % 10 < 6 else rng.uniform(-1, 1, 2)
            _, _, _, _, info = env.step(action.astype(np.float32))
            assert abs(info["state"][1]) < ELBOW_LIMIT + STATE_TOLERANCE
        env.unwrapped.set_state(info["state"])


# --- factors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["arm_color", "tip_color", "floor_color", "light_intensity", "light_angle", "camera_tilt",
     "link1_length", "link2_length"],
)
def test_visual_and_geometric_factors_change_the_image(env: gym.Env, name: str) -> None:
    options = {"state": [0.3, 0.8], "goal_state": [1.0, 1.0]}
    assert_factor_changes_image(env, name, options, box=-1)


def turn(env: gym.Env, **factors: float) -> float:
    env.reset(seed=0, options={"factors": factors, "state": [0.0, 0.0]})
    for _ in range(3):
        _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    return float(info["state"][0])


def test_physical_factors_change_the_dynamics(env: gym.Env) -> None:
    base = turn(env)
    assert base > 0.05
    assert turn(env, actuator_gain=0.085) > base * 1.2
    assert turn(env, joint_damping=0.019) < base * 0.95
    assert turn(env, link_mass=0.1) < base * 0.8
    assert turn(env, link1_length=0.16) < base * 0.95  # a longer arm has more inertia


# --- expert ------------------------------------------------------------------------------------


def test_expert_reaches_targets() -> None:
    env = envs.make(REACHER, resolution=16)
    policy = make_policy("expert", env, noise=0.3)
    for seed, split in enumerate(["train", "train", "ood_geometry", "ood_physics"]):
        info = run_expert(env, policy, seed, {"split": split})
        assert info["success"], (seed, split, info["state"], info["goal_state"])


@pytest.mark.slow
@pytest.mark.parametrize("noise,split,need", [(0.0, "train", 0.9), (0.3, "train", 0.9), (0.3, "ood_all", 0.8)])
def test_expert_success_rate(noise: float, split: str, need: float) -> None:
    assert expert_success_rate(REACHER, noise, {"split": split}, range(50)) >= need
