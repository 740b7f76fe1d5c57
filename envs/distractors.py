"""Distractors: moving patches of flickering noise, drawn into an env's observation only.

The ``distractor`` factor (`distractor_factor`, on ``wm/TwoRoom-v0`` and ``wm/PushT-v0``)
is the number of square noise patches drawn over the floor of every frame: 0 (the
default) draws nothing, so the default observations are the ones the envs always had.
It is a *noisy feature* in the sense of the JEPA papers: a large share of the pixel
variance that says nothing about the state and cannot be predicted from the past.

- Each patch is a square of side `PATCH_SIZE` of the frame, filled with fresh uniform RGB
  noise at every step (the texture of step t is unrelated to that of step t - 1).
- Each patch moves in a straight line at a constant speed (`SPEED`, in frame sides per
  step, direction uniform) and bounces off the arena's outer walls: its motion is
  predictable, its content is not.
- Patches lie on the floor only: inner walls, the agent and the T block are drawn over
  them, so nothing the task depends on is ever hidden.
- Everything is a function of the episode key and the step index (`NoisePatches.draw`):
  the key is derived at ``reset`` from the env's seeded generator without advancing it
  (`envs.base.episode_key`), so a reset with the same seed and options followed by the
  same actions re-renders the same frames, and turning distractors on changes no
  state, reward, success or other factor. The frame index restarts at 0 on every reset;
  `render_goal` draws the patches of the current step.

Cost per frame: one slice copy per patch from a shared pool of random bytes (the texture of a
patch at a step is the pool at an offset drawn from the episode key), plus the inner
walls (TwoRoom's middle wall) repainted over the patches.
"""

from __future__ import annotations

import math

import numpy as np

from envs.factors import Factor

PATCH_SIZE = 0.15
"""Side of a noise patch, as a fraction of the frame side (10 px at 64², 34 px at 224²)."""
SPEED = (0.01, 0.04)
"""Range of a patch's speed, in frame sides per env step (drawn uniformly per patch)."""
TRAIN_RANGE = (0.0, 4.0)
"""Train range of the ``distractor`` factor (patches; 0, the default, is none)."""
OOD_RANGES = ((6.0, 12.0),)
"""OOD range(s) of the ``distractor`` factor (severity 1: 6-8 patches, 3: 10-12)."""
_CHUNK = 256  # steps of patch positions and texture offsets computed at once
_POOL_BYTES = 1 << 22  # the shared noise pool (4 MiB), at least 64 textures at any resolution
_POOL_SEED = 0x5EED_D157
_POOLS: dict[int, np.ndarray] = {}


def distractor_factor() -> Factor:
    """The ``distractor`` factor: number of moving noise patches (visual; default 0: none).

    It is drawn from a stream of its own (``own_stream``), so the splits that now draw it
    leave every other factor, start and goal of a seeded reset as they were.
    """
    return Factor(
        "distractor", "visual", 0.0, train=TRAIN_RANGE, ood=OOD_RANGES, own_stream=True,
        doc="number of moving patches of flickering RGB noise on the floor, rounded to an integer "
            "(0: none; observation only, the dynamics never change)",
    )


def patch_count(value: float) -> int:
    """The number of patches a ``distractor`` value stands for: rounded half up (2.5 -> 3)."""
    return int(math.floor(float(value) + 0.5))


def _pool(nbytes: int) -> np.ndarray:
    """The process-wide pool of uniform random bytes (uint8 (nbytes,)), the same in every process."""
    pool = _POOLS.get(nbytes)
    if pool is None:
        pool = _POOLS[nbytes] = np.frombuffer(np.random.default_rng(_POOL_SEED).bytes(nbytes), np.uint8)
    return pool


