"""The h264 codec (issue #13): group blobs, exact frames through every read path (load_episode,
windows at every position, cache, threads, DataLoader workers, conversion), lossless
round trips, corruption named by episode and group, settings in meta.json, SIGKILL
during collection, wm train on an h264 dataset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import data
from data import DatasetError, EpisodeWriter, SchemaMismatchError, WindowDataset, collate_windows, open_dataset, validate_dataset
from data import columns as C
from data.codecs import EncodedFrame, check_codec, decode_frame, encode_frame, encode_frames
from data.convert import convert
from data.video import (
    DEFAULT_GOP,
    CorruptGroupError,
    VideoOptions,
    decode_group,
    encode_groups,
    episode_values,
    group_sizes,
    window_span,
)
from tests.test_data_store import REPO

LENGTHS = [1, 7, 8, 9, 16, 23, 40]  # one row, shorter than a group, exactly one, one past, ... (gop 8)
HW = (24, 32)


def moving_frames(rng: np.random.Generator, length: int, hw=HW) -> np.ndarray:
    """Rendered-looking frames uint8 (T, H, W, 3): a flat background, a coloured square and
    a disc moving a few pixels per frame (what H.264 is made for; noise would not be)."""
    import cv2

    h, w = hw
    bg = rng.integers(60, 200, 3).tolist()
    square, disc = rng.integers(0, 256, 3).tolist(), rng.integers(0, 256, 3).tolist()
    p, v = rng.uniform(0, min(h, w), 2), rng.uniform(-2, 2, 2)
    out = np.empty((length, h, w, 3), np.uint8)
    for t in range(length):
        img = np.full((h, w, 3), bg, np.uint8)
        x, y = (p + v * t).astype(int) % np.array([w, h])
        cv2.rectangle(img, (int(x) - 4, int(y) - 4), (int(x) + 4, int(y) + 4), square, -1)
        cv2.circle(img, (int(w - 1 - x), int(y)), 3, disc, -1)
        out[t] = img
    return out


def write_h264(path: Path, lengths, seed=0, options=None, cams=False, hw=HW) -> dict[int, np.ndarray]:
    """An h264 dataset of moving frames; returns {episode_id: the frames given to the writer}."""
    rng = np.random.default_rng(seed)
    given = {}
    with EpisodeWriter(path, codec="h264", env_id="fake/Env-v0", codec_options=options) as w:
        for length in lengths:
            frames = moving_frames(rng, length, hw)
            actions = rng.uniform(-1, 1, (length, 2)).astype(np.float32)
            for t in range(length):
                extras = {"wrist": frames[length - 1 - t]} if cams else None
                w.add_step(frames[t], np.full(3, t, np.float64), actions[t], float(t), terminated=t == length - 1,
                           extras=extras)
            given[w.save_episode(seed=len(given), policy="random")] = frames
    return given


def reference_frames(path: Path) -> dict[int, np.ndarray]:
    """Every episode's frames decoded from the stored group blobs, each group on its own and
    whole (`decode_group`), read from the steps table without the store's readers."""
    import lance

    meta = json.loads((path / C.META_FILE).read_text())
    opts = VideoOptions.from_meta(meta["codec_options"])
    tbl = lance.dataset(str(path / C.STEPS_TABLE)).to_table(columns=[C.EPISODE_ID, C.STEP, C.PIXELS])
    rows = sorted(zip(tbl.column(C.EPISODE_ID).to_pylist(), tbl.column(C.STEP).to_pylist(), tbl.column(C.PIXELS).to_pylist()))
    out: dict[int, list] = {}
    for eid, step, value in rows:
        if step % opts.gop == 0:
            out.setdefault(eid, []).append(decode_group(value, meta["image_shape"], opts))
    return {eid: np.concatenate(groups) for eid, groups in out.items()}


