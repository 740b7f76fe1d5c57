"""`wm bench solvers`: seconds and FLOPs per plan of every solver at LeWorldModel scale.

Protocol (one process, this machine's torch threads):

1. Model: ``ModelConfig.preset("lewm")`` (``--quick``: ``"lewm-micro"``), randomly
   initialised (seed 0), eval mode, in the planning precision ``dtype``
   (``worldmodel.model.planning_model``). Planning problem: a full history of
   ``context`` (3) random embeddings and ``context - 1`` executed blocks, a random goal
   embedding, horizon 5 blocks of ``frameskip * action_dim`` = 10 values in [-1, 1],
   objective ``terminal_l2``: what ``MPCPolicy`` hands a solver in the middle of an episode.
2. GEMM rate per precision (float32 and bfloat16): ``F.linear`` with the predictor's own
   weight shapes (qkv, attention output, MLP in and out, AdaLN modulation) on as many rows
   as one predictor call of the batched plan feeds them (envs x samples x context tokens,
   at most ``ROLLOUT_CHUNK_ROWS``: the rollout runs its candidates in chunks of that many
   rows), best of several timed rounds; for bfloat16 also oneDNN's linear with prepacked
   weights (what bf16 planning runs on CPU, ``worldmodel.cpu_fused``), the faster of the
   two counting. Measured before and after the solvers (the machine's speed drifts); the
   higher of the two is the bound.
3. Each solver (``planners.get(name)`` with its defaults: CEM 300 samples x 30
   iterations; ``--quick``: 16 samples x 2 iterations), for 1 environment and for
   ``max(envs)`` environments in one batched ``plan`` call: wall time of the plan (best of
   ``repeats``), run under ``torch.inference_mode`` (gradient solvers: autograd on). FLOPs:
   ``torch.utils.flop_counter.FlopCounterMode`` counts every matmul, attention and
   convolution FLOP (backward passes included; bf16 planning's oneDNN linear ops through
   ``worldmodel.cpu_fused.flop_formulas``) of a separate 1-environment plan; every op
   is batched over the environments, so a B-environment plan does B times that. No timed
   plan runs under the counter: on CPU it halves the speed of bf16 matmuls (measured 7.2 s
   vs 14.3 s for one 8 x 300-candidate rollout; float32 13.4 s vs 13.8 s).

Result (``bench_solvers``; ``wm bench solvers --json``)::

    {"gemm_gflops": {"float32": .., "bfloat16": ..},
     "solvers": {NAME: {"seconds_per_env_plan": .., "flops_per_env_plan": ..,
                        "flop_bound_fraction": .., "dtype": "float32",
                        "envs": {"1": {...}, "8": {...}}, "options": {...}}},
     "model": {...}, "machine": {...}}

The top-level figures of a solver are those of the batched run (max(envs) environments);
``flop_bound_fraction = flops_per_env_plan / (seconds_per_env_plan * gemm_gflops[dtype] * 1e9)``.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

#: solver options that shrink each solver for ``--quick`` (only those a solver takes are passed)
QUICK_OPTIONS: dict[str, Any] = {
    "num_samples": 16, "iterations": 2, "num_elites": 4, "num_refine": 2, "gd_iterations": 2,
}

#: planning horizon in blocks (LeWorldModel's evaluation: 5)
HORIZON = 5


def _log(log: Callable[[str], None] | None, line: str) -> None:
    if log is not None:
        log(line)


def predictor_gemm_shapes(config: Any) -> list[tuple[int, int]]:
    """(in, out) of the predictor's weight matrices in ``config``: qkv, attention output, MLP in and out,
    AdaLN modulation."""
    W = config.predictor_width
    heads = config.predictor_heads
    inner = heads * (config.predictor_head_dim or W // heads)
    hidden = config.predictor_mlp_dim or int(W * config.mlp_ratio)
    return [(W, 3 * inner), (inner, W), (W, hidden), (hidden, W), (W, 6 * W)]


def gemm_gflops(config: Any, rows: int, dtype: torch.dtype, seconds: float = 1.0, rounds: int = 3,
                shapes: Sequence[tuple[int, int]] | None = None, packed: bool = False) -> float:
    """This machine's matrix-product rate in GFLOP/s for the predictor's weight shapes (or ``shapes``).

    Args:
        config: the ``ModelConfig`` whose predictor shapes are measured (unused with ``shapes``).
        rows: rows of the activations (tokens in one batched predictor call).
        dtype: torch.float32 or torch.bfloat16.
        seconds: minimum timed seconds per round; rounds: rounds, the best one counts.
        shapes: (in, out) weight shapes to measure instead (``wm bench train``: the model's own).
        packed: oneDNN's linear on weights reordered once (``torch.ops.mkldnn``; bfloat16 on a
            CPU where ``worldmodel.cpu_fused.fused_mlp_available``) instead of ``F.linear``.

    Returns:
        2 * rows * sum(in * out) / seconds of the best round, in GFLOP/s.
    """
    shapes = predictor_gemm_shapes(config) if shapes is None else [(int(i), int(o)) for i, o in shapes]
    if not shapes:
        raise ValueError("gemm_gflops needs at least one (in, out) weight shape")
    gen = torch.Generator().manual_seed(0)
    xs = {n_in: torch.randn(rows, n_in, generator=gen).to(dtype) for n_in in {s[0] for s in shapes}}
    ws = [torch.randn(n_out, n_in, generator=gen).to(dtype) * n_in**-0.5 for n_in, n_out in shapes]
    flop = 2.0 * rows * sum(n_in * n_out for n_in, n_out in shapes)
    linear: Callable = F.linear
    if packed:
        from worldmodel import cpu_fused

        ws = [cpu_fused.pack_weight(w, rows) for w in ws]
        linear = cpu_fused.linear
    with torch.inference_mode():
        for (n_in, _), w in zip(shapes, ws):  # warm-up
            linear(xs[n_in], w)
        best = 0.0
        for _ in range(rounds):
            n, t0 = 0, time.perf_counter()
            while True:
                for (n_in, _), w in zip(shapes, ws):
                    linear(xs[n_in], w)
                n += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds:
                    break
            best = max(best, n * flop / elapsed / 1e9)
    return best


def _solver_factory(quick: bool) -> tuple[Callable[..., Any], list[str], Callable[[str], dict]]:
    """(build(name, **problem), names, options(name)) from the registry, else CEM alone."""
    try:
        from planners import available, get, solver_options
    except ImportError:  # an older planners package: CEM only
        from planners import CEM

        def build(name: str, **kwargs: Any) -> Any:
            return CEM(**kwargs)

        def options(name: str) -> dict:
            return {k: v for k, v in QUICK_OPTIONS.items() if k in ("num_samples", "iterations", "num_elites")} if quick else {}

        return build, ["cem"], options

    def options(name: str) -> dict:
        known = solver_options(name)
        return {k: v for k, v in QUICK_OPTIONS.items() if k in known} if quick else {}

    return get, available(), options


def _problem(model: Any, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random planning inputs: context (B, context, D), past blocks (B, context - 1, A), goal (B, D)."""
    c = model.config
    D = c.embed_dim
    ctx = torch.randn(batch, c.context, D, generator=gen)
    past = torch.rand(batch, c.context - 1, c.block_dim, generator=gen) * 2 - 1
    goal = torch.randn(batch, D, generator=gen)
    return ctx, past, goal


