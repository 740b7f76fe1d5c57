"""Episode store: codecs, writer modes, round trips, crash safety, validation, collect."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest

import data
from data import DatasetError, EpisodeWriter, SchemaMismatchError, open_dataset, validate_dataset
from data import columns as C
from data.codecs import decode_batch, decode_frame, default_codec, encode_frame

REPO = Path(__file__).resolve().parents[1]


def fake_episode(rng: np.random.Generator, length: int, hw=(8, 8), action_dim=2, state_dim=3, state_dtype=np.float64):
    """Random rows of one episode: T=length rows, action None on the last."""
    pixels = rng.integers(0, 256, (length, *hw, 3), dtype=np.uint8)
    states = rng.normal(size=(length, state_dim)).astype(state_dtype)
    actions = rng.uniform(-1, 1, (length, action_dim)).astype(np.float32)
    actions[-1] = 0
    rewards = rng.normal(size=length).astype(np.float32)
    rewards[0] = 0
    return pixels, states, actions, rewards


def write_episodes(path, lengths, seed=0, mode="append", codec=None, env_id="fake/Env-v0", factors=None, **kw):
    """Write episodes of the given lengths; returns {episode_id: (pixels, states, actions, rewards)}."""
    rng = np.random.default_rng(seed)
    out = {}
    with EpisodeWriter(path, mode=mode, codec=codec, env_id=env_id) as w:
        for i, length in enumerate(lengths):
            ep = fake_episode(rng, length, **kw)
            pixels, states, actions, rewards = ep
            for t in range(length):
                last = t == length - 1
                w.add_step(pixels[t], states[t], None if last else actions[t], rewards[t], terminated=last)
            f = factors if factors is not None else {"door_width": 0.2 + i * 0.01, "wall_rgb": (0.1, 0.2, 0.3), "n": i}
            eid = w.save_episode(seed=seed + i, factors=f, policy="random", split="train" if i % 2 == 0 else "ood")
            out[eid] = ep
    return out


# -- codecs ----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["raw", "png", "jpeg"])
def test_codec_round_trip_keeps_rgb_order(codec):
    frame = np.zeros((32, 48, 3), np.uint8)
    frame[..., 0] = 200  # pure red: a BGR mix-up would turn it blue
    frame[8:16, 8:16] = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    back = decode_frame(encode_frame(frame, codec), codec, frame.shape)
    assert back.dtype == np.uint8 and back.shape == frame.shape
    if codec == "jpeg":
        assert np.abs(back[20:, 20:].astype(int) - frame[20:, 20:]).max() <= 4
        assert back[20:, 20:, 0].mean() > 190 and back[20:, 20:, 2].mean() < 10
    else:
        np.testing.assert_array_equal(back, frame)


def test_decode_batch_threads_match_serial():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    enc = [encode_frame(f, "png") for f in frames]
    np.testing.assert_array_equal(decode_batch(enc, "png", (16, 16, 3), threads=2), frames)
    np.testing.assert_array_equal(decode_batch(enc, "png", (16, 16, 3), threads=1), frames)


def test_default_codec_by_size():
    assert default_codec((64, 64, 3)) == "raw"
    assert default_codec((65, 64, 3)) == "jpeg"
    assert default_codec((224, 224, 3)) == "jpeg"


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["raw", "png", "jpeg"])
def test_round_trip_dtypes_shapes_values(tmp_path, codec):
    path = tmp_path / "ds"
    written = write_episodes(path, [5, 1, 7], codec=codec)
    ds = open_dataset(path)
    assert ds.meta["codec"] == codec and ds.meta["schema_version"] == data.SCHEMA_VERSION
    assert ds.num_steps == 13 and ds.num_episodes == 3
    eps = ds.episodes()
    assert [e[C.EPISODE_ID] for e in eps] == [0, 1, 2]
    assert eps[1][C.FACTORS] == {"door_width": 0.2 + 0.01, "wall_rgb": (0.1, 0.2, 0.3), "n": 1}
    assert eps[2][C.LENGTH] == 7 and eps[2][C.SEED] == 2 and eps[2][C.SPLIT] == "train"
    assert eps[0][C.POLICY] == "random" and eps[0][C.ENV_ID] == "fake/Env-v0"
    for eid, (pixels, states, actions, rewards) in written.items():
        ep = ds.load_episode(eid)
        assert ep["pixels"].dtype == np.uint8 and ep["pixels"].shape == pixels.shape
        assert ep["state"].dtype == np.float64
        np.testing.assert_array_equal(ep["state"], states)
        assert ep["action"].dtype == np.float32
        np.testing.assert_array_equal(ep["action"], actions)
        np.testing.assert_array_equal(ep["reward"], rewards)
        assert ep["terminated"].dtype == bool and ep["terminated"].tolist() == [False] * (len(pixels) - 1) + [True]
        assert not ep["truncated"].any()
        if codec == "jpeg":
            assert ep["pixels"].shape == pixels.shape  # lossy: shape and dtype only
        else:
            np.testing.assert_array_equal(ep["pixels"], pixels)
    # stored column types, straight from Lance
    import lance

    schema = lance.dataset(str(path / C.STEPS_TABLE)).schema
    assert schema.field(C.EPISODE_ID).type == "int64" and schema.field(C.STEP).type == "int32"
    assert str(schema.field(C.STATE).type) == "fixed_size_list<item: double>[3]"
    assert str(schema.field(C.ACTION).type) == "fixed_size_list<item: float>[2]"
    assert validate_dataset(path) == []


def test_float32_state_stays_float32(tmp_path):
    write_episodes(tmp_path / "ds", [3], state_dtype=np.float32)
    assert open_dataset(tmp_path / "ds").load_episode(0)["state"].dtype == np.float32


def test_info_reports_counts(tmp_path):
    write_episodes(tmp_path / "ds", [4, 4, 4])
    info = open_dataset(tmp_path / "ds").info()
    assert info["episodes"] == 3 and info["steps"] == 12 and info["codec"] == "raw"
    assert info["image_shape"] == [8, 8, 3] and info["action_dim"] == 2 and info["state_dim"] == 3
    assert info["env_id"] == "fake/Env-v0" and info["schema_version"] == 1
    assert info["splits"] == {"train": 2, "ood": 1} and info["policies"] == {"random": 3}
    assert info["size_bytes"] > 12 * 8 * 8 * 3 and info["orphan_steps"] == 0
    json.dumps(info)


def test_meta_json_written_at_creation(tmp_path):
    write_episodes(tmp_path / "ds", [2])
    meta = json.loads((tmp_path / "ds" / C.META_FILE).read_text())
    for key in ("schema_version", "format", "codec", "image_shape", "action_dim", "state_dim", "env_id", "created_by"):
        assert key in meta
    assert not list(tmp_path.glob(".*"))  # no temp folders left behind


# -- add_step validation -----------------------------------------------------------------


def test_add_step_rejects_bad_inputs(tmp_path):
    px = np.zeros((8, 8, 3), np.uint8)
    with EpisodeWriter(tmp_path / "ds") as w:
        with pytest.raises(ValueError, match="uint8"):
            w.add_step(px.astype(np.float32), np.zeros(3), np.zeros(2))
        w.add_step(px, np.zeros(3), np.zeros(2))
        with pytest.raises(ValueError, match="image shape"):
            w.add_step(np.zeros((9, 8, 3), np.uint8), np.zeros(3), np.zeros(2))
        with pytest.raises(ValueError, match="state size"):
            w.add_step(px, np.zeros(4), np.zeros(2))
        with pytest.raises(ValueError, match="state dtype"):
            w.add_step(px, np.zeros(3, np.float32), np.zeros(2))
        with pytest.raises(ValueError, match="action size"):
            w.add_step(px, np.zeros(3), np.zeros(3))
        with pytest.raises(ValueError, match="NaN"):
            w.add_step(px, np.array([0.0, np.nan, 0.0]), np.zeros(2))
        with pytest.raises(ValueError, match="NaN"):
            w.add_step(px, np.zeros(3), np.array([np.nan, 0.0]))
        assert w.buffered_steps == 1
        w.add_step(px, np.zeros(3), None, 1.0, terminated=True)
        assert w.save_episode(seed=0, factors={}, policy="p", split=None) == 0


def test_only_last_row_may_lack_an_action(tmp_path):
    px = np.zeros((8, 8, 3), np.uint8)
    with EpisodeWriter(tmp_path / "ds") as w:
        w.add_step(px, np.zeros(3), np.zeros(2))
        w.add_step(px, np.zeros(3), None)
        w.add_step(px, np.zeros(3), None)
        with pytest.raises(ValueError, match="row 1"):
            w.save_episode(seed=0, factors={}, policy="p", split="train")
        w.discard_episode()
        with pytest.raises(ValueError, match="no steps"):
            w.save_episode(seed=0, factors={}, policy="p", split="train")


def test_exception_inside_with_block_commits_nothing(tmp_path):
    path = tmp_path / "ds"
    write_episodes(path, [3])
    with pytest.raises(RuntimeError):
        with EpisodeWriter(path) as w:
            w.add_step(np.zeros((8, 8, 3), np.uint8), np.zeros(3), np.zeros(2))
            raise RuntimeError("boom")
    assert open_dataset(path).num_episodes == 1 and validate_dataset(path) == []


# -- modes -------------------------------------------------------------------------------


def test_append_continues_episode_ids(tmp_path):
    path = tmp_path / "ds"
    first = write_episodes(path, [3, 4])
    second = write_episodes(path, [5], seed=7)
    assert list(first) == [0, 1] and list(second) == [2]
    ds = open_dataset(path)
    assert [e[C.EPISODE_ID] for e in ds.episodes()] == [0, 1, 2]
    np.testing.assert_array_equal(ds.load_episode(2)["pixels"], second[2][0])
    np.testing.assert_array_equal(ds.load_episode(0)["pixels"], first[0][0])
    with EpisodeWriter(path) as w:
        assert w.num_episodes == 3


def test_mode_error_refuses_existing(tmp_path):
    path = tmp_path / "ds"
    write_episodes(path, [2])
    with pytest.raises(DatasetError, match="already exists"):
        EpisodeWriter(path, mode="error")
    write_episodes(tmp_path / "new", [2], mode="error")  # a new path is fine
    with pytest.raises(ValueError, match="unknown mode"):
        EpisodeWriter(path, mode="replace")


def test_mode_overwrite_replaces(tmp_path):
    path = tmp_path / "ds"
    write_episodes(path, [2, 2, 2])
    new = write_episodes(path, [4], mode="overwrite", seed=3, hw=(16, 16), action_dim=5)
    ds = open_dataset(path)
    assert ds.num_episodes == 1 and ds.image_shape == (16, 16, 3) and ds.action_dim == 5
    np.testing.assert_array_equal(ds.load_episode(0)["pixels"], new[0][0])
    assert validate_dataset(path) == [] and not list(tmp_path.glob(".*"))


def test_overwrite_without_episodes_keeps_old(tmp_path):
    path = tmp_path / "ds"
    write_episodes(path, [2, 2])
    with EpisodeWriter(path, mode="overwrite"):
        pass
    assert open_dataset(path).num_episodes == 2


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"codec": "png"}, "codec 'png'.*'raw'"),
        ({"env_id": "other/Env-v0"}, "env_id 'other/Env-v0'.*'fake/Env-v0'"),
        ({"hw": (16, 16)}, r"image shape \(16, 16, 3\).*\(8, 8, 3\)"),
        ({"action_dim": 4}, "action size 4.*2"),
        ({"state_dim": 5}, "state size 5.*3"),
        ({"state_dtype": np.float32}, "state dtype float32.*float64"),
        ({"factors": {"other": 1.0}}, "factor names"),
    ],
)
def test_mismatched_append_refused(tmp_path, kwargs, pattern):
    path = tmp_path / "ds"
    write_episodes(path, [3])
    with pytest.raises(SchemaMismatchError, match=pattern):
        write_episodes(path, [3], **kwargs)
    assert open_dataset(path).num_episodes == 1 and validate_dataset(path) == []


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "ds"
    write_episodes(path, [2])
    with EpisodeWriter(path):
        with pytest.raises(DatasetError, match="another EpisodeWriter"):
            EpisodeWriter(path)


# -- not a dataset -------------------------------------------------------------------------


def test_open_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as e:
        open_dataset(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)
    assert isinstance(e.value, ValueError)


def test_open_foreign_directory_and_file(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"...")
    with pytest.raises(DatasetError, match="not a dataset.*meta.json"):
        open_dataset(foreign)
    with pytest.raises(DatasetError, match="not a dataset"):
        EpisodeWriter(foreign)  # never writes into a foreign folder, whatever the mode
    with pytest.raises(DatasetError, match="not a dataset"):
        EpisodeWriter(foreign, mode="overwrite")
    assert sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a dataset"):
        open_dataset(tmp_path / "file")
    assert validate_dataset(foreign) and "not a dataset" in validate_dataset(foreign)[0]


def test_open_bad_meta_and_missing_tables(tmp_path):
    path = tmp_path / "ds"
    write_episodes(path, [2])
    meta_path = path / C.META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(DatasetError, match="schema_version 99"):
        open_dataset(path)
    meta_path.write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable"):
        open_dataset(path)
    meta_path.write_text(json.dumps(meta))
    import shutil

    shutil.rmtree(path / C.EPISODES_TABLE)
    with pytest.raises(DatasetError, match="missing table episodes.lance"):
        open_dataset(path)


def test_empty_directory_becomes_a_dataset(tmp_path):
    path = tmp_path / "ds"
    path.mkdir()
    write_episodes(path, [2])
    assert open_dataset(path).num_episodes == 1


# -- orphans and crashes -------------------------------------------------------------------


def _append_orphan_rows(path: Path, episode_id: int, length: int) -> None:
    """What a crash between the steps commit and the episodes commit leaves behind."""
    import lance
    import pyarrow as pa

    from data.schema import meta_steps_schema

    ds = open_dataset(path)
    schema = meta_steps_schema(ds.meta)
    rng = np.random.default_rng(99)
    h, w, c = ds.image_shape
    arrays = [
        pa.array(np.full(length, episode_id, np.int64)),
        pa.array(np.arange(length, dtype=np.int32)),
        pa.FixedSizeListArray.from_arrays(pa.array(rng.integers(0, 256, length * h * w * c, dtype=np.uint8)), h * w * c),
        pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(length * ds.action_dim, np.float32)), ds.action_dim),
        pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(length * ds.state_dim)), ds.state_dim),
        pa.array(np.zeros(length, np.float32)),
        pa.array(np.zeros(length, bool)),
        pa.array(np.zeros(length, bool)),
    ]
    lance.write_dataset(pa.Table.from_arrays(arrays, schema=schema), str(path / C.STEPS_TABLE), mode="append")


def test_orphan_steps_invisible_and_cleaned_on_reopen(tmp_path):
    path = tmp_path / "ds"
    written = write_episodes(path, [3, 4])
    _append_orphan_rows(path, episode_id=2, length=6)
    ds = open_dataset(path)
    assert ds.num_episodes == 2 and ds.num_steps == 7 and ds.info()["orphan_steps"] == 6
    assert validate_dataset(path) == []
    with pytest.raises(KeyError):
        ds.load_episode(2)
    from data import WindowDataset

    assert set(WindowDataset(path, 1, 1, 1).episode_ids.tolist()) == {0, 1}
    # a new writer deletes the orphans and reuses id 2
    again = write_episodes(path, [5], seed=5)
    assert list(again) == [2]
    ds = open_dataset(path)
    assert ds.info()["orphan_steps"] == 0 and ds.num_steps == 12
    np.testing.assert_array_equal(ds.load_episode(2)["pixels"], again[2][0])
    np.testing.assert_array_equal(ds.load_episode(1)["pixels"], written[1][0])
    assert validate_dataset(path) == []


def test_validate_reports_missing_rows(tmp_path):
    path = tmp_path / "ds"
    write_episodes(path, [3, 4])
    import lance

    lance.dataset(str(path / C.STEPS_TABLE)).delete(f"{C.EPISODE_ID} = 1 AND {C.STEP} = 2")
    problems = validate_dataset(path)
    assert any("episode 1: 3 step rows, its length says 4" in p for p in problems)
    assert any("episode 1: step numbers are not contiguous" in p for p in problems)
    with pytest.raises(DatasetError, match="episodes are not contiguous: episode 1: 3 step rows"):
        open_dataset(path).load_episode(0)  # readers refuse it too, saying what is wrong


def test_open_refuses_a_steps_table_that_does_not_match_meta(tmp_path):
    path = tmp_path / "ds"
    write_episodes(path, [3])
    meta = json.loads((path / C.META_FILE).read_text())
    meta["action_dim"] = 5
    (path / C.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="does not match meta.json: column 'action' has type"):
        open_dataset(path)
    assert any("column 'action'" in p for p in validate_dataset(path))


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {repo!r})
    from data import EpisodeWriter
    rng = np.random.default_rng(0)
    with EpisodeWriter({path!r}, env_id="fake/Env-v0", commit_every={commit_every}) as w:
        for i in range(100000):
            for t in range(12):
                last = t == 11
                w.add_step(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), rng.normal(size=3),
                           None if last else rng.normal(size=2), 1.0, terminated=last)
            w.save_episode(seed=i, factors={{"a": float(i)}}, policy="random", split="train")
            print(i, flush=True)
    """
)


