"""Shared pieces of the MuJoCo environments: GL backend, a cheap offscreen renderer, `MujocoEnv`.

Import `mujoco` through `import_mujoco()` in env modules: it picks a headless GL
backend first, and only when the user has not chosen one (``MUJOCO_GL`` unset). That
environment variable is the only process-global state this module touches.

Rendering defaults are CPU-friendly: no shadows, no reflections, no multisample
anti-aliasing (each costs 2-9x on Mesa's software renderer, see ``docs``); pass
``antialias=True`` to `OffscreenRenderer` to get MSAA back.

`MujocoEnv` is the `envs.base.WorldModelEnv` of a compiled MuJoCo model: model, data
and renderer lifecycle, the state as ``qpos`` then ``qvel``, frame-skipped steps. The
*top view* helpers are the rig of the envs seen from straight above (one directional
light tilted toward +x, a camera tilted about x): its factors, its XML and how the
factors are written into the model.
"""

from __future__ import annotations

import ctypes.util
import logging
import math
import os
import sys
from types import ModuleType
from typing import Any

import numpy as np

from envs.base import WorldModelEnv
from envs.factors import Factor

log = logging.getLogger(__name__)

_BACKEND: str | None = None


def select_gl_backend() -> str:
    """Set ``MUJOCO_GL`` if unset (``egl`` when libEGL is present, else ``osmesa``) and return it.

    A value the user set is kept as is. Must run before `mujoco` is first imported: if
    `mujoco` is already imported with ``MUJOCO_GL`` unset, nothing is set, a warning is
    logged and the returned text says so (MuJoCo has then chosen GLFW itself).
    """
    global _BACKEND
    if _BACKEND is not None:
        return _BACKEND
    chosen = os.environ.get("MUJOCO_GL")
    if not chosen and "mujoco" in sys.modules:
        # Too late to choose: mujoco fixed its backend at import (GLFW when MUJOCO_GL is unset).
        _BACKEND = "glfw (mujoco was imported before MUJOCO_GL was set)"
        log.warning("mujoco was imported before worldmodel could choose a headless GL backend; "
                    "rendering needs a display. Import `envs` first or set MUJOCO_GL=egl|osmesa.")
        return _BACKEND
    if chosen:
        log.info("MuJoCo GL backend %r (set by the user)", chosen)
    else:
        if ctypes.util.find_library("EGL"):
            chosen = "egl"
        elif ctypes.util.find_library("OSMesa"):
            chosen = "osmesa"
        else:
            chosen = "glfw"  # needs a display; the error at render time says so
        os.environ["MUJOCO_GL"] = chosen
        if chosen in ("egl", "osmesa") and "PYOPENGL_PLATFORM" not in os.environ:
            os.environ["PYOPENGL_PLATFORM"] = chosen
        log.info("MuJoCo GL backend %r (chosen by worldmodel; set MUJOCO_GL to override)", chosen)
    _BACKEND = chosen
    return chosen


def import_mujoco() -> ModuleType:
    """`mujoco`, imported after `select_gl_backend`."""
    select_gl_backend()
    import mujoco

    return mujoco


