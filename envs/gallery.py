"""``wm gallery``: render every env under its train and OOD factors into labelled PNGs.

For each env one PNG, a row of labelled tiles: the default factors, two train samples,
then one sample of each OOD split (``ood_visual``, ``ood_geometry``, ``ood_physics``,
``ood_all``) at the highest severity, each the first observation after a seeded reset.
Physical factors do not show in a still frame; their tile is there so every split of
the protocol has a picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

TILES: tuple[tuple[str, dict], ...] = (
    ("default", {}),
    ("train", {"split": "train"}),
    ("train", {"split": "train"}),
    ("ood_visual", {"split": "ood_visual", "severity": 3}),
    ("ood_geometry", {"split": "ood_geometry", "severity": 3}),
    ("ood_physics", {"split": "ood_physics", "severity": 3}),
    ("ood_all", {"split": "ood_all", "severity": 3}),
)


def render_tiles(env_id: str, resolution: int = 128, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """``(label, uint8 (resolution, resolution, 3))`` for every tile of `TILES`."""
    import envs

    env = envs.make(env_id, resolution=resolution)
    try:
        tiles = []
        for i, (label, options) in enumerate(TILES):
            obs, _ = env.reset(seed=seed + i, options=options or None)
            tiles.append((label, np.asarray(obs).copy()))
        return tiles
    finally:
        env.close()


def write_gallery(
    out: str | Path, env_ids: Sequence[str] | None = None, resolution: int = 128, seed: int = 0
) -> list[Path]:
    """Write ``OUT/<EnvName>.png`` for every env (default: all registered); returns the paths."""
    import cv2

    import envs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for env_id in env_ids or envs.list_envs():
        tiles = render_tiles(env_id, resolution, seed)
        band = 18
        row = []
        for label, img in tiles:
            tile = np.full((resolution + band, resolution, 3), 255, np.uint8)
            tile[band:] = img
            cv2.putText(tile, label, (3, band - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
            row.append(tile)
            row.append(np.full((resolution + band, 4, 3), 255, np.uint8))
        strip = np.concatenate(row[:-1], axis=1)
        path = out / (env_id.split("/")[-1].removesuffix("-v0") + ".png")
        cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths
