"""``lerobot`` (read/write): LeRobot v3.0, written with pyarrow and OpenCV::

      meta/info.json          codebase_version "v3.0", fps, features {dtype, shape, names},
                              total_episodes, total_frames, total_tasks, chunks_size,
                              data_path / video_path templates, splits, and a "worldmodel"
                              block (codec, env_id, fps, state_dtype, state_shape, action_dtype,
                              extras {name: {dtype, shape}}) for exact round trips
      meta/tasks.parquet      task_index, task (one task per env id)
      meta/episodes/chunk-000/file-000.parquet
                              episode_index, tasks, length, data/chunk_index, data/file_index,
                              dataset_from_index, dataset_to_index,
                              videos/<camera>/{chunk_index, file_index, from_timestamp,
                              to_timestamp} per camera, meta/episodes/{chunk,file}_index,
                              and ours: episode_id, env_id, seed, policy, split, factors (JSON)
      data/chunk-000/file-000.parquet
                              episode_index, frame_index, timestamp, index, task_index,
                              observation.state (flat; its feature shape is the state's shape),
                              action (its own dtype), next.reward, next.done,
                              observation.<name> per extra observation (flat, its own dtype),
                              and ours: reward, terminated, truncated (the store's exact row
                              convention); observation.image and observation.<camera>
                              {bytes, path} when frames are images
      videos/<camera>/chunk-000/file-000.mp4
                              all episodes' frames back to back, one file per camera
                              (observation.image, then one per extra camera; default; lossy)

``codec="png"`` stores frames (and extra cameras) as PNG bytes in the data parquet (feature
dtype "image", no MP4): lossless. ``"jpeg"`` stores JPEG bytes. Reading accepts other v3
datasets: ``observation.image`` (else the first image/video feature) is the main camera,
other image/video features become extra cameras, other ``observation.*`` features extra
observations (named without the ``observation.``/``images.`` prefix, non-identifier
characters as ``_``), ``observation.state`` and ``action`` in their dtypes; other features
are dropped and listed in ``lossy``. Without our exact columns, reward[t] = next.reward[t-1]
and the last row is terminated if next.done is set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..codecs import EncodedFrame
from ..schema import is_camera
from .episode import Episode, Source, decode_blobs, factors_from_json, json_factors, make_episode, safe_name
from .frames import VideoCursor, encoded_shape, sniff_codec, video_writer, write_frames
from ..owned import describe_foreign, foreign_entries, json_marker
from ..schema import FORMAT
from .output import fresh_output

IMAGE_KEY = "observation.image"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
DEFAULT_FPS = 10.0
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
_BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index", "next.reward", "next.done",
                "reward", "terminated", "truncated")


def lerobot_not_ours(path: Path) -> str | None:
    """None if `path` is a LeRobot folder `write_lerobot` wrote (``meta/info.json`` carries
    the "worldmodel" block; only meta/, data/, videos/ at the top and its meta files in
    meta/), else the reason it is not (a `Recogniser`)."""
    block = json_marker(path / "meta" / "info.json", "worldmodel")
    if not (isinstance(block, dict) and block.get("format") == FORMAT):
        return "not a LeRobot folder this project wrote (no meta/info.json with a \"worldmodel\" block)"
    extra = foreign_entries(path, ("meta", "data", "videos")) + [
        f"meta/{n}" for n in foreign_entries(path / "meta", ("info.json", "tasks.parquet", "episodes"))]
    if extra:
        return f"a LeRobot folder that also holds files this project did not write ({describe_foreign(extra)})"
    return None


def arrow_values(col: Any) -> Any:
    """A pyarrow column as numpy (fixed-size lists -> (N, k), nested ones (N, k, m)) or a list of bytes/str."""
    import pyarrow as pa

    if hasattr(col, "combine_chunks"):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.to_pylist()
    if pa.types.is_fixed_size_list(t) and not pa.types.is_nested(t.value_type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), t.list_size)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return np.asarray(col.to_pylist())
    return col.to_numpy(zero_copy_only=False)


def _flat_list(arr: np.ndarray) -> Any:
    """(T, *shape) -> fixed_size_list<dtype>[prod(shape)] (size 1 for scalars)."""
    import pyarrow as pa

    n = len(arr)
    size = int(np.prod(arr.shape[1:], dtype=np.int64))
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(arr).reshape(n * size)), size)


def write_lerobot(episodes: Iterator[Episode], dst: Path, src: Source, mode: str, codec: str | None,
                  lossy: list[str]) -> list[int]:
    """Write `episodes` as a LeRobot v3.0 folder; returns the episode ids written.

    codec: None (MP4 video per camera), "png" or "jpeg" (image bytes in the data parquet).
    Extra cameras re-encoded lossily (MP4, JPEG) are noted in `lossy`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if codec not in (None, "png", "jpeg"):
        raise ValueError(f"codec {codec!r} for LeRobot: expected png (lossless images in parquet), jpeg, or none (MP4 video)")
    fps = float(src.fps or DEFAULT_FPS)
    fps_out: float | int = int(fps) if fps == int(fps) else fps
    use_video = codec is None
    written: list[int] = []
    data_tables, ep_rows = [], []
    env_ids: list[str | None] = []
    total = 0
    spec: dict[str, Any] = {}
    with fresh_output(dst, mode, is_dir=True, recognise=lerobot_not_ours) as tmp:
        videos: dict[str, Any] = {}
        try:
            for k, ep in enumerate(episodes):
                eid = ep.episode_id if ep.episode_id is not None else k
                n = ep.length
                this = {"shape": ep.image_shape, "action": (ep.action.dtype.name, ep.action.shape[1]),
                        "state": (ep.state.dtype.name, ep.state.shape[1:]), "extras": ep.extra_specs}
                if not spec:
                    spec = this
                    keys = {name: f"observation.{name}" for name in ep.extras}
                    clash = [name for name, key in keys.items() if key in (IMAGE_KEY, STATE_KEY)]
                    if clash:
                        raise ValueError(f"{dst}: extra observations {clash} would clash with LeRobot's {IMAGE_KEY}/{STATE_KEY}; rename them")
                    cams = {IMAGE_KEY: None, **{keys[c]: c for c in ep.cameras}}
                    if ep.cameras and codec != "png":
                        lossy.append(f"extra cameras {ep.cameras} encoded as {'MP4 video' if use_video else 'JPEG'} (lossy)")
                elif this != spec:
                    raise ValueError(f"episode {eid}: image/action/state/extras shapes or dtypes differ from the first episode's")
                if ep.env_id not in env_ids:
                    env_ids.append(ep.env_id)
                task_index = env_ids.index(ep.env_id)
                done = np.zeros(n, bool)
                done[-1] = bool(ep.terminated[-1] or ep.truncated[-1])
                next_reward = np.zeros(n, np.float32)
                next_reward[:-1] = ep.reward[1:]
                cols = {
                    "episode_index": pa.array(np.full(n, k, np.int64)),
                    "frame_index": pa.array(np.arange(n, dtype=np.int64)),
                    "timestamp": pa.array((np.arange(n) / fps).astype(np.float32)),
                    "index": pa.array(np.arange(total, total + n, dtype=np.int64)),
                    "task_index": pa.array(np.full(n, task_index, np.int64)),
                    STATE_KEY: _flat_list(ep.state),
                    ACTION_KEY: _flat_list(ep.action),
                    "next.reward": pa.array(next_reward),
                    "next.done": pa.array(done),
                    "reward": pa.array(ep.reward.astype(np.float32)),
                    "terminated": pa.array(ep.terminated.astype(bool)),
                    "truncated": pa.array(ep.truncated.astype(bool)),
                }
                for name, arr in ep.extras.items():
                    if name not in ep.cameras:
                        cols[keys[name]] = _flat_list(arr)
                row: dict[str, Any] = {
                    "episode_index": k, "tasks": [str(ep.env_id)], "length": n, "data/chunk_index": 0, "data/file_index": 0,
                    "dataset_from_index": total, "dataset_to_index": total + n,
                }
                for key, name in cams.items():
                    frames = ep.pixels if name is None else ep.extras[name]
                    if use_video:
                        if key not in videos:
                            path = tmp / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
                            path.parent.mkdir(parents=True, exist_ok=True)
                            videos[key] = video_writer(path, fps, frames.shape[1:], dst)
                        write_frames(videos[key], frames)
                        row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                                    f"videos/{key}/from_timestamp": total / fps, f"videos/{key}/to_timestamp": (total + n) / fps})
                    else:
                        if name is None and ep.encoded is not None and ep.encoded_codec == codec:
                            blobs = list(ep.encoded)
                        else:
                            blobs = [EncodedFrame.encode(f, codec).data for f in frames]  # type: ignore[arg-type]
                        cols[key] = pa.StructArray.from_arrays(
                            [pa.array(blobs, pa.binary()), pa.array([None] * n, pa.string())], names=["bytes", "path"])
                row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0, "episode_id": int(eid),
                            "env_id": ep.env_id, "seed": ep.seed, "policy": ep.policy, "split": ep.split,
                            "factors": json_factors(ep.factors)})
                data_tables.append(pa.table(cols))
                ep_rows.append(row)
                written.append(int(eid))
                total += n
        finally:
            for video in videos.values():
                video.close()
        if not written:
            raise ValueError("no episodes to write")
        data_file = tmp / DATA_PATH.format(chunk_index=0, file_index=0)
        data_file.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(data_tables), data_file)
        ep_file = tmp / EPISODES_PATH
        ep_file.parent.mkdir(parents=True, exist_ok=True)
        ep_schema_extra = {"tasks": pa.list_(pa.string()), "seed": pa.int64(), "env_id": pa.string()}
        ep_cols = {name: pa.array([r[name] for r in ep_rows], ep_schema_extra.get(name)) for name in ep_rows[0]}
        pq.write_table(pa.table(ep_cols), ep_file)
        _write_tasks(tmp / "meta" / "tasks.parquet", [str(e) for e in env_ids])

        def image_feature(shape: Sequence[int]) -> dict[str, Any]:
            h, w, c = (int(s) for s in shape)
            feat: dict[str, Any] = {"dtype": "video" if use_video else "image", "shape": [h, w, c], "names": ["height", "width", "channels"]}
            if use_video:
                feat["info"] = {"video.height": h, "video.width": w, "video.codec": "h264", "video.pix_fmt": "yuv420p",
                                "video.is_depth_map": False, "video.fps": fps_out, "video.channels": c, "has_audio": False}
            return feat

        scalar = lambda dtype: {"dtype": dtype, "shape": [1], "names": None}  # noqa: E731
        state_dtype, state_shape = spec["state"]
        features: dict[str, Any] = {
            IMAGE_KEY: image_feature(spec["shape"]),
            STATE_KEY: {"dtype": state_dtype, "shape": [int(s) for s in state_shape], "names": None},
            ACTION_KEY: {"dtype": spec["action"][0], "shape": [int(spec["action"][1])], "names": None},
        }
        for name, s in spec["extras"].items():
            features[keys[name]] = image_feature(s["shape"]) if is_camera(s) else {"dtype": s["dtype"], "shape": s["shape"] or [1], "names": None}
        features.update({
            "next.reward": scalar("float32"), "next.done": scalar("bool"),
            "reward": scalar("float32"), "terminated": scalar("bool"), "truncated": scalar("bool"),
            "timestamp": scalar("float32"), "frame_index": scalar("int64"), "episode_index": scalar("int64"),
            "index": scalar("int64"), "task_index": scalar("int64"),
        })
        info = {
            "codebase_version": "v3.0", "robot_type": None, "total_episodes": len(written), "total_frames": total,
            "total_tasks": len(env_ids), "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
            "fps": fps_out, "splits": {"train": f"0:{len(written)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if use_video else None, "features": features,
            "worldmodel": {"format": "worldmodel-episodes", "codec": src.codec, "env_id": src.env_id, "fps": src.fps,
                           "state_dtype": state_dtype, "state_shape": [int(s) for s in state_shape],
                           "action_dtype": spec["action"][0], "extras": spec["extras"]},
        }
        (tmp / "meta" / "info.json").write_text(json.dumps(info, indent=4) + "\n")
    return written


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """tasks.parquet as LeRobot reads it: task strings as the (pandas) index, column task_index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        import pandas as pd
    except ImportError:
        table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    else:
        table = pa.Table.from_pandas(pd.DataFrame({"task_index": np.arange(len(tasks), dtype=np.int64)}, index=pd.Index(tasks, name="task")))
    pq.write_table(table, path)


def lerobot_source(path: Path) -> Source:
    """Open a LeRobot v3.x folder (ours or another writer's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    info_path = path / "meta" / "info.json"
    try:
        info = json.loads(info_path.read_text())
    except ValueError as e:
        raise ValueError(f"{info_path}: not JSON ({e})") from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise ValueError(f"{path}: LeRobot codebase_version {version!r}; only v3.x is supported (convert v2.1 with lerobot's converter first)")
    features = info.get("features") or {}
    missing = [k for k in ("fps", "features", "data_path") if k not in info]
    if missing:
        raise ValueError(f"{info_path}: missing keys {missing}")
    visual = [k for k, v in features.items() if v.get("dtype") in ("video", "image")]
    if not visual:
        raise ValueError(f"{info_path}: no image or video feature (features {sorted(features)})")
    key = IMAGE_KEY if IMAGE_KEY in visual else sorted(visual)[0]
    for need in (STATE_KEY, ACTION_KEY):
        if need not in features:
            raise ValueError(f"{info_path}: no {need!r} feature (features {sorted(features)})")
    fps = float(info["fps"])
    wm = info.get("worldmodel") or {}
    wm_extras: dict[str, dict] = wm.get("extras") or {}
    # extra observations: feature key -> (name, exact spec or None)
    extras: dict[str, tuple[str, dict | None]] = {}
    dropped = []
    for fk, feat in features.items():
        if fk in (key, STATE_KEY, ACTION_KEY) or fk in _BOOKKEEPING:
            continue
        name = fk.removeprefix("observation.") if fk.removeprefix("observation.") in wm_extras else safe_name(fk)
        if fk in visual or (fk.startswith("observation.") and feat.get("dtype") not in ("string", None)):
            extras[fk] = (name, wm_extras.get(name))
        else:
            dropped.append(fk)
    names = [n for n, _ in extras.values()]
    if len(set(names)) != len(names):
        raise ValueError(f"{info_path}: features {sorted(extras)} give clashing extra names {names}")
    ep_files = sorted((path / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not ep_files:
        raise ValueError(f"{path}: no meta/episodes/chunk-*/file-*.parquet")
    episodes = pa.concat_tables([pq.read_table(p) for p in ep_files], promote_options="default").to_pylist()
    if any("episode_index" not in e for e in episodes):
        raise ValueError(f"{path}: episodes parquet has no episode_index column")
    by_id: dict[int, dict] = {}
    for e in episodes:
        eid = int(e["episode_id"]) if e.get("episode_id") is not None else int(e["episode_index"])
        if eid in by_id:
            raise ValueError(f"{path}: episode {eid} listed twice in meta/episodes")
        by_id[eid] = e
    lossy = [f"frames decoded from MP4 video {k!r} (lossy)" for k in [key, *extras] if features[k].get("dtype") == "video"]
    if dropped:
        lossy.append(f"features {sorted(dropped)} dropped (not observations the store can hold)")
    tasks: dict[int, str] = {}
    if (path / "meta" / "tasks.parquet").is_file():
        for r in pq.read_table(path / "meta" / "tasks.parquet").to_pylist():
            task = r.get("task", r.get("__index_level_0__"))
            if "task_index" in r and task is not None:
                tasks[int(r["task_index"])] = str(task)
    cache: dict[str, Any] = {}
    videos: dict[Path, VideoCursor] = {}

    def data_for(e: dict) -> dict[str, Any]:
        rel = info["data_path"].format(chunk_index=int(e.get("data/chunk_index") or 0), file_index=int(e.get("data/file_index") or 0))
        if cache.get("path") != rel:
            file = path / rel
            if not file.is_file():
                raise FileNotFoundError(f"{path}: data file {rel} is missing")
            cache["path"], cache["table"] = rel, pq.read_table(file)
            cache["episode_index"] = cache["table"].column("episode_index").to_numpy()
        tbl = cache["table"]
        rows = np.flatnonzero(cache["episode_index"] == int(e["episode_index"]))
        part = tbl.take(pa.array(rows))
        if "frame_index" in part.column_names:
            part = part.take(pa.array(np.argsort(part.column("frame_index").to_numpy(), kind="stable")))
        return {c: part.column(c) for c in part.column_names}

    def frames(fk: str, e: dict, cols: dict[str, Any], n: int, where: str) -> dict[str, Any]:
        """One camera's frames: {"pixels"} decoded, or {"encoded", "encoded_codec", "image_shape"}."""
        if features[fk]["dtype"] == "video":
            rel = info["video_path"].format(video_key=fk, chunk_index=int(e.get(f"videos/{fk}/chunk_index") or 0),
                                            file_index=int(e.get(f"videos/{fk}/file_index") or 0))
            start = int(round(float(e.get(f"videos/{fk}/from_timestamp") or 0.0) * fps))
            cursor = videos.setdefault(path / rel, VideoCursor(path / rel))
            return {"pixels": cursor.read(start, n, where)}
        if fk not in cols:
            raise ValueError(f"{where}: image feature {fk!r} has no data column")
        blobs = []
        for t, s in enumerate(cols[fk].to_pylist()):
            data = s.get("bytes") if isinstance(s, dict) else s
            if data is None and isinstance(s, dict) and s.get("path"):
                data = (path / s["path"]).read_bytes()
            if data is None:
                raise ValueError(f"{where}: frame {t} of {fk!r} has neither bytes nor path")
            blobs.append(bytes(data))
        codec = sniff_codec(blobs[0], where)
        return {"pixels": None, "encoded": blobs, "encoded_codec": codec, "image_shape": encoded_shape(blobs[0], codec, where)}

    def read(ids: Sequence[int]) -> Iterator[Episode]:
        try:
            yield from read_episodes(ids)
        finally:
            for cursor in videos.values():
                cursor.close()

    def read_episodes(ids: Sequence[int]) -> Iterator[Episode]:
        for eid in ids:
            e = by_id[eid]
            where = f"{path} episode {eid}"
            cols = data_for(e)
            n = len(cols["episode_index"])
            if "length" in e and e["length"] is not None and int(e["length"]) != n:
                raise ValueError(f"{where}: {n} data rows, its length says {int(e['length'])}")
            state_shape = wm.get("state_shape") or features[STATE_KEY].get("shape") or [-1]
            state = np.asarray(arrow_values(cols[STATE_KEY])).reshape((n, *state_shape))
            action = arrow_values(cols[ACTION_KEY])
            extra_arrays = {}
            for fk, (name, spec) in extras.items():
                if fk in visual:
                    got = frames(fk, e, cols, n, where)
                    pix = got["pixels"]
                    extra_arrays[name] = pix if pix is not None else decode_blobs(got["encoded"], got["encoded_codec"], got["image_shape"])
                elif fk in cols:
                    shape = spec["shape"] if spec else (features[fk].get("shape") or [])
                    arr = np.asarray(arrow_values(cols[fk])).reshape((n, *shape))
                    extra_arrays[name] = arr.astype(spec["dtype"], copy=False) if spec else arr
            if "reward" in cols:
                reward, term, trunc = (arrow_values(cols[c]) for c in ("reward", "terminated", "truncated"))
            else:
                reward = np.zeros(n, np.float32)
                if "next.reward" in cols:
                    reward[1:] = np.asarray(arrow_values(cols["next.reward"])).reshape(n, -1)[:-1, 0]
                term = np.zeros(n, bool)
                if "next.done" in cols:
                    term[-1] = bool(np.asarray(arrow_values(cols["next.done"])).reshape(n, -1)[:, 0].any())
                trunc = None
            if "factors" in e:
                factors = factors_from_json(e.get("factors"), where)
            else:
                task_ids = np.unique(np.asarray(arrow_values(cols["task_index"]))) if "task_index" in cols else []
                factors = {"task": tasks[int(task_ids[0])]} if len(task_ids) == 1 and int(task_ids[0]) in tasks else {}
            seed = e.get("seed")
            yield make_episode(
                where, **frames(key, e, cols, n, where), action=action, state=state, reward=reward, terminated=term,
                truncated=trunc, extras=extra_arrays, episode_id=int(eid), env_id=e.get("env_id", wm.get("env_id")),
                seed=None if seed is None else int(seed), factors=factors, policy=str(e.get("policy") or "lerobot"),
                split=str(e.get("split") or "default"),
            )

    codec = wm.get("codec") if wm else None
    src_fps = wm.get("fps", fps) if wm else fps
    return Source("lerobot", path, sorted(by_id), read, env_id=wm.get("env_id"), fps=src_fps, codec=codec, lossy=lossy)
