"""``wm demo``: collect -> train -> evaluate on TwoRoom, end to end, on a CPU.

The demo is the platform in miniature. It collects noisy-expert episodes (how to get
through the door) and random-action episodes (what the walls do: an expert alone never
bumps into them, and a model trained only on its data predicts agents walking through
walls) with the environment's default factors, trains a small LeWorldModel-style JEPA
on them, and plans
with CEM in its latent space from start/goal pairs of *separately collected* held-out
episodes (the standard protocol: goal 25 steps ahead, 50-step budget, 50 pairs), next
to a random-action baseline on the same pairs. Outputs in ``OUT/``:

- ``data/train.lance``, ``data/heldout.lance``: the datasets,
- ``ckpt/``: the checkpoint (``config.json`` + ``model.safetensors``) and ``metrics.jsonl``,
- ``eval/``: ``episodes.jsonl``, ``summary.json``, ``planned_episode.mp4``,
- ``summary.json`` (``success_rate``, ``baseline_success_rate``, timings), ``report.md``,
  ``planned_episode.mp4`` and ``planned_episode.png`` (a filmstrip: agent | goal).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.planning import PlannerConfig
from benchmarks.protocol import PlanningProtocol
from worldmodel.progress import LINE_INTERVAL

ENV_ID = "wm/TwoRoom-v0"
DEMO_MARKER, DEMO_FORMAT = "demo.json", "worldmodel-demo"
#: everything ``run_demo`` writes at the top of its folder; a folder holding anything else is not replaced
DEMO_ENTRIES = (DEMO_MARKER, "data", "ckpt", "eval", "summary.json", "report.md",
                "planned_episode.mp4", "planned_episode.png")
HELDOUT_SEED_OFFSET = 1_000_000  # held-out episodes never share a seed with training ones


@dataclass
class DemoConfig:
    """Budgets of the demo; the defaults finish in under 15 minutes on 2 CPU cores."""

    expert_episodes: int = field(default=300, metadata={"help": "noisy-expert episodes to train on"})
    random_episodes: int = field(default=200, metadata={"help": "random-action episodes to train on"})
    heldout_episodes: int = field(default=60, metadata={"help": "held-out episodes for start/goal pairs"})
    train_steps: int = field(default=3000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=32, metadata={"help": "training windows per step"})
    pred_steps: int = field(
        default=3, metadata={"help": "frames predicted open-loop per window (rollout loss when > 1)"}
    )
    protocol: PlanningProtocol = field(default_factory=PlanningProtocol)
    planner: PlannerConfig = field(
        default_factory=lambda: PlannerConfig(num_samples=200, iterations=20, num_elites=20)
    )

    @classmethod
    def quick(cls) -> "DemoConfig":
        """Tiny budgets that only check the pipeline runs (success is not expected)."""
        return cls(
            expert_episodes=8,
            random_episodes=4,
            heldout_episodes=6,
            train_steps=20,
            batch_size=16,
            pred_steps=2,
            protocol=PlanningProtocol(episodes=4, budget=10),
            planner=PlannerConfig(num_samples=32, iterations=3, num_elites=8),
        )


def run_demo(out: str | Path, device: str = "auto", quick: bool = False, seed: int = 0) -> dict:
    """Run collect -> train -> eval on TwoRoom and write the summary, report and video.

    Args:
        out: output folder (created; an existing demo there is replaced).
        device: ``auto | cpu | cuda``.
        quick: tiny budgets (a smoke test of the pipeline, about a minute).
        seed: seed for collection, training and evaluation.

    Returns:
        the summary dict, also written to ``OUT/summary.json``.
    """
    from data import collect, open_dataset
    from worldmodel.checkpoint import load_checkpoint
    from worldmodel.config import ModelConfig, TrainConfig
    from worldmodel.device import resolve_device
    from worldmodel.train import train
    from benchmarks.planning import evaluate_planning

    cfg = DemoConfig.quick() if quick else DemoConfig()
    cfg.protocol.seed = seed
    cfg.planner.seed = seed
    out = Path(out)
    _clear_demo_folder(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).write_text(json.dumps({"format": DEMO_FORMAT}) + "\n")
    timings: dict[str, float] = {}

    def log(line: str) -> None:
        print(f"[demo] {line}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    train_path, heldout_path = out / "data" / "train.lance", out / "data" / "heldout.lance"
    log(f"stage 1/3, collect: {cfg.expert_episodes} expert + {cfg.random_episodes} random training episodes "
        f"and {cfg.heldout_episodes} held-out ones of {ENV_ID}")
    # The demo's recipe was measured on episodes that end at success (`stop_on_success`,
    # collect's behaviour before fixed-length episodes became the default); it keeps them.
    collect(ENV_ID, cfg.expert_episodes, train_path, policy="expert", seed=seed, mode="error", progress=True,
            stop_on_success=True)
    collect(ENV_ID, cfg.random_episodes, train_path, policy="random", seed=seed + cfg.expert_episodes, mode="append",
            progress=True, stop_on_success=True)
    collect(ENV_ID, cfg.heldout_episodes, heldout_path, policy="expert", seed=seed + HELDOUT_SEED_OFFSET, mode="error",
            progress=True, stop_on_success=True)
    timings["collect_seconds"] = time.perf_counter() - t0
    log(
        f"collected {cfg.expert_episodes} expert + {cfg.random_episodes} random training episodes and "
        f"{cfg.heldout_episodes} held-out ones in {timings['collect_seconds']:.1f}s"
    )

    t0 = time.perf_counter()
    model_cfg = ModelConfig(pred_steps=cfg.pred_steps)
    train_cfg = TrainConfig(
        data=str(train_path),
        out=str(out / "ckpt"),
        steps=cfg.train_steps,
        batch_size=cfg.batch_size,
        seed=seed,
        device=device,
        val_fraction=0.1 if not quick else 0.2,
    )
    log(f"stage 2/3, train: {cfg.train_steps} steps of {cfg.batch_size} windows on {device} "
        f"(a progress line every {LINE_INTERVAL:.0f} s when stderr is not a terminal)")
    train_summary = train(model_cfg, train_cfg)
    timings["train_seconds"] = time.perf_counter() - t0
    log(f"trained {cfg.train_steps} steps in {timings['train_seconds']:.1f}s")

    t0 = time.perf_counter()
    log(f"stage 3/3, plan: {cfg.protocol.episodes} start/goal pairs with CEM in the model's latent space, "
        f"and a random-action baseline on the same pairs")
    torch_device = resolve_device(device)
    model = load_checkpoint(out / "ckpt", device=torch_device).eval()
    summary = evaluate_planning(
        model,
        open_dataset(heldout_path),
        out / "eval",
        protocol=cfg.protocol,
        planner_cfg=cfg.planner,
        device=str(torch_device),
        video=True,
        log=log,
        progress=True,
    )
    timings["eval_seconds"] = time.perf_counter() - t0
    timings["total_seconds"] = sum(timings.values())

    video = out / "eval" / "planned_episode.mp4"
    if video.exists():
        shutil.copy(video, out / "planned_episode.mp4")
        _filmstrip_from_video(video, out / "planned_episode.png")

    summary = {
        "success_rate": summary["success_rate"],
        "baseline_success_rate": summary["baseline_success_rate"],
        **{k: v for k, v in summary.items() if k not in ("success_rate", "baseline_success_rate")},
        "train": train_summary,
        "timings": timings,
        "demo": {k: v for k, v in dataclasses.asdict(cfg).items()},
        "quick": quick,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "report.md").write_text(_report(summary))
    log(
        f"planning success {summary['success_rate']:.0%} vs random {summary['baseline_success_rate']:.0%} "
        f"({timings['total_seconds']:.0f}s total) -> {out / 'report.md'}"
    )
    return summary


def _filmstrip_from_video(video: Path, png: Path, count: int = 7, gap: int = 6) -> None:
    """Save a README filmstrip from the demo's MP4 (frames are ``[agent | goal]`` side by side):
    `count` evenly spaced agent views, then the goal image, separated by white gaps."""
    import cv2
    import numpy as np

    cap = cv2.VideoCapture(str(video))
    frames = []
    ok, frame = cap.read()
    while ok:
        frames.append(frame)  # BGR, written back as BGR
        ok, frame = cap.read()
    cap.release()
    if not frames:
        return
    w = frames[0].shape[1] // 2
    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    tiles = [frames[i][:, :w] for i in idx] + [frames[-1][:, w:]]
    white = np.full((frames[0].shape[0], gap, 3), 255, np.uint8)
    parts = []
    for k, tile in enumerate(tiles):
        if k:
            parts.append(white if k < len(tiles) - 1 else np.concatenate([white, white * 0 + 200, white], axis=1))
        parts.append(tile)
    cv2.imwrite(str(png), np.concatenate(parts, axis=1))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _report(s: dict) -> str:
    """A short Markdown report of a demo summary."""
    lo, hi = s["success_ci95"]
    blo, bhi = s["baseline_success_ci95"]
    t = s["timings"]
    p = s["protocol"]
    ratio = s.get("success_ratio_vs_baseline")
    return f"""# worldmodel demo: {s['env_id']}

