"""``wm report DIR... --out PATH``: one Markdown page with plots from result folders.

Each DIR is searched recursively (hidden folders skipped) for

- **eval folders** (``wm eval --out``): ``summary.json`` with ``env_id``, ``episodes`` and
  ``success_rate`` or ``oracle_success_rate`` (an oracle-only eval), plus the optional
  ``episodes.jsonl`` (one line per episode per policy);
- **OOD folders** (``wm ood --out``): ``results.jsonl``, one line per condition (``condition``,
  ``kind`` id | split | factor | goal_source, ``severity``, ``success_rate``, ``retained``, ...);
- **bench-planning folders** (``wm bench planning --out``): ``results.jsonl``, one line per env
  (``recipe``, ``recipe_hash``, ``protocol``, ``success_rate``, ...).

A ``results.jsonl`` is told apart by its lines: ``condition`` makes it an OOD file,
``recipe`` a bench-planning one. Eval folders below a folder holding a ``results.jsonl``
are that run's parts (its lines already hold their numbers) and are not listed again;
their ``planned_episode.mp4`` are linked. A ``wm demo`` folder's top ``summary.json``
(beside ``demo.json``) repeats its ``eval/summary.json`` and is skipped likewise.

The page (``PATH``, a ``.md`` file) has a table and a grouped bar chart of success against
the random baseline and the oracle per env (95% Wilson intervals as error bars), an OOD
retention heatmap and an ID-vs-OOD table per env (folders of one env side by side on one
colour scale), success against seconds per planning decision (log x axis), and relative
links to each folder's ``planned_episode.mp4``. Images go in ``PATH_stem + "_files/"``
beside it. Rows are sorted by env, then folder path: the same inputs give the same page.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from benchmarks.stats import ratio_interval, wilson_interval

SUMMARY_FILE, EPISODES_FILE, RESULTS_FILE, VIDEO_FILE = "summary.json", "episodes.jsonl", "results.jsonl", "planned_episode.mp4"
DEMO_MARKER = "demo.json"  # benchmarks.demo.DEMO_MARKER (not imported: the demo module pulls in torch-side code)
LOOKED_FOR = (f"{SUMMARY_FILE} (wm eval --out), {RESULTS_FILE} (wm ood --out, wm bench planning --out)")
#: the first line of every page `build_report` writes: only a file starting with it is ever replaced
REPORT_MARK = "<!-- written by wm report; the next wm report to this path replaces it -->"
OOD_KINDS = ("id", "split", "factor", "goal_source")
SPLIT_ORDER = ("train", "ood_visual", "ood_geometry", "ood_physics", "ood_all")
#: the images a report writes in its ``_files`` folder (anything else there is not ours)
IMAGE_PATTERN = r"(success|planning_time|ood_[A-Za-z0-9._-]+)\.png"


# ---------------------------------------------------------------------------------------
# What the result files hold


@dataclass(frozen=True)
class Rate:
    """A success rate with its 95% interval; `successes`/`episodes` when known."""

    rate: float
    low: float
    high: float
    successes: int | None = None
    episodes: int | None = None

    def text(self) -> str:
        """``"60% [45–73] (30/50)"``."""
        counts = f" ({self.successes}/{self.episodes})" if self.successes is not None and self.episodes is not None else ""
        return f"{_pct(self.rate)} [{100 * self.low:.0f}–{100 * self.high:.0f}]{counts}"


@dataclass
class PlanningResult:
    """One env's planning success beside random actions and the oracle (an eval folder or a bench line)."""

    source: str  # "eval" | "bench"
    folder: Path
    file: Path  # the summary.json or results.jsonl it was read from
    line: int | None  # its line in a results.jsonl
    env_id: str
    label: str  # the solver (eval) or the recipe (bench)
    protocol: str
    episodes: int
    model: Rate | None
    random: Rate | None
    oracle: Rate | None
    seconds_per_decision: float | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The file (and line) for messages and sorting."""
        return str(self.file) if self.line is None else f"{self.file} line {self.line}"


@dataclass
class OodResult:
    """The conditions of one OOD run (one env, checkpoint and training label)."""

    folder: Path
    where: str
    env_id: str
    ckpt: str
    training: str
    rows: list[dict[str, Any]]  # validated results.jsonl lines, in file order

    def retained(self, row: dict[str, Any]) -> float | None:
        """The row's ``retained``; computed from the ``id`` row where the file left the key out."""
        if "retained" in row:
            return row["retained"]
        ids = [r for r in self.rows if r["kind"] == "id"]
        base = ids[0]["success_rate"] if ids else 0.0
        return row["success_rate"] / base if base > 0 else None

    def retained_ci95(self, row: dict[str, Any]) -> tuple[float, float] | None:
        """The 95% interval of the row's ``retained``: the file's ``retained_ci95`` where it has the key,
        else `ratio_interval` of the row's and the ``id`` row's counts; None for the ``id`` row (and the
        ``train`` line that repeats it), where ``id`` had no success, or where a count is unknown."""
        if "retained_ci95" in row:
            ci = row["retained_ci95"]
            return None if ci is None else (float(ci[0]), float(ci[1]))
        ids = [r for r in self.rows if r["kind"] == "id"]
        if not ids or row is ids[0] or (row.get("split") == "train" and ids[0].get("split") == "train"):
            return None
        num, ref = row["_rate"], ids[0]["_rate"]
        if num.successes is None or ref.successes is None:
            return None
        return ratio_interval(num.successes, num.episodes, ref.successes, ref.episodes)


