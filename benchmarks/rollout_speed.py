"""One CEM iteration's rollout at LeWorldModel scale: sliding window vs fast, float32 vs bf16.

    python -m benchmarks.rollout_speed [--threads N] [--ckpt DIR] [--envs B] [--samples S]

Times ``rollout_reference`` (float32) and ``rollout`` (float32, and on a bf16 copy) for 8
environments x 300 candidates x 5 steps with a full history on a randomly initialised
``ModelConfig.preset("lewm")`` (or, with ``--ckpt``, a checkpoint's model of any family that
has both rollouts: lewm, pldm, pixel, dinowm), best of 2 calls, with the FLOPs of each counted
by ``FlopCounterMode`` in a separate call; for the LeWorldModel preset also the GEMM rate of the
predictor's weight shapes before and after. Prints one line per rollout (the numbers of
benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch


def main(argv: list[str] | None = None) -> None:
    """Measure and print; ``--threads`` sets torch's CPU threads."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--ckpt", default=None, help="time this checkpoint's model instead of the lewm preset")
    parser.add_argument("--envs", type=int, default=8, help="environments B (default 8)")
    parser.add_argument("--samples", type=int, default=300, help="candidates per environment S (default 300)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.solvers import gemm_gflops
    from worldmodel.config import ModelConfig
    from worldmodel.model import JEPA

    torch.manual_seed(0)
    if args.ckpt is None:
        cfg = ModelConfig.preset("lewm")
        m32 = JEPA(cfg).eval()
    else:
        from worldmodel.checkpoint import load_checkpoint

        m32 = load_checkpoint(args.ckpt).eval()
        cfg = m32.config
        print(f"{args.ckpt}: {type(m32).__name__}, {cfg.family}", flush=True)
    m16 = copy.deepcopy(m32).to(torch.bfloat16)
    B, S, H = args.envs, args.samples, 5
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(B, cfg.context, cfg.embed_dim, generator=g)
    past = torch.randn(B, cfg.context - 1, cfg.block_dim, generator=g)
    acts = torch.randn(B, S, H, cfg.block_dim, generator=g)
    cases = [("sliding window float32", m32.rollout_reference, torch.float32),
             ("fast float32", m32.rollout, torch.float32), ("fast bfloat16", m16.rollout, torch.bfloat16)]
    gemm = args.ckpt is None  # the GEMM shapes are the JEPA predictor's
    before = {d: gemm_gflops(cfg, B * S * 3, d) for d in (torch.float32, torch.bfloat16)} if gemm else {}
    with torch.inference_mode():
        for name, fn, dt in cases:
            inputs = (emb.to(dt), acts.to(dt), past.to(dt))
            with FlopCounterMode(display=False) as counter:
                fn(*inputs)
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                fn(*inputs)
                times.append(time.perf_counter() - t0)
            t, flops = min(times), counter.get_total_flops()
            print(f"{name}: {t:.2f} s per call ({flops / 1e9:.4g} GFLOP = {flops * 30 / B / 1e12:.3f} TFLOP "
                  f"per env-plan of 30 iterations), {flops / t / 1e9:.1f} GFLOP/s", flush=True)
    if not gemm:
        return
    after = {d: gemm_gflops(cfg, B * S * 3, d) for d in (torch.float32, torch.bfloat16)}
    print("GEMM GFLOP/s before", {str(k): round(v, 1) for k, v in before.items()},
          "after", {str(k): round(v, 1) for k, v in after.items()})


if __name__ == "__main__":
    main()
