"""The ``wm`` command line, run as a user would: real subprocesses, tiny budgets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def wm(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m worldmodel ARGS`` from the repository root."""
    proc = subprocess.run(
        [sys.executable, "-m", "worldmodel", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"wm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_envs_and_factors_json() -> None:
    assert "wm/TwoRoom-v0" in json.loads(wm("envs", "--json").stdout)
    rows = json.loads(wm("factors", "wm/TwoRoom-v0", "--json").stdout)
    kinds = {r["kind"] for r in rows}
    assert kinds == {"visual", "geometric", "physical"}
    for row in rows:
        assert set(row) >= {"name", "kind", "default", "train", "ood"}
    assert "door_width" in wm("factors", "wm/TwoRoom-v0").stdout


def test_unknown_env_id_suggests_the_right_one() -> None:
    proc = wm("factors", "wm/TwoRom-v0", check=False)
    assert proc.returncode == 2
    assert "wm/TwoRom-v0" in proc.stderr and "wm/TwoRoom-v0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_not_a_dataset_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("hello")
    for cmd in (("data", "info", str(tmp_path / "junk")), ("data", "info", str(tmp_path / "missing"))):
        proc = wm(*cmd, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and str(tmp_path) in proc.stderr
    proc = wm("data", "validate", str(tmp_path / "junk"), check=False)
    assert proc.returncode != 0


def test_collect_train_eval_smoke(tmp_path: Path) -> None:
    data, heldout = tmp_path / "train.lance", tmp_path / "heldout.lance"
    wm("collect", "--env", "wm/TwoRoom-v0", "--episodes", "6", "--out", str(data), "--split", "train")
    wm("collect", "--env", "wm/TwoRoom-v0", "--episodes", "3", "--out", str(heldout), "--seed", "1000")
    info = json.loads(wm("data", "info", str(data), "--json").stdout)
    assert info["episodes"] == 6 and info["steps"] > 6
    assert "OK" in wm("data", "validate", str(data)).stdout

    ckpt = tmp_path / "ckpt"
    wm("train", "--data", str(data), "--out", str(ckpt), "--steps", "3", "--batch-size", "8", "--device", "cpu")
    assert (ckpt / "config.json").exists() and (ckpt / "model.safetensors").exists()
    assert (ckpt / "metrics.jsonl").read_text().strip()

    # goals 3 steps ahead and a 30-step budget: some episodes succeed, so the counts mean something
    out, n, budget, offset = tmp_path / "eval", 6, 30, 3
    wm(
        "eval", "--ckpt", str(ckpt), "--data", str(heldout), "--out", str(out),
        "--episodes", str(n), "--budget", str(budget), "--offset", str(offset), "--num-samples", "16", "--iterations", "2",
        "--num-elites", "4", "--device", "cpu",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == n and summary["env_id"] == "wm/TwoRoom-v0"
    lines = [json.loads(l) for l in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * n and [l["policy"] for l in lines] == ["cem"] * n + ["random"] * n
    cem, rnd = lines[:n], lines[n:]
    pair = ("episode_id", "start_step", "start_state", "goal_state", "factors", "env_seed")
    assert [[l[k] for k in pair] for l in cem] == [[l[k] for k in pair] for l in rnd]  # same pairs, same order
    assert len({(l["episode_id"], l["start_step"]) for l in cem}) == n  # no pair twice
    # the summary's counts and rates are those of episodes.jsonl
    for prefix, group in (("", cem), ("baseline_", rnd)):
        k = sum(l["success"] for l in group)
        assert summary[f"{prefix}successes"] == k and summary[f"{prefix}success_rate"] == k / n
        low, high = summary[f"{prefix}success_ci95"]
        assert low <= k / n <= high
        steps = [l["steps"] for l in group if l["success"]]
        assert summary[f"{prefix}mean_steps_to_success"] == (sum(steps) / len(steps) if steps else None)
    # each line agrees with TwoRoom itself: the start is the recorded state, the goal the state
    # `offset` rows later, the start is not already a success, success <=> final distance < 0.06,
    # and an episode runs the whole budget unless it succeeds
    import envs
    from data import open_dataset
    from envs.two_room import SUCCESS_RADIUS

    ds, env = open_dataset(heldout), envs.make("wm/TwoRoom-v0")
    for line in lines:
        states = ds.load_episode(line["episode_id"], columns=("state",))["state"]
        assert line["start_state"] == states[line["start_step"]].tolist()
        assert line["goal_state"] == states[line["start_step"] + offset].tolist()
        _, info = env.reset(options={"factors": line["factors"], "state": line["start_state"], "goal_state": line["goal_state"]})
        assert not info["success"] and info["goal_distance"] >= SUCCESS_RADIUS
        assert line["success"] == (line["final_distance"] < SUCCESS_RADIUS)
        assert 1 <= line["steps"] <= budget and (line["success"] or line["steps"] == budget)
        assert line["plan_seconds"] >= 0 and (line["policy"] == "random" or line["plan_seconds"] > 0)
    assert (out / "planned_episode.mp4").stat().st_size > 0


def test_eval_with_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    proc = wm("eval", "--ckpt", str(tmp_path / "nope"), "--data", str(tmp_path), "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "nope" in proc.stderr


def test_collect_killed_with_sigkill_leaves_a_sound_resumable_dataset(tmp_path: Path) -> None:
    path = tmp_path / "crash.lance"
    proc = subprocess.Popen(
        [sys.executable, "-m", "worldmodel", "collect", "--env", "wm/TwoRoom-v0", "--episodes", "100000",
         "--out", str(path), "--policy", "random"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # Wait until some episodes are committed, then kill without warning.
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.5)
            if (path / "episodes.lance").exists():
                time.sleep(1.5)
                break
        assert proc.poll() is None, "collect finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "OK" in wm("data", "validate", str(path)).stdout
    before = json.loads(wm("data", "info", str(path), "--json").stdout)
    assert before["episodes"] >= 1
    wm("collect", "--env", "wm/TwoRoom-v0", "--episodes", "2", "--out", str(path), "--seed", "500")
    after = json.loads(wm("data", "info", str(path), "--json").stdout)
    assert after["episodes"] == before["episodes"] + 2
    assert "OK" in wm("data", "validate", str(path)).stdout


def test_demo_quick_writes_summary_report_and_video(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = wm("demo", "--out", str(out), "--quick", "--device", "cpu")
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    assert printed["success_rate"] == summary["success_rate"]
    assert "baseline_success_rate" in summary
    assert (out / "report.md").read_text().startswith("# worldmodel demo")
    assert (out / "planned_episode.mp4").stat().st_size > 0


def test_eval_refuses_a_checkpoint_that_does_not_match_the_dataset(tmp_path: Path) -> None:
    small, large = tmp_path / "small.lance", tmp_path / "large.lance"
    wm("collect", "--env", "wm/TwoRoom-v0", "--episodes", "2", "--out", str(small), "--resolution", "32")
    wm("collect", "--env", "wm/TwoRoom-v0", "--episodes", "2", "--out", str(large))
    ckpt = tmp_path / "ckpt32"
    wm("train", "--data", str(small), "--out", str(ckpt), "--steps", "1", "--batch-size", "4", "--device", "cpu")
    proc = wm("eval", "--ckpt", str(ckpt), "--data", str(large), "--out", str(tmp_path / "o"), "--episodes", "1",
              "--offset", "2", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "image_size=32" in proc.stderr and "64x64" in proc.stderr


def test_train_without_data_is_a_clear_error(tmp_path: Path) -> None:
    proc = wm("train", "--out", str(tmp_path / "c"), check=False)
    assert proc.returncode == 2 and "--data" in proc.stderr and "Traceback" not in proc.stderr


def test_diagnose_json_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from data.collect import collect
    from worldmodel.cli import main
    from worldmodel import ModelConfig, TrainConfig
    from worldmodel.train import train

    collect("wm/TwoRoom-v0", 3, tmp_path / "train.lance", seed=0, resolution=32, max_steps=16)
    collect("wm/TwoRoom-v0", 3, tmp_path / "heldout.lance", seed=5000, resolution=32, max_steps=16)
    ckpt = tmp_path / "ckpt"
    train(ModelConfig(image_size=32, action_dim=2, frameskip=2, embed_dim=8, encoder_width=4, projector_hidden=16,
                      predictor_width=16, predictor_depth=1, predictor_heads=2, sigreg_projections=16),
          TrainConfig(data=str(tmp_path / "train.lance"), out=str(ckpt), steps=1, batch_size=4, warmup_steps=0,
                      device="cpu", progress=False))
    out = tmp_path / "diag"
    proc = wm("diagnose", str(ckpt), "--data", str(tmp_path / "heldout.lance"), "--out", str(out), "--steps", "2",
              "--episodes", "3", "--seed", "1", "--device", "cpu", "--json")
    printed = json.loads(proc.stdout)
    assert printed == json.loads((out / "diagnostics.json").read_text())
    assert {"rankme", "probe_r2", "open_loop_mse", "surprise_ratio", "straightness"} <= set(printed)
    assert len(printed["open_loop_mse"]) == 2 and printed["seed"] == 1 and printed["episode_ids"] == [0, 1, 2]
    assert (out / "open_loop.png").is_file() and (out / "surprise.png").is_file()
    proc = wm("diagnose", str(tmp_path / "nope"), "--data", str(tmp_path / "heldout.lance"), "--out", str(out), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and str(tmp_path / "nope") in proc.stderr
    capsys.readouterr()
    assert main(["diagnose", str(ckpt), "--data", str(tmp_path / "heldout.lance"), "--out", str(out), "--steps", "1"]) == 0
    text = capsys.readouterr().out  # without --json: a line per metric
    assert text.splitlines()[1].startswith("rankme") and "surprise_ratio" in text
    with pytest.raises(SystemExit):
        main(["diagnose", "--help"])
    assert "wm diagnose runs/ckpt --data" in capsys.readouterr().out