class NoisePatches:
    """The noise patches of one episode at one resolution (see the module docstring).

    Args:
        count: number of patches (>= 1).
        resolution: frame side in pixels.
        key: the episode key (an integer in [0, 2**63)); it alone fixes the motion and
            the textures at every step.
        box: ``(low, high)`` pixel range, in rows and columns alike, that the patches stay
            in (the arena inside its outer walls); default the whole frame.
    """

    def __init__(self, count: int, resolution: int, key: int, box: tuple[int, int] | None = None) -> None:
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"NoisePatches: count={count!r}, expected an integer >= 1")
        self.count, self.resolution, self.key = int(count), int(resolution), int(key)
        low, high = (0, self.resolution) if box is None else (int(box[0]), int(box[1]))
        if not 0 <= low < high <= self.resolution:
            raise ValueError(f"NoisePatches: box={box!r}, expected 0 <= low < high <= resolution={self.resolution}")
        self.side = min(max(1, int(round(PATCH_SIZE * resolution))), high - low)
        self._low = low
        self._span = float(high - low - self.side)  # top-left corners lie in low + [0, span]
        self._need = self.side * self.side * 3
        self._bytes = max(_POOL_BYTES, 64 * self._need)
        motion = np.random.default_rng([self.key, 0])
        self._start = motion.uniform(0.0, self._span, (self.count, 2))  # (K, 2) row, col in pixels from low
        angle = motion.uniform(0.0, 2.0 * math.pi, self.count)
        speed = motion.uniform(*SPEED, self.count) * resolution
        self._velocity = np.stack([np.sin(angle), np.cos(angle)], axis=1) * speed[:, None]  # (K, 2) px/step
        self._pool = _pool(self._bytes)
        self._chunk = -1
        self._corners = np.empty((0, self.count, 2), np.int64)
        self._rows: list = []  # per step of the chunk: (corners as lists, texture offsets as a list)

    def positions(self, step: int) -> np.ndarray:
        """Top-left pixel corners (row, col) of the patches at `step`, int64 (K, 2)."""
        self._load(step)
        return self._corners[step % _CHUNK].copy()

    def _load(self, step: int) -> None:
        """Compute the corners and texture offsets of the chunk of steps that holds `step`."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"NoisePatches: step={step!r}, expected an integer >= 0")
        chunk = int(step) // _CHUNK
        if chunk == self._chunk:
            return
        t = np.arange(chunk * _CHUNK, (chunk + 1) * _CHUNK, dtype=np.float64)[:, None, None]  # (C, 1, 1)
        travel = self._start[None] + self._velocity[None] * t  # (C, K, 2), unbounded
        if self._span > 0.0:  # bounce: a triangle wave of period 2 * span
            travel = np.mod(travel, 2.0 * self._span)
            travel = np.where(travel > self._span, 2.0 * self._span - travel, travel)
        else:
            travel = np.zeros_like(travel)
        self._corners = np.rint(travel).astype(np.int64) + self._low
        self._rows = list(zip(self._corners.tolist(), self._offsets_for(chunk).tolist()))
        self._chunk = chunk

    def _offsets_for(self, chunk: int) -> np.ndarray:
        """Texture offsets into the pool of the chunk's steps, int64 (CHUNK, K)."""
        textures = np.random.default_rng([self.key, 1, chunk])
        return textures.integers(0, self._bytes - self._need + 1, (_CHUNK, self.count))

    def draw(self, img: np.ndarray, step: int) -> None:
        """Paint the patches of `step` into `img` (uint8 (resolution, resolution, 3)) in place."""
        i = step - self._chunk * _CHUNK
        if self._chunk < 0 or not 0 <= i < _CHUNK:  # another chunk (or a bad step: refused there)
            self._load(step)
            i = step - self._chunk * _CHUNK
        pool, s, need = self._pool, self.side, self._need
        corners, offsets = self._rows[i]
        for (r, c), o in zip(corners, offsets):
            img[r : r + s, c : c + s] = pool[o : o + need].reshape(s, s, 3)


def make_patches(value: float, resolution: int, key: int, box: tuple[int, int] | None = None) -> NoisePatches | None:
    """The patches for a validated ``distractor`` value (inside pixel range `box`), or None when it rounds to 0."""
    count = patch_count(value)
    return NoisePatches(count, resolution, key, box) if count > 0 else None


def arena_box(resolution: int, wall: float) -> tuple[int, int]:
    """Pixel range ``(low, high)`` inside outer walls of thickness `wall` (world units, unit square),
    by the envs' pixel-centre rule: pixel i is wall when its centre ``(i + 0.5) / n`` lies in the wall."""
    n = resolution
    return max(math.ceil(wall * n - 0.5), 0), min(math.ceil((1.0 - wall) * n - 0.5), n)