def stored_values(path: Path) -> list[tuple[int, int, bytes]]:
    """(episode_id, step, pixels value) of every stored row, sorted."""
    import lance

    tbl = lance.dataset(str(path / C.STEPS_TABLE)).to_table(columns=[C.EPISODE_ID, C.STEP, C.PIXELS])
    return sorted(zip(tbl.column(C.EPISODE_ID).to_pylist(), tbl.column(C.STEP).to_pylist(), tbl.column(C.PIXELS).to_pylist()))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def h264_ds(tmp_path_factory) -> tuple[Path, dict[int, np.ndarray]]:
    path = tmp_path_factory.mktemp("h264") / "ds"
    given = write_h264(path, LENGTHS, options={"gop": 8}, cams=True)
    return path, given


# -- group blobs --------------------------------------------------------------------------


def test_default_gop_is_one_training_window() -> None:
    assert window_span(4, 5) == DEFAULT_GOP == 16 == VideoOptions().gop
    assert window_span(1, 3) == 1 and window_span(3, 1) == 3
    with pytest.raises(ValueError, match="frameskip 0"):
        window_span(4, 0)


def test_groups_decode_on_their_own_whole_or_in_part() -> None:
    frames = moving_frames(np.random.default_rng(0), 21)
    groups = encode_groups(frames, {"gop": 8})
    assert len(groups) == 3 and [group_sizes(g)[0] for g in groups] == [8, 8, 5]
    assert all(g[:4] == b"WMH1" for g in groups)
    whole = np.concatenate([decode_group(g, frames.shape[1:], {"gop": 8}) for g in groups])
    assert whole.shape == frames.shape and psnr(whole, frames) > 30
    for k, g in enumerate(groups):
        n = group_sizes(g)[0]
        for j in range(n):  # only units 0..j are decoded for frame j: the same values as from the whole group
            one = decode_group(g, frames.shape[1:], {"gop": 8}, frames=[j])
            np.testing.assert_array_equal(one[0], whole[8 * k + j])
        picked = decode_group(g, frames.shape[1:], {"gop": 8}, frames=[n - 1, 0, n - 1], channels_first=True)
        np.testing.assert_array_equal(picked, whole[[8 * k + n - 1, 8 * k, 8 * k + n - 1]].transpose(0, 3, 1, 2))
    with pytest.raises(IndexError, match="group of 5"):
        decode_group(groups[2], frames.shape[1:], {"gop": 8}, frames=[5])
    # a re-encode has the same layout and quality (its bytes may differ slightly: data/video.py's docstring)
    again = encode_groups(frames, {"gop": 8})
    assert [group_sizes(g)[0] for g in again] == [8, 8, 5]
    redecoded = np.concatenate([decode_group(g, frames.shape[1:], {"gop": 8}) for g in again])
    assert psnr(redecoded, frames) > 30 and abs(psnr(redecoded, frames) - psnr(whole, frames)) < 1.0


def test_lossy_quality_and_the_cost_of_half_resolution_chroma() -> None:
    frames = moving_frames(np.random.default_rng(1), 32, hw=(48, 64))  # small saturated shapes: colour edges
    quality = {}
    for pix_fmt in ("yuv444p", "yuv420p"):
        groups = encode_groups(frames, {"pix_fmt": pix_fmt})
        back = np.concatenate([decode_group(g, frames.shape[1:], {"pix_fmt": pix_fmt}) for g in groups])
        quality[pix_fmt] = psnr(back, frames)
        assert sum(map(len, groups)) < frames.nbytes / 20
    assert quality["yuv444p"] >= 35 and quality["yuv444p"] > quality["yuv420p"] + 3  # 4:2:0 smears colour edges
    with pytest.raises(ValueError, match="even frame sizes"):
        encode_groups(frames[:, :47], {"pix_fmt": "yuv420p"})


