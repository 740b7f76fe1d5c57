"""Environment contract (every registered env) and TwoRoom behaviour."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import FactorOutOfRange, UnknownFactorError, UnknownSplitError
from envs.two_room import AGENT_RADIUS, MIDDLE, SUCCESS_RADIUS, WALL_THICKNESS, TwoRoomEnv
from tests.envs_helpers import assert_factor_changes_image, ood_value

ENV_IDS = envs.list_envs()
TWO_ROOM = "wm/TwoRoom-v0"
WALL_FACE = MIDDLE - WALL_THICKNESS / 2 - AGENT_RADIUS  # closest x of the agent centre left of the wall


def rollout(env: gym.Env, seed: int, steps: int = 30, options: dict | None = None) -> tuple[list, list]:
    obs, info = env.reset(seed=seed, options=options)
    rng = np.random.default_rng(seed)
    observations, infos = [obs], [info]
    for _ in range(steps):
        obs, _, terminated, truncated, info = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        observations.append(obs)
        infos.append(info)
        if terminated or truncated:
            break
    return observations, infos


def same_info(a: dict, b: dict) -> bool:
    return (
        np.array_equal(a["state"], b["state"])
        and np.array_equal(a["goal_state"], b["goal_state"])
        and a["success"] == b["success"]
        and a["goal_distance"] == b["goal_distance"]
        and a["factors"] == b["factors"]
    )


# --- registry -----------------------------------------------------------------------


def test_registry_and_make() -> None:
    assert TWO_ROOM in ENV_IDS
    env = gym.make("envs:wm/TwoRoom-v0")
    assert env.spec.max_episode_steps == 100
    env = envs.make(TWO_ROOM, resolution=32)
    assert env.reset(seed=0)[0].shape == (32, 32, 3)


def test_unknown_env_id_suggests_the_closest() -> None:
    with pytest.raises(envs.UnknownEnvError) as e:
        envs.make("wm/TwoRom-v0")
    assert isinstance(e.value, ValueError)
    assert "'wm/TwoRom-v0'" in str(e.value) and "did you mean 'wm/TwoRoom-v0'?" in str(e.value)
    with pytest.raises(envs.UnknownEnvError, match="wm/TwoRoom-v0"):
        envs.make("TwoRoom-v0")


def test_import_is_light() -> None:
    code = "import sys, envs; assert 'cv2' not in sys.modules and 'torch' not in sys.modules; envs.FactorSpace"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(envs.__file__).parents[1]))


def test_truncated_at_max_episode_steps() -> None:
    env = envs.make(TWO_ROOM)
    env.reset(seed=0, options={"state": [0.1, 0.1], "goal_state": [0.9, 0.9]})
    for t in range(100):
        _, _, terminated, truncated, _ = env.step(np.zeros(2, np.float32))
        assert not terminated and truncated == (t == 99)


# --- contract, parametrized over the registry ------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env(env_id: str) -> None:
    check_env(envs.make(env_id).unwrapped, skip_render_check=False)
    check_env(envs.make(env_id, render_mode="rgb_array").unwrapped)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeded_rollouts_are_deterministic(env_id: str) -> None:
    for options in (None, {"split": "ood"}):
        obs_a, info_a = rollout(envs.make(env_id), seed=3, options=options)
        obs_b, info_b = rollout(envs.make(env_id), seed=3, options=options)
        assert len(obs_a) == len(obs_b)
        assert all(np.array_equal(a, b) for a, b in zip(obs_a, obs_b))
        assert all(same_info(a, b) for a, b in zip(info_a, info_b))
    _, info_c = rollout(envs.make(env_id), seed=4)
    assert not np.array_equal(info_a[0]["state"], info_c[0]["state"])  # the start is randomised


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_seed_then_reset_is_reproducible_as_a_pair(env_id: str) -> None:
    def pair(env: gym.Env) -> list:
        return [env.reset(seed=11, options={"split": "train"}), env.reset(options={"split": "train"})]

    (o1, i1), (o2, i2) = pair(envs.make(env_id))
    (p1, j1), (p2, j2) = pair(envs.make(env_id))
    assert np.array_equal(o1, p1) and np.array_equal(o2, p2) and same_info(i1, j1) and same_info(i2, j2)
    assert not same_info(i1, i2)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_factor_is_settable_and_echoed(env_id: str) -> None:
    env = envs.make(env_id)
    space = env.unwrapped.factor_space
    for factor in space:
        value = ood_value(factor)
        _, info = env.reset(seed=0, options={"factors": {factor.name: value}})
        assert set(info["factors"]) == set(space.names)
        assert np.allclose(info["factors"][factor.name], value)
        _, _, _, _, info = env.step(env.action_space.sample())
        assert np.allclose(info["factors"][factor.name], value)
        # explicit factors override the sampled ones for the named keys only
        _, info = env.reset(seed=0, options={"split": "train", "factors": {factor.name: value}})
        assert np.allclose(info["factors"][factor.name], value)
        assert not any(space[n].is_ood(v) for n, v in info["factors"].items() if n != factor.name)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_splits_through_reset(env_id: str) -> None:
    env = envs.make(env_id)
    space = env.unwrapped.factor_space
    for seed in range(40):
        _, info = env.reset(seed=seed, options={"split": "train"})
        assert not any(space.is_ood(info["factors"]).values())
        _, info = env.reset(seed=seed, options={"split": "ood"})
        assert all(space.is_ood(info["factors"]).values())
    _, info = env.reset(seed=0)
    assert info["factors"] == space.defaults()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_info_keys_and_copies(env_id: str) -> None:
    env = envs.make(env_id)
    _, info = env.reset(seed=0)
    assert {"state", "goal_state", "success", "goal_distance", "factors"} <= set(info)
    assert info["state"].dtype == np.float64 and info["state"].shape == (env.unwrapped.state_dim,)
    info["state"][:] = 123.0
    info["factors"].clear()
    _, _, _, _, info2 = env.step(np.zeros(env.action_space.shape, np.float32))
    assert np.all(info2["state"] != 123.0) and info2["factors"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_observations_never_share_memory(env_id: str) -> None:
    env, twin = envs.make(env_id), envs.make(env_id)
    obs0, _ = env.reset(seed=0)
    twin.reset(seed=0)
    zero = np.zeros(env.action_space.shape, np.float32)
    obs1 = env.step(zero)[0]
    obs2 = env.step(zero)[0]
    goal = env.unwrapped.render_goal()
    arrays = [obs0, obs1, obs2, goal]
    for i in range(len(arrays)):
        for j in range(i + 1, len(arrays)):
            assert not np.shares_memory(arrays[i], arrays[j])
    twin.step(zero)
    twin.step(zero)
    snapshot = obs2.copy()
    for a in (obs0, obs1, goal):
        a[:] = 0  # scribbling on returned arrays changes nothing the env returns later
    assert np.array_equal(obs2, snapshot)
    assert np.array_equal(env.step(zero)[0], twin.step(zero)[0])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_works(env_id: str) -> None:
    vec = gym.make_vec("envs:" + env_id, num_envs=2, vectorization_mode="sync")
    try:
        obs, info = vec.reset(seed=[0, 1])
        assert obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8
        obs, reward, terminated, truncated, info = vec.step(vec.action_space.sample())
        assert obs.shape == (2, 64, 64, 3) and reward.shape == (2,)
        assert info["state"].shape == (2, envs.env_class(env_id).state_dim)
    finally:
        vec.close()


def _probe(env_id: str, options: dict, steps: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """First frame and the state trajectory of the clean expert from a fixed seed."""
    env = envs.make(env_id)
    try:
        first, info = env.reset(seed=5, options=options)
        policy = envs.make_policy("expert", env, noise=0.0)
        policy.reset(5)
        obs, states = first, [info["state"]]
        for _ in range(steps):
            obs, _, terminated, truncated, info = env.step(policy(obs, info))
            states.append(info["state"])
            if terminated or truncated:
                break
        return first, np.stack(states)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_factor_changes_show_in_pixels_or_dynamics(env_id: str) -> None:
    """Every visual factor changes the first frame; every physical one the expert's trajectory."""
    space = envs.factor_space(env_id)
    base_obs, base_states = _probe(env_id, {})
    for factor in space:
        if factor.kind == "geometric":
            continue
        obs, states = _probe(env_id, {"factors": {factor.name: ood_value(factor)}})
        if factor.kind == "visual":
            assert not np.array_equal(obs, base_obs), f"{env_id}: visual factor {factor.name} did not change the image"
        else:
            n = min(len(states), len(base_states))
            assert not np.allclose(states[:n], base_states[:n]), f"{env_id}: physical factor {factor.name} did not change the dynamics"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_severity_levels_sample_inside_their_slices(env_id: str) -> None:
    env = envs.make(env_id)
    space = env.unwrapped.factor_space
    for severity in (1, 3):
        _, info = env.reset(seed=severity, options={"split": "ood", "severity": severity})
        for f in space:
            v = np.atleast_1d(np.asarray(info["factors"][f.name], float))
            assert any(
                np.all((v >= np.atleast_1d(lo) - 1e-9) & (v <= np.atleast_1d(hi) + 1e-9))
                for lo, hi in (f.severity_box(r, severity) for r in f.ood)
            ), f"{f.name}={v} not in its severity-{severity} slices"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_bad_inputs_are_clear_errors(env_id: str) -> None:
    env = envs.make(env_id)
    env.reset(seed=0)
    with pytest.raises(UnknownFactorError, match="not_a_factor"):
        env.reset(options={"factors": {"not_a_factor": 1.0}})
    with pytest.raises(UnknownSplitError, match="nope"):
        env.reset(options={"split": "nope"})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"colour": 1})
    env.reset(seed=0)
    n = env.action_space.shape[0]
    with pytest.raises(ValueError, match=rf"shape \({n + 1},\).*\({n},\)"):
        env.step(np.zeros(n + 1, np.float32))
    with pytest.raises(ValueError, match=rf"nan.*\({n},\)"):
        env.step(np.full(n, np.nan, np.float32))
    with pytest.raises(ValueError, match=r"inf"):
        env.step(np.full(n, np.inf))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_goal_from_state_is_reached_at_that_state(env_id: str) -> None:
    """A recorded state mapped by `goal_from_state` is a goal that is reached exactly there
    (and not at the episode's start); wrong shapes are clear errors naming both shapes."""
    env = envs.make(env_id, resolution=16, terminate_on_success=False)
    expert = envs.make_policy("expert", env)
    obs, info = env.reset(seed=4, options={"split": "train"})
    expert.reset(4)
    truncated = False
    factors, start = info["factors"], info["state"]
    while not (info["success"] or truncated):  # the expert's first success: far from the start
        obs, _, terminated, truncated, info = env.step(expert(obs, info))
        assert not terminated
    assert info["success"], "the expert should reach this goal"
    later = info["state"]
    goal = env.unwrapped.goal_from_state(later)
    assert goal.dtype == np.float64 and goal.shape == info["goal_state"].shape  # the env's goal layout
    _, at_goal = env.reset(seed=4, options={"factors": factors, "state": later, "goal_state": goal})
    assert at_goal["success"] and at_goal["goal_distance"] < 1e-6
    _, at_start = env.reset(seed=4, options={"factors": factors, "state": start, "goal_state": goal})
    assert not at_start["success"] and at_start["goal_distance"] > 0.0
    n = env.unwrapped.state_dim
    with pytest.raises(ValueError, match=rf"shape \({n + 1},\), expected \({n},\).*another environment"):
        env.unwrapped.goal_from_state(np.zeros(n + 1))
    with pytest.raises(ValueError, match="not finite"):
        env.unwrapped.goal_from_state(np.full(n, np.nan))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_terminate_on_success_false_keeps_the_episode_running(env_id: str) -> None:
    """By default success terminates; with ``terminate_on_success=False`` it is only reported,
    and the time limit ends the episode (truncation)."""
    for terminate in (True, False):
        kwargs = {} if terminate else {"terminate_on_success": False}
        env = envs.make(env_id, resolution=16, max_episode_steps=3, **kwargs)
        _, info = env.reset(seed=0)
        state = info["state"]
        env.reset(seed=0, options={"state": state, "goal_state": env.unwrapped.goal_from_state(state)})
        zero = np.zeros(env.action_space.shape, np.float32)
        for t in range(3):
            _, _, terminated, truncated, info = env.step(zero)  # at rest, no action: stays at the goal
            assert info["success"]
            assert terminated == terminate
            assert truncated == (t == 2)
            if terminate:
                break
    with pytest.raises(ValueError, match="terminate_on_success='no'"):
        envs.make(env_id, terminate_on_success="no")