@pytest.mark.parametrize("delay", [0.0, 0.007, 0.05])
@pytest.mark.parametrize("commit_every", [1, 3])
def test_sigkill_mid_write_leaves_a_sound_dataset(tmp_path, delay, commit_every):
    path = tmp_path / "ds"
    script = CRASH_SCRIPT.format(repo=str(REPO), path=str(path), commit_every=commit_every)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait until a few episodes are committed
            if int(line) >= 5:
                break
        time.sleep(delay)  # let it get somewhere inside a later commit
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert validate_dataset(path) == []
    ds = open_dataset(path)
    n = ds.num_episodes
    assert n >= 6 - commit_every + 1 and n % commit_every == 0  # whole batches only
    assert [e[C.EPISODE_ID] for e in ds.episodes()] == list(range(n))
    assert all(e[C.LENGTH] == 12 for e in ds.episodes())
    again = write_episodes(path, [3], factors={"a": -1.0})
    assert list(again) == [n]
    ds = open_dataset(path)
    assert ds.num_episodes == n + 1 and ds.info()["orphan_steps"] == 0
    assert validate_dataset(path) == []


def test_many_episodes_are_compacted(tmp_path, monkeypatch):
    import data.writer as writer_mod

    monkeypatch.setattr(writer_mod, "COMPACT_EVERY", 4)
    path = tmp_path / "ds"
    written = write_episodes(path, [2] * 10)
    ds = open_dataset(path)
    assert ds.info()["fragments"] == 1
    for eid, ep in written.items():
        np.testing.assert_array_equal(ds.load_episode(eid)["pixels"], ep[0])


