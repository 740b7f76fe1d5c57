"""``wm eval --batch-envs``: pairs run in chunks of at most N environments (the same N serve
every chunk); chunking changes no outcome of the random baseline, of a deterministic action
source or of the oracle (per-pair random streams); planning seconds are charged per
environment and add up to the planning time; one progress bar spans the chunks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import envs
from benchmarks.planning import (
    ActChunks,
    MPCChunks,
    PlannerConfig,
    RandomChunks,
    build_oracle,
    evaluate_planning,
    run_chunked,
    run_episodes,
)
from benchmarks.protocol import PlanningProtocol, StartGoalPair, sample_pairs

ENV_ID = "wm/TwoRoom-v0"
RES = 16
P = 5  # pairs


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    from data import collect

    path = tmp_path_factory.mktemp("chunks") / "heldout.lance"
    collect(ENV_ID, 3, path, resolution=RES, seed=1_000_000)
    return path


@pytest.fixture(scope="module")
def pairs(heldout) -> list[StartGoalPair]:
    from data import open_dataset

    return sample_pairs(open_dataset(heldout), PlanningProtocol(offset=8, episodes=P, seed=0), envs.make(ENV_ID, resolution=RES))


def pool(n: int) -> list:
    return [envs.make(ENV_ID, resolution=RES) for _ in range(n)]


def key(outcomes) -> list[tuple]:
    return [(o.success, o.steps, o.final_distance) for o in outcomes]


def steer(obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """A deterministic action source: towards the goal image's darkest-red centroid, from pixels only."""
    def centre(img: np.ndarray) -> np.ndarray:  # (B, H, W, 3) -> (B, 2) weighted by redness
        w = np.clip(img[..., 0].astype(np.float64) - img[..., 1], 0, None) + 1e-6
        ys, xs = np.mgrid[: img.shape[1], : img.shape[2]]
        return np.stack([(w * xs).sum((1, 2)) / w.sum((1, 2)), (w * ys).sum((1, 2)) / w.sum((1, 2))], axis=1)

    return np.clip(0.3 * (centre(goal) - centre(obs)), -1, 1).astype(np.float32)


def test_chunking_changes_no_outcome_of_the_baseline_a_deterministic_act_or_the_oracle(pairs) -> None:
    space = envs.make(ENV_ID).action_space
    cfg = PlannerConfig(num_samples=16, iterations=2, num_elites=4, horizon=2, seed=3)
    whole = {n: None for n in ("random", "steer", "oracle")}
    for size in (P, 2, 1):
        envs_ = pool(size)
        random_run, _ = run_chunked(envs_, pairs, RandomChunks(space, seed=7), budget=12, batch_envs=size)
        steer_run, _ = run_chunked(envs_, pairs, ActChunks(lambda idx: steer), budget=12, batch_envs=size)
        oracle = MPCChunks(build_oracle(envs_, cfg, frameskip=2), cfg.seed)
        oracle_run, _ = run_chunked(envs_, pairs, oracle, budget=12, batch_envs=size)
        got = {"random": key(random_run), "steer": key(steer_run), "oracle": key(oracle_run)}
        if size == P:
            whole = got
            assert len({o[1] for o in got["random"]}) >= 1 and any(o[0] for o in got["oracle"])  # something happens
        assert got == whole, f"chunks of {size} changed outcomes"


