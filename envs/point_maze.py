"""PointMaze: a MuJoCo point mass steered through a maze of box walls, seen from above."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from envs.base import check_vector
from envs.factors import Factor, FactorSpace
from envs.mujoco_common import TOP_VIEW_VISUAL, MujocoEnv, apply_top_view, top_view_factors, top_view_xml
from envs.policies import ScriptedExpert, into_box

GRID = 8
"""Every layout is a GRID x GRID map of cells (outer ring included); a cell is 1 x 1 world unit."""
CELL = 1.0
HALF = GRID * CELL / 2
"""The maze spans ``[-HALF, HALF]^2`` around the origin; row 0 is at the top (+y)."""

LAYOUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("open", (
        "########",
        "#......#",
        "#......#",
        "#......#",
        "#......#",
        "#......#",
        "#......#",
        "########",
    )),
    ("u", (
        "########",
        "#......#",
        "#......#",
        "#####..#",
        "#####..#",
        "#......#",
        "#......#",
        "########",
    )),
    ("medium", (  # the D4RL / OGBench medium maze
        "########",
        "#..##..#",
        "#..#...#",
        "##...###",
        "#..#...#",
        "#.#..#.#",
        "#...#..#",
        "########",
    )),
    ("zigzag", (
        "########",
        "#......#",
        "#####..#",
        "#......#",
        "#..#####",
        "#......#",
        "#......#",
        "########",
    )),
    ("rooms", (
        "########",
        "#..#...#",
        "#......#",
        "#..#...#",
        "##.###.#",
        "#...#..#",
        "#......#",
        "########",
    )),
)
"""``(name, rows)``; ``#`` is a wall cell, ``.`` a free one. Indices 0-2 are train layouts, 3-4 OOD."""
LAYOUT_NAMES: tuple[str, ...] = tuple(name for name, _ in LAYOUTS)

SUCCESS_RADIUS = 0.3
"""An episode succeeds when the agent centre is closer than this to the goal position."""
FRAME_SKIP = 20
"""Physics steps per env step (timestep 0.005 s, so one env step is 0.1 s)."""
TIMESTEP = 0.005
STATE_TOLERANCE = 0.06
"""`set_state` accepts an agent centre up to this much closer to a wall than its radius (contact penetration)."""
CLEARANCE = 0.02
"""Sampled starts and goals keep this margin beyond the agent radius from every wall."""
CAMERA_DISTANCE = 9.7
CAMERA_FOVY = 45.0

POINT_MAZE_FACTORS = FactorSpace(
    [
        Factor(
            "agent_color", "visual", (0.9, 0.2, 0.2),
            train=((0.7, 0.0, 0.0), (1.0, 0.35, 0.35)),
            ood=(((0.0, 0.0, 0.65), (0.3, 0.35, 1.0)), ((0.0, 0.65, 0.0), (0.3, 1.0, 0.35))),
            doc="RGB colour of the point mass (train: reds; ood: blues, greens)",
        ),
        Factor(
            "wall_color", "visual", (0.3, 0.3, 0.35),
            train=((0.2, 0.2, 0.25), (0.4, 0.4, 0.45)),
            ood=(((0.55, 0.3, 0.05), (0.75, 0.45, 0.2)), ((0.0, 0.4, 0.4), (0.15, 0.6, 0.6))),
            doc="RGB colour of the walls (train: dark greys; ood: browns, teals)",
        ),
        Factor(
            "floor_color", "visual", (0.85, 0.85, 0.8),
            train=((0.75, 0.75, 0.7), (0.95, 0.95, 0.9)),
            ood=(((0.35, 0.35, 0.35), (0.55, 0.55, 0.55)), ((0.55, 0.75, 0.85), (0.7, 0.9, 1.0))),
            doc="RGB colour of the floor (train: light greys; ood: dark greys, blue tints)",
        ),
        *top_view_factors(
            ((-12.0, -7.0), (7.0, 12.0)), "camera rotation about the x axis around the maze centre, degrees"
        ),
        Factor(
            "layout", "geometric", 2.0, train=(0.0, 2.999), ood=((3.0, 4.999),),
            doc="maze layout index floor(value): 0 open, 1 u, 2 medium (train); 3 zigzag, 4 rooms (ood)",
        ),
        Factor(
            "wall_height", "geometric", 0.5, train=(0.4, 0.7), ood=((0.15, 0.3), (0.9, 1.2)),
            doc="height of the wall boxes (world units; a cell is 1)",
        ),
        Factor(
            "agent_radius", "geometric", 0.25, train=(0.2, 0.3), ood=((0.12, 0.16), (0.34, 0.4)),
            doc="radius of the point mass sphere (corridors are 1 wide)",
        ),
        Factor(
            "goal_min_cells", "geometric", 3.0, train=(2.0, 4.0), ood=((5.0, 7.0),),
            doc="minimum maze (BFS) distance in cells from the start cell to the sampled goal cell",
        ),
        Factor(
            "agent_mass", "physical", 1.0, train=(0.8, 1.2), ood=((0.4, 0.6), (1.6, 2.2)),
            doc="mass of the point mass (kg)",
        ),
        Factor(
            "damping", "physical", 4.0, train=(3.0, 5.0), ood=((2.0, 2.6), (5.6, 7.0)),
            doc="viscous damping of the x and y slide joints (N s/m)",
        ),
        Factor(
            "actuator_gain", "physical", 12.0, train=(10.0, 14.0), ood=((7.0, 9.0), (15.5, 18.0)),
            doc="force (N) at a full action; top speed is actuator_gain / damping",
        ),
    ]
)

