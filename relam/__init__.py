"""relam: a benchmark-reproduction harness for ReLAM (arXiv 2509.22402).

Importing the package selects headless rendering backends before any simulator is imported:
MuJoCo (Meta-World) renders through EGL unless ``MUJOCO_GL`` is already set. It also keeps the
unmaintained ``gym`` package out of the process (:mod:`relam.oldgym`: stable-baselines3 would import
it and print gym's deprecation banner) and registers every task as the gymnasium id
``relam/<task>`` (:mod:`relam.registration`).
"""
import os as _os

_os.environ.setdefault("MUJOCO_GL", "egl")
_os.environ.setdefault("PYOPENGL_PLATFORM", _os.environ["MUJOCO_GL"])

__version__ = "0.1.0"

from relam.oldgym import hide_old_gym as _hide_old_gym  # noqa: E402

_hide_old_gym()

from relam.registration import register_tasks as _register_tasks  # noqa: E402

_register_tasks()
