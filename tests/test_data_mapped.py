"""Memory-mapped raw frames (`data.mapped`): identical to Lance's take wherever they are
used, refused wherever the file layout is not the one they assume."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

import data.mapped as M
from data import WindowDataset, collate_windows
from data import columns as C
from tests.test_data_store import write_episodes
from tests.test_data_windows import assert_same, reference_windows

HW = (12, 10)  # 360 bytes a frame: Lance 2.1+ stores values this large uncompressed ("full zip")


def lance_frames(table, rows) -> np.ndarray:
    """Frames uint8 (U, H, W, 3) of `rows` as Lance's take returns them."""
    col = table.take(np.asarray(rows).tolist(), columns=[C.PIXELS]).column(C.PIXELS).combine_chunks()
    return col.flatten().to_numpy(zero_copy_only=False).reshape((len(rows), *HW, 3))


def frames_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    size = HW[0] * HW[1] * 3
    pixels = pa.FixedSizeListArray.from_arrays(pa.array(rng.integers(0, 256, n * size, dtype=np.uint8)), size)
    return pa.table({"episode_id": pa.array(np.arange(n) // 7, pa.int64()), "pixels": pixels})


@pytest.mark.parametrize("version", ["2.0", "2.1", "2.2"])
def test_gather_matches_lance_across_fragments_and_pages(tmp_path, version):
    import lance

    table = frames_table(500)
    # several fragments (files); small pages (format 2.0 splits them, interleaved with the other column's)
    ds = lance.write_dataset(table, str(tmp_path / "t"), data_storage_version=version, max_rows_per_file=200,
                             max_page_bytes=20_000, data_cache_bytes=20_000)
    assert len(ds.get_fragments()) == 3
    mapped = M.map_raw_frames(ds, "pixels", (*HW, 3))
    assert mapped is not None and len(mapped) == 500
    if version == "2.0":
        assert len(mapped.segments) > 10  # pages that are not back to back: one segment each
    rng = np.random.default_rng(1)
    for rows in (rng.integers(0, 500, (40, 4)), np.array([0, 499, 199, 200, 200, 0]), np.arange(500)):
        got = mapped.gather(rows)  # (*rows.shape, 3, H, W), unsorted rows with repeats
        assert got.shape == (*rows.shape, 3, *HW) and got.dtype == np.uint8 and got.flags.writeable
        want = lance_frames(ds, rows.reshape(-1)).transpose(0, 3, 1, 2).reshape(got.shape)
        np.testing.assert_array_equal(got, want)
        into = np.full(got.shape, 7, np.uint8)
        assert mapped.gather(rows, out=into) is into  # the per-frame channel split into a given buffer
        np.testing.assert_array_equal(into, want)


def test_pickles_without_its_bytes_and_reopens(tmp_path):
    import lance

    ds = lance.write_dataset(frames_table(300), str(tmp_path / "t"))
    mapped = M.map_raw_frames(ds, "pixels", (*HW, 3))
    rows = np.array([5, 3, 299])
    before = mapped.gather(rows)
    blob = pickle.dumps(mapped)
    assert len(blob) < 2_000  # the plan, not 108 kB of frames
    np.testing.assert_array_equal(pickle.loads(blob).gather(rows), before)


def test_refuses_deleted_rows_remote_uris_and_encoded_pages(tmp_path, caplog):
    import lance

    ds = lance.write_dataset(frames_table(100), str(tmp_path / "t"))
    ds.delete("episode_id = 3")
    with caplog.at_level("DEBUG", logger="data.mapped"):
        assert M.map_raw_frames(ds, "pixels", (*HW, 3)) is None
    assert "deleted rows" in caplog.text

    assert M._local_root("s3://bucket/ds/steps.lance") is None
    assert str(M._local_root("file:///data/x")) == "/data/x"

    # frames of 48 bytes: Lance 2.1+ packs them into compressed mini-blocks, not flat pages
    small = pa.table({"pixels": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(48 * 50, np.uint8)), 48)})
    ds = lance.write_dataset(small, str(tmp_path / "small"), data_storage_version="2.1")
    assert M.map_raw_frames(ds, "pixels", (4, 4, 3)) is None
    # the wrong frame shape for the column
    ds = lance.write_dataset(frames_table(50), str(tmp_path / "shape"))
    assert M.map_raw_frames(ds, "pixels", (10, 10, 3)) is None


def test_refuses_when_sampled_rows_differ_from_lance(tmp_path, monkeypatch, caplog):
    import lance

    ds = lance.write_dataset(frames_table(100), str(tmp_path / "t"))
    assert M.map_raw_frames(ds, "pixels", (*HW, 3)) is not None
    views = M.MappedFrames.views
    monkeypatch.setattr(M.MappedFrames, "views", lambda self: [np.roll(v, 1, axis=0) for v in views(self)])  # a misread layout
    with caplog.at_level("DEBUG", logger="data.mapped"):
        assert M.map_raw_frames(ds, "pixels", (*HW, 3)) is None
    assert "differ" in caplog.text


@pytest.mark.parametrize("split_bytes", [0, None], ids=["split-into-reused-buffers", "numpy-gather"])
def test_window_dataset_reads_mapped_frames_like_take(tmp_path, monkeypatch, split_bytes):
    import data.windows as W

    if split_bytes is not None:
        monkeypatch.setattr(W, "MAPPED_SPLIT_BYTES", split_bytes)
    path = tmp_path / "ds"
    write_episodes(path, [30, 12, 25, 1, 40], codec="raw", hw=HW)  # one fragment per episode
    refs = reference_windows(path, 2, 1, 3)
    idx = np.random.default_rng(0).integers(0, len(refs), 64).tolist() + [0, len(refs) - 1]
    mapped, taken = WindowDataset(path, 2, 1, 3), WindowDataset(path, 2, 1, 3, mmap=False)
    assert mapped.mapped and not taken.mapped and "mapped=True" in repr(mapped)
    first = mapped.__getitems__(idx)
    assert_same(first, [refs[i] for i in idx])
    assert_same(mapped.__getitems__(idx[::-1]), [refs[i] for i in idx[::-1]])
    assert_same(first, [refs[i] for i in idx])  # a held batch is not overwritten by the next
    assert_same(taken.__getitems__(idx), [refs[i] for i in idx])
    # jpeg frames, or a RAM cache, never map
    jpeg = tmp_path / "jpeg"
    write_episodes(jpeg, [5], codec="jpeg", hw=HW)
    assert not WindowDataset(jpeg, 1, 0).mapped
    assert not WindowDataset(path, 1, 0, cache=True).mapped


def test_mapped_windows_in_dataloader_workers(tmp_path):
    path = tmp_path / "ds"
    write_episodes(path, [20, 15], codec="raw", hw=HW)
    wd = WindowDataset(path, 2, 1, 2)
    assert wd.mapped
    batches = [list(range(i, min(i + 8, len(wd)))) for i in range(0, len(wd), 8)]
    want = [wd.__getitems__(b) for b in batches]
    dl = torch.utils.data.DataLoader(wd, batch_sampler=batches, collate_fn=collate_windows, num_workers=2,
                                     multiprocessing_context="spawn")
    for got, ref in zip(dl, want):
        for key in ("pixels", "actions", "episode_id", "start"):
            assert torch.equal(got[key], ref[key])


@pytest.mark.parametrize("mmap", [True, False], ids=["mapped", "take"])
def test_reader_follows_the_dataset_after_a_writer_compacts_it(tmp_path, mmap):
    import pickle

    from data.errors import DatasetError

    path = tmp_path / "ds"
    write_episodes(path, [20, 15], codec="raw", hw=HW)
    wd = WindowDataset(path, 2, 1, 2, mmap=mmap)
    refs = reference_windows(path, 2, 1, 2)
    old_files = set((path / C.STEPS_TABLE / "data").iterdir())
    write_episodes(path, [9, 4], codec="raw", hw=HW, seed=5)  # appends, compacts, deletes the old version's files
    assert not old_files & set((path / C.STEPS_TABLE / "data").iterdir())
    idx = list(range(len(refs)))
    worker = pickle.loads(pickle.dumps(wd))  # like a DataLoader worker: opens its table (and maps) after the deletion
    for reader in (wd, worker):
        assert len(reader) == len(refs)  # the same episodes: later ones are not added
        assert_same(reader.__getitems__(idx), refs)
    assert worker.mapped == mmap

    # a dataset whose episodes changed under the reader is an error, not wrong windows
    wd = WindowDataset(path, 2, 1, 2, mmap=False)
    write_episodes(path, [3], codec="raw", hw=HW, seed=9, mode="overwrite")
    with pytest.raises(DatasetError, match="no longer holds the same episodes"):
        wd.__getitems__([0])


def _pinned_lance() -> str:
    import tomllib

    from tests.test_data_store import REPO

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if d.replace(" ", "").startswith("pylance"))


