"""`wm bench train`: training throughput of a model preset and its fraction of this machine's GEMM rate.

Protocol (one process, one run, torch's thread count as set by ``--threads``):

1. Model: the preset's config (any family, ``--preset``; default ``lewm-tiny``), built with
   seed 0, train mode, AdamW as ``wm train`` configures it (``configure_optimizer``).
   Data: synthetic windows of the preset's shape, pixels uint8 (B, window, C, S, S)
   uniform in [0, 255] and actions (B, window - 1, A_block) standard normal, drawn once
   (two batches, used in turn): the uint8 -> float conversion is inside the model and
   timed, reading and decoding data is not. The C allocator keeps freed blocks for reuse, as
   ``wm train`` sets it on the CPU (``worldmodel.device.keep_freed_memory``).
2. One training step is what ``wm train``'s loop does per step with ``--grad-accum 1``:
   ``zero_grad``, forward and backward of ``model.loss`` (``accumulate_gradients``, under
   bf16 autocast for ``bfloat16``), gradient-norm clipping at 1, ``optimizer.step``.
3. FLOPs of one step: ``torch.utils.flop_counter.FlopCounterMode`` (matrix products,
   attention and convolutions, forward and backward) over one untimed step in float32; the
   same count serves bf16 autocast (the same products, in another precision). No timed step
   runs under the counter.
4. Timing, for float32 and (``--amp``) bfloat16 autocast, each on a fresh copy of the
   initial model: ``warmup`` untimed steps, then ``steps`` timed ones; the median counts.
5. GEMM rate per precision (float32 and bfloat16), measured with ``gemm_gflops``
   (``benchmarks/solvers.py``) on ``GEMM_ROWS`` rows at the same thread count, before and
   after the timings (the machine's speed drifts; the higher counts), for two sets of weight
   shapes: the model's own (every distinct ``nn.Linear`` weight shape) and the reference
   shapes of ``wm bench solvers`` (the ``lewm`` preset's predictor). The bound is the higher
   of the two, so a small model's narrow products do not lower the bar.

Result (``bench_train``; ``wm bench train --json``)::

    {"preset": str, "family": str, "batch_size": int, "window": int, "threads": int,
     "steps": int, "warmup": int,
     "flops_per_step": float,            # forward + backward FLOPs of one step
     "gflop_per_step": float,
     "gemm_gflops": {"float32": float, "bfloat16": float},   # the bound (see 5.)
     "gemm": {"rows": int, "model_shapes": [[in, out], ...], "reference_shapes": [[in, out], ...],
              "model": {"before": {dtype: GFLOP/s}, "after": {...}}, "reference": {...}},
     "precisions": {"float32": ROW, "bfloat16": ROW},        # bfloat16 only with amp
     "model": {"params": int, "config": {...}},
     "machine": {"torch": str, "threads": int, "cpu_count": int, "processor": str}}

    ROW = {"autocast": bool,             # bf16 autocast on (bfloat16) or off (float32)
           "samples_per_s": float,       # batch_size / step_seconds (windows per second)
           "step_seconds": float,        # median of the timed steps
           "step_seconds_all": [float],  # every timed step
           "gflop_per_step": float,
           "gflops": float,              # achieved: gflop_per_step / step_seconds
           "gemm_gflops": float,         # the bound of this precision
           "gemm_fraction": float}       # gflops / gemm_gflops
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.solvers import gemm_gflops, predictor_gemm_shapes

#: activation rows of the GEMM-rate measurement (a training step's products have thousands)
GEMM_ROWS = 4096

#: minimum timed seconds per GEMM round (3 rounds, the best counts) unless ``bench_train`` is given one
GEMM_SECONDS = 0.5

#: the precisions ``bench_train`` measures, with whether bf16 autocast is on
PRECISIONS = {"float32": False, "bfloat16": True}


def _log(log: Callable[[str], None] | None, line: str) -> None:
    if log is not None:
        log(line)


def model_gemm_shapes(model: torch.nn.Module) -> list[tuple[int, int]]:
    """(in, out) of every distinct ``nn.Linear`` weight of ``model`` that trains, in module order."""
    shapes: list[tuple[int, int]] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.weight.requires_grad:
            shape = (module.in_features, module.out_features)
            if shape not in shapes:
                shapes.append(shape)
    return shapes


def synthetic_batches(config: Any, batch_size: int, count: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``count`` training batches of ``config``'s shape: pixels uint8 (B, window, C, S, S), actions
    float32 (B, window - 1, A_block)."""
    gen = torch.Generator().manual_seed(seed)
    c = config
    return [{
        "pixels": torch.randint(0, 256, (batch_size, c.window, c.in_channels, c.image_size, c.image_size),
                                dtype=torch.uint8, generator=gen),
        "actions": torch.randn(batch_size, c.window - 1, c.block_dim, generator=gen),
    } for _ in range(count)]


