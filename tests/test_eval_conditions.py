"""``wm eval --env ID --split/--severity/--factor/--goal-source``: start/goal pairs collected for a
condition, factors restored exactly, reuse of the pairs, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import envs
from benchmarks.conditions import EVAL_SEED_BASE, EvalCondition, collect_condition_pairs, pair_episodes
from data import open_dataset
from envs.factors import FactorOutOfRange, UnknownFactorError, UnknownSplitError, parse_factor_args
from tests.cli_helpers import wm

ENV = "wm/TwoRoom-v0"
TINY = ("--num-samples", "8", "--iterations", "1", "--num-elites", "2", "--horizon", "2", "--no-video")


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]


def test_split_severity_and_factor_are_the_factors_every_episode_runs_with(tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    code, stdout, err = wm(capsys, "eval", "--oracle-only", "--env", ENV, "--split", "ood_visual", "--severity", 2,
                           "--factor", "door_width=0.3", "--factor", "agent_speed=0.045", "--out", out,
                           "--episodes", 3, "--budget", 10, "--resolution", 32, *TINY)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["condition"] == {
        "split": "ood_visual", "severity": 2, "factors": {"door_width": 0.3, "agent_speed": 0.045},
        "goal_source": "expert", "ood_factors": [], "label": "ood_visual@2+door_width=0.3+agent_speed=0.045",
    }
    space = envs.factor_space(ENV)
    ds = open_dataset(out / "pairs.lance")
    eps = {e["episode_id"]: e for e in ds.episodes()}
    assert len(eps) == pair_episodes(3)
    assert sorted(e["seed"] for e in eps.values()) == list(range(EVAL_SEED_BASE, EVAL_SEED_BASE + pair_episodes(3)))
    assert {e["policy"] for e in eps.values()} == {"expert"}
    rows = lines(out)
    assert {r["policy"] for r in rows} == {"oracle", "random"} and len(rows) == 6
    env = envs.make(ENV, resolution=32)
    for row in rows:
        f = row["factors"]
        assert f["door_width"] == 0.3 and f["agent_speed"] == 0.045  # fixed, exactly
        for name in ("agent_color", "background_color", "wall_color"):  # visual: drawn from the severity-2 slice
            assert space[name].is_ood(f[name])
            assert any(space[name]._in_box(f[name], space[name].severity_box(box, 2)) for box in space[name].ood)
        assert not space["door_position"].is_ood(f["door_position"])  # the others from the train split
        # the pair's factors are the episode's recorded ones, and a reset with them runs exactly them
        recorded = {k: list(v) if isinstance(v, tuple) else v for k, v in eps[row["episode_id"]]["factors"].items()}
        assert f == recorded
        _, info = env.reset(seed=row["env_seed"], options={"factors": f, "state": np.asarray(row["start_state"]),
                                                           "goal_state": np.asarray(row["goal_state"])})
        assert {k: list(v) if isinstance(v, tuple) else v for k, v in info["factors"].items()} == f


def test_goal_source_random_draws_pairs_from_random_episodes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    code, _, err = wm(capsys, "eval", "--oracle-only", "--env", ENV, "--goal-source", "random", "--out", out,
                      "--episodes", 2, "--budget", 5, "--resolution", 32, *TINY)
    assert code == 0, err
    assert {e["policy"] for e in open_dataset(out / "pairs.lance").episodes()} == {"random"}
    assert json.loads((out / "summary.json").read_text())["condition"]["label"] == "goal_source:random"
    assert {r["factors"]["door_width"] for r in lines(out)} == {envs.factor_space(ENV)["door_width"].default}


def test_pairs_are_reused_and_never_mixed_with_another_condition(tmp_path: Path) -> None:
    out = tmp_path / "pairs.lance"
    cond = EvalCondition(split="ood_geometry", severity=1)
    ds = collect_condition_pairs(ENV, cond, out, 2, 16)
    first = [e["factors"] for e in ds.episodes()]
    again = collect_condition_pairs(ENV, cond, out, 2, 16)  # reused as it is
    assert [e["factors"] for e in again.episodes()] == first
    with pytest.raises(ValueError, match="not collected for condition 'ood_geometry@2'"):
        collect_condition_pairs(ENV, EvalCondition(split="ood_geometry", severity=2), out, 2, 16)
    assert [e["factors"] for e in open_dataset(out).episodes()] == first  # nothing damaged
    # asked for more episodes: grown by the missing ones, seeds continuing, the first ones untouched,
    # the same episodes as collecting them all at once
    grown = collect_condition_pairs(ENV, cond, out, 2, 16, collect_episodes=len(first) + 2)
    eps = sorted(grown.episodes(), key=lambda e: e["seed"])
    assert [e["seed"] for e in eps] == list(range(EVAL_SEED_BASE, EVAL_SEED_BASE + len(first) + 2))
    assert [e["factors"] for e in eps[:len(first)]] == first
    at_once = collect_condition_pairs(ENV, cond, tmp_path / "at_once.lance", 2, 16, collect_episodes=len(first) + 2)
    assert [e["factors"] for e in sorted(at_once.episodes(), key=lambda e: e["seed"])] == [e["factors"] for e in eps]
    assert np.array_equal(grown.load_episode(eps[-1]["episode_id"], columns=("state",))["state"],
                          at_once.load_episode(max(e["episode_id"] for e in at_once.episodes()),
                                               columns=("state",))["state"])


def test_a_condition_whose_episodes_give_too_few_pairs_collects_more_of_them(tmp_path: Path) -> None:
    """Random-action Cube episodes whose cube never moves gave 21 of 30 pairs: the episodes are
    doubled (seeds continuing) until the pairs suffice, up to MAX_PAIR_EPISODE_FACTOR times as many."""
    from benchmarks.conditions import MAX_PAIR_EPISODE_FACTOR, plan_on_condition
    from benchmarks.protocol import TooFewPairsError

    seen: list[int] = []

    def needs(k: int):
        def evaluate(dataset) -> dict:
            seen.append(len(dataset.episodes()))
            if seen[-1] < k:
                raise TooFewPairsError(f"could only draw 1 of 2 start/goal pairs from {len(dataset.episodes())}")
            return {"episodes": 2}
        return evaluate

    cond, logged = EvalCondition(goal_source="random"), []
    first = pair_episodes(2)
    assert plan_on_condition(needs(2 * first + 1), ENV, cond, tmp_path / "p.lance", 2, 16, log=logged.append) == {
        "episodes": 2}
    assert seen == [first, 2 * first, 4 * first]
    assert sum("growing its episodes to" in line for line in logged) == 2
    eps = open_dataset(tmp_path / "p.lance").episodes()
    assert sorted(e["seed"] for e in eps) == list(range(EVAL_SEED_BASE, EVAL_SEED_BASE + 4 * first))
    seen.clear()  # enough already: reused, nothing collected
    assert plan_on_condition(needs(0), ENV, cond, tmp_path / "p.lance", 2, 16) == {"episodes": 2}
    assert seen == [4 * first]
    seen.clear()  # never enough: up to the cap, then the error says how many episodes were tried
    with pytest.raises(TooFewPairsError, match=f"from {MAX_PAIR_EPISODE_FACTOR * first} episodes"):
        plan_on_condition(needs(10 ** 6), ENV, cond, tmp_path / "p.lance", 2, 16)
    assert seen == [4 * first, MAX_PAIR_EPISODE_FACTOR * first]


def test_bad_conditions_are_refused_by_name(tmp_path: Path, capsys) -> None:
    space = envs.factor_space(ENV)
    with pytest.raises(UnknownFactorError, match="did you mean 'door_width'"):
        parse_factor_args(space, ["door_widht=0.3"])
    with pytest.raises(FactorOutOfRange, match=r"door_width=2 outside its ranges"):
        parse_factor_args(space, ["door_width=2"])
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        parse_factor_args(space, ["door_width"])
    with pytest.raises(ValueError, match="numbers separated by commas"):
        parse_factor_args(space, ["agent_color=red"])
    with pytest.raises(FactorOutOfRange, match="3 components"):
        parse_factor_args(space, ["agent_color=0.1,0.9"])
    with pytest.raises(UnknownSplitError, match="did you mean 'ood_visual'"):
        EvalCondition(split="ood_visal").check(ENV)
    with pytest.raises(ValueError, match="severity=4"):
        EvalCondition(split="ood", severity=4).check(ENV)
    with pytest.raises(ValueError, match="needs an OOD split"):
        EvalCondition(severity=1).check(ENV)
    cases = [
        (("--env", ENV, "--split", "ood_visal"), "did you mean 'ood_visual'"),
        (("--env", ENV, "--factor", "door_width=0.5"), "door_width=0.5 outside its ranges"),
        (("--env", "wm/TwoRom-v0"), "did you mean 'wm/TwoRoom-v0'"),
        (("--env", ENV, "--data", tmp_path / "x.lance"), "either --data"),
        (("--data", tmp_path / "x.lance", "--split", "train"), "--split only apply to --env"),
        ((), "needs --data PATH"),
    ]
    for args, message in cases:
        code, _, err = wm(capsys, "eval", "--oracle-only", "--out", tmp_path / "e", *args)
        assert code == 2 and message in err, (args, err)
        assert "Traceback" not in err
    assert not (tmp_path / "e").exists()  # refused before any work


def test_ood_factor_shifts_one_factor_and_keeps_the_others(tmp_path: Path) -> None:
    space = envs.factor_space(ENV)
    ds = collect_condition_pairs(ENV, EvalCondition(severity=3, ood_factors=("door_width",)), tmp_path / "p.lance", 4, 16)
    for ep in ds.episodes():
        f = ep["factors"]
        assert any(space["door_width"]._in_box(f["door_width"], space["door_width"].severity_box(b, 3))
                   for b in space["door_width"].ood)
        assert {k: v for k, v in f.items() if k != "door_width"} == {
            k: v for k, v in space.defaults().items() if k != "door_width"}
    assert len({ep["factors"]["door_width"] for ep in ds.episodes()}) > 1  # drawn per episode
    assert EvalCondition(severity=3, ood_factors=("door_width",)).label() == "factor:door_width@3"
    on_train = EvalCondition(split="train", severity=1, ood_factors=("agent_speed",)).check(ENV)
    assert on_train.label() == "train+factor:agent_speed@1"
    with pytest.raises(UnknownFactorError, match="did you mean 'door_width'"):
        EvalCondition(severity=1, ood_factors=("door_widht",)).check(ENV)
    with pytest.raises(ValueError, match="not also fixed"):
        EvalCondition(severity=1, ood_factors=("door_width",), factors={"door_width": 0.2}).check(ENV)
    # the env's own reset option, reproducible from the seed
    env = envs.make(ENV, resolution=16)
    a = env.reset(seed=5, options={"ood_factors": ["agent_speed"], "severity": 2})[1]["factors"]
    b = env.reset(seed=5, options={"ood_factors": ["agent_speed"], "severity": 2})[1]["factors"]
    assert a == b and space["agent_speed"].is_ood(a["agent_speed"])


def test_an_interrupted_collection_of_pairs_is_collected_again(tmp_path: Path, monkeypatch) -> None:
    import data as data_pkg

    out = tmp_path / "pairs.lance"
    real = data_pkg.collect

    def dies(env_id, episodes, path, **kwargs):
        real(env_id, 1, path, **kwargs)  # one episode written, then the crash
        raise KeyboardInterrupt

    monkeypatch.setattr(data_pkg, "collect", dies)
    with pytest.raises(KeyboardInterrupt):
        collect_condition_pairs(ENV, EvalCondition(), out, 2, 16)
    monkeypatch.setattr(data_pkg, "collect", real)
    ds = collect_condition_pairs(ENV, EvalCondition(), out, 2, 16)  # started again, not refused
    assert len(ds.episodes()) == pair_episodes(2)
    # a dataset there that this function did not start is still refused
    other = tmp_path / "other.lance"
    real(ENV, 1, other, resolution=16)
    with pytest.raises(ValueError, match="not collected for condition"):
        collect_condition_pairs(ENV, EvalCondition(), other, 2, 16)
    assert len(__import__("data").open_dataset(other).episodes()) == 1


def test_pair_seed_moves_the_condition_episodes_apart_and_is_refused_where_it_means_nothing(
        tmp_path: Path, capsys) -> None:
    """--pair-seed S: the condition's episodes use seeds S.. (pairs disjoint from ones a recipe was
    chosen on); with --data, or negative, it is refused by name before any work."""
    out = tmp_path / "eval"
    code, stdout, err = wm(capsys, "eval", "--oracle-only", "--env", ENV, "--pair-seed", 3_000_000, "--out", out,
                           "--episodes", 2, "--budget", 5, "--resolution", 16, *TINY)
    assert code == 0, err
    seeds = sorted(e["seed"] for e in open_dataset(out / "pairs.lance").episodes())
    assert seeds == list(range(3_000_000, 3_000_000 + pair_episodes(2)))
    assert {r["env_seed"] for r in lines(out)} <= set(seeds)
    # the same folder asked for the default seeds: refused, its episodes untouched
    code, _, err = wm(capsys, "eval", "--oracle-only", "--env", ENV, "--out", out, "--episodes", 2, "--budget", 5,
                      "--resolution", 16, *TINY)
    assert code == 2 and f"seeds {EVAL_SEED_BASE}.." in err
    assert sorted(e["seed"] for e in open_dataset(out / "pairs.lance").episodes()) == seeds
    for args, message in [(("--env", ENV, "--pair-seed", -1), "pair seed -1: expected a non-negative integer"),
                          (("--data", tmp_path / "x.lance", "--pair-seed", 5), "--pair-seed only apply to --env")]:
        code, _, err = wm(capsys, "eval", "--oracle-only", "--out", tmp_path / "e", "--episodes", 2, *args, *TINY)
        assert code == 2 and message in err, (args, err)
    assert not (tmp_path / "e").exists()
