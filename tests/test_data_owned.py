"""Only what this project wrote is ever replaced: `wm collect --mode overwrite` (EpisodeWriter)
refuses a folder with a foreign meta.json, a dataset holding a user's file, a link."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import data
from data import open_dataset
from worldmodel.cli import main


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def test_collect_overwrite_replaces_only_our_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = tmp_path / "ds.lance"
    data.collect("wm/TwoRoom-v0", 1, ds, resolution=16, max_steps=3)
    data.collect("wm/TwoRoom-v0", 2, ds, resolution=16, max_steps=3, mode="overwrite")  # ours: replaced
    assert open_dataset(ds).num_episodes == 2
    collect = ["collect", "--env", "wm/TwoRoom-v0", "--resolution", "16", "--out"]

    other = tmp_path / "other"  # another tool's folder that happens to hold a meta.json
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"format": "not-ours"}))
    (other / "weights.bin").write_bytes(b"\x00" * 8)
    (ds / "notes.txt").write_text("the user's")  # our dataset, with a file of the user's inside
    link = tmp_path / "link.lance"
    link.symlink_to(ds)
    for path, why in ((other, "not a dataset this project wrote"),
                      (ds, "a dataset that also holds files this project did not write ('notes.txt')"),
                      (link, "not a directory")):
        before = _tree(tmp_path)
        assert main([*collect, str(path), "--episodes", "1", "--mode", "overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"{path}: {why}" in err and "refusing to replace it" in err and "Traceback" not in err, err
        assert _tree(tmp_path) == before
    with pytest.raises(data.DatasetError, match="refusing to replace it"):
        data.EpisodeWriter(other, mode="overwrite")