class _Trainer:
    """One model, its optimiser and batches: ``step()`` runs one training step of ``wm train``."""

    def __init__(self, model: torch.nn.Module, batches: list[dict], amp: bool):
        from worldmodel.config import TrainConfig
        from worldmodel.train import LossModule, autocast_context, configure_optimizer

        self.device = torch.device("cpu")
        self.model = model.train()
        self.optimizer = configure_optimizer(model, TrainConfig(), self.device)
        self.runner = LossModule(model)
        self.autocast = autocast_context(self.device, amp)
        self.batches, self.n, self.keys = batches, 0, []

    def step(self) -> None:
        from worldmodel.train import accumulate_gradients

        self.optimizer.zero_grad(set_to_none=True)
        batch = iter([self.batches[self.n % len(self.batches)]])
        accumulate_gradients(self.runner, self.model, batch, 1, self.keys, self.device, self.autocast, seed=0,
                             first=self.n)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.n += 1


def count_step_flops(trainer: _Trainer) -> float:
    """FLOPs (forward + backward) of one ``trainer.step()``, counted by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.step()
    return float(counter.get_total_flops())


def time_steps(trainer: _Trainer, steps: int, warmup: int) -> list[float]:
    """Wall seconds of each of ``steps`` training steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        trainer.step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - t0)
    return times