# -- collect ------------------------------------------------------------------------------


def _fake_envs_module():
    """A stand-in for the `envs` package: a 1-D walk to a goal with a time limit."""
    import gymnasium as gym

    class Walk(gym.Env):
        metadata = {"render_modes": []}

        def __init__(self, resolution=8):
            self.resolution = resolution
            self.observation_space = gym.spaces.Box(0, 255, (resolution, resolution, 3), np.uint8)
            self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

        def _obs(self):
            img = np.zeros((self.resolution, self.resolution, 3), np.uint8)
            img[:, : int(np.clip(self.x, 0, 1) * self.resolution)] = 255
            return img

        def _info(self):
            return {"state": np.array([self.x, self.goal]), "factors": {"speed": self.speed, "rgb": (1.0, 0.0, 0.0)},
                    "success": abs(self.x - self.goal) < 0.05}

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.x, self.goal = 0.0, float(self.np_random.uniform(0.3, 1.0))
            self.speed = 0.2 if (options or {}).get("split") != "ood" else 0.5
            return self._obs(), self._info()

        def step(self, action):
            self.x += self.speed * float(np.clip(action, -1, 1)[0])
            info = self._info()
            return self._obs(), 1.0 if info["success"] else 0.0, bool(info["success"]), False, info

    class Policy:
        def __init__(self, env):
            self.env = env

        def reset(self, seed):
            self.rng = np.random.default_rng(seed)

        def __call__(self, obs, info):
            s = info["state"]
            return np.array([np.clip((s[1] - s[0]) / 0.2, -1, 1) * 2.0, self.rng.normal()], np.float32)

    mod = types.ModuleType("envs")
    mod.make = lambda env_id, **kw: gym.wrappers.TimeLimit(Walk(**kw), max_episode_steps=15)
    mod.env_class = lambda env_id: Walk
    mod.make_policy = lambda name, env, noise=None: Policy(env)
    return mod