@dataclass
class Results:
    """Everything `find_results` found under the DIRs."""

    planning: list[PlanningResult] = field(default_factory=list)
    ood: list[OodResult] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    folders: list[tuple[Path, str]] = field(default_factory=list)  # (folder, "eval" | "ood" | "bench planning")
    skipped: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Reading and checking


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e})") from None


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON-lines file.

    Raises:
        ValueError: a line that is not JSON or not a JSON object, naming the file and line.
    """
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e})") from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path} line {n}: not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path} line {n}: expected a JSON object, got {type(obj).__name__}")
        out.append((n, obj))
    return out


def _number(obj: dict, key: str, where: str, *, optional: bool = False, unit: bool = False) -> float | None:
    """``obj[key]`` as a finite float (in [0, 1] when `unit`); None only when `optional` and missing/null."""
    value = obj.get(key)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where}: missing {key!r}" + ("" if key not in obj else " (null)"))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {key}={value!r}; expected a finite number")
    if unit and not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: {key}={value!r}; expected a rate in [0, 1]")
    if not unit and value < 0:
        raise ValueError(f"{where}: {key}={value!r}; expected a number >= 0")
    return float(value)


def _count(obj: dict, key: str, where: str, *, optional: bool = False) -> int | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: {key}={value!r}; expected an integer >= 0")
    return value


def _rate(obj: dict, prefix: str, where: str, episodes: int, *, optional: bool = False) -> Rate | None:
    """The ``{prefix}success_rate`` of `obj` with its ``{prefix}success_ci95`` (or a Wilson
    interval from ``{prefix}successes`` when the file has none); None if optional and absent.
    ``{prefix}episodes``, when the line has it, overrides `episodes` (a pooled multi-seed line's
    oracle ran once on the shared pairs)."""
    rate = _number(obj, f"{prefix}success_rate", where, optional=optional, unit=True)
    if rate is None:
        return None
    if prefix and obj.get(f"{prefix}episodes") is not None:
        episodes = _count(obj, f"{prefix}episodes", where)
    successes = _count(obj, f"{prefix}successes", where, optional=True)
    if successes is None and abs(rate * episodes - round(rate * episodes)) < 1e-6:
        successes = round(rate * episodes)  # the rate of a whole number of episodes: show the count
    ci = obj.get(f"{prefix}success_ci95")
    if ci is None:
        low, high = wilson_interval(successes if successes is not None else round(rate * episodes), episodes)
    else:
        if (not isinstance(ci, (list, tuple)) or len(ci) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in ci)
                or ci[0] > ci[1]):
            raise ValueError(f"{where}: {prefix}success_ci95={ci!r}; expected [low, high] with 0 <= low <= high <= 1")
        low, high = float(ci[0]), float(ci[1])
    return Rate(rate, low, high, successes, episodes)


def _short_env(env_id: str) -> str:
    """``"wm/TwoRoom-v0"`` -> ``"TwoRoom"``."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "env"


