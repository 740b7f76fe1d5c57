"""Scaffolding shared by the CLI and benchmark-runner tests: ``wm`` in this process, and a recipe
small enough to run every stage of ``wm bench planning`` in seconds."""

from __future__ import annotations

import dataclasses

from benchmarks.recipes import Recipe, get_recipe


def wm(capsys, *args: object) -> tuple[int, str, str]:
    """``wm ARGS`` in this process: (exit code, stdout, stderr)."""
    from worldmodel.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny_recipe(env_id: str = "wm/TwoRoom-v0", expert: int = 4, random: int = 2, long: dict | None = None) -> Recipe:
    """`env_id`'s recipe at test size: 16-px frames, `expert` + `random` training episodes and 3
    held-out ones, 3 training steps of 4 windows, a 8 x 1 iCEM over 2 blocks, 2 pairs at offset 5
    and budget 5. ``long``: fields overriding the recipe's long protocol (None: no long protocol)."""
    r = get_recipe(env_id)
    r.data = dataclasses.replace(r.data, expert_episodes=expert, random_episodes=random, heldout_episodes=3,
                                 resolution=16)
    r.train = dataclasses.replace(r.train, steps=3, batch_size=4, model={"pred_steps": 2, "embed_dim": 16})
    r.eval.planner = {"planner": "icem", "num_samples": 8, "iterations": 1, "num_elites": 2, "horizon": 2}
    r.eval.protocol = {"offset": 5, "budget": 5, "episodes": 2}
    r.eval.long_protocol = None if long is None else {**(r.eval.long_protocol or {}), **long}
    return r.check()


def train_tiny(data, out, steps: int) -> None:
    """Train the smallest LeWorldModel the diagnostics tests use (32x32 frames, frameskip 2, embed 8) on ``data`` for
    ``steps`` steps of 8 windows, on 1 CPU thread, into the checkpoint folder ``out``."""
    import torch

    from worldmodel import ModelConfig, TrainConfig
    from worldmodel.train import train

    torch.set_num_threads(1)
    mc = ModelConfig(image_size=32, action_dim=2, frameskip=2, context=1, pred_steps=1, embed_dim=8, encoder_width=4,
                     projector_hidden=16, predictor_width=16, predictor_depth=1, predictor_heads=2, sigreg_projections=16)
    tc = TrainConfig(data=str(data), out=str(out), steps=steps, batch_size=8, warmup_steps=1, val_every=1000,
                     ckpt_every=steps, device="cpu", progress=False, cache=True)
    train(mc, tc)