# --- TwoRoom behaviour -----------------------------------------------------------------


def two_room(**kwargs) -> gym.Env:
    return envs.make(TWO_ROOM, **kwargs)


def test_factor_out_of_range_names_the_value() -> None:
    env = two_room()
    with pytest.raises(FactorOutOfRange, match=r"door_width=3.5 outside its ranges: train \[0.16, 0.24\]"):
        env.reset(options={"factors": {"door_width": 3.5}})
    with pytest.raises(FactorOutOfRange, match=r"agent_color=\(0.5, 0.5, 0.5\)"):
        env.reset(options={"factors": {"agent_color": (0.5, 0.5, 0.5)}})


@pytest.mark.parametrize("name", ["agent_color", "background_color", "wall_color", "door_position", "door_width"])
def test_visual_and_geometric_factors_change_the_image(name: str) -> None:
    assert_factor_changes_image(two_room(), name, {"state": [0.2, 0.5], "goal_state": [0.8, 0.5]})


def test_agent_speed_changes_the_dynamics() -> None:
    def displacement(speed: float) -> float:
        env = two_room()
        env.reset(seed=0, options={"state": [0.2, 0.5], "factors": {"agent_speed": speed}})
        _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
        return info["state"][0] - 0.2

    assert displacement(0.03) == pytest.approx(0.03)
    assert displacement(0.045) == pytest.approx(0.045)
    assert displacement(0.0175) == pytest.approx(0.0175)


