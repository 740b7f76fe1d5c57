"""PointMaze behaviour: layouts, walls, success, state round trips, factors, expert."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import make_policy
from envs.point_maze import (
    GRID,
    LAYOUTS,
    MAX_WALLS,
    STATE_TOLERANCE,
    SUCCESS_RADIUS,
    bfs_distances,
    cell_center,
    cell_of,
    free_cells,
    layout_index,
    wall_rects,
)
from tests.envs_helpers import (
    assert_factor_changes_image,
    assert_render_goal_is_the_goal_state,
    env_fixture,
    expert_success_rate,
    run_expert,
)

POINT_MAZE = "wm/PointMaze-v0"


env = env_fixture(POINT_MAZE, resolution=48, render_mode="rgb_array")


def clearance(env: gym.Env, pos: np.ndarray) -> float:
    """Distance from the agent's surface to the nearest wall (negative: penetration)."""
    u = env.unwrapped
    best = np.inf
    for x0, y0, x1, y1 in u.walls:
        dx, dy = max(x0 - pos[0], 0.0, pos[0] - x1), max(y0 - pos[1], 0.0, pos[1] - y1)
        best = min(best, np.hypot(dx, dy) if (dx or dy) else -1.0)
    return best - u.agent_radius


# --- layouts ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,rows", LAYOUTS)
def test_layouts_are_closed_connected_and_merged_exactly(name: str, rows: tuple[str, ...]) -> None:
    assert len(rows) == GRID and all(len(r) == GRID for r in rows)
    assert rows[0] == rows[-1] == "#" * GRID and all(r[0] == r[-1] == "#" for r in rows)
    free = free_cells(rows)
    assert len(bfs_distances(rows, free[0])) == len(free)  # one connected region
    rects = wall_rects(rows)
    assert len(rects) <= MAX_WALLS
    covered = np.zeros((GRID, GRID), int)  # every wall cell in exactly one rectangle, no free cell
    for x0, y0, x1, y1 in rects:
        for i in range(GRID):
            for j in range(GRID):
                x, y = cell_center((i, j))
                covered[i, j] += x0 < x < x1 and y0 < y < y1
    assert np.array_equal(covered, np.array([[c == "#" for c in r] for r in rows], int))


def test_cell_geometry_and_layout_index() -> None:
    for cell in [(0, 0), (3, 5), (7, 7)]:
        assert cell_of(cell_center(cell)) == cell
    assert [layout_index(v) for v in (0.0, 0.99, 1.0, 2.999, 3.0, 4.999)] == [0, 0, 1, 2, 3, 4]


def test_layout_factor_moves_walls_without_recompiling(env: gym.Env) -> None:
    u = env.unwrapped
    model, renderer = u.model, u._renderer
    images = []
    for k, (name, rows) in enumerate(LAYOUTS):
        start = cell_center(free_cells(rows)[0])
        obs, _ = env.reset(seed=0, options={"factors": {"layout": k + 0.5}, "state": start})
        assert u.layout_name == name and u.walls == wall_rects(rows)
        images.append(obs)
    assert u.model is model and u._renderer is renderer
    assert all(not np.array_equal(a, b) for i, a in enumerate(images) for b in images[i + 1 :])


@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
def test_walls_block_the_agent_in_every_layout(env: gym.Env, layout: int) -> None:
    rng = np.random.default_rng(layout)
    strong = {"layout": layout + 0.5, "damping": 2.0, "actuator_gain": 18.0, "agent_mass": 0.4, "agent_radius": 0.4}
    for seed in range(3):
        env.reset(seed=seed, options={"factors": strong})
        for t in range(60):
            action = np.sign(rng.uniform(-1, 1, 2)) if t % 15 < 8 else rng.uniform(-1, 1, 2)
            _, _, _, _, info = env.step(action.astype(np.float32))
            assert clearance(env, info["state"]) > -STATE_TOLERANCE
        env.unwrapped.set_state(info["state"])  # a state reached by physics is always settable


def test_a_wall_stops_the_agent(env: gym.Env) -> None:
    # "u" layout: wall block covers rows 3-4, cols 0-4; from cell (5, 2) push up (+y) into it
    start = cell_center((5, 2))
    env.reset(seed=0, options={"factors": {"layout": 1.5}, "state": start})
    for _ in range(30):
        _, _, _, _, info = env.step(np.array([0.0, 1.0], np.float32))
    wall_bottom = cell_center((4, 2))[1] - 0.5
    assert info["state"][1] == pytest.approx(wall_bottom - env.unwrapped.agent_radius, abs=STATE_TOLERANCE)
    assert info["state"][0] == pytest.approx(start[0], abs=1e-6)


# --- episode -----------------------------------------------------------------------------


def test_start_goal_sampling(env: gym.Env) -> None:
    u = env.unwrapped
    for seed in range(30):
        _, info = env.reset(seed=seed, options={"split": "train"})
        start, goal = info["state"][:2], info["goal_state"]
        assert np.all(info["state"][2:] == 0.0)
        assert u.is_free(start) and u.is_free(goal)
        dist = bfs_distances(u.layout_rows, cell_of(start))
        need = info["factors"]["goal_min_cells"]
        assert dist[cell_of(goal)] >= min(need, max(dist.values()))


