"""``wm bench planning``: collect -> train -> evaluate a recipe (`benchmarks.recipes`) per env.

Layout of ``OUT/`` (one folder per env, e.g. ``OUT/TwoRoom-v0/``)::

    recipe.json                     the recipe, as run (its hash is in every result)
    data/train.lance, heldout.lance + data/stage.json
    oracle/                         the oracle on the held-out pairs (wm eval --oracle-only)
    seed{S}/ckpt/                   the checkpoint of training seed S + seed{S}/train_stage.json
    seed{S}/eval/                   its planning evaluation (model + random baseline)
    result.json                     the env's result (all seeds), ``"protocol": "standard"``
    OUT/results.jsonl               one line per env and protocol (the last run of each)

and, for a recipe with a long protocol (``eval.long_protocol``, `run_long_protocol`)::

    data/heldout_long.lance + data/long_stage.json   its held-out episodes (e.g. TwoRoom tours)
    oracle_long/                    the oracle on its pairs
    seed{S}/eval_long/              the model + random baseline on them + seed{S}/eval_long_stage.json
    result_long.json                its result, ``"protocol": "long"``

and, with ``--validation`` (`run_validation`: where a recipe change is chosen, the held-out
pairs left unseen; the data and training stages are the ones above, shared)::

    data/validation.lance + data/validation_stage.json   expert episodes of seeds 3,000,000..
    seed{S}/eval_validation/        the model + random baseline on their pairs (no oracle)
    result_validation.json          its result, ``"protocol": "validation"``

Re-running reuses every finished stage whose recipe sections are unchanged (a stage's
marker holds the digest of the sections it depends on: data; data + train; data + train
+ eval); a finished training run is a no-op, an interrupted one resumes. A folder that
holds another recipe's stage is refused rather than overwritten. The standard stages'
digests leave the long protocol out (`Recipe.section_hash`): adding one to a finished
run reuses its data, checkpoints and standard evaluations and runs only the long stages,
whose digests add it (``long=True``; the long data's: `Recipe.long_data_hash`).

Several training seeds (``seeds``) share the data and the pairs; the result line gives
the pooled success (all seeds' episodes, Wilson interval), the mean and spread of the
per-seed rates and each seed's line.
"""

from __future__ import annotations

import hashlib
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