def _eval_result(folder: Path) -> PlanningResult | None:
    """The eval folder's result, or None when its summary.json is not a ``wm eval`` summary."""
    path = folder / SUMMARY_FILE
    summary = _load_json(path)
    where = str(path)
    if not isinstance(summary, dict) or "env_id" not in summary or not (
            "success_rate" in summary or "oracle_success_rate" in summary):
        return None
    if not isinstance(summary["env_id"], str):
        raise ValueError(f"{where}: env_id={summary['env_id']!r}; expected an env id string")
    episodes = _count(summary, "episodes", where)
    solver = summary.get("solver") if isinstance(summary.get("solver"), dict) else {}
    planner = summary.get("planner") if isinstance(summary.get("planner"), dict) else {}
    label = str(solver.get("name") or planner.get("planner") or "?")
    model = _rate(summary, "", where, episodes, optional=True)
    oracle = _rate(summary, "oracle_", where, episodes, optional=True)
    if model is None:
        label = f"{label} (oracle only)"
    spd = _number(summary, "seconds_per_decision", where, optional=True)
    protocol = summary.get("protocol") if isinstance(summary.get("protocol"), dict) else {}
    proto = ", ".join(f"{k} {protocol[k]}" for k in ("offset", "budget") if k in protocol) or "?"
    details: dict[str, Any] = {"oracle_seconds_per_decision": _number(summary, "oracle_seconds_per_decision", where, optional=True)}
    episodes_path = folder / EPISODES_FILE
    if episodes_path.is_file():
        distances: dict[str, list[float]] = {}
        for n, line in read_jsonl(episodes_path):
            policy = line.get("policy")
            if not isinstance(policy, str):
                raise ValueError(f"{episodes_path} line {n}: policy={policy!r}; expected a policy name")
            d = _number(line, "final_distance", f"{episodes_path} line {n}", optional=True)
            if d is not None:  # the model's lines are named for its solver
                distances.setdefault(policy if policy in ("random", "oracle") else "model", []).append(d)
        details["median_final_distance"] = {p: _median(v) for p, v in sorted(distances.items())}
    return PlanningResult("eval", folder, path, None, summary["env_id"], label, proto, episodes, model,
                          _rate(summary, "baseline_", where, episodes, optional=True), oracle, spd, details)


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


OOD_REQUIRED = ("env_id", "condition", "kind", "episodes", "success_rate", "success_ci95")
BENCH_REQUIRED = ("env_id", "recipe", "protocol", "episodes", "success_rate", "baseline_success_rate")