def _positive_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def bench_train(
    preset: str = "lewm-tiny",
    batch_size: int = 32,
    steps: int = 10,
    warmup: int = 3,
    amp: bool = False,
    config: Any = None,
    gemm_seconds: float | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Samples/s, FLOPs per step and the fraction of the GEMM rate of one training step (module docstring).

    Args:
        preset: model preset of any family (``worldmodel.config.all_presets``).
        batch_size: windows per step (>= 2: BatchNorm and SIGReg use batch statistics).
        steps: timed steps per precision (the median counts); warmup: untimed steps before them.
        amp: also measure bf16 autocast (``wm train --amp``) beside float32.
        config: a config object to use instead of the preset (tests; ``preset`` is then only a label).
        gemm_seconds: minimum timed seconds per GEMM round (3 rounds, best counts); None: ``GEMM_SECONDS``.
        log: optional callable for progress lines.

    Returns:
        the dict described in the module docstring.
    """
    from worldmodel.config import TrainConfig
    from worldmodel.device import keep_freed_memory
    from worldmodel.families import build_model, get_family
    from worldmodel.trainargs import resolve_family

    _positive_int("batch_size", batch_size, 2)
    _positive_int("steps", steps)
    _positive_int("warmup", warmup, 0)
    gemm_seconds = GEMM_SECONDS if gemm_seconds is None else gemm_seconds
    if isinstance(gemm_seconds, bool) or not (isinstance(gemm_seconds, (int, float)) and gemm_seconds > 0):
        raise ValueError(f"gemm_seconds must be a positive number, got {gemm_seconds!r}")
    TrainConfig(batch_size=batch_size)  # the same check wm train makes
    keep_freed_memory()  # as wm train does on the CPU
    if config is None:
        config = get_family(resolve_family(None, preset, None)).config_cls.preset(preset)
    torch.manual_seed(0)
    initial = build_model(config)
    batches = synthetic_batches(config, batch_size)
    ref_config = get_family("lewm").config_cls.preset("lewm")
    shapes = {"model": model_gemm_shapes(initial), "reference": predictor_gemm_shapes(ref_config)}
    if not shapes["model"]:
        raise ValueError(f"preset {preset!r}: the model has no trainable nn.Linear weights to measure a GEMM rate on")

    def measure_gemm() -> dict[str, dict[str, float]]:
        return {kind: {name: gemm_gflops(config, GEMM_ROWS, getattr(torch, name), seconds=gemm_seconds, shapes=s)
                       for name in PRECISIONS} for kind, s in shapes.items()}

    _log(log, f"bench train: preset {preset}, batch {batch_size}, window {config.window}, "
              f"{torch.get_num_threads()} thread(s); measuring the GEMM rate")
    gemm_before = measure_gemm()
    flops = count_step_flops(_Trainer(copy.deepcopy(initial), batches, amp=False))
    _log(log, f"{flops / 1e9:.2f} GFLOP per step (forward + backward); GEMM GFLOP/s "
              + ", ".join(f"{k} {v:.0f}" for k, v in gemm_before["model"].items()))
    timed: dict[str, list[float]] = {}
    for name, autocast in PRECISIONS.items():
        if autocast and not amp:
            continue
        times = time_steps(_Trainer(copy.deepcopy(initial), batches, amp=autocast), steps, warmup)
        timed[name] = times
        _log(log, f"{name}{' autocast' if autocast else ''}: median {statistics.median(times) * 1e3:.0f} ms per step, "
                  f"{batch_size / statistics.median(times):.1f} samples/s")
    gemm_after = measure_gemm()
    bound = {name: max(run[kind][name] for run in (gemm_before, gemm_after) for kind in shapes) for name in PRECISIONS}
    precisions = {}
    for name, times in timed.items():
        seconds = statistics.median(times)
        achieved = flops / seconds / 1e9
        precisions[name] = {
            "autocast": PRECISIONS[name], "samples_per_s": batch_size / seconds, "step_seconds": seconds,
            "step_seconds_all": times, "gflop_per_step": flops / 1e9, "gflops": achieved,
            "gemm_gflops": bound[name], "gemm_fraction": achieved / bound[name],
        }
    return {
        "preset": preset, "family": config.family, "batch_size": batch_size, "window": config.window,
        "threads": torch.get_num_threads(), "steps": steps, "warmup": warmup,
        "flops_per_step": flops, "gflop_per_step": flops / 1e9, "gemm_gflops": bound,
        "gemm": {
            "rows": GEMM_ROWS, "model_shapes": [list(s) for s in shapes["model"]],
            "reference_shapes": [list(s) for s in shapes["reference"]],
            **{kind: {"before": gemm_before[kind], "after": gemm_after[kind]} for kind in shapes},
        },
        "precisions": precisions,
        "model": {"params": sum(p.numel() for p in initial.parameters()), "config": config.to_dict()},
        "machine": {
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
    }


def markdown_table(result: dict) -> str:
    """A RESULTS.md table of ``bench_train``'s result."""
    rates = result["gemm_gflops"]
    lines = [
        f"`{result['preset']}` ({result['family']}), batch {result['batch_size']} windows of {result['window']} frames, "
        f"{result['threads']} thread(s), {result['gflop_per_step']:.2f} GFLOP per step; GEMM rate: "
        f"float32 {rates['float32']:.0f} GFLOP/s, bfloat16 {rates['bfloat16']:.0f} GFLOP/s",
        "",
        "| precision | samples/s | s per step | GFLOP/s | fraction of GEMM rate |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["precisions"].items():
        label = f"{name} autocast" if row["autocast"] else name
        lines.append(f"| {label} | {row['samples_per_s']:.1f} | {row['step_seconds']:.3f} | {row['gflops']:.1f} | "
                     f"{row['gemm_fraction']:.0%} |")
    return "\n".join(lines)