Rect = tuple[float, float, float, float]  # (x0, y0, x1, y1), world units


def layout_index(value: float) -> int:
    """The layout index of a ``layout`` factor value: ``floor(value)`` clipped to the layouts."""
    return int(min(max(math.floor(value), 0), len(LAYOUTS) - 1))


def cell_center(cell: tuple[int, int]) -> np.ndarray:
    """World ``(x, y)`` of the centre of cell ``(row, col)``, float64 (2,)."""
    i, j = cell
    return np.array([(j + 0.5) * CELL - HALF, HALF - (i + 0.5) * CELL])


def cell_of(position: np.ndarray) -> tuple[int, int]:
    """Cell ``(row, col)`` containing world point ``(x, y)`` (clipped to the grid)."""
    j = int(math.floor((float(position[0]) + HALF) / CELL))
    i = int(math.floor((HALF - float(position[1])) / CELL))
    return min(max(i, 0), GRID - 1), min(max(j, 0), GRID - 1)


def wall_rects(rows: tuple[str, ...]) -> list[Rect]:
    """Wall cells of a layout merged into few rectangles (horizontal runs, stacked when equal)."""
    open_rects: dict[tuple[int, int], list[int]] = {}  # (j0, j1) -> [i0, i1]
    done: list[tuple[int, int, int, int]] = []
    for i, row in enumerate(rows):
        runs, j = [], 0
        while j < len(row):
            if row[j] == "#":
                j0 = j
                while j < len(row) and row[j] == "#":
                    j += 1
                runs.append((j0, j - 1))
            else:
                j += 1
        nxt: dict[tuple[int, int], list[int]] = {}
        for run in runs:
            if run in open_rects:
                span = open_rects.pop(run)
                span[1] = i
                nxt[run] = span
            else:
                nxt[run] = [i, i]
        done += [(i0, i1, j0, j1) for (j0, j1), (i0, i1) in open_rects.items()]
        open_rects = nxt
    done += [(i0, i1, j0, j1) for (j0, j1), (i0, i1) in open_rects.items()]
    rects = []
    for i0, i1, j0, j1 in sorted(done):
        rects.append((j0 * CELL - HALF, HALF - (i1 + 1) * CELL, (j1 + 1) * CELL - HALF, HALF - i0 * CELL))
    return rects


_LAYOUT_RECTS: tuple[list[Rect], ...] = tuple(wall_rects(rows) for _, rows in LAYOUTS)
MAX_WALLS = max(len(r) for r in _LAYOUT_RECTS)
"""Size of the pool of wall box geoms shared by every layout (unused ones are parked under the floor)."""


def free_cells(rows: tuple[str, ...]) -> list[tuple[int, int]]:
    """Free cells ``(row, col)`` of a layout, row-major."""
    return [(i, j) for i, row in enumerate(rows) for j, c in enumerate(row) if c != "#"]


