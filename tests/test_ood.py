"""``wm ood``: the conditions of the suite, its result lines, report and heatmap, reuse of
finished conditions, and the in-distribution condition read from the training data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import wm

import envs
from benchmarks.conditions import EvalCondition
from benchmarks.ood import (OODConfig, add_retained, id_condition_of, report_markdown, retained_grid, suite_conditions,
                            swept_factors)
from benchmarks.stats import ratio_interval, wilson_interval
from data import open_dataset
from worldmodel.cli import main

ENV = "wm/TwoRoom-v0"
TINY = ("--num-samples", "8", "--iterations", "1", "--num-elites", "2", "--horizon", "2")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """Two tiny TwoRoom checkpoints: trained on default factors and on the train split."""
    tmp = tmp_path_factory.mktemp("ood")
    out = {}
    for name, split in (("default", ()), ("randomised", ("--split", "train"))):
        data, ckpt = tmp / f"{name}.lance", tmp / f"{name}_ckpt"
        assert main(["collect", "--env", ENV, "--episodes", "6", "--out", str(data), "--resolution", "16", *split]) == 0
        assert main(["train", "--data", str(data), "--out", str(ckpt), "--steps", "3", "--batch-size", "4",
                     "--device", "cpu", "--embed-dim", "16", "--no-progress"]) == 0
        out[name] = ckpt
    return out


def test_suite_conditions_cover_splits_severities_factors_and_goal_source() -> None:
    cfg = OODConfig(severities=(1, 3), splits=("ood_visual", "ood_all"))
    conds = suite_conditions(ENV, cfg, EvalCondition())
    names = [c.name for c in conds]
    factors = envs.factor_space(ENV).names
    assert names == (["id", "train", "ood_visual@1", "ood_visual@3", "ood_all@1", "ood_all@3"]
                     + [f"factor:{f}@{k}" for f in factors for k in (1, 3)] + ["goal_source:random"])
    by = {c.name: c for c in conds}
    assert by["factor:door_width@3"].condition == EvalCondition(severity=3, ood_factors=("door_width",))
    assert by["goal_source:random"].condition.goal_source == "random"
    # a factor-randomised model: id is the train split, factor shifts keep the others on it
    conds = suite_conditions(ENV, cfg, EvalCondition(split="train"))
    assert [c.name for c in conds][:2] == ["id", "ood_visual@1"]
    assert {c.condition.split for c in conds if c.kind == "factor"} == {"train"}
    with pytest.raises(ValueError, match="severity=4"):
        OODConfig(severities=(4,))
    with pytest.raises(ValueError, match="split 'train'"):
        OODConfig(splits=("train",))


def test_id_condition_is_read_from_the_training_data(ckpts: dict[str, Path], tmp_path: Path) -> None:
    from benchmarks.planning import checkpoint_data

    assert id_condition_of(checkpoint_data(ckpts["default"])) == (EvalCondition(), "default")
    assert id_condition_of(checkpoint_data(ckpts["randomised"])) == (EvalCondition(split="train"), "randomised")
    assert id_condition_of({"path": str(tmp_path / "gone")}, "train") == (EvalCondition(split="train"), "randomised")
    with pytest.raises(ValueError, match="pass --id-split"):
        id_condition_of({"path": str(tmp_path / "gone")})


def test_id_condition_is_found_from_another_working_directory(tmp_path: Path, monkeypatch) -> None:
    """A checkpoint trained with a relative --data path: its episode record's absolute path is read."""
    from benchmarks.planning import checkpoint_data

    monkeypatch.chdir(tmp_path)
    assert main(["collect", "--env", ENV, "--episodes", "3", "--out", "rel.lance", "--resolution", "16",
                 "--split", "train"]) == 0
    assert main(["train", "--data", "rel.lance", "--out", "ckpt", "--steps", "1", "--batch-size", "2",
                 "--device", "cpu", "--embed-dim", "16", "--no-progress"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    trained_on = checkpoint_data(tmp_path / "ckpt")
    assert trained_on["path"] == "rel.lance"
    assert id_condition_of(trained_on) == (EvalCondition(split="train"), "randomised")
    (tmp_path / "rel.lance").rename(tmp_path / "moved.lance")  # gone from both paths: the advice stands
    with pytest.raises(ValueError, match="pass --id-split"):
        id_condition_of(trained_on)


def test_sweep_factors_choose_the_swept_factors_by_name_or_kind() -> None:
    space = envs.factor_space(ENV)
    visual = [f.name for f in space if f.kind == "visual"]
    assert visual and len(visual) < len(space.names)
    assert swept_factors(ENV) == list(space.names)
    assert swept_factors(ENV, ("visual",)) == visual
    # names and kinds together, in the space's order, each once
    assert swept_factors(ENV, ("door_width", "physics", "door_width")) == ["door_width", "agent_speed"]
    cfg = OODConfig(severities=(2,), splits=(), sweep_factors=("geometric",))
    names = [c.name for c in suite_conditions(ENV, cfg, EvalCondition())]
    assert names == ["id", "train", "factor:door_position@2", "factor:door_width@2", "goal_source:random"]
    with pytest.raises(ValueError, match="'door_wdth'.*did you mean 'door_width'"):
        swept_factors(ENV, ("door_wdth",))


def test_wm_ood_sweeps_only_the_named_factors_and_refuses_unknown_ones(ckpts, tmp_path: Path, capsys) -> None:
    base = ("ood", "--ckpt", ckpts["randomised"], "--env", ENV, "--episodes", 2, "--severities", 1, "--splits",
            "--no-goal-source", "--budget", 5, "--device", "cpu", *TINY)
    code, stdout, err = wm(capsys, *base, "--out", tmp_path / "ood", "--sweep-factors", "agent_speed")
    assert code == 0, err
    # the train line repeats id (the train split is this checkpoint's id); no split conditions
    assert [r["condition"] for r in json.loads(stdout)] == ["id", "train", "factor:agent_speed@1"]
    code, _, err = wm(capsys, *base, "--out", tmp_path / "bad", "--sweep-factors", "colour")
    assert code == 2 and "--sweep-factors 'colour'" in err and "visual" in err and not (tmp_path / "bad").exists()
    code, _, err = wm(capsys, *base, "--out", tmp_path / "off", "--sweep-factors", "visual", "--no-factor-sweeps")
    assert code == 2 and "--no-factor-sweeps" in err and not (tmp_path / "off").exists()


def test_wm_ood_writes_results_report_and_heatmap_and_reuses_finished_conditions(
        ckpts: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "ood"
    args = ("ood", "--ckpt", ckpts["default"], "--env", ENV, "--out", out, "--episodes", 2, "--severities", 1, 2,
            "--splits", "ood_geometry", "--budget", 5, "--device", "cpu", *TINY)
    code, stdout, err = wm(capsys, *args)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rows == json.loads(stdout)
    factors = envs.factor_space(ENV).names
    assert [r["condition"] for r in rows] == (["id", "train", "ood_geometry@1", "ood_geometry@2"]
                                             + [f"factor:{f}@{k}" for f in factors for k in (1, 2)]
                                             + ["goal_source:random"])
    for r in rows:
        summary = json.loads((out / "conditions" / r["condition"].replace(":", "_") / "summary.json").read_text())
        assert r["successes"] == summary["successes"] and r["episodes"] == 2
        assert r["success_rate"] == summary["success_rate"] and r["training"] == "default"
        assert r["baseline_success_rate"] == summary["baseline_success_rate"]
        assert summary["condition"]["label"] == r["condition_label"]
        id_rate = rows[0]["success_rate"]
        assert r["retained"] == (r["success_rate"] / id_rate if id_rate else None)
        ci = None if r is rows[0] else ratio_interval(r["successes"], 2, rows[0]["successes"], 2)
        assert r["retained_ci95"] == (None if ci is None else list(ci))
    # every factor condition ran with that factor OOD and the others at their defaults
    space = envs.factor_space(ENV)
    for line in (out / "conditions" / "factor_door_width@2" / "episodes.jsonl").read_text().splitlines():
        f = json.loads(line)["factors"]
        assert space["door_width"].is_ood(f["door_width"]) and f["door_position"] == space["door_position"].default
    report = (out / "report.md").read_text()
    assert "| factor:door_width@2 |" in report and "heatmap.png" in report
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, _, err = wm(capsys, *args)  # again: every condition reused, nothing planned
    assert code == 0 and err.count("reused") == len(rows) and "collecting" not in err


def test_randomised_checkpoint_runs_with_the_train_split_in_distribution(ckpts, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ood"
    code, _, err = wm(capsys, "ood", "--ckpt", ckpts["randomised"], "--env", ENV, "--out", out, "--episodes", 2,
                      "--severities", 1, "--splits", "ood_physics", "--no-factor-sweeps", "--no-goal-source",
                      "--budget", 5, "--device", "cpu", *TINY)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["condition"] for r in rows] == ["id", "train", "ood_physics@1"]
    assert rows[0]["training"] == "randomised" and rows[0]["condition_label"] == "train"
    code, _, err = wm(capsys, "ood", "--ckpt", ckpts["randomised"], "--env", "wm/PushT-v0", "--out", tmp_path / "x",
                      "--episodes", 2, "--device", "cpu")
    assert code == 2 and "trained on wm/TwoRoom-v0 data, not wm/PushT-v0" in err


def test_pair_seed_draws_every_condition_from_other_episodes_and_training_seeds_stay_refused(
        ckpts, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ood"
    base = ("ood", "--ckpt", ckpts["default"], "--env", ENV, "--episodes", 2, "--severities", 1, "--splits",
            "ood_physics", "--no-factor-sweeps", "--no-goal-source", "--budget", 5, "--device", "cpu", *TINY)
    code, _, err = wm(capsys, *base, "--out", out, "--pair-seed", 3_000_000)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["condition"] for r in rows] == ["id", "train", "ood_physics@1"]
    assert {r["pair_seed"] for r in rows} == {3_000_000}
    for name in ("id", "train", "ood_physics@1"):  # the same seeds in every condition, from 3,000,000 on
        seeds = sorted(e["seed"] for e in open_dataset(out / "conditions" / name / "pairs.lance").episodes())
        assert seeds[0] == 3_000_000 and seeds == list(range(3_000_000, 3_000_000 + len(seeds)))
    assert "episodes of seeds 3,000,000.." in (out / "report.md").read_text()
    code, _, err = wm(capsys, *base, "--out", out, "--pair-seed", 3_000_000)  # again: reused
    assert code == 0 and err.count("reused") == 3
    # the seeds the checkpoint trained on (0..5): its own episodes, refused by name
    code, _, err = wm(capsys, *base, "--out", tmp_path / "leak", "--pair-seed", 0)
    assert code == 2 and "trained or validated on" in err and "--allow-train-episodes" in err
    code, _, err = wm(capsys, *base, "--out", tmp_path / "neg", "--pair-seed", -5)
    assert code == 2 and "pair seed -5" in err and not (tmp_path / "neg").exists()


def test_retained_and_its_interval_against_the_id_line() -> None:
    rows = [{"condition": "id", "successes": 37, "episodes": 50, "success_rate": 0.74},
            {"condition": "ood_all@1", "successes": 27, "episodes": 50, "success_rate": 0.54},
            {"condition": "ood_visual@1", "successes": 0, "episodes": 50, "success_rate": 0.0}]
    add_retained(rows)
    assert [r["retained"] for r in rows] == [1.0, 0.54 / 0.74, 0.0]
    assert rows[0]["retained_ci95"] is None  # the reference itself
    assert rows[1]["retained_ci95"] == list(ratio_interval(27, 50, 37, 50))
    assert rows[1]["retained_ci95"][0] < 0.54 / 0.74 < rows[1]["retained_ci95"][1]
    assert rows[2]["retained_ci95"][0] == 0.0 and rows[2]["retained_ci95"][1] > 0
    none = [{**rows[0], "successes": 0, "success_rate": 0.0}, dict(rows[1])]
    add_retained(none)  # no ID success: nothing to retain
    assert none[1]["retained"] is None and none[1]["retained_ci95"] is None


def test_retained_grid_and_report_from_result_lines() -> None:
    base = {"env_id": ENV, "ckpt": "c", "training": "default", "episodes": 10, "success_ci95": [0.1, 0.9],
            "baseline_success_rate": 0.0, "oracle_success_rate": None, "seconds_per_decision": 1.0}
    rows = [
        {**base, "condition": "id", "kind": "id", "split": None, "severity": None, "factor": None, "successes": 8,
         "success_rate": 0.8, "retained": 1.0},
        {**base, "condition": "ood_visual@1", "kind": "split", "split": "ood_visual", "severity": 1, "factor": None,
         "successes": 4, "success_rate": 0.4, "retained": 0.5},
        {**base, "condition": "factor:door_width@2", "kind": "factor", "split": None, "severity": 2,
         "factor": "door_width", "successes": 2, "success_rate": 0.2, "retained": 0.25},
    ]
    names, sevs, grid = retained_grid(rows)
    assert names == ["ood_visual", "door_width"] and sevs == [1, 2]
    assert grid[0][0] == 0.5 and grid[1][1] == 0.25 and grid[0][1] != grid[0][1]  # NaN where not run
    md = report_markdown(rows)
    assert "| ood_visual@1 | 4/10 | 10%–90% | 0% | n/a | 0.50 | 1.00 |" in md
    rows[1]["retained_ci95"] = [0.2, 1.01]
    assert "| ood_visual@1 | 4/10 | 10%–90% | 0% | n/a | 0.50 [0.20–1.01] | 1.00 |" in report_markdown(rows)


def test_a_condition_with_too_few_pairs_is_skipped_with_its_reason_and_the_others_still_run(
        ckpts, tmp_path: Path, capsys, monkeypatch) -> None:
    """Random-action Cube episodes whose cube never moves gave 21 of 30 pairs: that condition collects
    more episodes, and with still too few pairs is reported as not evaluated, the suite's other conditions are kept; an ``id`` condition with too
    few pairs still fails (every other condition is measured against it)."""
    import benchmarks.planning as planning
    from benchmarks.protocol import TooFewPairsError

    real = planning.evaluate_planning
    short = {"goal_source": "could only draw 1 of 2 start/goal pairs from X: 5 of its 6 distinct pairs start already "
                            "within the success radius; pass --episodes 1 or fewer"}

    def fake(model, pairs, folder, **kw):
        cond = kw["condition"]
        if cond.get("goal_source") == "random" or (short.get("id") and cond.get("split") is None):
            raise TooFewPairsError(short["goal_source"])
        return real(model, pairs, folder, **kw)

    monkeypatch.setattr(planning, "evaluate_planning", fake)
    out = tmp_path / "ood"
    args = ("ood", "--ckpt", ckpts["default"], "--env", ENV, "--out", out, "--episodes", 2, "--severities", 1,
            "--splits", "ood_physics", "--no-factor-sweeps", "--budget", 5, "--device", "cpu", *TINY)
    code, _, err = wm(capsys, *args)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["condition"] for r in rows] == ["id", "train", "ood_physics@1"]
    assert "goal_source:random: skipped: could only draw 1 of 2" in err
    # more random episodes were collected first, up to 8x the pair_episodes(2) = 4 of the others
    assert "growing its episodes to 32" in err and "(from 32 episodes of condition 'goal_source:random'" in err
    assert len(open_dataset(out / "conditions" / "goal_source_random" / "pairs.lance").episodes()) == 32
    report = (out / "report.md").read_text()
    assert "Not in this table" in report and "- goal_source:random: not evaluated: could only draw 1 of 2" in report

    short["id"] = True
    code, _, err = wm(capsys, *args[:6], tmp_path / "ood_id", *args[7:])
    assert code == 2 and "could only draw 1 of 2" in err


def _suite_lines(ckpt: str, counts: dict[str, int], episodes: int = 50, training: str = "randomised",
                 pair_seed: int = 4_000_000, env_id: str = ENV) -> list[dict]:
    """`wm ood` result lines of one checkpoint (its keys), successes per condition from `counts` (id first)."""
    kinds = {"id": ("id", "train", None), "train": ("split", "train", None), "ood_all@1": ("split", "ood_all", 1),
             "ood_visual@1": ("split", "ood_visual", 1), "goal_source:random": ("goal_source", None, None)}
    rows = []
    for name, k in counts.items():
        kind, split, sev = kinds[name]
        rows.append({"env_id": env_id, "ckpt": ckpt, "training": training, "condition": name, "kind": kind,
                     "split": split, "severity": sev, "factor": None, "episodes": episodes, "successes": k,
                     "success_rate": k / episodes, "success_ci95": [0.0, 1.0], "baseline_success_rate": 0.1,
                     "oracle_success_rate": None, "retained": None, "seconds_per_decision": 2.0,
                     "pair_seed": pair_seed})
    return rows


def _write_suite(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_wm_ood_pool_sums_the_seeds_runs_and_refuses_runs_that_do_not_pool(tmp_path: Path, capsys) -> None:
    a = _write_suite(tmp_path / "s0", _suite_lines("ck/seed0", {"id": 37, "train": 37, "ood_visual@1": 35,
                                                                 "ood_all@1": 27, "goal_source:random": 47}))
    b = _write_suite(tmp_path / "s1", _suite_lines("ck/seed1", {"id": 38, "train": 38, "ood_visual@1": 33,
                                                                 "ood_all@1": 28}))
    out = tmp_path / "pool"
    code, stdout, err = wm(capsys, "ood-pool", a, b, "--out", out)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rows == json.loads(stdout)
    by = {r["condition"]: r for r in rows}
    assert list(by) == ["id", "train", "ood_visual@1", "ood_all@1"]  # goal_source: only in seed 0's run
    assert "goal_source:random: not in every pooled run" in (out / "report.md").read_text()
    assert "goal_source:random" in err
    assert (by["ood_all@1"]["successes"], by["ood_all@1"]["episodes"], by["ood_all@1"]["run_successes"]) == (55, 100, [27, 28])
    assert by["ood_all@1"]["retained"] == pytest.approx(55 / 75)
    assert by["ood_all@1"]["retained_ci95"] == list(ratio_interval(55, 100, 75, 100))
    assert by["ood_all@1"]["success_ci95"] == list(wilson_interval(55, 100))
    assert by["id"]["retained_ci95"] is None and by["train"]["retained_ci95"] is None  # train repeats a train-split id
    assert by["id"]["baseline_success_rate"] == pytest.approx(0.1) and by["id"]["ckpt"] == ["ck/seed0", "ck/seed1"]
    report = (out / "report.md").read_text()
    assert "2 runs pooled" in report and "| ood_all@1 | 55/100 |" in report
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def refused(*folders: Path) -> str:
        code, _, err = wm(capsys, "ood-pool", *folders, "--out", tmp_path / "x")
        assert code == 2 and not (tmp_path / "x").exists()
        return err

    assert "two or more wm ood folders, got 1" in refused(a)
    assert "given twice" in refused(a, tmp_path / "s0" / ".." / "s0")
    same = _write_suite(tmp_path / "again", _suite_lines("ck/seed0", {"id": 30}))
    assert "are runs of one checkpoint (ck/seed0)" in refused(a, same)
    other = _write_suite(tmp_path / "pairs", _suite_lines("ck/seed2", {"id": 30}, pair_seed=2_000_000))
    assert "differ in pair_seed" in refused(a, other) and "4000000" in refused(a, other)
    label = _write_suite(tmp_path / "label", _suite_lines("ck/seed3", {"id": 30}, training="default"))
    assert "differ in training" in refused(a, label)
    assert "no results.jsonl" in refused(a, tmp_path / "nowhere")
    bad = _write_suite(tmp_path / "bad", [{"condition": "id"}])
    assert f"{bad / 'results.jsonl'} line 1: missing" in refused(a, bad)
    code, _, err = wm(capsys, "ood-pool", a, b, "--out", a)
    assert code == 2 and "is one of the pooled folders" in err
