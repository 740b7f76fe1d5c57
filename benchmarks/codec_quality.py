"""Probe: bytes per frame and PSNR of the h264 codec's settings on every env's expert frames.

How the defaults of `data.video.VideoOptions` were chosen (crf, 4:4:4 vs 4:2:0 chroma):
for each registered env, the first `--frames` frames of expert episode seed 0 (rolled as
``wm collect`` rolls them, `benchmarks.data.expert_episodes`) at each `--resolution`
are encoded as one episode (groups of 16) per (crf, pix_fmt) and decoded again; JPEG
q95 of the same frames is the reference. PSNR pools the squared error over all frames.
No timing: the numbers do not depend on the machine.

    python -m benchmarks.codec_quality [--resolution 64 224] [--frames 65] [--crf 23 20 18]
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 arrays `a` against `b` (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def probe(resolution: int, frames: int = 65, crfs: Sequence[int] = (23, 20, 18),
          pix_fmts: Sequence[str] = ("yuv444p", "yuv420p")) -> dict[str, dict[str, Any]]:
    """``{env_id: {"frames", "jpeg_bytes", "h264": {"<pix_fmt> crf<N>": {"bytes", "psnr_db"}}}}``."""
    import cv2

    import envs
    from benchmarks.data import expert_episodes
    from data.video import VideoOptions, decode_group, encode_groups

    out: dict[str, dict[str, Any]] = {}
    for env_id in envs.list_envs():
        (clip,), _ = expert_episodes(resolution, 1, max_steps=frames - 1, env_id=env_id)
        jpeg = np.mean([len(cv2.imencode(".jpg", np.ascontiguousarray(f[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])[1])
                        for f in clip])
        row: dict[str, Any] = {"frames": len(clip), "jpeg_bytes": float(jpeg), "h264": {}}
        for crf in crfs:
            for pix_fmt in pix_fmts:
                opts = VideoOptions(crf=int(crf), pix_fmt=pix_fmt)
                groups = encode_groups(clip, opts)
                back = np.concatenate([decode_group(g, clip.shape[1:], opts) for g in groups])
                row["h264"][f"{pix_fmt} crf{crf}"] = {"bytes": sum(map(len, groups)) / len(clip), "psnr_db": psnr(back, clip)}
        out[env_id] = row
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.codec_quality", description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, nargs="+", default=[64, 224], help="frame sizes")
    p.add_argument("--frames", type=int, default=65, help="frames per env (from the start of expert episode 0)")
    p.add_argument("--crf", type=int, nargs="+", default=[23, 20, 18], help="libx264 crf values")
    args = p.parse_args(argv)
    if args.frames < 1 or any(not 16 <= r <= 1024 for r in args.resolution):
        p.error("--frames must be >= 1 and every --resolution in [16, 1024]")
    for res in args.resolution:
        result = probe(res, args.frames, tuple(args.crf))
        names = list(next(iter(result.values()))["h264"])
        print(f"\n{res}², first {args.frames} frames of expert episode 0: bytes/frame and PSNR dB\n")
        print("| env | frames | jpeg q95 bytes | " + " | ".join(names) + " |")
        print("|---" * (3 + len(names)) + "|")
        for env_id, row in result.items():
            cells = [f"{c['bytes']:,.0f} B {c['psnr_db']:.1f}" for c in row["h264"].values()]
            print(f"| {env_id} | {row['frames']} | {row['jpeg_bytes']:,.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