def _grad_mode(solver: Any) -> Any:
    """Autograd on for a solver with ``requires_grad``, else inference mode."""
    return torch.enable_grad() if getattr(solver, "requires_grad", False) else torch.inference_mode()


def count_plan_flops(solver: Any, cost_fn: Callable, batch: int) -> float:
    """FLOPs of one ``solver.plan(cost_fn, batch)`` (matmuls, attention, convolutions; backward included)."""
    from torch.utils.flop_counter import FlopCounterMode

    from worldmodel.cpu_fused import flop_formulas

    with _grad_mode(solver), FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter:
        solver.plan(cost_fn, batch)
    return float(counter.get_total_flops())


def time_plan(solver: Any, cost_fn: Callable, batch: int, repeats: int) -> list[float]:
    """Wall seconds of each of ``repeats`` plans (inference mode, autograd for ``requires_grad``)."""
    times = []
    for _ in range(repeats):
        with _grad_mode(solver):
            t0 = time.perf_counter()
            solver.plan(cost_fn, batch)
            times.append(time.perf_counter() - t0)
    return times


def bench_solvers(
    quick: bool = False,
    solvers: Sequence[str] | None = None,
    envs: Sequence[int] = (1, 8),
    dtype: str = "float32",
    repeats: int = 1,
    log: Callable[[str], None] | None = None,
    compile: bool = False,
) -> dict:
    """Seconds and FLOPs per environment-plan of each solver, and the fraction of the FLOP bound.

    Args:
        quick: the ``lewm-micro`` model and tiny solver budgets (a smoke run; numbers meaningless).
        solvers: solver names (default: every registered solver).
        envs: environment counts to plan for in one batched call; the largest is the headline.
        dtype: planning precision, 'float32' or 'bfloat16'.
        repeats: timed plans per solver and env count (the best counts).
        log: optional callable for progress lines.
        compile: roll out through ``torch.compile`` (``PlanningModel``); compiling happens in
            a warm-up before any timing and is reported as ``compile_seconds``.

    Returns:
        the dict described in the module docstring.
    """
    from worldmodel.config import ModelConfig
    import worldmodel.model as wm_model
    from worldmodel.cpu_fused import fused_mlp_available
    from worldmodel.model import JEPA, PLANNING_DTYPES, planning_model
    from planners.objectives import get_objective

    if dtype not in PLANNING_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(PLANNING_DTYPES)}, got {dtype!r}")
    envs = sorted({int(n) for n in envs})
    if not envs or envs[0] < 1:
        raise ValueError(f"envs must be positive environment counts, got {list(envs)}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    build, names, options = _solver_factory(quick)
    if solvers:
        unknown = [s for s in solvers if s not in names]
        if unknown:
            build(unknown[0], horizon=1, action_dim=1, low=-1.0, high=1.0)  # raises, naming the closest
            raise ValueError(f"unknown solver(s) {unknown}; available: {', '.join(names)}")
        names = list(solvers)

    preset = "lewm-micro" if quick else "lewm"
    config = ModelConfig.preset(preset)
    torch.manual_seed(0)
    model = JEPA(config).eval()
    planner_model = planning_model(model, dtype, compile=compile)
    objective = get_objective("terminal_l2")
    tokens = max(envs) * (QUICK_OPTIONS["num_samples"] if quick else 300) * config.context
    if wm_model.ROLLOUT_CHUNK_ROWS:  # rows of one predictor call of the chunked rollout
        tokens = min(tokens, wm_model.ROLLOUT_CHUNK_ROWS)
    gemm_seconds = 0.05 if quick else 1.0
    onednn = fused_mlp_available()

    def measure_gemm() -> dict[str, float]:
        rates = {name: gemm_gflops(config, tokens, getattr(torch, name), seconds=gemm_seconds)
                 for name in ("float32", "bfloat16")}
        if onednn:
            rates["bfloat16"] = max(rates["bfloat16"], gemm_gflops(config, tokens, torch.bfloat16,
                                                                   seconds=gemm_seconds, packed=True))
        return rates

    gemm_before = measure_gemm()
    _log(log, f"GEMM GFLOP/s (predictor shapes, {tokens} rows): " + ", ".join(f"{k} {v:.1f}" for k, v in gemm_before.items()))
    results: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)
    warm = _problem(model, 1, gen)
    t0 = time.perf_counter()
    with torch.inference_mode():  # first-call allocations (and compilation) out of the timings
        warm_cost = objective(planner_model, warm[0], warm[2], warm[1])
        warm_cost(torch.zeros(1, 2, HORIZON, config.block_dim))
        if compile:  # a second shape: torch.compile then marks the sizes dynamic, no recompiling per solver
            ctx, past, goal = _problem(model, max(envs), gen)
            objective(planner_model, ctx, goal, past)(torch.zeros(max(envs), 3, HORIZON, config.block_dim))
    compile_seconds = time.perf_counter() - t0
    if compile:
        _log(log, f"compiled the rollout in {compile_seconds:.0f} s")
    for name in names:
        opts = options(name)
        per_envs: dict[str, dict] = {}

        def problem(n: int) -> tuple[Any, Callable]:
            ctx, past, goal = _problem(model, n, torch.Generator().manual_seed(n))
            solver = build(name, horizon=HORIZON, action_dim=config.block_dim, low=-1.0, high=1.0, seed=0, **opts)
            return solver, objective(planner_model, ctx, goal, past)

        # Every op is batched over the envs, so a plan's FLOPs are B times one env's: counted once,
        # on a 1-env plan of its own (FlopCounterMode halves the speed of bf16 matmuls on CPU, so
        # no timed plan runs under it).
        flops_per_env = count_plan_flops(*problem(1), 1)
        for n in envs:
            times = time_plan(*problem(n), n, repeats)
            best = min(times)
            per_envs[str(n)] = {
                "seconds_per_plan": best,
                "seconds_per_env_plan": best / n,
                "flops_per_env_plan": flops_per_env,
                "times": times,
            }
            _log(log, f"{name}: {n} env(s) {best:.2f} s per plan, {best / n:.2f} s per env-plan, "
                      f"{flops_per_env / 1e12:.3f} TFLOP per env-plan, {flops_per_env * n / best / 1e9:.1f} GFLOP/s")
        results[name] = {"envs": per_envs, "options": opts, "dtype": dtype}
    gemm_after = measure_gemm()
    gemm = {k: max(gemm_before[k], gemm_after[k]) for k in gemm_before}
    _log(log, "GEMM GFLOP/s after: " + ", ".join(f"{k} {v:.1f}" for k, v in gemm_after.items()))
    for entry in results.values():
        for row in entry["envs"].values():
            row["flop_bound_fraction"] = row["flops_per_env_plan"] / (row["seconds_per_env_plan"] * gemm[dtype] * 1e9)
        head = entry["envs"][str(envs[-1])]
        entry.update({k: head[k] for k in ("seconds_per_env_plan", "flops_per_env_plan", "flop_bound_fraction")})
    predictor_params = sum(p.numel() for p in model.predictor.parameters())
    return {
        "gemm_gflops": gemm,
        "solvers": {name: {k: results[name][k] for k in (
            "seconds_per_env_plan", "flops_per_env_plan", "flop_bound_fraction", "dtype", "envs", "options")}
            for name in names},
        "gemm_gflops_runs": {"before": gemm_before, "after": gemm_after, "rows": tokens},
        "model": {
            "preset": preset, "predictor_params": predictor_params, "context": config.context,
            "horizon": HORIZON, "block_dim": config.block_dim, "objective": "terminal_l2", "quick": quick,
            "compile": compile, "compile_seconds": compile_seconds if compile else 0.0,
        },
        "machine": {
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
    }


def markdown_table(result: dict) -> str:
    """A RESULTS.md table of ``bench_solvers``' result."""
    dtype_rates = result["gemm_gflops"]
    lines = [
        f"GEMM rate: float32 {dtype_rates['float32']:.0f} GFLOP/s, bfloat16 {dtype_rates['bfloat16']:.0f} GFLOP/s",
        "",
        "| solver | dtype | envs | s per env-plan | TFLOP per env-plan | fraction of FLOP bound |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in result["solvers"].items():
        for n, row in entry["envs"].items():
            lines.append(f"| {name} | {entry['dtype']} | {n} | {row['seconds_per_env_plan']:.2f} | "
                         f"{row['flops_per_env_plan'] / 1e12:.3f} | {row['flop_bound_fraction']:.0%} |")
    return "\n".join(lines)