def _results_file(folder: Path) -> tuple[str, list]:
    """``("ood", [OodResult])`` or ``("bench planning", [PlanningResult])`` from a results.jsonl."""
    path = folder / RESULTS_FILE
    lines = read_jsonl(path)
    if not lines:
        raise ValueError(f"{path}: no result lines (expected one JSON object per line from wm ood or wm bench planning)")
    first = lines[0][1]
    if "condition" in first:
        kind, required = "ood", OOD_REQUIRED
    elif "recipe" in first:
        kind, required = "bench planning", BENCH_REQUIRED
    else:
        raise ValueError(f"{path} line {lines[0][0]}: neither a wm ood line (no 'condition' key) nor a wm bench planning "
                         f"line (no 'recipe' key); keys: {sorted(first)}")
    for n, line in lines:
        missing = [k for k in required if k not in line]
        if missing:
            raise ValueError(f"{path} line {n}: missing {missing} (a {kind} results line has {list(required)})")
        if not isinstance(line["env_id"], str):
            raise ValueError(f"{path} line {n}: env_id={line['env_id']!r}; expected an env id string")
    if kind == "bench planning":
        out = []
        for n, line in lines:
            where = f"{path} line {n}"
            episodes = _count(line, "episodes", where)
            recipe_hash = line.get("recipe_hash")
            out.append(PlanningResult(
                "bench", folder, path, n, line["env_id"], str(line["recipe"]), str(line["protocol"]), episodes,
                _rate(line, "", where, episodes), _rate(line, "baseline_", where, episodes),
                _rate(line, "oracle_", where, episodes, optional=True),
                _number(line, "seconds_per_decision", where, optional=True),
                {"recipe_hash": None if recipe_hash is None else str(recipe_hash),
                 "train_seconds": _number(line, "train_seconds", where, optional=True)},
            ))
        return kind, out
    groups: dict[tuple[str, str, str], list[dict]] = {}
    seen: dict[tuple[str, str, str, str], int] = {}
    for n, line in lines:
        where = f"{path} line {n}"
        if line["kind"] not in OOD_KINDS:
            raise ValueError(f"{where}: kind={line['kind']!r}; expected one of {list(OOD_KINDS)}")
        severity = line.get("severity")
        if severity is not None and (isinstance(severity, bool) or not isinstance(severity, int) or severity < 1):
            raise ValueError(f"{where}: severity={severity!r}; expected an integer >= 1 or null")
        row = dict(line)
        row["episodes"] = _count(line, "episodes", where)
        row["_rate"] = _rate(line, "", where, row["episodes"])
        row["_baseline"] = _rate(line, "baseline_", where, row["episodes"], optional=True)
        row["_oracle"] = _rate(line, "oracle_", where, row["episodes"], optional=True)
        if "retained" in line:
            row["retained"] = _number(line, "retained", where, optional=True)
        ci = line.get("retained_ci95")
        if ci is not None and (not isinstance(ci, (list, tuple)) or len(ci) != 2
                               or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                          and math.isfinite(v) and v >= 0 for v in ci) or ci[0] > ci[1]):
            raise ValueError(f"{where}: retained_ci95={ci!r}; expected [low, high] with 0 <= low <= high, or null")
        row["_line"] = n
        ckpt = line.get("ckpt")
        ckpt = ", ".join(map(str, ckpt)) if isinstance(ckpt, list) else str(ckpt or "")  # a list: wm ood-pool's
        key = (line["env_id"], ckpt, str(line.get("training") or "default"))
        condition = str(line["condition"])
        if (*key, condition) in seen:
            raise ValueError(f"{where}: condition {condition!r} again (first on line {seen[(*key, condition)]})")
        seen[(*key, condition)] = n
        groups.setdefault(key, []).append(row)
    return kind, [OodResult(folder, str(path), env, ckpt, training, rows) for (env, ckpt, training), rows in groups.items()]


def _walk(root: Path) -> Iterable[tuple[Path, set[str]]]:
    """(folder, file names) under `root`, sorted, hidden folders skipped, symbolic links not followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield Path(dirpath), set(filenames)


def find_results(dirs: Sequence[str | os.PathLike]) -> Results:
    """Every eval, OOD and bench-planning result under `dirs` (searched recursively).

    Raises:
        FileNotFoundError: a DIR that does not exist.
        ValueError: a DIR that is not a folder or holds no result file (naming the files
            looked for); a malformed file (naming it, and the line for JSON lines).
    """
    if not dirs:
        raise ValueError("wm report needs at least one result folder")
    found = Results()
    done: set[Path] = set()  # folders already searched (a DIR inside another DIR, given twice, ...)
    result_folders: set[Path] = set()
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such folder (expected a result folder holding {LOOKED_FOR})")
        if not root.is_dir():
            raise ValueError(f"{root}: is a file; expected a result folder holding {LOOKED_FOR}")
        hits, skipped_before = 0, len(found.skipped)
        owners: list[Path] = []  # folders with a results.jsonl: the eval folders below them are their parts
        for folder, files in _walk(root):
            key = folder.resolve()
            if key in done:
                hits += key in result_folders
                continue
            done.add(key)
            inside = any(key != o and key.is_relative_to(o) for o in owners)
            if VIDEO_FILE in files:
                found.videos.append(folder / VIDEO_FILE)
            if RESULTS_FILE in files:
                kind, items = _results_file(folder)
                owners.append(key)
                found.folders.append((folder, kind))
                (found.ood if kind == "ood" else found.planning).extend(items)
            elif SUMMARY_FILE in files and not inside:
                if DEMO_MARKER in files:
                    found.skipped.append(f"{folder / SUMMARY_FILE}: a wm demo summary (its eval/{SUMMARY_FILE} is used)")
                    continue
                result = _eval_result(folder)
                if result is None:
                    found.skipped.append(f"{folder / SUMMARY_FILE}: not a wm eval summary (no env_id and success_rate)")
                    continue
                found.folders.append((folder, "eval"))
                found.planning.append(result)
            else:
                continue
            result_folders.add(key)
            hits += 1
        if not hits:
            also = "; ".join(found.skipped[skipped_before:])
            raise ValueError(f"{root}: no result files found (looked for {LOOKED_FOR}, in every folder below it)"
                             + (f"; skipped: {also}" if also else ""))
    found.planning.sort(key=lambda r: (r.env_id, str(r.folder), r.line or 0))
    found.ood.sort(key=lambda r: (r.env_id, str(r.folder), r.training, r.ckpt))
    found.videos.sort(key=str)
    found.folders.sort(key=lambda f: str(f[0]))
    return found


# ---------------------------------------------------------------------------------------
# Plots (matplotlib, Agg; made from the files, never during a run)


def _figure(width: float, height: float):
    """A matplotlib Figure drawn by the Agg canvas; no pyplot, so no global state is touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version string: the same inputs, the same bytes


