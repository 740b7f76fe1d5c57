"""PushT: an agent disc pushes a T-shaped block to a goal pose, seen from above in pixels."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pymunk

from envs.base import WorldModelEnv, check_vector
from envs.distractors import arena_box, distractor_factor, make_patches
from envs.factors import Factor, FactorSpace

OUTER_WALL = 0.03
"""Thickness of the walls along the border of the unit-square arena."""
BAR_LENGTH = 0.22
"""Length of the T's top bar at ``block_scale = 1`` (world units)."""
BAR_WIDTH_RATIO = 0.25
"""Thickness of the bar (and width of the stem) as a fraction of the bar length."""
SUBSTEPS = 10
"""Physics substeps per env step."""
DT = 0.01
"""Physics substep (s); one env step is ``SUBSTEPS * DT = 0.1`` s."""
ACTION_SCALE = 0.1
"""Offset of the PD target from the agent at full action (world units)."""
AGENT_KV = 20.0
"""Velocity gain of the agent's PD controller (1/s); the position gain is the ``agent_gain`` factor."""
AGENT_MASS = 1.0
"""Mass of the agent disc (the block's mass is the ``block_mass`` factor)."""
SUCCESS_POSITION = 0.02
"""Success needs the block centre within this distance of the goal position ..."""
SUCCESS_ANGLE = 0.15
"""... and the block angle within this many radians of the goal angle (wrapped)."""
CONTACT_TOLERANCE = 0.01
"""How far a given state or goal pose may sink into a wall (or the block into the agent) and still
be accepted: a contact's depth, which poses the simulator reaches have."""
ANGLE_WEIGHT = 0.1
"""``goal_distance = position error + ANGLE_WEIGHT * |wrapped angle error|`` (world units per radian)."""
START_DISTANCE = (0.08, 0.25)
"""Sampled starts put the block centre this far from the goal position ..."""
START_ROTATION = math.pi
"""... and its angle at most this far (radians) from the goal angle (pi: any angle)."""
STATE_DIM = 10

_FRICTION_AGENT, _FRICTION_BLOCK, _FRICTION_WALL = 1.0, 0.6, 0.3  # pymunk multiplies the pair's values


PUSH_T_FACTORS = FactorSpace(
    [
        Factor(
            "agent_color", "visual", (0.25, 0.41, 0.88),
            train=((0.15, 0.3, 0.75), (0.35, 0.5, 0.95)),
            ood=(((0.75, 0.1, 0.1), (0.95, 0.3, 0.3)), ((0.1, 0.6, 0.1), (0.3, 0.8, 0.3))),
            doc="RGB colour of the agent disc (train: blues; ood: reds, greens)",
        ),
        Factor(
            "block_color", "visual", (0.47, 0.53, 0.6),
            train=((0.4, 0.45, 0.5), (0.55, 0.6, 0.65)),
            ood=(((0.8, 0.45, 0.1), (0.95, 0.6, 0.25)), ((0.5, 0.2, 0.6), (0.65, 0.35, 0.75))),
            doc="RGB colour of the T block (train: slate greys; ood: oranges, purples)",
        ),
        Factor(
            "background_color", "visual", (0.95, 0.95, 0.95),
            train=((0.9, 0.9, 0.9), (1.0, 1.0, 1.0)),
            ood=(((0.55, 0.55, 0.55), (0.7, 0.7, 0.7)), ((0.85, 0.8, 0.6), (0.95, 0.9, 0.7))),
            doc="RGB colour of the floor (train: near whites; ood: mid greys, beiges)",
        ),
        Factor(
            "wall_color", "visual", (0.25, 0.25, 0.25),
            train=((0.15, 0.15, 0.15), (0.35, 0.35, 0.35)),
            ood=(((0.45, 0.25, 0.1), (0.6, 0.4, 0.2)), ((0.0, 0.4, 0.4), (0.12, 0.55, 0.55))),
            doc="RGB colour of the arena walls (train: dark greys; ood: browns, teals)",
        ),
        Factor(
            "block_scale", "geometric", 1.0, train=(0.9, 1.1), ood=((0.75, 0.85), (1.15, 1.25)),
            doc="size of the T relative to a bar length of 0.22",
        ),
        Factor(
            "stem_length", "geometric", 0.75, train=(0.65, 0.85), ood=((0.5, 0.6), (0.9, 1.0)),
            doc="length of the T's stem (below the bar) as a fraction of the bar length",
        ),
        Factor(
            "agent_radius", "geometric", 0.025, train=(0.02, 0.03), ood=((0.014, 0.018), (0.032, 0.038)),
            doc="radius of the agent disc (world units)",
        ),
        Factor(
            "goal_offset", "geometric", 0.0, train=(0.0, 0.08), ood=((0.1, 0.14),),
            doc="distance of the goal position from the arena centre (direction uniform)",
        ),
        Factor(
            "block_mass", "physical", 1.0, train=(0.8, 1.25), ood=((0.4, 0.6), (1.6, 2.4)),
            doc="mass of the T block (the agent's mass is 1)",
        ),
        Factor(
            "block_damping", "physical", 8.0, train=(6.0, 10.0), ood=((3.0, 4.5), (13.0, 18.0)),
            doc="floor friction as linear and angular velocity damping of the block (1/s)",
        ),
        Factor(
            "agent_gain", "physical", 100.0, train=(80.0, 125.0), ood=((45.0, 65.0), (150.0, 200.0)),
            doc="position gain of the agent's PD controller (1/s^2); higher is faster",
        ),
        distractor_factor(),
    ]
)


