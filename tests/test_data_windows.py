"""WindowDataset: windows against a brute-force reference (padding, masks, filters), cache,
WindowSampler (seeded order, rank shards), DataLoader workers."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from data import EpisodeWriter, WindowDataset, collate_windows, open_dataset
from data import columns as C
from data.windows import EpisodeGroupSampler, WindowSampler, select_episodes
from tests.test_data_store import write_episodes

LENGTHS = [2, 1, 5, 9, 13, 4, 20]


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("windows") / "ds"
    write_episodes(path, LENGTHS, seed=3, hw=(6, 5), action_dim=2)
    return path


def global_start_method() -> str:
    """The process-wide start method, read without fixing it. (Starting a spawn or
    forkserver process makes the stdlib pin the platform default, which is no change.)"""
    return multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]


def reference_windows(path, context, horizon, frameskip, episode_ids=None):
    """Every complete window, built the slow obvious way from load_episode (`reference_padded`)."""
    keep = None if episode_ids is None else set(episode_ids)
    return reference_padded(path, context, horizon, frameskip, pad=False, keep=keep)


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
    before = global_start_method()
    wd = WindowDataset(dataset_path, 2, 1, 1)
    wd.__getitems__([0])  # the parent has a Lance handle open already
    loader = torch.utils.data.DataLoader(
        wd, batch_size=8, shuffle=False, num_workers=2, collate_fn=collate_windows,
        multiprocessing_context=start_method,
    )
    batches = list(loader)
    assert global_start_method() == before
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


# -- padding, masks and episode filters against a brute-force reference over random datasets


def write_random_dataset(path, rng: np.random.Generator, n_episodes: int, hw=(12, 10), action_dim=2) -> None:
    """Episodes of random lengths (1 row, short, long), random door_width / colour factors and splits."""
    lengths = rng.choice([1, 2, 3, 5, 8, 13, 40, 75], size=n_episodes)
    with EpisodeWriter(path, codec="raw", env_id="fake/Env-v0") as w:
        for i, length in enumerate(lengths):
            pixels = rng.integers(0, 256, (length, *hw, 3), dtype=np.uint8)
            actions = rng.uniform(-1, 1, (length, action_dim)).astype(np.float32)
            for t in range(length):
                last = t == length - 1
                w.add_step(pixels[t], np.zeros(3), actions[t], 0.0, terminated=last)  # non-zero last action: padding must zero it
            factors = {"door_width": float(rng.uniform(0, 1)), "wall_rgb": tuple(rng.uniform(0, 1, 3).tolist())}
            w.save_episode(seed=i, factors=factors, policy="random", split=str(rng.choice(["train", "ood", "val"])))


def reference_padded(path, context, horizon, frameskip, pad, keep=None):
    """Every window, the slow obvious way; with `pad`, one per row, padded past the episode end."""
    ds = open_dataset(path)
    n, f, a = context + horizon, frameskip, ds.action_dim
    out = []
    for e in ds.episodes():
        eid = e[C.EPISODE_ID]
        if keep is not None and eid not in keep:
            continue
        ep = ds.load_episode(eid)
        T = len(ep["pixels"])
        for t in range(T):
            if not pad and t + (n - 1) * f > T - 1:
                break
            steps = [t + k * f for k in range(n)]
            frames = np.stack([ep["pixels"][min(s, T - 1)].transpose(2, 0, 1) for s in steps])
            raw = [ep["action"][t + j] if t + j <= T - 1 else np.zeros(a, np.float32) for j in range((n - 1) * f)]
            actions = np.concatenate(raw).reshape(n - 1, f * a) if n > 1 else np.zeros((0, f * a), np.float32)
            out.append({"pixels": frames, "actions": actions, "mask": np.array([s <= T - 1 for s in steps]),
                        "episode_id": eid, "start": t})
    return out


@pytest.fixture(scope="module")
def random_datasets(tmp_path_factory):
    paths = []
    for seed in range(3):
        path = tmp_path_factory.mktemp(f"random{seed}") / "ds"
        write_random_dataset(path, np.random.default_rng(100 + seed), n_episodes=6 + 3 * seed)
        paths.append(path)
    return paths


def random_filter(rng: np.random.Generator, episodes: list[dict]) -> tuple[dict, set | None]:
    """Random WindowDataset filter kwargs and the episode ids they should keep (None: all)."""
    kind = int(rng.integers(0, 5))
    ids = [e[C.EPISODE_ID] for e in episodes]
    if kind == 0:
        return {}, None
    if kind == 1:
        split = str(rng.choice(["train", "ood", "val"]))
        return {"split": split}, {e[C.EPISODE_ID] for e in episodes if e[C.SPLIT] == split}
    if kind == 2:
        lo, hi = sorted(rng.uniform(0, 1, 2).tolist())
        return {"factor_filter": {"door_width": (lo, hi)}}, {
            e[C.EPISODE_ID] for e in episodes if lo <= e[C.FACTORS]["door_width"] <= hi}
    if kind == 3:
        return {"factor_filter": lambda e: e["length"] >= 8}, {e[C.EPISODE_ID] for e in episodes if e[C.LENGTH] >= 8}
    chosen = set(rng.choice(ids, size=max(1, len(ids) // 2), replace=False).tolist())
    return {"episode_ids": sorted(chosen), "split": ["train", "val"]}, {
        e[C.EPISODE_ID] for e in episodes if e[C.EPISODE_ID] in chosen and e[C.SPLIT] in ("train", "val")}


@pytest.mark.parametrize("mmap", [True, False], ids=["mapped", "take"])
@pytest.mark.parametrize("case", range(24))
def test_padded_and_filtered_windows_match_brute_force(random_datasets, case, mmap):
    rng = np.random.default_rng(case)
    path = random_datasets[case % len(random_datasets)]
    context, horizon, frameskip = int(rng.integers(1, 4)), int(rng.integers(0, 4)), int(rng.integers(1, 6))
    pad = bool(case % 2)
    kwargs, keep = random_filter(rng, open_dataset(path).episodes())
    wd = WindowDataset(path, context, horizon, frameskip, pad=pad, mmap=mmap, **kwargs)
    assert wd.mapped == mmap  # 360-byte frames: stored as flat pages, mapped unless asked not to
    refs = reference_padded(path, context, horizon, frameskip, pad, keep)
    assert len(wd) == len(refs)
    assert set(wd.episode_ids.tolist()) == (keep if keep is not None else set(e[C.EPISODE_ID] for e in open_dataset(path).episodes()))
    if not refs:
        return
    idx = rng.integers(0, len(refs), size=min(len(refs), 50)).tolist()  # duplicates likely
    idx += [0, len(refs) - 1]  # first and last windows: episode edges
    batch = wd.__getitems__(idx)
    assert_same(batch, [refs[i] for i in idx])
    assert batch["mask"].dtype == torch.bool
    np.testing.assert_array_equal(batch["mask"].numpy(), np.stack([refs[i]["mask"] for i in idx]))
    if not pad:
        assert batch["mask"].all()


def test_pad_counts_every_row_and_masks_the_tail(dataset_path):
    wd = WindowDataset(dataset_path, context=2, horizon=1, frameskip=2, pad=True)
    assert len(wd) == sum(LENGTHS)
    one_row = wd[int(np.flatnonzero(wd._win_ep == 1)[0])]  # episode 1 has a single row
    assert one_row["mask"].tolist() == [True, False, False]
    assert torch.equal(one_row["pixels"][1], one_row["pixels"][0]) and torch.equal(one_row["pixels"][2], one_row["pixels"][0])
    assert not one_row["actions"].any()
    cached = WindowDataset(dataset_path, 2, 1, 2, pad=True, cache=True)
    idx = list(range(len(wd)))
    a, b = wd.__getitems__(idx), cached.__getitems__(idx)
    for key in a:
        assert torch.equal(a[key], b[key])


def test_filters_name_bad_input(dataset_path):
    with pytest.raises(KeyError, match="no_such_factor"):
        WindowDataset(dataset_path, 1, 0, 1, factor_filter={"no_such_factor": (0, 1)})
    assert len(WindowDataset(dataset_path, 1, 0, 1, split="no_such_split")) == 0
    # episode_ids and filters intersect; a range on a vector factor applies to every component
    wd = WindowDataset(dataset_path, 1, 0, 1, episode_ids=[0, 1, 2, 3], split="train")
    assert wd.episode_ids.tolist() == [0, 2]
    eps = open_dataset(dataset_path).episodes()
    assert select_episodes(eps, factor_filter={"wall_rgb": (0.0, 0.35)}).tolist() == list(range(len(LENGTHS)))
    assert select_episodes(eps, factor_filter={"wall_rgb": (0.15, 0.35)}).tolist() == []
    assert select_episodes(eps, factor_filter={"n": {1, 3}}).tolist() == [1, 3]
    assert select_episodes(eps, factor_filter={"n": 4}).tolist() == [4]


# -- WindowSampler


@pytest.mark.parametrize("n", [0, 1, 7, 64, 101])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_sampler_shards_are_disjoint_and_cover_everything(n, world_size):
    shards = [list(WindowSampler(n, seed=5, rank=r, world_size=world_size)) for r in range(world_size)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n))  # disjoint and covering
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    for r, s in enumerate(shards):
        assert len(WindowSampler(n, seed=5, rank=r, world_size=world_size)) == len(s)
    # batched with drop_last: equal full batches per rank, still disjoint
    samplers = [WindowSampler(n, batch_size=4, seed=5, rank=r, world_size=world_size, drop_last=True) for r in range(world_size)]
    batches = [list(s) for s in samplers]
    assert len({len(b) for b in batches}) == 1 and all(len(x) == 4 for b in batches for x in b)
    assert [len(s) for s in samplers] == [len(b) for b in batches]
    flat = [i for b in batches for x in b for i in x]
    assert len(flat) == len(set(flat)) and n - len(flat) < 4 * world_size
    # batched without drop_last: every window once across ranks
    batches = [list(WindowSampler(n, batch_size=4, seed=5, rank=r, world_size=world_size)) for r in range(world_size)]
    assert sorted(i for b in batches for x in b for i in x) == list(range(n))
    assert [len(WindowSampler(n, batch_size=4, seed=5, rank=r, world_size=world_size)) for r in range(world_size)] == list(map(len, batches))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_episode_group_sampler_batches_whole_groups_of_one_episode(world_size):
    """Each batch is batch_size / group groups of `group` distinct windows of one episode; the ranks get
    the same number of full batches, disjoint; an epoch uses each window at most once and sits out only
    an episode's remainder; the order is fixed by (seed, epoch) and changes with the epoch."""
    rng = np.random.default_rng(0)
    eps = np.repeat(np.arange(12), rng.integers(0, 15, 12))  # episodes of 0..14 windows
    group, batch = 3, 6
    counts = np.bincount(eps, minlength=12)
    groups_total = int((counts // group).sum())
    samplers = [EpisodeGroupSampler(eps, batch, group, seed=4, rank=r, world_size=world_size)
                for r in range(world_size)]
    batches = [list(s) for s in samplers]
    assert len({len(b) for b in batches}) == 1 and [len(s) for s in samplers] == [len(b) for b in batches]
    assert len(batches[0]) == groups_total // (world_size * batch // group) > 0
    flat = []
    for b in (x for rank in batches for x in rank):
        assert len(b) == batch
        for g in range(0, batch, group):
            assert len(set(eps[b[g : g + group]])) == 1  # one episode per group
        flat += b
    assert len(flat) == len(set(flat))  # disjoint over batches and ranks
    # the whole epoch (before sharding): every episode gives floor(count / group) groups
    all_groups = samplers[0].groups()
    assert all_groups.shape == (groups_total, group) and len(np.unique(all_groups)) == all_groups.size
    assert np.array_equal(np.bincount(eps[all_groups[:, 0]], minlength=12), counts // group)
    again = EpisodeGroupSampler(eps, batch, group, seed=4, rank=0, world_size=world_size)
    assert list(again) == batches[0]
    again.set_epoch(1)
    assert list(again) != batches[0]
    with pytest.raises(ValueError, match="batch_size must be a positive multiple of group=4, got 6"):
        EpisodeGroupSampler(eps, 6, 4)


def test_window_dataset_names_each_windows_episode(dataset_path):
    ds = WindowDataset(dataset_path, context=1, horizon=1, frameskip=1)
    items = ds.__getitems__(list(range(len(ds))))
    assert np.array_equal(ds.episode_ids[ds.window_episodes], np.asarray(items["episode_id"]))


def test_sampler_is_deterministic_per_seed_and_epoch():
    a, b = WindowSampler(50, seed=1), WindowSampler(50, seed=1)
    assert list(a) == list(b) and list(a) == list(a)  # same (seed, epoch): same order, every time
    assert list(a) != list(range(50))
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == sorted(first)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(WindowSampler(50, seed=2)) != first
    assert list(WindowSampler(50, shuffle=False)) == list(range(50))
    with pytest.raises(ValueError, match="rank"):
        WindowSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        WindowSampler(10, batch_size=0)


def test_sampler_in_dataloader_with_two_workers(dataset_path):
    before = global_start_method()
    wd = WindowDataset(dataset_path, 2, 1, 1, pad=True)
    refs = reference_padded(dataset_path, 2, 1, 1, pad=True)
    seen = []
    for rank in range(2):
        sampler = WindowSampler(wd, batch_size=8, seed=3, rank=rank, world_size=2)
        sampler.set_epoch(4)
        loader = torch.utils.data.DataLoader(wd, batch_sampler=sampler, collate_fn=collate_windows, num_workers=2,
                                             multiprocessing_context="spawn")
        for indices, batch in zip(list(sampler), loader):
            assert_same(batch, [refs[i] for i in indices])
            seen += indices
    assert sorted(seen) == list(range(len(wd)))
    assert global_start_method() == before


@pytest.mark.parametrize("codec", ["raw", "png"])
def test_threaded_decode_and_chunked_raw_reads_match_reference(tmp_path, monkeypatch, codec):
    import data.windows as W

    path = tmp_path / "ds"
    write_episodes(path, [30, 12, 25], codec=codec, hw=(5, 4))
    refs = reference_windows(path, 2, 1, 3)
    idx = np.random.default_rng(0).permutation(len(refs)).tolist()
    # raw: 7 frames per take (a batch takes several), then the default (one take, or one per thread)
    for take_bytes in (5 * 4 * 3 * 7, W.RAW_TAKE_BYTES):
        monkeypatch.setattr(W, "RAW_TAKE_BYTES", take_bytes)
        for threads in (1, 3):
            wd = WindowDataset(path, 2, 1, 3, decode_threads=threads, mmap=False)
            for _ in range(2):  # the second batch reuses the scratch buffer
                assert_same(wd.__getitems__(idx), [refs[i] for i in idx])
            assert_same(wd.__getitems__(idx[:3]), [refs[i] for i in idx[:3]])  # a smaller batch after a larger one


# -- reused batch buffers: a batch anyone still holds is never written again


def test_reusable_buffers_hand_out_only_unreferenced_memory():
    import pickle

    from data.windows import ReusableBuffers

    pool = ReusableBuffers(keep=2)
    a = pool.get((4, 5))
    a_addr = a.__array_interface__["data"][0]
    b = pool.get((4, 5))
    assert not np.shares_memory(a, b)  # a is still held
    t = torch.from_numpy(a)
    del a
    c = pool.get((4, 5))
    assert not np.shares_memory(c, t.numpy()) and not np.shares_memory(c, b)  # pool full, both in use: a fresh array
    row = t[1:3]  # a view of the tensor keeps the buffer in use
    del t
    d = pool.get((4, 5))
    assert d.__array_interface__["data"][0] != a_addr
    del row, d
    e = pool.get((4, 5))
    assert e.__array_interface__["data"][0] == a_addr  # nothing refers to it any more: reused
    del b, c, e
    f = pool.get((2, 2))  # another shape replaces a free buffer
    assert f.shape == (2, 2) and f.flags.c_contiguous and f.dtype == np.uint8
    clone = pickle.loads(pickle.dumps(pool))
    assert clone.keep == 2 and clone._bufs == []


@pytest.mark.parametrize("kwargs", [{"mmap": False}, {"cache": True}], ids=["read", "cached"])
@pytest.mark.parametrize("codec", ["raw", "png"])
def test_held_batches_are_never_overwritten(tmp_path, codec, kwargs):
    path = tmp_path / "ds"
    write_episodes(path, [30, 12, 25], codec=codec, hw=(5, 4))
    refs = reference_windows(path, 2, 1, 3)
    wd = WindowDataset(path, 2, 1, 3, **kwargs)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, len(refs), 16).tolist() for _ in range(6)]
    held = [wd.__getitems__(b) for b in batches]  # more batches than the pool keeps
    for b, got in zip(batches, held):
        assert_same(got, [refs[i] for i in b])
    pixels = [h["pixels"] for h in held]
    assert all(not np.shares_memory(p.numpy(), q.numpy()) for i, p in enumerate(pixels) for q in pixels[i + 1 :])
    del held, pixels
    for b in batches:  # one batch at a time: buffers are reused, values stay right
        assert_same(wd.__getitems__(b), [refs[i] for i in b])
