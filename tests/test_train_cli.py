"""``wm train`` (and the CLI around it) on bad input: clear errors, no NaN checkpoints, standard JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lance")

from worldmodel import load_checkpoint  # noqa: E402
from worldmodel.checkpoint import read_train_state  # noqa: E402
from worldmodel.cli import main  # noqa: E402
from worldmodel.model import JEPA  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: a tiny model on 16x16 frames: a few training steps take well under a second
TINY_FLAGS = ["--encoder-width", "8", "--embed-dim", "16", "--projector-hidden", "32", "--predictor-width", "32",
              "--predictor-depth", "1", "--predictor-heads", "2", "--sigreg-projections", "16", "--frameskip", "2",
              "--pred-steps", "1", "--device", "cpu", "--val-fraction", "0", "--batch-size", "8", "--num-threads", "1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Six TwoRoom episodes of at most 11 rows (10 steps) at 16x16."""
    import data

    path = tmp_path_factory.mktemp("data") / "tworoom.lance"
    data.collect("wm/TwoRoom-v0", 6, path, resolution=16, max_steps=10, seed=0)
    return path


def wm_train(dataset: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(dataset), "--out", str(out), *TINY_FLAGS, *extra])


def strict_json(text: str) -> object:
    """Parse JSON, refusing the non-standard NaN / Infinity / -Infinity."""
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("flags, named", [
    (["--lr", "inf"], "lr must be a finite number, got inf"),
    (["--lr", "nan"], "lr must be a finite number, got nan"),
    (["--sigreg-weight", "inf"], "sigreg_weight must be a finite number, got inf"),
    (["--rollout-weight", "-1"], "rollout_weight must be >= 0, got -1.0"),
    (["--grad-clip", "inf"], "grad_clip must be a finite number, got inf"),
    (["--weight-decay=-inf"], "weight_decay must be a finite number, got -inf"),
    (["--batch-size", "1"], "batch_size must be >= 2"),
    (["--seed=-1"], "seed must be in [0, 9223372036854775807], got -1"),
    (["--seed", "99999999999999999999"], "got 99999999999999999999"),
])
def test_bad_settings_are_refused_before_training(dataset, tmp_path, capsys, flags, named) -> None:
    assert wm_train(dataset, tmp_path / "run", *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("wm train: error: ") and named in err, err
    assert not (tmp_path / "run").exists()  # nothing written, nothing trained


def test_a_run_prints_standard_json_and_progress_lines(dataset, tmp_path, capsys, monkeypatch) -> None:
    import worldmodel.progress as progress

    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.0)  # a line at every step (stderr is not a terminal here)
    assert wm_train(dataset, tmp_path / "run", "--steps", "3", "--log-every", "1") == 0
    out, err = capsys.readouterr()
    summary = strict_json(out)
    assert summary["steps"] == 3 and summary["finished"] is True
    assert f"train: reading windows of {dataset}" in err
    lines = [line for line in err.splitlines() if re.match(r"train: \d+/3 ", line)]
    assert lines[0].startswith("train: 1/3 (33%)") and lines[-1].startswith("train: 3/3 (100%)"), err
    assert "loss=" in lines[-1]


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
        dataset, tmp_path, capsys, monkeypatch) -> None:
    real_loss = JEPA.loss
    calls = {"n": 0}

    def loss_nan_at_step_5(self: JEPA, pixels: torch.Tensor, actions: torch.Tensor) -> dict:
        out = real_loss(self, pixels, actions)
        calls["n"] += 1
        if calls["n"] == 5:  # the 5th training step
            out["sigreg_loss"] = out["sigreg_loss"] * float("nan")
            out["loss"] = out["loss"] + out["sigreg_loss"]
        return out

    monkeypatch.setattr(JEPA, "loss", loss_nan_at_step_5)
    run = tmp_path / "run"
    assert wm_train(dataset, run, "--steps", "10", "--ckpt-every", "2", "--log-every", "3", "--no-progress") == 2
    out, err = capsys.readouterr()
    assert out == ""  # no summary: the run failed
    assert "non-finite at step 5" in err and "sigreg_loss=nan" in err, err
    assert "last good checkpoint (step 4) is kept" in err and "Traceback" not in err
    # step 6 (a log point) found it: the checkpoint of step 4 is what is on disk, with finite weights
    assert read_train_state(run)["step"] == 4
    model = load_checkpoint(run)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "loss" in m] == [3]  # the NaN window (steps 4-6) was never logged


