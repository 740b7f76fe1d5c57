"""Cube: a pusher on a table pushes a cube to a goal position, MuJoCo, seen by an angled camera."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from envs.base import check_vector
from envs.factors import Factor, FactorSpace
from envs.mujoco_common import MujocoEnv
from envs.policies import ScriptedExpert, into_box

TABLE_HALF = 0.32
"""Half side of the square table top (m); its top surface is the plane z = 0."""
PUSHER_RANGE = 0.2
"""The pusher centre moves in ``[-PUSHER_RANGE, PUSHER_RANGE]^2`` (slide-joint limits)."""
PUSHER_RADIUS = 0.015
"""Radius of the pusher's spherical tip; its centre slides at height z = PUSHER_RADIUS."""
SUCCESS_RADIUS = 0.025
"""Success when the cube centre's xy lies closer than this to the goal's cube xy (m)."""
CUBE_START_HALF = 0.09
"""Sampled cube starts are uniform in ``[-CUBE_START_HALF, CUBE_START_HALF]^2``."""
PUSHER_START_HALF = 0.16
"""Sampled pusher starts are uniform in ``[-PUSHER_START_HALF, PUSHER_START_HALF]^2``, clear of the cube."""
GOAL_HALF = 0.06
"""Sampled goals are uniform in the square of this half side around ``goal_center``."""
MIN_GOAL_DISTANCE = 0.06
"""Sampled goals lie at least this far (xy) from the sampled cube start."""
TIMESTEP = 0.005
"""MuJoCo integration step (s)."""
FRAME_SKIP = 10
"""Physics steps per env step: one env step is 0.05 s (20 Hz control)."""
STATE_TOLERANCE = 0.01
"""How far (m) a given pusher position may lie outside the slide range (soft joint limits)."""
LIGHT_ELEVATION = 60.0
"""Elevation (degrees above the table) of the directional light."""

_STATE_DIM = 17
_RANGE_TXT = f"[{-PUSHER_RANGE:g}, {PUSHER_RANGE:g}]"

