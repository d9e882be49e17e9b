"""ReLAM as one column of the paper's tables: its settings, its pipeline and its wiring, top to bottom.

    demos -> keypoints + keyframes (subgoal dataset) -> anticipation model -> ReLAM reward
          -> Meta-World: hierarchical PPO online      (relam.rl.ppo, through relam.wrappers)
          -> ManiSkill:  IQL on the offline set labelled here (ReLAMLabeller; relam.offline, relam.rl.iql)
          -> success rate over fixed evaluation episodes, learning curve

Shared work is cached and reused across runs: the demos and the subgoal dataset are keyed by the
settings that make them, and the anticipation model by its config plus its dataset, so the five
seeds of one cell (and the reward-shape ablation, which does not change the model) train it once.
The cache entries are made under file locks, so parallel runs never make the same thing twice.
The anticipation model's budget follows the run's scale (``AnticipationConfig.for_scale``).

ReLAM's labelling of one trajectory (the offline twin of :class:`relam.wrappers.ReLAMWrapper`):

1. the planner predicts ``(S+1, N, 2)`` pixel keypoints from the trajectory's first frame (row 0 =
   the keypoints, rows 1.. = subgoals); any object with ``generate(frame, task)`` (the anticipation
   model) or ``plan(frame, task, env=, seed=)`` (a :class:`relam.wrappers.SubgoalPlanner`, e.g.
   :class:`relam.wrappers.GroundTruthSubgoals`) will do;
2. the tracker follows row 0 through the recorded frames (``track(demo, query_uv) -> (T+1, N, 2)``);
3. :func:`relam.reward.label_trajectory` pays the distance reward with stage progression -- the same
   state machine as online, so online and offline rewards agree step for step;
4. the observation at frame t is (image, current keypoints, target keypoints), the target being
   the subgoal of the stage at frame t (the last subgoal once all are reached), normalised with
   :func:`relam.wrappers.normalise_points` -- exactly what the online wrapper returns.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np
from filelock import FileLock
from pydantic import Field

from relam.cache import cache_dir, settings_hash
from relam.methods import (MethodSettings, RewardMethod, RunContext, RunResult, ppo_extension_refused,
                           register_method)
from relam.offline import LabelledTrajectory
from relam.reward import RewardSettings, label_trajectory

if TYPE_CHECKING:
    from relam.tasks import TaskSpec

__all__ = ["ReLAMSettings", "ReLAM", "ReLAMLabeller", "relam_labeller", "make_relam_eval_fn", "subgoal_dataset",
           "anticipation_model", "make_planner", "reward_settings", "task_reward_settings"]


class ReLAMSettings(MethodSettings):
    """Settings the paper varies for ReLAM (ablations of Fig. 6)."""

    n_points: int = Field(default=4, gt=0, description="keypoints per subgoal (Fig. 6a: 4/8/12)")
    reward_shape: Literal["piecewise_linear", "linear", "exponential", "logistic"] = "piecewise_linear"
    subgoals: Literal["generated", "ground_truth"] = Field(
        default="generated", description="anticipation-model subgoals or ground-truth ones (Fig. 6c)")


# --------------------------------------------------------------------------- the run's components


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
    # the model must be able to emit the longest plan of its data: door-open-v3's demos give up to
    # 13 rows (initial keypoints + 12 subgoals) from its camera; a task whose plans fit keeps its key
    longest = max(len(seq.keypoints) for seq in dataset)
    if longest > config.max_len:
        config = dataclasses.replace(config, max_len=int(longest))
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


def task_reward_settings(task: TaskSpec, shape: str = "piecewise_linear") -> RewardSettings:
    """The paper's reward defaults with ``shape`` and the task entry's reward fields: the last-subgoal
    threshold (``final_theta_s``; None on most tasks: theta_s), ``skip_ahead`` (0 on most: strict
    order), ``stage_term`` (``unreached`` on most) and ``reach`` (``every`` on most). The one place a
    task entry reaches the reward (``relam run`` through :func:`reward_settings`,
    ``benchmarks/bench_online.py`` directly)."""
    return RewardSettings(shape=shape, final_theta_s=task.final_theta_s, skip_ahead=task.skip_ahead,
                          stage_term=task.stage_term, reach=task.reach)


def reward_settings(ctx: RunContext) -> RewardSettings:
    """The run's reward settings: :func:`task_reward_settings` with the spec's reward shape (Fig. 6b)."""
    return task_reward_settings(ctx.task_spec(), ctx.settings.reward_shape)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- offline labelling


def _plan_of(planner: Any, demo: Any) -> np.ndarray:
    from relam.wrappers import check_plan

    frame0 = np.asarray(demo.frames[0])
    if hasattr(planner, "plan"):
        out = planner.plan(frame0, str(demo.task), env=None, seed=int(demo.seed))
    elif hasattr(planner, "generate"):
        out = planner.generate(frame0, str(demo.task))
    else:
        raise TypeError("ReLAMLabeller: planner needs generate(initial_frame, task) (anticipation model) "
                        "or plan(initial_frame, task, env=, seed=) (a SubgoalPlanner)")
    return check_plan(out)


class ReLAMLabeller:
    """ReLAM's labelling of the offline control set (:class:`relam.offline.Labeller`): predicted
    subgoals, tracked keypoints, the stage-wise distance reward (the steps: the module docstring).

    Args:
        planner: the anticipation model (``generate``) or a SubgoalPlanner (``plan``).
        tracker: an offline tracker (``track(demo, query_uv) -> (T+1, N, 2)``) or a name for
            :func:`relam.perception.tracking.make_tracker` (default ``"sim"``).
        settings: the reward settings (the same object the online wrapper would use).
        planner_id: identifies the planner in the cache key (e.g. the checkpoint's hash); defaults
            to the planner's class name, which is only safe for planners without weights.
    """

    name = "relam"

    def __init__(self, planner: Any, tracker: Any = "sim", settings: RewardSettings = RewardSettings(),
                 planner_id: str | None = None):
        if isinstance(tracker, str):
            from relam.perception.tracking import make_tracker

            tracker = make_tracker(tracker)
        if not hasattr(tracker, "track"):
            raise TypeError("ReLAMLabeller: tracker must have track(demo, query_uv) -> (T+1, N, 2)")
        self.planner = planner
        self.tracker = tracker
        self.settings = settings
        self.planner_id = planner_id or type(planner).__name__

    def config(self) -> dict:
        return {"planner": self.planner_id, "tracker": getattr(self.tracker, "name", type(self.tracker).__name__),
                "reward": self.settings.to_dict()}

    def label(self, demo: Any) -> LabelledTrajectory:
        from relam.wrappers import normalise_points

        plan = _plan_of(self.planner, demo)
        track = np.asarray(self.tracker.track(demo, plan[0]), dtype=np.float64)
        T = len(demo.actions)
        if track.shape != (T + 1,) + plan.shape[1:]:
            raise ValueError(f"ReLAMLabeller: tracker returned {track.shape}, expected {(T + 1,) + plan.shape[1:]}")
        subgoals = plan[1:]
        rewards, stages, reached = label_trajectory(track, subgoals, self.settings,
                                                    env_success=np.asarray(demo.success, bool))
        size = int(np.asarray(demo.frames).shape[1])
        targets = subgoals[np.minimum(stages, len(subgoals) - 1)]
        extra = {
            "keypoints": np.stack([normalise_points(p, size) for p in track]),
            "target": np.stack([normalise_points(g, size) for g in targets]),
        }
        return LabelledTrajectory(rewards, extra, {"stages": stages, "reached": reached, "plan": plan})


def relam_labeller(subgoals: str, model: str | Path | None = None, n_points: int = 4,
                   tracker: str = "sim") -> ReLAMLabeller:
    """A labeller from the command line's choices: ground-truth subgoals, or a trained anticipation
    checkpoint (identified in cache keys by the hash of its file)."""
    if subgoals == "ground_truth":
        from relam.keypoints import KeypointSettings
        from relam.wrappers import GroundTruthSubgoals

        planner = GroundTruthSubgoals(keypoint_settings=KeypointSettings(num_points=n_points))
        # the id ReLAM.offline gives its ground-truth labeller, so a run and this share the labelled cache
        return ReLAMLabeller(planner, tracker=tracker, planner_id=f"ground_truth-{n_points}")
    if not model:
        raise ValueError("subgoals 'model' needs a trained anticipation checkpoint (--model PATH)")
    from relam.anticipation import load_anticipation

    digest = hashlib.sha256(Path(model).read_bytes()).hexdigest()[:16]
    return ReLAMLabeller(load_anticipation(model), tracker=tracker, planner_id=f"anticipation-{digest}")


def make_relam_eval_fn(task: str, planner: Any, n_episodes: int = 10, settings: Any = None, n_points: int = 4,
                       policy_image_size: int = 64, tracker: Any = "sim", max_steps: int | None = None,
                       policy_render: str = "downsample") -> Callable[[Callable[[Any], np.ndarray]], Any]:
    """``eval_fn(policy) -> EvalResult`` of an IQL policy on the live task through
    :class:`relam.wrappers.ReLAMWrapper` (for :func:`relam.rl.iql.train_iql` outside a run).

    One env is built lazily and reused; episodes use the fixed seeds
    :func:`relam.rl.evaluation.eval_seeds` (>= ``EVAL_SEED_BASE``), the same for every evaluation.
    ``planner`` is what labelled the dataset (the anticipation model through
    :class:`relam.wrappers.AnticipationPlanner`, or ground-truth subgoals). ``policy_render``
    (:func:`relam.wrappers.make_relam_env`): ``"downsample"`` by default, the area-averaged 128 px
    frames an offline dataset's images are (:func:`relam.offline.policy_images`).
    """
    from relam.rl.evaluation import eval_seeds
    from relam.rl.iql import evaluate_policy
    from relam.wrappers import AnticipationPlanner, make_relam_env

    if not hasattr(planner, "plan"):
        planner = AnticipationPlanner(planner)
    holder: dict[str, Any] = {}

    def make(seed: int) -> Any:
        if "env" not in holder:
            holder["env"] = make_relam_env(task, planner, tracker=tracker, settings=settings or RewardSettings(),
                                           n_points=n_points, include_image=True, policy_image_size=policy_image_size,
                                           policy_render=policy_render)
        return holder["env"]

    seeds = eval_seeds(n_episodes)

    def eval_fn(policy: Callable[[Any], np.ndarray]) -> Any:
        return evaluate_policy(policy, make, seeds, max_steps)

    eval_fn.close = lambda: holder.pop("env").close() if "env" in holder else None  # type: ignore[attr-defined]
    return eval_fn


# --------------------------------------------------------------------------- the method


def online_env(ctx: RunContext, planner: Any, seed: int | None = None) -> Any:
    """A run's online environment (training and evaluation alike): the task entry with the budget's
    horizon, ``planner`` (:func:`make_planner`), the run's reward settings and policy input. Also
    what ``relam failures`` replays a trained policy in."""
    from relam.wrappers import make_relam_env

    b = ctx.budget
    return make_relam_env(ctx.task_spec(), planner, seed=seed, settings=reward_settings(ctx),
                          n_points=ctx.settings.n_points,  # type: ignore[attr-defined]
                          include_image=b.sees_image, include_proprio=b.sees_proprio)


@register_method("relam")
class ReLAM(RewardMethod):
    """ReLAM (the paper's method): keypoint subgoals from the anticipation model, distance reward."""

    Settings = ReLAMSettings
    #: 2: a subgoal is reached when every keypoint is within theta_s (RewardSettings.reach)
    version = "2"
    #: appended to ``version`` in the keys of image + points runs on Meta-World (:meth:`key_version`):
    #: their 64 px policy image is rendered at 64 px instead of area-averaged from the 128 px frame
    #: (``make_relam_env(policy_render="auto")``, issue 21), a different observation. Points-only
    #: runs and the offline (ManiSkill) rows see what they saw before and keep their keys.
    image_render_version = "render64"

    @classmethod
    def key_version(cls, task: str, budget: dict) -> str:
        """The method version that enters the run key of ``task`` under ``budget`` (its key dict)."""
        from relam.methods import ONLINE_SUITE, Budget, input_sees_image
        from relam.tasks import get_task

        policy_input = budget.get("policy_input", Budget.model_fields["policy_input"].default)
        if input_sees_image(policy_input) and get_task(task).suite == ONLINE_SUITE:
            return f"{cls.version}+{cls.image_render_version}"
        return cls.version

    #: online runs (train_ppo) with a constant learning rate continue a shorter run's checkpoint
    extension_refused = staticmethod(ppo_extension_refused)

    def online(self, ctx: RunContext) -> RunResult:
        """Hierarchical PPO through the ReLAM wrapper (Meta-World rows)."""
        from relam.rl.ppo import train_ppo

        planner, b = make_planner(ctx), ctx.budget
        return train_ppo(lambda seed: online_env(ctx, planner, seed), ctx.ppo_settings(), Path(ctx.out_dir),
                         b.train_steps, b.eval_every, b.eval_episodes, ctx.seed, progress=ctx.progress,
                         title=f"ReLAM {ctx.task} seed {ctx.seed}")

    def offline(self, ctx: RunContext) -> RunResult:
        """IQL on the task's offline control set labelled with ReLAM rewards (appendix A.4).

        The set has ``budget.offline_set_size()`` trajectories, half expert, half noisy (the paper: 100 + 100).
        ``budget.train_steps`` gradient steps in epochs of ``budget.eval_every`` steps, the policy
        evaluated in the live env (through the ReLAM wrapper) after every epoch; the path every
        method shares (:func:`relam.offline.run_offline`).
        """
        from relam.offline import run_offline
        from relam.wrappers import make_relam_env

        s: ReLAMSettings = ctx.settings  # type: ignore[assignment]
        spec, planner, reward = ctx.task_spec(), make_planner(ctx), reward_settings(ctx)
        planner_id = getattr(getattr(planner, "model", None), "cache_key", None) or f"{s.subgoals}-{s.n_points}"
        labeller = ReLAMLabeller(planner, settings=reward, planner_id=planner_id)
        # evaluated on what the dataset's images are: area-averaged full-size frames
        return run_offline(ctx, labeller, lambda: make_relam_env(spec, planner, settings=reward, n_points=s.n_points,
                                                                 include_image=True, policy_image_size=64,
                                                                 policy_render="downsample"))
