"""``wm bench noisy``: the noisy-feature experiment's runner on a tiny budget (files, rows,
controlled data conditions, reuse) and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.noisy_features import condition_recipe, markdown_report, run_noisy
from benchmarks.recipes import Recipe, get_recipe
from tests.cli_helpers import tiny_recipe, wm


def tiny(env_id: str = "wm/TwoRoom-v0") -> Recipe:
    return tiny_recipe(env_id, expert=3, random=1)


def test_bench_noisy_writes_results_and_a_table_per_family_and_condition(tmp_path: Path, capsys) -> None:
    from data import open_dataset

    path = tiny().save(tmp_path / "tiny.json")
    out = tmp_path / "noisy"
    args = ("bench", "noisy", "--env", "wm/TwoRoom-v0", "--out", out, "--models", "lewm", "--steps", 2,
            "--episodes", 2, "--recipe", path, "--device", "cpu", "--json")
    code, stdout, err = wm(capsys, *args)
    assert code == 0, err
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert json.loads(stdout) == lines
    assert [(x["family"], x["distractor"]) for x in lines] == [("lewm", "off"), ("lewm", "on")]
    for x in lines:
        assert {"probe_r2", "probe_r2_per_dim", "success_rate", "success_ci95", "baseline_success_rate",
                "episodes", "recipe_hash", "train_seconds"} <= set(x)
        assert x["episodes"] == 2 and len(x["probe_r2_per_dim"]) == 2  # TwoRoom's goal layout: x, y
        assert x["probe_r2"] is not None and np.isfinite(x["probe_r2"])
    assert lines[0]["data_factors"] == {} and lines[1]["data_factors"] == {"distractor": 4.0}
    report = (out / "report.md").read_text()
    assert "| lewm | off |" in report and "| lewm | on |" in report and "probe R²" in report
    # the conditions share everything but the pixels: same episodes, states and actions, other frames
    off, on = (open_dataset(out / c / "data" / "train.lance") for c in ("off", "on"))
    assert [e["seed"] for e in off.episodes()] == [e["seed"] for e in on.episodes()]
    assert {e["factors"]["distractor"] for e in on.episodes()} == {4.0}
    a, b = off.load_episode(0), on.load_episode(0)
    np.testing.assert_array_equal(a["state"], b["state"])
    np.testing.assert_array_equal(a["action"], b["action"])
    assert not np.array_equal(a["pixels"], b["pixels"])
    assert (out / "off" / "lewm" / "TwoRoom-v0" / "seed0" / "probe.json").is_file()
    for x, cond in zip(lines, ("off", "on")):  # fitted on every training frame, scored on every held-out one
        frames = {name: sum(int(e["length"]) for e in open_dataset(out / cond / "data" / f"{name}.lance").episodes())
                  for name in ("train", "heldout")}
        assert (x["probe_frames_train"], x["probe_frames_heldout"]) == (frames["train"], frames["heldout"])
    # a re-run reuses every stage and writes the same lines
    code, stdout, err = wm(capsys, *args)
    assert code == 0, err
    assert "data reused" in err and "checkpoint reused" in err and "evaluation reused" in err
    assert [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()] == lines
    # one condition alone (a second process beside another): only its line, from the same stages
    code, _, err = wm(capsys, *args, "--conditions", "on")
    assert code == 0, err
    assert [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()] == lines[1:]


def test_bench_noisy_refuses_bad_requests_before_any_work(tmp_path: Path, capsys) -> None:
    path = tiny().save(tmp_path / "tiny.json")
    out = tmp_path / "noisy"
    cases = [
        (("--env", "wm/Reacher-v0"), "no 'distractor' factor"),
        (("--env", "wm/TwoRoom-v0", "--models", "lewn"), "'lewn'"),
        (("--env", "wm/TwoRoom-v0", "--distractor", "5"), "distractor=5 outside its ranges"),
        (("--env", "wm/TwoRoom-v0", "--distractor", "0"), "is the default"),
        (("--env", "wm/TwoRoom-v0", "--distractor", "lots"), "expected a number of patches or 'train'"),
        (("--env", "wm/TwoRoom-v0", "--steps", "0"), "--steps=0"),
        (("--env", "wm/PushT-v0", "--recipe", path), "is for wm/TwoRoom-v0"),
    ]
    for extra, message in cases:
        code, _, err = wm(capsys, "bench", "noisy", "--out", out, *extra)
        assert code == 2 and message in err, (extra, err)
        assert "Traceback" not in err
    assert not out.exists()
    with pytest.raises(ValueError, match=r"conditions \['maybe'\]"):
        run_noisy("wm/TwoRoom-v0", out, conditions=["maybe"])
    assert not out.exists()


def test_condition_recipes_differ_only_in_the_data_condition_and_family() -> None:
    base = tiny()
    off = condition_recipe(base, "lewm", "off")
    on = condition_recipe(base, "lewm", "on")
    drawn = condition_recipe(base, "lewm", "on", "train")
    assert off.data.factors == {} and off.data.split is None and off.train.model["family"] == "lewm"
    assert on.data.factors == {"distractor": 4.0} and on.data.split is None
    assert drawn.data.split == "train" and "distractor" not in drawn.data.factors
    assert drawn.data.factors["door_width"] == 0.2  # every other factor pinned to its default
    assert len({off.section_hash("data"), on.section_hash("data"), drawn.section_hash("data")}) == 3
    # the published recipes keep their hashes: data.factors is left out of the digest while empty, and so is
    # eval.long_protocol while null (TwoRoom's recipe gained one: without it, it is the published recipe)
    assert off.eval.long_protocol is None
    published = get_recipe("wm/TwoRoom-v0")
    # TwoRoom's later changes: the long protocol, bf16 training, the objective min_step_l2
    published.eval.long_protocol, published.train.amp = None, None
    published.eval.planner = {"planner": "icem"}
    assert published.hash() == "0edf7c63af75"
    assert get_recipe("wm/PointMaze-v0").section_hash("data") == "2643ddb83283"  # (its eval section changed since)
    with pytest.raises(ValueError, match="condition='maybe'"):
        condition_recipe(base, "lewm", "maybe")
    with pytest.raises(ValueError, match="data.factors: unknown factor 'distractr'"):
        Recipe.from_dict({**base.to_dict(), "data": {**base.to_dict()["data"], "factors": {"distractr": 1}}})
    assert "No results" in markdown_report([])