CUBE_FACTORS = FactorSpace(
    [
        # -- visual ---------------------------------------------------------------------------
        Factor(
            "cube_color", "visual", (0.85, 0.15, 0.15),
            train=((0.7, 0.05, 0.05), (0.95, 0.3, 0.3)),
            ood=(((0.05, 0.1, 0.6), (0.3, 0.35, 0.95)), ((0.05, 0.55, 0.05), (0.3, 0.85, 0.3))),
            doc="RGB colour of the cube (train: reds; ood: blues, greens)",
        ),
        Factor(
            "table_color", "visual", (0.65, 0.55, 0.42),
            train=((0.55, 0.45, 0.32), (0.75, 0.65, 0.52)),
            ood=(((0.15, 0.15, 0.15), (0.3, 0.3, 0.3)), ((0.35, 0.5, 0.6), (0.5, 0.65, 0.8))),
            doc="RGB colour of the table top (train: light woods; ood: dark greys, blue-greys)",
        ),
        Factor(
            "pusher_color", "visual", (0.2, 0.2, 0.22),
            train=((0.1, 0.1, 0.1), (0.3, 0.3, 0.32)),
            ood=(((0.8, 0.7, 0.0), (1.0, 0.9, 0.2)), ((0.0, 0.7, 0.7), (0.2, 0.9, 0.9))),
            doc="RGB colour of the pusher tip and rod (train: dark greys; ood: yellows, cyans)",
        ),
        Factor(
            "floor_color", "visual", (0.45, 0.47, 0.5),
            train=((0.38, 0.4, 0.43), (0.52, 0.54, 0.57)),
            ood=(((0.05, 0.05, 0.05), (0.15, 0.15, 0.15)), ((0.75, 0.75, 0.7), (0.9, 0.9, 0.85))),
            doc="RGB colour of the floor around the table (train: mid greys; ood: near black, near white)",
        ),
        Factor(
            "distractor_color", "visual", (0.5, 0.3, 0.6),
            train=((0.4, 0.2, 0.5), (0.6, 0.4, 0.7)),
            ood=(((0.9, 0.5, 0.0), (1.0, 0.7, 0.2)), ((0.9, 0.9, 0.9), (1.0, 1.0, 1.0))),
            doc="RGB colour of a static cylinder on the table, out of reach (train: purples; ood: oranges, whites)",
        ),
        Factor(
            "distractor_position", "visual", (-0.27, 0.28),
            train=((-0.29, 0.27), (-0.25, 0.29)),
            ood=(((0.25, 0.27), (0.29, 0.29)), ((-0.29, -0.29), (-0.25, -0.27))),
            doc="xy of the distractor, visual only (train: back left corner; ood: back right, front left)",
        ),
        Factor(
            "light_intensity", "visual", 0.6, train=(0.5, 0.7), ood=((0.2, 0.35), (0.85, 1.0)),
            doc="diffuse intensity of the directional light",
        ),
        Factor(
            "light_azimuth", "visual", 0.0, train=(-30.0, 30.0), ood=((60.0, 120.0), (-120.0, -60.0)),
            doc=f"azimuth (degrees, from +x towards +y) the directional light comes from, {LIGHT_ELEVATION:g} deg up",
        ),
        Factor(
            "camera_azimuth", "visual", 90.0, train=(85.0, 95.0), ood=((72.0, 79.0), (101.0, 108.0)),
            doc="camera azimuth (degrees; 90 looks along +y from the front edge)",
        ),
        Factor(
            "camera_elevation", "visual", -55.0, train=(-60.0, -50.0), ood=((-70.0, -64.0), (-46.0, -40.0)),
            doc="camera elevation (degrees, negative looks down)",
        ),
        Factor(
            "camera_distance", "visual", 0.85, train=(0.82, 0.88), ood=((0.76, 0.8), (0.92, 1.0)),
            doc="camera distance (m) from its look-at point (0, -0.03, 0) near the table centre",
        ),
        # -- geometric ------------------------------------------------------------------------
        Factor(
            "cube_size", "geometric", 0.03, train=(0.026, 0.034), ood=((0.02, 0.023), (0.037, 0.042)),
            doc="half side of the cube (m)",
        ),
        Factor(
            "goal_center", "geometric", (0.0, 0.0),
            train=((-0.03, -0.03), (0.03, 0.03)),
            ood=(((0.045, -0.03), (0.065, 0.03)), ((-0.065, -0.03), (-0.045, 0.03))),
            doc=f"centre (xy, m) of the square of half side {GOAL_HALF:g} where goals are sampled",
        ),
        # -- physical -------------------------------------------------------------------------
        Factor(
            "cube_mass", "physical", 0.1, train=(0.07, 0.14), ood=((0.03, 0.05), (0.18, 0.25)),
            doc="cube mass (kg); inertia follows a solid cube",
        ),
        Factor(
            "cube_friction", "physical", 0.45, train=(0.35, 0.6), ood=((0.15, 0.25), (0.75, 0.95)),
            doc="sliding friction of the cube (table and pusher have less, so this one counts)",
        ),
        Factor(
            "pusher_gain", "physical", 75.0, train=(60.0, 90.0), ood=((35.0, 45.0), (120.0, 160.0)),
            doc="velocity-servo gain kv of the pusher (N per m/s); the pusher body weighs 1 kg",
        ),
        Factor(
            "pusher_damping", "physical", 1.0, train=(0.0, 2.0), ood=((4.0, 8.0),),
            doc="viscous damping of the pusher's slide joints (N per m/s)",
        ),
        Factor(
            "pusher_speed", "physical", 0.2, train=(0.16, 0.24), ood=((0.1, 0.13), (0.28, 0.35)),
            doc="commanded pusher speed (m/s) per unit action",
        ),
    ]
)

