"""``wm ood``: a checkpoint's planning success in and out of distribution, condition by condition.

Conditions (`suite_conditions`), each planned on its own start/goal pairs collected for it
(`benchmarks.conditions.collect_condition_pairs`: expert episodes, seeds 2,000,000.. or
``pair_seed``.. (``--pair-seed``), the same seeds in every condition, so conditions differ in
their factors only):

- ``id``: the condition the checkpoint trained on, read from the split labels its training
  dataset recorded per episode (``default`` factors, or the ``train`` split);
- ``train``: the train split (every factor drawn from its train range);
- each OOD split (``ood_visual``, ``ood_geometry``, ``ood_physics``, ``ood_all``) at
  severities 1..3 (``ood_visual@2``);
- one factor at a time (``factor:NAME@K``): that factor drawn from its OOD ranges at
  severity K, the others as in ``id`` (every factor, or those `OODConfig.sweep_factors` names, by
  name or by kind: ``--sweep-factors visual`` sweeps the visual factors only);
- ``goal_source:random``: the ``id`` factors with start/goal pairs from random-action
  episodes instead of expert ones.

Every condition runs the model's planner and the random baseline on the same pairs (the
oracle too with ``oracle=True``). Outputs in ``OUT/``: ``conditions/<name>/`` (the
``wm eval`` folder of each condition, reused when re-run with the same settings),
``results.jsonl`` (a line per condition: ``condition``, ``kind``, ``split``, ``severity``,
``factor``, ``episodes``, ``successes``, ``success_rate``, ``success_ci95``,
``baseline_success_rate``, ``oracle_success_rate``, ``retained`` = success ÷ ``id``'s
success, ``retained_ci95`` (its 95% interval, `benchmarks.stats.ratio_interval`: the two rates come
from different pairs; null on the ``id`` line and where ``id`` had no success), ``seconds_per_decision``, ``env_id``, ``ckpt``, ``training``, ``pair_seed``), ``report.md``
(ID-vs-OOD table) and ``heatmap.png`` (retained success, split/factor × severity). A
condition whose episodes give too few start/goal pairs (random-action Cube episodes whose
cube never moves) collects more of them, up to 8 times as many
(`benchmarks.conditions.plan_on_condition`); one other than ``id`` that still has too few is
skipped with its reason in the log and ``report.md``, and has no result line; the others
still run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.conditions import EVAL_SEED_BASE, EvalCondition, check_pair_seed
from benchmarks.stats import ratio_interval, wilson_interval

OOD_SPLITS: tuple[str, ...] = ("ood_visual", "ood_geometry", "ood_physics", "ood_all")
SEVERITIES: tuple[int, ...] = (1, 2, 3)


@dataclass
class OODConfig:
    """What ``wm ood`` evaluates (the planner and protocol are ``wm eval``'s)."""

    episodes: int = field(default=50, metadata={
        "help": "start/goal pairs per condition (50: a Wilson interval of at most +-14 points)"})
    severities: tuple[int, ...] = field(default=SEVERITIES, metadata={"help": "OOD severities to evaluate (1..3)"})
    splits: tuple[str, ...] = field(default=OOD_SPLITS, metadata={"help": "OOD splits to evaluate"})
    factor_sweeps: bool = field(default=True, metadata={"help": "one-factor-at-a-time conditions for every factor"})
    sweep_factors: tuple[str, ...] = field(default=(), metadata={
        "help": "the factors the one-factor-at-a-time sweep covers: names or kinds (visual, geometric, physical); "
                "empty: every factor"})
    goal_source: bool = field(default=True, metadata={"help": "the goal-source shift (pairs from random episodes)"})
    oracle: bool = field(default=False, metadata={"help": "also plan each condition through the true simulator"})
    training: str | None = field(default=None, metadata={
        "help": "label of the checkpoint's training data in the results (default: 'default' or 'randomised', "
                "from its dataset)"})
    id_split: str | None = field(default=None, metadata={
        "help": "the condition the checkpoint trained on: 'default' or 'train' (default: read from its dataset)"})
    pair_seed: int = field(default=EVAL_SEED_BASE, metadata={
        "help": f"first seed of every condition's start/goal episodes (default {EVAL_SEED_BASE:,}; another range "
                "keeps them apart from pairs a recipe was chosen on: wm eval --env uses the same default)"})

    def __post_init__(self) -> None:
        from envs.factors import SPLITS, check_severity

        if isinstance(self.episodes, bool) or not isinstance(self.episodes, int) or self.episodes < 1:
            raise ValueError(f"episodes={self.episodes!r}: expected a positive integer")
        self.severities = tuple(check_severity(k) for k in self.severities)
        for split in self.splits:
            if split not in SPLITS or split == "train":
                raise ValueError(f"split {split!r}: expected OOD splits among {[s for s in SPLITS if s != 'train']}")
        if self.id_split not in (None, "default", "train"):
            raise ValueError(f"id_split={self.id_split!r}: expected 'default' or 'train'")
        check_pair_seed(self.pair_seed)
        self.sweep_factors = tuple(str(x) for x in self.sweep_factors)
        if self.sweep_factors and not self.factor_sweeps:
            raise ValueError("--sweep-factors names the factors of the one-factor sweep, which --no-factor-sweeps "
                             "turns off")


def swept_factors(env_id: str, names: Sequence[str] = ()) -> list[str]:
    """The factors of `env_id` a one-factor-at-a-time sweep covers, in the space's order.

    Args:
        names: factor names or kinds (``visual``, ``geometric``, ``physical``; ``geometry`` and
            ``physics`` too, as the split names spell them); empty: every factor.

    Raises:
        ValueError: a name that is neither a factor of `env_id` nor a kind (the closest named).
    """
    import difflib

    import envs
    from envs.factors import KINDS

    space = list(envs.factor_space(env_id))
    if not names:
        return [f.name for f in space]
    kinds = {k: k for k in KINDS} | {"geometry": "geometric", "physics": "physical"}
    factor_names = [f.name for f in space]
    chosen: set[str] = set()
    for name in names:
        if name in factor_names:
            chosen.add(name)
        elif name in kinds:
            chosen.update(f.name for f in space if f.kind == kinds[name])
        else:
            close = difflib.get_close_matches(name, factor_names + list(kinds), n=1)
            raise ValueError(f"--sweep-factors {name!r}: not a factor of {env_id} nor a kind; expected one of "
                             f"{factor_names} or {list(KINDS)}" + (f"; did you mean {close[0]!r}?" if close else ""))
    return [n for n in factor_names if n in chosen]


@dataclass(frozen=True)
class SuiteCondition:
    """One condition of the suite: its result name, kind and factor condition."""

    name: str
    kind: str  # "id" | "split" | "factor" | "goal_source"
    condition: EvalCondition
    split: str | None = None
    severity: int | None = None
    factor: str | None = None


def _training_dataset_path(trained_on: dict) -> str | None:
    """The checkpoint's training dataset as it recorded it; where that path does not resolve from
    here (recorded relative to another working directory), the absolute path its episode record
    kept, when that one exists."""
    path = trained_on.get("path")
    if path is None or os.path.exists(path):
        return path
    from benchmarks.leaks import checkpoint_record

    try:
        record = checkpoint_record(trained_on)
    except (OSError, ValueError):  # a missing or altered record: the recorded path's error stands
        return path
    for entry in (record or {}).get("datasets") or []:
        real = entry.get("realpath")
        if entry.get("path") == path and real and os.path.exists(real):
            return real
    return path


def id_condition_of(trained_on: dict, id_split: str | None = None) -> tuple[EvalCondition, str]:
    """The condition a checkpoint trained on, and its training label (``default`` / ``randomised``).

    Args:
        trained_on: `benchmarks.planning.checkpoint_data` of the checkpoint (its dataset's path).
        id_split: ``"default"`` or ``"train"`` to state it instead of reading the dataset.

    Raises:
        ValueError: the dataset is not readable and `id_split` is not given; the dataset
            mixes default-factor and train-split episodes.
    """
    if id_split is None:
        from data import open_dataset

        path = _training_dataset_path(trained_on)
        try:
            labels = {str(ep["split"]).split("+")[0] for ep in open_dataset(path).episodes()}
        except Exception as e:  # noqa: BLE001 - any unreadable dataset gets the same advice
            raise ValueError(
                f"cannot read the checkpoint's training dataset {path!r} to find the condition it trained on ({e}); "
                "pass --id-split default|train"
            ) from None
        if labels <= {"default"}:
            id_split = "default"
        elif labels <= {"train"}:
            id_split = "train"
        else:
            raise ValueError(f"the training dataset {path} mixes episodes of splits {sorted(labels)}: pass "
                             "--id-split default|train to say which condition is in distribution")
    if id_split == "default":
        return EvalCondition(), "default"
    return EvalCondition(split="train"), "randomised"


def suite_conditions(env_id: str, cfg: OODConfig, id_cond: EvalCondition) -> list[SuiteCondition]:
    """The conditions of the suite, in report order (see the module docstring)."""
    out = [SuiteCondition("id", "id", id_cond, split=id_cond.split)]
    if id_cond.split != "train":
        out.append(SuiteCondition("train", "split", EvalCondition(split="train"), split="train"))
    for split in cfg.splits:
        for k in cfg.severities:
            out.append(SuiteCondition(f"{split}@{k}", "split", EvalCondition(split=split, severity=k), split, k))
    if cfg.factor_sweeps:
        for name in swept_factors(env_id, cfg.sweep_factors):
            for k in cfg.severities:
                cond = EvalCondition(split=id_cond.split, severity=k, ood_factors=(name,))
                out.append(SuiteCondition(f"factor:{name}@{k}", "factor", cond, id_cond.split, k, name))
    if cfg.goal_source:
        out.append(SuiteCondition("goal_source:random", "goal_source",
                                  dataclasses.replace(id_cond, goal_source="random"), id_cond.split))
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@=-]+", "_", name)