| policy | success | 95% interval | mean steps to success |
|---|---|---|---|
| CEM in the JEPA's latent space | {_pct(s['success_rate'])} ({s['successes']}/{s['episodes']}) | {_pct(lo)}–{_pct(hi)} | {_num(s['mean_steps_to_success'])} |
| random actions | {_pct(s['baseline_success_rate'])} ({s['baseline_successes']}/{s['episodes']}) | {_pct(blo)}–{_pct(bhi)} | {_num(s['baseline_mean_steps_to_success'])} |

Planner / random ratio: {'n/a (baseline 0%)' if ratio is None else f'{ratio:.1f}x'}.

Protocol: start/goal pairs from held-out episodes (goal = state {p['offset']} steps later),
starts already within the success radius rejected, budget {p['budget']} steps,
{p['episodes']} pairs, seed {p['seed']}. Planner: {json.dumps(s['planner'])}.

Time: collect {t['collect_seconds']:.0f}s, train {t['train_seconds']:.0f}s, eval {t['eval_seconds']:.0f}s,
total {t['total_seconds']:.0f}s.

![planned episode: agent | goal](planned_episode.png)

Video: `planned_episode.mp4` (left: agent, right: goal image).
"""


def demo_folder_not_ours(path: Path) -> str | None:
    """None if `path` is a folder an earlier ``wm demo`` wrote (its ``demo.json`` marker, or
    for runs made before the marker existed a ``summary.json`` with success rates, and
    nothing but the demo's own entries); else the reason it is not."""
    from data.owned import describe_foreign, foreign_entries, json_marker

    if path.is_symlink() or not path.is_dir():
        return "not a folder" if not path.is_symlink() else "a symbolic link"
    extra = foreign_entries(path, DEMO_ENTRIES)
    if extra:
        return f"a folder holding files the demo did not write ({describe_foreign(extra)})"
    if json_marker(path / DEMO_MARKER) == DEMO_FORMAT or json_marker(path / "summary.json", "success_rate") is not None:
        return None
    return f"not a demo folder (no {DEMO_MARKER})"


def _clear_demo_folder(out: Path) -> None:
    """Remove an earlier demo run at `out`; refuse (ValueError) anything the demo did not
    write. A missing or empty folder is fine."""
    from worldmodel.paths import check_output_dir

    check_output_dir(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        out.rmdir()
        return
    why = demo_folder_not_ours(out)
    if why is not None:
        raise ValueError(f"--out {out}: {why}; refusing to delete it (wm demo replaces only a folder an earlier "
                         "demo wrote: choose another --out, or move it away yourself)")
    shutil.rmtree(out)