_XML = f"""
<mujoco model="cube">
  <option timestep="{TIMESTEP}" integrator="implicitfast" cone="pyramidal"/>
  <visual>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.15 0.15 0.15" specular="0 0 0"/>
    <quality shadowsize="0" offsamples="0"/>
  </visual>
  <worldbody>
    <light name="sun" directional="true" pos="0 0 1" dir="0 0 -1" diffuse="0.6 0.6 0.6" specular="0 0 0" castshadow="false"/>
    <geom name="floor" type="plane" pos="0 0 -0.6" size="3 3 0.1" rgba="0.45 0.47 0.5 1" contype="1" conaffinity="1"/>
    <geom name="table" type="box" pos="0 0 -0.03" size="{TABLE_HALF} {TABLE_HALF} 0.03"
          rgba="0.65 0.55 0.42 1" friction="0.1 0.005 0.0001" contype="1" conaffinity="1"/>
    <geom name="distractor" type="cylinder" pos="-0.3 0.33 0.03" size="0.02 0.03"
          rgba="0.5 0.3 0.6 1" contype="0" conaffinity="0"/>
    <body name="pusher" pos="0 0 {PUSHER_RADIUS}">
      <joint name="pusher_x" type="slide" axis="1 0 0" limited="true" range="{-PUSHER_RANGE} {PUSHER_RANGE}" damping="1"/>
      <joint name="pusher_y" type="slide" axis="0 1 0" limited="true" range="{-PUSHER_RANGE} {PUSHER_RANGE}" damping="1"/>
      <inertial pos="0 0 0" mass="1" diaginertia="1e-3 1e-3 1e-3"/>
      <geom name="pusher_tip" type="sphere" size="{PUSHER_RADIUS}" rgba="0.2 0.2 0.22 1"
            friction="0.1 0.005 0.0001" contype="2" conaffinity="2"/>
      <geom name="pusher_rod" type="cylinder" fromto="0 0 0.005 0 0 0.1" size="0.007"
            rgba="0.2 0.2 0.22 1" contype="0" conaffinity="0"/>
    </body>
    <body name="cube" pos="0 0 0.03">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="0.03 0.03 0.03" mass="0.1" rgba="0.85 0.15 0.15 1"
            friction="0.45 0.005 0.0001" contype="3" conaffinity="3"/>
    </body>
  </worldbody>
  <actuator>
    <velocity name="vx" joint="pusher_x" kv="75" ctrlrange="-1 1"/>
    <velocity name="vy" joint="pusher_y" kv="75" ctrlrange="-1 1"/>
  </actuator>
</mujoco>
"""


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