def bfs_distances(rows: tuple[str, ...], source: tuple[int, int]) -> dict[tuple[int, int], int]:
    """Maze distance (4-connected steps) from `source` to every reachable free cell."""
    dist = {source: 0}
    queue = deque([source])
    while queue:
        i, j = queue.popleft()
        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            n = (i + di, j + dj)
            if 0 <= n[0] < GRID and 0 <= n[1] < GRID and rows[n[0]][n[1]] != "#" and n not in dist:
                dist[n] = dist[(i, j)] + 1
                queue.append(n)
    return dist


def _model_xml() -> str:
    walls = "\n".join(
        f'    <geom name="wall{k}" type="box" pos="0 0 -5" size="0.5 0.5 0.25" rgba="0.3 0.3 0.35 1"/>'
        for k in range(MAX_WALLS)
    )
    return f"""
<mujoco model="point_maze">
  <compiler angle="radian"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast">
    <flag midphase="disable"/>
  </option>
{TOP_VIEW_VISUAL}
  <worldbody>{top_view_xml(12, CAMERA_DISTANCE, CAMERA_FOVY)}
    <geom name="floor" type="plane" size="{HALF + 2} {HALF + 2} 1" rgba="0.85 0.85 0.8 1" contype="0" conaffinity="0"/>
{walls}
    <body name="agent" pos="0 0 0.25">
      <joint name="x" type="slide" axis="1 0 0" damping="4"/>
      <joint name="y" type="slide" axis="0 1 0" damping="4"/>
      <geom name="agent" type="sphere" size="0.25" mass="1" rgba="0.9 0.2 0.2 1" condim="3" friction="0.2"
            solref="0.01 1" solimp="0.95 0.99 0.001"/>
    </body>
  </worldbody>
  <actuator>
    <motor name="fx" joint="x" gear="12" ctrllimited="true" ctrlrange="-1 1"/>
    <motor name="fy" joint="y" gear="12" ctrllimited="true" ctrlrange="-1 1"/>
  </actuator>
</mujoco>
"""