def test_success_terminates_and_reward_is_negative_distance(env: gym.Env) -> None:
    start = cell_center((6, 1))
    goal = start + np.array([SUCCESS_RADIUS + 0.1, 0.0])
    _, info = env.reset(seed=0, options={"factors": {"layout": 2.5}, "state": start, "goal_state": goal})
    assert not info["success"] and info["goal_distance"] == pytest.approx(SUCCESS_RADIUS + 0.1)
    terminated = False
    for _ in range(5):
        _, reward, terminated, _, info = env.step(np.array([0.3, 0.0], np.float32))
        assert reward == -info["goal_distance"]
        if terminated:
            break
    assert terminated and info["success"] and info["goal_distance"] < SUCCESS_RADIUS


def test_set_state_set_goal_render_goal(env: gym.Env) -> None:
    u = env.unwrapped
    assert_render_goal_is_the_goal_state(env, seed=1)
    full = np.array([*u.goal_state, 0.5, -0.25])
    u.set_state(full)
    assert np.array_equal(u.state, full)
    new_goal = cell_center(free_cells(u.layout_rows)[0])
    u.set_goal(new_goal)
    assert np.array_equal(u.goal_state, new_goal)


def test_goal_is_not_drawn(env: gym.Env) -> None:
    rows = LAYOUTS[2][1]
    start, g1, g2 = (cell_center(c) for c in free_cells(rows)[:3])
    a, _ = env.reset(seed=0, options={"state": start, "goal_state": g1})
    b, _ = env.reset(seed=0, options={"state": start, "goal_state": g2})
    assert np.array_equal(a, b)


def test_state_and_goal_are_validated(env: gym.Env) -> None:
    env.reset(seed=0)
    for bad in ([0.0, 3.5], [10.0, 0.0], [0.5, 0.5, 0.1], [np.nan, 0.5], "x"):
        with pytest.raises(ValueError, match="state"):
            env.reset(seed=0, options={"factors": {"layout": 0.5}, "state": bad})
        with pytest.raises(ValueError, match="goal_state"):
            env.reset(seed=0, options={"factors": {"layout": 0.5}, "goal_state": bad})
    env.reset(seed=0, options={"factors": {"layout": 1.5}})
    assert LAYOUTS[1][1][3][1] == "#"
    with pytest.raises(ValueError, match="free space"):
        env.unwrapped.set_state(cell_center((3, 1)))


# --- factors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["agent_color", "wall_color", "floor_color", "light_intensity", "light_angle", "camera_tilt",
     "wall_height", "agent_radius", "layout"],
)
def test_visual_and_geometric_factors_change_the_image(env: gym.Env, name: str) -> None:
    options = {"state": cell_center((6, 1)), "goal_state": cell_center((1, 1))}
    assert_factor_changes_image(env, name, options, box=-1)


def displacement(env: gym.Env, **factors: float) -> float:
    env.reset(seed=0, options={"factors": {"layout": 0.5, **factors}, "state": [0.0, 0.0]})
    for _ in range(3):
        _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    return float(info["state"][0])


def test_physical_factors_change_the_dynamics(env: gym.Env) -> None:
    base = displacement(env)
    assert base > 0.2
    assert displacement(env, actuator_gain=17.0) > base * 1.2
    assert displacement(env, damping=6.5) < base * 0.9
    assert displacement(env, agent_mass=2.0) < base * 0.8
    # top speed is actuator_gain / damping
    env.reset(seed=0, options={"factors": {"layout": 0.5}, "state": [-2.5, 0.0]})
    for _ in range(20):
        _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
        if info["state"][0] > 2.0:
            break
    assert info["state"][2] == pytest.approx(12.0 / 4.0, rel=0.05)


def test_make_vec_sync() -> None:
    vec = gym.make_vec("envs:wm/PointMaze-v0", num_envs=2, vectorization_mode="sync")
    obs, info = vec.reset(seed=0, options={"split": "train"})
    assert obs.shape == (2, 64, 64, 3) and info["state"].shape == (2, 4)
    obs, reward, terminated, truncated, info = vec.step(vec.action_space.sample())
    assert obs.shape == (2, 64, 64, 3) and reward.shape == (2,)
    vec.close()


# --- expert ------------------------------------------------------------------------------


def test_expert_reaches_goals_in_every_layout() -> None:
    env = envs.make(POINT_MAZE, resolution=16)
    policy = make_policy("expert", env, noise=0.3)
    for layout in range(len(LAYOUTS)):
        factors = {"layout": layout + 0.5, "goal_min_cells": 6.0}
        info = run_expert(env, policy, layout, {"split": "train", "factors": factors})
        assert info["success"], (layout, info["state"], info["goal_state"])


@pytest.mark.slow
@pytest.mark.parametrize("noise,split,need", [(0.0, "train", 0.9), (0.3, "train", 0.9), (0.3, "ood_all", 0.8)])
def test_expert_success_rate(noise: float, split: str, need: float) -> None:
    assert expert_success_rate(POINT_MAZE, noise, {"split": split}, range(50)) >= need
