"""``wm bench noisy``: the noisy-feature experiment (issue #12, deliverable 6).

The claim measured (the JEPA papers': a JEPA learns to ignore noisy features, a
pixel-reconstruction model does not): train each model family on data without and with
distractors (`envs.distractors`: moving patches of flickering noise, observation only)
and compare how well a linear probe reads the true state out of the embeddings, and
how often planning with the model reaches the goal.

For every family (``lewm``, ``pixel``, ...) and data condition:

- ``off``: default factors (the env's registered recipe, `benchmarks.recipes`);
- ``on``: the same episodes (same seeds, hence the same starts, goals, actions and
  states: the factor has a random stream of its own) with ``distractor`` patches in
  every frame, `ON_DISTRACTOR` of them by default (the top of the factor's train range);
  ``distractor="train"`` draws the count per episode over the train range instead (the
  ``train`` split with every other factor pinned to its default: the other factors' draws
  then move the starts, so the episodes are no longer the ``off`` ones);

the recipe runs through `benchmarks.bench_planning.run_recipe` (collect, train, evaluate
planning on held-out start/goal pairs against random actions, standard protocol; every
stage is reused on a re-run), then a ridge probe (`benchmarks.state_probe`) from the
embeddings to the env's goal layout (``env.goal_from_state``: the agent position for
TwoRoom, the block pose for PushT) is fitted on the training episodes and scored on the
held-out ones (R^2 per dimension and their mean). Both conditions are evaluated in
their own distribution (``on`` models plan among distractors).

Layout of ``OUT/``::

    off/data/, on/data/              a condition's episodes (train.lance, heldout.lance), shared by the families
    {off,on}/<family>/<Env>/         run_recipe's folders: recipe.json, seed{S}/ckpt, seed{S}/eval, result.json
    {off,on}/<family>/<Env>/seed{S}/probe.json   the held-out probe score of that checkpoint
    results.jsonl                    one line per (family, condition), keys in `run_noisy`
    report.md                        the table: family x distractor, probe R^2, success (Wilson 95%), random
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.recipes import Recipe

CONDITIONS = ("off", "on")
"""Data conditions, in table order: without distractors, with them."""
DEFAULT_FAMILIES = ("lewm", "pixel")
"""The JEPA and its pixel-reconstruction baseline."""
ON_DISTRACTOR = 4.0
"""The ``on`` condition's ``distractor`` value by default: the top of its train range (4 patches)."""
PROBE_MAX_FRAMES = 20_000
"""At most this many frames per probe fit or score (evenly strided over the episodes)."""


def condition_recipe(base: Recipe, family: str, condition: str, distractor: str | float = ON_DISTRACTOR) -> Recipe:
    """`base` (a copy) for model `family` and data `condition` (see the module docstring).

    Args:
        base: the env's recipe (any budgets).
        family: a model family (``train.model["family"]``).
        condition: ``"off"`` or ``"on"``.
        distractor: for ``"on"``: a value (every episode; validated by the env's factor
            space, OOD values allowed) or ``"train"`` (drawn per episode over the train range).

    Raises:
        ValueError: an unknown condition, a base recipe that already sets the split or the
            ``distractor`` factor, a bad distractor value, an env without the factor.
    """
    import envs

    if condition not in CONDITIONS:
        raise ValueError(f"condition={condition!r}: expected one of {list(CONDITIONS)}")
    space = envs.factor_space(base.env_id)
    if "distractor" not in space:
        raise ValueError(f"{base.env_id} has no 'distractor' factor (envs with one: wm/TwoRoom-v0, wm/PushT-v0)")
    if base.data.split is not None or "distractor" in base.data.factors:
        raise ValueError(f"recipe {base.name}: the noisy-feature experiment sets the data condition itself; "
                         f"use a base recipe without data.split and without a distractor factor")
    r = Recipe.from_dict(base.to_dict())
    r.eval.long_protocol = None  # the experiment evaluates the standard protocol only (run_recipe)
    r.train.model = {**r.train.model, "family": family}
    r.name = f"{base.name}-{family}-distractor-{condition}"
    if condition == "on":
        if distractor == "train":
            r.data.split = "train"
            r.data.factors = {**{f.name: f.default for f in space if f.name != "distractor"}, **r.data.factors}
        else:
            try:
                value = space["distractor"].validate(distractor)
            except ValueError as e:
                raise ValueError(f"--distractor: {e} (or 'train': drawn over the train range)") from None
            if value == space["distractor"].default:
                raise ValueError(f"--distractor={distractor!r} is the default (no patches): the 'on' condition "
                                 f"needs distractors")
            r.data.factors = {**r.data.factors, "distractor": value}
    return r.check()