@pytest.mark.parametrize("hw", [(24, 32), (15, 13)])
def test_lossless_round_trips_bit_exactly(tmp_path: Path, hw) -> None:
    rng = np.random.default_rng(2)
    noise = rng.integers(0, 256, (19, *hw, 3), dtype=np.uint8)  # the hardest frames there are
    groups = encode_groups(noise, {"lossless": True, "gop": 6})
    np.testing.assert_array_equal(np.concatenate([decode_group(g, noise.shape[1:], {"lossless": True}) for g in groups]), noise)
    path = tmp_path / "ds"
    given = write_h264(path, [19, 4], options={"lossless": True, "gop": 6}, cams=True, hw=hw)
    ds = open_dataset(path)
    assert ds.meta["codec_options"]["encoder"] == "libx264rgb" and ds.meta["codec_options"]["qp"] == 0
    for eid, frames in given.items():
        ep = ds.load_episode(eid)
        np.testing.assert_array_equal(ep["pixels"], frames)
        np.testing.assert_array_equal(ep["wrist"], frames[::-1])
    wd = WindowDataset(path, 2, 1, 2, pad=True)
    b = wd.__getitems__(np.arange(len(wd)))
    for i in range(len(wd)):
        eid, t = int(b["episode_id"][i]), int(b["start"][i])
        steps = np.minimum(t + np.arange(3) * 2, len(given[eid]) - 1)
        np.testing.assert_array_equal(b["pixels"][i].numpy(), given[eid][steps].transpose(0, 3, 1, 2))
    out = tmp_path / "raw"
    assert convert(path, out, "lance", codec="raw")["lossy"] == []
    for eid, frames in given.items():
        np.testing.assert_array_equal(open_dataset(out).load_episode(eid)["pixels"], frames)
    back = tmp_path / "back"  # raw -> lossless h264: exact, nothing reported lossy
    assert convert(out, back, "lance", codec="h264", codec_options={"lossless": True})["lossy"] == []
    for eid, frames in given.items():
        np.testing.assert_array_equal(open_dataset(back).load_episode(eid)["pixels"], frames)


# -- every read path gives the same frames ---------------------------------------------------


def test_layout_meta_and_info(h264_ds) -> None:
    import lance

    path, given = h264_ds
    ds = open_dataset(path)
    assert ds.codec == "h264" and ds.video_options == VideoOptions(gop=8)
    meta = ds.meta["codec_options"]
    assert {k: meta[k] for k in ("gop", "crf", "preset", "pix_fmt", "lossless")} == {
        "gop": 8, "crf": 20, "preset": "veryfast", "pix_fmt": "yuv444p", "lossless": False}
    assert meta["encoder"] == "libx264" and meta["profile"] == "high444" and meta["bframes"] == 0
    tbl = lance.dataset(str(path / C.STEPS_TABLE)).to_table(columns=[C.STEP, C.PIXELS])
    for step, value in zip(tbl.column(C.STEP).to_pylist(), tbl.column(C.PIXELS).to_pylist()):
        assert (len(value) > 0) == (step % 8 == 0)  # a blob on each group's first row, nothing between
    info = ds.info()
    assert info["codec_options"] == meta and info["bytes_per_frame"] == round(info["size_bytes"] / sum(LENGTHS), 1)
    assert 0 < info["pixel_bytes_per_frame"] < np.prod(HW) * 3 / 10
    assert validate_dataset(path) == []


def test_load_episode_gives_the_decoded_groups(h264_ds) -> None:
    path, given = h264_ds
    ref = reference_frames(path)
    ds = open_dataset(path)
    for eid, frames in given.items():
        ep = ds.load_episode(eid)
        np.testing.assert_array_equal(ep["pixels"], ref[eid])
        np.testing.assert_array_equal(ds.load_episode(eid, decode_threads=3)["pixels"], ref[eid])
        assert psnr(ep["pixels"], frames) > 30 and psnr(ep["wrist"], frames[::-1]) > 30  # tiny flat frames: sanity, not quality
        assert ep["state"][:, 0].tolist() == list(range(len(frames)))
        assert list(ep) == ["pixels", "action", "state", "wrist", "reward", "terminated", "truncated"]
    assert set(ds.load_episode(3, columns=[C.STATE])) == {"state"}