def test_collect_writes_episodes_with_row_convention(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "envs", _fake_envs_module())
    stats = data.collect("fake/Walk-v0", episodes=4, out=tmp_path / "ds", policy="expert", split="ood", seed=10)
    assert stats["episodes"] == 4 and stats["steps"] > 4 and stats["steps_per_s"] > 0
    ds = open_dataset(tmp_path / "ds")
    eps = ds.episodes()
    assert [e[C.SEED] for e in eps] == [10, 11, 12, 13]
    assert all(e[C.SPLIT] == "ood" and e[C.POLICY] == "expert" and e[C.ENV_ID] == "fake/Walk-v0" for e in eps)
    assert eps[0][C.FACTORS] == {"speed": 0.5, "rgb": (1.0, 0.0, 0.0)}
    assert sum(e[C.LENGTH] for e in eps) == stats["steps"] == ds.num_steps
    for e in eps:
        ep = ds.load_episode(e[C.EPISODE_ID])
        assert ep["reward"][0] == 0 and not ep["action"][-1].any()
        assert (ep["terminated"] | ep["truncated"])[-1] and not (ep["terminated"] | ep["truncated"])[:-1].any()
        assert np.abs(ep["action"]).max() <= 1.0  # recorded actions are the clipped ones
        assert e[C.LENGTH] <= 16
        # state row t+1 follows from row t's action: x' = x + speed * a
        np.testing.assert_allclose(ep["state"][1:, 0], ep["state"][:-1, 0] + 0.5 * ep["action"][:-1, 0], atol=1e-6)
    # same seeds, same data
    data.collect("fake/Walk-v0", episodes=4, out=tmp_path / "ds2", split="ood", seed=10)
    np.testing.assert_array_equal(open_dataset(tmp_path / "ds2").load_episode(3)["state"], ds.load_episode(3)["state"])