def _probe_score(ckpt: Path, train_path: Path, heldout_path: Path, env_id: str, device: str,
                 max_frames: int = PROBE_MAX_FRAMES) -> dict:
    """Fit the goal-layout probe on `train_path`'s frames, score it on `heldout_path`'s; reused
    from ``probe.json`` beside the checkpoint while the weights are the same."""
    import envs
    from benchmarks.state_probe import _model_sha256, embed_dataset, fit_state_probe, probe_r2
    from data import open_dataset
    from worldmodel.checkpoint import load_checkpoint

    marker = ckpt.parent / "probe.json"
    weights = _model_sha256(ckpt)
    try:
        have = json.loads(marker.read_text())
        if have.get("model_sha256") == weights and have.get("max_frames") == max_frames:
            return have
    except (OSError, json.JSONDecodeError):
        pass
    train_ds, heldout_ds = open_dataset(train_path), open_dataset(heldout_path)
    env = envs.make(env_id, resolution=int(train_ds.meta["image_shape"][0]))
    goal_fn = env.unwrapped.goal_from_state
    model = load_checkpoint(ckpt, device=device).eval()
    probe = fit_state_probe(model, train_ds, goal_fn=goal_fn, max_frames=max_frames, device=device)
    x, y = embed_dataset(model, heldout_ds, goal_fn=goal_fn, max_frames=max_frames, device=device)
    env.close()
    per_dim = probe_r2(probe, x, y)
    scored = [v for v in per_dim if v is not None]
    out = {
        "probe_r2": statistics.fmean(scored) if scored else None,
        "probe_r2_per_dim": per_dim,
        "probe_r2_train": probe.info["r2"],
        "probe_target": "goal_from_state",
        "probe_frames_train": int(probe.info["frames"]),
        "probe_frames_heldout": int(len(x)),
        "model_sha256": weights,
        "max_frames": max_frames,
    }
    marker.write_text(json.dumps(out, indent=2) + "\n")
    return out