def _rgb255(color: tuple[float, ...]) -> tuple[int, int, int]:
    return tuple(int(round(c * 255.0)) for c in color)  # type: ignore[return-value]


def wrap_angle(angle: float) -> float:
    """`angle` wrapped to ``[-pi, pi)``."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def t_parts(block_scale: float, stem_length: float) -> tuple[np.ndarray, np.ndarray]:
    """Corners of the T's bar and stem rectangles in the block frame, float64 (4, 2) each.

    The block frame has its origin at the T's centre of mass, x along the bar and y
    (down in the image at angle 0) along the stem, from the bar towards the stem's tip.
    """
    lb = BAR_LENGTH * block_scale
    w = BAR_WIDTH_RATIO * lb
    ls = stem_length * lb
    a_bar, a_stem = lb * w, w * ls
    cy = (a_bar * w / 2 + a_stem * (w + ls / 2)) / (a_bar + a_stem)
    bar = np.array([(-lb / 2, 0.0), (lb / 2, 0.0), (lb / 2, w), (-lb / 2, w)]) - (0.0, cy)
    stem = np.array([(-w / 2, w), (w / 2, w), (w / 2, w + ls), (-w / 2, w + ls)]) - (0.0, cy)
    return bar, stem


def t_outline(block_scale: float, stem_length: float) -> np.ndarray:
    """The T's outline (8 corners, clockwise on screen) in the block frame, float64 (8, 2)."""
    bar, stem = t_parts(block_scale, stem_length)
    return np.array([bar[0], bar[1], bar[2], stem[1], stem[2], stem[3], stem[0], bar[3]])


def _rect_moment(mass: float, corners: np.ndarray) -> float:
    """Moment of inertia of a uniform rectangle about the frame origin."""
    size = corners.max(0) - corners.min(0)
    centre = corners.mean(0)
    return mass * (float(size @ size) / 12.0 + float(centre @ centre))


def _to_pose(points: np.ndarray, x: float, y: float, angle: float) -> np.ndarray:
    """Block-frame `points` (N, 2) placed at pose ``(x, y, angle)``, float64 (N, 2)."""
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]]) + (x, y)