@pytest.mark.parametrize("workers", [1, 2])
def test_collect_with_real_envs(tmp_path, workers):
    stats = data.collect("wm/TwoRoom-v0", episodes=3, out=tmp_path / "ds", policy="random", workers=workers, resolution=16)
    assert stats["episodes"] == 3 and stats["workers"] == workers
    assert validate_dataset(tmp_path / "ds") == []
    ds = open_dataset(tmp_path / "ds")
    assert ds.num_steps == stats["steps"]
    assert ds.meta["fps"] == 10.0 and ds.meta["frameskip"] == 1 and ds.meta["created_by"].startswith("worldmodel")


def test_parallel_collection_writes_the_same_episodes_in_seed_order(tmp_path):
    import multiprocessing as mp

    method_before = mp.get_start_method(allow_none=True)
    kw = dict(episodes=5, policy="expert", split="train", seed=7, resolution=16, codec="png")
    data.collect("wm/TwoRoom-v0", out=tmp_path / "one", **kw)
    data.collect("wm/TwoRoom-v0", out=tmp_path / "two", workers=2, start_method="spawn", **kw)
    assert mp.get_start_method(allow_none=True) == method_before  # never changed process-wide
    a, b = open_dataset(tmp_path / "one"), open_dataset(tmp_path / "two")
    assert a.episodes() == b.episodes()
    assert [e[C.SEED] for e in b.episodes()] == [7, 8, 9, 10, 11]
    for eid in range(5):
        x, y = a.load_episode(eid), b.load_episode(eid)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_collect_worker_errors_are_reported(tmp_path):
    with pytest.raises(ValueError, match="workers must be"):
        data.collect("wm/TwoRoom-v0", episodes=2, out=tmp_path / "x", workers=0)
    with pytest.raises(ValueError, match="start_method='nope'"):
        data.collect("wm/TwoRoom-v0", episodes=2, out=tmp_path / "x", workers=2, start_method="nope")
    with pytest.raises(ValueError, match="severity=2 needs an OOD split"):
        data.collect("wm/TwoRoom-v0", episodes=2, out=tmp_path / "x", severity=2)
    assert not (tmp_path / "x").exists()


