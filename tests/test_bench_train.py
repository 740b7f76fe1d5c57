"""`wm bench train` (benchmarks/train_speed.py): the JSON contract on a test-sized model, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import train_speed
from benchmarks.train_speed import bench_train, count_step_flops, model_gemm_shapes, synthetic_batches
from worldmodel.config import ModelConfig

ROW_KEYS = {"autocast", "samples_per_s", "step_seconds", "step_seconds_all", "gflop_per_step", "gflops",
            "gemm_gflops", "gemm_fraction"}


@pytest.fixture()
def fast_gemm(monkeypatch):
    monkeypatch.setattr(train_speed, "GEMM_SECONDS", 0.01)
    monkeypatch.setattr(train_speed, "GEMM_ROWS", 64)


def test_bench_train_json_contract(fast_gemm) -> None:
    torch.set_num_threads(1)
    result = bench_train("lewm-micro", batch_size=4, steps=2, warmup=1, amp=True)
    json.dumps(result, allow_nan=False)  # JSON-serialisable, finite
    assert result["preset"] == "lewm-micro" and result["family"] == "lewm"
    assert (result["batch_size"], result["window"], result["threads"], result["steps"], result["warmup"]) == (4, 4, 1, 2, 1)
    assert set(result["precisions"]) == {"float32", "bfloat16"}
    assert set(result["gemm_gflops"]) == {"float32", "bfloat16"}
    assert result["gflop_per_step"] == pytest.approx(result["flops_per_step"] / 1e9)
    for name, row in result["precisions"].items():
        assert set(row) == ROW_KEYS
        assert row["autocast"] == (name == "bfloat16")
        assert len(row["step_seconds_all"]) == 2 and row["step_seconds"] > 0
        assert row["samples_per_s"] == pytest.approx(4 / row["step_seconds"])
        assert row["gflops"] == pytest.approx(result["gflop_per_step"] / row["step_seconds"])
        assert row["gemm_gflops"] == result["gemm_gflops"][name] > 0
        assert row["gemm_fraction"] == pytest.approx(row["gflops"] / row["gemm_gflops"])
    gemm = result["gemm"]
    assert gemm["rows"] == 64 and [32, 96] in gemm["model_shapes"] and [192, 3072] in gemm["reference_shapes"]
    for kind in ("model", "reference"):  # the bound is the highest rate measured
        for name in ("float32", "bfloat16"):
            assert result["gemm_gflops"][name] >= max(gemm[kind]["before"][name], gemm[kind]["after"][name])
    assert result["model"]["config"] == ModelConfig.preset("lewm-micro").to_dict()
    # without amp: float32 alone
    assert set(bench_train("lewm-micro", batch_size=2, steps=1, warmup=0)["precisions"]) == {"float32"}


def test_step_flops_are_forward_plus_backward() -> None:
    """A step counts about 3x the forward's matrix-product FLOPs (backward: 2x), not the forward alone."""
    from torch.utils.flop_counter import FlopCounterMode

    from worldmodel.model import JEPA

    config = ModelConfig.preset("lewm-micro")
    torch.manual_seed(0)
    model = JEPA(config)
    batch = synthetic_batches(config, 4)[0]
    with FlopCounterMode(display=False) as counter:
        model.loss(batch["pixels"], batch["actions"])
    forward = counter.get_total_flops()
    step = count_step_flops(train_speed._Trainer(model, [batch], amp=False))
    assert 2.5 * forward < step < 3.5 * forward


def test_synthetic_batches_and_shapes() -> None:
    config = ModelConfig.preset("lewm-micro")
    batch = synthetic_batches(config, 3)[1]
    assert batch["pixels"].dtype == torch.uint8 and batch["pixels"].shape == (3, 4, 3, 28, 28)
    assert batch["actions"].shape == (3, 3, 10)
    from worldmodel.model import JEPA

    shapes = model_gemm_shapes(JEPA(config))
    assert len(shapes) == len(set(shapes)) and (32, 96) in shapes and (32, 6 * 32) in shapes


def test_bench_train_bad_input_is_named(fast_gemm) -> None:
    with pytest.raises(ValueError, match="did you mean 'lewm-tiny'"):
        bench_train("lewm_tiny")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 2, got 1"):
        bench_train("lewm-micro", batch_size=1)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        bench_train("lewm-micro", steps=0)


def test_cli_bench_train_json(fast_gemm, capsys) -> None:
    from worldmodel.cli import main

    threads = torch.get_num_threads()
    try:
        assert main(["bench", "train", "--preset", "lewm-micro", "--batch-size", "2", "--steps", "1", "--warmup", "0",
                     "--threads", "1", "--json"]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(capsys.readouterr().out)
    assert result["threads"] == 1 and set(result["precisions"]) == {"float32"}
    assert 0 < result["precisions"]["float32"]["gemm_fraction"]
    assert main(["bench", "train", "--preset", "lewm-micro", "--batch-size", "1"]) == 2
    assert "--batch-size=1" in capsys.readouterr().err


def test_keep_freed_memory_is_idempotent() -> None:
    import platform

    from worldmodel.device import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first
    assert first == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_cli_bench_train_times_the_model_of_a_config_file(fast_gemm, capsys, tmp_path) -> None:
    """``--config FILE`` (a checkpoint's config.json) times that model instead of a preset."""
    from worldmodel.cli import main

    cfg = ModelConfig(image_size=16, embed_dim=8, encoder_width=8, predictor_width=16, predictor_depth=1,
                      predictor_heads=2, context=1, pred_steps=2, frameskip=2, sigreg_projections=16)
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "model": cfg.to_dict()}))
    threads = torch.get_num_threads()
    try:
        assert main(["bench", "train", "--config", str(tmp_path / "config.json"), "--batch-size", "2", "--steps", "1",
                     "--warmup", "0", "--threads", "1", "--json"]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(capsys.readouterr().out)
    assert result["preset"] == str(tmp_path / "config.json") and result["window"] == 3 and result["family"] == "lewm"
    (tmp_path / "bad.json").write_text(json.dumps({"model": {**cfg.to_dict(), "embed_dimm": 3}}))
    assert main(["bench", "train", "--config", str(tmp_path / "bad.json"), "--steps", "1"]) == 2
    assert "embed_dimm" in capsys.readouterr().err
