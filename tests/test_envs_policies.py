"""Scripted policies: the expert reaches goals, policies are seeded and well-formed."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from envs import make_policy

TWO_ROOM = "wm/TwoRoom-v0"


def success_rate(noise: float, episodes: int = 100, split: str | None = None) -> float:
    env = envs.make(TWO_ROOM)  # the registered TimeLimit: 100 steps
    policy = make_policy("expert", env, noise=noise)
    wins = 0
    for seed in range(episodes):
        policy.reset(seed)
        obs, info = env.reset(seed=seed, options={"split": split} if split else None)
        terminated = truncated = False
        while not (terminated or truncated):
            obs, _, terminated, truncated, info = env.step(policy(obs, info))
        wins += info["success"]
    return wins / episodes


def test_clean_expert_reaches_the_goal() -> None:
    assert success_rate(0.0) >= 0.95


def test_noisy_expert_reaches_the_goal() -> None:
    assert success_rate(0.3) >= 0.85
    assert success_rate(0.3, episodes=50, split="train") >= 0.85


@pytest.mark.parametrize("door_position,door_width", [(0.15, 0.11), (0.85, 0.32), (0.5, 0.2)])
def test_expert_gets_through_any_door_from_the_doorway_and_corners(door_position: float, door_width: float) -> None:
    env = envs.make(TWO_ROOM, max_episode_steps=300)
    policy = make_policy("expert", env, noise=0.3)
    lo, hi = door_position - door_width / 2, door_position + door_width / 2
    starts = [
        [0.5, max(lo, 0.03) + 0.04],  # in the doorway, against a corner
        [0.44, max(lo, 0.03) + 0.041],
        [0.08, 0.08],
        [0.92, 0.92],
        [0.43, 0.92] if lo > 0.5 else [0.43, 0.08],  # against the wall, far from the door
    ]
    for i, start in enumerate(starts):
        for goal in ([0.1, 0.9], [0.9, 0.1], [0.5, (max(lo, 0.03) + min(hi, 0.97)) / 2]):
            policy.reset(i)
            factors = {"door_position": door_position, "door_width": door_width, "agent_speed": 0.015}
            obs, info = env.reset(seed=0, options={"state": start, "goal_state": goal, "factors": factors})
            terminated = truncated = info["success"]
            while not (terminated or truncated):
                obs, _, terminated, truncated, info = env.step(policy(obs, info))
            assert info["success"], (start, goal, info["state"])


@pytest.mark.parametrize("name", ["expert", "random"])
def test_policies_are_seeded_and_well_formed(name: str) -> None:
    env = envs.make(TWO_ROOM)
    policy = make_policy(name, env)
    obs, info = env.reset(seed=0)

    def actions(seed: int) -> np.ndarray:
        policy.reset(seed)
        return np.stack([policy(obs, info) for _ in range(5)])

    a, b, c = actions(1), actions(1), actions(2)
    assert a.dtype == np.float32 and a.shape == (5, 2)
    assert np.all(np.abs(a) <= 1.0)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_clean_expert_is_deterministic_and_does_not_touch_the_env_rng() -> None:
    env = envs.make(TWO_ROOM)
    policy = make_policy("expert", env, noise=0)
    obs, info = env.reset(seed=0)
    state = env.unwrapped.np_random.bit_generator.state
    action = policy(obs, info)
    assert np.array_equal(action, policy(obs, info))
    assert np.linalg.norm(action) == pytest.approx(1.0, abs=1e-6)
    assert env.unwrapped.np_random.bit_generator.state == state


def test_unknown_policy_lists_valid_names() -> None:
    env = envs.make(TWO_ROOM)
    with pytest.raises(ValueError, match=r"'planner'.*\['expert', 'expert-tour', 'random'\]"):
        make_policy("planner", env)
    with pytest.raises(ValueError, match="noise"):
        make_policy("expert", env, noise=-1.0)