def test_single_row_first_episode_needs_action_dim(tmp_path):
    px = np.zeros((8, 8, 3), np.uint8)
    with EpisodeWriter(tmp_path / "a") as w:
        w.add_step(px, np.zeros(3), None, terminated=True)
        with pytest.raises(ValueError, match="action_dim"):
            w.save_episode(seed=0, factors={}, policy="p", split="train")
        w.discard_episode()
    with EpisodeWriter(tmp_path / "b", action_dim=4) as w:
        w.add_step(px, np.zeros(3), None, terminated=True)
        w.save_episode(seed=0, factors={}, policy="p", split="train")
    assert open_dataset(tmp_path / "b").episodes()[0][C.FACTORS] == {}
    ep = open_dataset(tmp_path / "b").load_episode(0)
    assert ep["action"].shape == (1, 4) and ep["pixels"].shape == (1, 8, 8, 3)
    with pytest.raises(SchemaMismatchError, match="action size 2.*4"):
        EpisodeWriter(tmp_path / "b", action_dim=2)


def test_collect_max_steps_truncates_and_passes_env_kwargs(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "envs", _fake_envs_module())
    stats = data.collect("fake/Walk-v0", 2, tmp_path / "ds", policy="random", max_steps=3, env_kwargs={"resolution": 6})
    ds = open_dataset(tmp_path / "ds")
    assert ds.image_shape == (6, 6, 3) and stats["steps"] == ds.num_steps
    for e in ds.episodes():
        ep = ds.load_episode(e[C.EPISODE_ID])
        assert len(ep["pixels"]) <= 4
        if len(ep["pixels"]) == 4 and not ep["terminated"][-1]:
            assert ep["truncated"][-1]
    data.collect("fake/Walk-v0", 1, tmp_path / "ds2", resolution=5)  # plain keywords reach the env too
    assert open_dataset(tmp_path / "ds2").image_shape == (5, 5, 3)


@pytest.mark.parametrize("codec", ["raw", "png", "jpeg"])
def test_native_dtypes_state_shapes_and_extra_observations_round_trip(tmp_path, codec):
    rng = np.random.default_rng(0)
    rows = []
    for t in range(5):
        rows.append(dict(
            pixels=rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
            state=rng.normal(size=(2, 3)).astype(np.float32),  # a 2-D state keeps its shape
            action=rng.normal(size=4) if t < 4 else None,  # float64 actions stay float64
            extras={"wrist": rng.integers(0, 256, (6, 6, 3), dtype=np.uint8),  # an extra camera
                    "contacts": rng.integers(0, 9, (3,), dtype=np.int16)},
        ))
    with EpisodeWriter(tmp_path / "ds", codec=codec) as w:
        for t, r in enumerate(rows):
            w.add_step(r["pixels"], r["state"], r["action"], terminated=t == 4, extras=r["extras"])
        w.save_episode(seed=1, factors={"k": 1.5}, policy="p", split="train")
    assert validate_dataset(tmp_path / "ds") == []
    ds = open_dataset(tmp_path / "ds")
    assert ds.meta["action_dtype"] == "float64" and ds.meta["state_shape"] == [2, 3]
    assert ds.extras == {"wrist": {"dtype": "uint8", "shape": [6, 6, 3]}, "contacts": {"dtype": "int16", "shape": [3]}}
    ep = ds.load_episode(0)
    assert ep["action"].dtype == np.float64 and ep["state"].dtype == np.float32 and ep["state"].shape == (5, 2, 3)
    np.testing.assert_array_equal(ep["action"][:4], np.stack([r["action"] for r in rows[:4]]))
    np.testing.assert_array_equal(ep["state"], np.stack([r["state"] for r in rows]))
    assert ep["contacts"].dtype == np.int16
    np.testing.assert_array_equal(ep["contacts"], np.stack([r["extras"]["contacts"] for r in rows]))
    wrist = np.stack([r["extras"]["wrist"] for r in rows])
    if codec == "jpeg":  # lossy, but exactly what the codec makes of each frame
        from data.codecs import decode_frame, encode_frame

        np.testing.assert_array_equal(ep["wrist"], np.stack([decode_frame(encode_frame(f, "jpeg"), "jpeg", f.shape) for f in wrist]))
    else:
        np.testing.assert_array_equal(ep["wrist"], wrist)
    assert set(ds.load_episode(0, columns=["contacts"])) == {"contacts"}
    # appending rows whose extras differ is refused, naming both sides; nothing is written
    with EpisodeWriter(tmp_path / "ds") as w:
        with pytest.raises(SchemaMismatchError, match="extra observations"):
            w.add_step(rows[0]["pixels"], rows[0]["state"], rows[0]["action"], extras={"wrist": rows[0]["extras"]["wrist"]})
        with pytest.raises(SchemaMismatchError, match="extra 'contacts'"):
            w.add_step(rows[0]["pixels"], rows[0]["state"], rows[0]["action"],
                       extras={**rows[0]["extras"], "contacts": np.zeros(3, np.int64)})
    assert open_dataset(tmp_path / "ds").num_episodes == 1 and validate_dataset(tmp_path / "ds") == []


