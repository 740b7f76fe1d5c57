"""`wm report`: one Markdown page with plots from eval, OOD and bench-planning result folders."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from benchmarks.report import REPORT_MARK, build_report, find_results
from benchmarks.stats import ratio_interval, wilson_interval
from worldmodel.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "report"  # eval folders written by the real `wm eval` (README.md there)


def ood_lines(env_id: str, training: str, id_successes: int, drop: float, episodes: int = 20) -> list[dict]:
    """`wm ood` results.jsonl lines (its contract) for one checkpoint: ID, train, each OOD split
    at severities 1..3, two factors at severities 1..3, a goal-source shift. OOD success is
    ``id_successes * (1 - drop * severity)``; ``ood_all@3`` is left out (a cell never run)."""
    def line(condition: str, kind: str, successes: int, split=None, severity=None, factor=None) -> dict:
        rate = successes / episodes
        id_rate = id_successes / episodes
        return {
            "env_id": env_id, "ckpt": f"runs/{training}/ckpt", "training": training, "condition": condition, "kind": kind,
            "split": split, "severity": severity, "factor": factor, "episodes": episodes, "successes": successes,
            "success_rate": rate, "success_ci95": list(wilson_interval(successes, episodes)),
            "baseline_success_rate": 0.05, "oracle_success_rate": 0.95,
            "retained": rate / id_rate if id_rate > 0 else None, "seconds_per_decision": 0.02,
        }

    out = [line("id", "id", id_successes), line("train", "split", max(0, id_successes - 1), split="train")]
    for split in ("ood_visual", "ood_geometry", "ood_physics", "ood_all"):
        for sev in (1, 2, 3):
            if (split, sev) != ("ood_all", 3):
                out.append(line(f"{split}@{sev}", "split", round(id_successes * (1 - drop * sev)), split=split, severity=sev))
    for factor in ("agent_size", "background_color"):
        for sev in (1, 2, 3):
            out.append(line(f"factor:{factor}@{sev}", "factor", round(id_successes * (1 - drop * sev / 2)), severity=sev,
                            factor=factor))
    out.append(line("goal_source:random", "goal_source", id_successes // 4))
    return out


def bench_lines() -> list[dict]:
    """`wm bench planning` results.jsonl lines (its contract): TwoRoom on both protocols, PushT."""
    def line(env_id: str, recipe: str, protocol: str, k: int, k_random: int, k_oracle: int | None, spd: float) -> dict:
        n = 50
        return {
            "env_id": env_id, "recipe": recipe, "recipe_hash": f"{recipe}-0123456789abcdef", "protocol": protocol,
            "success_rate": k / n, "success_ci95": list(wilson_interval(k, n)),
            "baseline_success_rate": k_random / n, "baseline_success_ci95": list(wilson_interval(k_random, n)),
            "oracle_success_rate": None if k_oracle is None else k_oracle / n,
            "oracle_success_ci95": None if k_oracle is None else list(wilson_interval(k_oracle, n)),
            "seconds_per_decision": spd, "train_seconds": 1800.0, "episodes": n,
        }

    return [line("wm/TwoRoom-v0", "tworoom-v1", "standard", 48, 2, 50, 0.05),
            line("wm/TwoRoom-v0", "tworoom-v1", "long", 41, 0, 47, 0.07),
            line("wm/PushT-v0", "pusht-v1", "standard", 31, 3, None, 0.4)]


def write_jsonl(path: Path, lines: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    """A folder of results of all three kinds: two real eval folders (model + oracle, oracle
    only), a hand-written PushT eval, two OOD runs of TwoRoom (default and randomised
    training) and a bench-planning run whose own eval folder sits below it."""
    root = tmp_path / "results"
    shutil.copytree(FIXTURES / "eval_tworoom_cem", root / "eval_tworoom_cem")
    shutil.copytree(FIXTURES / "oracle_tworoom", root / "oracle_tworoom")
    pusht = root / "eval_pusht_icem"
    pusht.mkdir()
    (pusht / "summary.json").write_text(json.dumps({
        "env_id": "wm/PushT-v0", "episodes": 40, "success_rate": 0.625, "success_ci95": list(wilson_interval(25, 40)),
        "successes": 25, "baseline_success_rate": 0.05, "baseline_success_ci95": list(wilson_interval(2, 40)),
        "baseline_successes": 2, "seconds_per_decision": 0.8, "protocol": {"offset": 25, "budget": 50, "episodes": 40},
        "planner": {"planner": "icem", "num_samples": 300}, "solver": {"name": "icem", "settings": {"num_samples": 300}},
    }))
    write_jsonl(root / "ood_default" / "results.jsonl", ood_lines("wm/TwoRoom-v0", "default", 18, 0.25))
    write_jsonl(root / "ood_randomised" / "results.jsonl", ood_lines("wm/TwoRoom-v0", "randomised", 16, 0.05))
    write_jsonl(root / "bench" / "results.jsonl", bench_lines())
    shutil.copytree(FIXTURES / "eval_tworoom_cem", root / "bench" / "tworoom" / "eval")  # a part of the bench run
    return root


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature and every chunk's CRC up to IEND."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in chunk {kind!r}"
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    return struct.unpack(">II", data[16:24])


def test_report_from_all_three_kinds(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "site" / "report.md"
    summary = build_report([results], out)
    text = out.read_text()
    files = tmp_path / "site" / "report_files"
    assert sorted(p.name for p in files.iterdir()) == ["ood_wm_TwoRoom-v0.png", "planning_time.png", "success.png"]
    for png in files.iterdir():
        w, h = png_size(png)
        assert w >= 300 and h >= 150
    assert summary["planning"] == 6 and summary["ood"] == 2  # 3 evals + 3 bench lines; the bench's own eval is its part
    assert text.startswith(REPORT_MARK)
    for image in ("report_files/success.png", "report_files/planning_time.png", "report_files/ood_wm_TwoRoom-v0.png"):
        assert f"](<{image}>)" in text
    rows = [line for line in text.splitlines() if line.startswith("| wm/")]
    # sorted by env, then folder: PushT (bench, then eval), then TwoRoom (bench x2, eval, oracle-only)
    assert [r.split(" | ")[0:3] for r in rows[:6]] == [
        ["| wm/PushT-v0", "bench", "pusht-v1 `pusht-v1-012`"],
        ["| wm/PushT-v0", "eval", "icem"],
        ["| wm/TwoRoom-v0", "bench", "tworoom-v1 `tworoom-v1-0`"],
        ["| wm/TwoRoom-v0", "bench", "tworoom-v1 `tworoom-v1-0`"],
        ["| wm/TwoRoom-v0", "eval", "cem"],
        ["| wm/TwoRoom-v0", "eval", "cem (oracle only)"],
    ]
    assert "| 62% [47–76] (25/40) | 5% [1–17] (2/40) | — | 0.8 | — |" in rows[1]  # PushT eval: no oracle, no episodes.jsonl
    assert "| standard | 50 | 96% [87–99] (48/50) | 4% [1–13] (2/50) | 100% [93–100] (50/50) | 0.05 |" in rows[2]
    assert "| long | 50 | 82% [69–90] (41/50) | 0% [0–7] (0/50) | 94% [84–98] (47/50) | 0.07 |" in rows[3]
    real = json.loads((FIXTURES / "eval_tworoom_cem" / "summary.json").read_text())
    assert (f"| 0% [0–56] (0/3) | 0% [0–56] (0/3) | 100% [44–100] (3/3) | {real['seconds_per_decision']:.3g} "
            "| 0.259 / 0.225 / 0.0535 |") in rows[4]  # medians of episodes.jsonl's final distances
    assert "| — | 0% [0–56] (0/3) | 100% [44–100] (3/3) | — | — / 0.225 / 0.0535 |" in rows[5]  # oracle only
    # OOD: both trainings side by side, ID first, then train, splits, factors, goal source
    ood = text[text.index("### wm/TwoRoom-v0"):text.index("## Success against planning time")]
    assert "| default: success | default: random | default: retained | randomised: success |" in ood
    cond = [line.split(" | ")[0][2:] for line in ood.splitlines() if line.startswith("| ") and " | " in line][1:]
    assert cond[:4] == ["id", "train", "ood_visual@1", "ood_visual@2"]
    assert cond[-1] == "goal_source:random" and "factor:agent_size@1" in cond
    id_row = next(line for line in ood.splitlines() if line.startswith("| id |"))
    assert "90% [70–97] (18/20)" in id_row and "80% [58–92] (16/20)" in id_row
    visual2 = next(line for line in ood.splitlines() if line.startswith("| ood_visual@2 |"))
    # retained with its 95% interval (Katz's log interval of 9/20 over 18/20, 14/20 over 16/20); none for the ID rows
    assert "45% [26–66] (9/20) | 5% | 0.50 [0.30–0.83] |" in visual2  # 0.7 / 0.8 = 0.8749...
    assert "(14/20) | 5% | 0.87 [0.61–1.26] |" in visual2
    assert "(18/20) | 5% | 1.00 |" in id_row and "(16/20) | 5% | 1.00 |" in id_row
    # videos: relative links to every planned_episode.mp4, the bench's own eval's included
    links = [line for line in text.splitlines() if line.startswith("- [") and "planned_episode.mp4" in line]
    assert links == ["- [../results/bench/tworoom/eval/planned_episode.mp4](<../results/bench/tworoom/eval/planned_episode.mp4>)",
                     "- [../results/eval_tworoom_cem/planned_episode.mp4](<../results/eval_tworoom_cem/planned_episode.mp4>)",
                     "- [../results/oracle_tworoom/planned_episode.mp4](<../results/oracle_tworoom/planned_episode.mp4>)"]
    for line in links:
        assert (out.parent / line.split("](<")[1].rstrip(">)")).is_file()


def test_a_pooled_seeds_line_shows_the_oracle_on_its_own_pairs(tmp_path: Path) -> None:
    """Three seeds pooled (150 episodes) beside an oracle run once on the 50 shared pairs: the
    oracle's count is its own (50/50), not inferred from the pooled episodes (150/150)."""
    (line,) = [x for x in bench_lines() if x["protocol"] == "standard"][:1]
    line.update(episodes=150, successes=140, success_rate=140 / 150, success_ci95=list(wilson_interval(140, 150)),
                baseline_success_rate=0.0, baseline_success_ci95=list(wilson_interval(0, 150)),
                oracle_successes=50, oracle_episodes=50)
    write_jsonl(tmp_path / "bench" / "results.jsonl", [line])
    out = tmp_path / "report.md"
    build_report([tmp_path / "bench"], out)
    (row,) = [r for r in out.read_text().splitlines() if r.startswith("| wm/TwoRoom-v0")]
    assert "| 93% [88–96] (140/150) | 0% [0–2] (0/150) | 100% [93–100] (50/50) |" in row