def test_at_most_batch_envs_environments_exist(heldout, tmp_path, monkeypatch) -> None:
    """An oracle-only ``evaluate_planning`` of 5 pairs in chunks of 2 builds 2 envs (the pair
    sampler's included), and its episodes are those of one chunk of 5."""
    from data import open_dataset

    made = []
    real_make = envs.make

    def counting_make(*args, **kwargs):
        made.append(args)
        return real_make(*args, **kwargs)

    monkeypatch.setattr(envs, "make", counting_make)
    proto = PlanningProtocol(offset=8, budget=8, episodes=P)
    cfg = PlannerConfig(num_samples=8, iterations=1, num_elites=2, horizon=2)
    lines = {}
    for size in (2, P):
        made.clear()
        out = tmp_path / f"b{size}"
        summary = evaluate_planning(None, open_dataset(heldout), out, protocol=proto, planner_cfg=cfg, video=False,
                                    oracle=True, oracle_frameskip=2, batch_envs=size)
        assert len(made) == size and summary["batch_envs"] == size
        lines[size] = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
        oracle = [line for line in lines[size] if line["policy"] == "oracle"]
        # the oracle's per-episode seconds add up to its planning time
        assert summary["oracle_plan_seconds_total"] == pytest.approx(sum(line["plan_seconds"] for line in oracle))
        assert all(line["decisions"] >= 1 for line in oracle)
    keys = ("policy", "success", "steps", "final_distance", "episode_id", "start_step")
    assert [[line[k] for k in keys] for line in lines[2]] == [[line[k] for k in keys] for line in lines[P]]
    with pytest.raises(ValueError, match="batch_envs=0: expected a positive integer"):
        evaluate_planning(None, open_dataset(heldout), tmp_path / "bad", protocol=proto, planner_cfg=cfg, video=False,
                          oracle=True, batch_envs=0)


class LengthEnv:
    """A stand-in env whose episode ends after ``seed`` steps (the pair's seed), never a success."""

    def __init__(self) -> None:
        self.unwrapped = self

    def reset(self, seed=None, options=None):
        self.left, self.t = seed, 0
        return np.zeros((2, 2, 3), np.uint8), {}

    def render_goal(self) -> np.ndarray:
        return np.zeros((2, 2, 3), np.uint8)

    def step(self, action):
        self.t += 1
        return np.zeros((2, 2, 3), np.uint8), 0.0, self.t >= self.left, False, {"goal_distance": 1.0, "success": False}


def test_plan_seconds_are_charged_per_environment(monkeypatch) -> None:
    """Every act call 'takes' 1 s (a fake clock): with episodes of 1, 2 and 4 steps the envs
    share the first call three ways, the second two ways, and the last env pays the rest
    alone; the charges add up to the 4 calls. A counter of planning calls decides what a
    decision is."""
    import benchmarks.planning as planning

    clock = [0.0]
    monkeypatch.setattr(planning, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    plans = [0]

    def act(obs, goal):
        if clock[0] % 2 == 0:  # plans on calls 0 and 2, replays its plan on 1 and 3
            plans[0] += 1
        clock[0] += 1.0
        return np.zeros((len(obs), 2), np.float32)

    pairs = [StartGoalPair(i, 0, np.zeros(2), np.zeros(2), {}, seed=n) for i, n in enumerate((1, 2, 4))]
    outcomes, _ = run_episodes([LengthEnv() for _ in pairs], pairs, act, budget=10, plans=lambda: plans[0])
    assert [o.steps for o in outcomes] == [1, 2, 4]
    assert [o.plan_seconds for o in outcomes] == pytest.approx([1 / 3, 1 / 3 + 1 / 2, 1 / 3 + 1 / 2 + 2])
    assert sum(o.plan_seconds for o in outcomes) == pytest.approx(4.0)
    assert [o.decisions for o in outcomes] == [1, 1, 2]
    # without a counter every call is a decision; in chunks of 2 the charges still add up to every call
    clock[0] = 0.0
    outcomes, _ = run_chunked([LengthEnv(), LengthEnv()], pairs, ActChunks(lambda idx: act), budget=10, batch_envs=2)
    assert [o.decisions for o in outcomes] == [1, 2, 4]
    assert [o.plan_seconds for o in outcomes] == pytest.approx([1 / 2, 1 / 2 + 1, 4])
    assert sum(o.plan_seconds for o in outcomes) == pytest.approx(clock[0]) and clock[0] == 2 + 4


def test_one_progress_bar_spans_the_chunks(pairs, capsys) -> None:
    space = envs.make(ENV_ID).action_space
    run_chunked(pool(2), pairs, RandomChunks(space, seed=0), budget=4, batch_envs=2, progress="eval random")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("eval random: ")]
    assert len(lines) == 1 and lines[0].startswith("eval random: 12/12 (100%)")  # 3 chunks of 4 steps, one bar
    assert f"/{P}" in lines[0].split("successes=")[1]