@pytest.mark.parametrize("context, horizon, frameskip, pad", [
    (1, 0, 1, False), (3, 1, 5, False), (3, 1, 5, True), (2, 2, 3, True), (2, 1, 8, False), (4, 1, 2, True),
])
def test_every_window_position_matches_the_encoded_frames(h264_ds, context, horizon, frameskip, pad) -> None:
    path, _ = h264_ds
    ref = reference_frames(path)
    n = context + horizon
    for threads in (1, 3):
        wd = WindowDataset(path, context, horizon, frameskip, pad=pad, decode_threads=threads)
        idx = np.arange(len(wd))
        batch = wd.__getitems__(np.concatenate([idx, idx[::-1][:5]]))  # every window, some twice
        for i, k in enumerate(np.concatenate([idx, idx[::-1][:5]])):
            eid, t = int(batch["episode_id"][i]), int(batch["start"][i])
            steps = np.minimum(t + np.arange(n) * frameskip, len(ref[eid]) - 1)
            np.testing.assert_array_equal(batch["pixels"][i].numpy(), ref[eid][steps].transpose(0, 3, 1, 2),
                                          err_msg=f"episode {eid} start {t} threads {threads}")
        one = wd[len(wd) - 1]  # one window on its own (one group or two) decodes the same
        np.testing.assert_array_equal(one["pixels"].numpy(), batch["pixels"][len(wd) - 1].numpy())
    cached = WindowDataset(path, context, horizon, frameskip, pad=pad, cache=True)
    np.testing.assert_array_equal(cached.__getitems__(idx)["pixels"].numpy(), batch["pixels"][: len(idx)].numpy())


def test_dataloader_workers_read_h264(h264_ds) -> None:
    path, _ = h264_ds
    wd = WindowDataset(path, 3, 1, 2)
    batches = [list(range(s, min(s + 16, len(wd)))) for s in range(0, len(wd), 16)]
    want = [wd.__getitems__(b) for b in batches]
    loader = torch.utils.data.DataLoader(wd, batch_sampler=batches, collate_fn=collate_windows, num_workers=2,
                                         multiprocessing_context="forkserver")
    for got, exp in zip(loader, want):
        assert torch.equal(got["pixels"], exp["pixels"]) and torch.equal(got["actions"], exp["actions"])


def test_conversion_keeps_the_decoded_frames(h264_ds, tmp_path: Path) -> None:
    path, given = h264_ds
    ref = reference_frames(path)
    raw = tmp_path / "raw"
    result = convert(path, raw, "lance", codec="raw")
    assert result["lossy"] == [] and result["frames"] == sum(LENGTHS)
    for eid in given:
        np.testing.assert_array_equal(open_dataset(raw).load_episode(eid)["pixels"], ref[eid])
    copy = tmp_path / "copy"  # h264 -> h264 with the source's settings: the groups are copied byte for byte
    assert convert(path, copy, "lance")["lossy"] == []
    assert open_dataset(copy).video_options == VideoOptions(gop=8)
    assert stored_values(copy) == stored_values(path)
    for eid in given:
        np.testing.assert_array_equal(open_dataset(copy).load_episode(eid)["pixels"], ref[eid])
    regop = tmp_path / "regop"  # other settings: decoded and encoded again, and said so
    result = convert(path, regop, "lance", codec_options={"gop": 4})
    assert result["lossy"] == ["frames encoded as H.264 (lossy)", "extra cameras ['wrist'] encoded as H.264 (lossy)"]
    assert open_dataset(regop).video_options.gop == 4
    jpeg = tmp_path / "jpeg"
    assert convert(path, jpeg, "lance", codec="jpeg")["lossy"] == ["frames encoded as JPEG (lossy)",
                                                                  "extra cameras ['wrist'] encoded as JPEG (lossy)"]
    again = tmp_path / "again"  # and back from JPEG
    convert(jpeg, again, "lance", codec="h264", codec_options={"gop": 8})
    assert psnr(open_dataset(again).load_episode(6)["pixels"], given[6]) > 25  # three lossy generations of tiny frames
    with pytest.raises(ValueError, match="apply to a Lance destination with codec h264"):
        convert(path, tmp_path / "x", "lance", codec="jpeg", codec_options={"gop": 4})
    with pytest.raises(ValueError, match="need --codec h264"):
        convert(raw, tmp_path / "y", "lance", codec_options={"gop": 4})


