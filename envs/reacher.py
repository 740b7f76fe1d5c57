"""Reacher: a MuJoCo two-link planar arm that must reach a target configuration, seen from above."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from envs.base import check_vector
from envs.factors import Factor, FactorSpace
from envs.mujoco_common import TOP_VIEW_VISUAL, MujocoEnv, apply_top_view, top_view_factors, top_view_xml
from envs.policies import ScriptedExpert, into_box

ELBOW_LIMIT = 2.6
"""The elbow hinge is limited to [-ELBOW_LIMIT, ELBOW_LIMIT] rad; the shoulder turns freely."""
SUCCESS_RADIUS = 0.02
"""An episode succeeds when the fingertip is closer than this (m) to the target fingertip position."""
TARGET_SECTOR = math.pi / 4
"""Sampled target shoulder angles lie within +/- this of ``target_direction``."""
TARGET_ELBOW = (0.3, 2.4)
"""Sampled target elbow angles have a magnitude in this range (rad), either sign."""
MIN_GOAL_DISTANCE = 0.06
"""Sampled targets put the fingertip at least this far (m) from its start."""
STATE_TOLERANCE = 0.2
"""`set_state` accepts an elbow up to this much beyond its limit (limit-constraint penetration)."""
FRAME_SKIP = 10
"""Physics steps per env step (timestep 0.005 s, so one env step is 0.05 s)."""
TIMESTEP = 0.005
LINK_RADIUS = 0.016
TIP_RADIUS = 0.022
LINK2_LIFT = 0.004
"""The second link sits this much above the first, so their overlap at the elbow renders cleanly."""
CAMERA_DISTANCE = 0.9
CAMERA_FOVY = 45.0

REACHER_FACTORS = FactorSpace(
    [
        Factor(
            "arm_color", "visual", (0.25, 0.45, 0.85),
            train=((0.1, 0.3, 0.7), (0.4, 0.6, 1.0)),
            ood=(((0.7, 0.1, 0.1), (1.0, 0.35, 0.35)), ((0.75, 0.6, 0.0), (1.0, 0.85, 0.3))),
            doc="RGB colour of both links (train: blues; ood: reds, yellows)",
        ),
        Factor(
            "tip_color", "visual", (0.95, 0.55, 0.1),
            train=((0.85, 0.45, 0.0), (1.0, 0.65, 0.2)),
            ood=(((0.0, 0.6, 0.2), (0.2, 0.85, 0.4)), ((0.6, 0.0, 0.6), (0.85, 0.25, 0.85))),
            doc="RGB colour of the fingertip sphere (train: oranges; ood: greens, purples)",
        ),
        Factor(
            "floor_color", "visual", (0.85, 0.85, 0.8),
            train=((0.75, 0.75, 0.7), (0.95, 0.95, 0.9)),
            ood=(((0.3, 0.3, 0.3), (0.5, 0.5, 0.5)), ((0.55, 0.75, 0.55), (0.7, 0.9, 0.68))),
            doc="RGB colour of the floor (train: light greys; ood: dark greys, green tints)",
        ),
        *top_view_factors(((-14.0, -8.0), (8.0, 14.0)), "camera rotation about the x axis around the arm's base, degrees"),
        Factor(
            "link1_length", "geometric", 0.12, train=(0.10, 0.14), ood=((0.07, 0.09), (0.15, 0.17)),
            doc="length of the upper arm, shoulder to elbow (m)",
        ),
        Factor(
            "link2_length", "geometric", 0.12, train=(0.10, 0.14), ood=((0.07, 0.09), (0.15, 0.17)),
            doc="length of the forearm, elbow to fingertip (m)",
        ),
        Factor(
            "target_direction", "geometric", 0.0, train=(-0.6, 0.6), ood=((2.4, 3.9),),
            doc="centre (rad) of the sector of sampled target shoulder angles (+/- pi/4)",
        ),
        Factor(
            "link_mass", "physical", 0.05, train=(0.04, 0.06), ood=((0.02, 0.03), (0.08, 0.11)),
            doc="mass of each link (kg)",
        ),
        Factor(
            "joint_damping", "physical", 0.01, train=(0.008, 0.012), ood=((0.004, 0.006), (0.015, 0.02)),
            doc="viscous damping of both hinges (N m s/rad)",
        ),
        Factor(
            "actuator_gain", "physical", 0.05, train=(0.04, 0.06), ood=((0.025, 0.033), (0.07, 0.09)),
            doc="torque (N m) of a full action on each hinge",
        ),
    ]
)


def _model_xml() -> str:
    q = "0.70710678 0 0.70710678 0"  # turns a capsule's z axis onto the link's x axis
    return f"""
