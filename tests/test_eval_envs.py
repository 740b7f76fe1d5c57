"""``wm eval`` end to end on every registered env, from data ``wm collect`` makes with its
default options (the standard protocol: goal 25 steps ahead, 50-step budget), and its
refusals: a checkpoint of another env, more episodes than distinct start/goal pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import envs
from data import open_dataset
from tests.cli_helpers import wm

ENV_IDS = envs.list_envs()
RES = "32"  # small frames keep it fast; the model needs >= 16
TINY_PLANNER = ("--num-samples", "8", "--iterations", "1", "--num-elites", "2", "--horizon", "2")


def collect_and_train(tmp: Path, env_id: str, capsys) -> tuple[Path, Path]:
    """8 training episodes and 2 held-out ones (seed 1,000,000), default collect options;
    a checkpoint trained for 5 steps."""
    train, heldout, ckpt = tmp / "train.lance", tmp / "heldout.lance", tmp / "ckpt"
    for out, n, seed in ((train, 8, 0), (heldout, 2, 1_000_000)):
        code, _, err = wm(capsys, "collect", "--env", env_id, "--episodes", n, "--out", out, "--resolution", RES, "--seed", seed)
        assert code == 0, err
    code, _, err = wm(capsys, "train", "--data", train, "--out", ckpt, "--steps", 5, "--batch-size", 4,
                      "--device", "cpu", "--embed-dim", 32)
    assert code == 0, err
    return heldout, ckpt


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Per env: (held-out dataset, checkpoint); built lazily by `run_for`."""
    return {}


def run_for(runs: dict, env_id: str, tmp_path_factory, capsys) -> tuple[Path, Path]:
    if env_id not in runs:
        runs[env_id] = collect_and_train(tmp_path_factory.mktemp(env_id.split("/")[1]), env_id, capsys)
    return runs[env_id]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_eval_standard_protocol_on_every_env(env_id: str, runs, tmp_path_factory, tmp_path, capsys) -> None:
    heldout, ckpt = run_for(runs, env_id, tmp_path_factory, capsys)
    out = tmp_path / "eval"
    code, stdout, err = wm(capsys, "eval", "--ckpt", ckpt, "--data", heldout, "--out", out, "--episodes", 2,
                           "--offset", 25, "--budget", 50, "--device", "cpu", "--no-video", *TINY_PLANNER)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(stdout) == summary
    assert summary["env_id"] == env_id and summary["episodes"] == 2
    assert summary["protocol"]["offset"] == 25 and summary["protocol"]["budget"] == 50
    assert summary["trained_on"]["env_id"] == env_id and summary["notes"] == [] and summary["source_episodes"] == 2
    lines = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    cem = [line for line in lines if line["policy"] == "cem"]
    rnd = [line for line in lines if line["policy"] == "random"]
    assert len(cem) == len(rnd) == 2 and len(lines) == 4
    key = ("episode_id", "start_step", "start_state", "goal_state", "factors", "env_seed")
    assert [[c[k] for k in key] for c in cem] == [[r[k] for k in key] for r in rnd]  # same pairs
    assert summary["successes"] == sum(c["success"] for c in cem)
    assert summary["baseline_successes"] == sum(r["success"] for r in rnd)
    env = envs.make(env_id, resolution=int(RES)).unwrapped
    ds = open_dataset(heldout)
    success_steps = ds.success_steps()
    for line in lines:
        assert 1 <= line["steps"] <= 50 and (line["success"] or line["steps"] == 50)
        assert np.isfinite(line["final_distance"])
        # the goal is the env's goal of the recorded state 25 steps after the start, which
        # comes before the episode's first success
        states = ds.load_episode(line["episode_id"], columns=("state",))["state"]
        assert np.allclose(line["start_state"], states[line["start_step"]])
        assert np.allclose(line["goal_state"], env.goal_from_state(states[line["start_step"] + 25]))
        assert success_steps[line["episode_id"]] is not None
        assert line["start_step"] < success_steps[line["episode_id"]] or success_steps[line["episode_id"]] == -1
    # the held-out data: fixed-length episodes (the env's time limit) recorded as such
    limit = envs.make(env_id).spec.max_episode_steps
    assert [e["length"] for e in ds.episodes()] == [limit + 1] * 2
    assert ds.info()["success"]["recorded"] == 2