def test_a_solver_reseeded_per_pair_draws_the_same_for_a_pair_in_any_batch() -> None:
    """`Solver.reseed` with one seed per env: an env's plan is the same planned alone or beside others."""
    import torch

    import planners

    targets = torch.tensor([[[0.5, -0.2]] * 2, [[-0.7, 0.1]] * 2, [[0.2, 0.9]] * 2])  # (3, H=2, A=2)

    def cost(rows):
        t = targets[rows]
        return lambda a: ((a - t[:, None]) ** 2).sum((2, 3))

    small = {"cem": dict(num_elites=2, iterations=2), "icem": dict(num_elites=2, iterations=2),
             "mppi": dict(num_elites=2, iterations=2), "gd": dict(iterations=2, action_noise=0.05),
             "cem_gd": dict(num_elites=2, iterations=2, num_refine=2, gd_iterations=2), "random_shooting": {}}
    assert set(small) == set(planners.available())
    for name in planners.available():
        solver = planners.get(name, horizon=2, action_dim=2, low=-1.0, high=1.0, num_samples=8, **small[name])
        solver.reseed([11, 12, 13])
        together = solver.plan(cost([0, 1, 2]), 3).actions
        for b, seed in enumerate((11, 12, 13)):
            solver.reseed([seed])
            alone = solver.plan(cost([b]), 1).actions
            assert torch.equal(alone[0], together[b]), name
        with pytest.raises(ValueError, match="expected 1 rows, one per environment"):
            solver.plan(cost([0, 1]), 2)
        solver.reseed(5)  # one stream again: as a solver built with seed 5
        fresh = planners.get(name, horizon=2, action_dim=2, low=-1.0, high=1.0, num_samples=8, seed=5, **small[name])
        assert torch.equal(solver.plan(cost([0, 1, 2]), 3).actions, fresh.plan(cost([0, 1, 2]), 3).actions), name


def test_wm_eval_batch_envs(heldout, tmp_path, capsys) -> None:
    """``wm eval --batch-envs``: the summary's per-episode seconds add up to ``plan_seconds_total``,
    every episode records its decisions, and an untrained model's plans are the same in
    chunks of 2 as in one chunk (per-pair solver streams; on this CPU the batched float
    arithmetic does not differ either); 0 is a one-line error."""
    import torch

    from worldmodel.checkpoint import save_checkpoint
    from worldmodel.cli import main
    from worldmodel.config import ModelConfig
    from worldmodel.model import JEPA

    torch.manual_seed(0)
    model = JEPA(ModelConfig(image_size=RES, action_dim=2, frameskip=2, embed_dim=16, encoder_width=8,
                             projector_hidden=16, predictor_width=16, predictor_depth=1, predictor_heads=2))
    save_checkpoint(tmp_path / "ckpt", model)
    args = ["eval", "--ckpt", str(tmp_path / "ckpt"), "--data", str(heldout), "--episodes", str(P), "--offset", "8",
            "--budget", "6", "--device", "cpu", "--no-video", "--num-samples", "8", "--iterations", "2",
            "--num-elites", "2", "--horizon", "2"]
    lines = {}
    for size in (2, P):
        out = tmp_path / f"e{size}"
        assert main([*args, "--out", str(out), "--batch-envs", str(size)]) == 0, capsys.readouterr().err
        summary = json.loads((out / "summary.json").read_text())
        lines[size] = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
        cem = [line for line in lines[size] if line["policy"] == "cem"]
        assert summary["batch_envs"] == size and summary["decisions"] >= 3  # 2 chunks or more decisions each
        assert summary["plan_seconds_total"] == pytest.approx(sum(line["plan_seconds"] for line in cem))
        assert summary["plan_seconds_per_episode"] == pytest.approx(summary["plan_seconds_total"] / P)
        assert all(line["decisions"] >= 1 for line in cem) and summary["seconds_per_decision"] > 0
    keys = ("policy", "success", "steps", "final_distance", "episode_id", "start_step", "decisions")
    assert [[line[k] for k in keys] for line in lines[2]] == [[line[k] for k in keys] for line in lines[P]]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bad"), "--batch-envs", "0"]) == 2
    assert "--batch-envs=0: expected a positive integer" in capsys.readouterr().err
