"""Training loop for the world models of every family, nanoGPT-style: config, data, model, optimizer, loop.

    out/
      train_config.json     the resolved TrainConfig of the latest run, with ``device`` and ``world_size``
      metrics.jsonl         one line per log_every steps: step, every loss term the model's ``loss`` returns
                            (``loss`` first; lewm: loss, pred_loss, sigreg_loss, rollout_loss), lr, seconds,
                            samples_per_s; and {step, val_pred_loss, seconds} lines
      events.out.tfevents.* the same curves for TensorBoard (``train/<key>``, ``val/pred_loss``; --no-tensorboard: none)
      config.json, model.safetensors, train_state.{json,safetensors}   (see checkpoint.py)
      episodes.<sha>.json   the training and validation episodes' ids and identities (seed, policy,
                            split, factors; worldmodel/episode_record.py), so that `wm eval` refuses them

Rerunning with the same ``out`` resumes from the saved step and continues exactly: batch b
of a run is always batch b of the seeded per-epoch order (``ResumableBatches``), the
regularisers' random projections follow the step, metrics.jsonl lines a crash left after
the checkpoint are dropped, and an interrupted logging interval's partial sums are kept, so
an interrupted and resumed run writes the lines of an uninterrupted one, each step once.
A finished run is a no-op. A run whose loss (or weights) become NaN or infinite stops with
``TrainingDiverged`` naming the step; a checkpoint is only ever written from finite
weights, so the last good one is kept.

Several processes (DDP): ``torchrun --nproc-per-node N -m worldmodel train ...`` (gloo on
CPU, NCCL on CUDA, one GPU per process). ``--batch-size`` is the union batch over the
processes; each reads its shard (``data.WindowSampler``), BatchNorm and SIGReg use
union-batch statistics and the same random projections on every rank, so the loss and
gradients are those of one process on the union batch. Only rank 0 writes files.
``--grad-accum K`` accumulates K batches per optimiser step; ``--amp`` runs bf16 autocast
(on CPU too); ``--compile`` runs the loss through ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from worldmodel.checkpoint import (
    dataset_identity,
    has_train_state,
    load_config,
    load_episode_record,
    load_model_weights,
    load_train_state,
    prune_episode_records,
    read_train_state,
    save_checkpoint,
    save_episode_record,
)
from worldmodel.episode_record import merge_records, record_of_datasets
from worldmodel.config import TrainConfig, WorldModelConfig
from worldmodel.device import cpu_has_fast_bf16, keep_freed_memory, resolve_device
from worldmodel.families import WorldModel, build_model
from worldmodel.paths import check_output_dir
from worldmodel.progress import JsonlLogger, ProgressBar


class TrainingDiverged(ValueError):
    """The loss or the weights became NaN or infinite; the message names the step and the saved checkpoint."""


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


def build_datasets(model_cfg: WorldModelConfig, train_cfg: TrainConfig) -> tuple[Dataset, Dataset | None]:
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


def loss_keys(losses: dict[str, torch.Tensor]) -> list[str]:
    """The names of the loss terms a model's ``loss`` returned, ``"loss"`` first, the rest in its order.

    Raises ``ValueError`` if there is no ``"loss"`` or a term is not a scalar tensor.
    """
    if not isinstance(losses, dict) or "loss" not in losses:
        raise ValueError(f"a model's loss() must return a dict with a 'loss' entry, got {type(losses).__name__} "
                         f"{list(losses) if isinstance(losses, dict) else ''}")
    for k, v in losses.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor) or v.numel() != 1:
            raise ValueError(f"loss term {k!r} must be a scalar tensor, got {type(v).__name__} "
                             f"{tuple(v.shape) if isinstance(v, torch.Tensor) else ''}")
    return ["loss", *[k for k in losses if k != "loss"]]


def collate(batch: Any) -> dict:
    """Keep a batch dict returned by ``__getitems__`` as is; stack a list of item dicts otherwise."""
    return batch if isinstance(batch, dict) else default_collate(batch)


@torch.no_grad()
def estimate_val_loss(model: WorldModel, loader: DataLoader, device: torch.device, autocast: Any) -> float:
    """Mean ``pred_loss`` (``loss`` for a family without that term) over ``loader`` in eval mode
    (BatchNorm uses running statistics)."""
    model.eval()
    total, count = 0.0, 0
    runner = LossModule(model)
    for batch in loader:
        with autocast():
            out = runner(batch["pixels"].to(device), batch["actions"].to(device), *loss_inputs(model, batch, device))
        n = len(batch["pixels"])
        total += out.get("pred_loss", out["loss"]).item() * n  # .item() syncs the device; fine, this runs rarely
        count += n
    model.train()
    return total / max(count, 1)


def window_rows(cfg: WorldModelConfig) -> int:
    """Dataset rows one training window spans: ``(context + pred_steps - 1) * frameskip + 1``."""
    return (cfg.window - 1) * cfg.frameskip + 1


def too_few_windows_message(num_windows: int, batch_size: int, model_cfg: WorldModelConfig,
                            episode_lengths: Any = None) -> str:
    """Why ``num_windows`` windows cannot fill a batch of ``batch_size``, and what to change.

    With no window at all and ``episode_lengths`` known (rows per training episode), the
    episodes are too short for the window, which a smaller batch cannot fix: the message
    compares the longest episode with the window's span and names the settings that fit.
    """
    if num_windows == 0 and episode_lengths is not None and len(episode_lengths) > 0:
        longest = int(max(episode_lengths))
        c, h, f = model_cfg.context, model_cfg.pred_steps, model_cfg.frameskip
        fixes = []
        if longest >= 2 and (longest - 1) // (model_cfg.window - 1) >= 1:
            fixes.append(f"--frameskip {(longest - 1) // (model_cfg.window - 1)} or less")
        max_h = (longest - 1) // f - c + 1
        if max_h >= max(0, 2 - c) and max_h < h:
            fixes.append(f"--pred-steps {max_h} or less")
        fixes.append("collect longer episodes (e.g. more --max-steps, or a policy that does not end early)")
        return (f"no training window fits in the episodes: the longest training episode has {longest} rows, but a "
                f"window of context={c} + pred_steps={h} frames at frameskip={f} spans {window_rows(model_cfg)} rows "
                f"(a smaller --batch-size cannot help); use " + ", or ".join(fixes))
    fix = f"lower --batch-size to {num_windows} or less, or " if num_windows >= 2 else ""
    return (f"the training set has {num_windows} windows, fewer than batch_size={batch_size}; "
            f"{fix}collect more episodes")


def nonfinite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the model's floating-point parameters and buffers holding NaN or inf (one device sync)."""
    named = [(k, v) for k, v in model.state_dict().items() if v.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(v).all() for _, v in named]).tolist()  # .tolist() syncs the device
    return [k for (k, _), ok in zip(named, finite) if not ok]


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is torch (CPU or device) or Python running out of memory."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err)
    return "can't allocate memory" in text or "out of memory" in text.lower()


