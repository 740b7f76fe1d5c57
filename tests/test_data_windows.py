"""WindowDataset: windows against a brute-force reference, filters, cache, DataLoader workers."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from data import WindowDataset, collate_windows, open_dataset
from data import columns as C
from tests.test_data_store import write_episodes

LENGTHS = [2, 1, 5, 9, 13, 4, 20]


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("windows") / "ds"
    write_episodes(path, LENGTHS, seed=3, hw=(6, 5), action_dim=2)
    return path


def reference_windows(path, context, horizon, frameskip, episode_ids=None):
    """Every window, built the slow obvious way from load_episode."""
    ds = open_dataset(path)
    n, f = context + horizon, frameskip
    out = []
    for e in ds.episodes():
        eid = e[C.EPISODE_ID]
        if episode_ids is not None and eid not in episode_ids:
            continue
        ep = ds.load_episode(eid)
        T = len(ep["pixels"])
        for t in range(T):
            if t + (n - 1) * f > T - 1:
                break
            frames = [ep["pixels"][t + k * f].transpose(2, 0, 1) for k in range(n)]
            blocks = [np.concatenate([ep["action"][t + k * f + j] for j in range(f)]) for k in range(n - 1)]
            actions = np.stack(blocks) if blocks else np.zeros((0, f * ds.action_dim), np.float32)
            out.append({"pixels": np.stack(frames), "actions": actions, "episode_id": eid, "start": t})
    return out


def assert_same(batch, refs):
    assert batch["pixels"].dtype == torch.uint8 and batch["actions"].dtype == torch.float32
    np.testing.assert_array_equal(batch["pixels"].numpy(), np.stack([r["pixels"] for r in refs]))
    np.testing.assert_array_equal(batch["actions"].numpy(), np.stack([r["actions"] for r in refs]))
    assert batch["episode_id"].tolist() == [r["episode_id"] for r in refs]
    assert batch["start"].tolist() == [r["start"] for r in refs]


@pytest.mark.parametrize("seed", range(8))
def test_windows_match_brute_force(dataset_path, seed):
    rng = np.random.default_rng(seed)
    context, horizon, frameskip = int(rng.integers(1, 4)), int(rng.integers(0, 4)), int(rng.integers(1, 4))
    if seed == 0:
        context, horizon, frameskip = 1, 0, 1  # single-frame windows: every row
    if seed == 1:
        context, horizon, frameskip = 3, 2, 4  # spans 17 rows: only the longest episodes
    wd = WindowDataset(dataset_path, context, horizon, frameskip)
    refs = reference_windows(dataset_path, context, horizon, frameskip)
    assert len(wd) == len(refs)
    if not refs:
        return
    idx = rng.permutation(len(refs))[: min(len(refs), 40)].tolist()
    idx += idx[:3]  # duplicates in one batch
    assert_same(wd.__getitems__(idx), [refs[i] for i in idx])
    item = wd[len(refs) - 1]  # the last window touches the last episode's edge
    assert item["pixels"].shape == (context + horizon, 3, 6, 5)
    assert item["actions"].shape == (context + horizon - 1, frameskip * 2)
    assert item["episode_id"] == refs[-1]["episode_id"] and item["start"] == refs[-1]["start"]
    np.testing.assert_array_equal(item["pixels"].numpy(), refs[-1]["pixels"])
    # negative indices work like a sequence
    assert wd[-1]["start"] == item["start"]


def test_windows_count_formula(dataset_path):
    wd = WindowDataset(dataset_path, context=2, horizon=1, frameskip=2)
    assert len(wd) == sum(max(0, L - 4) for L in LENGTHS)
    assert isinstance(wd._win_ep, np.ndarray) and isinstance(wd._win_t, np.ndarray)
    with pytest.raises(IndexError):
        wd.__getitems__([len(wd)])
    with pytest.raises(ValueError, match="context"):
        WindowDataset(dataset_path, context=0, horizon=1, frameskip=1)


def test_episode_ids_filter(dataset_path):
    wd = WindowDataset(dataset_path, 2, 1, 1, episode_ids=[4, 2])
    refs = reference_windows(dataset_path, 2, 1, 1, episode_ids={2, 4})
    assert wd.episode_ids.tolist() == [2, 4] and len(wd) == len(refs)
    assert_same(wd.__getitems__(list(range(len(refs)))), refs)
    with pytest.raises(KeyError, match=r"\[99\]"):
        WindowDataset(dataset_path, 2, 1, 1, episode_ids=[2, 99])
    assert len(WindowDataset(dataset_path, 2, 1, 1, episode_ids=[0])) == 0  # a 1-row episode has none


@pytest.mark.parametrize("codec", ["raw", "png"])
def test_cache_gives_identical_items(tmp_path, codec):
    path = tmp_path / "ds"
    write_episodes(path, [6, 3, 8], codec=codec, hw=(9, 7))
    lazy = WindowDataset(path, 2, 2, 1)
    cached = WindowDataset(path, 2, 2, 1, cache=True)
    assert cached._frames is not None and cached._frames.dtype == np.uint8
    idx = list(range(len(lazy)))[::-1]
    a, b = lazy.__getitems__(idx), cached.__getitems__(idx)
    for key in a:
        assert torch.equal(a[key], b[key])


@dataclass
class _Cfg:
    context: int = 2
    horizon: int = 1
    frameskip: int = 2
    action_dim: int = 2
    image_size: int = 6


def test_from_config(dataset_path):
    wd = WindowDataset.from_config(dataset_path, _Cfg(image_size=None))
    assert (wd.context, wd.horizon, wd.frameskip, wd.block_dim) == (2, 1, 2, 4)
    with pytest.raises(ValueError, match="action_dim=3"):
        WindowDataset.from_config(dataset_path, _Cfg(action_dim=3, image_size=None))
    with pytest.raises(ValueError, match="image_size=64"):
        WindowDataset.from_config(dataset_path, _Cfg(image_size=64))


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_dataloader_worker_processes(dataset_path, start_method):
    before = multiprocessing.get_start_method()
    wd = WindowDataset(dataset_path, 2, 1, 1)
    wd.__getitems__([0])  # the parent has a Lance handle open already
    loader = torch.utils.data.DataLoader(
        wd, batch_size=8, shuffle=False, num_workers=2, collate_fn=collate_windows,
        multiprocessing_context=start_method,
    )
    batches = list(loader)
    assert multiprocessing.get_start_method() == before
    starts = torch.cat([b["start"] for b in batches])
    assert len(starts) == len(wd)
    refs = reference_windows(dataset_path, 2, 1, 1)
    assert_same({k: torch.cat([b[k] for b in batches]) for k in batches[0]}, refs)


def test_dataloader_without_getitems_batches(dataset_path):
    wd = WindowDataset(dataset_path, 1, 1, 1)
    loader = torch.utils.data.DataLoader(wd, batch_size=None, shuffle=False)  # one item at a time
    first = next(iter(loader))
    assert first["pixels"].shape == (2, 3, 6, 5)
    batch = collate_windows([wd[0], wd[1]])
    assert batch["pixels"].shape == (2, 2, 3, 6, 5)
