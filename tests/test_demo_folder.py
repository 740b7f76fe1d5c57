"""`wm demo --out DIR` deletes only a folder an earlier demo wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.demo import DEMO_FORMAT, DEMO_MARKER, _clear_demo_folder
from worldmodel.cli import main


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", ["notes", "demo_plus_notes", "other_summary"])
def test_demo_refuses_a_folder_it_did_not_write(tmp_path: Path, capsys, layout: str) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    if layout == "demo_plus_notes":  # an earlier demo folder the user added a file to
        (out / DEMO_MARKER).write_text(json.dumps({"format": DEMO_FORMAT}))
    if layout == "other_summary":  # a summary.json that is not the demo's
        (out / "notes.txt").unlink()
        (out / "summary.json").write_text(json.dumps({"accuracy": 0.5}))
    before = _snapshot(out)
    assert main(["demo", "--out", str(out), "--quick", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "refusing to delete it" in err and str(out) in err
    assert _snapshot(out) == before


def test_demo_out_under_a_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "f.txt").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "f.txt" / "demo"), "--quick"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_an_earlier_demo_folder_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    (out / "data" / "train.lance").mkdir(parents=True)
    (out / DEMO_MARKER).write_text(json.dumps({"format": DEMO_FORMAT}))
    (out / "report.md").write_text("# old")
    _clear_demo_folder(out)
    assert not out.exists()
    old = tmp_path / "old"  # a run from before the marker: summary.json with success rates
    old.mkdir()
    (old / "summary.json").write_text(json.dumps({"success_rate": 0.7, "baseline_success_rate": 0.0}))
    _clear_demo_folder(old)
    assert not old.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    _clear_demo_folder(empty)
    assert not empty.exists()
