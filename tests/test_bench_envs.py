"""``wm bench envs`` and ``wm gallery``: the JSON contract and the files they write."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from benchmarks.envs import bench_env, markdown_table
from benchmarks.stats import wilson_interval
from envs.gallery import TILES, write_gallery
from tests.test_cli import wm


def test_bench_env_counts_steps_and_resets() -> None:
    r = bench_env("wm/TwoRoom-v0", resolution=32, min_steps=300, min_seconds=0.0)
    assert r.steps >= 300 and r.seconds > 0 and r.steps_per_s == r.steps / r.seconds
    assert r.resets >= 2  # 100-step episodes: resets happen and are counted in the time
    assert "| wm/TwoRoom-v0 | 32² |" in markdown_table({r.env_id: r})


def test_bench_envs_json_contract() -> None:
    out = json.loads(wm("bench", "envs", "--env", "wm/TwoRoom-v0", "--resolution", "32", "--seconds", "0.2", "--json").stdout)
    assert list(out) == ["wm/TwoRoom-v0"] and out["wm/TwoRoom-v0"] > 0


def test_bench_envs_bad_input() -> None:
    proc = wm("bench", "envs", "--env", "wm/NoSuch-v0", "--json", check=False)
    assert proc.returncode == 2 and "wm/NoSuch-v0" in proc.stderr
    proc = wm("bench", "envs", "--resolution", "2", check=False)
    assert proc.returncode == 2 and "--resolution=2" in proc.stderr


def test_gallery_writes_one_labelled_strip_per_env(tmp_path: Path) -> None:
    paths = write_gallery(tmp_path, ["wm/TwoRoom-v0"], resolution=48)
    assert paths == [tmp_path / "TwoRoom.png"]
    img = cv2.imread(str(paths[0]))
    assert img.shape[0] > 48 and img.shape[1] == len(TILES) * 48 + (len(TILES) - 1) * 4
    tiles = [img[-48:, i * 52 : i * 52 + 48] for i in range(len(TILES))]
    assert not (tiles[0] == tiles[3]).all()  # ood_visual differs from default


@pytest.mark.parametrize("env_id", ["wm/TwoRoom-v0"])
def test_factors_json_has_the_contract_keys(env_id: str) -> None:
    rows = json.loads(wm("factors", env_id, "--json").stdout)
    kinds = {r["kind"] for r in rows}
    assert kinds == {"visual", "geometric", "physical"}
    for r in rows:
        assert {"name", "kind", "default", "train", "ood", "ood_severity"} <= set(r)


def test_bench_experts_json_contract() -> None:
    out = json.loads(wm("bench", "experts", "--env", "wm/TwoRoom-v0", "--episodes", "3", "--json").stdout)
    r = out["wm/TwoRoom-v0"]
    assert set(r) == {"clean", "noisy"}
    clean, noisy = r["clean"], r["noisy"]
    # the clean TwoRoom expert reaches its goal in every episode, well before the 100-step limit
    assert clean["episodes"] == 3 and clean["successes"] == 3 and clean["success_rate"] == 1.0
    assert clean["ci95"] == pytest.approx(list(wilson_interval(3, 3)))
    assert 5 < clean["mean_steps"] < 100
    # the noisy expert (collection's) is really noisy: same seeds, other trajectories
    assert noisy["episodes"] == 3 and noisy["success_rate"] == noisy["successes"] / 3
    assert noisy["mean_steps"] != clean["mean_steps"]
    proc = wm("bench", "experts", "--episodes", "0", check=False)
    assert proc.returncode == 2 and "--episodes=0" in proc.stderr


def test_expert_success_counts_only_episodes_that_reach_the_goal(monkeypatch: pytest.MonkeyPatch) -> None:
    import envs
    import numpy as np
    from benchmarks.experts import expert_success

    class StandStill:
        """A policy that never moves: it can never reach the goal."""

        def __init__(self, env) -> None:
            self.shape = env.action_space.shape

        def reset(self, seed: int | None = None) -> None:
            pass

        def __call__(self, obs, info) -> np.ndarray:
            return np.zeros(self.shape, np.float32)

    monkeypatch.setattr(envs, "make_policy", lambda name, env, noise=None: StandStill(env))
    r = expert_success("wm/TwoRoom-v0", episodes=2)
    assert r["successes"] == 0 and r["success_rate"] == 0.0
    assert r["mean_steps"] == 100  # every episode ran to the time limit