def run_noisy(
    env_id: str,
    out: str | Path,
    families: Sequence[str] = DEFAULT_FAMILIES,
    steps: int | None = None,
    episodes: int | None = None,
    distractor: str | float = ON_DISTRACTOR,
    seeds: Sequence[int] = (0,),
    recipe: Recipe | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    conditions: Sequence[str] = CONDITIONS,
) -> list[dict]:
    """Run the noisy-feature experiment on `env_id` (see the module docstring) into `out`.

    Args:
        env_id: an env with the ``distractor`` factor (``wm/TwoRoom-v0``, ``wm/PushT-v0``).
        out: the output folder (layout in the module docstring); a re-run reuses every stage.
        families: model families to train (each must be registered, checked before any work).
        steps: training steps (None: the recipe's).
        episodes: held-out planning episodes (None: the recipe's protocol).
        distractor: the ``on`` condition's distractor: a value or ``"train"`` (`condition_recipe`).
        seeds: training seeds (their episodes pooled in the success rate, as ``wm bench planning``).
        recipe: the base recipe (None: the env's registered one, `benchmarks.recipes.get_recipe`).
        conditions: the data conditions to run, a subset of `CONDITIONS` (e.g. ``["on"]`` in a
            second process beside one running ``["off"]``: they share only finished stages).

    Returns:
        the result lines, family-major then ``off``/``on``; each ``{"env_id", "family",
        "distractor" ("off" | "on"), "data_split", "data_factors", "recipe", "recipe_hash",
        "episodes", "successes", "success_rate", "success_ci95", "baseline_success_rate",
        "baseline_success_ci95", "probe_r2" (mean over the goal dimensions, held out),
        "probe_r2_per_dim", "probe_r2_train", "probe_target", "probe_frames_train",
        "probe_frames_heldout", "train_seconds", "seeds"}``. Also written to
        ``out/results.jsonl`` and, as a table, ``out/report.md``.

    Raises:
        ValueError: an unknown env, family or bad budget (before any work).
    """
    from benchmarks.bench_planning import env_folder, run_recipe
    from benchmarks.recipes import family_config_class, get_recipe

    say = log or (lambda line: None)
    families = list(dict.fromkeys(families))
    if not families:
        raise ValueError("families: expected at least one model family, e.g. lewm pixel")
    for name, value in (("steps", steps), ("episodes", episodes)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"--{name}={value!r}: expected a positive integer")
    bad = [c for c in conditions if c not in CONDITIONS]
    if bad or not conditions:
        raise ValueError(f"conditions {list(conditions)!r}: expected one or more of {list(CONDITIONS)}")
    base = get_recipe(env_id) if recipe is None else recipe
    if base.env_id != env_id:
        raise ValueError(f"the recipe {base.name} is for {base.env_id}, not {env_id}")
    base = Recipe.from_dict(base.to_dict())
    if steps is not None:
        base.train.steps = steps
    if episodes is not None:
        base.eval.protocol = {**base.eval.protocol, "episodes": episodes}
    base.eval.oracle = False  # the simulator's planner does not see pixels: distractors change nothing for it
    plan = []
    for family in families:
        family_config_class(family)  # an unknown family: refused here, the closest named
        for condition in (c for c in CONDITIONS if c in conditions):
            plan.append((family, condition, condition_recipe(base, family, condition, distractor)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for family, condition, r in plan:
        say(f"noisy features: {family}, distractors {condition}")
        data_root = out / condition
        res = run_recipe(r, out / condition / family, seeds=seeds, device=device, log=log, progress=progress,
                         data_root=data_root)
        root = out / condition / family / env_folder(env_id)
        probes = [_probe_score(root / f"seed{s}" / "ckpt", data_root / "data" / "train.lance",
                               data_root / "data" / "heldout.lance", env_id, device) for s in res["seeds"]]
        per_dim = [statistics.fmean(v) if all(v_ is not None for v_ in v) else None
                   for v in zip(*(p["probe_r2_per_dim"] for p in probes))]
        means = [p["probe_r2"] for p in probes if p["probe_r2"] is not None]
        line = {
            "env_id": env_id, "family": family, "distractor": condition,
            "data_split": r.data.split, "data_factors": r.data.factors,
            "recipe": r.name, "recipe_hash": res["recipe_hash"],
            **{k: res[k] for k in ("episodes", "successes", "success_rate", "success_ci95", "baseline_success_rate",
                                   "baseline_success_ci95", "train_seconds", "seeds")},
            "probe_r2": statistics.fmean(means) if means else None,
            "probe_r2_per_dim": per_dim,
            "probe_r2_train": probes[0]["probe_r2_train"] if len(probes) == 1 else None,
            "probe_target": probes[0]["probe_target"],
            "probe_frames_train": probes[0]["probe_frames_train"],
            "probe_frames_heldout": probes[0]["probe_frames_heldout"],
            "per_seed_probe_r2": [p["probe_r2"] for p in probes],
        }
        results.append(line)
        say(f"noisy features: {family}, distractors {condition}: success {res['successes']}/{res['episodes']}, "
            f"random {res['baseline_success_rate']:.0%}, probe R^2 {_fmt(line['probe_r2'])}")
        _write(out, results)
    return results


def _write(out: Path, results: list[dict]) -> None:
    """``results.jsonl`` and ``report.md`` of the lines so far (atomically replaced)."""
    for name, text in (("results.jsonl", "".join(json.dumps(x) + "\n" for x in results)),
                       ("report.md", markdown_report(results))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.0f}%" if pct else f"{x:.3f}"


def markdown_report(results: Sequence[dict]) -> str:
    """The Markdown page: a table with a row per family x distractor condition."""
    if not results:
        return "# Noisy-feature experiment\n\nNo results yet.\n"
    env_ids = sorted({r["env_id"] for r in results})
    lines = [
        "# Noisy-feature experiment",
        "",
        f"Env: {', '.join(env_ids)}. Distractors: moving patches of flickering noise in the observation only "
        "(`envs/distractors.py`); `on` = trained and evaluated with them. Probe: ridge regression from the "
        "embedding to the goal layout, fitted on the training episodes, R^2 on held-out episodes (mean over "
        "dimensions). Success: planning on held-out start/goal pairs (standard protocol), 95% Wilson interval; "
        "random: random actions on the same pairs.",
        "",
        "| family | distractor | probe R² (held out) | success | 95% Wilson | random | train s | recipe (hash) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lo, hi = r["success_ci95"]
        lines.append(
            f"| {r['family']} | {r['distractor']} | {_fmt(r['probe_r2'])} | {r['successes']}/{r['episodes']} "
            f"({_fmt(r['success_rate'], True)}) | {_fmt(lo, True)}–{_fmt(hi, True)} | "
            f"{_fmt(r['baseline_success_rate'], True)} | {r['train_seconds']:.0f} | {r['recipe']} ({r['recipe_hash']}) |"
        )
    per_dim = [f"{r['family']}/{r['distractor']}: [{', '.join(_fmt(v) for v in r['probe_r2_per_dim'])}]" for r in results]
    lines += ["", "Probe R² per goal dimension: " + "; ".join(per_dim) + ".", ""]
    return "\n".join(lines)

