"""`wm data compact` (crash-safe), `wm data preview`, factor summaries in `wm data info`."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lance
import pytest

import data
from data import columns as C
from data import compact_dataset, open_dataset, validate_dataset
from data.writer import EpisodeWriter
from tests.test_cli import REPO, wm


def fragmented(path: Path, episodes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset with one fragment per episode (the writer's own compaction disabled)."""
    monkeypatch.setattr(EpisodeWriter, "compact", lambda self: None)
    data.collect("wm/TwoRoom-v0", episodes, path, policy="random", resolution=16, max_steps=12)
    monkeypatch.undo()


def snapshot(path: Path) -> dict:
    ds = open_dataset(path)
    return {e[C.EPISODE_ID]: {k: v.tobytes() for k, v in ds.load_episode(e[C.EPISODE_ID]).items()} for e in ds.episodes()}


def test_compact_merges_fragments_and_keeps_every_episode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ds"
    fragmented(path, 12, monkeypatch)
    assert open_dataset(path).info()["fragments"] == 12
    before = snapshot(path)
    result = compact_dataset(path)
    assert result["fragments_before"][C.STEPS_TABLE] == 12 and result["fragments_after"][C.STEPS_TABLE] == 1
    assert snapshot(path) == before and validate_dataset(path) == []
    with EpisodeWriter(path), pytest.raises(data.DatasetError, match="another EpisodeWriter"):
        compact_dataset(path)  # never under an open writer


COMPACT_CHILD = """
import sys
sys.path.insert(0, {repo!r})
import data.writer as writer

real = writer.merge_fragments

def traced(table, target_rows):
    print("compaction started", table.uri, flush=True)
    changed = real(table, target_rows)
    print("compaction committed", table.uri, flush=True)
    return changed

writer.merge_fragments = traced
writer.compact_dataset({path!r})
"""


def _compact_in_child(path: Path, kill_after: float | None) -> tuple[float, str]:
    """Run `compact_dataset(path)` in a child; SIGKILL it `kill_after` seconds after it
    reports the steps compaction started (None: let it finish). Returns the seconds from
    that start marker to its commit marker (inf if never seen) and the child's output."""
    child = COMPACT_CHILD.format(repo=str(REPO), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()  # blocks until the steps table's compaction starts
        t0 = time.perf_counter()
        assert first.startswith("compaction started") and C.STEPS_TABLE in first, first
        if kill_after is None:
            second = proc.stdout.readline()
            return (time.perf_counter() - t0 if second.startswith("compaction committed") else float("inf")), first + second
        time.sleep(kill_after)
    finally:
        if kill_after is not None:
            proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait(timeout=30)
    return float("inf"), first + rest


def test_sigkill_during_compaction_leaves_a_sound_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pristine = tmp_path / "pristine"
    fragmented(pristine, 40, monkeypatch)
    before = snapshot(pristine)
    shutil.copytree(pristine, tmp_path / "probe")
    duration, _ = _compact_in_child(tmp_path / "probe", None)  # start marker -> commit marker, unkilled
    assert duration < float("inf")
    landed = []  # kills that hit the steps compaction after it started and before its commit
    for fraction in (0.0, 0.2, 0.4, 0.6, 0.8, 0.95, 2.0):  # the last one after the steps commit
        path = tmp_path / f"ds{fraction}"
        shutil.copytree(pristine, path)
        _, output = _compact_in_child(path, fraction * duration)
        if "compaction committed" not in output and len(lance.dataset(str(path / C.STEPS_TABLE)).get_fragments()) == 40:
            landed.append(fraction)  # killed mid-compaction: nothing committed
        assert validate_dataset(path) == [], f"after a kill {fraction:.0%} into a compaction of {duration:.3f}s"
        assert snapshot(path) == before, f"after a kill {fraction:.0%} into a compaction of {duration:.3f}s"
        compact_dataset(path)  # and a later compaction finishes the job
        assert snapshot(path) == before and open_dataset(path).info()["fragments"] == 1
    assert landed, "no kill landed between the start of a compaction and its commit: the test proved nothing"


def test_info_summarises_factors_per_split(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    data.collect("wm/TwoRoom-v0", 3, path, split="train", resolution=16, max_steps=5)
    data.collect("wm/TwoRoom-v0", 2, path, split="ood_physics", severity=3, seed=10, resolution=16, max_steps=5)
    info = json.loads(wm("data", "info", str(path), "--json").stdout)
    assert set(info["factors"]) == {"train", "ood_physics"}
    speeds = [e[C.FACTORS]["agent_speed"] for e in open_dataset(path).episodes() if e[C.SPLIT] == "ood_physics"]
    assert info["factors"]["ood_physics"]["agent_speed"]["min"] == pytest.approx(min(speeds), abs=1e-6)
    assert len(info["factors"]["train"]["agent_color"]["mean"]) == 3
    assert info["fps"] == 10.0 and info["frameskip"] == 1
    assert "factors [train]" in wm("data", "info", str(path)).stdout


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_preview_writes_a_grid_video(tmp_path: Path, suffix: str) -> None:
    import cv2

    path = tmp_path / "ds"
    data.collect("wm/TwoRoom-v0", 3, path, resolution=16, max_steps=6)
    out = tmp_path / f"grid{suffix}"
    assert wm("data", "preview", str(path), "--out", str(out), "--cols", "2").stdout.strip() == str(out)
    if suffix == ".mp4":
        cap = cv2.VideoCapture(str(out))
        ok, frame = cap.read()
        assert ok and frame.shape == (2 * 32, 2 * 32, 3)  # 2x2 grid of 16px tiles at scale 2
        cap.release()
    assert out.stat().st_size > 0
    proc = wm("data", "preview", str(path), "--episodes", "7", check=False)
    assert proc.returncode == 2 and "episode 7" in proc.stderr


def test_merge_fragments_keeps_order_drops_deleted_rows_and_leaves_big_fragments(tmp_path: Path) -> None:
    import lance
    import pyarrow as pa

    from data.writer import merge_fragments

    path = str(tmp_path / "t.lance")
    sizes = [3, 4, 10, 2, 5, 1]  # target 8: [3, 4] merge, 10 stays, [2, 5, 1] merge
    start = 0
    for n in sizes:
        lance.write_dataset(pa.table({"x": pa.array(range(start, start + n), pa.int64())}), path,
                            mode="append" if start else "create")
        start += n
    table = lance.dataset(path)
    table.delete("x = 1")  # a deletion in the first small fragment
    table = lance.dataset(path)
    big_id = table.get_fragments()[2].fragment_id
    assert merge_fragments(table, 8)
    table = lance.dataset(path)
    assert sorted(table.to_table()["x"].to_pylist()) == [i for i in range(sum(sizes)) if i != 1]
    frags = {f.fragment_id: f.to_table()["x"].to_pylist() for f in table.get_fragments()}
    assert frags.pop(big_id) == list(range(7, 17))  # the big fragment was not rewritten
    # (Lance lists rewritten fragments after the kept ones, as compact_files does; each
    # merged run keeps its rows in order, so episodes stay contiguous)
    assert sorted(frags.values()) == [[0, 2, 3, 4, 5, 6], list(range(17, 25))]
    assert not merge_fragments(table, 8)  # nothing left to merge