<mujoco model="reacher">
  <compiler angle="radian"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast" gravity="0 0 0"/>
{TOP_VIEW_VISUAL}
  <default>
    <geom contype="0" conaffinity="0"/>
  </default>
  <worldbody>{top_view_xml(2, CAMERA_DISTANCE, CAMERA_FOVY)}
    <geom name="floor" type="plane" size="1 1 0.1" rgba="0.85 0.85 0.8 1"/>
    <geom name="base" type="cylinder" size="0.026 0.01" pos="0 0 0.01" rgba="0.25 0.25 0.25 1"/>
    <body name="link1" pos="0 0 0.02">
      <joint name="shoulder" type="hinge" axis="0 0 1" damping="0.01"/>
      <inertial pos="0.06 0 0" mass="0.05" diaginertia="1e-5 6e-5 6e-5"/>
      <geom name="link1" type="capsule" size="{LINK_RADIUS} 0.06" pos="0.06 0 0" quat="{q}" rgba="0.25 0.45 0.85 1"/>
      <body name="link2" pos="0.12 0 {LINK2_LIFT}">
        <joint name="elbow" type="hinge" axis="0 0 1" damping="0.01" limited="true" range="-{ELBOW_LIMIT} {ELBOW_LIMIT}"
               solreflimit="0.01 1" solimplimit="0.95 0.99 0.001"/>
        <inertial pos="0.06 0 0" mass="0.05" diaginertia="1e-5 6e-5 6e-5"/>
        <geom name="link2" type="capsule" size="{LINK_RADIUS} 0.06" pos="0.06 0 0" quat="{q}" rgba="0.25 0.45 0.85 1"/>
        <geom name="tip" type="sphere" size="{TIP_RADIUS}" pos="0.12 0 0.002" rgba="0.95 0.55 0.1 1"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <motor name="shoulder" joint="shoulder" gear="0.05" ctrllimited="true" ctrlrange="-1 1"/>
    <motor name="elbow" joint="elbow" gear="0.05" ctrllimited="true" ctrlrange="-1 1"/>
  </actuator>