def test_eval_refuses_another_envs_checkpoint_by_name(runs, tmp_path_factory, tmp_path, capsys) -> None:
    _, ckpt = run_for(runs, "wm/TwoRoom-v0", tmp_path_factory, capsys)
    cube_heldout, _ = run_for(runs, "wm/Cube-v0", tmp_path_factory, capsys)  # same frame and action sizes
    code, _, err = wm(capsys, "eval", "--ckpt", ckpt, "--data", cube_heldout, "--out", tmp_path / "e", "--episodes", 1,
                      "--device", "cpu", *TINY_PLANNER)
    assert code == 2
    assert "trained on wm/TwoRoom-v0 data" in err and "wm/Cube-v0 episodes" in err
    assert "Traceback" not in err and "array(" not in err and not (tmp_path / "e" / "summary.json").exists()

    # an older checkpoint (no recorded dataset, its training data gone): compared by shapes, said so
    cfg_path = ckpt / "config.json"
    saved = cfg_path.read_text()
    try:
        cfg = json.loads(saved)
        del cfg["extra"]["dataset"]
        cfg["extra"]["train_config"]["data"] = str(tmp_path / "gone.lance")
        cfg_path.write_text(json.dumps(cfg))
        two_room_heldout, _ = run_for(runs, "wm/TwoRoom-v0", tmp_path_factory, capsys)
        code, _, err = wm(capsys, "eval", "--ckpt", ckpt, "--data", two_room_heldout, "--out", tmp_path / "old",
                          "--episodes", 1, "--device", "cpu", "--no-video", *TINY_PLANNER)
        assert code == 0, err
        assert "does not record the env it was trained on" in err
        assert json.loads((tmp_path / "old" / "summary.json").read_text())["notes"]

        # an older checkpoint whose training data is still there: its env is read from it
        cfg["extra"]["train_config"]["data"] = str(two_room_heldout.parent / "train.lance")
        cfg_path.write_text(json.dumps(cfg))
        code, _, err = wm(capsys, "eval", "--ckpt", ckpt, "--data", cube_heldout, "--out", tmp_path / "e2", "--episodes", 1,
                          "--device", "cpu", *TINY_PLANNER)
        assert code == 2 and "trained on wm/TwoRoom-v0 data" in err and "wm/Cube-v0 episodes" in err
    finally:
        cfg_path.write_text(saved)


def test_eval_refuses_more_episodes_than_distinct_pairs(runs, tmp_path_factory, tmp_path, capsys) -> None:
    heldout, ckpt = run_for(runs, "wm/Reacher-v0", tmp_path_factory, capsys)
    ds = open_dataset(heldout)
    steps = ds.success_steps()
    # a start must come before the episode's first success and 25 rows before its end
    distinct = sum(min(e["length"] - 25, steps[e["episode_id"]] if steps[e["episode_id"]] >= 0 else 10**9)
                   for e in ds.episodes())
    code, _, err = wm(capsys, "eval", "--ckpt", ckpt, "--data", heldout, "--out", tmp_path / "e",
                      "--episodes", distinct + 1, "--device", "cpu", *TINY_PLANNER)
    assert code == 2
    assert f"episodes={distinct + 1} is more than the {distinct} distinct start/goal pairs" in err
    assert f"--episodes {distinct} or fewer" in err
    # more pairs than episodes: several from one episode, which the summary says
    code, _, err = wm(capsys, "eval", "--ckpt", ckpt, "--data", heldout, "--out", tmp_path / "e2", "--episodes", 4,
                      "--budget", 5, "--device", "cpu", "--no-video", *TINY_PLANNER)
    assert code == 0, err
    summary = json.loads((tmp_path / "e2" / "summary.json").read_text())
    assert summary["source_episodes"] == len(ds.episodes()) == 2
    assert summary["notes"] == ["the 4 pairs come from only 2 episodes: pairs of one episode are not independent, "
                                "so the success interval overstates what is known"]


def test_eval_progress_lines_while_planning_off_a_terminal(monkeypatch, capsys) -> None:
    """With stderr not a terminal, a progress line comes every interval, also during one
    long planning call (here: act takes 0.4 s, the interval is 0.1 s)."""
    import time

    import worldmodel.progress
    from benchmarks.planning import run_episodes
    from benchmarks.protocol import StartGoalPair

    monkeypatch.setattr(worldmodel.progress, "LINE_INTERVAL", 0.1)
    env = envs.make("wm/TwoRoom-v0", resolution=16)
    pair = StartGoalPair(episode_id=0, start_step=0, start_state=np.array([0.2, 0.5]), goal_state=np.array([0.8, 0.5]),
                         factors={}, seed=0)

    def slow_act(obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        time.sleep(0.4)
        return np.zeros((1, 2), np.float32)

    outcomes, _ = run_episodes([env], [pair], slow_act, budget=2, progress="eval planner")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("eval planner: ")]
    assert outcomes[0].steps == 2
    assert len(lines) >= 5  # >= 3 inside the two 0.4 s calls, plus the final line
    assert lines[-1].startswith("eval planner: 2/2 (100%)") and "successes=0/1" in lines[-1]
    run_episodes([env], [pair], lambda o, g: np.zeros((1, 2), np.float32), budget=2)  # progress=None: silent
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_expert_stays_near_the_goal_after_success(env_id: str, runs, tmp_path_factory, capsys) -> None:
    """Default collection runs on past success: the (noisy) expert then stays close to the
    goal (reward = -goal_distance), far closer than where it started."""
    heldout, _ = run_for(runs, env_id, tmp_path_factory, capsys)
    ds = open_dataset(heldout.parent / "train.lance")
    first = ds.success_steps()
    assert sum(s >= 0 for s in first.values()) >= 6  # the expert succeeds on most of its 8 episodes
    for e in ds.episodes():
        s = first[e["episode_id"]]
        if s < 0:
            continue
        distance = -ds.load_episode(e["episode_id"], columns=("reward",))["reward"]
        assert s < e["length"] - 1  # rows after the first success were recorded
        assert np.median(distance[s:]) < 0.25 * distance[1]