def test_int_actions_and_bad_extras(tmp_path):
    px = np.zeros((4, 4, 3), np.uint8)
    with EpisodeWriter(tmp_path / "ds") as w:
        w.add_step(px, np.zeros(2), np.array([3], np.int64))
        w.add_step(px, np.zeros(2), None, terminated=True)
        w.save_episode(seed=0)
    ep = open_dataset(tmp_path / "ds").load_episode(0)
    assert ep["action"].dtype == np.int64 and ep["action"][0, 0] == 3
    with EpisodeWriter(tmp_path / "ds") as w, pytest.raises(SchemaMismatchError, match="action dtype float32 .* int64"):
        w.add_step(px, np.zeros(2), np.array([0.5], np.float32))  # floats are not silently truncated to ints
    with EpisodeWriter(tmp_path / "other") as w:
        with pytest.raises(ValueError, match="expected an identifier"):
            w.add_step(px, np.zeros(2), np.zeros(1), extras={"bad name": np.zeros(1)})
    with EpisodeWriter(tmp_path / "third") as w:
        with pytest.raises(ValueError, match="dtype complex128"):
            w.add_step(px, np.zeros(2), np.zeros(1), extras={"z": np.zeros(1, complex)})


def test_save_episode_keeps_a_given_id_and_refuses_a_used_one(tmp_path):
    px = np.zeros((4, 4, 3), np.uint8)
    with EpisodeWriter(tmp_path / "ds", action_dim=1) as w:
        for eid in (5, 9):
            w.add_step(px, np.zeros(2), None, terminated=True)
            assert w.save_episode(episode_id=eid, seed=eid) == eid
        w.add_step(px, np.zeros(2), None, terminated=True)
        with pytest.raises(ValueError, match="episode_id=9 must be an integer >= 10"):
            w.save_episode(episode_id=9)
        assert w.save_episode() == 10
    assert [e[C.EPISODE_ID] for e in open_dataset(tmp_path / "ds").episodes()] == [5, 9, 10]


def test_commit_every_batches_whole_episodes(tmp_path):
    px = np.zeros((4, 4, 3), np.uint8)
    path = tmp_path / "ds"
    # the step in flight at close is discarded, with a warning that says so
    with pytest.warns(UserWarning, match="discarding 1 unsaved steps"), \
            EpisodeWriter(path, commit_every=3, action_dim=2) as w:
        for e in range(7):
            w.add_step(px, np.zeros(2), np.zeros(2))
            w.add_step(px, np.ones(2), None, terminated=True)
            w.save_episode(seed=e)
            visible = open_dataset(path).num_episodes if (path / C.META_FILE).exists() else 0
            assert visible == 3 * ((e + 1) // 3)  # only whole batches are committed
            assert w.pending_episodes == (e + 1) % 3
        w.add_step(px, np.zeros(2), np.zeros(2))  # in flight at close: discarded
    ds = open_dataset(path)
    assert ds.num_episodes == 7 and validate_dataset(path) == []  # close committed the pending one
    assert [e[C.SEED] for e in ds.episodes()] == list(range(7))
    with pytest.raises(ValueError, match="commit_every=0"):
        EpisodeWriter(tmp_path / "x", commit_every=0)


def test_collect_with_batched_commits_matches_per_episode_commits(tmp_path):
    kw = dict(episodes=5, seed=2, resolution=16, policy="random", max_steps=7)
    data.collect("wm/TwoRoom-v0", out=tmp_path / "a", **kw)
    data.collect("wm/TwoRoom-v0", out=tmp_path / "b", commit_every=2, **kw)
    a, b = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "b")
    assert a.episodes() == b.episodes()
    for eid in range(5):
        for key, value in a.load_episode(eid).items():
            np.testing.assert_array_equal(value, b.load_episode(eid)[key])


