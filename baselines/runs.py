"""One Table 4 cell of a baseline: PPO online with a frame reward model (Meta-World, and DACfO's
online phase anywhere), or the offline path shared with ReLAM (label -> IQL -> live evaluation).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym

from baselines.common import FrameRewardModel
from relam.methods import ONLINE_SUITE

__all__ = ["IMAGE_POLICY_INPUTS", "require_image_input", "ppo_with_model", "online_run", "offline_run"]

#: the budget ``policy_input`` values an image-based baseline trains with (its ``policy_inputs``):
#: the 64 px image (the "points" of the name are the method's own vector entries, none for most),
#: and offline only, the same plus the robot's recorded joint positions, so that a ManiSkill row
#: can sit on equal terms beside ReLAM's ``image+points+proprio`` (``experiments/offline_relam.yaml``)
IMAGE_POLICY_INPUTS = ("image+points", "image+points+proprio")


def require_image_input(ctx: Any, title: str) -> None:
    """Image-only methods have no keypoints to give a points-only policy, and their Meta-World envs
    no robot-state entry: say so, naming the field, rather than train a policy that silently lacks
    what the budget names."""
    if not ctx.budget.sees_image:
        raise ValueError(
            f"{title} learns from images only; the budget's policy_input={ctx.budget.policy_input!r} gives the "
            "policy keypoints alone. Set policy_input: image+points in the spec's budget for this scale, or "
            "compare points-only runs with ReLAM's own variants only"
        )
    if ctx.budget.sees_proprio and ctx.task_spec().suite == ONLINE_SUITE:
        raise ValueError(
            f"{title} on {ctx.task}: the budget's policy_input={ctx.budget.policy_input!r} adds the robot's state, "
            "which only the baselines' offline (ManiSkill) rows give the policy; set policy_input: image+points "
            "in the spec's Meta-World budget"
        )


def ppo_with_model(ctx: Any, model: FrameRewardModel, title: str, out_dir: str | Path, train_steps: int,
                   eval_every: int, eval_episodes: int, n_steps: int | None = None) -> Any:
    """PPO on the run's task with ``model``'s reward: ``model.wrap(make_env(task))`` (image-only
    observation, rewards filled in per rollout by ``model.callback()``, which also runs the model's
    online update), evaluated on success as every other method.  Any suite: DACfO's offline rows
    run it on ManiSkill for their discriminators (appendix A.4). ``n_steps``: the rollout (None: the
    run's own, :meth:`relam.methods.RunContext.ppo_settings`)."""
    from relam.rl.ppo import train_ppo
    from relam.tasks import make_env

    spec = ctx.task_spec()
    require_image_input(ctx, title)
    ppo = ctx.ppo_settings(rollout=n_steps)

    def env_fn(seed: int) -> gym.Env:
        return model.wrap(make_env(spec, seed=seed))

    return train_ppo(env_fn, ppo, Path(out_dir), int(train_steps), int(eval_every), int(eval_episodes), ctx.seed,
                     progress=ctx.progress, title=f"{title} {spec.name} seed {ctx.seed}",
                     callbacks=[model.callback(gamma=ppo.gamma)])


def online_run(ctx: Any, model: FrameRewardModel, title: str) -> Any:
    """A baseline's Meta-World row (its ``RewardMethod.online``): PPO with ``model``'s reward for the
    run's budget and rollout (:func:`ppo_with_model`); ManiSkill rows take :func:`offline_run`."""
    b = ctx.budget
    return ppo_with_model(ctx, model, title, ctx.out_dir, b.train_steps, b.eval_every, b.eval_episodes)


def offline_run(ctx: Any, labeller: Any, make_eval_env: Any, metrics: dict[str, float] | None = None) -> Any:
    """The ManiSkill (offline) row of a baseline: :func:`relam.offline.run_offline`, the path ReLAM's
    offline runs take too (label the control set -> IQL -> live evaluation).

    The arguments are what each baseline's ``offline_labeller(ctx)`` returns; ``metrics`` (facts
    about the reward model, e.g. its training steps) are added to the run's record.
    """
    from relam.offline import run_offline

    res = run_offline(ctx, labeller, make_eval_env)
    res.metrics.update(metrics or {})
    return res
