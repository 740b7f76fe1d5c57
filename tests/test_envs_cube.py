"""Cube behaviour: success test, state/goal round trips, factors in the physics and the image, expert."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from envs import make_policy
from envs.cube import PUSHER_RADIUS, PUSHER_RANGE, STATE_TOLERANCE, SUCCESS_RADIUS, CubeEnv
from tests.envs_helpers import env_fixture, expert_success_rate, ood_value
from tests.envs_helpers import run_expert as run_episode

CUBE = "wm/Cube-v0"
RIGHT = np.array([1.0, 0.0], np.float32)


env = env_fixture(CUBE, resolution=32)


def scene(env, pusher=(-0.08, 0.0), cube=(0.0, 0.0), yaw=0.0) -> np.ndarray:
    """A resting state with the pusher and cube where asked (cube z from the current cube_size)."""
    return env.unwrapped.goal_from_cube(cube[0], cube[1], yaw, pusher_xy=pusher)


def push(env, factors: dict, steps: int = 12, coast: int = 8) -> np.ndarray:
    """Push the cube along +x, then pull the pusher back and let the cube coast; the final state."""
    env.reset(seed=0, options={"factors": factors})
    env.unwrapped.set_state(scene(env))
    info = None
    for _ in range(steps):
        info = env.step(RIGHT)[4]
    for _ in range(coast):
        info = env.step(-RIGHT)[4]
    return info["state"]


def run_expert(env, seed: int, noise: float, split: str = "train") -> dict:
    return run_episode(env, make_policy("expert", env, noise=noise), seed, {"split": split})


# --- success, state, goal --------------------------------------------------------------


def test_success_is_cube_xy_within_the_radius(env) -> None:
    u = env.unwrapped
    env.reset(seed=0, options={"factors": {"cube_size": 0.03}})
    start = scene(env, pusher=(-0.08, 0.0), cube=(0.0, 0.0))
    goal = scene(env, pusher=(0.15, 0.15), cube=(SUCCESS_RADIUS + 0.005, 0.0), yaw=0.5)  # pusher/yaw not judged
    _, info = env.reset(seed=0, options={"state": start, "goal_state": goal})
    assert not info["success"] and info["goal_distance"] == pytest.approx(SUCCESS_RADIUS + 0.005)
    for _ in range(30):
        _, reward, terminated, _, info = env.step(RIGHT * 0.5)
        assert reward == -info["goal_distance"]
        assert terminated == info["success"] == (info["goal_distance"] < SUCCESS_RADIUS)
        if terminated:
            break
    assert info["success"] and abs(info["state"][3]) < 0.01
    assert u.state_dim == 17 and info["state"].shape == info["goal_state"].shape == (17,)


def test_set_state_round_trip_and_replay(env) -> None:
    other = envs.make(CUBE, resolution=32)
    policy = make_policy("expert", env, noise=0.3)
    policy.reset(0)
    obs, info = env.reset(seed=2, options={"split": "train"})
    for _ in range(10):
        obs, _, _, _, info = env.step(policy(obs, info))
    state = info["state"]
    options = {"factors": info["factors"], "state": state, "goal_state": info["goal_state"]}
    obs2, info2 = other.reset(seed=9, options=options)
    assert np.array_equal(info2["state"], state) and np.array_equal(obs2, obs)
    for _ in range(15):  # velocities are part of the state: the replay follows (solver warm start aside)
        a = policy(obs, info)
        obs, _, _, _, info = env.step(a)
        _, _, _, _, info2 = other.step(a)
        assert np.allclose(info["state"], info2["state"], atol=1e-7)
    other.unwrapped.set_state(state)
    assert np.array_equal(other.unwrapped.state, state)


def test_render_goal_is_the_goal_state_rendered_and_the_goal_is_not_drawn() -> None:
    env = envs.make(CUBE, resolution=32, render_mode="rgb_array")
    obs, info = env.reset(seed=0, options={"split": "train"})
    u = env.unwrapped
    assert np.array_equal(env.render(), obs)
    goal_img = u.render_goal()
    assert not np.array_equal(goal_img, obs)
    u.set_state(info["goal_state"])
    assert np.array_equal(env.render(), goal_img)
    u.set_state(info["state"])
    u.set_goal(scene(env, cube=(0.1, -0.1)))  # moving the goal changes neither the observation ...
    assert np.array_equal(env.render(), obs)
    assert not np.array_equal(u.render_goal(), goal_img)  # ... nor fails to change the goal image


def test_state_and_goal_options_are_validated(env) -> None:
    good = scene(env)
    for bad, match in (
        (good[:9], r"shape \(9,\)"),
        (np.r_[good[:8], np.nan, good[9:]], "not finite"),
        (np.r_[PUSHER_RANGE + 2 * STATE_TOLERANCE, good[1:]], "outside its range"),
        (np.r_[good[:5], 0, 0, 0, 0, good[9:]], "zero norm"),
        ("x", "expected a float array"),
    ):
        for key in ("state", "goal_state"):
            with pytest.raises(ValueError, match=match):
                env.reset(seed=0, options={key: bad})
    skewed = good.copy()
    skewed[5:9] = (2.0, 0.0, 0.0, 0.0)
    _, info = env.reset(seed=0, options={"state": skewed})
    assert np.allclose(info["state"][5:9], (1.0, 0.0, 0.0, 0.0))


def test_sampled_starts_and_goals(env) -> None:
    for seed in range(30):
        _, info = env.reset(seed=seed, options={"split": "ood_geometry"})
        s, g, f = info["state"], info["goal_state"], info["factors"]
        h = f["cube_size"]
        assert s[4] == pytest.approx(h) and g[4] == pytest.approx(h)
        assert np.all(np.abs(g[2:4] - np.asarray(f["goal_center"])) <= 0.06 + 1e-12)
        assert np.hypot(*(g[2:4] - s[2:4])) >= 0.06
        assert np.hypot(*(s[0:2] - s[2:4])) > np.sqrt(2) * h + PUSHER_RADIUS
        assert not info["success"]


# --- physics ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0.021, 0.03, 0.04])
def test_pusher_meets_the_cube_face_at_every_size(env, size: float) -> None:
    """Contacts follow the resized cube (geom_rbound/aabb updated): pusher stops at h + r, cube rests at z = h."""
    env.reset(seed=0, options={"factors": {"cube_size": size}})
    u = env.unwrapped
    g = u.model.geom("cube").id
    assert u.model.geom_rbound[g] == pytest.approx(np.sqrt(3) * size)
    assert np.allclose(u.model.geom_aabb[g], [0, 0, 0, size, size, size])
    u.set_state(scene(env))
    for _ in range(12):
        _, _, _, _, info = env.step(RIGHT)
    s = info["state"]
    assert s[2] > 0.03  # the cube moved
    assert s[2] - s[0] == pytest.approx(size + PUSHER_RADIUS, abs=0.003)
    assert s[4] == pytest.approx(size, abs=0.002)


@pytest.mark.parametrize(
    "name,low,high",
    [
        ("cube_mass", 0.04, 0.22),
        ("cube_friction", 0.2, 0.9),
        ("pusher_gain", 40.0, 140.0),
        ("pusher_damping", 0.0, 8.0),
        ("pusher_speed", 0.12, 0.3),
    ],
)
def test_physical_factors_change_the_dynamics(env, name: str, low: float, high: float) -> None:
    a, b = push(env, {name: low}), push(env, {name: high})
    assert np.abs(a[[0, 2]] - b[[0, 2]]).max() > 0.002  # pusher or cube x differ by > 2 mm


def test_heavier_rougher_cube_slows_the_pusher_and_slides_less(env) -> None:
    light, heavy = push(env, {"cube_mass": 0.04}, coast=0), push(env, {"cube_mass": 0.22}, coast=0)
    assert heavy[0] < light[0] - 0.002
    slick, rough = push(env, {"cube_friction": 0.2}), push(env, {"cube_friction": 0.9})
    assert slick[2] > rough[2] + 0.005


def test_pusher_stays_in_range_and_cube_upright_under_random_actions(env) -> None:
    rng = np.random.default_rng(0)
    for seed in range(4):
        env.reset(seed=seed, options={"split": "ood", "severity": 3})
        for _ in range(100):
            _, _, _, _, info = env.step(rng.uniform(-2, 2, 2))
            s = info["state"]
            assert np.all(np.abs(s[:2]) <= PUSHER_RANGE + STATE_TOLERANCE)
            _, x, y, _ = s[5:9]
            assert 1 - 2 * (x * x + y * y) > np.cos(np.radians(10))  # cube tilt < 10 degrees
            assert s[4] > 0.0  # on the table


def test_factors_are_applied_in_place_and_fully_reset() -> None:
    fresh = envs.make(CUBE, resolution=32)
    used = envs.make(CUBE, resolution=32)
    model = used.unwrapped.model
    for seed in range(3):
        used.reset(seed=seed, options={"split": "ood", "severity": 3})
        for _ in range(5):
            used.step(RIGHT)
    assert used.unwrapped.model is model  # never recompiled
    obs_a, info_a = fresh.reset(seed=4, options={"split": "train"})
    obs_b, info_b = used.reset(seed=4, options={"split": "train"})
    assert np.array_equal(obs_a, obs_b)
    for _ in range(10):
        a = fresh.step(RIGHT)
        b = used.step(RIGHT)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[4]["state"], b[4]["state"])


# --- image ----------------------------------------------------------------------------------

VISUAL = [f.name for f in CubeEnv.factor_space if f.kind == "visual"]


@pytest.mark.parametrize("name", VISUAL + ["cube_size"])
def test_visual_factors_change_the_image(env, name: str) -> None:
    value = ood_value(env.unwrapped.factor_space[name])
    state = scene(env, pusher=(-0.1, 0.05), cube=(0.02, 0.0), yaw=0.3)
    base, _ = env.reset(seed=0, options={"state": state})
    if name == "cube_size":
        state = state.copy()
        state[4] = value
    changed, _ = env.reset(seed=0, options={"state": state, "factors": {name: value}})
    assert np.abs(base.astype(int) - changed.astype(int)).sum() > 50


# --- expert ---------------------------------------------------------------------------------


def test_expert_pushes_the_cube_to_the_goal(env) -> None:
    assert all(run_expert(env, seed, noise=0.0)["success"] for seed in range(3))
    assert sum(run_expert(env, seed, noise=0.3)["success"] for seed in range(3)) >= 2
    assert run_expert(env, 0, noise=0.0, split="ood")["success"]


@pytest.mark.slow
@pytest.mark.parametrize("noise,threshold", [(0.0, 0.9), (0.3, 0.8)])
def test_expert_success_rate_on_train(noise: float, threshold: float) -> None:
    assert expert_success_rate(CUBE, noise, {"split": "train"}, range(50)) >= threshold