def test_actions_are_clipped() -> None:
    env = two_room()
    env.reset(seed=0, options={"state": [0.2, 0.5]})
    _, _, _, _, info = env.step(np.array([5.0, -7.0], np.float32))
    assert np.allclose(info["state"], [0.2 + 0.03, 0.5 - 0.03])


@pytest.mark.parametrize("speed", [0.015, 0.03, 0.05])
def test_wall_blocks_and_door_lets_through(speed: float) -> None:
    env = two_room()
    right = np.array([1.0, 0.0], np.float32)
    factors = {"agent_speed": speed, "door_position": 0.5, "door_width": 0.2}  # door y in [0.4, 0.6]
    for y in (0.1, 0.3, 0.7, 0.9):  # beside the door: the wall stops the agent
        env.reset(seed=0, options={"state": [0.3, y], "factors": factors})
        for _ in range(40):
            _, _, _, _, info = env.step(right)
        assert info["state"][0] == pytest.approx(WALL_FACE) and info["state"][1] == y
    env.reset(seed=0, options={"state": [0.3, 0.5], "goal_state": [0.1, 0.1], "factors": factors})
    for _ in range(40):
        _, _, _, _, info = env.step(right)
    assert info["state"][0] > MIDDLE + WALL_THICKNESS / 2 + AGENT_RADIUS


