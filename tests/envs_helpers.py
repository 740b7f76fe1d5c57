"""Scaffolding shared by the env tests: a module-scoped env fixture, expert episodes, factor probes."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import make_policy


def env_fixture(env_id: str, **kwargs: Any) -> Callable[[], Iterator[gym.Env]]:
    """A module-scoped pytest fixture ``env``: ``envs.make(env_id, **kwargs)``, closed at the end."""

    @pytest.fixture(scope="module")
    def env() -> Iterator[gym.Env]:
        e = envs.make(env_id, **kwargs)
        yield e
        e.close()

    return env


def ood_value(factor: envs.Factor, box: int = 0) -> Any:
    """The centre of OOD box `box` of `factor` (a tuple for a vector factor)."""
    low, high = factor.ood[box]
    return tuple((np.add(low, high) / 2).tolist()) if factor.is_vector else (low + high) / 2


def run_expert(env: gym.Env, policy: Any, seed: int, options: dict | None) -> dict:
    """One episode of `policy` (seeded with `seed`) from ``reset(seed=seed, options=options)``; the last info."""
    policy.reset(seed)
    obs, info = env.reset(seed=seed, options=options)
    terminated = truncated = False
    while not (terminated or truncated):
        obs, _, terminated, truncated, info = env.step(policy(obs, info))
    return info


def expert_success_rate(env_id: str, noise: float, options: dict, seeds: range, resolution: int = 16) -> float:
    """Fraction of the seeded episodes that the expert with action noise std `noise` ends in success."""
    env = envs.make(env_id, resolution=resolution)
    policy = make_policy("expert", env, noise=noise)
    return sum(run_expert(env, policy, seed, options)["success"] for seed in seeds) / len(seeds)


def assert_factor_changes_image(env: gym.Env, name: str, options: dict, box: int = 0) -> None:
    """Setting factor `name` to the centre of OOD box `box` changes the first frame after ``reset(options)``."""
    base, _ = env.reset(seed=0, options=options)
    value = ood_value(env.unwrapped.factor_space[name], box)
    changed, _ = env.reset(seed=0, options={**options, "factors": {name: value}})
    assert not np.array_equal(base, changed)


def assert_render_goal_is_the_goal_state(env: gym.Env, seed: int) -> None:
    """`render_goal` leaves the state alone and equals the frame once the state is set to the goal."""
    u = env.unwrapped
    obs, _ = env.reset(seed=seed, options={"split": "train"})
    assert np.array_equal(env.render(), obs)
    goal_img = u.render_goal()
    assert np.array_equal(env.render(), obs)  # rendering the goal leaves the state alone
    u.set_state(u.goal_state)
    assert np.array_equal(env.render(), goal_img) and not np.array_equal(obs, goal_img)
