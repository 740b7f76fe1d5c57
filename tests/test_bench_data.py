"""``wm bench data``: synthetic frames, the measuring helpers and the JSON contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.data import (
    BATCH_SIZE,
    CODECS_COMPARED,
    bench_codecs,
    bench_decode,
    bench_windows,
    bench_write,
    codec_targets_met,
    expert_episodes,
    markdown_table,
    synthetic_episode,
    targets_met,
)
from tests.test_cli import wm


def test_synthetic_frames_never_repeat() -> None:
    frames = synthetic_episode(np.random.default_rng(0), 60, 24)
    assert frames.dtype == np.uint8 and frames.shape == (60, 24, 24, 3)
    assert len({f.tobytes() for f in frames}) == 60  # repeated frames would be dictionary-encoded by Lance


def test_write_windows_and_decode_helpers(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    episodes = [synthetic_episode(rng, 40, 16) for _ in range(3)]
    actions = [rng.uniform(-1, 1, (40, 2)).astype(np.float32) for _ in range(3)]
    w = bench_write(tmp_path / "jpeg", "jpeg", episodes, actions)
    assert w["frames"] == 120 and w["bytes_per_frame"] == w["bytes"] / 120 and w["frames_per_s"] > 0
    r = bench_windows(tmp_path / "jpeg", "main", seconds=0.05, min_batches=2)
    assert r["windows"] >= 2 * BATCH_SIZE and r["windows_per_s"] > 0 and r["num_workers"] == 0
    d = bench_decode(tmp_path / "jpeg", seconds=0.05)
    assert d["frames"] >= 120 and d["frames_per_s"] > 0
    with pytest.raises(ValueError, match="loader"):
        bench_windows(tmp_path / "jpeg", "nope")


def test_targets_and_table_from_a_result() -> None:
    loader = {"windows_per_s": 1200.0, "startup_s": 0.1}
    result = {
        "resolution": 224, "windows_per_s": 1200.0, "windows_per_s_config": "jpeg/threads",
        "decode_bound_windows_per_s": 1600.0, "decode_bound_fraction": 0.75, "raw_main_windows_per_s": 2000.0, "raw_windows_per_s": 2500.0,
        "ram_gather_windows_per_s": 9000.0, "cores": 2, "raw_take_windows_per_s": 1500.0, "raw_take": {"startup_s": 0.2},
        "window": {"context": 3, "horizon": 1, "frameskip": 5, "frames": 4, "batch_size": 64},
        "loaders": {"jpeg": {"main": loader}, "raw": {"main": loader}},
        "decode": {"frames_per_s": 3200.0}, "collect": {"env_id": "wm/TwoRoom-v0", "codec": "jpeg", "steps_per_s": 900.0},
        "collect_steps_per_s": 2100.0,
        "write": {"jpeg": {"frames_per_s": 800.0, "bytes_per_frame": 14000.0}},
    }
    result["targets"] = targets_met(result)
    assert result["targets"]["windows_per_s"]["met"] and result["targets"]["decode_bound_fraction"]["met"]
    assert result["targets"]["collect_steps_per_s"]["met"]
    assert targets_met({**result, "resolution": 64, "raw_windows_per_s": 100.0})["raw_windows_per_s"]["met"] is False
    table = markdown_table(result)
    assert "| jpeg | main | 1,200 |" in table and "75% of the bound" in table
    assert "| raw | take (no memory map, baseline) | 1,500 |" in table


def test_codec_comparison_on_expert_frames(tmp_path: Path) -> None:
    frames, actions = expert_episodes(32, 2, max_steps=5)
    assert [f.shape for f in frames] == [(6, 32, 32, 3)] * 2 and [a.shape for a in actions] == [(6, 2)] * 2
    assert not actions[0][-1].any() and frames[0].dtype == np.uint8
    part = bench_codecs(tmp_path, 32, episodes=3, max_steps=40, seconds=0.05, loaders=("main",))
    codecs = part["codecs"]
    assert set(codecs) == set(CODECS_COMPARED) and {"jpeg", "h264"} <= set(codecs)
    for name, c in codecs.items():
        assert {"bytes_per_frame", "psnr_db", "windows_per_s"} <= set(c), name
        assert c["bytes_per_frame"] > 0 and c["windows_per_s"] > 0 and c["write_frames_per_s"] > 0
        assert c["windows_per_s_config"] == "main" and set(c["loaders"]) == {"main"}
        assert c["dataset_bytes_per_frame"] > c["bytes_per_frame"]  # states, actions and Lance's own bytes on top
    assert codecs["h264_lossless"]["exact"] and codecs["h264_lossless"]["psnr_db"] is None
    assert not codecs["h264"]["exact"] and 30 < codecs["h264"]["psnr_db"] < 60
    assert codecs["h264"]["codec_options"]["gop"] == 16 and codecs["jpeg"]["codec_options"] is None
    assert codecs["h264"]["bytes_per_frame"] < codecs["jpeg"]["bytes_per_frame"] / 5
    assert part["codec_data"] == {"env_id": "wm/PushT-v0", "episodes": 3, "frames": 123, "policy": "expert"}
    targets = part["codec_targets"]
    assert set(targets) == {"h264_bytes_vs_jpeg", "h264_psnr_db", "h264_windows_vs_jpeg"}
    assert targets["h264_bytes_vs_jpeg"]["value"] == codecs["h264"]["bytes_per_frame"] / codecs["jpeg"]["bytes_per_frame"]
    table = markdown_table({"resolution": 32, "window": {"frames": 4, "frameskip": 5, "batch_size": 64}, **part})
    assert "| h264 | " in table and "| jpeg | " in table and "write frames/s" in table and "target h264_psnr_db >= 35.0" in table
    slow = {**codecs["h264"], "windows_per_s": 0.4 * codecs["jpeg"]["windows_per_s"]}
    assert codec_targets_met({**codecs, "h264": slow})["h264_windows_vs_jpeg"]["met"] is False


def test_bench_data_bad_input() -> None:
    proc = wm("bench", "data", "--resolution", "2", check=False)
    assert proc.returncode == 2 and "--resolution=2" in proc.stderr


@pytest.mark.slow  # 10-30 s: DataLoader worker start-ups (two per codec) dominate
def test_bench_data_quick_json_contract() -> None:
    out = json.loads(wm("bench", "data", "--quick", "--resolution", "32", "--json").stdout)
    assert out["windows_per_s"] > 0 and out["decode_bound_windows_per_s"] > 0
    assert out["windows_per_s_config"].startswith("jpeg/")
    assert out["windows_per_s"] == max(r["windows_per_s"] for r in out["loaders"]["jpeg"].values())
    assert set(out["loaders"]) == {"jpeg", "raw"}
    for rows in out["loaders"].values():
        assert set(rows) == {"main", "threads", "workers"} and all(r["windows_per_s"] > 0 for r in rows.values())
    assert out["loaders"]["jpeg"]["workers"]["num_workers"] == 2
    assert set(out["write"]) == {"raw", "jpeg", "png"}
    assert out["write"]["raw"]["bytes_per_frame"] >= 32 * 32 * 3
    assert out["ram_gather_windows_per_s"] > 0 and out["collect"]["steps_per_s"] > 0
    assert out["collect_steps_per_s"] == max(c["steps_per_s"] for c in out["collects"].values())
    assert out["raw_windows_per_s"] == max(out["loaders"]["raw"][k]["windows_per_s"] for k in ("main", "threads"))
    # 32x32 raw frames are stored as flat pages: read through memory maps, with the take baseline beside them
    assert out["raw_mapped"] is True and out["loaders"]["raw"]["main"]["mapped"] is True
    assert out["raw_take"]["mapped"] is False and out["raw_take_windows_per_s"] > 0
    assert out["window"] == {"context": 3, "horizon": 1, "frameskip": 5, "frames": 4, "batch_size": 64}
    for name in ("jpeg", "h264"):  # issue #13's contract
        assert {"bytes_per_frame", "psnr_db", "windows_per_s"} <= set(out["codecs"][name])
    assert out["codec_targets"]["h264_bytes_vs_jpeg"]["value"] < 1


def test_codec_quality_probe_covers_every_env() -> None:
    import envs
    from benchmarks.codec_quality import probe, psnr

    out = probe(16, frames=3, crfs=(20,), pix_fmts=("yuv444p",))
    assert set(out) == set(envs.list_envs())
    for row in out.values():
        assert row["frames"] == 3 and row["jpeg_bytes"] > 0
        cell = row["h264"]["yuv444p crf20"]
        assert cell["bytes"] > 0 and 20 < cell["psnr_db"] < 80
    a = np.zeros((2, 2), np.uint8)
    assert psnr(a, a) == float("inf") and abs(psnr(a, a + 1) - 48.13) < 0.01