</mujoco>
"""


def fingertip(q: Any, link1: float, link2: float) -> np.ndarray:
    """Planar fingertip position ``(x, y)`` of joint angles `q` ``(shoulder, elbow)``, float64 (2,)."""
    a, b = float(q[0]), float(q[0]) + float(q[1])
    return np.array([link1 * math.cos(a) + link2 * math.cos(b), link1 * math.sin(a) + link2 * math.sin(b)])


def wrap_angle(x: Any) -> Any:
    """Angle(s) wrapped into [-pi, pi)."""
    return (np.asarray(x) + np.pi) % (2 * np.pi) - np.pi


class ReacherEnv(MujocoEnv):
    """A two-link planar arm (MuJoCo) driven by joint torques to a target configuration, seen from above.

    World: a horizontal plane (no gravity). The arm's base is at the origin; a shoulder
    hinge (unlimited) turns the upper arm (a capsule of length ``link1_length``), an
    elbow hinge (limited to +/- `ELBOW_LIMIT` rad) the forearm (a capsule of length
    ``link2_length``) that ends in a fingertip sphere. Primitives only, no contacts. A
    fixed perspective camera looks straight down (tilted by ``camera_tilt``); one
    directional light, no shadows, no MSAA.

    - observation: ``uint8 (resolution, resolution, 3)``, rendered once per step; no
      target marker is drawn (`render_goal` renders the arm in the target configuration,
      so an observation at the goal equals the goal image).
    - action: ``Box(-1, 1, (2,), float32)``, shoulder and elbow torques in units of
      ``actuator_gain``; clipped to the box. One env step is `FRAME_SKIP` physics steps
      of `TIMESTEP` (0.05 s).
    - state: ``float64 (4,)`` ``(shoulder, elbow, shoulder velocity, elbow velocity)``
      (rad, rad/s; the shoulder angle is not wrapped); goal: target joint angles
      ``float64 (2,)`` (`goal_from_state`: the recorded state's joint angles ``state[:2]``).
    - success: the fingertip is within `SUCCESS_RADIUS` (m) of the fingertip position of
      the target configuration (so the mirror elbow solution counts too);
      ``goal_distance`` is that fingertip distance, reward ``-goal_distance``,
      ``terminated = success``.
    - reset options: ``factors`` (dict, validated), ``split`` (sample factors from a
      split, optionally at an OOD ``severity`` 1..3; explicit ``factors`` override the
      named keys), ``state`` (``(q1, q2)`` at rest or ``(q1, q2, dq1, dq2)``) and
      ``goal_state`` (``(q1, q2)``), checked finite with the elbow within its limit.
      Without them the start is uniform (shoulder in [-pi, pi), elbow in +/- 2.4) at
      rest, and the target shoulder angle is uniform within +/- `TARGET_SECTOR` of
      ``target_direction``, the elbow magnitude uniform in `TARGET_ELBOW` with a random
      sign, at least `MIN_GOAL_DISTANCE` of fingertip travel from the start.

    Factors: visual ``arm_color``, ``tip_color``, ``floor_color``, ``light_intensity``,
    ``light_angle``, ``camera_tilt``; geometric ``link1_length``, ``link2_length``
    (capsule sizes, body and inertia frames, ``geom_rbound``/``geom_aabb`` updated),
    ``target_direction``; physical ``link_mass``, ``joint_damping``, ``actuator_gain``.
    All are written into one compiled model, never recompiled (``mj_setConst`` runs when
    a mass or length changed).

    Version history:
        v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    factor_space: FactorSpace = REACHER_FACTORS
    state_dim: int = 4
    frame_skip = FRAME_SKIP
    expert = "envs.reacher:ReacherExpert"
    goal_angle_dims = (0, 1)  # the goal is the two joint angles

    def __init__(
        self, resolution: int = 64, render_mode: str | None = None, antialias: bool = False, terminate_on_success: bool = True
    ) -> None:
        """Create the env; `resolution` is the image side in pixels (>= 8); `antialias`
        turns 4x multisampling on (off by default: it costs several times on a CPU);
        `terminate_on_success` False keeps an episode running past success (see `WorldModelEnv`)."""
        super().__init__(resolution, render_mode, antialias=antialias, terminate_on_success=terminate_on_success)
        m = self.model
        self._links = (m.geom("link1").id, m.geom("link2").id)
        self._tip, self._floor = m.geom("tip").id, m.geom("floor").id
        self._bodies = (m.body("link1").id, m.body("link2").id)
        self._camera = m.camera("top").id
        self._light = m.light("sun").id
        self._inertia_key: tuple | None = None
        self._set_factors(self.factor_space.defaults())
        self._begin_episode(np.array([-1.0, 0.5, 0.0, 0.0]), np.array([0.5, 1.0]))

    def _model_xml(self) -> str:
        return _model_xml()

    # -- factors ------------------------------------------------------------------------
    def _apply_factors(self, factors: dict) -> None:
        """Write validated factor values into the compiled model (no recompile)."""
        m = self.model
        lengths = (float(factors["link1_length"]), float(factors["link2_length"]))
        mass = float(factors["link_mass"])
        for link, body, length in zip(self._links, self._bodies, lengths):
            half = 0.5 * length
            m.geom_pos[link, 0] = half
            m.geom_size[link, 1] = half
            m.geom_rbound[link] = half + LINK_RADIUS
            m.geom_aabb[link] = (0.0, 0.0, 0.0, LINK_RADIUS, LINK_RADIUS, half + LINK_RADIUS)
            m.body_ipos[body] = (half, 0.0, 0.0)
            m.body_mass[body] = mass
            axial = 0.5 * mass * LINK_RADIUS**2  # a solid rod along x
            across = mass * (3 * LINK_RADIUS**2 + length**2) / 12.0
            m.body_inertia[body] = (axial, across, across)
        m.body_pos[self._bodies[1], 0] = lengths[0]
        m.geom_pos[self._tip, 0] = lengths[1]
        m.geom_rgba[list(self._links), :3] = factors["arm_color"]
        m.geom_rgba[self._tip, :3] = factors["tip_color"]
        m.geom_rgba[self._floor, :3] = factors["floor_color"]
        apply_top_view(m, self._light, self._camera, CAMERA_DISTANCE, factors)
        m.dof_damping[:] = float(factors["joint_damping"])
        m.actuator_gear[:, 0] = float(factors["actuator_gain"])
        key = (lengths, mass)
        if key != self._inertia_key:  # derived constants (invweight0, ...) follow masses and lengths
            self._mj.mj_setConst(m, self.data)
            self._inertia_key = key

    # -- properties ---------------------------------------------------------------------
    @property
    def link_lengths(self) -> tuple[float, float]:
        """``(link1_length, link2_length)`` in metres."""
        return float(self._factors["link1_length"]), float(self._factors["link2_length"])

    def fingertip(self, q: Any | None = None) -> np.ndarray:
        """Fingertip ``(x, y)`` for joint angles `q` (default: the current ones), float64 (2,)."""
        return fingertip(self.data.qpos if q is None else q, *self.link_lengths)

    # -- hooks of WorldModelEnv -------------------------------------------------------------
    def _sample_start(self) -> np.ndarray:
        """Uniform joint angles (elbow within +/- 2.4), at rest."""
        return np.array([self.np_random.uniform(-math.pi, math.pi), self.np_random.uniform(-2.4, 2.4), 0.0, 0.0])

    def _goal_from_state(self, state: np.ndarray) -> np.ndarray:
        """The joint angles ``state[:2]``, float64 (2,)."""
        return state[:2].copy()

    def _progress(self) -> tuple[float, bool]:
        lengths = self.link_lengths
        d = float(np.linalg.norm(fingertip(self.data.qpos, *lengths) - fingertip(self._goal, *lengths)))
        return d, d < SUCCESS_RADIUS

    def _goal_distances(self, qpos: np.ndarray) -> np.ndarray:
        """`_progress`'s fingertip distance for joint angles `qpos` (..., 2), float64 (...)."""
        l1, l2 = self.link_lengths
        a, b = qpos[..., 0], qpos[..., 0] + qpos[..., 1]
        goal = fingertip(self._goal, l1, l2)
        return np.hypot(l1 * np.cos(a) + l2 * np.cos(b) - goal[0], l1 * np.sin(a) + l2 * np.sin(b) - goal[1])

    def _check_joints(self, value: Any, name: str, sizes: tuple[int, ...]) -> np.ndarray:
        s = check_vector(value, name, sizes)
        if abs(s[1]) > ELBOW_LIMIT + STATE_TOLERANCE:
            raise ValueError(
                f"{name}={s.tolist()}: the elbow angle {s[1]:g} is outside [-{ELBOW_LIMIT}, {ELBOW_LIMIT}]"
            )
        return s

    def _check_state(self, value: Any, name: str) -> np.ndarray:
        """``(q1, q2)`` (at rest) or ``(q1, q2, dq1, dq2)`` as float64 (4,)."""
        s = self._check_joints(value, name, (2, 4))
        return s if s.shape == (4,) else np.concatenate([s, np.zeros(2)])

    def _check_goal(self, value: Any, name: str) -> np.ndarray:
        return self._check_joints(value, name, (2,))

    def _sample_goal(self, start_state: np.ndarray) -> np.ndarray:
        centre = float(self._factors["target_direction"])
        start = self.fingertip(start_state[:2])
        while True:  # the sector holds targets far from any start: a few draws at most
            g = np.array([
                wrap_angle(centre + self.np_random.uniform(-TARGET_SECTOR, TARGET_SECTOR)),
                self.np_random.choice((-1.0, 1.0)) * self.np_random.uniform(*TARGET_ELBOW),
            ])
            if np.linalg.norm(self.fingertip(g) - start) >= MIN_GOAL_DISTANCE:
                return g


class ReacherExpert(ScriptedExpert):
    """Joint-space PD toward the target angles through the arm's own mass matrix.

    The desired joint velocity is ``GAIN * error`` (the shoulder error wrapped to
    [-pi, pi)), capped at `MAX_SPEED` rad/s (norm). The torque is
    ``damping * w_des + M(q) (w_des - w) / TRACK_TIME`` (M from MuJoCo, the damping
    from the env's factors), as an action scaled back into the unit box (direction
    kept), plus Gaussian noise of std `noise`, clipped to [-1, 1].
    """

    GAIN = 6.0
    MAX_SPEED = 4.0
    TRACK_TIME = 0.1

    env: ReacherEnv

    def __init__(self, env: Any, noise: float) -> None:
        """Bind to `env` (read through ``env.unwrapped``)."""
        super().__init__(env, noise)
        self._mass = np.zeros((2, 2))

    def __call__(self, obs: np.ndarray, info: dict) -> np.ndarray:
        """Torque action toward the target configuration, float32 (2,)."""
        env = self.env
        mj, m, d = env._mj, env.model, env.data
        q, w = d.qpos.copy(), d.qvel.copy()
        err = env.goal_state - q
        err[0] = wrap_angle(err[0])
        w_des = self.GAIN * err
        speed = float(np.linalg.norm(w_des))
        if speed > self.MAX_SPEED:
            w_des *= self.MAX_SPEED / speed
        mj.mj_fullM(m, d, self._mass)
        f = env.factors
        torque = float(f["joint_damping"]) * w_des + self._mass @ (w_des - w) / self.TRACK_TIME
        return self._finish(into_box(torque / float(f["actuator_gain"])))
