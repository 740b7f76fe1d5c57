"""Training loop for the JEPA world model, nanoGPT-style: config, data, model, optimizer, loop.

    out/
      train_config.json     the resolved TrainConfig of the latest run
      metrics.jsonl         one line per log_every steps: step, loss, pred_loss, sigreg_loss, rollout_loss,
                            lr, seconds, samples_per_s; and {step, val_pred_loss, seconds} lines
      config.json, model.safetensors, train_state.{json,safetensors}   (see checkpoint.py)

Rerunning with the same ``out`` resumes from the saved step; a finished run is a no-op.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from worldmodel.checkpoint import (
    has_train_state,
    load_config,
    load_model_weights,
    load_train_state,
    read_train_state,
    save_checkpoint,
)
from worldmodel.config import ModelConfig, TrainConfig
from worldmodel.device import resolve_device
from worldmodel.model import JEPA
from worldmodel.progress import JsonlLogger, ProgressBar


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step``: linear warm-up to ``lr``, then cosine decay to ``min_lr_ratio * lr``."""
    min_lr = cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step >= cfg.steps:
        return min_lr
    decay = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * decay)) * (cfg.lr - min_lr)


def configure_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices/kernels only (not on norms, biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def split_episodes(episode_ids: list[int], val_fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic episode-level split: the last ``round(n * val_fraction)`` episodes are held out.

    At least one episode is held out when ``val_fraction > 0`` and there are two or
    more, and at least one is always kept for training.
    """
    ids = sorted(int(i) for i in episode_ids)
    n_val = int(round(len(ids) * val_fraction))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, max(0, len(ids) - 1))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def build_datasets(model_cfg: ModelConfig, train_cfg: TrainConfig) -> tuple[Dataset, Dataset | None]:
    """Training and held-out ``data.WindowDataset`` for ``train_cfg.data``, windows from ``model_cfg``.

    The split is by episode (``split_episodes``); ``WindowDataset.from_config`` checks the
    dataset's action_dim and frame size against the model config.
    """
    from data import WindowDataset, open_dataset  # lazy: the data layer pulls in Lance

    if not train_cfg.data:
        raise ValueError("no dataset given: set TrainConfig.data (--data PATH, a folder made by `wm collect`)")
    ids = [e["episode_id"] for e in open_dataset(train_cfg.data).episodes()]
    if not ids:
        raise ValueError(f"dataset {train_cfg.data} has no episodes")
    train_ids, val_ids = split_episodes(ids, train_cfg.val_fraction)

    def windows(episode_ids: list[int]) -> Dataset:
        return WindowDataset.from_config(train_cfg.data, model_cfg, episode_ids=episode_ids, cache=train_cfg.cache)

    return windows(train_ids), (windows(val_ids) if val_ids else None)


def collate(batch: Any) -> dict:
    """Keep a batch dict returned by ``__getitems__`` as is; stack a list of item dicts otherwise."""
    return batch if isinstance(batch, dict) else default_collate(batch)


def infinite(loader: DataLoader) -> Iterator[dict]:
    """Yield batches forever, starting a new epoch (new shuffle) whenever one ends."""
    while True:
        yield from loader


@torch.no_grad()
def estimate_val_loss(model: JEPA, loader: DataLoader, device: torch.device, autocast: Any) -> float:
    """Mean ``pred_loss`` over ``loader`` in eval mode (BatchNorm uses running statistics)."""
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        with autocast():
            out = model.loss(batch["pixels"].to(device), batch["actions"].to(device))
        n = len(batch["pixels"])
        total += out["pred_loss"].item() * n  # .item() syncs the device; fine, this runs rarely
        count += n
    model.train()
    return total / max(count, 1)


def _config_diff(saved: ModelConfig, given: ModelConfig) -> str:
    a, b = saved.to_dict(), given.to_dict()
    return ", ".join(f"{k}: saved {a[k]!r} vs given {b[k]!r}" for k in a if a[k] != b[k])


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    dataset: Dataset | None = None,
    val_dataset: Dataset | None = None,
) -> dict:
    """Train a ``JEPA`` and write checkpoints and metrics to ``train_cfg.out``.

    Args:
        model_cfg: architecture; must match the checkpoint when resuming.
        train_cfg: run settings.
        dataset: training windows (items ``{"pixels": uint8 (n, C, H, W), "actions":
            float32 (n - 1, A_block), ...}``, or a batch dict from ``__getitems__``).
            Built from ``train_cfg.data`` when None.
        val_dataset: held-out windows; built with ``dataset`` when that is None.

    Returns:
        summary dict: ``steps`` (reached), ``start_step``, ``steps_run``, ``loss``,
        ``pred_loss``, ``sigreg_loss``, ``val_pred_loss`` (or None), ``seconds``,
        ``steps_per_s``, ``samples_per_s``, ``device``, ``out``.
    """
    out = Path(train_cfg.out)
    t_start = time.perf_counter()

    # ---- resume? (a finished run returns before touching any data)
    start_step = 0
    if has_train_state(out):
        saved_cfg = load_config(out)
        if saved_cfg != model_cfg:
            raise ValueError(f"{out} holds a run with another model config ({_config_diff(saved_cfg, model_cfg)}); "
                             f"use the same config to resume, or another --out")
        saved = read_train_state(out)
        start_step = int(saved["step"] or 0)
        if start_step >= train_cfg.steps:
            last = saved["train_state"].get("last", {})
            return {**last, "steps": start_step, "start_step": start_step, "steps_run": 0, "seconds": 0.0,
                    "out": str(out), "finished": True}

    # ---- setup
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    device = resolve_device(train_cfg.device)
    torch.manual_seed(train_cfg.seed)
    use_amp = train_cfg.amp and device.type == "cuda"

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()

    if dataset is None:
        dataset, built_val = build_datasets(model_cfg, train_cfg)
        val_dataset = val_dataset if val_dataset is not None else built_val
    if len(dataset) < train_cfg.batch_size:
        raise ValueError(f"the training set has {len(dataset)} windows, fewer than batch_size={train_cfg.batch_size}; "
                         f"lower --batch-size or collect more episodes")

    model = JEPA(model_cfg).to(device)
    optimizer = configure_optimizer(model, train_cfg, device)
    if start_step > 0:
        load_model_weights(out, model)
        start_step = load_train_state(out, optimizer)
    # Reseed so a resumed run draws fresh (but reproducible) data order and SIGReg projections.
    torch.manual_seed(train_cfg.seed + start_step)
    loader_gen = torch.Generator().manual_seed(train_cfg.seed + start_step)
    pin = device.type == "cuda"
    workers = train_cfg.num_workers
    # Workers are spawned, not forked: Lance (the data layer) is not fork-safe. The
    # start method is set on this loader only, never process-wide.
    loader = DataLoader(dataset, batch_size=train_cfg.batch_size, shuffle=True, drop_last=True,
                        collate_fn=collate, num_workers=workers, pin_memory=pin, generator=loader_gen,
                        persistent_workers=workers > 0, multiprocessing_context="spawn" if workers > 0 else None)
    val_loader = None
    if val_dataset is not None and len(val_dataset) > 0 and train_cfg.val_every > 0:
        # A fixed random subset of held-out windows, the same at every evaluation.
        g = torch.Generator().manual_seed(train_cfg.seed)
        subset = torch.randperm(len(val_dataset), generator=g)[: train_cfg.val_batches * train_cfg.batch_size]
        val_loader = DataLoader(Subset(val_dataset, sorted(subset.tolist())), batch_size=train_cfg.batch_size,
                                collate_fn=collate, num_workers=0, pin_memory=pin)

    out.mkdir(parents=True, exist_ok=True)
    resolved = {**train_cfg.to_dict(), "device": str(device)}
    (out / "train_config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    logger = JsonlLogger(out / "metrics.jsonl")
    bar = ProgressBar(train_cfg.steps, desc="train", initial=start_step, enabled=train_cfg.progress)

    # ---- loop
    model.train()
    batches = infinite(loader)
    step = start_step
    last: dict[str, Any] = {}
    val_loss: float | None = None
    keys = ("loss", "pred_loss", "sigreg_loss", "rollout_loss")
    acc = torch.zeros(len(keys), device=device)  # running sums of the losses (no sync per step)
    acc_steps, t_log, t_loop = 0, time.perf_counter(), time.perf_counter()

    def checkpoint() -> None:
        save_checkpoint(out, model, train_state={"last": last}, optimizer=optimizer, step=step,
                        extra={"train_config": resolved})

    try:
        while step < train_cfg.steps:
            lr = get_lr(step, train_cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = next(batches)
            pixels = batch["pixels"].to(device, non_blocking=pin)
            actions = batch["actions"].to(device, non_blocking=pin)
            with autocast():
                losses = model.loss(pixels, actions)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if train_cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            step += 1
            acc += torch.stack([losses[k].detach().float() for k in keys])
            acc_steps += 1
            bar.update(1)

            if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                now = time.perf_counter()
                means = (acc / acc_steps).tolist()  # .tolist() syncs the device
                last = {"step": step, **dict(zip(keys, means)), "lr": lr,
                        "seconds": now - t_start,
                        "samples_per_s": acc_steps * train_cfg.batch_size / max(now - t_log, 1e-9)}
                logger.log(last)
                bar.update(0, loss=means[0], pred=means[1])
                acc.zero_()
                acc_steps, t_log = 0, now
            if val_loader is not None and (step % train_cfg.val_every == 0 or step == train_cfg.steps):
                val_loss = estimate_val_loss(model, val_loader, device, autocast)
                last["val_pred_loss"] = val_loss
                logger.log({"step": step, "val_pred_loss": val_loss, "seconds": time.perf_counter() - t_start})
            if step % train_cfg.ckpt_every == 0 or step == train_cfg.steps:
                checkpoint()
    except KeyboardInterrupt:
        if step > start_step:
            checkpoint()  # keep the progress made; rerun to resume
        raise
    finally:
        bar.close()
        logger.close()

    seconds = time.perf_counter() - t_loop
    steps_run = step - start_step
    return {
        "steps": step,
        "start_step": start_step,
        "steps_run": steps_run,
        "loss": last.get("loss"),
        "pred_loss": last.get("pred_loss"),
        "sigreg_loss": last.get("sigreg_loss"),
        "val_pred_loss": val_loss,
        "seconds": time.perf_counter() - t_start,
        "steps_per_s": steps_run / max(seconds, 1e-9),
        "samples_per_s": steps_run * train_cfg.batch_size / max(seconds, 1e-9),
        "device": str(device),
        "out": str(out),
        "finished": True,
    }