def test_retained_interval_read_from_the_file_or_computed_from_counts(tmp_path: Path, capsys) -> None:
    """A ``retained_ci95`` written by `wm ood` is shown as written; an older file without the key gets
    `ratio_interval` of its counts, except on the ``train`` line that repeats a train-split ``id``;
    a malformed interval is refused by file and line."""
    lines = ood_lines("wm/TwoRoom-v0", "randomised", 16, 0.05)
    lines[0]["split"] = "train"  # trained on the train split: the `train` line repeats `id`
    lines[1] = {**lines[0], "condition": "train", "kind": "split"}
    lines[2]["retained_ci95"] = [0.11, 0.22]  # (not the counts' interval: read from the file)
    write_jsonl(tmp_path / "ood" / "results.jsonl", lines)
    out = tmp_path / "report.md"
    build_report([tmp_path / "ood"], out)
    text = out.read_text()
    row = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    assert row["train"].endswith("| 5% | 1.00 |") and row["id"].endswith("| 5% | 1.00 |")
    assert row["ood_visual@1"].endswith("(15/20) | 5% | 0.94 [0.11–0.22] |")
    lo, hi = ratio_interval(15, 20, 16, 20)
    assert row["ood_geometry@1"].endswith(f"(15/20) | 5% | 0.94 [{lo:.2f}–{hi:.2f}] |")
    lines[2]["retained_ci95"] = [0.5, 0.2]
    write_jsonl(tmp_path / "ood" / "results.jsonl", lines)
    err = report_error([str(tmp_path / "ood"), "--out", str(tmp_path / "r2.md")], capsys)
    assert "line 3: retained_ci95=[0.5, 0.2]; expected [low, high]" in err


