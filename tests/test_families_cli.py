"""``wm train --model FAMILY / --preset / --config``: every family trains from the CLI and logs its own terms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lance")

from worldmodel import load_checkpoint  # noqa: E402
from worldmodel.cli import main  # noqa: E402
from worldmodel.families import get_family  # noqa: E402

#: a tiny model on 16x16 frames (no family-specific flags)
TINY = ["--encoder-width", "8", "--embed-dim", "16", "--projector-hidden", "32", "--predictor-width", "32",
        "--predictor-depth", "1", "--predictor-heads", "2", "--frameskip", "2", "--pred-steps", "2",
        "--device", "cpu", "--val-fraction", "0", "--batch-size", "8", "--num-threads", "1", "--no-progress"]
TERMS = {
    "lewm": ["loss", "pred_loss", "sigreg_loss", "rollout_loss"],
    "pldm": ["loss", "pred_loss", "std_loss", "cov_loss", "sim_t_loss", "idm_loss", "rollout_loss"],
    "pixel": ["loss", "pred_loss", "recon_loss", "pred_recon_loss", "rollout_loss"],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Six TwoRoom episodes of at most 11 rows at 16x16."""
    import data

    path = tmp_path_factory.mktemp("data") / "tworoom.lance"
    data.collect("wm/TwoRoom-v0", 6, path, resolution=16, max_steps=10, seed=0)
    return path


@pytest.mark.parametrize("family", ["lewm", "pldm", "pixel"])
def test_every_family_trains_from_the_cli_and_logs_its_terms(family, dataset, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    extra = [] if family == "lewm" else ["--model", family]
    assert main(["train", "--data", str(dataset), "--out", str(run), *TINY, "--steps", "2", "--log-every", "1",
                 *extra]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert all(summary[k] is not None for k in TERMS[family])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # the terms the model returns, in its order, between the step and the rate (lewm: the keys as before)
    assert list(lines[0]) == ["step", *TERMS[family], "lr", "seconds", "samples_per_s"]
    model = load_checkpoint(run)
    assert type(model) is get_family(family).model_cls and model.config.family == family
    assert model.config.image_size == 16 and model.config.embed_dim == 16


def test_a_config_file_gives_defaults_that_options_override(dataset, tmp_path, capsys) -> None:
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"model": {"family": "pldm", "idm_weight": 2.5, "embed_dim": 24},
                               "train": {"steps": 2, "lr": 5e-4}}))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--data", str(dataset), "--out", str(run), *TINY,
                 "--embed-dim", "12"]) == 0
    model = load_checkpoint(run)
    assert model.config.family == "pldm" and model.config.idm_weight == 2.5
    assert model.config.embed_dim == 12  # the option wins over the file
    assert json.loads((run / "train_config.json").read_text())["lr"] == 5e-4
    # a checkpoint's config.json is a config file too: the same model again
    capsys.readouterr()
    again = tmp_path / "again"
    assert main(["train", "--config", str(run / "config.json"), "--data", str(dataset), "--out", str(again),
                 "--steps", "1", "--device", "cpu", "--batch-size", "8", "--val-fraction", "0", "--no-progress"]) == 0
    assert load_checkpoint(again).config == model.config


@pytest.mark.parametrize("argv, named", [
    (["--model", "pldn"], "unknown world-model family 'pldn'; did you mean 'pldm'?"),
    (["--preset", "pixel_tiny"], "unknown model preset 'pixel_tiny'; did you mean 'pixel-tiny'?"),
    (["--model", "lewm", "--preset", "pldm-tiny"], "--model is 'lewm', --preset pldm-tiny is 'pldm'"),
    (["--model", "pldm", "--sigreg-weight", "0.1"], "Unrecognized options: --sigreg-weight"),
])
def test_bad_family_choices_are_named(argv, named, tmp_path, capsys) -> None:
    try:
        code = main(["train", "--data", "/nonexistent", "--out", str(tmp_path / "run"), *argv])
    except SystemExit as e:  # tyro's own parse errors exit like argparse's
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert named in err, err
    assert not (tmp_path / "run").exists()


def test_bad_config_files_are_named(tmp_path, capsys) -> None:
    cases = {
        "notjson.json": ("{oops", "is not valid JSON"),
        "list.json": ("[1, 2]", "must hold a JSON object"),
        "section.json": (json.dumps({"modle": {}}), "unknown sections ['modle']"),
        "field.json": (json.dumps({"model": {"family": "pixel", "idm_weight": 1.0}}), "unknown PixelConfig keys ['idm_weight']"),
        "train.json": (json.dumps({"train": {"lr": "fast"}}), "TrainConfig.lr must be float, got 'fast'"),
    }
    for name, (text, named) in cases.items():
        (tmp_path / name).write_text(text)
        assert main(["train", "--config", str(tmp_path / name), "--data", "/nonexistent"]) == 2
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, (name, err)
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_help_shows_the_options_of_the_family_given(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "pldm", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--idm-weight" in out and "--std-weight" in out and "--pred-steps" in out and "--lr" in out
    assert "--sigreg-weight" not in out and "--image-size" not in out
    with pytest.raises(SystemExit):
        main(["train", "--preset", "lewm-tiny", "--help"])
    out = capsys.readouterr().out
    assert "--sigreg-weight" in out and "(default: 0.09)" in out  # the preset's value is the default shown


def test_dinowm_trains_from_the_cli_saves_its_frozen_encoder_and_plans(dataset, tmp_path, capsys) -> None:
    """``wm train --preset dinowm-tiny``: the family is registered, the checkpoint holds the frozen
    encoder (it loads without the weights source) and ``wm eval`` plans with it unchanged."""
    import torch

    run = tmp_path / "run"
    assert main(["train", "--preset", "dinowm-tiny", "--frameskip", "1", "--context", "2", "--data", str(dataset),
                 "--out", str(run), "--steps", "2",
                 "--log-every", "1", "--device", "cpu", "--batch-size", "8", "--val-fraction", "0",
                 "--no-progress"]) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert list(lines[0])[:3] == ["step", "loss", "pred_loss"]
    model = load_checkpoint(run)
    assert type(model) is get_family("dinowm").model_cls and model.config.family == "dinowm"
    assert not any(p.requires_grad for p in model.encoder.parameters())
    pixels = torch.randint(0, 256, (1, 2, 3, 16, 16), dtype=torch.uint8)
    torch.testing.assert_close(load_checkpoint(run).encode(pixels), model.encode(pixels))
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["eval", "--ckpt", str(run), "--data", str(dataset), "--out", str(out), "--episodes", "2",
                 "--budget", "4", "--offset", "3", "--iterations", "1", "--num-samples", "8", "--num-elites", "2",
                 "--horizon", "2", "--no-video", "--allow-train-episodes", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 2


def test_amp_is_a_flag_pair_on_the_cli() -> None:
    """``--amp`` / ``--no-amp`` (README, docs/contracts.md) set the Optional[bool]; unset stays None."""
    from worldmodel.trainargs import parse_train_options

    assert parse_train_options(["--amp"]).train.amp is True
    assert parse_train_options(["--no-amp", "--steps", "5"]).train.amp is False
    assert parse_train_options(["--amp", "False"]).train.amp is False
    assert parse_train_options(["--steps", "5"]).train.amp is None
    assert parse_train_options(["--amp", "--steps", "7"]).train.steps == 7