@pytest.mark.parametrize("hw", [(10, 10), (16, 16), (64, 64)])
def test_datasets_this_project_writes_are_read_through_the_maps(tmp_path, hw, caplog):
    """With the pinned Lance, raw frames of 10x10 and larger (8x8 and 9x9 frames go to
    Lance's mini-block layout and are read with take) must map: fresh (one fragment per
    episode), appended, compacted and collected datasets. A quiet fallback to take would
    lose the 5-10x window throughput `benchmarks/RESULTS.md` reports; this says why instead."""
    import logging

    import lance
    from packaging.requirements import Requirement

    from data import collect, compact_dataset

    pin = Requirement(_pinned_lance())
    assert lance.__version__ in pin.specifier, (
        f"installed pylance {lance.__version__} is outside the pin {pin} in pyproject.toml: the page layouts "
        f"data/mapped.py recognises were verified on the pinned range only (re-verify, then move the pin)"
    )
    caplog.set_level(logging.DEBUG, logger=M.__name__)
    path = tmp_path / "ds"
    write_episodes(path, [6, 9, 4], codec="raw", hw=hw)
    write_episodes(path, [5, 7], codec="raw", hw=hw, seed=3)  # appended by a second writer
    collected = tmp_path / "collected"
    collect("wm/TwoRoom-v0", 2, collected, resolution=hw[0], max_steps=6)
    for stage, where in (("fresh", path), ("collected", collected), ("compacted", path)):
        if stage == "compacted":
            compact_dataset(path)
        caplog.clear()
        ds = WindowDataset(where, 2, 1, 2)
        assert ds.mapped, (
            f"a {stage} {hw[0]}x{hw[1]} raw dataset written with pylance {lance.__version__} is read with take, not "
            f"through the maps: {caplog.text.strip() or 'no reason logged'}"
        )