def run_ood(
    ckpt: str | Path,
    env_id: str,
    out: str | Path,
    cfg: OODConfig | None = None,
    protocol: Any = None,
    planner_cfg: Any = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> list[dict]:
    """Run the suite for a checkpoint and write ``results.jsonl``, ``report.md`` and ``heatmap.png``.

    Args:
        ckpt: checkpoint folder; env_id: its environment (refused if it trained on another).
        out: output folder; a condition whose ``summary.json`` is there with the same
            settings is not run again.
        cfg: the suite (`OODConfig`); protocol: `PlanningProtocol` (its ``episodes`` is
            replaced by ``cfg.episodes``); planner_cfg: `PlannerConfig`.

    Returns:
        the result lines, as written to ``results.jsonl``.
    """
    from benchmarks.conditions import plan_on_condition
    from benchmarks.planning import PlannerConfig, checkpoint_data, evaluate_planning
    from benchmarks.protocol import PlanningProtocol, TooFewPairsError
    from worldmodel.checkpoint import load_checkpoint

    cfg = cfg or OODConfig()
    protocol = dataclasses.replace(protocol or PlanningProtocol(), episodes=cfg.episodes)
    planner_cfg = planner_cfg or PlannerConfig()
    out = Path(out)
    trained_on = checkpoint_data(ckpt)
    if trained_on.get("env_id") not in (None, env_id):
        raise ValueError(f"{ckpt} was trained on {trained_on['env_id']} data, not {env_id}: "
                         f"run wm ood --env {trained_on['env_id']}")
    id_cond, label = id_condition_of(trained_on, cfg.id_split)
    training = cfg.training or label
    model = load_checkpoint(ckpt, device=device).eval()
    conditions = suite_conditions(env_id, cfg, id_cond)
    settings = {"protocol": protocol.to_dict(), "planner": planner_cfg.to_dict(), "oracle": cfg.oracle,
                "ckpt": str(Path(ckpt).resolve())}
    if cfg.pair_seed != EVAL_SEED_BASE:  # left out at the default: folders written before the option stay reusable
        settings["pair_seed"] = cfg.pair_seed
    say = log or (lambda line: None)
    say(f"wm ood: {len(conditions)} conditions of {env_id}, {cfg.episodes} pairs each, training '{training}', "
        f"in-distribution = {id_cond.label()}, episodes of seeds {cfg.pair_seed:,}..")
    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []  # (condition, why): conditions whose episodes give too few pairs
    out.mkdir(parents=True, exist_ok=True)
    for i, sc in enumerate(conditions):
        folder = out / "conditions" / _slug(sc.name)
        summary_path = folder / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        if summary is None or summary.get("ood_settings") != settings:
            t0 = time.perf_counter()

            def evaluate(pairs, sc=sc, folder=folder):
                return evaluate_planning(
                    model, pairs, folder, protocol=protocol, planner_cfg=planner_cfg, device=device, video=False,
                    trained_on=trained_on, progress=progress, oracle=cfg.oracle, condition=sc.condition.to_dict(),
                )

            try:
                summary = plan_on_condition(evaluate, env_id, sc.condition, folder / "pairs.lance", cfg.episodes,
                                            model.config.image_size, progress=progress, log=say, seed=cfg.pair_seed)
            except TooFewPairsError as err:
                if sc.kind == "id":  # every other condition is measured against it
                    raise
                # e.g. random-action Cube episodes, whose cube mostly never moves: the other conditions still count
                skipped.append((sc.name, f"not evaluated: {err}"))
                say(f"[{i + 1}/{len(conditions)}] {sc.name}: skipped: {err}")
                continue
            summary["ood_settings"] = settings
            summary_path.write_text(json.dumps(summary, indent=2) + "\n")
            say(f"[{i + 1}/{len(conditions)}] {sc.name}: {summary['successes']}/{summary['episodes']} "
                f"(random {summary['baseline_successes']}/{summary['episodes']}) in {time.perf_counter() - t0:.0f} s")
        else:
            say(f"[{i + 1}/{len(conditions)}] {sc.name}: reused {summary['successes']}/{summary['episodes']}")
        rows.append(_row(sc, summary, env_id, str(ckpt), training, cfg.pair_seed))
    add_retained(rows)
    if id_cond.split == "train":  # the train split is the id condition: one line for each name
        rows.insert(1, {**rows[0], "condition": "train", "kind": "split", "split": "train"})
    _write_jsonl(out / "results.jsonl", rows)
    heatmap = write_heatmap(rows, out / "heatmap.png")
    (out / "report.md").write_text(report_markdown(rows, heatmap.name if heatmap else None, skipped))
    say(f"wm ood: results in {out / 'results.jsonl'}, report {out / 'report.md'}")
    return rows


def _row(sc: SuiteCondition, summary: dict, env_id: str, ckpt: str, training: str, pair_seed: int) -> dict:
    return {
        "env_id": env_id,
        "ckpt": ckpt,
        "training": training,
        "condition": sc.name,
        "kind": sc.kind,
        "split": sc.split,
        "severity": sc.severity,
        "factor": sc.factor,
        "episodes": summary["episodes"],
        "successes": summary["successes"],
        "success_rate": summary["success_rate"],
        "success_ci95": summary["success_ci95"],
        "baseline_success_rate": summary["baseline_success_rate"],
        "baseline_success_ci95": summary["baseline_success_ci95"],
        "oracle_success_rate": summary.get("oracle_success_rate"),
        "oracle_success_ci95": summary.get("oracle_success_ci95"),
        "retained": None,
        "retained_ci95": None,
        "seconds_per_decision": summary.get("seconds_per_decision"),
        "condition_label": (summary.get("condition") or {}).get("label"),
        "pair_seed": pair_seed,
    }


def add_retained(rows: Sequence[dict]) -> None:
    """Set each result line's ``retained`` (its success rate ÷ the first line's, the ``id`` condition's;
    None where ``id`` had no success) and ``retained_ci95`` (`ratio_interval` of the two counts; None on
    the ``id`` line itself, the ``train`` line that repeats a train-split ``id``, and where ``id`` had no
    success), in place."""
    id_row = rows[0]
    id_rate = id_row["success_rate"]
    for row in rows:
        row["retained"] = row["success_rate"] / id_rate if id_rate > 0 else None
        repeats_id = row is id_row or (row["condition"] == "train" and id_row.get("split") == "train")
        ci = None if repeats_id else ratio_interval(row["successes"], row["episodes"], id_row["successes"],
                                                    id_row["episodes"])
        row["retained_ci95"] = None if ci is None else list(ci)


#: the keys `pool_ood` needs on every result line it pools
POOL_KEYS = ("env_id", "training", "condition", "kind", "episodes", "successes", "success_rate", "baseline_success_rate")


def _read_suite(folder: Path) -> list[dict]:
    path = folder / "results.jsonl"
    if not path.is_file():
        raise ValueError(f"{folder}: no results.jsonl (expected a `wm ood --out` folder)")
    rows = []
    for n, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {n}: not valid JSON ({err.msg})") from None
        missing = [k for k in POOL_KEYS if k not in row] if isinstance(row, dict) else list(POOL_KEYS)
        if missing:
            raise ValueError(f"{path} line {n}: missing {missing} (expected a `wm ood` result line)")
        rows.append(row)
    if not rows or rows[0]["kind"] != "id":
        raise ValueError(f"{path}: its first line is not the `id` condition (expected `wm ood`'s results.jsonl)")
    return rows


def pool_ood(folders: Sequence[str | Path], out: str | Path, log: Callable[[str], None] | None = None) -> list[dict]:
    """Pool `wm ood` runs of one recipe trained with several seeds into one suite and write its
    ``results.jsonl``, ``report.md`` and ``heatmap.png`` in `out`.

    Each condition's successes, episodes and random-baseline successes are summed over the runs; its
    success interval is Wilson's on the pooled count and ``retained`` is pooled success ÷ pooled
    ``id`` success, with `ratio_interval`. Runs of one recipe evaluated on the same pairs
    (``--pair-seed``) are not independent draws of pairs: the pooled interval measures the seeds'
    mean success on those pairs. Lines keep `wm ood`'s keys, plus ``pooled_from`` (the folders),
    ``runs`` and ``run_successes`` (per run, in order); ``ckpt`` lists the checkpoints.

    Args:
        folders: two or more `wm ood --out` folders of one env and training label, each run once.
        out: output folder (created; a folder among `folders` is refused).

    Returns:
        the pooled lines, as written to ``results.jsonl``.

    Raises:
        ValueError: fewer than two folders, a folder twice (or two runs of one checkpoint), a folder
            without a `wm ood` results.jsonl, runs of different envs, training labels or pair seeds,
            or no condition common to every run; each named.
    """
    say = log or (lambda msg: None)
    folders = [Path(f) for f in folders]
    out = Path(out)
    if len(folders) < 2:
        raise ValueError(f"pooling needs two or more wm ood folders, got {len(folders)}")
    resolved = [f.resolve() for f in folders]
    for i, f in enumerate(resolved):
        if f in resolved[:i]:
            raise ValueError(f"{folders[i]} given twice: each run is pooled once")
    if out.resolve() in resolved:
        raise ValueError(f"--out {out} is one of the pooled folders; write the pool elsewhere")
    runs = [_read_suite(f) for f in folders]
    for key in ("env_id", "training", "pair_seed"):
        values = [run[0].get(key) for run in runs]
        if len(set(map(str, values))) > 1:
            raise ValueError(f"the runs differ in {key}: " + ", ".join(f"{f}: {v!r}" for f, v in zip(folders, values))
                             + "; pool runs of one env, training label and pair seed")
    ckpts = [str(run[0].get("ckpt")) for run in runs]
    for i, c in enumerate(ckpts):
        if c != "None" and c in ckpts[:i]:
            raise ValueError(f"{folders[ckpts.index(c)]} and {folders[i]} are runs of one checkpoint ({c}); "
                             f"pool runs of different training seeds")
    names = [r["condition"] for r in runs[0]]
    common = [c for c in names if all(any(r["condition"] == c for r in run) for run in runs[1:])]
    left_out = sorted({r["condition"] for run in runs for r in run} - set(common))
    if "id" not in common:
        raise ValueError("no `id` condition in every run")
    rows = []
    for name in common:
        lines = [next(r for r in run if r["condition"] == name) for run in runs]
        k = sum(int(r["successes"]) for r in lines)
        n = sum(int(r["episodes"]) for r in lines)
        b = sum(round(float(r["baseline_success_rate"]) * int(r["episodes"])) for r in lines)
        oracle = [r.get("oracle_success_rate") for r in lines]
        o = (sum(round(float(x) * int(r["episodes"])) for x, r in zip(oracle, lines))
             if all(x is not None for x in oracle) else None)
        spd = [r.get("seconds_per_decision") for r in lines]
        first = lines[0]
        rows.append({
            "env_id": first["env_id"], "ckpt": ckpts, "training": first["training"], "condition": name,
            "kind": first["kind"], "split": first.get("split"), "severity": first.get("severity"),
            "factor": first.get("factor"), "episodes": n, "successes": k, "success_rate": k / n,
            "success_ci95": list(wilson_interval(k, n)), "baseline_success_rate": b / n,
            "baseline_success_ci95": list(wilson_interval(b, n)),
            "oracle_success_rate": None if o is None else o / n,
            "oracle_success_ci95": None if o is None else list(wilson_interval(o, n)),
            "retained": None, "retained_ci95": None,
            "seconds_per_decision": (sum(spd) / len(spd)) if all(x is not None for x in spd) else None,
            "condition_label": first.get("condition_label"), "pair_seed": first.get("pair_seed"),
            "pooled_from": [str(f) for f in folders], "runs": len(lines),
            "run_successes": [int(r["successes"]) for r in lines],
        })
    add_retained(rows)
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "results.jsonl", rows)
    heatmap = write_heatmap(rows, out / "heatmap.png")
    skipped = [(c, "not in every pooled run") for c in left_out]
    (out / "report.md").write_text(report_markdown(rows, heatmap.name if heatmap else None, skipped))
    say(f"wm ood-pool: {len(runs)} runs, {len(rows)} conditions pooled; results in {out / 'results.jsonl'}"
        + (f"; not in every run: {', '.join(left_out)}" if left_out else ""))
    return rows


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def retained_grid(rows: Sequence[dict]) -> tuple[list[str], list[int], list[list[float]]]:
    """(row names, severities, retained[row][severity] with NaN where missing) of the split and factor rows."""
    names: list[str] = []
    sevs = sorted({r["severity"] for r in rows if r["severity"] is not None})
    cells: dict[tuple[str, int], float] = {}
    for r in rows:
        if r["kind"] not in ("split", "factor") or r["severity"] is None:
            continue
        name = r["split"] if r["kind"] == "split" else r["factor"]
        if name not in names:
            names.append(name)
        cells[(name, r["severity"])] = math.nan if r["retained"] is None else float(r["retained"])
    grid = [[cells.get((n, k), math.nan) for k in sevs] for n in names]
    return names, sevs, grid