def _sizes(cfg: WorldModelConfig) -> str:
    return (f"image_size={cfg.image_size}, window={cfg.window} frames, embed_dim={cfg.embed_dim}, "
            f"encoder_width={cfg.encoder_width}, predictor_width={cfg.predictor_width}")


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        pass


def _config_diff(saved: WorldModelConfig, given: WorldModelConfig) -> str:
    a, b = saved.to_dict(), given.to_dict()
    return ", ".join(f"{k}: saved {a.get(k)!r} vs given {b.get(k)!r}" for k in {**a, **b} if a.get(k) != b.get(k))


class LossModule(torch.nn.Module):
    """``forward(pixels, actions) -> model.loss(pixels, actions)``: what DDP and ``torch.compile``
    wrap (DDP synchronises gradients only for work done inside a wrapped ``forward``)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor, actions: torch.Tensor,
                episode_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """pixels uint8 (B, n, C, H, W), actions (B, n - 1, A_block), episode_ids int (B,) or None
        (given only to a model that `uses_episode_ids`) -> the model's loss dict."""
        if episode_ids is None:
            return self.model.loss(pixels, actions)
        return self.model.loss(pixels, actions, episode_ids=episode_ids)


def loss_inputs(model: torch.nn.Module, batch: dict, device: torch.device) -> tuple[torch.Tensor, ...]:
    """What a batch adds to ``(pixels, actions)`` for `model`'s loss: ``(episode_ids,)`` (int64 (B,),
    on `device`) for a model that `uses_episode_ids`, else nothing."""
    if not getattr(model, "uses_episode_ids", False):
        return ()
    return (torch.as_tensor(batch["episode_id"]).to(device),)