def test_wm_collect_info_preview_and_flags(tmp_path: Path) -> None:
    from tests.test_cli import wm

    out = tmp_path / "c.lance"
    wm("collect", "--env", "wm/TwoRoom-v0", "--episodes", "2", "--out", str(out), "--resolution", "16",
       "--codec", "h264", "--gop", "6", "--crf", "25", "--workers", "2")
    ds = open_dataset(out)
    assert ds.video_options == VideoOptions(gop=6, crf=25) and ds.num_episodes == 2
    info = json.loads(wm("data", "info", str(out), "--json").stdout)
    assert info["codec"] == "h264" and info["codec_options"]["gop"] == 6 and info["pixel_bytes_per_frame"] > 0
    assert wm("data", "preview", str(out), "--out", str(tmp_path / "p.gif")).returncode == 0
    bad = wm("collect", "--env", "wm/TwoRoom-v0", "--episodes", "1", "--out", str(out), "--resolution", "16", "--gop", "4",
             check=False)
    assert bad.returncode == 2 and "gop=4 (the dataset's gop=6) do not match" in bad.stderr
    bad = wm("collect", "--env", "wm/TwoRoom-v0", "--episodes", "1", "--out", str(tmp_path / "j"), "--codec", "jpeg",
             "--crf", "20", check=False)
    assert bad.returncode == 2 and "--crf apply to --codec h264, not --codec jpeg" in bad.stderr


def test_wm_train_reads_an_h264_dataset(tmp_path: Path) -> None:
    from tests.test_train_cli import wm_train

    path = tmp_path / "tworoom.lance"
    data.collect("wm/TwoRoom-v0", 4, path, resolution=16, max_steps=10, seed=0, codec="h264", codec_options={"gop": 5})
    assert wm_train(path, tmp_path / "run", "--steps", "2", "--no-progress") == 0
    assert (tmp_path / "run" / "config.json").is_file()


# -- settings, bad input, corruption -----------------------------------------------------------


def test_settings_are_fixed_per_dataset(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    write_h264(path, [5], options={"gop": 4, "crf": 30})
    write_h264(path, [3], options={"gop": 4})  # the fields given match: appends
    write_h264(path, [3])  # none given: the dataset's
    assert open_dataset(path).num_episodes == 3 and open_dataset(path).video_options == VideoOptions(gop=4, crf=30)
    with pytest.raises(SchemaMismatchError, match=r"crf=20 \(the dataset's crf=30\)"):
        EpisodeWriter(path, codec="h264", codec_options={"crf": 20})
    frames = moving_frames(np.random.default_rng(0), 5)
    with EpisodeWriter(path) as w:  # EncodedFrames made with other settings are refused
        other = encode_frames(frames, "h264", {"gop": 4, "crf": 29})
        with pytest.raises(SchemaMismatchError, match="h264 options"):
            w.add_step(other[0], np.zeros(3))
        w.discard_episode()
        mine = encode_frames(frames, "h264", w.codec_options)  # the dataset's: stored as they are
        for t, f in enumerate(mine):
            w.add_step(f, np.zeros(3), np.zeros(2, np.float32))
        eid = w.save_episode()
    assert psnr(open_dataset(path).load_episode(eid)["pixels"], frames) > 25  # crf 30
    with pytest.raises(ValueError, match="codec_options apply to codec 'h264', not 'jpeg'"):
        EpisodeWriter(tmp_path / "j", codec="jpeg", codec_options={"gop": 4})
    with pytest.raises(ValueError, match="did you mean 'gop'"):
        EpisodeWriter(tmp_path / "k", codec="h264", codec_options={"gops": 4})
    for bad, named in (({"gop": 0}, "gop=0"), ({"crf": 52}, "crf=52"), ({"preset": "veryfats"}, "did you mean 'veryfast'"),
                       ({"pix_fmt": "yuv422p"}, "pix_fmt='yuv422p'"), ({"lossless": "yes"}, "lossless='yes'")):
        with pytest.raises(ValueError, match=named):
            VideoOptions.build(bad)
    assert VideoOptions(lossless=True, crf=10) == VideoOptions(lossless=True)  # crf does not apply


def test_per_frame_interfaces_refuse_h264_clearly() -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="encode_frames"):
        encode_frame(frame, "h264")
    with pytest.raises(ValueError, match="in groups"):
        decode_frame(b"WMH1", "h264", frame.shape)
    with pytest.raises(ValueError, match="did you mean 'h264'"):
        check_codec("h246")
    with pytest.raises(ValueError, match="encode_frames"):
        EncodedFrame.encode(frame, "h264")
    from data.ray_io import decode_pixels

    with pytest.raises(ValueError, match="groups of frames"):
        decode_pixels({C.PIXELS: np.array([b""], object)}, {"codec": "h264", "image_shape": [8, 8, 3]})