def test_narrow_door_still_fits_the_agent() -> None:
    env = two_room()
    env.reset(seed=0, options={"state": [0.3, 0.2], "factors": {"door_position": 0.2, "door_width": 0.11}})
    for _ in range(40):
        _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    assert info["state"][0] > 0.6


def test_agent_never_enters_walls_under_random_actions() -> None:
    env = two_room()
    rng = np.random.default_rng(0)
    for seed in range(10):
        env.reset(seed=seed, options={"split": "ood"})
        for _ in range(100):
            _, _, terminated, truncated, info = env.step(rng.uniform(-3, 3, 2))
            assert env.unwrapped.is_free(info["state"])
            if terminated or truncated:
                break


def test_start_goal_and_success() -> None:
    env = two_room()
    other = 0
    for seed in range(200):
        _, info = env.reset(seed=seed)
        start, goal = info["state"], info["goal_state"]
        assert env.unwrapped.is_free(start) and env.unwrapped.is_free(goal)
        assert np.linalg.norm(goal - start) >= 0.25
        other += (start[0] < MIDDLE) != (goal[0] < MIDDLE)
    assert 0.7 < other / 200 < 0.9
    _, info = env.reset(seed=0, options={"state": [0.2, 0.5], "goal_state": [0.2 + SUCCESS_RADIUS + 0.02, 0.5]})
    assert not info["success"]
    _, reward, terminated, _, info = env.step(np.array([1.0, 0.0], np.float32))
    assert info["success"] and terminated
    assert reward == -info["goal_distance"] and info["goal_distance"] == pytest.approx(0.05)


def test_state_and_goal_options_are_validated() -> None:
    env = two_room()
    for bad in ([0.5, 0.1], [0.0, 0.5], [0.2, 0.5, 0.1], [np.nan, 0.5], "x"):
        with pytest.raises(ValueError, match="state"):
            env.reset(seed=0, options={"state": bad})
        with pytest.raises(ValueError, match="goal_state"):
            env.reset(seed=0, options={"goal_state": bad})
    _, info = env.reset(seed=0, options={"state": [0.5, 0.5], "goal_state": (0.8, 0.2)})  # in the doorway
    assert info["state"].tolist() == [0.5, 0.5] and info["goal_state"].tolist() == [0.8, 0.2]


def test_set_state_set_goal_render_goal() -> None:
    env = two_room(render_mode="rgb_array")
    obs, _ = env.reset(seed=0, options={"split": "train"})
    u = env.unwrapped
    assert np.array_equal(env.render(), obs)
    u.set_goal([0.8, 0.8])
    goal_img = u.render_goal()
    u.set_state([0.8, 0.8])
    assert np.array_equal(env.render(), goal_img)
    assert not np.array_equal(obs, goal_img)
    with pytest.raises(ValueError, match="free space"):
        u.set_state([0.5, 0.05])


def test_goal_is_not_drawn() -> None:
    env = two_room()
    a, _ = env.reset(seed=0, options={"state": [0.2, 0.5], "goal_state": [0.8, 0.2]})
    b, _ = env.reset(seed=0, options={"state": [0.2, 0.5], "goal_state": [0.8, 0.8]})
    assert np.array_equal(a, b)


def test_resolution_and_bad_kwargs() -> None:
    obs, _ = two_room(resolution=224).reset(seed=0)
    assert obs.shape == (224, 224, 3) and obs.dtype == np.uint8
    with pytest.raises(ValueError, match="resolution"):
        two_room(resolution=2)
    with pytest.raises(ValueError, match="render_mode"):
        TwoRoomEnv(render_mode="human")