def _check_model_config(ckpt: Path, expected: Any) -> None:
    """Refuse to reuse the checkpoint in `ckpt` when its recorded model config differs from the
    one the recipe resolves to now (`expected`). The recipe's hash covers the fields it names,
    not the family's defaults it leaves unnamed: this catches a default changed since training.

    Raises:
        ValueError: naming each differing field with both values.
    """
    import dataclasses

    from worldmodel.checkpoint import load_config

    saved = load_config(ckpt)  # CheckpointError (a ValueError) naming a missing or bad config
    if saved.family != expected.family:
        raise ValueError(f"{ckpt} holds a {saved.family!r} model, the recipe trains {expected.family!r}: use "
                         "another --out")
    have, want = dataclasses.asdict(saved), dataclasses.asdict(expected)
    diff = {k: (have.get(k), want.get(k)) for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r}, recipe now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{ckpt} was trained with another model config than this recipe resolves to now ({detail}); "
                         "a family default changed since it was trained: use another --out, or remove the seed's "
                         "folder to retrain")


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
        "oracle_success_rate", "oracle_success_ci95", "oracle_successes", "oracle_episodes",
        "seconds_per_decision", "train_seconds", "seeds", "per_seed", "success_rate_mean",
        "success_rate_std"}`` (the oracle's count and episodes are its own: it plans the shared
        pairs once, whatever the number of seeds).
    """
    from benchmarks.planning import PlannerConfig
    from benchmarks.protocol import PlanningProtocol
    from data import open_dataset

    recipe.check()
    say = log or (lambda line: None)
    seeds = _check_seeds(seeds)
    root, shared = _folders(recipe, out, data_root)
    train_path, heldout_path = _data_stage(recipe, shared, progress, say)
    heldout = open_dataset(heldout_path)
    protocol = PlanningProtocol(**recipe.eval.protocol)
    planner_cfg = PlannerConfig(**recipe.eval.planner)

    # ---- oracle (no model: shared by the seeds)
    oracle = _oracle_stage(recipe, shared / "oracle", recipe.section_hash("data", "eval"), "oracle", heldout, protocol,
                           device, progress, say)

    per_seed, model_cfg = [], _model_config(recipe, train_path)
    for seed in seeds:
        sdir = root / f"seed{seed}"
        train_seconds = _train_stage(recipe, sdir, seed, train_path, model_cfg, device, progress, say)
        ev = _eval_stage(recipe, sdir, "eval", recipe.section_hash("data", "train", "eval"), None, heldout, protocol,
                         planner_cfg, device, progress, say)
        per_seed.append(_seed_line(seed, ev, train_seconds))

    result = _result_line(recipe, "standard", per_seed, oracle, protocol, planner_cfg)
    (root / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


#: first seed of the validation episodes (`run_validation`): past every recipe's training (0..) and held-out
#: (1,000,000.. and 1,500,000..) seeds and the condition episodes of ``wm eval --env`` / ``wm ood``
#: (`benchmarks.conditions.EVAL_SEED_BASE`, 2,000,000..), so a choice made here sees none of them
VALIDATION_SEED = 3_000_000


def run_validation(
    recipe: Recipe,
    out: str | Path,
    seeds: Sequence[int] = (0,),
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    data_root: str | Path | None = None,
) -> dict:
    """Train `recipe` (or reuse its checkpoints) and plan on validation pairs instead of the held-out ones.

    This is where a recipe change is chosen: its held-out pairs stay unseen until it is adopted.
    Stages: `run_recipe`'s data and training stages (shared with it: a later `run_recipe` in the
    same folder reuses them), the validation episodes (``data/validation.lance`` +
    ``data/validation_stage.json``: ``heldout_episodes`` expert episodes of seeds `VALIDATION_SEED`..,
    collected as the held-out ones are) and per seed the model with the random baseline on their
    pairs (``seed{S}/eval_validation/``, the checkpoint's episode record checked against them as for
    every evaluation). No oracle and no long protocol.

    Returns:
        the validation result line (also in ``result_validation.json``): `run_recipe`'s keys with
        ``"protocol": "validation"`` and the oracle's keys None.

    Raises:
        ValueError: the validation seeds overlap the recipe's training or held-out (also the
            long protocol's) seeds, naming both ranges; a stage folder of another recipe.
    """
    from benchmarks.planning import PlannerConfig
    from benchmarks.protocol import PlanningProtocol
    from data import collect, open_dataset

    recipe.check()
    say = log or (lambda line: None)
    seeds = _check_seeds(seeds)
    d = recipe.data
    val = range(VALIDATION_SEED, VALIDATION_SEED + d.heldout_episodes)
    ranges = [("training", range(d.seed, d.seed + d.expert_episodes + d.random_episodes)),
              ("held-out", range(d.heldout_seed, d.heldout_seed + d.heldout_episodes))]
    lp = recipe.long()
    if lp is not None:
        ranges.append(("long-protocol held-out", range(lp.heldout_seed, lp.heldout_seed + lp.heldout_episodes)))
    for what, used in ranges:
        if used.start < val.stop and val.start < used.stop:
            raise ValueError(f"recipe {recipe.name}: its {what} episodes' seeds {used.start}..{used.stop - 1} overlap "
                             f"the validation seeds {val.start}..{val.stop - 1}; move data.seed or data.heldout_seed")
    root, shared = _folders(recipe, out, data_root)
    train_path, _ = _data_stage(recipe, shared, progress, say)

    # ---- data: validation episodes
    path, marker = shared / "data" / "validation.lance", shared / "data" / "validation_stage.json"
    data_hash = _digest({"validation_data": recipe.section_hash("data"), "seed": VALIDATION_SEED})
    have = _read(marker)
    if have is not None and have.get("hash") == data_hash:
        say(f"{recipe.env_id}: validation data reused ({path})")
    elif have is not None:
        raise ValueError(f"{path} holds the validation data of another recipe (stage hash {have.get('hash')}, "
                         f"this recipe's {data_hash}): use another --out, or remove it")
    else:  # none, or an interrupted collection (no marker yet): collected afresh
        t0 = time.perf_counter()
        say(f"{recipe.env_id}: collecting {d.heldout_episodes} validation episodes (seeds {val.start}..)")
        collect(recipe.env_id, d.heldout_episodes, path, policy="expert", seed=VALIDATION_SEED, mode="overwrite",
                stop_on_success=d.stop_on_success, noise=d.noise, split=d.split, codec=d.codec, progress=progress,
                resolution=d.resolution, factors=d.factors or None)
        marker.write_text(json.dumps({"hash": data_hash, "seconds": time.perf_counter() - t0}, indent=2) + "\n")
    validation = open_dataset(path)
    protocol = PlanningProtocol(**recipe.eval.protocol)
    planner_cfg = PlannerConfig(**recipe.eval.planner)

    per_seed = []
    eval_hash = _digest({"validation_eval": recipe.section_hash("data", "train", "eval"), "data": data_hash})
    model_cfg = _model_config(recipe, train_path)
    for seed in seeds:
        sdir = root / f"seed{seed}"
        train_seconds = _train_stage(recipe, sdir, seed, train_path, model_cfg, device, progress, say)
        ev = _eval_stage(recipe, sdir, "eval_validation", eval_hash, "validation", validation, protocol, planner_cfg,
                         device, progress, say)
        per_seed.append(_seed_line(seed, ev, train_seconds))
    result = _result_line(recipe, "validation", per_seed, None, protocol, planner_cfg)
    (root / "result_validation.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _digest(value: dict) -> str:
    """A 12-hex-digit digest of a JSON-able dict (a stage marker's hash)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def _folders(recipe: Recipe, out: str | Path, data_root: str | Path | None) -> tuple[Path, Path]:
    """``out/<env>/`` (made, with the recipe written to it) and the folder of the shared data stages."""
    root = Path(out) / env_folder(recipe.env_id)
    root.mkdir(parents=True, exist_ok=True)
    shared = root if data_root is None else Path(data_root)
    shared.mkdir(parents=True, exist_ok=True)
    recipe.save(root / "recipe.json")
    return root, shared


def _data_stage(recipe: Recipe, shared: Path, progress: bool, say: Callable[[str], None]) -> tuple[Path, Path]:
    """Collect (or reuse) the training and held-out episodes in ``shared/data``; their paths."""
    from data import collect

    d = recipe.data
    data_dir = shared / "data"
    train_path, heldout_path = data_dir / "train.lance", data_dir / "heldout.lance"
    data_hash = recipe.section_hash("data")
    if _check_stage(data_dir, data_dir / "stage.json", data_hash, "data"):
        say(f"{recipe.env_id}: data reused ({data_dir})")
        return train_path, heldout_path
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
    return train_path, heldout_path


def _model_config(recipe: Recipe, train_path: Path) -> Any:
    """The model config `recipe` resolves to on the training data in `train_path` (its frame size, action width)."""
    from data import open_dataset

    meta = open_dataset(train_path).meta
    return recipe.model_config(image_size=int(meta["image_shape"][0]), action_dim=int(meta["action_dim"]))


def _train_stage(recipe: Recipe, sdir: Path, seed: int, train_path: Path, model_cfg: Any, device: str,
                 progress: bool, say: Callable[[str], None]) -> float:
    """Train training seed `seed` of `model_cfg` (`_model_config`) into ``sdir/ckpt`` (or reuse / resume
    it); its training seconds."""
    from worldmodel.config import TrainConfig
    from worldmodel.train import train

    sdir.mkdir(exist_ok=True)
    train_hash = recipe.section_hash("data", "train")
    marker = sdir / "train_stage.json"
    if _check_stage(sdir / "ckpt", marker, train_hash, "train") and (_read(marker) or {}).get("seed") == seed:
        _check_model_config(sdir / "ckpt", model_cfg)
        say(f"{recipe.env_id} seed {seed}: checkpoint reused")
        return float(_read(marker)["seconds"])
    t = recipe.train
    train_cfg = TrainConfig(data=str(train_path), out=str(sdir / "ckpt"), steps=t.steps, batch_size=t.batch_size,
                            lr=t.lr, seed=t.seed + seed, amp=t.amp, augment=t.augment, device=device, progress=progress)
    say(f"{recipe.env_id} seed {seed}: training {t.steps} steps of {t.batch_size} windows")
    summary = train(model_cfg, train_cfg)
    train_seconds = float(summary.get("total_seconds", summary["seconds"]))  # resumed sessions included
    marker.write_text(json.dumps({"hash": train_hash, "seed": seed, "seconds": train_seconds,
                                  "steps": summary["steps"], "amp": summary.get("amp")}, indent=2) + "\n")
    return train_seconds


def run_long_protocol(
    recipe: Recipe,
    out: str | Path,
    seeds: Sequence[int] = (0,),
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    data_root: str | Path | None = None,
) -> dict | None:
    """Run (or reuse) the long-protocol stages of `recipe` under ``out/<env>/``, after `run_recipe`
    (whose data and checkpoints it uses); None when the recipe has no long protocol.

    Stages: the held-out long episodes (``data/heldout_long.lance``: ``heldout_episodes``
    episodes of the protocol's ``policy``, ``max_steps`` actions, seeds from
    ``heldout_seed``, the recipe's resolution, codec, split, factors and noise, no stop on
    success), the oracle on their pairs (``oracle_long/``) and per seed the model with the
    random baseline on the same pairs (``seed{S}/eval_long/``; the checkpoint's episode
    record is checked against them as for every evaluation: `benchmarks.leaks`).

    Returns:
        the long result line (also in ``result_long.json``): `run_recipe`'s keys with
        ``"protocol": "long"``, ``protocol_settings`` (offset, budget, episodes, seed) and
        ``long_data`` (`LongProtocol.data_dict`).

    Raises:
        ValueError: a seed's training stage is missing or of another recipe (run
            `run_recipe` first), a stage folder of another recipe.
    """
    from benchmarks.planning import PlannerConfig
    from data import collect, open_dataset

    recipe.check()
    lp = recipe.long()
    if lp is None:
        return None
    say = log or (lambda line: None)
    seeds = _check_seeds(seeds)
    root = Path(out) / env_folder(recipe.env_id)
    shared = root if data_root is None else Path(data_root)
    d = recipe.data
    protocol = lp.protocol()
    planner_cfg = PlannerConfig(**recipe.eval.planner)

    # ---- data: held-out long episodes
    data_dir = shared / "data"
    path = data_dir / "heldout_long.lance"
    data_hash = recipe.long_data_hash()
    have = _read(data_dir / "long_stage.json")
    if have is not None and have.get("hash") == data_hash:
        say(f"{recipe.env_id}: long-protocol data reused ({path})")
    elif have is not None:
        raise ValueError(f"{path} holds the long-protocol data of another recipe (stage hash {have.get('hash')}, "
                         f"this recipe's {data_hash}): use another --out, or remove it")
    else:  # none, or an interrupted collection (no marker yet): collected afresh
        data_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        say(f"{recipe.env_id}: collecting {lp.heldout_episodes} held-out {lp.policy} episodes of {lp.max_steps} steps "
            f"for the long protocol (offset {lp.offset}, budget {lp.budget})")
        collect(recipe.env_id, lp.heldout_episodes, path, policy=lp.policy, seed=lp.heldout_seed, mode="overwrite",
                max_steps=lp.max_steps, stop_on_success=False, noise=d.noise, split=d.split, codec=d.codec,
                progress=progress, resolution=d.resolution, factors=d.factors or None)
        (data_dir / "long_stage.json").write_text(json.dumps(
            {"hash": data_hash, "seconds": time.perf_counter() - t0, **lp.data_dict()}, indent=2) + "\n")
    heldout = open_dataset(path)

    # ---- oracle
    oracle = _oracle_stage(recipe, shared / "oracle_long", recipe.section_hash("data", "eval", long=True),
                           "long-protocol oracle", heldout, protocol, device, progress, say)

    per_seed = []
    train_hash = recipe.section_hash("data", "train")
    eval_hash = recipe.section_hash("data", "train", "eval", long=True)
    for seed in seeds:
        sdir = root / f"seed{seed}"
        marker = _read(sdir / "train_stage.json")
        if marker is None or marker.get("hash") != train_hash or marker.get("seed") != seed:
            raise ValueError(f"{sdir}: no finished training stage of recipe {recipe.name} (seed {seed}); "
                             "run the recipe's standard stages first (run_recipe)")
        ev = _eval_stage(recipe, sdir, "eval_long", eval_hash, "long", heldout, protocol, planner_cfg, device, progress,
                         say)
        per_seed.append(_seed_line(seed, ev, float(marker["seconds"])))
    result = _result_line(recipe, "long", per_seed, oracle, protocol, planner_cfg)
    result["long_data"] = lp.data_dict()
    (root / "result_long.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    """The training seeds as ints; ValueError unless there is at least one and they are distinct."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds}: expected distinct training seeds")
    return seeds


def _oracle_stage(recipe: Recipe, oracle_dir: Path, digest: str, what: str, heldout: Any, protocol: Any, device: str,
                  progress: bool, say: Callable[[str], None]) -> dict | None:
    """The oracle on `heldout`'s pairs (the recipe's solver with its ``oracle_planner`` settings,
    planning through the simulator) in `oracle_dir`, or its summary when that stage of `digest`
    is there; None when the recipe runs no oracle. `what` names the stage in messages."""
    from benchmarks.planning import PlannerConfig, evaluate_planning

    if not recipe.eval.oracle:
        return None
    if _check_stage(oracle_dir, oracle_dir / "stage.json", digest, what):
        say(f"{recipe.env_id}: {what} reused")
        return _read(oracle_dir / "summary.json")
    oracle_cfg = PlannerConfig(**{**recipe.eval.planner, **recipe.eval.oracle_planner})
    oracle = evaluate_planning(None, heldout, oracle_dir, protocol=protocol, planner_cfg=oracle_cfg,
                               device=device, video=False, oracle=True, progress=progress)
    (oracle_dir / "stage.json").write_text(json.dumps({"hash": digest}) + "\n")
    say(f"{recipe.env_id}: {what} {oracle['oracle_successes']}/{oracle['episodes']}")
    return oracle


def _eval_stage(recipe: Recipe, sdir: Path, name: str, digest: str, protocol_name: str | None, heldout: Any,
                protocol: Any, planner_cfg: Any, device: str, progress: bool, say: Callable[[str], None]) -> dict:
    """One seed's model and random baseline on `heldout`'s pairs in ``sdir/name`` (marker
    ``sdir/name_stage.json``), or the summary of that stage when it is there with `digest`.
    `protocol_name` (e.g. ``"long"``) is recorded in the summary and named in messages."""
    from benchmarks.planning import checkpoint_data, evaluate_planning
    from worldmodel.checkpoint import load_checkpoint

    eval_dir, seed = sdir / name, sdir.name.removeprefix("seed")
    label = f"{recipe.env_id} seed {seed}" + (f", {protocol_name} protocol" if protocol_name else "")
    if _check_stage(eval_dir, sdir / f"{name}_stage.json", digest,
                    "eval" if protocol_name is None else f"{protocol_name}-protocol eval"):
        ev = _read(eval_dir / "summary.json")
        say(f"{recipe.env_id} seed {seed}: {'' if protocol_name is None else protocol_name + '-protocol '}"
            "evaluation reused")
    else:
        model = load_checkpoint(sdir / "ckpt", device=device).eval()
        ev = evaluate_planning(model, heldout, eval_dir, protocol=protocol, planner_cfg=planner_cfg, device=device,
                               video=True, trained_on=checkpoint_data(sdir / "ckpt"), progress=progress)
        ev["recipe"], ev["recipe_hash"] = recipe.name, recipe.hash()
        if protocol_name is not None:
            ev["protocol_name"] = protocol_name
        (eval_dir / "summary.json").write_text(json.dumps(ev, indent=2) + "\n")
        (sdir / f"{name}_stage.json").write_text(json.dumps({"hash": digest}) + "\n")
    say(f"{label}: {ev['successes']}/{ev['episodes']} vs random {ev['baseline_successes']}/{ev['episodes']}")
    return ev


def _seed_line(seed: int, ev: dict, train_seconds: float) -> dict:
    """One seed's entry of a result line, from its evaluation summary."""
    return {"seed": seed, "successes": ev["successes"], "episodes": ev["episodes"],
            "success_rate": ev["success_rate"], "success_ci95": ev["success_ci95"],
            "baseline_successes": ev["baseline_successes"],
            "seconds_per_decision": ev.get("seconds_per_decision"), "train_seconds": train_seconds}


def _result_line(recipe: Recipe, protocol_name: str, per_seed: list[dict], oracle: dict | None, protocol: Any,
                 planner_cfg: Any) -> dict:
    """A result line (`run_recipe`'s keys) pooling the seeds' evaluations of one protocol."""
    from benchmarks.stats import wilson_interval

    k = sum(s["successes"] for s in per_seed)
    n = sum(s["episodes"] for s in per_seed)
    kb = sum(s["baseline_successes"] for s in per_seed)
    rates = [s["success_rate"] for s in per_seed]
    return {
        "env_id": recipe.env_id,
        "recipe": recipe.name,
        "recipe_hash": recipe.hash(),
        "protocol": protocol_name,
        "episodes": n,
        "successes": k,
        "success_rate": k / n,
        "success_ci95": list(wilson_interval(k, n)),
        "baseline_success_rate": kb / n,
        "baseline_success_ci95": list(wilson_interval(kb, n)),
        "oracle_success_rate": oracle.get("oracle_success_rate") if oracle else None,
        "oracle_success_ci95": oracle.get("oracle_success_ci95") if oracle else None,
        # the oracle plans the shared pairs once (no model, no seed): its own count, not the pooled one
        "oracle_successes": oracle.get("oracle_successes") if oracle else None,
        "oracle_episodes": oracle.get("episodes") if oracle else None,
        "oracle_seconds_per_decision": oracle.get("oracle_seconds_per_decision") if oracle else None,
        "seconds_per_decision": statistics.fmean(s["seconds_per_decision"] or 0.0 for s in per_seed),
        "train_seconds": statistics.fmean(s["train_seconds"] for s in per_seed),
        "seeds": [s["seed"] for s in per_seed],
        "success_rate_mean": statistics.fmean(rates),
        "success_rate_std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
        "per_seed": per_seed,
        "protocol_settings": protocol.to_dict(),
        "planner": planner_cfg.to_dict(),
    }


def run_planning_bench(
    env_ids: Sequence[str],
    out: str | Path,
    seeds: Sequence[int] = (0,),
    split: str | None = None,
    recipe_file: str | Path | None = None,
    family: str | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    overrides: Callable[[Recipe], Recipe] | None = None,
    validation: bool = False,
) -> list[dict]:
    """Run the recipe of each env (or the recipe in `recipe_file`) and write ``out/results.jsonl``.

    Args:
        env_ids: env ids (``["all"]``: every env with a recipe).
        split: ``"train"`` runs each recipe's factor-randomised variant.
        recipe_file: a recipe JSON (`benchmarks.recipes.load_recipe`) instead of the registered ones.
        family: train this model family instead of each recipe's (`benchmarks.recipes.get_recipe`).
        overrides: a function applied to each recipe before it runs (tests shrink budgets with it).
        validation: plan on validation pairs instead of the held-out ones (`run_validation`: no
            oracle, no long protocol), to choose a recipe change without seeing the held-out pairs.

    Returns:
        the result lines (also merged into ``out/results.jsonl``: one line per env and recipe).
    """
    from benchmarks.recipes import RECIPES, get_recipe, load_recipe

    if recipe_file is not None:
        if family is not None or split is not None:
            raise ValueError("family and split apply to the registered recipes, not to a recipe file (set "
                             "train.model.family / data.split in the file)")
        recipes = [load_recipe(recipe_file)]
    else:
        ids = list(RECIPES) if list(env_ids) == ["all"] else list(env_ids)
        recipes = [get_recipe(e, split, family=family) for e in ids]  # bad id or family: refused before any work
    if overrides is not None:
        recipes = [overrides(r).check() for r in recipes]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for recipe in recipes:
        if validation:
            mine = [run_validation(recipe, out, seeds=seeds, device=device, log=log, progress=progress)]
            _merge_results(out, recipe, mine)
            results += mine
            continue
        mine = [run_recipe(recipe, out, seeds=seeds, device=device, log=log, progress=progress)]
        _merge_results(out, recipe, mine)  # the standard line is kept even if the long stages fail
        long = run_long_protocol(recipe, out, seeds=seeds, device=device, log=log, progress=progress)
        if long is not None:
            mine.append(long)
            _merge_results(out, recipe, mine)
        results += mine
    return results


def _merge_results(out: Path, recipe: Recipe, lines_of_recipe: list[dict]) -> None:
    """Replace `recipe`'s lines of ``out/results.jsonl`` (one per env, recipe and protocol) by these, atomically."""
    path = out / "results.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    new = {(x["env_id"], x["recipe"], x.get("protocol", "standard")) for x in lines_of_recipe}
    lines = [x for x in lines if (x.get("env_id"), x.get("recipe"), x.get("protocol", "standard")) not in new]
    lines += lines_of_recipe
    tmp = out / "results.jsonl.tmp"
    tmp.write_text("".join(json.dumps(x) + "\n" for x in lines))
    tmp.replace(path)


def markdown_table(results: Sequence[dict]) -> str:
    """A RESULTS.md table of result lines."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.0f}%"

    rows = ["| env | recipe (hash) | protocol | success | 95% Wilson | random | oracle | s per decision | train s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lo, hi = r["success_ci95"]
        ps = r.get("protocol_settings") or {}
        proto = r.get("protocol", "standard") + (f" ({ps['offset']}/{ps['budget']})" if "offset" in ps else "")
        rows.append(f"| {r['env_id']} | {r['recipe']} ({r['recipe_hash']}) | {proto} | {r['successes']}/{r['episodes']} | "
                    f"{pct(lo)}–{pct(hi)} | {pct(r['baseline_success_rate'])} | {pct(r['oracle_success_rate'])} | "
                    f"{r['seconds_per_decision']:.2f} | {r['train_seconds']:.0f} |")
    return "\n".join(rows)