class PushTEnv(WorldModelEnv):
    """An agent disc pushes a T-shaped block to a goal pose; RGB pixels from above.

    World: the unit square, x to the right, y *down* (image rows), with walls of
    thickness `OUTER_WALL` along the border; no gravity (a top-down table). pymunk 7
    simulates it in `SUBSTEPS` substeps of `DT` seconds per env step (0.1 s). The block
    is a T (bar of length ``0.22 * block_scale``, bar thickness and stem width a quarter
    of that, stem ``stem_length`` bar lengths long) whose position is its centre of mass
    and whose angle 0 has the bar on top and the stem pointing down (+y). Floor friction
    is a linear and angular velocity damping of the block (``block_damping``), so a
    pushed block slides briefly and settles. The agent is a dynamic disc (mass 1,
    no rotation) that walls and the block stop.

    - observation: ``uint8 (resolution, resolution, 3)``: floor, walls, block, agent,
      drawn with OpenCV straight at the resolution (anti-aliased). The goal is *not* drawn.
    - action: ``Box(-1, 1, (2,), float32)``, clipped: a PD target offset
      ``ACTION_SCALE * action`` from the agent's position at the start of the step. Every
      substep the agent's velocity gets ``(agent_gain * (target - p) - AGENT_KV * v) * DT``.
    - state: ``float64 (10,)`` = agent x, y; block x, y, angle (wrapped to [-pi, pi));
      agent vx, vy; block vx, vy, angular velocity. The velocities are part of the state
      so that `set_state` restores the dynamics exactly (contacts carry no memory from
      one env step to the next). `set_state` and the ``state`` option also take the
      5-vector of poses, with zero velocities.
    - goal: ``float64 (3,)`` block pose x, y, angle; `goal_from_state` takes it from a
      recorded state's block pose (``state[2:5]``).
    - success: block position within `SUCCESS_POSITION` of the goal *and* angle within
      `SUCCESS_ANGLE` radians (the difference wrapped modulo 2 pi; the T has no rotational
      symmetry). ``goal_distance = position error + ANGLE_WEIGHT * |angle error|``;
      reward ``-goal_distance``; ``terminated = success``.
    - `render_goal`: the scene with the block at the goal pose and the agent where it is
      now (called right after `reset`, that is the start position of the agent).
    - factors: colours of agent, block, floor and walls (visual); block scale, stem
      length, agent radius, goal offset from the centre (geometric); block mass, block
      damping, agent PD gain (physical); ``distractor`` (visual, default 0: none): moving
      patches of flickering noise on the floor, under the walls, block and agent, in the
      observation only (`envs.distractors`). See `PUSH_T_FACTORS`.
    - reset options: ``factors``, ``split``, ``severity`` as for every ``wm/`` env;
      ``state`` ((10,) or (5,), checked: agent and block inside the arena, not
      overlapping) and ``goal_state`` ((3,), the T inside the arena). Without them the
      goal lies ``goal_offset`` from the centre with a uniform angle; the block starts
      `START_DISTANCE` (0.08..0.25) from it at a uniform angle, keeping room for the
      agent between the T and the walls, and the agent anywhere at least 0.02 from the T.

    Version history:
        v0: initial version; later added without changing a default frame, state or any
            draw of a seeded reset: the ``distractor`` factor (drawn from its own stream
            by the splits, which now put noise patches into their frames).
    """

    factor_space: FactorSpace = PUSH_T_FACTORS
    state_dim: int = STATE_DIM

    expert = "envs.push_t_expert:PushTExpert"
    goal_angle_dims = (2,)  # the block's angle in the goal (x, y, angle)

    def __init__(self, resolution: int = 64, render_mode: str | None = None, terminate_on_success: bool = True) -> None:
        """Create the env; `resolution` is the image side in pixels (>= 8); `terminate_on_success`
        False keeps an episode running past success (see `WorldModelEnv`)."""
        super().__init__(resolution, render_mode, terminate_on_success)
        self._set_factors(self.factor_space.defaults())
        self._begin_episode(np.array([0.2, 0.2, 0.5, 0.6, 0.0, 0, 0, 0, 0, 0], np.float64), np.array([0.5, 0.5, 0.0]))

    # -- factors and the physics scene ---------------------------------------------------
    def _apply_factors(self, factors: dict) -> None:
        """Install validated factors: a fresh pymunk space, block shape, colours, background."""
        self._radius = float(factors["agent_radius"])
        self._kp = float(factors["agent_gain"])
        damping = float(factors["block_damping"])
        self._block_decay = math.exp(-damping * DT)
        self._outline = t_outline(factors["block_scale"], factors["stem_length"])
        self._bar, self._stem = t_parts(factors["block_scale"], factors["stem_length"])
        self._agent_rgb = _rgb255(factors["agent_color"])
        self._block_rgb = _rgb255(factors["block_color"])
        self._build_space(float(factors["block_mass"]))
        self._background = self._render_background()
        self._noise = make_patches(factors["distractor"], self.resolution, self._episode_key,
                                   arena_box(self.resolution, OUTER_WALL))

    def _build_space(self, block_mass: float) -> None:
        space = pymunk.Space()
        space.gravity = (0.0, 0.0)
        space.iterations = 20
        space.collision_slop = 1e-4  # pymunk's default (0.1) assumes pixel units
        space.collision_bias = 0.5 ** (1.0 / DT)  # resolve half of any overlap per substep
        b = OUTER_WALL
        for x0, y0, x1, y1 in ((0, 0, b, 1), (1 - b, 0, 1, 1), (0, 0, 1, b), (0, 1 - b, 1, 1)):
            wall = pymunk.Poly(space.static_body, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
            wall.friction = _FRICTION_WALL
            space.add(wall)
        areas = [float(np.prod(p.max(0) - p.min(0))) for p in (self._bar, self._stem)]
        masses = [block_mass * a / sum(areas) for a in areas]
        moment = sum(_rect_moment(m, p) for m, p in zip(masses, (self._bar, self._stem)))
        block = pymunk.Body(block_mass, moment)
        self._block_shapes = [pymunk.Poly(block, [tuple(v) for v in p]) for p in (self._bar, self._stem)]
        for shape in self._block_shapes:
            shape.friction = _FRICTION_BLOCK
        agent = pymunk.Body(AGENT_MASS, math.inf)
        self._agent_shape = pymunk.Circle(agent, self._radius)
        self._agent_shape.friction = _FRICTION_AGENT
        space.add(block, *self._block_shapes, agent, self._agent_shape)
        self._space, self._block, self._agent = space, block, agent

    def _clear_contacts(self) -> None:
        """Drop pymunk's cached contact impulses, so a step depends on the state alone."""
        shapes = (*self._block_shapes, self._agent_shape)
        self._space.remove(*shapes)
        self._space.add(*shapes)

    # -- properties ----------------------------------------------------------------------
    @property
    def state(self) -> np.ndarray:
        """float64 (10,): agent x, y; block x, y, angle; agent vx, vy; block vx, vy, angular velocity."""
        a, b = self._agent, self._block
        (ax, ay), (bx, by), (avx, avy), (bvx, bvy) = a.position, b.position, a.velocity, b.velocity
        return np.array([ax, ay, bx, by, b.angle, avx, avy, bvx, bvy, b.angular_velocity], np.float64)

    @property
    def agent_radius(self) -> float:
        """Radius of the agent disc."""
        return self._radius

    @property
    def block_outline(self) -> np.ndarray:
        """The T's outline in the block frame, float64 (8, 2) (see `t_outline`)."""
        return self._outline.copy()

    # -- hooks of WorldModelEnv -------------------------------------------------------------
    def _start_and_goal(self, options: dict) -> tuple[np.ndarray, np.ndarray]:
        """The goal first: a sampled start is placed around it."""
        goal = options.get("goal_state")
        goal = self._sample_goal() if goal is None else self._check_goal(goal, "goal_state")
        state = options.get("state")
        return (self._sample_start(goal) if state is None else self._check_state(state, "state")), goal

    def _simulate(self, action: list[float]) -> None:
        """Drive the agent towards ``position + ACTION_SCALE * action`` for 0.1 s."""
        ax, ay = action
        self._clear_contacts()
        agent, block, space = self._agent, self._block, self._space
        px, py = agent.position
        tx, ty = px + ACTION_SCALE * ax, py + ACTION_SCALE * ay
        kp, decay = self._kp, self._block_decay
        for _ in range(SUBSTEPS):
            (px, py), (vx, vy) = agent.position, agent.velocity
            vx += (kp * (tx - px) - AGENT_KV * vx) * DT
            vy += (kp * (ty - py) - AGENT_KV * vy) * DT
            agent.velocity = (vx, vy)
            space.step(DT)
            bvx, bvy = block.velocity
            block.velocity = (bvx * decay, bvy * decay)
            block.angular_velocity = block.angular_velocity * decay
        # Chipmunk carries a hidden penetration-correction velocity into the next step's
        # position update; a zero-length position update drops it, so the state alone
        # (restorable with set_state) determines the next step.
        pymunk.Body.update_position(agent, 0.0)
        pymunk.Body.update_position(block, 0.0)
        block.angle = wrap_angle(block.angle)

    # -- public helpers ---------------------------------------------------------------
    def render_goal(self) -> np.ndarray:
        """The scene with the block at the goal pose and the agent where it is now, ``uint8 (H, W, 3)``."""
        x, y, angle = (float(v) for v in self._goal)
        return self._draw(_to_pose(self._outline, x, y, angle), self._agent.position)

    def block_polygon(self, pose: Any | None = None) -> np.ndarray:
        """World corners (8, 2) of the T at `pose` (x, y, angle; default: the current pose)."""
        if pose is None:
            pose = (self._block.position[0], self._block.position[1], self._block.angle)
        return _to_pose(self._outline, float(pose[0]), float(pose[1]), float(pose[2]))

    def pose_error(self, pose: Any | None = None) -> tuple[float, float]:
        """``(position error, wrapped |angle error|)`` of the block (or of `pose`) to the goal."""
        if pose is None:
            pose = (self._block.position[0], self._block.position[1], self._block.angle)
        dp = math.hypot(float(pose[0]) - self._goal[0], float(pose[1]) - self._goal[1])
        return dp, abs(wrap_angle(float(pose[2]) - self._goal[2]))

    # -- internals ----------------------------------------------------------------------
    def _goal_from_state(self, state: np.ndarray) -> np.ndarray:
        """The block pose ``state[2:5]`` (x, y, angle), float64 (3,)."""
        return state[2:5].copy()

    def _progress(self) -> tuple[float, bool]:
        dp, da = self.pose_error()
        return dp + ANGLE_WEIGHT * da, dp < SUCCESS_POSITION and da < SUCCESS_ANGLE

    def _write_state(self, s: np.ndarray) -> None:
        self._agent.position = (float(s[0]), float(s[1]))
        self._agent.velocity = (float(s[5]), float(s[6]))
        self._block.position = (float(s[2]), float(s[3]))
        self._block.angle = float(s[4])
        self._block.velocity = (float(s[7]), float(s[8]))
        self._block.angular_velocity = float(s[9])
        self._space.reindex_shapes_for_body(self._agent)
        self._space.reindex_shapes_for_body(self._block)

    def _t_inside(self, pose: np.ndarray, margin: float) -> bool:
        """True if the T at `pose` keeps `margin` (may be negative) from the walls."""
        poly = self.block_polygon(pose)
        lo, hi = OUTER_WALL + margin, 1.0 - OUTER_WALL - margin
        return bool(np.all(poly >= lo) and np.all(poly <= hi))

    def block_distance(self, point: Any, pose: Any | None = None) -> float:
        """Signed distance from the world `point` (2,) to the T at `pose` (default: now); negative inside."""
        if pose is None:
            pose = (self._block.position[0], self._block.position[1], self._block.angle)
        c, s = math.cos(pose[2]), math.sin(pose[2])
        dx, dy = float(point[0]) - pose[0], float(point[1]) - pose[1]
        lx, ly = c * dx + s * dy, -s * dx + c * dy
        best = math.inf
        for rect in (self._bar, self._stem):
            (x0, y0), (x1, y1) = rect[0], rect[2]
            qx, qy = abs(lx - (x0 + x1) / 2) - (x1 - x0) / 2, abs(ly - (y0 + y1) / 2) - (y1 - y0) / 2
            d = math.hypot(max(qx, 0.0), max(qy, 0.0)) + min(max(qx, qy), 0.0)
            best = min(best, d)
        return best

    def _check_goal(self, value: Any, name: str, tol: float = CONTACT_TOLERANCE) -> np.ndarray:
        g = check_vector(value, name, (3,))
        g[2] = wrap_angle(g[2])
        # a pose the simulator reaches is a valid goal: the T pushed against a wall touches it (or sinks
        # into it by a contact's depth), as the state check (`_check_state`) allows
        if not self._t_inside(g, -tol):
            raise ValueError(f"{name}={g.tolist()}: the T at that pose leaves the arena [{OUTER_WALL:g}, {1 - OUTER_WALL:g}]^2")
        return g

    def _check_state(self, value: Any, name: str, tol: float = CONTACT_TOLERANCE) -> np.ndarray:
        s = check_vector(value, name, (STATE_DIM, 5))
        if s.shape[0] == 5:
            s = np.concatenate([s, np.zeros(STATE_DIM - 5)])
        s[4] = wrap_angle(s[4])
        lo, hi = OUTER_WALL + self._radius - tol, 1.0 - OUTER_WALL - self._radius + tol
        if not (lo <= s[0] <= hi and lo <= s[1] <= hi):
            raise ValueError(f"{name}={s.tolist()}: the agent centre must lie in [{lo:.4g}, {hi:.4g}]^2")
        if not self._t_inside(s[2:5], -tol):
            raise ValueError(f"{name}={s.tolist()}: the T at pose {s[2:5].tolist()} leaves the arena")
        if self.block_distance(s[:2], s[2:5]) - self._radius < -tol:
            raise ValueError(f"{name}={s.tolist()}: the agent overlaps the block")
        return s

    def _sample_goal(self) -> np.ndarray:
        rng = self.np_random
        r = float(self._factors["goal_offset"])
        while True:  # the T always fits around the centre; off-centre goals rarely need a retry
            phi = rng.uniform(0.0, 2.0 * math.pi)
            g = np.array([0.5 + r * math.cos(phi), 0.5 + r * math.sin(phi), rng.uniform(-math.pi, math.pi)])
            if self._t_inside(g, 0.0):
                return g

    def _sample_start(self, goal: np.ndarray) -> np.ndarray:
        rng = self.np_random
        gx, gy, ga = goal
        margin = 2.0 * self._radius + 0.01  # room for the agent between the T and a wall
        for _ in range(1000):
            d, phi = rng.uniform(*START_DISTANCE), rng.uniform(0.0, 2.0 * math.pi)
            angle = wrap_angle(ga + rng.uniform(-1, 1) * START_ROTATION)
            pose = np.array([gx + d * math.cos(phi), gy + d * math.sin(phi), angle])
            if self._t_inside(pose, margin):
                break
        else:  # goal far off-centre and a tiny arena margin: start at the goal, turned
            pose = np.array([gx, gy, wrap_angle(ga + START_ROTATION)])
        lo, hi = OUTER_WALL + self._radius, 1.0 - OUTER_WALL - self._radius
        while True:  # the T covers well under half the arena
            p = rng.uniform(lo, hi, size=2)
            if self.block_distance(p, pose) - self._radius > 0.02:
                return np.array([p[0], p[1], *pose, 0.0, 0.0, 0.0, 0.0, 0.0])

    def _render_background(self) -> np.ndarray:
        n = self.resolution
        img = np.empty((n, n, 3), np.uint8)
        img[:] = _rgb255(self._factors["background_color"])
        wall = _rgb255(self._factors["wall_color"])
        b = OUTER_WALL
        for x0, y0, x1, y1 in ((0, 0, b, 1), (1 - b, 0, 1, 1), (0, 0, 1, b), (0, 1 - b, 1, 1)):
            # pixel i covers [i/n, (i+1)/n); it is wall if its centre lies in the rectangle
            c0, c1 = math.ceil(x0 * n - 0.5), math.ceil(x1 * n - 0.5)
            r0, r1 = math.ceil(y0 * n - 0.5), math.ceil(y1 * n - 0.5)
            img[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = wall
        return img

    def _floor(self) -> np.ndarray:
        """A fresh copy of the static background, with the distractor patches of this step inside the walls."""
        img = self._background.copy()
        if self._noise is not None:
            self._noise.draw(img, self._frame_index)
        return img

    _SHIFT = 4  # sub-pixel bits for cv2 drawing

    def _draw(self, polygon: np.ndarray, agent: Any) -> np.ndarray:
        """A fresh frame: background (with this step's distractors), the T with world corners `polygon`, the agent at `agent`."""
        img = self._floor()
        n, s = self.resolution, 1 << self._SHIFT
        pts = np.rint((polygon * n - 0.5) * s).astype(np.int32)
        cv2.fillPoly(img, [pts], self._block_rgb, cv2.LINE_AA, self._SHIFT)
        cx = int(round((float(agent[0]) * n - 0.5) * s))
        cy = int(round((float(agent[1]) * n - 0.5) * s))
        cv2.circle(img, (cx, cy), int(round(self._radius * n * s)), self._agent_rgb, -1, cv2.LINE_AA, self._SHIFT)
        return img

    def _observe(self) -> np.ndarray:
        b = self._block
        return self._draw(_to_pose(self._outline, b.position[0], b.position[1], b.angle), self._agent.position)
