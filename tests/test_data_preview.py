"""`wm data preview`: bad values are clear errors, and only previews it wrote are ever replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

import data
from worldmodel.cli import main


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("preview") / "ds.lance"
    data.collect("wm/TwoRoom-v0", 2, path, resolution=16, max_steps=4)
    return path


def preview(*args: str, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(["data", "preview", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("option,value,expected", [
    ("--scale", "0", "--scale 0: expected an integer >= 1"),
    ("--scale", "-3", "--scale -3: expected an integer >= 1"),
    ("--count", "-2", "--count -2: expected an integer >= 1"),
    ("--count", "0", "--count 0: expected an integer >= 1"),
    ("--cols", "0", "--cols 0: expected an integer >= 1"),
    ("--scale", "1000", "--scale 1000: the grid would be 32000x16000 pixels"),
])
def test_bad_values_are_clear_errors(ds: Path, tmp_path: Path, option: str, value: str, expected: str,
                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p.mp4"
    code, _, err = preview(str(ds), "--out", str(out), option, value, capsys=capsys)
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_out_under_a_file_or_not_a_video_is_a_clear_error(ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "somefile.txt").write_text("keep")
    for out, expected in (
        (tmp_path / "somefile.txt" / "preview.mp4", f"{tmp_path / 'somefile.txt'} is a file, not a folder"),
        (tmp_path / "somefile.txt" / "a" / "preview.mp4", f"{tmp_path / 'somefile.txt'} is a file, not a folder"),
        (tmp_path / "preview.avi", "a preview is a .mp4 or .gif file (got suffix '.avi')"),
        (tmp_path / "somefile.txt", "a preview is a .mp4 or .gif file"),
    ):
        code, _, err = preview(str(ds), "--out", str(out), capsys=capsys)
        assert code == 2 and str(out) in err and expected in err and "Traceback" not in err, err
    assert (tmp_path / "somefile.txt").read_text() == "keep" and [p.name for p in tmp_path.iterdir()] == ["somefile.txt"]


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_replaces_only_its_own_preview(ds: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture) -> None:
    import cv2

    out = tmp_path / f"grid{suffix}"
    assert preview(str(ds), "--out", str(out), "--count", "1", capsys=capsys)[0] == 0
    first = out.read_bytes()
    assert preview(str(ds), "--out", str(out), capsys=capsys)[0] == 0  # our own earlier preview: replaced
    assert out.read_bytes() != first
    if suffix == ".mp4":
        cap = cv2.VideoCapture(str(out))
        ok, frame = cap.read()
        cap.release()
        assert ok and frame.shape == (32, 2 * 32, 3)  # the marker box leaves the video readable
        from data.video_file import probe_mp4

        assert probe_mp4(out)["codec"] == "h264"  # playable in a browser
    theirs = tmp_path / f"theirs{suffix}"
    theirs.write_bytes(first[:-40])  # a video this module did not write (no marker at its end)
    (tmp_path / "folder.mp4").mkdir()
    for path, expected in ((theirs, "exists and is not a preview written by wm data preview; refusing to replace it"),
                           (tmp_path / "folder.mp4", "is a folder")):
        before = sorted((p.name, p.is_file() and p.read_bytes()) for p in tmp_path.iterdir())
        code, _, err = preview(str(ds), "--out", str(path), capsys=capsys)
        assert code == 2 and str(path) in err and expected in err and "Traceback" not in err, err
        assert sorted((p.name, p.is_file() and p.read_bytes()) for p in tmp_path.iterdir()) == before