def _bar_label(r: PlanningResult) -> str:
    return f"{_short_env(r.env_id)}\n{r.label}" + (f"\n{r.protocol}" if r.source == "bench" else "")


def plot_success(results: list[PlanningResult], path: Path) -> Path:
    """Grouped bars: success of the model, random actions and the oracle per result, with
    95% interval error bars; a missing bar (no model, no oracle) is left out."""
    import numpy as np

    n = len(results)
    fig = _figure(max(6.0, 1.3 * n + 2.0), 4.2)
    ax = fig.subplots()
    x = np.arange(n)
    width = 0.26
    for k, (name, colour, get) in enumerate((
            ("model", "#1f77b4", lambda r: r.model), ("random", "#999999", lambda r: r.random),
            ("oracle", "#2ca02c", lambda r: r.oracle))):
        xs, ys, err = [], [], [[], []]
        for i, r in enumerate(results):
            rate = get(r)
            if rate is None:
                continue
            xs.append(x[i] + (k - 1) * width)
            ys.append(rate.rate)
            err[0].append(max(0.0, rate.rate - rate.low))
            err[1].append(max(0.0, rate.high - rate.rate))
        if xs:
            ax.bar(xs, ys, width, yerr=err, capsize=3, color=colour, label=name, error_kw={"elinewidth": 1})
            for xi, yi, up in zip(xs, ys, err[1]):  # the rate in percent, above its interval
                ax.text(xi, yi + up + 0.01, f"{100 * yi:.0f}", ha="center", va="bottom", fontsize=7, color="#333333")
    ax.set_xticks(x, [_bar_label(r) for r in results], fontsize=8)
    ax.set_ylim(0, 1.2)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("success rate (95% Wilson interval)")
    ax.set_title("Planning success: model vs random vs oracle")
    ax.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return path


def timed_points(results: list[PlanningResult]) -> list[tuple[PlanningResult, str, Rate, float]]:
    """``(result, "model" | "oracle", rate, seconds per decision)`` for every success with a planning time."""
    points = []
    for r in results:
        if r.model is not None and r.seconds_per_decision:
            points.append((r, "model", r.model, r.seconds_per_decision))
        oracle_seconds = r.details.get("oracle_seconds_per_decision")
        if r.oracle is not None and oracle_seconds:
            points.append((r, "oracle", r.oracle, oracle_seconds))
    return points


def plot_planning_time(results: list[PlanningResult], path: Path) -> Path:
    """Success against seconds per planning decision (log x), one colour per env, filled dots
    for models and hollow squares for the oracle, each labelled with its solver or recipe (and
    protocol), 95% intervals as vertical bars."""
    from matplotlib import colormaps

    points = timed_points(results)
    envs = sorted({r.env_id for r, *_ in points})
    colours = colormaps["tab10"]
    fig = _figure(7.5, 4.4)
    ax = fig.subplots()
    for k, (r, who, rate, seconds) in enumerate(points):
        c = colours(envs.index(r.env_id) % 10)
        style = {"fmt": "o", "color": c} if who == "model" else {"fmt": "s", "color": c, "mfc": "white"}
        ax.errorbar([seconds], [rate.rate], yerr=[[rate.rate - rate.low], [rate.high - rate.rate]], capsize=3,
                    label=_short_env(r.env_id) if who == "model" else f"{_short_env(r.env_id)} oracle", **style)
        label = f"{_short_env(r.env_id)} {r.label}" + (f" {r.protocol}" if r.source == "bench" else "")
        ax.annotate(label + (" oracle" if who == "oracle" and "oracle" not in label else ""), (seconds, rate.rate),
                    textcoords="offset points", xytext=(5, 4 if k % 2 == 0 else -10), fontsize=7)  # staggered
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.margins(x=0.25)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("seconds per planning decision (log scale)")
    ax.set_ylabel("success rate")
    ax.set_title("Success against planning time")
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)
    return path