def write_heatmap(rows: Sequence[dict], path: Path) -> Path | None:
    """A PNG heatmap of retained success (rows: OOD splits then factors; columns: severity); None if no cell."""
    names, sevs, grid = retained_grid(rows)
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.array(grid, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(sevs) + 3.2, 0.38 * len(names) + 1.6))
    cmap = plt.get_cmap("viridis").copy()
    cmap = cmap.with_extremes(bad="#bbbbbb")
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0.0, vmax=max(1.0, float(np.nanmax(data)) if
                                                                             np.isfinite(data).any() else 1.0),
                   aspect="auto")
    ax.set_xticks(range(len(sevs)), [f"severity {k}" for k in sevs])
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(sevs)):
            v = data[i, j]
            ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center",
                    color="white" if np.isfinite(v) and v < 0.6 else "black", fontsize=8)
    first = rows[0]
    ax.set_title(f"{first['env_id']} ({first['training']}): success retained OOD / ID", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def report_markdown(rows: Sequence[dict], heatmap: str | None = None,
                    skipped: Sequence[tuple[str, str]] = ()) -> str:
    """``report.md``: the ID-vs-OOD table of a suite's result lines (or of `pool_ood`'s pooled ones), and
    the conditions `skipped` ((name, why) pairs, e.g. their episodes gave too few start/goal pairs; no
    result line)."""
    first = rows[0]
    if first.get("pooled_from"):
        where = (f"{first['runs']} runs pooled ({', '.join(f'`{f}`' for f in first['pooled_from'])}; checkpoints "
                 f"{', '.join(f'`{c}`' for c in first['ckpt'])}); {first['episodes']} planned episodes per condition "
                 "summed over the runs (successes per run in `results.jsonl`'s `run_successes`)")
    else:
        where = f"Checkpoint `{first['ckpt']}`; {first['episodes']} start/goal pairs per condition"
    lines = [
        f"# OOD suite: {first['env_id']}, training '{first['training']}'",
        "",
        where
        + (f" (episodes of seeds {first['pair_seed']:,}..)" if first.get("pair_seed") is not None else "")
        + f"; retained = success ÷ the `id` condition's success ({_pct(first['success_rate'])}), "
        "with its 95% interval (Katz's log interval for a ratio of two proportions).",
        "",
        "| condition | success | 95% Wilson | random | oracle | retained | s per decision |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["success_ci95"]
        ret = "n/a" if r["retained"] is None else f"{r['retained']:.2f}"
        if r["retained"] is not None and r.get("retained_ci95"):
            ret += " [{:.2f}–{:.2f}]".format(*r["retained_ci95"])
        spd = "n/a" if r["seconds_per_decision"] is None else f"{r['seconds_per_decision']:.2f}"
        lines.append(f"| {r['condition']} | {r['successes']}/{r['episodes']} | {_pct(lo)}–{_pct(hi)} | "
                     f"{_pct(r['baseline_success_rate'])} | {_pct(r['oracle_success_rate'])} | {ret} | {spd} |")
    if skipped:
        lines += ["", "Not in this table (no result line):", ""]
        lines += [f"- {name}: {why}" for name, why in skipped]
    if heatmap:
        lines += ["", f"![retained success]({heatmap})"]
    return "\n".join(lines) + "\n"
