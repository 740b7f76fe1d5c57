"""``wm bench planning``: collect -> train -> evaluate a recipe (`benchmarks.recipes`) per env.

Layout of ``OUT/`` (one folder per env, e.g. ``OUT/TwoRoom-v0/``)::

    recipe.json                     the recipe, as run (its hash is in every result)
    data/train.lance, heldout.lance + data/stage.json
    oracle/                         the oracle on the held-out pairs (wm eval --oracle-only)
    seed{S}/ckpt/                   the checkpoint of training seed S + seed{S}/train_stage.json
    seed{S}/eval/                   its planning evaluation (model + random baseline)
    result.json                     the env's result (all seeds)
    OUT/results.jsonl               one line per env (the last run of each)

Re-running reuses every finished stage whose recipe sections are unchanged (a stage's
marker holds the digest of the sections it depends on: data; data + train; data + train
+ eval); a finished training run is a no-op, an interrupted one resumes. A folder that
holds another recipe's stage is refused rather than overwritten.

Several training seeds (``seeds``) share the data and the pairs; the result line gives
the pooled success (all seeds' episodes, Wilson interval), the mean and spread of the
per-seed rates and each seed's line.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.recipes import Recipe


def env_folder(env_id: str) -> str:
    """``wm/TwoRoom-v0`` -> ``TwoRoom-v0``."""
    return env_id.split("/")[-1]


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _check_stage(folder: Path, marker: Path, digest: str, what: str) -> bool:
    """True when `marker` says this stage is done with `digest`; refuse a folder of another recipe."""
    have = _read(marker)
    if have is not None and have.get("hash") == digest:
        return True
    if have is not None or (folder.exists() and any(folder.iterdir())):
        if have is None and what == "train":
            return False  # an interrupted training run: train() resumes it (and refuses another config)
        raise ValueError(f"{folder} holds a {what} stage of another recipe (stage hash {have and have.get('hash')}, "
                         f"this recipe's {digest}): use another --out, or remove it")
    return False


def run_recipe(
    recipe: Recipe,
    out: str | Path,
    seeds: Sequence[int] = (0,),
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    data_root: str | Path | None = None,
) -> dict:
    """Run (or reuse) every stage of `recipe` under ``out/<env>/`` and return the env's result line.

    ``data_root``: where the ``data/`` and ``oracle/`` stages live (default ``out/<env>/``);
    recipes that differ only in training and evaluation (e.g. two model families) share them.

    Returns:
        ``{"env_id", "recipe", "recipe_hash", "protocol", "episodes", "success_rate",
        "success_ci95", "baseline_success_rate", "baseline_success_ci95",
        "oracle_success_rate", "oracle_success_ci95", "seconds_per_decision",
        "train_seconds", "seeds", "per_seed", "success_rate_mean", "success_rate_std"}``.
    """
    from benchmarks.planning import PlannerConfig, checkpoint_data, evaluate_planning
    from benchmarks.protocol import PlanningProtocol
    from benchmarks.stats import wilson_interval
    from data import collect, open_dataset
    from worldmodel.checkpoint import load_checkpoint
    from worldmodel.config import TrainConfig
    from worldmodel.train import train

    recipe.check()
    say = log or (lambda line: None)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds}: expected distinct training seeds")
    root = Path(out) / env_folder(recipe.env_id)
    root.mkdir(parents=True, exist_ok=True)
    shared = root if data_root is None else Path(data_root)
    shared.mkdir(parents=True, exist_ok=True)
    recipe.save(root / "recipe.json")
    digest = recipe.hash()
    d = recipe.data

    # ---- data
    data_dir = shared / "data"
    train_path, heldout_path = data_dir / "train.lance", data_dir / "heldout.lance"
    data_hash = recipe.section_hash("data")
    if _check_stage(data_dir, data_dir / "stage.json", data_hash, "data"):
        say(f"{recipe.env_id}: data reused ({data_dir})")
    else:
        t0 = time.perf_counter()
        say(f"{recipe.env_id}: collecting {d.expert_episodes} expert + {d.random_episodes} random training episodes "
            f"and {d.heldout_episodes} held-out ones")
        common = dict(split=d.split, codec=d.codec, progress=progress, resolution=d.resolution, factors=d.factors or None)
        collect(recipe.env_id, d.expert_episodes, train_path, policy="expert", seed=d.seed, mode="error",
                stop_on_success=d.stop_on_success, noise=d.noise, **common)
        if d.random_episodes:
            collect(recipe.env_id, d.random_episodes, train_path, policy="random", seed=d.seed + d.expert_episodes,
                    mode="append", stop_on_success=d.stop_on_success, **common)
        collect(recipe.env_id, d.heldout_episodes, heldout_path, policy="expert", seed=d.heldout_seed, mode="error",
                stop_on_success=d.stop_on_success, noise=d.noise, **common)
        (data_dir / "stage.json").write_text(json.dumps(
            {"hash": data_hash, "seconds": time.perf_counter() - t0}, indent=2) + "\n")
    heldout = open_dataset(heldout_path)
    meta = open_dataset(train_path).meta
    protocol = PlanningProtocol(**recipe.eval.protocol)
    planner_cfg = PlannerConfig(**recipe.eval.planner)

    # ---- oracle (no model: shared by the seeds)
    oracle: dict | None = None
    if recipe.eval.oracle:
        oracle_dir = shared / "oracle"
        oracle_hash = recipe.section_hash("data", "eval")
        if _check_stage(oracle_dir, oracle_dir / "stage.json", oracle_hash, "oracle"):
            oracle = _read(oracle_dir / "summary.json")
            say(f"{recipe.env_id}: oracle reused")
        else:
            oracle_cfg = PlannerConfig(**{**recipe.eval.planner, **recipe.eval.oracle_planner})
            oracle = evaluate_planning(None, heldout, oracle_dir, protocol=protocol, planner_cfg=oracle_cfg,
                                       device=device, video=False, oracle=True, progress=progress)
            (oracle_dir / "stage.json").write_text(json.dumps({"hash": oracle_hash}) + "\n")
            say(f"{recipe.env_id}: oracle {oracle['oracle_successes']}/{oracle['episodes']}")

    per_seed = []
    for seed in seeds:
        sdir = root / f"seed{seed}"
        sdir.mkdir(exist_ok=True)
        # ---- train
        train_hash = recipe.section_hash("data", "train")
        marker = sdir / "train_stage.json"
        if _check_stage(sdir / "ckpt", marker, train_hash, "train") and (_read(marker) or {}).get("seed") == seed:
            train_seconds = float(_read(marker)["seconds"])
            say(f"{recipe.env_id} seed {seed}: checkpoint reused")
        else:
            t = recipe.train
            model_cfg = recipe.model_config(image_size=int(meta["image_shape"][0]), action_dim=int(meta["action_dim"]))
            train_cfg = TrainConfig(data=str(train_path), out=str(sdir / "ckpt"), steps=t.steps, batch_size=t.batch_size,
                                    lr=t.lr, seed=t.seed + seed, device=device, progress=progress)
            say(f"{recipe.env_id} seed {seed}: training {t.steps} steps of {t.batch_size} windows")
            summary = train(model_cfg, train_cfg)
            train_seconds = float(summary["seconds"])
            marker.write_text(json.dumps({"hash": train_hash, "seed": seed, "seconds": train_seconds,
                                          "steps": summary["steps"]}, indent=2) + "\n")
        # ---- evaluate
        eval_dir = sdir / "eval"
        eval_hash = recipe.section_hash("data", "train", "eval")
        if _check_stage(eval_dir, sdir / "eval_stage.json", eval_hash, "eval"):
            ev = _read(eval_dir / "summary.json")
            say(f"{recipe.env_id} seed {seed}: evaluation reused")
        else:
            model = load_checkpoint(sdir / "ckpt", device=device).eval()
            ev = evaluate_planning(model, heldout, eval_dir, protocol=protocol, planner_cfg=planner_cfg, device=device,
                                   video=True, trained_on=checkpoint_data(sdir / "ckpt"), progress=progress)
            ev["recipe"], ev["recipe_hash"] = recipe.name, digest
            (eval_dir / "summary.json").write_text(json.dumps(ev, indent=2) + "\n")
            (sdir / "eval_stage.json").write_text(json.dumps({"hash": eval_hash}) + "\n")
        say(f"{recipe.env_id} seed {seed}: {ev['successes']}/{ev['episodes']} vs random "
            f"{ev['baseline_successes']}/{ev['episodes']}")
        per_seed.append({"seed": seed, "successes": ev["successes"], "episodes": ev["episodes"],
                         "success_rate": ev["success_rate"], "success_ci95": ev["success_ci95"],
                         "baseline_successes": ev["baseline_successes"],
                         "seconds_per_decision": ev.get("seconds_per_decision"), "train_seconds": train_seconds})

    k = sum(s["successes"] for s in per_seed)
    n = sum(s["episodes"] for s in per_seed)
    kb = sum(s["baseline_successes"] for s in per_seed)
    rates = [s["success_rate"] for s in per_seed]
    result = {
        "env_id": recipe.env_id,
        "recipe": recipe.name,
        "recipe_hash": digest,
        "protocol": "standard",
        "episodes": n,
        "successes": k,
        "success_rate": k / n,
        "success_ci95": list(wilson_interval(k, n)),
        "baseline_success_rate": kb / n,
        "baseline_success_ci95": list(wilson_interval(kb, n)),
        "oracle_success_rate": oracle.get("oracle_success_rate") if oracle else None,
        "oracle_success_ci95": oracle.get("oracle_success_ci95") if oracle else None,
        "oracle_seconds_per_decision": oracle.get("oracle_seconds_per_decision") if oracle else None,
        "seconds_per_decision": statistics.fmean(s["seconds_per_decision"] or 0.0 for s in per_seed),
        "train_seconds": statistics.fmean(s["train_seconds"] for s in per_seed),
        "seeds": seeds,
        "success_rate_mean": statistics.fmean(rates),
        "success_rate_std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
        "per_seed": per_seed,
        "protocol_settings": protocol.to_dict(),
        "planner": planner_cfg.to_dict(),
    }
    (root / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_planning_bench(
    env_ids: Sequence[str],
    out: str | Path,
    seeds: Sequence[int] = (0,),
    split: str | None = None,
    recipe_file: str | Path | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    overrides: Callable[[Recipe], Recipe] | None = None,
) -> list[dict]:
    """Run the recipe of each env (or the recipe in `recipe_file`) and write ``out/results.jsonl``.

    Args:
        env_ids: env ids (``["all"]``: every env with a recipe).
        split: ``"train"`` runs each recipe's factor-randomised variant.
        recipe_file: a recipe JSON (`benchmarks.recipes.load_recipe`) instead of the registered ones.
        overrides: a function applied to each recipe before it runs (tests shrink budgets with it).

    Returns:
        the result lines (also merged into ``out/results.jsonl``: one line per env and recipe).
    """
    from benchmarks.recipes import RECIPES, get_recipe, load_recipe

    if recipe_file is not None:
        recipes = [load_recipe(recipe_file)]
    else:
        ids = list(RECIPES) if list(env_ids) == ["all"] else list(env_ids)
        recipes = [get_recipe(e, split) for e in ids]  # an unknown id: refused, before any work
    if overrides is not None:
        recipes = [overrides(r).check() for r in recipes]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for recipe in recipes:
        results.append(run_recipe(recipe, out, seeds=seeds, device=device, log=log, progress=progress))
        lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()] \
            if (out / "results.jsonl").exists() else []
        lines = [x for x in lines if (x.get("env_id"), x.get("recipe")) != (recipe.env_id, recipe.name)]
        lines.append(results[-1])
        tmp = out / "results.jsonl.tmp"
        tmp.write_text("".join(json.dumps(x) + "\n" for x in lines))
        tmp.replace(out / "results.jsonl")
    return results


def markdown_table(results: Sequence[dict]) -> str:
    """A RESULTS.md table of result lines."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.0f}%"

    rows = ["| env | recipe (hash) | success | 95% Wilson | random | oracle | s per decision | train s |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lo, hi = r["success_ci95"]
        rows.append(f"| {r['env_id']} | {r['recipe']} ({r['recipe_hash']}) | {r['successes']}/{r['episodes']} | "
                    f"{pct(lo)}–{pct(hi)} | {pct(r['baseline_success_rate'])} | {pct(r['oracle_success_rate'])} | "
                    f"{r['seconds_per_decision']:.2f} | {r['train_seconds']:.0f} |")
    return "\n".join(rows)