def _heatmap_rows(runs: list[OodResult]) -> tuple[list[tuple[str, str]], list[int]]:
    """Heatmap rows ``(kind, name)`` (splits in `SPLIT_ORDER`, then factors by name) and severity columns."""
    rows: set[tuple[str, str]] = set()
    severities: set[int] = set()
    for run in runs:
        for row in run.rows:
            if row["kind"] in ("split", "factor") and row.get("severity") is not None:
                rows.add((row["kind"], _row_name(row)))
                severities.add(row["severity"])
    order = sorted(rows, key=lambda kn: (kn[0] != "split", _split_rank(kn[1]) if kn[0] == "split" else 0, kn[1]))
    return order, sorted(severities | {1, 2, 3})


def _row_name(row: dict) -> str:
    """The split or factor a row varies: its ``split`` / ``factor`` key, else its condition before ``@``."""
    name = row.get("split") if row["kind"] == "split" else row.get("factor")
    if not name:
        name = str(row["condition"]).split("@")[0]
        name = name.split(":", 1)[1] if ":" in name else name
    return str(name)


def _split_rank(name: str) -> int:
    return SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER)


def _panel_title(run: OodResult, runs: list[OodResult]) -> str:
    title = f"training: {run.training}"
    if sum(r.training == run.training for r in runs) > 1:
        pooled = run.rows[0].get("runs") if run.rows[0].get("pooled_from") else None
        title += f"\n{run.folder.name}" + (f" ({pooled} runs pooled)" if pooled
                                           else f" ({Path(run.ckpt).name})" if run.ckpt else "")
    return title


def plot_ood(runs: list[OodResult], path: Path) -> Path | None:
    """One env's retained-success heatmaps (rows: OOD splits and factors, columns: severity),
    one panel per OOD run side by side on one colour scale, the value written in each cell,
    cells without a value grey. None when no run has a split or factor condition with a severity."""
    import numpy as np

    rows, severities = _heatmap_rows(runs)
    if not rows:
        return None
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    grids = []
    for run in runs:
        grid = np.full((len(rows), len(severities)), np.nan)
        for row in run.rows:
            if row["kind"] in ("split", "factor") and row.get("severity") is not None:
                value = run.retained(row)
                grid[rows.index((row["kind"], _row_name(row))), severities.index(row["severity"])] = (
                    np.nan if value is None else value)
        grids.append(grid)
    finite = [g[np.isfinite(g)] for g in grids]
    top = max([1.0] + [float(f.max()) for f in finite if f.size])
    norm = Normalize(vmin=0.0, vmax=top)
    cmap = colormaps["viridis"].with_extremes(bad="#d0d0d0")
    fig = _figure(1.0 * len(severities) * len(runs) + 2.6 * len(runs) + 1.0, 0.42 * len(rows) + 1.8)
    axes = fig.subplots(1, len(runs), squeeze=False)
    image = None
    for k, (run, grid, ax) in enumerate(zip(runs, grids, axes[0])):
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(len(severities)), [str(s) for s in severities])
        ax.set_xlabel("severity")
        ax.set_yticks(range(len(rows)), [n if kind == "split" else f"factor: {n}" for kind, n in rows] if k == 0 else [])
        ax.set_title(_panel_title(run, runs), fontsize=9)
        for i in range(len(rows)):
            for j in range(len(severities)):
                v = grid[i, j]
                if np.isfinite(v):
                    r, g, b, _ = cmap(norm(v))
                    ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color=ink)
                else:
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="#555555")
    fig.suptitle(f"{runs[0].env_id}: retained success (OOD ÷ ID)", fontsize=10)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.04, pad=0.02, label="retained (OOD ÷ ID)")
    _save(fig, path)
    return path


# ---------------------------------------------------------------------------------------
# The page


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _rate_text(rate: Rate | None) -> str:
    return "—" if rate is None else rate.text()


def _seconds(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3g}"


