"""Converters (`data/convert/`, ``wm data convert``): exact round trips where both
formats are lossless (native action dtypes, state shapes, extra observations and cameras
included), approximate frames through MP4, foreign layouts, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import data
from data import EpisodeWriter, open_dataset
from data.convert import convert, detect_format, parse_ids

h5py = pytest.importorskip("h5py")


def assert_same_episodes(a: str | Path, b: str | Path, frames: bool = True) -> None:
    """Same episode rows (ids, seeds, factors, ...) and bit-identical arrays with the same dtypes."""
    A, B = open_dataset(a), open_dataset(b)
    assert A.episodes() == B.episodes()
    keys = ("codec", "fps", "env_id", "state_dtype", "state_shape", "action_dtype", "extras")
    assert {k: A.meta[k] for k in keys} == {k: B.meta[k] for k in keys}
    for ep in A.episodes():
        x, y = A.load_episode(ep["episode_id"]), B.load_episode(ep["episode_id"])
        for key in x:
            if key == "pixels" and not frames:
                continue
            assert x[key].dtype == y[key].dtype, key
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.fixture(scope="module")
def png_ds(tmp_path_factory) -> Path:
    """3 collected TwoRoom episodes, PNG frames, float64 states, vector factors."""
    path = tmp_path_factory.mktemp("conv") / "tworoom.lance"
    data.collect("wm/TwoRoom-v0", 3, path, codec="png", resolution=16, max_steps=8)
    return path


@pytest.fixture(scope="module")
def raw_ds(tmp_path_factory) -> Path:
    """Hand-written raw dataset: float32 states, int/str/bool factors, a seed of None, a truncated end."""
    path = tmp_path_factory.mktemp("conv") / "raw.lance"
    rng = np.random.default_rng(0)
    with EpisodeWriter(path, codec="raw", env_id="wm/Test-v0", fps=5.0) as w:
        for e, n in enumerate((4, 6)):
            for t in range(n):
                last = t == n - 1
                w.add_step(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8), rng.normal(size=3).astype(np.float32),
                           None if last else rng.normal(size=2).astype(np.float32), reward=float(t), truncated=last and e == 1)
            w.save_episode(seed=None if e else 7, factors={"size": 3 + e, "name": "box", "on": bool(e), "rgb": (0.1, 0.2, 0.3)},
                           policy="random", split="ood" if e else "train")
    return path


def _rich_ds(path: Path, action_dtype: str, codec: str) -> Path:
    """Native dtypes the store keeps: `action_dtype` actions, a (2, 3) float32 state, an
    extra camera `wrist` (uint8 (6, 4, 3)) and an extra int16 vector `contacts` (4,)."""
    rng = np.random.default_rng(5)
    with EpisodeWriter(path, codec=codec, env_id="wm/Rich-v0", fps=4.0) as w:
        for e, n in enumerate((3, 5)):
            for t in range(n):
                if np.dtype(action_dtype).kind == "i":
                    action = rng.integers(-2**40, 2**40, 2).astype(action_dtype)  # beyond float32/float64 precision
                else:
                    action = rng.normal(size=2).astype(action_dtype) * 1e-3 + 1.0  # not representable in float32
                extras = {"wrist": rng.integers(0, 256, (6, 4, 3), dtype=np.uint8),
                          "contacts": rng.integers(-30000, 30000, 4).astype(np.int16)}
                w.add_step(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8), rng.normal(size=(2, 3)).astype(np.float32),
                           None if t == n - 1 else action, reward=float(t), terminated=t == n - 1, extras=extras)
            w.save_episode(seed=e, factors={"size": e}, policy="random")
    ds = open_dataset(path)
    assert ds.meta["action_dtype"] == action_dtype and ds.state_shape == (2, 3) and set(ds.extras) == {"wrist", "contacts"}
    return path


@pytest.mark.parametrize("action_dtype,codec", [("float64", "png"), ("int64", "raw")])
def test_native_dtypes_shapes_and_extras_round_trip_exactly(action_dtype: str, codec: str, tmp_path: Path) -> None:
    src = _rich_ds(tmp_path / "rich.lance", action_dtype, codec)
    assert convert(src, tmp_path / "x.h5", "hdf5")["lossy"] == []
    with h5py.File(tmp_path / "x.h5", "r") as f:
        g = f["episode_000001"]
        assert g["action"].dtype == np.dtype(action_dtype) and g["state"].shape == (5, 2, 3)
        assert g["wrist"].shape == (5, 6, 4, 3) and g["contacts"].dtype == np.int16
    assert convert(tmp_path / "x.h5", tmp_path / "from_h5.lance", "lance")["lossy"] == []
    assert_same_episodes(src, tmp_path / "from_h5.lance")

    assert convert(src, tmp_path / "lr", "lerobot", codec="png")["lossy"] == []
    features = json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())["features"]
    assert features["action"]["dtype"] == action_dtype and features["observation.state"]["shape"] == [2, 3]
    assert features["observation.wrist"]["dtype"] == "image" and features["observation.contacts"]["dtype"] == "int16"
    assert convert(tmp_path / "lr", tmp_path / "from_lr.lance", "lance")["lossy"] == []
    assert_same_episodes(src, tmp_path / "from_lr.lance")


def test_extras_through_mp4_folder(tmp_path: Path) -> None:
    """MP4 folder: the extra camera as its own MP4 (lossy, reported), everything else exact."""
    src = _rich_ds(tmp_path / "rich.lance", "float64", "raw")
    r = convert(src, tmp_path / "vid", "mp4")
    assert "extra cameras ['wrist'] encoded as MP4 video (lossy)" in r["lossy"]
    assert (tmp_path / "vid" / "episode_000000.wrist.mp4").is_file()
    back = convert(tmp_path / "vid", tmp_path / "back.lance", "lance")
    assert "extra cameras ['wrist'] decoded from MP4 video (lossy)" in back["lossy"]
    A, B = open_dataset(src), open_dataset(tmp_path / "back.lance")
    assert A.meta["extras"] == B.meta["extras"] and A.meta["action_dtype"] == B.meta["action_dtype"]
    for e in A.episodes():
        x, y = A.load_episode(e["episode_id"]), B.load_episode(e["episode_id"])
        for key in ("action", "state", "contacts", "reward", "terminated"):
            assert x[key].dtype == y[key].dtype, key
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
        assert y["wrist"].shape == x["wrist"].shape


@pytest.mark.parametrize("which", ["png_ds", "raw_ds"])
def test_lance_hdf5_lance_is_exact(which: str, request, tmp_path: Path) -> None:
    src = request.getfixturevalue(which)
    r = convert(src, tmp_path / "x.h5", "hdf5")
    assert r["lossy"] == [] and r["episodes"] == open_dataset(src).num_episodes
    with h5py.File(tmp_path / "x.h5", "r") as f:
        g = f["episode_000000"]
        assert g["pixels"].dtype == np.uint8 and g["pixels"].ndim == 4 and g["action"].dtype == np.float32
        assert g.attrs["episode_id"] == 0 and isinstance(json.loads(g.attrs["factors"]), dict)
    back = convert(tmp_path / "x.h5", tmp_path / "back.lance", "lance")
    assert back["lossy"] == [] and back["src_format"] == "hdf5"
    assert_same_episodes(src, tmp_path / "back.lance")


@pytest.mark.parametrize("which", ["png_ds", "raw_ds"])
def test_lance_lerobot_png_lance_is_exact(which: str, request, tmp_path: Path) -> None:
    src = request.getfixturevalue(which)
    dst = tmp_path / "lerobot"
    assert convert(src, dst, "lerobot", codec="png")["lossy"] == []
    info = json.loads((dst / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["features"]["observation.image"]["dtype"] == "image"
    assert info["total_frames"] == open_dataset(src).num_steps
    assert not (dst / "videos").exists()
    assert detect_format(dst) == "lerobot"
    convert(dst, tmp_path / "back.lance", "lance")
    assert_same_episodes(src, tmp_path / "back.lance")


def test_episode_subset_keeps_ids(png_ds: Path, tmp_path: Path) -> None:
    convert(png_ds, tmp_path / "sub", "lerobot", codec="png", episodes=[1, 2])
    convert(tmp_path / "sub", tmp_path / "back.lance", "lance")
    assert [e["episode_id"] for e in open_dataset(tmp_path / "back.lance").episodes()] == [1, 2]
    with pytest.raises(ValueError, match=r"episodes \[9\] are not in"):
        convert(png_ds, tmp_path / "y.h5", "hdf5", episodes=[0, 9])
    assert parse_ids("0,2,5-7") == [0, 2, 5, 6, 7]
    with pytest.raises(ValueError, match="'x'"):
        parse_ids("1,x")


@pytest.mark.parametrize("to,codec", [("mp4", None), ("lerobot", None)])
def test_video_round_trip_is_exact_but_for_frames(png_ds: Path, tmp_path: Path, to: str, codec) -> None:
    r = convert(png_ds, tmp_path / "vid", to, codec=codec)
    assert any("MP4" in note for note in r["lossy"])
    if to == "mp4":
        assert sorted(p.name for p in (tmp_path / "vid").glob("*.mp4")) == [f"episode_{i:06d}.mp4" for i in range(3)]
        assert (tmp_path / "vid" / "episodes.jsonl").is_file()
    else:
        assert (tmp_path / "vid" / "videos" / "observation.image" / "chunk-000" / "file-000.mp4").is_file()
    from data.video_file import probe_mp4

    assert {probe_mp4(v)["codec"] for v in (tmp_path / "vid").rglob("*.mp4")} == {"h264"}  # plays in a browser
    back = convert(tmp_path / "vid", tmp_path / "back.lance", "lance")
    assert any("lossy" in note for note in back["lossy"])
    assert_same_episodes(png_ds, tmp_path / "back.lance", frames=False)
    A, B = open_dataset(png_ds), open_dataset(tmp_path / "back.lance")
    for e in A.episodes():
        x = A.load_episode(e["episode_id"])["pixels"].astype(int)
        y = B.load_episode(e["episode_id"])["pixels"].astype(int)
        assert x.shape == y.shape and np.abs(x - y).mean() < 12


def test_dino_wm_stacked_hdf5(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n, t, h, w = 3, 5, 8, 8
    path = tmp_path / "dino.h5"
    with h5py.File(path, "w") as f:
        f["obses"] = rng.integers(0, 256, (n, t, 3, h, w), dtype=np.uint8)  # channel-first
        f["actions"] = rng.normal(size=(n, t, 2)).astype(np.float32)
        f["states"] = rng.normal(size=(n, t, 4)).astype(np.float32)
        f["seq_lengths"] = np.array([5, 3, 4])
    r = convert(path, tmp_path / "ds.lance", "lance")
    assert r["frames"] == 12 and r["episode_ids"] == [0, 1, 2]
    ds = open_dataset(tmp_path / "ds.lance")
    assert [e["length"] for e in ds.episodes()] == [5, 3, 4]
    ep = ds.load_episode(1)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(ep["pixels"], f["obses"][1, :3].transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(ep["action"], f["actions"][1, :3])
        np.testing.assert_array_equal(ep["state"], f["states"][1, :3])
    assert ep["state"].dtype == np.float32


def test_per_episode_group_hdf5(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "groups.hdf5"
    with h5py.File(path, "w") as f:
        for i, t in enumerate((4, 6)):
            g = f.create_group(f"traj_{i}")
            g["observations"] = rng.integers(0, 256, (t, 8, 8, 3), dtype=np.uint8)
            g["actions"] = rng.normal(size=(t - 1, 2))  # float64, one fewer than frames
            g["states"] = rng.normal(size=(t, 3))
            g["contact"] = rng.integers(0, 2, (t, 4)).astype(np.int16)  # one row per frame: an extra
            g["goal_xy"] = rng.normal(size=2)  # not per frame: dropped
    r = convert(path, tmp_path / "ds.lance", "lance")
    assert r["lossy"] == ["HDF5 datasets ['goal_xy'] dropped (not one numeric row per frame in every episode group)"]
    ds = open_dataset(tmp_path / "ds.lance")
    ep = ds.load_episode(1)
    assert ep["pixels"].shape == (6, 8, 8, 3) and ep["state"].dtype == np.float64
    assert ep["action"].dtype == np.float64 and ep["contact"].dtype == np.int16  # native dtypes kept
    np.testing.assert_array_equal(ep["action"][-1], 0)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(ep["action"][:-1], f["traj_1/actions"][()])
        np.testing.assert_array_equal(ep["contact"], f["traj_1/contact"][()])


def _write_swm_table(path: Path, episode_idx: list[float], jpeg: list[bytes]) -> None:
    """A stable-worldmodel-style table: every number coerced to float32, JPEG frames, per-step repeated constants."""
    import lance
    import pyarrow as pa

    n = len(episode_idx)
    f32 = lambda rows, k: pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(rows, np.float32).reshape(-1)), k)  # noqa: E731
    steps, colors = [], []
    for i, e in enumerate(episode_idx):
        steps.append(sum(1 for x in episode_idx[:i] if x == e))
        colors.append([0.5, 0.25, 1.0] if e == episode_idx[0] else [0.0, 1.0, 0.5])
    action = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    action[[i for i in range(n) if i == n - 1 or episode_idx[i + 1] != episode_idx[i]]] = np.nan  # no action at the end
    table = pa.table({
        "episode_idx": f32(episode_idx, 1),
        "step_idx": pa.array(np.asarray(steps, np.float32)),
        "pixels": pa.array(jpeg, pa.binary()),
        "goal": pa.array([jpeg[0]] * n, pa.binary()),
        "action": f32(action, 2),
        "proprio": f32(np.arange(n * 3), 3),
        "reward": f32(np.ones(n), 1),
        "variation_agent_color": f32(colors, 3),
        "noise": f32(np.arange(n), 1),  # varies within an episode: dropped
    })
    lance.write_dataset(table, str(path))


def _jpegs(n: int) -> list[bytes]:
    import cv2

    rng = np.random.default_rng(3)
    return [cv2.imencode(".jpg", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))[1].tobytes() for _ in range(n)]


def test_swm_lance_import_repairs_float32_ids(tmp_path: Path) -> None:
    frames = _jpegs(7)
    table = tmp_path / "swm" / "pusht.lance"
    _write_swm_table(table, [3.0, 3.0, 3.0, 7.0, 7.0, 7.0, 7.0], frames)
    assert detect_format(tmp_path / "swm") == "swm-lance"
    r = convert(tmp_path / "swm", tmp_path / "ds.lance", "lance")
    assert r["episode_ids"] == [3, 7] and r["src_format"] == "swm-lance"
    notes = " ".join(r["lossy"])
    assert "repaired to int64" in notes and "extra cameras ['goal'] encoded as JPEG" in notes
    ds = open_dataset(tmp_path / "ds.lance")
    assert ds.extras == {"goal": {"dtype": "uint8", "shape": [8, 8, 3]}, "noise": {"dtype": "float32", "shape": [1]}}
    eps = ds.episodes()
    assert [e["episode_id"] for e in eps] == [3, 7] and [e["length"] for e in eps] == [3, 4]
    assert eps[0]["factors"] == {"agent_color": (0.5, 0.25, 1.0)} and eps[1]["factors"] == {"agent_color": (0.0, 1.0, 0.5)}
    assert ds.codec == "jpeg"
    stored = ds._steps.to_table(columns=["pixels"]).column("pixels").to_pylist()
    assert sorted(stored) == sorted(frames)  # JPEG bytes kept, not re-encoded
    ep = ds.load_episode(7)
    np.testing.assert_array_equal(ep["action"][:-1], np.arange(6, 12, dtype=np.float32).reshape(3, 2))
    np.testing.assert_array_equal(ep["action"][-1], 0)
    assert ep["state"].dtype == np.float32 and ep["reward"].tolist() == [1, 1, 1, 1]
    np.testing.assert_array_equal(ep["noise"], np.arange(3, 7, dtype=np.float32)[:, None])  # varies: an extra, not dropped


def test_swm_lance_non_integral_ids_are_an_error(tmp_path: Path) -> None:
    _write_swm_table(tmp_path / "bad.lance", [0.0, 0.0, 1.5, 1.5], _jpegs(4))
    with pytest.raises(ValueError, match=r"episode_idx=1\.5 at row 2 is not an integer"):
        convert(tmp_path / "bad.lance", tmp_path / "ds.lance", "lance")
    assert not (tmp_path / "ds.lance").exists()


def test_bad_inputs_are_clear_errors(png_ds: Path, tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("hi")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "fake.h5").write_text("not hdf5")
    for bad, msg in ((tmp_path / "junk", "unknown format"), (tmp_path / "notes.txt", "unknown format"),
                     (tmp_path / "fake.h5", "not an HDF5 file")):
        with pytest.raises(ValueError, match=msg):
            convert(bad, tmp_path / "out.lance", "lance")
    with pytest.raises(FileNotFoundError):
        convert(tmp_path / "missing", tmp_path / "out.lance", "lance")
    with pytest.raises(ValueError, match="unknown destination format 'zarr'"):
        convert(png_ds, tmp_path / "out", "zarr")
    with pytest.raises(ValueError, match="codec 'raw' for LeRobot"):
        convert(png_ds, tmp_path / "out", "lerobot", codec="raw")
    with h5py.File(tmp_path / "nokeys.h5", "w") as f:
        f["something"] = np.zeros(3)
    with pytest.raises(ValueError, match="unknown HDF5 layout"):
        convert(tmp_path / "nokeys.h5", tmp_path / "out.lance", "lance")
    with h5py.File(tmp_path / "short.h5", "w") as f:
        g = f.create_group("episode_000000")
        g["pixels"] = np.zeros((5, 4, 4, 3), np.uint8)
        g["action"] = np.zeros((2, 2), np.float32)
        g["state"] = np.zeros((5, 1))
    with pytest.raises(ValueError, match=r"2 actions for 5 frames \(expected 5 or 4\)"):
        convert(tmp_path / "short.h5", tmp_path / "out.lance", "lance")
    assert not (tmp_path / "out.lance").exists()


def test_existing_destination_is_never_damaged(png_ds: Path, tmp_path: Path) -> None:
    dst = tmp_path / "x.h5"
    convert(png_ds, dst, "hdf5", episodes=[0])
    before = dst.read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        convert(png_ds, dst, "hdf5")
    with pytest.raises(ValueError, match="append"):
        convert(png_ds, dst, "hdf5", mode="append")
    assert dst.read_bytes() == before
    convert(png_ds, dst, "hdf5", mode="overwrite")
    with h5py.File(dst, "r") as f:
        assert len(f.keys()) == 3
    with pytest.raises(ValueError, match="already exists"):
        convert(dst, png_ds, "lance")
    assert open_dataset(png_ds).num_episodes == 3
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5"]  # no temp leftovers


def test_cli_convert(png_ds: Path, tmp_path: Path) -> None:
    from tests.test_cli import wm

    proc = wm("data", "convert", str(png_ds), str(tmp_path / "out"), "--to", "lerobot", "--episodes", "0-1")
    result = json.loads(proc.stdout)
    assert result["episodes"] == 2 and result["src_format"] == "lance"
    assert "lossy" in proc.stderr and "MP4" in proc.stderr
    again = wm("data", "convert", str(png_ds), str(tmp_path / "out"), "--to", "lerobot", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    bad = wm("data", "convert", str(tmp_path / "nothing"), str(tmp_path / "o.h5"), "--to", "hdf5", check=False)
    assert bad.returncode == 2 and "nothing" in bad.stderr and "Traceback" not in bad.stderr


def test_swm_hdf5_import(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    path = tmp_path / "swm.h5"
    with h5py.File(path, "w") as f:
        f["pixels"] = rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
        f["goal"] = rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
        f["action"] = rng.normal(size=(7, 2)).astype(np.float32)
        f["proprio"] = rng.normal(size=(7, 2)).astype(np.float32)
        f["episode_idx"] = np.array([4, 4, 4, 9, 9, 9, 9], np.float32)
        f["variation_size"] = np.array([1, 1, 1, 2, 2, 2, 2], np.float32)
        f["ep_len"], f["ep_offset"] = np.array([3, 4], np.int32), np.array([0, 3], np.int64)
    r = convert(path, tmp_path / "ds.lance", "lance")
    assert r["episode_ids"] == [4, 9] and r["lossy"] == []
    ds = open_dataset(tmp_path / "ds.lance")
    assert [e["factors"] for e in ds.episodes()] == [{"size": 1.0}, {"size": 2.0}]
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(ds.load_episode(9)["goal"], f["goal"][3:])  # a second camera, kept
        np.testing.assert_array_equal(ds.load_episode(9)["pixels"], f["pixels"][3:])
        np.testing.assert_array_equal(ds.load_episode(9)["state"], f["proprio"][3:])


def test_failed_lance_overwrite_keeps_the_old_dataset(png_ds: Path, tmp_path: Path) -> None:
    dst = tmp_path / "ds.lance"
    convert(png_ds, dst, "lance", episodes=[0])
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        for i, t in enumerate((3, 4)):
            g = f.create_group(f"episode_{i:06d}")
            g["pixels"] = np.zeros((t, 16, 16, 3), np.uint8)
            g["action"] = np.zeros((t, 2), np.float32)
            g["state"] = np.zeros((t if i == 0 else t + 1, 2))  # episode 1: one state too many
    with pytest.raises(ValueError, match="5 states for 4 frames"):
        convert(tmp_path / "bad.h5", dst, "lance", mode="overwrite")
    assert [e["episode_id"] for e in open_dataset(dst).episodes()] == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5", "ds.lance"]


def test_foreign_lerobot_without_our_columns(png_ds: Path, tmp_path: Path) -> None:
    """A LeRobot v3 dataset as lerobot writes it: rewards from next.reward, end from next.done."""
    import pyarrow.parquet as pq

    dst = tmp_path / "lr"
    convert(png_ds, dst, "lerobot", codec="png")
    data_file = dst / "data" / "chunk-000" / "file-000.parquet"
    pq.write_table(pq.read_table(data_file).drop_columns(["reward", "terminated", "truncated"]), data_file)
    ep_file = dst / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    pq.write_table(pq.read_table(ep_file).drop_columns(["episode_id", "env_id", "seed", "policy", "split", "factors"]), ep_file)
    convert(dst, tmp_path / "back.lance", "lance")
    A, B = open_dataset(png_ds), open_dataset(tmp_path / "back.lance")
    assert [e["factors"] for e in B.episodes()] == [{"task": "wm/TwoRoom-v0"}] * 3
    for e in A.episodes():
        x, y = A.load_episode(e["episode_id"]), B.load_episode(e["episode_id"])
        for key in ("pixels", "action", "state", "reward"):
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
        assert y["terminated"][-1] == (x["terminated"][-1] or x["truncated"][-1])


# -- replacing only what this project wrote (mode "overwrite") ----------------------------

FOLDER_FORMATS = ("lance", "mp4", "lerobot")


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` (root included) -> its bytes (None for folders)."""
    paths = [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]
    return {str(p.relative_to(root.parent)): (None if p.is_dir() else p.read_bytes()) for p in paths}


