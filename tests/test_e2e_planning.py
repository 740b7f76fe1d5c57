"""The platform end to end, for real: a small TwoRoom model trained here (fixed seed, about a
minute on 2 cores) plans better than random on held-out start/goal pairs, by a margin the
95% intervals support (the model's lower bound above the random baseline's upper bound)."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.planning import PlannerConfig, checkpoint_data, evaluate_planning
from benchmarks.protocol import PlanningProtocol
from data import collect, open_dataset
from worldmodel.checkpoint import load_checkpoint
from worldmodel.config import ModelConfig, TrainConfig
from worldmodel.train import train

ENV, RES = "wm/TwoRoom-v0", 32


def test_a_model_trained_here_plans_better_than_random(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic training, whatever the machine
    try:
        train_path, heldout_path = tmp_path / "train.lance", tmp_path / "heldout.lance"
        collect(ENV, 150, train_path, policy="expert", seed=0, mode="error", stop_on_success=True, resolution=RES)
        collect(ENV, 100, train_path, policy="random", seed=150, mode="append", stop_on_success=True, resolution=RES)
        collect(ENV, 30, heldout_path, policy="expert", seed=1_000_000, mode="error", stop_on_success=True,
                resolution=RES)
        model_cfg = ModelConfig(image_size=RES, action_dim=2, pred_steps=3, embed_dim=32, encoder_width=16,
                                predictor_width=64, predictor_depth=2, predictor_heads=4)
        train(model_cfg, TrainConfig(data=str(train_path), out=str(tmp_path / "ckpt"), steps=500, batch_size=32,
                                     seed=0, device="cpu", progress=False, val_every=0))
        model = load_checkpoint(tmp_path / "ckpt").eval()
        summary = evaluate_planning(
            model, open_dataset(heldout_path), tmp_path / "eval", protocol=PlanningProtocol(episodes=20),
            planner_cfg=PlannerConfig(planner="icem", num_samples=64, iterations=10, num_elites=8), video=False,
            trained_on=checkpoint_data(tmp_path / "ckpt"),  # held-out episodes only: the leak check passes
        )
    finally:
        torch.set_num_threads(threads)
    assert summary["episodes"] == 20 and summary["train_overlap_pairs"] == 0
    assert summary["success_ci95"][0] > summary["baseline_success_ci95"][1], summary
