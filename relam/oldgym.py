"""Keep the unmaintained ``gym`` package out of relam's processes.

Nothing in relam uses ``gym``, and relam does not depend on it (it came with d3rlpy, which relam
dropped in issue 17; a venv made before that, or any other package, may still have it). But
stable-baselines3 tries ``import gym`` when it is imported
(``stable_baselines3/common/vec_env/patch_gym.py`` and ``common/utils.py``, to accept old-gym
environments), and importing gym 0.26 prints the banner "Gym has been unmaintained since 2022 ..."
on stderr. :func:`hide_old_gym` (run on ``import relam``) puts a finder first on ``sys.meta_path``
that answers ``import gym`` with ``ModuleNotFoundError``: SB3 then runs as without gym installed
(gymnasium environments only, which is all relam makes) and nothing is printed. It does nothing
when gym is already imported (``benchmarks/bench_iql.py`` imports d3rlpy, which imports gym, before
relam), or when ``RELAM_ALLOW_GYM=1`` (for a process that needs gym after importing relam).
"""
from __future__ import annotations

import importlib.abc
import os
import sys

__all__ = ["GymHider", "hide_old_gym"]


class GymHider(importlib.abc.MetaPathFinder):
    """A meta path finder that refuses ``gym`` (and its submodules) with a message saying why."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "gym" or fullname.startswith("gym."):
            raise ModuleNotFoundError(
                f"relam hides the unmaintained 'gym' package (import of {fullname!r}): relam uses gymnasium, "
                "and stable-baselines3 imports gym only to print its deprecation banner; set "
                "RELAM_ALLOW_GYM=1 before importing relam to import gym anyway", name=fullname)
        return None


def hide_old_gym() -> bool:
    """Install :class:`GymHider` once; returns whether gym is hidden in this process."""
    if os.environ.get("RELAM_ALLOW_GYM") == "1" or "gym" in sys.modules:
        return False
    if not any(isinstance(f, GymHider) for f in sys.meta_path):
        sys.meta_path.insert(0, GymHider())
    return True