class OffscreenRenderer:
    """A `mujoco.Renderer` at a fixed square resolution with shadows, reflections and MSAA off.

    Args:
        model: the `mujoco.MjModel` to render (its ``vis.global_.offwidth/offheight`` are
            raised to the resolution if needed; ``vis.quality.offsamples`` is set to 0,
            or to at least 4 with `antialias`).
        resolution: image side in pixels.
        antialias: keep 4x multisampling (slower on a CPU).

    `render` returns a fresh ``uint8 (resolution, resolution, 3)`` array every call.
    Call `close` when done (env ``close()``); it is idempotent and safe at exit.
    """

    def __init__(self, model: Any, resolution: int, antialias: bool = False) -> None:
        """Create the GL context and scene for `model`."""
        mujoco = import_mujoco()
        self._mujoco = mujoco
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), resolution)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), resolution)
        model.vis.quality.offsamples = max(int(model.vis.quality.offsamples), 4) if antialias else 0
        self.resolution = int(resolution)
        self._renderer = None
        try:
            self._renderer = mujoco.Renderer(model, self.resolution, self.resolution)
        except Exception as e:  # mujoco.FatalError, or GLFW with no display
            raise RuntimeError(
                f"cannot create a MuJoCo offscreen GL context (backend {select_gl_backend()!r}): {e}. Headless machines "
                "need EGL or OSMesa (Debian: libegl1 libgl1-mesa-dri, or libosmesa6) and MUJOCO_GL set "
                "before `mujoco` is first imported; import `envs` first, or set MUJOCO_GL=egl|osmesa"
            ) from e
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0

    def render(self, data: Any, camera: int | str | Any = -1) -> np.ndarray:
        """Render `data` from `camera` (id, name or `mujoco.MjvCamera`) into a new uint8 array."""
        if self._renderer is None:
            raise RuntimeError("render() on a closed OffscreenRenderer")
        self._renderer.update_scene(data, camera=camera)
        flags = self._renderer.scene.flags  # update_scene keeps flags, but be explicit
        flags[self._mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        return self._renderer.render()  # mujoco.Renderer returns a new array each call

    def close(self) -> None:
        """Free the GL context (idempotent)."""
        r, self._renderer = getattr(self, "_renderer", None), None
        if r is not None:
            try:
                r.close()
            except Exception:  # interpreter shutdown: the GL library may be gone already
                pass

    def __del__(self) -> None:
        self.close()


class MujocoEnv(WorldModelEnv):
    """A `WorldModelEnv` simulated by one compiled MuJoCo model and rendered offscreen.

    Provides ``model``, ``data`` (read them; change the scene through the API), the
    renderer and its `close`, ``state`` = ``qpos`` then ``qvel`` (float64 (nq + nv,)),
    `step` as ``ctrl = action`` for ``frame_skip`` physics steps, and `render_goal` with
    the goal written into ``qpos``. A subclass supplies `_model_xml`, sets ``_camera``
    (id, name or `mujoco.MjvCamera`; default: the free camera) and implements the
    factor, sampling and checking hooks of `WorldModelEnv`; its states are float64
    (nq + nv,) vectors. Factors are written into the compiled model, never recompiled.

    Version history:
        v0: initial version.
    """

    frame_skip: int = 1
    """Physics steps per env step."""

    def __init__(
        self, resolution: int = 64, render_mode: str | None = None, antialias: bool = False, terminate_on_success: bool = True
    ) -> None:
        """Compile the model of `_model_xml` and open a renderer at `resolution` (MSAA only if `antialias`)."""
        super().__init__(resolution, render_mode, terminate_on_success)
        self._mj = mj = import_mujoco()
        self.model = mj.MjModel.from_xml_string(self._model_xml())
        self.data = mj.MjData(self.model)
        self._camera: Any = -1
        self._renderer: Any = OffscreenRenderer(self.model, self.resolution, antialias=antialias)

    def _model_xml(self) -> str:
        """The MJCF of the scene."""
        raise NotImplementedError

    @property
    def state(self) -> np.ndarray:
        """``qpos`` then ``qvel``, float64 (nq + nv,) (a copy); the layout is in the class docstring."""
        return np.concatenate([self.data.qpos, self.data.qvel])

    def render_goal(self) -> np.ndarray:
        """The scene with ``qpos`` set to the goal, ``uint8 (H, W, 3)``; the state is unchanged."""
        mj, m, d = self._mj, self.model, self.data
        saved = d.qpos.copy()
        d.qpos[:] = self._goal
        mj.mj_kinematics(m, d)
        img = self._observe()
        d.qpos[:] = saved
        mj.mj_kinematics(m, d)
        return img

    def close(self) -> None:
        """Free the renderer (idempotent)."""
        r, self._renderer = getattr(self, "_renderer", None), None
        if r is not None:
            r.close()

    # -- hooks of WorldModelEnv -------------------------------------------------------------
    def _begin_episode(self, start: np.ndarray, goal: Any) -> None:
        """A fresh ``data`` (time 0, no control, no solver warm start), then the start and goal."""
        self._mj.mj_resetData(self.model, self.data)
        super()._begin_episode(start, goal)

    def _write_state(self, state: np.ndarray) -> None:
        self._put_state(self.data, state)

    def _put_state(self, data: Any, state: np.ndarray) -> None:
        """Write `state` (qpos then qvel) into `data` and run ``mj_forward``."""
        nq = self.model.nq
        data.qpos[:] = state[:nq]
        data.qvel[:] = state[nq:]
        self._mj.mj_forward(self.model, data)

    def _simulate(self, action: list[float]) -> None:
        self._advance(action)

    def _advance(self, ctrl: Any) -> None:
        """``frame_skip`` physics steps under `ctrl`, then the geom poses of the new state (for the frame)."""
        mj, m, d = self._mj, self.model, self.data
        d.ctrl[:] = ctrl
        mj.mj_step(m, d, self.frame_skip)
        mj.mj_kinematics(m, d)

    # -- batched simulation (see `WorldModelEnv.simulate_many`) ------------------------------
    _control_needs_state: bool = False
    """True when `_controls` reads the state at each env step (the rollout then goes one env step per call)."""

    def _controls(self, qpos: np.ndarray | None, actions: np.ndarray) -> np.ndarray:
        """``ctrl`` for clipped `actions` (N, T, A): the action itself (override for a scaled or gated one).

        `qpos` (N, nq) is the state at the start of the step when `_control_needs_state`
        (then T == 1), else None.
        """
        return actions

    def _goal_distances(self, qpos: np.ndarray) -> np.ndarray:
        """``goal_distance`` of positions `qpos` (..., nq) under the current goal, float64 (...)."""
        raise NotImplementedError

    @classmethod
    def _simulate_many(cls, envs: list["MujocoEnv"], actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every sequence of every env in MuJoCo's threaded ``mujoco.rollout``, nothing rendered.

        Each rollout starts from the env's full physics state (``mjSTATE_FULLPHYSICS``) and
        its solver warm start, with the env's own (factor-modified) model, so it computes
        what `step` computes: bit for bit when the controls are fixed in advance (one call
        of ``T * frame_skip`` steps); when `_controls` reads the state (`_control_needs_state`)
        one call per env step, and the solver warm start is carried only within an env step
        (like a `set_state` replay: differences of ~1e-8).
        """
        mj = envs[0]._mj
        import mujoco.rollout as mj_rollout

        B, N, T, _ = actions.shape
        fs, spec = cls.frame_skip, mj.mjtState.mjSTATE_FULLPHYSICS
        m0 = envs[0].model
        nq, nstate = m0.nq, mj.mj_stateSize(m0, spec)
        starts = np.empty((B, nstate))
        for b, e in enumerate(envs):
            mj.mj_getState(e.model, e.data, starts[b], spec)
        init = np.repeat(starts, N, axis=0)  # (B*N, nstate)
        warm = np.repeat(np.stack([e.data.qacc_warmstart for e in envs]), N, axis=0)  # (B*N, nv)
        models = [e.model for e in envs for _ in range(N)]
        datas = _rollout_datas(cls, m0)
        run = lambda rows, state0, ctrl, warm0: mj_rollout.rollout(  # noqa: E731
            models[rows], datas, state0, ctrl, initial_warmstart=warm0, persistent_pool=len(datas) > 1
        )[0]
        if not cls._control_needs_state:
            ctrl = np.concatenate([e._controls(None, actions[b]) for b, e in enumerate(envs)])  # (B*N, T, nu)
            states = np.empty((B * N, T, nstate))
            # every physics step's state comes back: chunks of candidates keep that buffer small
            chunk = max(1, ROLLOUT_BUFFER_BYTES // (T * fs * nstate * 8))
            for lo in range(0, B * N, chunk):
                rows = slice(lo, lo + chunk)
                states[rows] = run(rows, init[rows], np.repeat(ctrl[rows], fs, axis=1), warm[rows])[:, fs - 1 :: fs]
        else:
            states = np.empty((B * N, T, nstate))
            state = init
            for t in range(T):
                qpos = state[:, 1 : 1 + nq].reshape(B, N, nq)
                ctrl = np.concatenate([e._controls(qpos[b], actions[b, :, t : t + 1]) for b, e in enumerate(envs)])
                state = states[:, t] = run(slice(None), state, np.repeat(ctrl, fs, axis=1), warm if t == 0 else None)[:, -1]
        qpos = states[..., 1 : 1 + nq].reshape(B, N, T, nq)  # FULLPHYSICS: time, qpos, qvel, ...
        last = states[:, -1, 1 : 1 + nq + m0.nv].reshape(B, N, nq + m0.nv)
        return np.stack([e._goal_distances(qpos[b]) for b, e in enumerate(envs)]), last

    def _observe(self) -> np.ndarray:
        return self._render_data(self.data)

    def _render_data(self, data: Any) -> np.ndarray:
        """`data` seen from ``_camera``, a fresh ``uint8 (resolution, resolution, 3)``."""
        if self._renderer is None:
            raise RuntimeError("the env is closed")
        return self._renderer.render(data, self._camera)


TOP_VIEW_VISUAL = """
  <visual>
    <headlight active="0"/>
    <global offwidth="64" offheight="64"/>
  </visual>"""
"""The ``<visual>`` element of a top-view scene: no headlight (the sun lights it)."""


def top_view_xml(light_height: float, camera_distance: float, fovy: float) -> str:
    """The light ``sun`` and the camera ``top`` of a top-view scene, as MJCF elements of the worldbody."""
    return f"""
    <light name="sun" directional="true" pos="0 0 {light_height:g}" dir="0 0 -1" diffuse="0.7 0.7 0.7"
           ambient="0.35 0.35 0.35" specular="0.1 0.1 0.1" castshadow="false"/>
    <camera name="top" pos="0 0 {camera_distance}" xyaxes="1 0 0 0 1 0" fovy="{fovy}"/>"""


def top_view_factors(tilt_ood: tuple, tilt_doc: str) -> list[Factor]:
    """The visual factors of the top-view rig: ``light_intensity``, ``light_angle``, ``camera_tilt``.

    The camera tilt trains in [-4, 4] degrees; `tilt_ood` and `tilt_doc` are the env's own.
    """
    return [
        Factor(
            "light_intensity", "visual", 0.7, train=(0.6, 0.8), ood=((0.3, 0.45), (0.95, 1.1)),
            doc="diffuse intensity of the directional light",
        ),
        Factor(
            "light_angle", "visual", 10.0, train=(0.0, 20.0), ood=((35.0, 60.0),),
            doc="angle of the light from the vertical, degrees, tilted toward +x (dims the floor)",
        ),
        Factor("camera_tilt", "visual", 0.0, train=(-4.0, 4.0), ood=tilt_ood, doc=tilt_doc),
    ]


def apply_top_view(model: Any, light: int, camera: int, camera_distance: float, factors: dict) -> None:
    """Write the `top_view_factors` values of `factors` into the light and the camera of `model`."""
    model.light_diffuse[light] = float(factors["light_intensity"])
    ang = math.radians(float(factors["light_angle"]))
    model.light_dir[light] = (math.sin(ang), 0.0, -math.cos(ang))
    tilt = math.radians(float(factors["camera_tilt"]))
    model.cam_pos[camera] = (0.0, -camera_distance * math.sin(tilt), camera_distance * math.cos(tilt))
    model.cam_quat[camera] = (math.cos(tilt / 2), math.sin(tilt / 2), 0.0, 0.0)



ROLLOUT_BUFFER_BYTES = 64 << 20
"""Most bytes of per-physics-step states one ``mujoco.rollout`` call returns (`MujocoEnv.simulate_many` chunks candidates)."""

_ROLLOUT_DATAS: dict[type, list] = {}


def _rollout_datas(cls: type, model: Any) -> list:
    """Scratch ``MjData`` of env class `cls` (built from its `model`), one per rollout thread:
    one per available core, at most 16 (one: rollouts run on the calling thread)."""
    datas = _ROLLOUT_DATAS.get(cls)
    if datas is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        mj = import_mujoco()
        datas = _ROLLOUT_DATAS[cls] = [mj.MjData(model) for _ in range(max(1, min(cores, 16)))]
    return datas