def _cli(*args: str, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    from worldmodel.cli import main

    code = main(["data", "convert", *args])
    return code, capsys.readouterr().err


def _foreign_outputs(tmp_path: Path, to: str) -> list[Path]:
    """Things at DST this project did not write: a user's folder, a user's file, a file in
    the output's own format from elsewhere (HDF5 without our attribute, a LeRobot folder
    without our block), a link."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("do not delete")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.bin").write_bytes(b"\x00\x01")
    note = tmp_path / "notes.txt"
    note.write_text("do not delete either")
    link = tmp_path / "link"
    link.symlink_to(folder)
    out = [folder, note, link]
    if to == "hdf5":
        with h5py.File(tmp_path / "theirs.h5", "w") as f:
            f["x"] = np.arange(3)
        out.append(tmp_path / "theirs.h5")
    if to == "lerobot":
        (tmp_path / "their_lr" / "meta").mkdir(parents=True)
        (tmp_path / "their_lr" / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v3.0"}))
        out.append(tmp_path / "their_lr")
    if to == "mp4":
        (tmp_path / "their_mp4").mkdir()
        (tmp_path / "their_mp4" / "episodes.jsonl").write_text("")
        out.append(tmp_path / "their_mp4")
    if to == "lance":
        (tmp_path / "their.lance").mkdir()
        (tmp_path / "their.lance" / "meta.json").write_text(json.dumps({"format": "something-else"}))
        out.append(tmp_path / "their.lance")
    return out


@pytest.mark.parametrize("to", ["lance", "hdf5", "mp4", "lerobot"])
def test_overwrite_refuses_outputs_this_project_did_not_write(to: str, png_ds: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """`--mode overwrite` onto a user's folder or file (or a same-format file from elsewhere)
    exits 2 naming the path, and every byte there stays as it was."""
    for dst in _foreign_outputs(tmp_path, to):
        before = _snapshot(tmp_path)
        code, err = _cli(str(png_ds), str(dst), "--to", to, "--mode", "overwrite", capsys=capsys)
        assert code == 2 and str(dst) in err and "refusing to replace it" in err and "Traceback" not in err, (dst, err)
        assert _snapshot(tmp_path) == before, dst  # nothing touched, no leftovers beside it
        with pytest.raises(ValueError, match="refusing to replace it"):
            convert(png_ds, dst, to, mode="overwrite")
    # our own output holding a file of the user's is not replaced either (it would delete that file)
    ours = tmp_path / f"ours.{to}"
    convert(png_ds, ours, to, episodes=[0])
    if to != "hdf5":
        (ours / "notes.txt").write_text("added by the user")
        before = _snapshot(tmp_path)
        with pytest.raises(ValueError, match=r"also holds files this project did not write \('notes.txt'\)"):
            convert(png_ds, ours, to, mode="overwrite")
        assert _snapshot(tmp_path) == before
        (ours / "notes.txt").unlink()


@pytest.mark.parametrize("to", ["lance", "hdf5", "mp4", "lerobot"])
def test_overwrite_replaces_our_own_output(to: str, png_ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dst = tmp_path / f"out.{to}"
    convert(png_ds, dst, to, episodes=[0])
    code, err = _cli(str(png_ds), str(dst), "--to", to, "--mode", "overwrite", "--episodes", "1-2", capsys=capsys)
    assert code == 0, err
    back = convert(dst, tmp_path / "back.lance", "lance")
    assert back["episode_ids"] == [1, 2]  # the new output, not the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dst.name, "back.lance"])  # no temp leftovers
    if to in FOLDER_FORMATS:  # an empty folder holds nothing to lose: it may be replaced too
        empty = tmp_path / f"empty.{to}"
        empty.mkdir()
        assert convert(png_ds, empty, to, mode="overwrite", episodes=[0])["episode_ids"] == [0]


@pytest.mark.parametrize("to", ["lance", "hdf5", "mp4", "lerobot"])
def test_failed_overwrite_keeps_our_old_output(to: str, png_ds: Path, tmp_path: Path) -> None:
    dst = tmp_path / f"out.{to}"
    convert(png_ds, dst, to, episodes=[0])
    before = _snapshot(dst)
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        for i, t in enumerate((3, 4)):
            g = f.create_group(f"episode_{i:06d}")
            g["pixels"] = np.zeros((t, 16, 16, 3), np.uint8)
            g["action"] = np.zeros((t, 2), np.float32)
            g["state"] = np.zeros((t if i == 0 else t + 1, 2))  # episode 1 fails half-way through
    with pytest.raises(ValueError, match="5 states for 4 frames"):
        convert(tmp_path / "bad.h5", dst, to, mode="overwrite")
    assert _snapshot(dst) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bad.h5", dst.name])


def test_lance_append_refuses_a_folder_that_is_not_a_dataset(png_ds: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    code, err = _cli(str(png_ds), str(folder), "--to", "lance", "--mode", "append", capsys=capsys)
    assert code == 2 and f"{folder}: not a dataset (no meta.json)" in err and "refusing to write into it" in err
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert convert(png_ds, empty, "lance", mode="append", episodes=[0])["episode_ids"] == [0]
    assert convert(png_ds, empty, "lance", mode="append", episodes=[1])["episode_ids"] == [1]
    assert [e["episode_id"] for e in open_dataset(empty).episodes()] == [0, 1]


def test_destination_under_a_file_is_a_clear_error(png_ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notes.txt").write_text("keep")
    for to in ("lance", "hdf5", "mp4", "lerobot"):
        dst = tmp_path / "notes.txt" / "deeper" / "out"
        code, err = _cli(str(png_ds), str(dst), "--to", to, capsys=capsys)
        assert code == 2 and f"{tmp_path / 'notes.txt'} is a file, not a folder" in err and "Traceback" not in err, err
    assert (tmp_path / "notes.txt").read_text() == "keep"


# -- stable-worldmodel's current N + 1-row layout ------------------------------------------

def _swm_current(n_steps: tuple[int, ...], jpeg: list[bytes]) -> dict[str, np.ndarray]:
    """Columns as stable-worldmodel's current writer stores episodes of `n_steps` steps:
    N + 1 rows each, aligned on observations; row t holds the action taken at observation t
    (NaN on the last row) and the reward received on arriving there (NaN on row 0)."""
    rows = sum(n + 1 for n in n_steps)
    rng = np.random.default_rng(7)
    cols: dict[str, list] = {k: [] for k in ("episode_idx", "step_idx", "action", "reward", "terminated", "truncated", "state", "id")}
    for e, n in enumerate(n_steps):
        action = rng.normal(size=(n + 1, 2)).astype(np.float32)
        action[-1] = np.nan
        reward = rng.normal(size=n + 1).astype(np.float32)
        reward[0] = np.nan
        cols["episode_idx"] += [e] * (n + 1)
        cols["step_idx"] += list(range(n + 1))
        cols["action"] += list(action)
        cols["reward"] += list(reward)
        cols["terminated"] += [0.0] * n + [float(e == 0)]
        cols["truncated"] += [0.0] * n + [float(e != 0)]
        cols["state"] += list(rng.normal(size=(n + 1, 3)).astype(np.float32))
        cols["id"] += [float(1000 + e)] * (n + 1)
    out = {k: np.asarray(v, np.int32 if k.endswith("_idx") else np.float32) for k, v in cols.items()}
    out["pixels"] = np.asarray(jpeg[:rows], object)
    return out


def _write_swm_current(path: Path, cols: dict[str, np.ndarray], fmt: str) -> Path:
    if fmt == "hdf5":
        import cv2

        ep = cols["episode_idx"]
        starts = np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]])
        with h5py.File(path.with_suffix(".h5"), "w") as f:
            f["pixels"] = np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in cols["pixels"]])
            for k, v in cols.items():
                if k != "pixels":
                    f[k] = v
            f["ep_offset"], f["ep_len"] = starts, np.diff(np.r_[starts, len(ep)])
        return path.with_suffix(".h5")
    import lance
    import pyarrow as pa

    f32 = lambda a: pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.reshape(len(a), -1).shape[1])  # noqa: E731
    table = pa.table({k: (pa.array(v) if k.endswith("_idx") else pa.array(list(v), pa.binary()) if k == "pixels" else f32(v))
                      for k, v in cols.items()})
    lance.write_dataset(table, str(path))
    return path


@pytest.mark.parametrize("fmt", ["lance", "hdf5"])
def test_swm_current_layout_converts_with_steps_aligned(fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """N + 1 rows per episode (reward NaN on the first, action NaN on the last) convert into
    N actions + N + 1 observations with no NaN, actions and rewards equal to the source's,
    the realignment listed on stderr, and a dataset `wm data validate` accepts."""
    from data.convert.swm import REALIGNED_ACTION, REALIGNED_REWARD
    from worldmodel.cli import main

    steps = (3, 5)
    cols = _swm_current(steps, _jpegs(sum(steps) + len(steps)))
    src = _write_swm_current(tmp_path / "swm.lance", cols, fmt)
    dst = tmp_path / "ds.lance"
    assert main(["data", "convert", str(src), str(dst), "--to", "lance"]) == 0
    err = capsys.readouterr().err
    assert f"lossy: {REALIGNED_ACTION}" in err and f"lossy: {REALIGNED_REWARD}" in err
    assert main(["data", "validate", str(dst)]) == 0, capsys.readouterr().err
    ds = open_dataset(dst)
    assert [e["length"] for e in ds.episodes()] == [n + 1 for n in steps]  # N actions, N + 1 observations (the last kept)
    start = 0
    for e, n in enumerate(steps):
        ep = ds.load_episode(e)
        rows = slice(start, start + n + 1)
        start += n + 1
        for key in ("action", "reward", "state"):
            assert np.isfinite(ep[key]).all(), key
        np.testing.assert_array_equal(ep["action"][:n], cols["action"][rows][:n])  # the N actions, unchanged
        np.testing.assert_array_equal(ep["action"][n], 0)  # none taken at the last observation
        np.testing.assert_array_equal(ep["reward"][1:], cols["reward"][rows][1:])  # the N rewards, unchanged
        assert ep["reward"][0] == 0
        np.testing.assert_array_equal(ep["state"], cols["state"][rows])
        assert ep["terminated"].tolist() == [False] * n + [e == 0] and ep["truncated"].tolist() == [False] * n + [e != 0]
    assert [e["factors"] for e in ds.episodes()] == [{"id": 1000.0}, {"id": 1001.0}]


def test_swm_nan_reward_past_the_first_row_is_an_error(tmp_path: Path) -> None:
    cols = _swm_current((3,), _jpegs(4))
    cols["reward"][2] = np.nan
    src = _write_swm_current(tmp_path / "swm.lance", cols, "lance")
    with pytest.raises(ValueError, match=r"episode 0: reward at step 2 is nan \(expected a finite number; only row 0 may be NaN"):
        convert(src, tmp_path / "ds.lance", "lance")
    assert not (tmp_path / "ds.lance").exists()


@pytest.mark.parametrize("to", ["hdf5", "mp4"])
def test_destination_appearing_while_converting_is_not_overwritten(to: str, png_ds: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import data.convert as dc

    dst = tmp_path / f"out.{to}"
    real_open = dc.open_source

    def open_source(path, fmt=None):
        source = real_open(path, fmt)
        read = source.read

        def read_and_interfere(ids):
            for k, ep in enumerate(read(ids)):
                if k == 1:  # someone writes DST half-way through the conversion
                    if to == "hdf5":
                        dst.write_text("a user's file")
                    else:
                        dst.mkdir()
                        (dst / "notes.txt").write_text("a user's file")
                yield ep

        source.read = read_and_interfere
        return source

    monkeypatch.setattr(dc, "open_source", open_source)
    with pytest.raises(ValueError, match="already exists \\(mode .error.\\)"):
        convert(png_ds, dst, to)
    assert (dst if to == "hdf5" else dst / "notes.txt").read_text() == "a user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [dst.name]  # the half-built output is gone


@pytest.mark.parametrize("codec", [None, "png", "h264"])
def test_lance_to_lance_keeps_the_recorded_first_success(codec, tmp_path: Path) -> None:
    src = tmp_path / "src.lance"
    data.collect("wm/TwoRoom-v0", 3, src, resolution=16, seed=0)
    before = open_dataset(src).success_steps()
    assert any(s is not None and s >= 0 for s in before.values())
    dst = tmp_path / "dst.lance"
    convert(src, dst, to="lance", **({"codec": codec} if codec else {}))
    assert open_dataset(dst).success_steps() == before