class CubeEnv(MujocoEnv):
    """Push a cube across a table to a goal position with a pusher, observed as RGB pixels.

    World (MuJoCo, metres, z up): a square table of half side `TABLE_HALF` whose top is
    the plane z = 0, on a floor; a cube (free joint, half side ``cube_size``) resting on
    the table; a pusher, a sphere of radius `PUSHER_RADIUS` with a thin visual rod above
    it, that slides in x and y (slide joints limited to ``[-PUSHER_RANGE, PUSHER_RANGE]``)
    just above the table, driven by two velocity servos; a static, collision-free
    distractor cylinder near a table corner. A fixed angled camera (a free camera aimed at
    (0, -0.03, 0), near the table centre) looks down at the table. Primitives only; no shadows, no MSAA.

    - observation: ``uint8 (resolution, resolution, 3)`` from the camera; the goal is
      *not* drawn (use `render_goal` for a goal image).
    - action: ``Box(-1, 1, (2,), float32)``, the pusher's commanded xy velocity in units
      of ``pusher_speed`` (m/s); clipped to the box. A component that would push the
      pusher further out of its range at the limit is zeroed. Each env step runs
      `FRAME_SKIP` physics steps of `TIMESTEP` (0.05 s, 20 Hz).
    - state: ``float64 (17,)`` = MuJoCo ``qpos`` then ``qvel``:
      ``[pusher_x, pusher_y, cube_x, cube_y, cube_z, cube_qw, cube_qx, cube_qy, cube_qz,
      pusher_vx, pusher_vy, cube_vx, cube_vy, cube_vz, cube_wx, cube_wy, cube_wz]``
      (velocities are included so `set_state` restores the scene exactly).
    - goal: ``goal_state`` has the same layout as the state; it is the scene to reach.
      Only its cube xy (indices 2, 3) is judged: ``goal_distance`` is the xy distance of
      the cube centre to it, ``success = goal_distance < SUCCESS_RADIUS`` (yaw and the
      pusher position are not judged). `render_goal` renders the whole goal state.
      `goal_from_cube` builds one from a cube pose; `goal_from_state` from a recorded
      state (its poses, at rest: velocities zeroed).
    - reward ``-goal_distance``; ``terminated = success``.
    - reset: the cube starts uniform in ``[-0.09, 0.09]^2`` (`CUBE_START_HALF`) with a
      yaw uniform in [-45, 45] degrees; the pusher uniform in ``[-0.16, 0.16]^2``
      (`PUSHER_START_HALF`) clear of the cube; the goal cube xy uniform in the square
      of half side `GOAL_HALF` around ``goal_center``,
      at least `MIN_GOAL_DISTANCE` from the start, with the start's yaw, and the goal
      pusher just behind the goal cube on the push line (where a push ends). Options:
      ``factors`` (dict, validated), ``split`` (sample factors from a split, optionally
      at an OOD ``severity`` 1..3; explicit ``factors`` override the named keys),
      ``state`` and ``goal_state`` (``(17,)``, finite, pusher within its range up to
      `STATE_TOLERANCE`; a non-unit quaternion is normalised). `set_state` restores
      positions and velocities exactly; a replay from it matches the original run to
      ~1e-10 (only MuJoCo's solver warm start is not part of the state).

    Factors (see `CUBE_FACTORS`): visual (cube, table, pusher, floor and distractor
    colours, distractor position, light intensity and azimuth, camera azimuth, elevation
    and distance), geometric (cube size, goal region centre), physical (cube mass and
    friction, pusher servo gain, damping and speed). All are applied to the compiled
    model in place (``geom_rgba``, ``light_*``, ``geom_size`` with ``geom_rbound`` and
    ``geom_aabb``, ``body_mass``/``body_inertia``, ``geom_friction``, actuator
    ``gainprm``/``biasprm``, ``dof_damping``, then ``mj_setConst``): never a recompile.
    The camera frames the whole reach of the pusher and the sampled start/goal regions
    under every factor value; only at the closest, steepest OOD camera poses can a cube
    pushed into an outermost corner of its reach leave the frame. ``model`` and ``data``
    are the MuJoCo objects (read them; change the scene only through the API).

    Version history:
        v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    factor_space: FactorSpace = CUBE_FACTORS
    state_dim: int = _STATE_DIM

    frame_skip = FRAME_SKIP
    expert = "envs.cube:CubeExpert"

    def __init__(
        self, resolution: int = 64, render_mode: str | None = None, antialias: bool = False, terminate_on_success: bool = True
    ) -> None:
        """Create the env; `resolution` is the image side in pixels (>= 8); `antialias`
        turns 4x multisampling on (off by default: it costs several times on a CPU);
        `terminate_on_success` False keeps an episode running past success (see `WorldModelEnv`)."""
        super().__init__(resolution, render_mode, antialias=antialias, terminate_on_success=terminate_on_success)
        mujoco, m = self._mj, self.model
        self._goal_data = mujoco.MjData(m)
        self._g_cube, self._g_table, self._g_floor = m.geom("cube").id, m.geom("table").id, m.geom("floor").id
        self._g_tip, self._g_rod, self._g_distractor = m.geom("pusher_tip").id, m.geom("pusher_rod").id, m.geom("distractor").id
        self._b_cube = m.body("cube").id
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self._camera.lookat[:] = (0.0, -0.03, 0.0)
        self._set_factors(self.factor_space.defaults())
        start = self._state_from(np.array([-0.15, 0.0]), np.zeros(2), 0.0)
        self._begin_episode(start, self._state_from(np.zeros(2), np.array([0.1, 0.0]), 0.0))

    def _model_xml(self) -> str:
        return _XML

    # -- factors -----------------------------------------------------------------------
    def _apply_factors(self, f: dict) -> None:
        """Write validated factors into the compiled model (no recompile)."""
        mujoco, m = self._mj, self.model
        m.geom_rgba[self._g_cube, :3] = f["cube_color"]
        m.geom_rgba[self._g_table, :3] = f["table_color"]
        m.geom_rgba[self._g_tip, :3] = f["pusher_color"]
        m.geom_rgba[self._g_rod, :3] = f["pusher_color"]
        m.geom_rgba[self._g_floor, :3] = f["floor_color"]
        m.geom_rgba[self._g_distractor, :3] = f["distractor_color"]
        m.geom_pos[self._g_distractor, :2] = f["distractor_position"]
        m.light_diffuse[0] = f["light_intensity"]
        az, el = math.radians(f["light_azimuth"]), math.radians(LIGHT_ELEVATION)
        m.light_dir[0] = (-math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), -math.sin(el))
        self._camera.azimuth = f["camera_azimuth"]
        self._camera.elevation = f["camera_elevation"]
        self._camera.distance = f["camera_distance"]

        h = float(f["cube_size"])
        m.geom_size[self._g_cube] = (h, h, h)
        m.geom_rbound[self._g_cube] = math.sqrt(3.0) * h
        m.geom_aabb[self._g_cube] = (0.0, 0.0, 0.0, h, h, h)
        mass = float(f["cube_mass"])
        m.body_mass[self._b_cube] = mass
        m.body_inertia[self._b_cube] = mass * (2.0 * h) ** 2 / 6.0
        m.geom_friction[self._g_cube, 0] = f["cube_friction"]
        kv = float(f["pusher_gain"])
        m.actuator_gainprm[:, 0] = kv
        m.actuator_biasprm[:, 2] = -kv
        m.dof_damping[:2] = f["pusher_damping"]
        self._speed = float(f["pusher_speed"])
        mujoco.mj_setConst(m, self._goal_data)  # mass-dependent constants; uses (and clobbers) this scratch data

    # -- properties --------------------------------------------------------------------
    @property
    def cube_size(self) -> float:
        """Half side of the cube (m)."""
        return float(self._factors["cube_size"])

    @property
    def pusher_speed(self) -> float:
        """Commanded pusher speed (m/s) at a unit action."""
        return self._speed

    @property
    def dt(self) -> float:
        """Duration of one env step (s)."""
        return TIMESTEP * FRAME_SKIP

    # -- public helpers ------------------------------------------------------------------
    def render_goal(self) -> np.ndarray:
        """The scene as it looks in the goal state, ``uint8 (H, W, 3)`` (a fresh array)."""
        return self._render_data(self._goal_data)

    def goal_from_cube(self, x: float, y: float, yaw: float = 0.0, pusher_xy: Any = None) -> np.ndarray:
        """A goal state, float64 (17,): the cube resting at ``(x, y)`` with `yaw` (rad).

        The pusher sits at `pusher_xy` (default: behind the cube on the line from the
        current cube position, where a push towards the goal ends).
        """
        cube = np.array([x, y], np.float64)
        if pusher_xy is None:
            pusher = self._pusher_behind(self.data.qpos[2:4].copy(), cube)
        else:
            pusher = np.asarray(pusher_xy, np.float64)
        return self._state_from(pusher, cube, yaw)

    # -- hooks of WorldModelEnv -------------------------------------------------------------
    def _simulate(self, action: list[float]) -> None:
        """Command the pusher velocity ``pusher_speed * action``; a push out of its range at the limit is zeroed."""
        a = np.array(action)
        p = self.data.qpos[:2]
        a[(p >= PUSHER_RANGE) & (a > 0.0)] = 0.0  # don't drive into the joint limit
        a[(p <= -PUSHER_RANGE) & (a < 0.0)] = 0.0
        self._advance(a * self._speed)
        self._mj.mj_camlight(self.model, self.data)

    def _goal_from_state(self, state: np.ndarray) -> np.ndarray:
        """The recorded scene at rest: `state` with its velocities (qvel, indices 9..16) zeroed, float64 (17,)."""
        goal = state.copy()
        goal[9:] = 0.0
        return goal

    def _progress(self) -> tuple[float, bool]:
        c, g = self.data.qpos, self._goal
        dist = math.hypot(float(c[2] - g[2]), float(c[3] - g[3]))
        return dist, dist < SUCCESS_RADIUS

    def _goal_distances(self, qpos: np.ndarray) -> np.ndarray:
        """`_progress`'s cube xy distance for positions `qpos` (..., 9), float64 (...)."""
        return np.hypot(qpos[..., 2] - self._goal[2], qpos[..., 3] - self._goal[3])

    _control_needs_state = True  # `_simulate` gates the action on the pusher's position

    def _controls(self, qpos: np.ndarray | None, actions: np.ndarray) -> np.ndarray:
        """`_simulate`'s ctrl for clipped actions (N, 1, 2) at pusher positions ``qpos[:, :2]``."""
        a = actions.copy()
        p = qpos[:, None, :2]
        a[(p >= PUSHER_RANGE) & (a > 0.0)] = 0.0  # don't drive into the joint limit
        a[(p <= -PUSHER_RANGE) & (a < 0.0)] = 0.0
        return a * self._speed

    def _write_goal(self, goal: np.ndarray) -> None:
        self._goal = goal
        self._put_state(self._goal_data, goal)

    def _put_state(self, data: Any, state: np.ndarray) -> None:
        """Also no control and no solver warm start, so a replay from `set_state` matches the original run."""
        data.qacc_warmstart[:] = 0.0
        data.ctrl[:] = 0.0
        super()._put_state(data, state)


    def _state_from(self, pusher: np.ndarray, cube: np.ndarray, yaw: float) -> np.ndarray:
        s = np.zeros(_STATE_DIM)
        s[0:2] = pusher
        s[2:4] = cube
        s[4] = self.cube_size
        s[5:9] = _yaw_quat(yaw)
        return s

    def _pusher_behind(self, cube_from: np.ndarray, cube_to: np.ndarray) -> np.ndarray:
        d = cube_to - cube_from
        n = float(np.hypot(*d))
        u = d / n if n > 1e-9 else np.array([1.0, 0.0])
        p = cube_to - u * (self.cube_size + PUSHER_RADIUS + 0.002)
        return np.clip(p, -PUSHER_RANGE, PUSHER_RANGE)

    def _check_state(self, value: Any, name: str) -> np.ndarray:
        s = check_vector(value, name, (_STATE_DIM,))  # qpos 9 then qvel 8
        if np.any(np.abs(s[:2]) > PUSHER_RANGE + STATE_TOLERANCE):
            raise ValueError(f"{name}: pusher position {s[:2].tolist()} outside its range {_RANGE_TXT} in x and y")
        q = float(np.linalg.norm(s[5:9]))
        if q < 1e-9:
            raise ValueError(f"{name}: cube quaternion {s[5:9].tolist()} has zero norm")
        if abs(q - 1.0) > 1e-9:
            s[5:9] /= q
        return s

    _check_goal = _check_state

    def _sample_start(self) -> np.ndarray:
        rng = self.np_random
        cube = rng.uniform(-CUBE_START_HALF, CUBE_START_HALF, size=2)
        yaw = float(rng.uniform(-math.pi / 4, math.pi / 4))
        clearance = math.sqrt(2.0) * self.cube_size + PUSHER_RADIUS + 0.01
        while True:  # the cube blocks < 1% of the pusher square: a few draws at most
            pusher = rng.uniform(-PUSHER_START_HALF, PUSHER_START_HALF, size=2)
            if np.hypot(*(pusher - cube)) > clearance:
                return self._state_from(pusher, cube, yaw)

    def _sample_goal(self, start: np.ndarray) -> np.ndarray:
        rng = self.np_random
        center = np.asarray(self._factors["goal_center"])
        cube = start[2:4]
        for _ in range(1000):  # from any start, a corner of the goal square (0.12 side) is >= 0.085 away
            g = center + rng.uniform(-GOAL_HALF, GOAL_HALF, size=2)
            if np.hypot(*(g - cube)) >= MIN_GOAL_DISTANCE:
                break
        q = start[5:9]
        yaw = 2.0 * math.atan2(float(q[3]), float(q[0]))
        return self._state_from(self._pusher_behind(cube, g), g, yaw)