def _rewrite_value(path: Path, episode: int, step: int, change) -> None:
    """Replace the stored pixels value of (episode, step) by change(value), as damage on disk would."""
    import lance
    import pyarrow as pa

    uri = str(path / C.STEPS_TABLE)
    tbl = lance.dataset(uri).to_table()
    eid, st = tbl.column(C.EPISODE_ID).to_pylist(), tbl.column(C.STEP).to_pylist()
    values = tbl.column(C.PIXELS).to_pylist()
    i = next(k for k in range(len(values)) if eid[k] == episode and st[k] == step)
    values[i] = change(values[i])
    tbl = tbl.set_column(tbl.schema.get_field_index(C.PIXELS), tbl.schema.field(C.PIXELS), pa.array(values, pa.binary()))
    lance.write_dataset(tbl, uri, mode="overwrite", schema=tbl.schema)


def _flip(value: bytes, at: int) -> bytes:
    b = bytearray(value)
    b[at] ^= 0x55
    return bytes(b)


@pytest.mark.parametrize("damage, says", [
    (lambda v: _flip(v, len(v) // 2), "CRC-32 mismatch"),  # a byte of the video changed
    (lambda v: v[: len(v) - 7], "CRC-32 mismatch"),  # truncated
    (lambda v: _flip(v, 1), "starts b'W"),  # the magic
    (lambda v: b"", "holds 0 bytes"),  # emptied
])
def test_a_corrupted_group_is_an_error_naming_episode_and_group(h264_ds, tmp_path: Path, damage, says) -> None:
    import shutil

    src, _ = h264_ds
    path = tmp_path / "ds"
    shutil.copytree(src, path)
    _rewrite_value(path, episode=5, step=16, change=damage)  # episode 5 (23 rows): group 2 of 3
    ds = open_dataset(path)
    with pytest.raises(CorruptGroupError, match=rf"episode 5 pixels group 2: .*{says}") as err:
        ds.load_episode(5)
    assert str(path) in str(err.value) and isinstance(err.value, DatasetError)
    np.testing.assert_array_equal(ds.load_episode(4)["pixels"], open_dataset(src).load_episode(4)["pixels"])  # others fine
    wd = WindowDataset(path, 2, 1, 3)
    starts = np.flatnonzero(wd.episode_ids[wd._win_ep] == 5)
    hits = [i for i in starts if wd._win_t[i] + 6 >= 16]  # frames t, t+3, t+6: one of them in group 2 (rows 16..22)
    with pytest.raises(CorruptGroupError, match=rf"episode 5 pixels group 2: .*{says}"):
        wd.__getitems__([hits[0]])
    with pytest.raises(CorruptGroupError, match="episode 5 pixels group 2"):
        WindowDataset(path, 2, 1, 3, cache=True)


def test_damaged_video_with_a_valid_crc_is_still_an_error() -> None:
    from data.video import _pack

    frames = moving_frames(np.random.default_rng(3), 8)
    blob = encode_groups(frames, {"gop": 8})[0]
    n, sizes, off = group_sizes(blob)
    units = [bytearray(blob[off + sum(sizes[:k]) : off + sum(sizes[: k + 1])]) for k in range(n)]
    units[0][len(units[0]) // 2 :] = bytes(range(len(units[0]) - len(units[0]) // 2))  # garbage in the keyframe
    with pytest.raises(CorruptGroupError, match="episode 9 pixels group 0: corrupt h264 group"):
        decode_group(_pack([bytes(u) for u in units]), frames.shape[1:], {"gop": 8}, where="episode 9 pixels group 0")


def test_the_writer_checks_the_group_layout_of_encoded_rows(tmp_path: Path) -> None:
    frames = moving_frames(np.random.default_rng(4), 10)
    opts = VideoOptions(gop=4)
    rows = encode_frames(frames, "h264", opts)
    with EpisodeWriter(tmp_path / "ds", codec="h264", codec_options=opts) as w:
        shifted = rows[1:] + rows[:1]  # group blobs on the wrong rows
        for t, f in enumerate(shifted):
            w.add_step(f, np.zeros(3), np.zeros(2, np.float32))
        with pytest.raises(CorruptGroupError, match=r"episode 0 pixels group 0: corrupt h264 group \(row 0 holds 0 bytes"):
            w.save_episode()
        w.discard_episode()
        blobs = encode_groups(frames, opts)
        short = episode_values(blobs, 10, 4)[:9]  # the last group says 2 frames, the episode has 1 row for it
        for f in short:
            w.add_step(EncodedFrame(f, frames.shape[1:], "h264", opts), np.zeros(3), np.zeros(2, np.float32))
        with pytest.raises(CorruptGroupError, match=r"group 2: corrupt h264 group \(header says 2 frames, the episode has 1"):
            w.save_episode()
        w.discard_episode()
        for t in range(3):  # arrays and encoded rows in one episode
            w.add_step(rows[t] if t else frames[t], np.zeros(3), np.zeros(2, np.float32))
        with pytest.raises(ValueError, match="one way or the other"):
            w.save_episode()
        w.discard_episode()
    assert not (tmp_path / "ds").exists()  # nothing was ever committed


# -- crash safety ---------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.0, 0.05])
def test_sigkill_during_h264_collection_leaves_a_valid_dataset(tmp_path: Path, delay: float) -> None:
    from tests.test_cli import wm
    from tests.test_data_interrupts import _wait_for_episodes

    path = tmp_path / "ds.lance"
    cmd = [sys.executable, "-m", "worldmodel", "collect", "--env", "wm/TwoRoom-v0", "--episodes", "100000", "--out",
           str(path), "--resolution", "16", "--codec", "h264", "--gop", "5", "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for_episodes(path, 3, proc)
        time.sleep(delay)  # somewhere inside a later episode's encoding or commit
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert wm("data", "validate", str(path)).stdout.startswith("OK:")
    ds = open_dataset(path)
    n = ds.num_episodes
    assert n >= 3 and [e[C.EPISODE_ID] for e in ds.episodes()] == list(range(n))
    ref = reference_frames(path)
    for eid in range(n):
        np.testing.assert_array_equal(ds.load_episode(eid)["pixels"], ref[eid])
    data.collect("wm/TwoRoom-v0", 1, path, resolution=16, max_steps=6, codec="h264")  # resumes with the dataset's gop
    ds = open_dataset(path)
    assert ds.num_episodes == n + 1 and ds.info()["orphan_steps"] == 0 and validate_dataset(path) == []
    assert ds.load_episode(n)["pixels"].shape == (7, 16, 16, 3)
