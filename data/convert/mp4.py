"""``mp4`` (read/write): a folder of MP4 videos plus one JSON line per episode::

      DST/info.json           {"format": "worldmodel-mp4", version, fps, env_id, codec,
                               image_shape, action_dim, action_dtype, state_dim, state_shape,
                               state_dtype, extras {name: {dtype, shape}}}
      DST/episodes.jsonl      one line per episode: episode_id, file, length, env_id, seed,
                              factors, policy, split, and per step action (T, A), state
                              (T, *state_shape), reward, terminated, truncated; extras
                              {name: (T, *shape)} for the extras that are not cameras;
                              extra_files {name: file} for the extra cameras
                              (JSON numbers: exact for every float and int dtype)
      DST/episode_<id:06d>.mp4          the frames (H.264 yuv420p via PyAV: lossy)
      DST/episode_<id:06d>.<name>.mp4   each extra camera, likewise

Files written before ``action_dtype`` existed read back as float32 actions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..schema import is_camera
from .episode import Episode, Source, make_episode
from .frames import read_video, video_writer, write_frames
from ..owned import describe_foreign, foreign_entries, json_marker
from .output import fresh_output

MP4_FORMAT = "worldmodel-mp4"
DEFAULT_FPS = 10.0
MP4_FILES = ("info.json", "episodes.jsonl")
MP4_VIDEO_NAME = r"episode_-?\d+(\.\w+)?\.mp4"  # episode_<id>.mp4, episode_<id>.<camera>.mp4


def mp4_not_ours(path: Path) -> str | None:
    """None if `path` is an MP4 folder `write_mp4` wrote (``info.json`` names `MP4_FORMAT`,
    nothing else but its files), else the reason it is not (a `Recogniser`)."""
    if json_marker(path / "info.json") != MP4_FORMAT:
        return f"not an MP4 folder this project wrote (no info.json naming format {MP4_FORMAT!r})"
    extra = foreign_entries(path, MP4_FILES, MP4_VIDEO_NAME)
    if extra:
        return f"an MP4 folder that also holds files this project did not write ({describe_foreign(extra)})"
    return None


def write_mp4(episodes: Iterator[Episode], dst: Path, src: Source, mode: str, lossy: list[str]) -> list[int]:
    """Write `episodes` as an MP4 folder; returns the episode ids written."""
    fps = float(src.fps or DEFAULT_FPS)
    written = []
    with fresh_output(dst, mode, is_dir=True, recognise=mp4_not_ours) as tmp:
        header: dict[str, Any] = {"format": MP4_FORMAT, "version": 1, "fps": fps, "env_id": src.env_id, "codec": src.codec}
        with open(tmp / "episodes.jsonl", "w") as out:
            for k, ep in enumerate(episodes):
                eid = ep.episode_id if ep.episode_id is not None else k
                name = f"episode_{eid:06d}.mp4"
                _write_video(tmp / name, fps, ep.pixels, dst / name)
                specs = ep.extra_specs
                files = {}
                for cam in ep.cameras:
                    files[cam] = f"episode_{eid:06d}.{cam}.mp4"
                    _write_video(tmp / files[cam], fps, ep.extras[cam], dst / files[cam])
                if files and not any("extra cameras" in n and "MP4" in n for n in lossy):
                    lossy.append(f"extra cameras {sorted(files)} encoded as MP4 video (lossy)")
                header.update(image_shape=list(ep.image_shape), action_dim=int(ep.action.shape[1]),
                              action_dtype=ep.action.dtype.name, state_dim=int(np.prod(ep.state.shape[1:])),
                              state_shape=list(ep.state.shape[1:]), state_dtype=ep.state.dtype.name, extras=specs)
                rec = {
                    "episode_id": int(eid), "file": name, "length": ep.length, "env_id": ep.env_id, "seed": ep.seed,
                    "factors": {k2: (list(v) if isinstance(v, tuple) else v) for k2, v in ep.factors.items()},
                    "policy": ep.policy, "split": ep.split, "action": ep.action.tolist(), "state": ep.state.tolist(),
                    "reward": ep.reward.tolist(), "terminated": ep.terminated.tolist(), "truncated": ep.truncated.tolist(),
                    "extras": {n: v.tolist() for n, v in ep.extras.items() if n not in files}, "extra_files": files,
                }
                out.write(json.dumps(rec) + "\n")
                written.append(int(eid))
        (tmp / "info.json").write_text(json.dumps(header, indent=2) + "\n")
    return written


def _write_video(path: Path, fps: float, frames: np.ndarray, where: Path) -> None:
    with video_writer(path, fps, frames.shape[1:], where) as writer:
        write_frames(writer, frames)


def mp4_source(path: Path) -> Source:
    """Open an MP4 folder written by `write_mp4`."""
    info = {}
    if (path / "info.json").is_file():
        info = json.loads((path / "info.json").read_text())
    lines = {}
    for n, line in enumerate((path / "episodes.jsonl").read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}/episodes.jsonl line {n + 1}: not JSON ({e})") from None
        missing = [k for k in ("episode_id", "length", "action", "state") if k not in rec]
        if missing:
            raise ValueError(f"{path}/episodes.jsonl line {n + 1}: missing keys {missing}")
        lines[int(rec["episode_id"])] = rec
    state_dtype = info.get("state_dtype", "float64")
    action_dtype = info.get("action_dtype", "float32")
    specs: dict[str, dict] = info.get("extras") or {}
    lossy = ["frames decoded from MP4 video (lossy)"]
    cams = sorted(n for n, s in specs.items() if is_camera(s))
    if cams:
        lossy.append(f"extra cameras {cams} decoded from MP4 video (lossy)")

    def read(ids: Sequence[int]) -> Iterator[Episode]:
        for eid in ids:
            rec = lines[eid]
            where = f"{path} episode {eid}"
            n = int(rec["length"])
            pixels = read_video(path / rec.get("file", f"episode_{eid:06d}.mp4"), 0, n, where)
            extras = {}
            for name, spec in specs.items():
                if is_camera(spec):
                    extras[name] = read_video(path / rec["extra_files"][name], 0, n, where)
                else:
                    extras[name] = np.asarray(rec["extras"][name], spec["dtype"]).reshape((n, *spec["shape"]))
            yield make_episode(
                where, pixels, np.asarray(rec["action"], action_dtype), np.asarray(rec["state"], state_dtype),
                rec.get("reward"), rec.get("terminated"), rec.get("truncated"), extras=extras, episode_id=int(eid),
                env_id=rec.get("env_id", info.get("env_id")), seed=rec.get("seed"), factors=dict(rec.get("factors") or {}),
                policy=str(rec.get("policy", "unknown")), split=str(rec.get("split", "default")),
            )

    return Source("mp4", path, sorted(lines), read, env_id=info.get("env_id"), fps=info.get("fps"),
                  codec=info.get("codec"), lossy=lossy)
