"""Shared pieces of the MuJoCo environments: GL backend choice and a cheap offscreen renderer.

Import `mujoco` through `import_mujoco()` in env modules: it picks a headless GL
backend first, and only when the user has not chosen one (``MUJOCO_GL`` unset). That
environment variable is the only process-global state this module touches.

Rendering defaults are CPU-friendly: no shadows, no reflections, no multisample
anti-aliasing (each costs 2-9x on Mesa's software renderer, see ``docs``); pass
``antialias=True`` to `OffscreenRenderer` to get MSAA back.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_BACKEND: str | None = None


def select_gl_backend() -> str:
    """Set ``MUJOCO_GL`` if unset (``egl`` when libEGL is present, else ``osmesa``) and return it.

    A value the user set is kept as is. Must run before `mujoco` is first imported.
    """
    global _BACKEND
    if _BACKEND is not None:
        return _BACKEND
    chosen = os.environ.get("MUJOCO_GL")
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
            raised to the resolution if needed; ``vis.quality.offsamples`` is set to 0
            unless `antialias`).
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
        if not antialias:
            model.vis.quality.offsamples = 0
        self.resolution = int(resolution)
        self._renderer = mujoco.Renderer(model, self.resolution, self.resolution)
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
        r, self._renderer = self._renderer, None
        if r is not None:
            try:
                r.close()
            except Exception:  # interpreter shutdown: the GL library may be gone already
                pass

    def __del__(self) -> None:
        self.close()