def _distances(r: PlanningResult) -> str:
    """``"0.2 / 0.31 / 0.02"``: the median final goal distance per policy (from episodes.jsonl)."""
    med = r.details.get("median_final_distance")
    if not med:
        return "—"
    return " / ".join("—" if med.get(k) is None else f"{med[k]:.3g}" for k in ("model", "random", "oracle"))


def _link(target: Path, base: Path, text: str | None = None) -> str:
    rel = Path(os.path.relpath(target.resolve(), base.resolve())).as_posix()
    return f"[{text or rel}](<{rel}>)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _condition_key(row: dict) -> tuple:
    kind_rank = {"id": 0, "split": 1, "factor": 2, "goal_source": 3}[row["kind"]]
    name = _row_name(row) if row["kind"] in ("split", "factor") else str(row["condition"])
    if row["kind"] == "split" and name == "train":
        kind_rank = 0.5  # the train split right after ID
    return (kind_rank, _split_rank(name) if row["kind"] == "split" else 0, name, row.get("severity") or 0, str(row["condition"]))


def _ood_table(runs: list[OodResult]) -> list[str]:
    conditions: dict[str, dict] = {}
    for run in runs:
        for row in run.rows:
            conditions.setdefault(str(row["condition"]), row)
    order = sorted(conditions, key=lambda c: _condition_key(conditions[c]))
    head = ["condition", "kind"]
    for run in runs:
        name = _panel_title(run, runs).replace("training: ", "").replace("\n", " ")
        head += [f"{name}: success", f"{name}: random", f"{name}: retained"]
    lines = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    for c in order:
        cells = [c, conditions[c]["kind"]]
        for run in runs:
            row = next((r for r in run.rows if str(r["condition"]) == c), None)
            if row is None:
                cells += ["—", "—", "—"]
                continue
            retained, ci = run.retained(row), run.retained_ci95(row)
            cells += [row["_rate"].text(), _pct(row["_baseline"].rate if row["_baseline"] else None),
                      "—" if retained is None else f"{retained:.2f}" + ("" if ci is None else " [{:.2f}–{:.2f}]".format(*ci))]
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return lines


