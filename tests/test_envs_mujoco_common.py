"""The MuJoCo helpers: GL backend choice (only when the user made none) and the renderer."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

CODE = "import os; from envs.mujoco_common import select_gl_backend; print(select_gl_backend(), os.environ.get('MUJOCO_GL'))"


def run(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout.strip()


def test_a_user_choice_is_kept() -> None:
    env = {**os.environ, "MUJOCO_GL": "osmesa"}
    assert run(env) == "osmesa osmesa"


def test_a_headless_backend_is_chosen_when_unset() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    chosen, in_env = run(env).split()
    assert chosen == in_env and chosen in ("egl", "osmesa", "glfw")


def test_mujoco_imported_first_without_a_display_is_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    code = ("import mujoco, envs\ntry:\n    envs.make('wm/Cube-v0')\nexcept RuntimeError as e:\n    print(e)\n"
            "else:\n    print('rendered')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    assert "imported before MUJOCO_GL was set" in out and "MUJOCO_GL=egl|osmesa" in out


def test_offscreen_renderer_returns_fresh_frames() -> None:
    from envs.mujoco_common import OffscreenRenderer, import_mujoco

    mujoco = import_mujoco()
    model = mujoco.MjModel.from_xml_string(
        "<mujoco><worldbody><light pos='0 0 2'/><geom type='plane' size='1 1 .1'/>"
        "<body pos='0 0 .2'><freejoint/><geom type='sphere' size='.1' rgba='1 0 0 1'/></body></worldbody></mujoco>"
    )
    data = mujoco.MjData(model)
    renderer = OffscreenRenderer(model, 32)
    try:
        assert model.vis.quality.offsamples == 0
        a = renderer.render(data)
        b = renderer.render(data)
        assert a.shape == (32, 32, 3) and a.dtype.name == "uint8" and not np.shares_memory(a, b)
        assert (a == b).all()
    finally:
        renderer.close()
        renderer.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        renderer.render(data)


@pytest.mark.parametrize("env_id", ["wm/Cube-v0", "wm/PointMaze-v0", "wm/Reacher-v0"])
def test_multisampling_only_when_asked(env_id: str) -> None:
    import envs

    plain = envs.make(env_id).unwrapped
    smooth = envs.make(env_id, antialias=True).unwrapped
    try:
        assert plain.model.vis.quality.offsamples == 0 and smooth.model.vis.quality.offsamples >= 4
        a, _ = plain.reset(seed=1)
        b, _ = smooth.reset(seed=1)
        assert np.array_equal(plain.state, smooth.state)
        diff = np.abs(a.astype(int) - b.astype(int)).max(axis=-1)
        assert 0 < (diff > 0).mean() < 0.5  # edges smoothed, the scene unchanged
    finally:
        plain.close()
        smooth.close()
