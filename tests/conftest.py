"""Test-session set-up shared by every test module.

MuJoCo fixes its GL backend when `mujoco` is first imported. `envs.mujoco_common`
picks a headless one (EGL, else OSMesa) before that import; doing it here, before any
test module is collected, keeps the suite independent of which module happens to
import `mujoco` first (a bare ``import mujoco`` with ``MUJOCO_GL`` unset picks GLFW,
which needs a display).
"""

from envs.mujoco_common import select_gl_backend

select_gl_backend()