def test_non_finite_weights_are_never_saved(dataset, tmp_path, capsys, monkeypatch) -> None:
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def step_poisoning_weights_at_step_4(self: torch.optim.AdamW, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:  # every loss so far was finite; the weights are not any more
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", step_poisoning_weights_at_step_4)
    run = tmp_path / "run"
    assert wm_train(dataset, run, "--steps", "6", "--ckpt-every", "2", "--log-every", "10", "--no-progress") == 2
    err = capsys.readouterr().err
    assert "after step 4 the model's weights are non-finite" in err, err
    assert "last good checkpoint (step 2) is kept" in err
    assert read_train_state(run)["step"] == 2


def test_episodes_too_short_for_the_window_say_so(dataset, tmp_path, capsys) -> None:
    # 11-row episodes; 4 frames at frameskip 5 span 16 rows: no window exists, whatever the batch size
    assert wm_train(dataset, tmp_path / "run", "--frameskip", "5", "--pred-steps", "3", "--batch-size", "2") == 2
    err = capsys.readouterr().err
    assert "longest training episode has 11 rows" in err and "spans 16 rows" in err, err
    assert "a smaller --batch-size cannot help" in err
    assert "--frameskip 3 or less" in err and "--pred-steps 2 or less" in err and "collect longer episodes" in err


def test_out_under_a_file_is_refused_for_train_and_eval(dataset, tmp_path, capsys) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    assert wm_train(dataset, blocker / "run") == 2
    err = capsys.readouterr().err
    assert f"--out='{blocker / 'run'}' is under {blocker}, which is a file" in err, err
    assert wm_train(dataset, blocker) == 2
    assert f"--out='{blocker}' is a file" in capsys.readouterr().err
    code = main(["eval", "--ckpt", str(tmp_path / "no-ckpt"), "--data", str(dataset), "--out", str(blocker / "eval")])
    assert code == 2
    assert "which is a file" in capsys.readouterr().err
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("argv, expected", [
    (["gallery", "--resolution", "100000"], "--resolution=100000: expected an integer in [8, 1024]"),
    (["gallery", "--resolution", "4"], "--resolution=4: expected an integer in [8, 1024]"),
    (["bench", "envs", "--resolution", "5000"], "--resolution=5000: expected an integer in [8, 1024]"),
    (["bench", "data", "--resolution", "1000"], "--resolution=1000: expected an integer in [8, 512]"),
    (["bench", "envs", "--seconds", "inf"], "--seconds=inf"),
])
def test_resolution_bounds_of_gallery_and_bench(tmp_path, capsys, argv, expected) -> None:
    extra = ["--out", str(tmp_path / "g")] if argv[0] == "gallery" else []
    assert main(argv + extra) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_output_into_a_closed_pipe_exits_quietly(dataset) -> None:
    # `wm data info PATH | head`: the reader is gone before anything is written
    proc = subprocess.Popen([sys.executable, "-m", "worldmodel", "data", "info", str(dataset)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


def test_non_finite_numbers_are_printed_as_json_null(dataset, tmp_path, capsys, monkeypatch) -> None:
    from worldmodel import cli, train

    assert cli._json({"a": float("nan"), "b": [1.5, float("inf")], "c": (float("-inf"),)}) == \
        '{"a": null, "b": [1.5, null], "c": [null]}'
    # a held-out loss that is NaN (the training loss stays finite) reaches stdout and metrics.jsonl as null
    monkeypatch.setattr(train, "estimate_val_loss", lambda *a, **k: float("nan"))
    assert wm_train(dataset, tmp_path / "run", "--steps", "2", "--val-fraction", "0.34", "--val-every", "1",
                    "--no-progress") == 0
    assert strict_json(capsys.readouterr().out)["val_pred_loss"] is None
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        strict_json(line)


def test_running_out_of_memory_is_a_clear_error(dataset, tmp_path, capsys, monkeypatch) -> None:
    def no_memory(self, *args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 4000000000000 bytes")

    monkeypatch.setattr(JEPA, "loss", no_memory)
    assert wm_train(dataset, tmp_path / "run", "--steps", "3", "--no-progress") == 2
    err = capsys.readouterr().err
    assert "out of memory at step 1 on cpu with batch_size=8" in err and "lower --batch-size" in err, err
    assert "no checkpoint was written" in err and "Traceback" not in err
    # any other RuntimeError is a bug, not bad input: it keeps its traceback
    monkeypatch.setattr(JEPA, "loss", lambda self, *a: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        wm_train(dataset, tmp_path / "run2", "--steps", "3", "--no-progress")
    # a model too big to allocate (faked: a real one could be granted by overcommit, then OOM-killed)
    from worldmodel import train

    monkeypatch.setattr(train, "build_model", no_memory)
    assert wm_train(dataset, tmp_path / "big", "--embed-dim", "4000000000") == 2
    err = capsys.readouterr().err
    assert "the model does not fit in memory on cpu" in err and "embed_dim=4000000000" in err, err


def test_old_training_horizon_flag_names_pred_steps(dataset, tmp_path, capsys) -> None:
    """`wm train --horizon N` (the training window's old name; `horizon` is now only the
    planning horizon of `wm eval`) is refused before training, naming `--pred-steps N`."""
    run = tmp_path / "run"
    assert main(["train", "--data", str(dataset), "--out", str(run), *TINY_FLAGS, "--horizon", "3"]) == 2
    err = capsys.readouterr().err
    assert "wm train: error: --horizon 3:" in err and "use --pred-steps 3" in err, err
    assert len(err.strip().splitlines()) == 1 and not run.exists()
    assert "--pred-steps" in subprocess.run([sys.executable, "-m", "worldmodel", "train", "--help"], capture_output=True,
                                            text=True, cwd=REPO).stdout