class PointMazeEnv(MujocoEnv):
    """A MuJoCo point mass driven through a maze of box walls, observed from above as RGB pixels.

    World: an 8 x 8 grid of unit cells centred on the origin (x right, y up; row 0 of a
    layout is the top row of the image), outer ring walled. Five layouts (`LAYOUTS`):
    ``open``, ``u``, ``medium`` (train) and ``zigzag``, ``rooms`` (OOD). The walls of a
    layout are merged into a few boxes. The agent is a sphere of radius ``agent_radius``
    on two slide joints (x, y), pushed by two force actuators against viscous damping;
    it collides with the walls only. A fixed perspective camera looks straight down
    (tilted by ``camera_tilt``); one directional light, no shadows, no MSAA.

    - observation: ``uint8 (resolution, resolution, 3)``, rendered once per step; the goal
      is *not* drawn (`render_goal` renders the agent at the goal position).
    - action: ``Box(-1, 1, (2,), float32)``, force along x and y in units of
      ``actuator_gain``; clipped to the box. One env step is `FRAME_SKIP` physics steps
      of `TIMESTEP` (0.1 s).
    - state: ``float64 (4,)`` ``(x, y, vx, vy)`` (qpos, qvel); goal: a position ``float64 (2,)``
      (`goal_from_state`: the recorded state's ``(x, y)``).
    - reward ``-goal_distance`` (Euclidean, agent centre to goal);
      ``terminated = success = goal_distance < SUCCESS_RADIUS``.
    - reset options: ``factors`` (dict, validated), ``split`` (sample factors from a
      split, optionally at an OOD ``severity`` 1..3; explicit ``factors`` override the
      named keys), ``state`` (``(x, y)`` or ``(x, y, vx, vy)``) and ``goal_state``
      (``(x, y)``), checked to be finite and in free space for the agent's radius. Without
      them the start is uniform in a random free cell (kept ``agent_radius + CLEARANCE``
      from the cell's border) and the goal likewise in a free cell at least
      ``goal_min_cells`` maze steps away (the farthest cells if none is that far).

    Factors: visual ``agent_color``, ``wall_color``, ``floor_color``,
    ``light_intensity``, ``light_angle``, ``camera_tilt``; geometric ``layout`` (a scalar
    whose floor is the layout index: train [0, 2.999] gives open/u/medium, OOD
    [3, 4.999] zigzag/rooms), ``wall_height``, ``agent_radius``, ``goal_min_cells``;
    physical ``agent_mass``, ``damping``, ``actuator_gain``. All are applied to one
    compiled model without recompiling: a layout change moves a fixed pool of
    `MAX_WALLS` box geoms (unused ones parked under the floor, collisions off), and size
    changes update ``geom_rbound``/``geom_aabb``. The collision midphase is disabled: its
    bounding-volume tree is built at compile time and would miss moved walls (with ~15
    geoms it saves nothing anyway).

    Version history:
        v0: initial version.
    """

    factor_space: FactorSpace = POINT_MAZE_FACTORS
    state_dim: int = 4
    frame_skip = FRAME_SKIP
    expert = "envs.point_maze:PointMazeExpert"

    def __init__(
        self, resolution: int = 64, render_mode: str | None = None, antialias: bool = False, terminate_on_success: bool = True
    ) -> None:
        """Create the env; `resolution` is the image side in pixels (>= 8); `antialias`
        turns 4x multisampling on (off by default: it costs several times on a CPU);
        `terminate_on_success` False keeps an episode running past success (see `WorldModelEnv`)."""
        super().__init__(resolution, render_mode, antialias=antialias, terminate_on_success=terminate_on_success)
        m = self.model
        self._wall_ids = np.array([m.geom(f"wall{k}").id for k in range(MAX_WALLS)])
        self._floor_id = m.geom("floor").id
        self._agent_geom = m.geom("agent").id
        self._agent_body = m.body("agent").id
        self._camera = m.camera("top").id
        self._light = m.light("sun").id
        self._layout = -1
        self._wall_height_applied: float | None = None
        self._set_factors(self.factor_space.defaults())
        self._begin_episode(np.array([*cell_center((6, 1)), 0.0, 0.0]), cell_center((1, 6)))

    def _model_xml(self) -> str:
        return _model_xml()

    # -- factors and layout -----------------------------------------------------------
    def _apply_factors(self, factors: dict) -> None:
        """Write validated factor values into the compiled model (no recompile)."""
        m = self.model
        layout = layout_index(factors["layout"])
        height = float(factors["wall_height"])
        if layout != self._layout or height != self._wall_height_applied:
            self._place_walls(layout, height)
        r = float(factors["agent_radius"])
        g = self._agent_geom
        m.geom_size[g, 0] = r
        m.geom_rbound[g] = r
        m.geom_aabb[g] = (0.0, 0.0, 0.0, r, r, r)
        m.body_pos[self._agent_body, 2] = r
        m.geom_rgba[g, :3] = factors["agent_color"]
        m.geom_rgba[self._wall_ids, :3] = factors["wall_color"]
        m.geom_rgba[self._floor_id, :3] = factors["floor_color"]
        apply_top_view(m, self._light, self._camera, CAMERA_DISTANCE, factors)
        mass = float(factors["agent_mass"])
        if mass != m.body_mass[self._agent_body]:
            m.body_mass[self._agent_body] = mass
            self._mj.mj_setConst(m, self.data)  # the mass matrix of slide joints is a precomputed constant
        m.dof_damping[:] = float(factors["damping"])
        m.actuator_gear[:, 0] = float(factors["actuator_gain"])

    def _place_walls(self, layout: int, height: float) -> None:
        m = self.model
        rects = _LAYOUT_RECTS[layout]
        for k, gid in enumerate(self._wall_ids):
            if k < len(rects):
                x0, y0, x1, y1 = rects[k]
                size = (0.5 * (x1 - x0), 0.5 * (y1 - y0), 0.5 * height)
                m.geom_pos[gid] = (0.5 * (x0 + x1), 0.5 * (y0 + y1), 0.5 * height)
                m.geom_contype[gid] = m.geom_conaffinity[gid] = 1
            else:  # parked under the floor, out of the collision and of sight
                size = (0.01, 0.01, 0.01)
                m.geom_pos[gid] = (0.0, 0.0, -1.0)
                m.geom_contype[gid] = m.geom_conaffinity[gid] = 0
            m.geom_size[gid] = size
            m.geom_rbound[gid] = math.sqrt(sum(s * s for s in size))
            m.geom_aabb[gid] = (0.0, 0.0, 0.0, *size)
        self._layout = layout
        self._wall_height_applied = height
        self._rows = LAYOUTS[layout][1]
        self._rects = rects
        self._free = free_cells(self._rows)

    # -- properties ---------------------------------------------------------------------
    @property
    def layout_name(self) -> str:
        """Name of the current layout (``"open"``, ``"u"``, ``"medium"``, ``"zigzag"``, ``"rooms"``)."""
        return LAYOUT_NAMES[self._layout]

    @property
    def layout_rows(self) -> tuple[str, ...]:
        """The current layout as strings, row 0 on top (``#`` wall, ``.`` free)."""
        return self._rows

    @property
    def walls(self) -> list[Rect]:
        """Current wall rectangles ``(x0, y0, x1, y1)`` (world units)."""
        return list(self._rects)

    @property
    def agent_radius(self) -> float:
        """Radius of the agent sphere."""
        return float(self._factors["agent_radius"])

    # -- public helpers ---------------------------------------------------------------
    def is_free(self, position: Any, margin: float = 0.0) -> bool:
        """True if the agent sphere at `position` ``(x, y)`` keeps ``radius - margin`` from every wall."""
        x, y = float(position[0]), float(position[1])
        if not (abs(x) < HALF and abs(y) < HALF):
            return False
        need = self.agent_radius - margin
        for x0, y0, x1, y1 in self._rects:
            dx = max(x0 - x, 0.0, x - x1)
            dy = max(y0 - y, 0.0, y - y1)
            if dx * dx + dy * dy < need * need or (dx == 0.0 and dy == 0.0):
                return False
        return True

    def segment_clear(self, a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> bool:
        """True if the segment a -> b misses every wall box grown by ``agent_radius + margin``."""
        grow = self.agent_radius + margin
        ax, ay = float(a[0]), float(a[1])
        dx, dy = float(b[0]) - ax, float(b[1]) - ay
        for x0, y0, x1, y1 in self._rects:
            t0, t1 = 0.0, 1.0
            hit = True
            for p, dp, lo, hi in ((ax, dx, x0 - grow, x1 + grow), (ay, dy, y0 - grow, y1 + grow)):
                if dp == 0.0:
                    if not lo < p < hi:
                        hit = False
                        break
                else:
                    u, v = (lo - p) / dp, (hi - p) / dp
                    if u > v:
                        u, v = v, u
                    t0, t1 = max(t0, u), min(t1, v)
                    if t0 >= t1:
                        hit = False
                        break
            if hit:
                return False
        return True

    # -- hooks of WorldModelEnv -------------------------------------------------------------
    def _goal_from_state(self, state: np.ndarray) -> np.ndarray:
        """The agent position ``state[:2]``, float64 (2,)."""
        return state[:2].copy()

    def _progress(self) -> tuple[float, bool]:
        pos = self.data.qpos
        d = math.hypot(float(pos[0] - self._goal[0]), float(pos[1] - self._goal[1]))
        return d, d < SUCCESS_RADIUS

    def _goal_distances(self, qpos: np.ndarray) -> np.ndarray:
        """`_progress`'s distance for positions `qpos` (..., 2), float64 (...)."""
        return np.hypot(qpos[..., 0] - self._goal[0], qpos[..., 1] - self._goal[1])

    def _check_goal(self, value: Any, name: str) -> np.ndarray:
        p = check_vector(value, name, (2,), finite=False)
        self._check_free(p, name)
        return p

    def _check_state(self, value: Any, name: str) -> np.ndarray:
        """``(x, y)`` (at rest) or ``(x, y, vx, vy)`` as float64 (4,)."""
        s = check_vector(value, name, (2, 4), finite=False)
        pos = s[:2].copy()
        vel = s[2:].copy() if s.shape == (4,) else np.zeros(2)
        if not np.all(np.isfinite(vel)):
            raise ValueError(f"{name}={value!r} is not finite")
        self._check_free(pos, name)
        return np.concatenate([pos, vel])

    def _sample_start(self) -> np.ndarray:
        pos = self._sample_in_cell(self._free[int(self.np_random.integers(len(self._free)))])
        return np.concatenate([pos, np.zeros(2)])

    def _check_free(self, p: np.ndarray, name: str) -> None:
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{name}={p.tolist()} is not finite")
        if not self.is_free(p, margin=STATE_TOLERANCE):
            raise ValueError(
                f"{name}={p.tolist()} is not in free space: the agent centre must stay "
                f"{self.agent_radius:g} from every wall of layout {self.layout_name!r} "
                f"(free cells are '.' in {list(self._rows)}, row 0 at y={HALF - CELL / 2:g})"
            )

    def _sample_in_cell(self, cell: tuple[int, int]) -> np.ndarray:
        half = CELL / 2 - self.agent_radius - CLEARANCE
        return cell_center(cell) + self.np_random.uniform(-half, half, size=2)

    def _sample_goal(self, start: np.ndarray) -> np.ndarray:
        dist = bfs_distances(self._rows, cell_of(start))
        need = float(self._factors["goal_min_cells"])
        far = [c for c in self._free if dist.get(c, -1) >= need]
        if not far:
            top = max(dist.values())
            far = [c for c in self._free if dist.get(c, -1) == top]
        return self._sample_in_cell(far[int(self.np_random.integers(len(far)))])


class PointMazeExpert(ScriptedExpert):
    """Follows the BFS path of cells to the goal with a velocity-tracking PD controller.

    Each step: the shortest path of cells from the agent's cell to the goal cell (BFS on
    the layout grid); the target is the goal itself if the straight line to it clears
    every wall grown by the agent radius, else the farthest of the path's cell centres
    whose straight line clears the walls grown by the radius plus `MARGIN`; if none does,
    the centre of the agent's own cell (the next cell's once there). The desired
    velocity points to the target, at most ``SPEED_FRACTION`` of the top speed (and at
    most `MAX_SPEED`), slowing within ``1 / GAIN`` of the goal. The force is
    ``damping * v_des + mass * (v_des - v) / TRACK_TIME`` (the env's own physical
    factors), as an action scaled back into the unit box (direction kept), plus Gaussian
    noise of std `noise`, clipped to [-1, 1].
    """

    MARGIN = 0.04
    SPEED_FRACTION = 0.7
    MAX_SPEED = 3.0
    GAIN = 3.0
    TRACK_TIME = 0.15

    env: PointMazeEnv

    def target(self) -> np.ndarray:
        """The point the expert steers to now, world ``(x, y)``, float64 (2,)."""
        env = self.env
        pos, goal = env.data.qpos[:2].copy(), env.goal_state
        here, there = cell_of(pos), cell_of(goal)
        dist = bfs_distances(env.layout_rows, there)
        path, cell = [], here
        while cell in dist and dist[cell] > 0:
            i, j = cell
            cell = min(
                ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)),
                key=lambda c: dist.get(c, 1 << 30),
            )
            path.append(cell)
        if env.segment_clear(pos, goal, 0.0):  # the goal keeps only CLEARANCE from walls
            return goal
        for c in reversed(path[:-1]):
            p = cell_center(c)
            if env.segment_clear(pos, p, self.MARGIN):
                return p
        centre = cell_center(here)
        if path and np.linalg.norm(pos - centre) < self.MARGIN:
            return cell_center(path[0])
        return centre

    def __call__(self, obs: np.ndarray, info: dict) -> np.ndarray:
        """Action toward the current target, float32 (2,)."""
        env = self.env
        f = env.factors
        mass, damping, gain = float(f["agent_mass"]), float(f["damping"]), float(f["actuator_gain"])
        pos, vel = env.data.qpos[:2], env.data.qvel[:2]
        err = self.target() - pos
        top = min(self.SPEED_FRACTION * gain / damping, self.MAX_SPEED)
        v_des = self.GAIN * err
        speed = float(np.linalg.norm(v_des))
        if speed > top:
            v_des *= top / speed
        force = damping * v_des + mass * (v_des - vel) / self.TRACK_TIME
        return self._finish(into_box(force / gain))