def setup_distributed(device: torch.device) -> tuple[int, int, bool]:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment).

    Uses the group already initialised by the caller if there is one. The backend is NCCL
    for CUDA devices, gloo otherwise. Returns ``(rank, world_size, created)``; ``created``:
    this call initialised the group (``train`` then destroys it when it ends).
    """
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), True


class ResumableBatches:
    """Infinite batch sampler: ``sampler``'s batches epoch after epoch, from batch ``start`` on.

    Batch b of the run is batch ``b % len(sampler)`` of epoch ``b // len(sampler)``, whatever
    the run was resumed from, so a resumed run reads exactly the batches the uninterrupted
    one would have read. ``sampler``: a ``data.WindowSampler`` with ``batch_size`` (one
    rank's shard of every union batch under DDP).
    """

    def __init__(self, sampler: Any, start: int = 0):
        if len(sampler) < 1:
            raise ValueError("the sampler yields no batch (fewer windows than one batch)")
        self.sampler, self.start = sampler, int(start)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = divmod(self.start, len(self.sampler))
        while True:
            self.sampler.set_epoch(epoch)
            for i, batch in enumerate(self.sampler):
                if i >= skip:
                    yield batch
            skip, epoch = 0, epoch + 1


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines of ``path`` (metrics.jsonl) logged after ``step`` (and a torn last line).

    A resumed run continues from its checkpoint's step; lines a crashed run wrote after
    that checkpoint would otherwise appear twice.
    """
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if line.endswith("\n") and isinstance(record, dict) and int(record.get("step", 0)) <= step:
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep))
    tmp.replace(path)