class CubeExpert(ScriptedExpert):
    """Scripted pusher: get behind the cube on the goal line, then push it to the goal.

    Memoryless (reads the true state through ``env.unwrapped`` each step), so it
    re-aligns by itself whenever the cube drifts. With ``u`` the unit vector from the
    cube to the goal and the pusher offset from the cube split into ``along`` (on ``u``)
    and ``lat`` (across it):

    1. *push* when the pusher is behind the cube on the line (``|lat| < 0.6 h``,
       ``-(R + 0.02) < along < -(h + r - 0.01)``; h cube half side, r tip radius,
       R = sqrt(2) h + r + 0.01 the keep-out radius): velocity along ``u`` (slowing
       down as the cube nears the goal) plus a lateral correction back onto the line;
    2. else *circle around*: outside the keep-out circle, head for a point on a circle
       of radius R + 0.015 at most 50 degrees closer to the staging point behind the
       cube (or straight to the staging point ``c - R u`` once within 35 degrees);
       inside the circle but not behind, move radially out first.

    The action is the wanted velocity over ``pusher_speed`` (scaled into the box) plus
    Gaussian noise of std `noise` (in action units), clipped to [-1, 1].
    """

    PUSH_GAIN = 2.0  # push speed (m/s) per metre still to go
    MIN_PUSH = 0.06  # slowest push (m/s)
    LATERAL_GAIN = 6.0  # lateral correction (m/s per metre off the line)
    MOVE_GAIN = 8.0  # approach speed (m/s per metre to the waypoint)

    def velocity(self) -> np.ndarray:
        """The pusher velocity (m/s) the expert wants now, float64 (2,)."""
        env = self.env
        s, goal = env.state, env.goal_state
        p, c, g = s[0:2], s[2:4], goal[2:4]
        h, r = env.cube_size, PUSHER_RADIUS
        vmax = env.pusher_speed
        d = g - c
        dist = float(np.hypot(*d))
        if dist < 1e-9:
            return np.zeros(2)
        u = d / dist
        v = np.array([-u[1], u[0]])
        rel = p - c
        along, lat = float(rel @ u), float(rel @ v)
        keep_out = math.sqrt(2.0) * h + r + 0.01
        if abs(lat) < 0.6 * h and -(keep_out + 0.02) < along < -(h + r - 0.01):
            speed = min(vmax, self.MIN_PUSH + self.PUSH_GAIN * dist)
            return speed * u - self.LATERAL_GAIN * lat * v
        radius = float(np.hypot(along, lat))
        if radius < keep_out and along > -(h + r - 0.01):
            target = c + rel / max(radius, 1e-9) * (keep_out + 0.015)
        else:
            phi = math.atan2(lat, -along)  # 0 = straight behind the cube
            if abs(phi) < math.radians(35):
                target = c - keep_out * u
            else:
                new = phi - math.copysign(math.radians(50), phi)
                ring = keep_out + 0.015
                target = c + ring * (-math.cos(new) * u + math.sin(new) * v)
        step = target - p
        n = float(np.hypot(*step))
        return step * min(self.MOVE_GAIN, vmax / n) if n > 1e-9 else np.zeros(2)

    def __call__(self, obs: np.ndarray, info: dict) -> np.ndarray:
        """Action for the current step, float32 (2,)."""
        return self._finish(into_box(self.velocity() / self.env.pusher_speed))