def test_a_pooled_suite_reports_beside_its_runs(tmp_path: Path) -> None:
    """`wm ood-pool`'s folder is one more OOD run on the page: its checkpoints listed, not a Python list."""
    from benchmarks.ood import pool_ood

    for seed, k in ((0, 16), (1, 14)):
        lines = ood_lines("wm/TwoRoom-v0", "randomised", k, 0.05)
        for line in lines:
            line["ckpt"] = f"runs/seed{seed}/ckpt"
        write_jsonl(tmp_path / f"ood_s{seed}" / "results.jsonl", lines)
    pool_ood([tmp_path / "ood_s0", tmp_path / "ood_s1"], tmp_path / "pooled")
    out = tmp_path / "report.md"
    build_report([tmp_path], out)
    text = out.read_text()
    assert "checkpoint `runs/seed0/ckpt, runs/seed1/ckpt`" in text and "['" not in text
    ood = text[text.index("### wm/TwoRoom-v0"):]
    assert "pooled (2 runs pooled): success" in ood
    id_row = next(line for line in ood.splitlines() if line.startswith("| id |"))
    assert "(16/20)" in id_row and "(14/20)" in id_row and "(30/40)" in id_row


def test_same_inputs_same_report_and_images(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    build_report([results / "ood_default", results / "ood_randomised", results], out)  # overlapping DIRs: no row twice
    first = {p.name: p.read_bytes() for p in (tmp_path / "r_files").iterdir()}
    text = out.read_text()
    assert text.count("| wm/PushT-v0 | eval | icem |") == 1
    build_report([results], out)  # replaces its own page
    assert out.read_text() == text
    assert {p.name: p.read_bytes() for p in (tmp_path / "r_files").iterdir()} == first
    build_report([results / "oracle_tworoom"], out)  # fewer results: the images no longer linked go
    assert sorted(p.name for p in (tmp_path / "r_files").iterdir()) == ["planning_time.png", "success.png"]


def test_ood_heatmap_shares_one_colour_scale_and_greys_missing_cells(results: Path) -> None:
    import numpy as np

    from benchmarks import report

    found = find_results([results])
    runs = [r for r in found.ood if r.env_id == "wm/TwoRoom-v0"]
    assert [r.training for r in runs] == ["default", "randomised"]
    rows, severities = report._heatmap_rows(runs)
    assert rows[:4] == [("split", "ood_visual"), ("split", "ood_geometry"), ("split", "ood_physics"), ("split", "ood_all")]
    assert rows[4:] == [("factor", "agent_size"), ("factor", "background_color")] and severities == [1, 2, 3]
    captured: dict[str, list] = {}
    from matplotlib.axes import Axes

    real_imshow = Axes.imshow

    def imshow(self, grid, **kw):  # record what each panel draws
        captured.setdefault("grids", []).append(np.ma.filled(grid.astype(float), np.nan))
        captured.setdefault("norms", []).append((kw["norm"].vmin, kw["norm"].vmax))
        return real_imshow(self, grid, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Axes, "imshow", imshow)
        report.plot_ood(runs, results / "heat.png")
    assert captured["norms"] == [(0.0, 1.0), (0.0, 1.0)]  # one scale for both trainings
    default, randomised = captured["grids"]
    assert np.isnan(default[3, 2]) and np.isnan(randomised[3, 2])  # ood_all@3 was not run: grey
    assert default[0].tolist() == pytest.approx([14 / 18, 9 / 18, 4 / 18])  # round(18 * 0.25) = 4
    assert randomised[0].tolist() == pytest.approx([15 / 16, 14 / 16, 14 / 16])
    png_size(results / "heat.png")


def test_cli_writes_the_page_and_prints_its_path(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.md"
    assert main(["report", str(results / "oracle_tworoom"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    text = out.read_text()
    assert "cem (oracle only)" in text and "No OOD results." in text
    assert sorted(p.name for p in (tmp_path / "cli_files").iterdir()) == ["planning_time.png", "success.png"]


def report_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    code = main(["report", *args])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return err


def test_missing_or_empty_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r.md"
    err = report_error([str(tmp_path / "nope"), "--out", str(out)], capsys)
    assert f"{tmp_path / 'nope'}: no such folder" in err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("x")
    err = report_error([str(tmp_path / "empty"), "--out", str(out)], capsys)
    assert f"{tmp_path / 'empty'}: no result files found" in err
    assert "summary.json (wm eval --out), results.jsonl (wm ood --out, wm bench planning --out)" in err
    (tmp_path / "empty" / "summary.json").write_text(json.dumps({"loss": 1.0}))  # not a wm eval summary
    err = report_error([str(tmp_path / "empty"), "--out", str(out)], capsys)
    assert "no result files found" in err and "not a wm eval summary" in err
    assert not out.exists() and not (tmp_path / "r_files").exists()


def test_malformed_lines_name_the_file_and_line(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r.md"
    path = results / "ood_default" / "results.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-5]  # truncated JSON on line 3
    path.write_text("\n".join(lines) + "\n")
    err = report_error([str(results), "--out", str(out)], capsys)
    assert f"{path} line 3: not valid JSON" in err
    lines[2] = json.dumps({**json.loads(lines[3]), "kind": "sideways"})
    path.write_text("\n".join(lines) + "\n")
    assert f"{path} line 3: kind='sideways'; expected one of ['id', 'split', 'factor', 'goal_source']" in report_error(
        [str(results), "--out", str(out)], capsys)
    lines[2] = json.dumps({k: v for k, v in json.loads(lines[3]).items() if k != "success_rate"})
    path.write_text("\n".join(lines) + "\n")
    assert f"{path} line 3: missing ['success_rate']" in report_error([str(results), "--out", str(out)], capsys)
    shutil.rmtree(results / "ood_default")
    episodes = results / "eval_tworoom_cem" / "episodes.jsonl"
    episodes.write_text(episodes.read_text() + "{not json\n")
    n = len(episodes.read_text().splitlines())
    assert f"{episodes} line {n}: not valid JSON" in report_error([str(results), "--out", str(out)], capsys)
    shutil.rmtree(results / "eval_tworoom_cem")
    bench = results / "bench" / "results.jsonl"
    bad = bench_lines()
    bad[1]["success_rate"] = 1.7
    write_jsonl(bench, bad)
    assert f"{bench} line 2: success_rate=1.7; expected a rate in [0, 1]" in report_error([str(results), "--out", str(out)], capsys)
    write_jsonl(bench, [{"env_id": "wm/TwoRoom-v0", "score": 3}])
    assert f"{bench} line 1: neither a wm ood line" in report_error([str(results), "--out", str(out)], capsys)
    assert not out.exists()


def test_never_replaces_a_page_it_did_not_write(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mine = tmp_path / "notes.md"
    mine.write_text("# my notes\n")
    assert "exists and was not written by wm report" in report_error([str(results), "--out", str(mine)], capsys)
    assert mine.read_text() == "# my notes\n"
    assert "a report is a Markdown file (.md)" in report_error([str(results), "--out", str(tmp_path / "r.html")], capsys)
    (tmp_path / "r_files").mkdir()
    (tmp_path / "r_files" / "photo.jpg").write_bytes(b"x")
    assert "holds files wm report did not write ('photo.jpg')" in report_error([str(results), "--out", str(tmp_path / "r.md")], capsys)
    assert (tmp_path / "r_files" / "photo.jpg").read_bytes() == b"x" and not (tmp_path / "r.md").exists()


def test_a_real_eval_folder_reports(tmp_path: Path) -> None:
    """The summary `wm eval` writes today is read as the report expects (guards the fixture against drift)."""
    import data

    heldout = tmp_path / "heldout.lance"
    data.collect("wm/TwoRoom-v0", 2, heldout, resolution=16, seed=1_000_000)
    tiny = ["--episodes", "2", "--offset", "10", "--budget", "8", "--device", "cpu", "--num-samples", "8",
            "--iterations", "1", "--num-elites", "2", "--horizon", "2", "--oracle-frameskip", "2"]
    assert main(["eval", "--oracle-only", "--data", str(heldout), "--out", str(tmp_path / "oracle"), *tiny]) == 0
    summary = json.loads((tmp_path / "oracle" / "summary.json").read_text())
    found = find_results([tmp_path / "oracle"])
    (r,) = found.planning
    assert (r.env_id, r.label, r.protocol, r.episodes) == ("wm/TwoRoom-v0", "cem (oracle only)", "offset 10, budget 8", 2)
    assert r.model is None and r.oracle.rate == summary["oracle_success_rate"]
    assert r.random.successes == summary["baseline_successes"]
    assert found.videos == [tmp_path / "oracle" / "planned_episode.mp4"]