def render_markdown(results: Results, out: Path, images: dict[str, Path]) -> str:
    """The page's Markdown text for `results`, linking `images` (``success``, ``planning_time``,
    ``ood:<env_id>``) and videos relative to `out`'s folder."""
    base = out.parent
    lines = [REPORT_MARK, "", "# Results report", ""]
    lines.append(f"Built by `wm report` from {len(results.folders)} result folder(s); success rates with 95% Wilson "
                 "intervals and (successes/episodes).")
    lines.append("")
    for folder, kind in results.folders:
        lines.append(f"- {kind}: {_link(folder, base)}")
    lines.append("")
    lines += ["## Planning success", ""]
    if results.planning:
        if "success" in images:
            lines += [f"![planning success: model vs random vs oracle]({_rel(images['success'], base)})", ""]
        head = ["env", "source", "solver / recipe", "protocol", "episodes", "success", "random", "oracle", "s / decision",
                "final distance, median (model / random / oracle)", "from"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in results.planning:
            label = r.label + (f" `{r.details['recipe_hash'][:12]}`" if r.details.get("recipe_hash") else "")
            lines.append("| " + " | ".join(_cell(x) for x in (
                r.env_id, r.source, label, r.protocol, str(r.episodes), _rate_text(r.model), _rate_text(r.random),
                _rate_text(r.oracle), _seconds(r.seconds_per_decision), _distances(r), _link(r.file, base),
            )) + " |")
        lines.append("")
    else:
        lines += ["No eval or bench-planning results.", ""]
    lines += ["## Robustness out of distribution", ""]
    if results.ood:
        lines += ["Retained success is the condition's success ÷ the in-distribution (`id`) success; "
                  "grey cells (n/a) have no value (not run, or ID success 0).", ""]
        for env_id in sorted({r.env_id for r in results.ood}):
            runs = [r for r in results.ood if r.env_id == env_id]
            lines += [f"### {env_id}", ""]
            if f"ood:{env_id}" in images:
                lines += [f"![{env_id}: retained success by split/factor and severity]({_rel(images[f'ood:{env_id}'], base)})", ""]
            for run in runs:
                lines.append(f"- training `{run.training}`: {_link(Path(run.where), base)}" + (f", checkpoint `{run.ckpt}`" if run.ckpt else ""))
            lines.append("")
            lines += _ood_table(runs)
            lines.append("")
    else:
        lines += ["No OOD results.", ""]
    lines += ["## Success against planning time", ""]
    if "planning_time" in images:
        lines += [f"![success against seconds per planning decision]({_rel(images['planning_time'], base)})", ""]
    else:
        lines += ["No result records its seconds per planning decision.", ""]
    lines += ["## Episode videos", ""]
    if results.videos:
        lines += ["H.264 MP4 (left: the agent, right: the goal image).", ""]
        lines += [f"- {_link(v, base)}" for v in results.videos]
    else:
        lines.append(f"No `{VIDEO_FILE}` in these folders.")
    lines.append("")
    if results.skipped:
        lines += ["## Skipped", ""] + [f"- {s}" for s in results.skipped] + [""]
    return "\n".join(lines)


def _rel(path: Path, base: Path) -> str:
    return "<" + Path(os.path.relpath(path.resolve(), base.resolve())).as_posix() + ">"


def check_report_out(out: str | os.PathLike) -> tuple[Path, Path]:
    """``(page, images folder)`` for ``--out`` `out` if a report may be written there, else a
    ValueError naming it: a ``.md`` path, nothing above it a file, an existing page one written by
    `build_report`, an existing images folder holding only report images."""
    from data.owned import describe_foreign, file_in_the_way, foreign_entries

    page = Path(out)
    if page.suffix.lower() != ".md":
        raise ValueError(f"--out {page}: a report is a Markdown file (.md), got suffix {page.suffix or 'none'!r}")
    files = page.with_name(page.stem + "_files")
    blocker = file_in_the_way(page)
    if blocker is not None:
        raise ValueError(f"--out {page}: cannot be created, {blocker} is a file, not a folder")
    if page.is_symlink() or page.exists():
        if not page.is_file() or page.is_symlink():
            raise ValueError(f"--out {page}: exists and is not a plain file")
        with open(page, "rb") as f:
            head = f.read(len(REPORT_MARK.encode()))
        if head != REPORT_MARK.encode():
            raise ValueError(f"--out {page}: exists and was not written by wm report; refusing to replace it "
                             "(choose another --out, or move it away yourself)")
    if files.is_symlink() or files.exists():
        if files.is_symlink() or not files.is_dir():
            raise ValueError(f"--out {page}: {files} (its images folder) exists and is not a folder")
        foreign = foreign_entries(files, pattern=IMAGE_PATTERN)
        if foreign:
            raise ValueError(f"--out {page}: its images folder {files} holds files wm report did not write "
                             f"({describe_foreign(foreign)}); refusing to write there")
    return page, files


def build_report(dirs: Sequence[str | os.PathLike], out: str | os.PathLike,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Find the results under `dirs` (`find_results`) and write the page `out` (``.md``) with
    its images in ``<stem>_files/`` beside it (`check_report_out` first: nothing is written on
    bad input).

    Returns:
        ``{"report": path, "images": [paths], "planning": n, "ood": n, "videos": n, "skipped": [...]}``.
    """
    page, files = check_report_out(out)
    results = find_results(dirs)
    files.mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    if results.planning:
        images["success"] = plot_success(results.planning, files / "success.png")
    if timed_points(results.planning):
        images["planning_time"] = plot_planning_time(results.planning, files / "planning_time.png")
    for env_id in sorted({r.env_id for r in results.ood}):
        made = plot_ood([r for r in results.ood if r.env_id == env_id], files / f"ood_{_slug(env_id)}.png")
        if made is not None:
            images[f"ood:{env_id}"] = made
    for stale in sorted(set(files.iterdir()) - set(images.values())):  # images of an earlier report to this path
        stale.unlink()
    text = render_markdown(results, page, images)
    tmp = page.with_name(f".{page.name}.writing-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, page)
    if log:
        log(f"{len(results.planning)} planning results, {len(results.ood)} OOD runs, {len(results.videos)} videos -> {page}")
    return {"report": str(page), "images": [str(p) for p in images.values()], "planning": len(results.planning),
            "ood": len(results.ood), "videos": len(results.videos), "skipped": results.skipped}
