"""ReLAM as one column of the paper's tables: the whole pipeline of one run, top to bottom.

    demos -> keypoints + keyframes (subgoal dataset) -> anticipation model -> ReLAM reward
          -> Meta-World: hierarchical PPO online      (relam.rl.ppo)
          -> ManiSkill:  IQL on the labelled offline set (relam.offline, relam.rl.iql)
          -> success rate over fixed evaluation episodes, learning curve

Shared work is cached and reused across runs: the demos and the subgoal dataset are keyed by the
settings that make them, and the anticipation model by its config plus its dataset, so the five
seeds of one cell (and the reward-shape ablation, which does not change the model) train it once.
The cache entries are made under file locks, so parallel runs never make the same thing twice.
The anticipation model's budget follows the run's scale (``AnticipationConfig.for_scale``).
"""
from __future__ import annotations

from pathlib import Path
from filelock import FileLock

from relam.cache import cache_dir, settings_hash
from relam.methods import ReLAMSettings, RewardMethod, RunContext, RunResult, register_method


def subgoal_dataset(task: str, n_points: int, n_demos: int, progress: bool = False):
    """The task's subgoal dataset from its first ``n_demos`` expert videos (made if missing)."""
    from relam.keypoints import KeypointSettings
    from relam.subgoals import build_subgoal_dataset, subgoal_cache_path

    kp = KeypointSettings(num_points=n_points)
    path = subgoal_cache_path(task, kp, n_demos)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        return build_subgoal_dataset(task, kp, n_demos=n_demos, progress=progress)


def anticipation_model(task: str, n_points: int, n_demos: int, scale: str, progress: bool = False):
    """The task's trained anticipation model for this scale, trained once and cached."""
    from relam.anticipation import AnticipationConfig, load_anticipation, train_anticipation
    from relam.keypoints import KeypointSettings
    from relam.subgoals import subgoal_cache_path

    dataset = subgoal_dataset(task, n_points, n_demos, progress)
    config = AnticipationConfig.for_scale(scale, num_points=n_points)
    # hold 10 % out for the evaluation figures, but never more than leaves 2 training demos
    holdout = max(0, min(10, n_demos // 10))
    key = settings_hash({"task": task, "config": config.to_dict(), "n_demos": n_demos,
                         "holdout": holdout, "data": dataset.settings,
                         "dataset": subgoal_cache_path(task, KeypointSettings(num_points=n_points), n_demos).stem})
    out = cache_dir() / "anticipation" / task / key
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "model.pt").exists():
            model = load_anticipation(out / "model.pt")
        else:
            model = train_anticipation(dataset, config, out, holdout=holdout, progress=progress)
    model.cache_key = key  # identifies the model in the keys of datasets it labels
    return model


def make_planner(ctx: RunContext):
    """The subgoal planner of a run: the anticipation model, or ground truth (Fig. 6c)."""
    from relam.keypoints import KeypointSettings
    from relam.wrappers import AnticipationPlanner, GroundTruthSubgoals

    s: ReLAMSettings = ctx.settings  # type: ignore[assignment]
    if s.subgoals == "ground_truth":
        return GroundTruthSubgoals(keypoint_settings=KeypointSettings(num_points=s.n_points))
    model = anticipation_model(ctx.task, s.n_points, ctx.budget.n_demos, ctx.scale, ctx.progress)
    return AnticipationPlanner(model)


def reward_settings(ctx: RunContext):
    """The run's reward settings: the paper's defaults with the spec's reward shape (Fig. 6b)."""
    from relam.reward import RewardSettings

    return RewardSettings(shape=ctx.settings.reward_shape)  # type: ignore[attr-defined]


@register_method("relam")
class ReLAM(RewardMethod):
    """ReLAM (the paper's method): keypoint subgoals from the anticipation model, distance reward."""

    Settings = ReLAMSettings
    #: 2: a subgoal is reached when every keypoint is within theta_s (RewardSettings.reach)
    version = "2"

    def online(self, ctx: RunContext) -> RunResult:
        """Hierarchical PPO through the ReLAM wrapper (Meta-World rows)."""
        from relam.rl.ppo import train_ppo
        from relam.wrappers import make_relam_env

        s: ReLAMSettings = ctx.settings  # type: ignore[assignment]
        spec, planner, reward = ctx.task_spec(), make_planner(ctx), reward_settings(ctx)
        b = ctx.budget
        ppo = ctx.ppo_settings()
        with_image = b.policy_input == "image+points"

        def env_fn(seed: int):
            return make_relam_env(spec, planner, seed=seed, settings=reward, n_points=s.n_points,
                                  include_image=with_image)

        return train_ppo(env_fn, ppo, Path(ctx.out_dir), b.train_steps, b.eval_every, b.eval_episodes,
                         ctx.seed, progress=ctx.progress, title=f"ReLAM {spec.name} seed {ctx.seed}")

    def offline(self, ctx: RunContext) -> RunResult:
        """IQL on the task's offline control set labelled with ReLAM rewards (appendix A.4).

        The set has ``budget.offline_set_size()`` trajectories, half expert, half noisy (the paper: 100 + 100).
        ``budget.train_steps`` gradient steps in epochs of ``budget.eval_every`` steps, the policy
        evaluated in the live env (through the ReLAM wrapper) after every epoch; the path every
        method shares (:func:`relam.offline.run_offline`).
        """
        from relam.offline import ReLAMLabeller, run_offline
        from relam.wrappers import make_relam_env

        s: ReLAMSettings = ctx.settings  # type: ignore[assignment]
        spec, planner, reward = ctx.task_spec(), make_planner(ctx), reward_settings(ctx)
        planner_id = getattr(getattr(planner, "model", None), "cache_key", None) or f"{s.subgoals}-{s.n_points}"
        labeller = ReLAMLabeller(planner, settings=reward, planner_id=planner_id)
        return run_offline(ctx, labeller, lambda: make_relam_env(spec, planner, settings=reward, n_points=s.n_points,
                                                                 include_image=True, policy_image_size=64))