class _NoLogger:
    """Stands in for ``JsonlLogger`` on ranks other than 0 (which write nothing)."""

    def log(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (no autograd) of a tensor on any device; a no-op in one process."""
    from worldmodel.distributed import is_distributed

    if not is_distributed():
        return tensor
    import torch.distributed as dist

    comm = tensor if (dist.get_backend() == "nccl") == tensor.is_cuda else tensor.cpu()
    dist.all_reduce(comm, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    if comm is not tensor:
        tensor.copy_(comm)
    return tensor


def amp_enabled(device: torch.device, amp: bool | None) -> bool:
    """Whether ``amp`` (None: CUDA only; True / False: on any device / nowhere) asks for bf16 autocast on `device`."""
    return device.type == "cuda" if amp is None else bool(amp)


def autocast_context(device: torch.device, amp: bool | None) -> Any:
    """The context training's forward passes run in: bfloat16 autocast or nothing.

    ``amp`` None: bfloat16 on CUDA only (the default); True: bfloat16 on any device, CPU
    included (where matrix products then run in bf16; SIGReg and the other regularisers
    stay float32); False: float32 everywhere.
    """
    if not amp_enabled(device, amp):
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def accumulate_gradients(runner: Any, model: torch.nn.Module, batches: Iterator[dict], accum: int,
                         keys: list[str], device: torch.device, autocast: Any = contextlib.nullcontext,
                         seed: int = 0, first: int = 0, ddp: Any = None, augment: str = "none") -> torch.Tensor:
    """Forward and backward ``accum`` micro-batches from ``batches``, adding ``grad(loss) / accum``
    into the parameters' ``.grad``; return the losses ``keys`` averaged over them (float32 (K,)).
    An empty ``keys`` list is filled in place with the terms the model's loss returns
    (`loss_keys`: ``"loss"`` first).

    ``runner(pixels, actions)`` returns the loss dict (the model's ``loss``, maybe wrapped in
    DDP or compiled; a model that `uses_episode_ids` also gets the batch's ``episode_id``:
    `loss_inputs`); micro-batch m draws the regularisers' projections from ``(seed, first + m)``.
    The gradient is that of the mean of the micro-batch losses: for a loss that is a mean over
    samples, the gradient of one batch of ``accum`` times the size. BatchNorm and SIGReg are
    batch statistics: they are computed per micro-batch (as one batch of the micro size would),
    so with them the result is the mean of ``accum`` micro-batch gradients, not that of the
    big batch. Under DDP (``ddp``: the wrapper) gradients are all-reduced once, after the last.
    ``augment`` (`worldmodel.augment`) transforms micro-batch m's frames with draw ``(seed, first + m)``.
    """
    from worldmodel.augment import PER_EPISODE, augment_frames, augment_generator
    from worldmodel.regularizers import set_regularizer_step

    pin = device.type == "cuda"
    values: torch.Tensor | None = None
    for micro in range(accum):
        batch = next(batches)
        pixels = batch["pixels"]
        if augment != "none":
            ids = batch.get("episode_id") if augment in PER_EPISODE else None
            pixels = augment_frames(pixels, augment, augment_generator(seed, first + micro),
                                    None if ids is None else torch.as_tensor(ids))
        pixels = pixels.to(device, non_blocking=pin)
        actions = batch["actions"].to(device, non_blocking=pin)
        # the regularisers' random projections: the same on every rank, and on resume
        set_regularizer_step(model, seed, first + micro)
        sync = ddp is None or micro == accum - 1
        with (contextlib.nullcontext() if sync else ddp.no_sync()):
            with autocast():
                losses = runner(pixels, actions, *loss_inputs(model, batch, device))
            (losses["loss"] / accum).backward()
        if not keys:
            keys.extend(loss_keys(losses))
        step_values = torch.stack([losses[k].detach().float() for k in keys]) / accum
        values = step_values if values is None else values + step_values
    return values


def train(
    model_cfg: WorldModelConfig,
    train_cfg: TrainConfig,
    dataset: Dataset | None = None,
    val_dataset: Dataset | None = None,
) -> dict:
    """Train the world model of ``model_cfg.family`` and write checkpoints and metrics to ``train_cfg.out``.

    Args:
        model_cfg: the family's config (``build_model``); must match the checkpoint when resuming.
        train_cfg: run settings.
        dataset: training windows (items ``{"pixels": uint8 (n, C, H, W), "actions":
            float32 (n - 1, A_block), ...}``, or a batch dict from ``__getitems__``).
            Built from ``train_cfg.data`` when None.
        val_dataset: held-out windows; built with ``dataset`` when that is None.

    Under ``torchrun`` (or inside a process group the caller initialised) every rank runs
    this with the same arguments: each reads its shard of every batch of ``batch_size``
    windows (``batch_size`` is the union over ranks, divisible by the world size),
    BatchNorm and the regularisers use union-batch statistics, and only rank 0 writes
    files. Checkpoints are read by every rank on resume (a shared folder).

    Returns:
        summary dict: ``steps`` (reached), ``start_step``, ``steps_run``, ``loss``,
        ``pred_loss``, every other loss term of the family (lewm: ``sigreg_loss``,
        ``rollout_loss``), ``val_pred_loss`` (or None; rank 0 only under DDP), ``seconds``,
        ``steps_per_s``, ``samples_per_s``, ``device``, ``amp`` (bf16 autocast as run: an amp
        request on a CPU without native bf16 products trains in float32, said on stderr),
        ``world_size``, ``out``.
    """
    out = check_output_dir(train_cfg.out)
    t_start = time.perf_counter()

    # ---- resume? (a finished run returns before touching any data)
    start_step = 0
    saved_state: dict[str, Any] = {}
    if has_train_state(out):
        saved_cfg = load_config(out)
        if saved_cfg != model_cfg:
            raise ValueError(f"{out} holds a run with another model config ({_config_diff(saved_cfg, model_cfg)}); "
                             f"use the same config to resume, or another --out")
        saved = read_train_state(out)
        start_step = int(saved["step"] or 0)
        saved_state = saved["train_state"]
        if start_step >= train_cfg.steps:
            last = saved_state.get("last", {})
            return {**last, "steps": start_step, "start_step": start_step, "steps_run": 0, "seconds": 0.0,
                    "total_seconds": float(saved_state.get("elapsed_seconds", 0.0)), "out": str(out),
                    "finished": True}

    # ---- setup
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    device = resolve_device(train_cfg.device)
    rank, world, created_group = setup_distributed(device)
    try:
        return _train(model_cfg, train_cfg, dataset, val_dataset, out, t_start, start_step, saved_state,
                      device, rank, world)
    finally:
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(model_cfg: WorldModelConfig, train_cfg: TrainConfig, dataset: Dataset | None, val_dataset: Dataset | None,
           out: Path, t_start: float, start_step: int, saved_state: dict, device: torch.device, rank: int,
           world: int) -> dict:
    """The body of ``train`` once the process group (if any) is set up."""
    from data.windows import EpisodeGroupSampler, WindowSampler

    from worldmodel.distributed import convert_batchnorm

    main = rank == 0
    if device.type == "cuda" and world > 1:
        import os

        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    if train_cfg.batch_size % world:
        raise ValueError(f"batch_size={train_cfg.batch_size} (the union batch over ranks) must be divisible by the "
                         f"world size {world}")
    rank_batch = train_cfg.batch_size // world
    accum = train_cfg.grad_accum
    torch.manual_seed(train_cfg.seed)
    amp = amp_enabled(device, train_cfg.amp)
    if amp and device.type == "cpu" and not cpu_has_fast_bf16():
        if main:
            _say("train: amp (bf16 autocast) was asked for, but this CPU has no native bf16 matrix products "
                 "(AVX2 only: emulated bf16 runs ~100x slower than float32): training in float32")
        amp = False
    autocast = autocast_context(device, amp)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults on the activations every step (worldmodel/device.py)

    if dataset is None:
        if train_cfg.progress and main:
            _say(f"train: reading windows of {train_cfg.data}" + (" into RAM (--no-cache reads them per batch)"
                                                                  if train_cfg.cache else ""))
        dataset, built_val = build_datasets(model_cfg, train_cfg)
        val_dataset = val_dataset if val_dataset is not None else built_val
        if train_cfg.progress and main:
            _say(f"train: {len(dataset)} training windows, {0 if built_val is None else len(built_val)} held-out; "
                 f"{train_cfg.steps} steps of {train_cfg.batch_size}"
                 + (f" x {accum} accumulated" if accum > 1 else "") + f" on {device}"
                 + (f" x {world} processes" if world > 1 else ""))
    if len(dataset) < train_cfg.batch_size:
        raise ValueError(too_few_windows_message(len(dataset), train_cfg.batch_size, model_cfg,
                                                 getattr(dataset, "episode_lengths", None)))

    try:
        model = build_model(model_cfg).to(device)
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        raise ValueError(f"the model does not fit in memory on {device} ({_sizes(model_cfg)}): "
                         f"{str(err).splitlines()[0][:200]}; choose smaller sizes") from None
    if world > 1:
        model = convert_batchnorm(model, device)  # BatchNorm statistics over the union batch
    optimizer = configure_optimizer(model, train_cfg, device)
    if start_step > 0:
        load_model_weights(out, model)
        start_step = load_train_state(out, optimizer)
    runner: torch.nn.Module = LossModule(model)
    ddp = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = runner = DistributedDataParallel(runner, device_ids=[device.index] if device.type == "cuda" else None,
                                               broadcast_buffers=False)  # BatchNorm buffers agree already
    if train_cfg.compile:
        runner = torch.compile(runner)
    # Reseed so a resumed run draws fresh (but reproducible) dropout masks; the data order
    # and the regularisers' projections follow the step (ResumableBatches, set_regularizer_step).
    torch.manual_seed(train_cfg.seed + start_step)
    pin = device.type == "cuda"
    workers = train_cfg.num_workers
    if getattr(model, "uses_episode_ids", False):  # batches of several windows per episode
        group = int(model_cfg.sigreg_group)
        if rank_batch % group:
            raise ValueError(f"sigreg_center='episode' takes sigreg_group={group} windows per episode: the batch of "
                             f"{rank_batch} windows" + (" per process" if world > 1 else "")
                             + f" must be a multiple of {group}")
        if not hasattr(dataset, "window_episodes"):
            raise ValueError(f"sigreg_center='episode' needs each window's episode: a data.WindowDataset, got "
                             f"{type(dataset).__name__}")
        sampler: Any = EpisodeGroupSampler(dataset.window_episodes, rank_batch, group, seed=train_cfg.seed, rank=rank,
                                           world_size=world)
        if len(sampler) < 1:
            raise ValueError(f"sigreg_center='episode': {sampler.num_groups} groups of {group} windows of one episode "
                             f"in {len(dataset)} windows, fewer than one batch of {rank_batch} needs per process; "
                             f"collect more or longer episodes, or lower sigreg_group")
    else:
        sampler = WindowSampler(len(dataset), batch_size=rank_batch, shuffle=True, seed=train_cfg.seed, rank=rank,
                                world_size=world, drop_last=True)
    # Workers are spawned, not forked: Lance (the data layer) is not fork-safe. The
    # start method is set on this loader only, never process-wide.
    loader = DataLoader(dataset, batch_sampler=ResumableBatches(sampler, start_step * accum), collate_fn=collate,
                        num_workers=workers, pin_memory=pin, persistent_workers=workers > 0,
                        multiprocessing_context="spawn" if workers > 0 else None)
    val_loader = None
    if main and val_dataset is not None and len(val_dataset) > 0 and train_cfg.val_every > 0:
        # A fixed random subset of held-out windows, the same at every evaluation.
        g = torch.Generator().manual_seed(train_cfg.seed)
        subset = torch.randperm(len(val_dataset), generator=g)[: train_cfg.val_batches * train_cfg.batch_size]
        val_loader = DataLoader(Subset(val_dataset, sorted(subset.tolist())), batch_size=train_cfg.batch_size,
                                collate_fn=collate, num_workers=0, pin_memory=pin)

    resolved = {**train_cfg.to_dict(), "device": str(device), "world_size": world}
    trained_on = dataset_identity(train_cfg.data)  # env id etc., checked by `wm eval`
    seen_info = None
    writer = None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        # the episodes this run trains and validates on (with those of the run it resumes), refused by `wm eval`
        seen = record_of_datasets(dataset, val_dataset)
        if start_step > 0:
            earlier = load_episode_record(out)
            seen = merge_records(earlier, seen) if seen else earlier
        seen_info = save_episode_record(out, seen) if seen else None
        (out / "train_config.json").write_text(json.dumps(resolved, indent=2) + "\n")
        truncate_metrics(out / "metrics.jsonl", start_step)  # lines a crash left after the checkpoint
        logger: Any = JsonlLogger(out / "metrics.jsonl")
        if train_cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # beside metrics.jsonl; events after the checkpoint a crashed run wrote are hidden
            writer = SummaryWriter(log_dir=str(out), purge_step=start_step + 1 if start_step > 0 else None)
    else:
        logger = _NoLogger()
    bar = ProgressBar(train_cfg.steps, desc="train", initial=start_step, enabled=train_cfg.progress and main)

    # ---- loop
    model.train()
    batches = iter(loader)
    step = start_step
    last: dict[str, Any] = dict(saved_state.get("last", {}))
    earlier = float(saved_state.get("elapsed_seconds", 0.0))  # training seconds of the sessions before this one
    val_loss: float | None = None
    keys: list[str] = []  # the loss terms the model returns, "loss" first (set by the first step)
    acc = torch.zeros(0, device=device)  # running sums of the losses (no sync per step)
    acc_steps = 0
    log_acc = saved_state.get("log_acc")  # the partial sums of an interrupted logging interval
    # The first step whose losses were not all finite (-1: none yet) and those losses, kept on the
    # device so that watching for divergence costs no sync per step; `check_finite` reads them.
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    bad_losses = torch.zeros(0, device=device)
    t_log, t_loop = time.perf_counter(), time.perf_counter()
    saved_step: int | None = start_step if start_step > 0 else None

    def kept() -> str:
        if saved_step is None:
            return "no checkpoint was written"
        return f"the last good checkpoint (step {saved_step}) is kept in {out}"

    def check_finite(weights: bool = False) -> None:
        """Raise ``TrainingDiverged`` if a step's loss (or, with ``weights``, a weight) is not finite.

        Under DDP the ranks agree (the earliest bad step of any rank), so all of them stop.
        """
        never = torch.iinfo(torch.long).max
        earliest = _all_reduce_(torch.where(first_bad < 0, torch.full_like(first_bad, never), first_bad), op="min")
        bad_step = int(earliest.item())  # .item() syncs the device; called every log_every steps or rarer
        if bad_step != never:
            terms = ", ".join(f"{k}={v:.4g}" for k, v in zip(keys, bad_losses.tolist()))
            weight = getattr(model_cfg, "sigreg_weight", None)
            raise TrainingDiverged(
                f"training stopped: the loss became non-finite at step {bad_step} ({terms}); {kept()}. "
                f"Lower --lr (now {train_cfg.lr:g})"
                + (f" or --sigreg-weight (now {weight:g})" if weight is not None else "") + ", or check the data")
        bad = nonfinite_tensors(model) if weights else []
        if bad:
            raise TrainingDiverged(
                f"training stopped: after step {step} the model's weights are non-finite "
                f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) although every loss so far was finite; "
                f"{kept()}. Lower --lr (now {train_cfg.lr:g}) or check the data")

    def checkpoint(synced: bool = True) -> None:
        nonlocal saved_step
        if synced:
            check_finite(weights=True)  # a NaN step is never saved over a good checkpoint
            sums = _all_reduce_(acc.clone()) / world  # a collective: every rank takes part
        elif nonfinite_tensors(model):
            raise TrainingDiverged(f"not saving the weights of step {step}: they are non-finite")
        else:
            sums = acc  # interrupted (no collective possible): under DDP rank 0's own partial sums
        if main:
            extra = {"train_config": resolved, "dataset": trained_on, **({"episodes": seen_info} if seen_info else {})}
            log_state = {"keys": list(keys), "steps": acc_steps, "sums": sums.tolist()}
            elapsed = earlier + time.perf_counter() - t_start
            save_checkpoint(out, model, train_state={"last": last, "log_acc": log_state, "elapsed_seconds": elapsed},
                            optimizer=optimizer, step=step, extra=extra)
            if seen_info:  # config.json now names this run's record: drop older ones (a glob, cheap)
                prune_episode_records(out, keep=seen_info["file"])
        saved_step = step

    try:
        while step < train_cfg.steps:
            lr = get_lr(step, train_cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            values = accumulate_gradients(runner, model, batches, accum, keys, device, autocast,
                                          seed=train_cfg.seed, first=step * accum, ddp=ddp,
                                          augment=train_cfg.augment)
            if train_cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            step += 1
            if acc.numel() != len(keys):  # the first step: the model's loss terms are known now
                acc, bad_losses = torch.zeros(len(keys), device=device), torch.zeros(len(keys), device=device)
                if isinstance(log_acc, dict) and list(log_acc.get("keys", [])) == keys:
                    acc += torch.tensor(log_acc["sums"], dtype=acc.dtype, device=device)
                    acc_steps = int(log_acc["steps"])
            acc += values
            new_bad = (first_bad < 0) & ~torch.isfinite(values).all()
            first_bad = torch.where(new_bad, torch.full_like(first_bad, step), first_bad)
            bad_losses = torch.where(new_bad, values, bad_losses)
            acc_steps += 1
            bar.update(1)

            if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                check_finite()
                now = time.perf_counter()
                means = (_all_reduce_(acc.clone()) / (acc_steps * world)).tolist()  # .tolist() syncs the device
                last = {"step": step, **dict(zip(keys, means)), "lr": lr,
                        "seconds": now - t_start,
                        "samples_per_s": acc_steps * accum * train_cfg.batch_size / max(now - t_log, 1e-9)}
                logger.log(last)
                if writer is not None:
                    for k, v in last.items():
                        if k != "step":
                            writer.add_scalar(f"train/{k}", v, step)
                bar.update(0, loss=means[0], **({"pred": last["pred_loss"]} if "pred_loss" in last else {}))
                acc.zero_()
                acc_steps, t_log = 0, now
            if val_loader is not None and (step % train_cfg.val_every == 0 or step == train_cfg.steps):
                check_finite()
                val_loss = estimate_val_loss(model, val_loader, device, autocast)
                val_loss = val_loss if math.isfinite(val_loss) else None  # JSON null, never NaN
                last["val_pred_loss"] = val_loss
                logger.log({"step": step, "val_pred_loss": val_loss, "seconds": time.perf_counter() - t_start})
                if writer is not None and val_loss is not None:
                    writer.add_scalar("val/pred_loss", val_loss, step)
            if step % train_cfg.ckpt_every == 0 or step == train_cfg.steps:
                checkpoint()
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        raise ValueError(f"out of memory at step {step + 1} on {device} with batch_size={train_cfg.batch_size} "
                         f"({_sizes(model_cfg)}); lower --batch-size; {kept()}") from None
    except KeyboardInterrupt:
        if step > start_step and step != saved_step:
            with contextlib.suppress(TrainingDiverged):
                checkpoint(synced=False)  # keep the progress made (if finite); rerun to resume
        raise
    finally:
        bar.close()
        logger.close()
        if writer is not None:
            writer.close()

    seconds = time.perf_counter() - t_loop
    steps_run = step - start_step
    samples = steps_run * accum * train_cfg.batch_size
    return {
        "steps": step,
        "start_step": start_step,
        "steps_run": steps_run,
        "loss": last.get("loss"),
        "pred_loss": last.get("pred_loss"),
        **{k: last.get(k) for k in keys if k not in ("loss", "pred_loss")},
        "val_pred_loss": val_loss,
        "seconds": time.perf_counter() - t_start,
        "total_seconds": earlier + time.perf_counter() - t_start,  # this session's and the resumed ones'
        "steps_per_s": steps_run / max(seconds, 1e-9),
        "samples_per_s": samples / max(seconds, 1e-9),
        "device": str(device),
        "amp": amp,  # bf16 autocast as run (False: float32)
        "world_size": world,
        "out": str(out),
        "finished": True,
    }
