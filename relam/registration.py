"""The registered tasks as gymnasium ids: ``gymnasium.make("relam/drawer-open-v3")``.

:func:`register_tasks` runs on ``import relam``; it reads only the task names from the registry
(``relam/tasks.yaml``) and registers one id per task in the ``relam`` namespace, each built by
:func:`make_task_env` (i.e. :func:`relam.tasks.make_env`). No simulator is imported until an env is
made. Keyword arguments of ``gymnasium.make`` go to :func:`make_task_env` (``render=False`` for a
state-only env; ``render_mode`` may only be ``"rgb_array"``, the one mode the tasks have).
"""
from __future__ import annotations

import logging

__all__ = ["NAMESPACE", "env_id", "make_task_env", "register_tasks"]

log = logging.getLogger(__name__)

NAMESPACE = "relam"


def env_id(task: str) -> str:
    """The gymnasium id of a registered task: ``relam/<task>``."""
    return f"{NAMESPACE}/{task}"


def make_task_env(task: str, render: bool = True, render_mode: str | None = "rgb_array"):
    """Entry point of the ``relam/<task>`` ids: the task's :class:`relam.tasks.TaskEnv`."""
    from relam.tasks import TaskError, make_env

    if render_mode not in (None, "rgb_array"):
        raise TaskError(f"gymnasium.make({env_id(task)!r}, render_mode={render_mode!r}): the tasks render "
                        "only 'rgb_array'; pass render_mode='rgb_array' or leave it out")
    return make_env(task, render=render)


def register_tasks() -> list[str]:
    """Register ``relam/<task>`` for every task in the registry not registered yet; returns the
    ids. A broken registry file registers nothing here (logged); the same error is
    raised, with its fix, by whatever uses a task."""
    import gymnasium

    from relam.tasks import TaskError, get_task, list_tasks

    try:
        names = list_tasks()
    except (TaskError, OSError) as e:
        log.debug("relam: tasks not registered with gymnasium: %s", e)
        return []
    ids = []
    for name in names:
        if env_id(name) not in gymnasium.registry:
            gymnasium.register(env_id(name), entry_point=f"{__name__}:make_task_env", kwargs={"task": name},
                               max_episode_steps=get_task(name).horizon)
        ids.append(env_id(name))
    return ids
