"""TwoRoom: a point agent in two rooms joined by a door, seen from above in pixels."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from envs.base import WorldModelEnv, check_vector
from envs.distractors import arena_box, distractor_factor, make_patches
from envs.factors import Factor, FactorSpace

AGENT_RADIUS = 0.04
"""Radius of the agent disc (world units; the world is the unit square)."""
WALL_THICKNESS = 0.06
"""Thickness of the middle wall, centred at x = 0.5."""
OUTER_WALL = 0.03
"""Thickness of the outer walls along the border of the unit square."""
SUCCESS_RADIUS = 0.06
"""An episode succeeds when the agent centre is closer than this to the goal."""
MIN_GOAL_DISTANCE = 0.25
"""Sampled goals lie at least this far from the sampled start."""
OTHER_ROOM_PROB = 0.8
"""Probability that a sampled goal lies in the room the start is not in."""
MIDDLE = 0.5

_RGB = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

TWO_ROOM_FACTORS = FactorSpace(
    [
        Factor(
            "agent_color", "visual", (0.9, 0.2, 0.2),
            train=((0.7, 0.0, 0.0), (1.0, 0.35, 0.35)),
            ood=(((0.0, 0.0, 0.65), (0.3, 0.35, 1.0)), ((0.0, 0.65, 0.0), (0.3, 1.0, 0.35))),
            doc="RGB colour of the agent disc (train: reds; ood: blues, greens)",
        ),
        Factor(
            "background_color", "visual", (0.85, 0.85, 0.85),
            train=((0.75, 0.75, 0.75), (0.95, 0.95, 0.95)),
            ood=(((0.35, 0.35, 0.35), (0.55, 0.55, 0.55)), ((0.55, 0.75, 0.85), (0.7, 0.9, 1.0))),
            doc="RGB colour of the floor (train: light greys; ood: dark greys, blue tints)",
        ),
        Factor(
            "wall_color", "visual", (0.3, 0.3, 0.3),
            train=((0.2, 0.2, 0.2), (0.4, 0.4, 0.4)),
            ood=(((0.55, 0.3, 0.05), (0.75, 0.45, 0.2)), ((0.0, 0.4, 0.4), (0.15, 0.6, 0.6))),
            doc="RGB colour of the walls (train: dark greys; ood: browns, teals)",
        ),
        Factor(
            "door_position", "geometric", 0.5, train=(0.35, 0.65), ood=((0.15, 0.3), (0.7, 0.85)),
            doc="y coordinate of the door centre in the middle wall",
        ),
        Factor(
            "door_width", "geometric", 0.2, train=(0.16, 0.24), ood=((0.11, 0.14), (0.26, 0.32)),
            doc="height of the door gap (always wider than the agent's diameter 0.08)",
        ),
        Factor(
            "agent_speed", "physical", 0.03, train=(0.025, 0.035), ood=((0.015, 0.02), (0.04, 0.05)),
            doc="displacement per step at full action (world units)",
        ),
        distractor_factor(),
    ]
)

Rect = tuple[float, float, float, float]  # (x0, y0, x1, y1)


def _rgb255(color: tuple[float, ...]) -> tuple[int, int, int]:
    return tuple(int(round(c * 255.0)) for c in color)  # type: ignore[return-value]


class TwoRoomEnv(WorldModelEnv):
    """Point agent navigating between two rooms through a door, observed as RGB pixels.

    World: the unit square, x to the right, y *down* (the same orientation as image rows
    and columns). Outer walls of thickness `OUTER_WALL` line the border; a middle wall of
    thickness `WALL_THICKNESS` at x = 0.5 has a door (gap) centred at y = ``door_position``
    of height ``door_width``. The agent is a disc of radius `AGENT_RADIUS`.

    - observation: ``uint8 (resolution, resolution, 3)``; the goal is *not* drawn
      (use `render_goal` for a goal image).
    - action: ``Box(-1, 1, (2,), float32)``, a desired velocity; clipped to the box; the
      displacement per step is ``agent_speed * action``, moved along x then along y, each
      clamped against the walls (expanded by the radius), so nothing tunnels.
    - state: ``float64 (2,)`` agent centre; goal: a position of the same shape.
    - reward ``-goal_distance``; ``terminated = success = goal_distance < SUCCESS_RADIUS``.
    - ``distractor`` factor (default 0: none): moving patches of flickering noise on the
      floor, in the observation only (`envs.distractors`); the agent and walls stay visible.
    - reset options: ``factors`` (dict, validated), ``split`` (sample factors from a
      split, optionally at an OOD ``severity`` 1..3; explicit ``factors`` override the
      named keys), ``state`` and ``goal_state``
      (checked: shape (2,), finite, in free space). Without them the start is uniform in
      free space and the goal lies in the other room with probability 0.8, at least
      `MIN_GOAL_DISTANCE` from the start.

    Version history:
        v0: initial version; later added without changing a default frame, state or any
            draw of a seeded reset: the ``distractor`` factor (drawn from its own stream
            by the splits, which now put noise patches into their frames); `draw_goal`
            (the reset's goal draw, from a given generator: the same draws) and the
            ``tour_expert`` policy.
    """

    factor_space: FactorSpace = TWO_ROOM_FACTORS
    state_dim: int = 2
    expert = "envs.policies:TwoRoomExpert"
    tour_expert = "envs.policies:TwoRoomTourExpert"

    def __init__(self, resolution: int = 64, render_mode: str | None = None, terminate_on_success: bool = True) -> None:
        """Create the env; `resolution` is the image side in pixels (>= 8); `terminate_on_success`
        False keeps an episode running past success (see `WorldModelEnv`)."""
        super().__init__(resolution, render_mode, terminate_on_success)
        self._set_factors(self.factor_space.defaults())
        self._begin_episode(np.array([0.25, 0.5]), np.array([0.75, 0.5]))

    # -- layout ----------------------------------------------------------------------
    def _apply_factors(self, factors: dict) -> None:
        """Install validated factors: walls, collision boxes and the static background."""
        self._speed = float(factors["agent_speed"])
        self._walls = self.wall_rects(factors["door_position"], factors["door_width"])
        r = AGENT_RADIUS
        self._boxes = [(x0 - r, y0 - r, x1 + r, y1 + r) for x0, y0, x1, y1 in self._walls]
        self._background = self._render_background()
        self._agent_rgb = _rgb255(factors["agent_color"])
        self._noise = make_patches(factors["distractor"], self.resolution, self._episode_key,
                                   arena_box(self.resolution, OUTER_WALL))

    @staticmethod
    def wall_rects(door_position: float, door_width: float) -> list[Rect]:
        """Wall rectangles ``(x0, y0, x1, y1)`` in world units for a door layout."""
        b, h = OUTER_WALL, WALL_THICKNESS / 2
        rects = [(0.0, 0.0, b, 1.0), (1.0 - b, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, b), (0.0, 1.0 - b, 1.0, 1.0)]
        lo, hi = door_position - door_width / 2, door_position + door_width / 2
        if lo > 0.0:
            rects.append((MIDDLE - h, 0.0, MIDDLE + h, lo))
        if hi < 1.0:
            rects.append((MIDDLE - h, hi, MIDDLE + h, 1.0))
        return rects

    def door_span(self) -> tuple[float, float]:
        """``(low, high)`` range of y that the agent *centre* can have inside the doorway."""
        door, width = self._factors["door_position"], self._factors["door_width"]
        lo = max(door - width / 2, OUTER_WALL) + AGENT_RADIUS
        hi = min(door + width / 2, 1.0 - OUTER_WALL) - AGENT_RADIUS
        return lo, hi

    def is_free(self, position: np.ndarray) -> bool:
        """True if the agent disc centred at `position` overlaps no wall (touching is allowed)."""
        x, y = float(position[0]), float(position[1])
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            return False
        return not any(x0 < x < x1 and y0 < y < y1 for x0, y0, x1, y1 in self._boxes)

    # -- properties ----------------------------------------------------------------------
    @property
    def state(self) -> np.ndarray:
        """Agent centre, float64 (2,) (a copy)."""
        return self._pos.copy()

    @property
    def agent_speed(self) -> float:
        """Displacement per step at full action."""
        return self._speed

    def render_goal(self) -> np.ndarray:
        """The scene as it looks with the agent at the goal, ``uint8 (H, W, 3)``."""
        return self._render_agent(self._goal)

    # -- hooks of WorldModelEnv -------------------------------------------------------------
    def _simulate(self, action: list[float]) -> None:
        ax, ay = action
        x, y = self._move(float(self._pos[0]), float(self._pos[1]), self._speed * ax, self._speed * ay)
        self._pos = np.array([x, y])

    @classmethod
    def _simulate_many(cls, envs: list["TwoRoomEnv"], actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All B x N sequences stepped at once in NumPy: the sweep of `_move`, vectorised.

        A leg of `_move` stops at the nearest expanded wall edge it crosses (the loop over
        boxes keeps the smallest such edge), so ``min(x + dx, crossed x0's)`` is the same
        number; every operation is the float64 one `_move` does. Actions (B, N, T, 2),
        clipped; returns goal distances (B, N, T) and last positions (B, N, 2).
        """
        B, N, T, _ = actions.shape
        k = max(len(e._boxes) for e in envs)
        boxes = np.full((B, 1, k, 4), np.nan)  # padding: NaN compares False, never hit
        for b, e in enumerate(envs):
            boxes[b, 0, : len(e._boxes)] = e._boxes
        x0, y0, x1, y1 = (boxes[..., i] for i in range(4))  # (B, 1, K)
        speed = np.array([e._speed for e in envs])[:, None]  # (B, 1)
        goal = np.array([e._goal for e in envs])[:, None]  # (B, 1, 2)
        x = np.repeat(np.array([e._pos[0] for e in envs])[:, None], N, axis=1)  # (B, N)
        y = np.repeat(np.array([e._pos[1] for e in envs])[:, None], N, axis=1)
        out = np.empty((B, N, T))
        inf = np.inf
        for t in range(T):
            dx, dy = speed * actions[:, :, t, 0], speed * actions[:, :, t, 1]
            nx = x + dx
            xs, ys, dxs, nxs = x[..., None], y[..., None], dx[..., None], nx[..., None]
            rows = (y0 < ys) & (ys < y1)
            stop_hi = np.where(rows & (dxs > 0.0) & (xs <= x0) & (x0 < nxs), x0, inf).min(-1)
            stop_lo = np.where(rows & (dxs < 0.0) & (nxs < x1) & (x1 <= xs), x1, -inf).max(-1)
            x = np.where(dx > 0.0, np.minimum(nx, stop_hi), np.where(dx < 0.0, np.maximum(nx, stop_lo), x))
            ny = y + dy
            xs, ys, dys, nys = x[..., None], y[..., None], dy[..., None], ny[..., None]
            cols = (x0 < xs) & (xs < x1)
            stop_hi = np.where(cols & (dys > 0.0) & (ys <= y0) & (y0 < nys), y0, inf).min(-1)
            stop_lo = np.where(cols & (dys < 0.0) & (nys < y1) & (y1 <= ys), y1, -inf).max(-1)
            y = np.where(dy > 0.0, np.minimum(ny, stop_hi), np.where(dy < 0.0, np.maximum(ny, stop_lo), y))
            out[:, :, t] = np.hypot(x - goal[..., 0], y - goal[..., 1])
        return out, np.stack([x, y], axis=-1)

    def _observe(self) -> np.ndarray:
        return self._render_agent(self._pos)

    def _progress(self) -> tuple[float, bool]:
        d = math.hypot(float(self._pos[0] - self._goal[0]), float(self._pos[1] - self._goal[1]))
        return d, d < SUCCESS_RADIUS

    def _write_state(self, state: np.ndarray) -> None:
        self._pos = state

    def _move(self, x: float, y: float, dx: float, dy: float) -> tuple[float, float]:
        """Sweep along x then y; each leg stops at the first expanded wall box it meets."""
        boxes = self._boxes
        if dx != 0.0:
            nx = x + dx
            for x0, y0, x1, y1 in boxes:
                if y0 < y < y1:
                    if dx > 0.0 and x <= x0 < nx:
                        nx = x0
                    elif dx < 0.0 and nx < x1 <= x:
                        nx = x1
            x = nx
        if dy != 0.0:
            ny = y + dy
            for x0, y0, x1, y1 in boxes:
                if x0 < x < x1:
                    if dy > 0.0 and y <= y0 < ny:
                        ny = y0
                    elif dy < 0.0 and ny < y1 <= y:
                        ny = y1
            y = ny
        return x, y

    def _check_state(self, value: Any, name: str) -> np.ndarray:
        p = check_vector(value, name, (2,))
        if not self.is_free(p):
            lo, hi = self.door_span()
            raise ValueError(
                f"{name}={p.tolist()} is not in free space: the agent centre must stay "
                f"{OUTER_WALL + AGENT_RADIUS:g} from the border and off the middle wall "
                f"(x in [{MIDDLE - WALL_THICKNESS / 2 - AGENT_RADIUS:g}, {MIDDLE + WALL_THICKNESS / 2 + AGENT_RADIUS:g}] "
                f"only for y in the door [{lo:.4g}, {hi:.4g}])"
            )
        return p

    _check_goal = _check_state

    def _sample_start(self) -> np.ndarray:
        lo, hi = OUTER_WALL + AGENT_RADIUS, 1.0 - OUTER_WALL - AGENT_RADIUS
        while True:  # free space covers most of the square: a few draws at most
            p = self.np_random.uniform(lo, hi, size=2)
            if self.is_free(p):
                return p

    def _sample_goal(self, start: np.ndarray) -> np.ndarray:
        return self.draw_goal(start, self.np_random)

    @staticmethod
    def draw_goal(start: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A goal drawn from `rng` as a reset draws one for `start` (float64 (2,) both): in the
        other room with probability `OTHER_ROOM_PROB`, at least `MIN_GOAL_DISTANCE` away.
        A reset calls it with the env's own generator; the tour expert
        (`envs.policies.TwoRoomTourExpert`) with its own, for its next target."""
        other = rng.random() < OTHER_ROOM_PROB
        left = (start[0] >= MIDDLE) if other else (start[0] < MIDDLE)
        r, h = AGENT_RADIUS, WALL_THICKNESS / 2
        x_lo, x_hi = (OUTER_WALL + r, MIDDLE - h - r) if left else (MIDDLE + h + r, 1.0 - OUTER_WALL - r)
        y_lo, y_hi = OUTER_WALL + r, 1.0 - OUTER_WALL - r
        while True:  # a room is 0.36 x 0.86 for the centre: far points always exist
            g = rng.uniform((x_lo, y_lo), (x_hi, y_hi))
            if np.hypot(*(g - start)) >= MIN_GOAL_DISTANCE:
                return g

    def _render_background(self) -> np.ndarray:
        n = self.resolution
        img = np.empty((n, n, 3), np.uint8)
        img[:] = _rgb255(self._factors["background_color"])
        wall = _rgb255(self._factors["wall_color"])
        self._inner_walls = []  # (r0, r1, c0, c1) of the middle wall, repainted over distractors
        for k, (x0, y0, x1, y1) in enumerate(self._walls):
            # pixel i covers [i/n, (i+1)/n); it is wall if its centre lies in the rectangle
            c0, c1 = math.ceil(x0 * n - 0.5), math.ceil(x1 * n - 0.5)
            r0, r1 = math.ceil(y0 * n - 0.5), math.ceil(y1 * n - 0.5)
            if k >= 4:  # wall_rects lists the 4 outer walls first; distractors stay inside them
                self._inner_walls.append((max(r0, 0), max(r1, 0), max(c0, 0), max(c1, 0)))
            img[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = wall
        return img

    def _floor(self) -> np.ndarray:
        """A fresh copy of the static background, with the distractor patches of this step under the walls."""
        img = self._background.copy()
        if self._noise is not None:
            self._noise.draw(img, self._frame_index)  # inside the outer walls
            bg = self._background
            for r0, r1, c0, c1 in self._inner_walls:  # a copy: much faster than broadcasting a colour
                img[r0:r1, c0:c1] = bg[r0:r1, c0:c1]
        return img

    _SHIFT = 4  # sub-pixel bits for cv2 drawing

    def _render_agent(self, pos: np.ndarray) -> np.ndarray:
        """A fresh frame: background (with this step's distractors) plus the anti-aliased agent disc at `pos`."""
        img = self._floor()
        n, s = self.resolution, 1 << self._SHIFT
        cx = int(round((float(pos[0]) * n - 0.5) * s))
        cy = int(round((float(pos[1]) * n - 0.5) * s))
        cv2.circle(img, (cx, cy), int(round(AGENT_RADIUS * n * s)), self._agent_rgb, -1, cv2.LINE_AA, self._SHIFT)
        return img