def test_extra_cameras_may_arrive_encoded(tmp_path):
    from data.codecs import EncodedFrame, decode_frame

    rng = np.random.default_rng(1)
    cam = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    enc = EncodedFrame.encode(cam, "jpeg")
    with EpisodeWriter(tmp_path / "ds", codec="jpeg", action_dim=1) as w:
        w.add_step(np.zeros((4, 4, 3), np.uint8), np.zeros(2), None, terminated=True, extras={"side": enc})
        w.save_episode()
        with pytest.raises(SchemaMismatchError, match="codec"):
            w.add_step(np.zeros((4, 4, 3), np.uint8), np.zeros(2), None, extras={"side": EncodedFrame.encode(cam, "png")})
    ep = open_dataset(tmp_path / "ds").load_episode(0)
    np.testing.assert_array_equal(ep["side"][0], decode_frame(enc.data, "jpeg", cam.shape))  # the same bytes, no re-encode


# -- bad input through the command line ------------------------------------------------------


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    from worldmodel.cli import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("argv, message", [
    (["--env", "CartPole-v1"], "unknown environment id 'CartPole-v1'; registered ids: ['wm/Cube-v0'"),
    (["--resolution", "100000"], "--resolution=100000: expected an integer in [8, 1024]"),
    (["--seed", "-1"], "seed=-1: expected an integer in [0, 9223372036854775806]"),
    (["--seed", "99999999999999999999"], "seed=99999999999999999999: expected an integer in [0, 9223372036854775806]"),
])
def test_collect_rejects_bad_values_naming_them(tmp_path, capsys, argv, message):
    base = {"--env": "wm/TwoRoom-v0", "--episodes": "2", "--out": str(tmp_path / "ds"), "--resolution": "16"}
    base.update(dict(zip(argv[::2], argv[1::2])))
    rc, out, err = _main(capsys, "collect", *[x for kv in base.items() for x in kv])
    assert rc == 2 and err.startswith("wm collect: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "ds").exists()


def test_collect_refuses_an_out_under_a_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    for out in (tmp_path / "notes.txt" / "ds.lance", tmp_path / "notes.txt"):
        rc, _, err = _main(capsys, "collect", "--env", "wm/TwoRoom-v0", "--episodes", "1", "--out", str(out), "--resolution", "16")
        assert rc == 2 and err.count("\n") == 1 and "notes.txt" in err and ("is a file, not a folder" in err or "not a directory" in err), err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_append_continues_after_the_highest_seed_unless_seed_is_given(tmp_path, capsys):
    path = str(tmp_path / "ds")
    args = ("collect", "--env", "wm/TwoRoom-v0", "--episodes", "2", "--out", path, "--resolution", "16")
    assert _main(capsys, *args)[0] == 0
    rc, _, err = _main(capsys, *args)
    assert rc == 0 and "appending to" in err and "seeds 2.." in err
    assert [e[C.SEED] for e in open_dataset(path).episodes()] == [0, 1, 2, 3]
    rc, _, err = _main(capsys, *args, "--seed", "1")  # an explicit seed is the user's choice, repeats included
    assert rc == 0 and "appending" not in err
    assert [e[C.SEED] for e in open_dataset(path).episodes()] == [0, 1, 2, 3, 1, 2]


def test_a_truncated_data_file_is_named_by_info_validate_and_train(tmp_path, capsys):
    path = tmp_path / "ds"
    write_episodes(path, [3, 4], hw=(16, 16))
    files = sorted((path / C.STEPS_TABLE / "data").glob("*.lance"))
    with open(files[0], "r+b") as f:
        f.truncate(files[0].stat().st_size // 2)
    rc, out, err = _main(capsys, "data", "validate", str(path))
    assert rc == 1 and "Traceback" not in err
    assert any(line.startswith("INVALID: steps.lance: data file data/") and "truncated" in line for line in err.splitlines()), err
    for argv in (["data", "info", str(path)], ["train", "--data", str(path), "--out", str(tmp_path / "ck"), "--steps", "1"]):
        rc, out, err = _main(capsys, *argv)
        assert rc == 2 and f"{path}: cannot read the dataset: steps.lance: data file data/" in err and "External error" not in err, err


def test_an_overwrite_killed_between_its_renames_is_finished_by_the_next_writer(tmp_path):
    """`mode="overwrite"` swaps PATH -> .PATH.old-PID, then .PATH.creating-PID -> PATH; a kill
    between the two leaves no PATH: the next writer completes the swap instead of deleting both."""
    path = tmp_path / "ds"
    write_episodes(path, [3, 4])  # the old dataset
    new = tmp_path / "new"
    replacement = write_episodes(new, [5], seed=9)  # what the overwrite had finished building
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    path.rename(tmp_path / f".ds.old-{pid}")
    new.rename(tmp_path / f".ds.creating-{pid}")
    with EpisodeWriter(path) as w:
        assert w.num_episodes == 1
    ds = open_dataset(path)
    np.testing.assert_array_equal(ds.load_episode(0)["pixels"], replacement[0][0])
    assert validate_dataset(path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
