"""Image Subgoal (IS) and Oracle baselines (paper section 4.2, Fig. 6c).

IS is the ReLAM recipe with *images* in place of keypoints:

- **High level.** A conditional flow-matching model (rectified flow) generates the next subgoal
  image autoregressively from the initial image and the previous subgoal (the initial image for the
  first), trained on the keyframe images of the expert demos (:mod:`relam.subgoals`). The net predicts
  the clean image (x-prediction, see :func:`flow_matching_loss`); sampling is a few Euler steps
  from Gaussian noise. Measured (``python benchmarks/bench_image_subgoal.py drawer-open-v3 --train 16
  --test 4 --steps 1200``, 4 held-out demos): mean absolute pixel error of generated vs true
  subgoals 8.2 / 255 at 64 px, against 10.8 for copying the initial frame and 4.3 for the mean
  training image of subgoal k -- the generated images put the arm roughly right but are blurrier
  and less accurate than a per-index average (a known weakness of pixel subgoals that the paper's
  Fig. 6c comparison is about).
- **End of the sequence.** The model generates a fixed number of subgoals per task: the median
  keyframe count of its training set (``SubgoalImageModel.n_subgoals``). It is conditioned on the
  subgoal index and on an ``is_last`` flag (true for a demo's final keyframe in training, for the
  K-th generated one at inference), so the last generated image is always "the goal" even when a
  demo had more or fewer keyframes than K. Why not a learned stop classifier: keyframe counts on
  the Meta-World demos vary by at most one around the median (4-5 on drawer-open), so a classifier
  would learn little beyond the median, and a fixed K keeps the policy's task well defined.
- **Reward.** Cosine similarity between the current observation and the target image in an image
  embedding space (:mod:`baselines.embedding`); the distance ``1 - cos`` goes through ReLAM's own
  reward shape and stage logic (:func:`relam.reward.stage_reward`: shaped distance, per-step
  penalty per unreached subgoal, stage bonus, final bonus). ``similarity >= similarity_threshold``
  ends a stage and the next image becomes the target.
- **Low level.** The policy sees ``{"image": uint8 (3,64,64), "target_image": uint8 (3,64,64)}``.
- **Offline (ManiSkill rows, appendix A.4).** "For IS and Oracle baseline, we assign rewards in the
  same way to ReLAM": :class:`ImageSubgoalLabeller` runs the same stage machine over the offline
  set's recorded frames (plan from each trajectory's first frame), IQL trains on it, and the
  policy is evaluated through :class:`ImageSubgoalWrapper`. The IQL policy takes the current image
  plus the current and target *embeddings* (``observe_embeddings``): the target image through the
  reward's frozen embedding (why: see :class:`ImageSubgoalLabeller`).

Oracle is IS with the ground-truth subgoal images: the task's expert is rolled out from the same
initial state (``relam.demos.rollout_expert`` in a private env) and its keyframe images are taken
with the ReLAM keyframe selection (:func:`relam.subgoals.subgoal_sequence`); everything else is
unchanged (:class:`OracleSubgoalPlanner`).

Resolution: the generator works at 32x32 (it trains in minutes on 2 shared CPU cores; 64x64 was
about 4x slower a step); its images are upsampled to the policy's 64x64. The default embedding
works at 32x32 too, so the reward compares like with like. On ManiSkill the enlargement costs more
than the generator gets right (a perfect 32 px generator would score worse than copying the first
frame); ``generator_compose="residual"`` adds the generator's change to the sharp initial frame
instead (PushCube 12.0 -> 6.7 against 7.1 for copying; see :mod:`baselines.is_generator`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from baselines.embedding import ImageEmbedding
from baselines.is_generator import FlowSettings, SubgoalImageModel
from baselines.is_reward import (ImageRewardSettings, ImageSubgoalLabeller, ImageSubgoalPlanner,
                                 ImageSubgoalWrapper, OracleSubgoalPlanner, _fingerprint, calibrate_threshold)
from baselines.runs import IMAGE_POLICY_INPUTS
from relam.cache import atomic_torch_save, atomic_write_json
from relam.methods import (MethodSettings, RewardMethod, RunContext, RunResult, ppo_extension_refused,
                           register_method)
from relam.scales import ScaleTable
from relam.wrappers import close_planner

__all__ = ["CALIBRATION_QUANTILE", "ImageSubgoalSettings", "components_key", "ISBudget", "SCALE_STEPS",
           "ISComponents", "fit_components", "PolicyAdapter", "offline_labeller", "ImageSubgoal", "Oracle"]


# =============================================================================== methods


#: Default quantile of the stage-threshold calibration (:func:`baselines.is_reward.calibrate_threshold`).
#: 0.25: the threshold is a similarity the expert demos reach for about 75 % of the generated
#: subgoals (the best similarity of any demo frame to each subgoal), so a stage is reachable by
#: expert-like behaviour although generated images are blurrier than real frames.  With the temporal
#: embedding it gave 0.9925 at quick scale (issue 18): a near-exact match in cosine terms.  Whether
#: that is too strict for a policy is what this setting lets a spec measure (lower quantile: lower
#: threshold, stages end more easily).
CALIBRATION_QUANTILE = 0.25


class ImageSubgoalSettings(MethodSettings):
    """Image Subgoal (IS) / Oracle: generated or ground-truth image subgoals.

    ``calibration_quantile``, ``generator_compose`` and ``similarity_threshold`` are left out of the
    dumped settings (hence of run keys) at their defaults, so runs recorded before the fields existed
    keep their keys; any other value enters them.
    """

    subgoals: Literal["generated", "ground_truth"] = Field(
        default="generated", description="generated by the flow model (IS) or the expert's keyframes (Oracle)")
    calibration_quantile: float = Field(
        default=CALIBRATION_QUANTILE, gt=0.0, lt=1.0,
        description="quantile of the best expert-to-subgoal similarities that becomes the stage threshold "
                    "(lower: stages end more easily; 0.25: the expert reaches about 75 % of the subgoals)")

    similarity_threshold: float | None = Field(
        default=None, gt=-1.0, lt=1.0,
        description="a fixed stage threshold (cosine similarity in the embedding) in place of the calibrated "
                    "one; None: calibrated (calibration_quantile). The paper sets IS's thresholds by hand; "
                    "benchmarks/bench_oracle_threshold.py measures which value lets near-expert behaviour "
                    "pass the true keyframes")

    generator_compose: Literal["upsample", "residual"] = Field(
        default="upsample",
        description="how the 32 px generated subgoals reach the 64 px policy image: enlarged as they are, or "
                    "as the generator's change to the sharp initial frame (residual; see baselines.is_generator)")

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        d = handler(self)
        if d.get("calibration_quantile") == CALIBRATION_QUANTILE:
            del d["calibration_quantile"]
        if d.get("generator_compose") == "upsample":
            del d["generator_compose"]
        if d.get("similarity_threshold") is None:
            d.pop("similarity_threshold", None)
        return d

    @model_validator(mode="after")
    def _one_threshold_source(self) -> "ImageSubgoalSettings":
        if self.similarity_threshold is not None and self.calibration_quantile != CALIBRATION_QUANTILE:
            raise ValueError(f"similarity_threshold={self.similarity_threshold} and calibration_quantile="
                             f"{self.calibration_quantile}: a fixed threshold replaces the calibrated one, so "
                             "set one of them")
        return self


@dataclass(frozen=True)
class ISBudget:
    flow_steps: int  #: subgoal-image generator training steps
    embedding_steps: int  #: temporal-embedding training steps


#: per-scale budgets of the learned parts; ``smoke`` is for CI.
SCALE_STEPS: ScaleTable[ISBudget] = ScaleTable(
    "image_subgoal", smoke=ISBudget(30, 30), quick=ISBudget(3000, 600), paper=ISBudget(4000, 1500))


@dataclass
class ISComponents:
    """What an IS run learns from the demos: generator, embedding, calibrated threshold."""

    model: SubgoalImageModel
    embedding: ImageEmbedding
    similarity_threshold: float


def components_key(task: str, n_demos: int, scale: str = "quick", calibrate_demos: int = 10,
                   calibration_quantile: float = CALIBRATION_QUANTILE, compose: str = "upsample") -> str:
    """The cache key of a task's IS components (see :func:`fit_components`).

    The quantile and the generator's ``compose`` enter only when they are not the defaults, so
    components cached before they were settings keep their key (all were made at the defaults).
    """
    from baselines.embedding import TemporalEmbedding
    from relam.cache import settings_hash
    from relam.keypoints import KeypointSettings

    steps = SCALE_STEPS[scale]
    flow = FlowSettings(train_steps=steps.flow_steps, compose=compose).to_dict()  # compose only when not default
    parts = {"task": task, "n_demos": n_demos, "flow": flow,
             "embedding": TemporalEmbedding().state()["kwargs"], "embedding_steps": steps.embedding_steps,
             "calibrate_demos": calibrate_demos, "keypoints": KeypointSettings().to_dict()}
    if calibration_quantile != CALIBRATION_QUANTILE:
        parts["calibration_quantile"] = float(calibration_quantile)
    # its keyframes come from the subgoal dataset, which follows the task's keypoint rule
    from relam.tasks import get_task

    if get_task(task).keypoint_rule != "fps":
        parts["keypoint_rule"] = get_task(task).keypoint_rule
    return settings_hash(parts)


def fit_components(task: str, n_demos: int, scale: str = "quick", progress: bool = False,
                   calibrate_demos: int = 10, calibration_quantile: float = CALIBRATION_QUANTILE,
                   compose: str = "upsample") -> ISComponents:
    """Train (or load from the cache) the IS generator and the temporal embedding of a task.

    Both learn from the first ``n_demos`` expert videos (the embedding from all their frames, the
    generator from their keyframe images). The similarity threshold is calibrated with
    :func:`calibrate_threshold` (quantile ``calibration_quantile``) on up to ``calibrate_demos`` of
    those demos. Cached under ``cache_dir()/image_subgoal/<task>/<components_key>/`` (file-locked:
    parallel runs train once).  Another quantile or ``compose`` (how generated images reach 64 px,
    :attr:`baselines.is_generator.FlowSettings.compose`) does not retrain: it reuses the default
    entry's generator weights and embedding and caches only its own threshold (``threshold.json``
    under its key), calibrated on the subgoals it generates.
    """
    from filelock import FileLock

    from baselines.embedding import TemporalEmbedding, embedding_from_state
    from relam.cache import cache_dir
    from relam.demos import load_demos
    from relam.keypoints import KeypointSettings
    from relam.subgoals import build_subgoal_dataset

    if not 0.0 < calibration_quantile < 1.0:
        raise ValueError(f"fit_components(calibration_quantile={calibration_quantile}): must lie in (0, 1)")
    out = cache_dir() / "image_subgoal" / task / components_key(task, n_demos, scale, calibrate_demos,
                                                                 calibration_quantile, compose)
    if calibration_quantile != CALIBRATION_QUANTILE or compose != "upsample":
        base = fit_components(task, n_demos, scale, progress, calibrate_demos)
        model = base.model
        if compose != model.settings.compose:
            model = SubgoalImageModel.from_state({**model.state(), "settings": {
                **dataclasses.asdict(model.settings), "compose": compose}})
        out.mkdir(parents=True, exist_ok=True)
        with FileLock(str(out) + ".lock"):
            if not (out / "threshold.json").exists():
                demos = load_demos(task, n=n_demos, progress=progress)[:calibrate_demos]
                thr = calibrate_threshold(ImageSubgoalPlanner(model), base.embedding, demos,
                                          quantile=calibration_quantile)
                atomic_write_json(out / "threshold.json", {"threshold": thr})
            thr = float(json.loads((out / "threshold.json").read_text())["threshold"])
        return ISComponents(model, base.embedding, thr)

    steps = SCALE_STEPS[scale]
    flow = FlowSettings(train_steps=steps.flow_steps)
    emb = TemporalEmbedding()
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "components.pt").exists():
            st = torch.load(out / "components.pt", weights_only=False)
            return ISComponents(SubgoalImageModel.from_state(st["model"]),
                                embedding_from_state(st["embedding"]), float(st["threshold"]))
        ds = build_subgoal_dataset(task, KeypointSettings(), n_demos=n_demos, progress=progress)
        demos = load_demos(task, n=n_demos, progress=progress)
        emb.fit([d.frames for d in demos], steps=steps.embedding_steps, progress=progress)
        model = SubgoalImageModel(flow)
        model.fit(ds.items, progress=progress)
        thr = calibrate_threshold(ImageSubgoalPlanner(model), emb, demos[:calibrate_demos])
        atomic_torch_save(out / "components.pt", {"model": model.state(), "embedding": emb.state(),
                                                  "threshold": thr})
        return ISComponents(model, emb, thr)


class PolicyAdapter(gym.ObservationWrapper):
    """IS observations in the form the shared PPO policy (``relam.rl.ppo.make_ppo``) reads.

    That policy's extractor wants ``image`` plus ``keypoints``/``target`` vectors; IS has two
    images and no points. The adapter stacks image and target image into one 6-channel ``image``
    (the CNN sees both) and passes empty-information ``keypoints``/``target`` (two zeros each).
    Replace with a dedicated extractor once ``make_ppo`` accepts one.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        c, h, w = env.observation_space["image"].shape
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (2 * c, h, w), np.uint8),
            "keypoints": gym.spaces.Box(-1, 1, (2,), np.float32),
            "target": gym.spaces.Box(-1, 1, (2,), np.float32),
        })

    def observation(self, observation: dict) -> dict:
        z = np.zeros(2, np.float32)
        return {"image": np.concatenate([observation["image"], observation["target_image"]]),
                "keypoints": z, "target": z.copy()}


def _components(ctx: Any) -> ISComponents:
    """The run's components, calibrated at its settings' quantile, or with its fixed threshold."""
    q = getattr(ctx.settings, "calibration_quantile", CALIBRATION_QUANTILE)
    compose = getattr(ctx.settings, "generator_compose", "upsample")
    comp = fit_components(ctx.task, ctx.budget.n_demos, ctx.scale, ctx.progress, calibration_quantile=q,
                          compose=compose)
    fixed = getattr(ctx.settings, "similarity_threshold", None)
    return comp if fixed is None else dataclasses.replace(comp, similarity_threshold=float(fixed))


def offline_labeller(ctx: Any, ground_truth: bool = False) -> tuple["ImageSubgoalLabeller", Any, dict[str, float]]:
    """The ManiSkill row's labelling (appendix A.4: "for IS and Oracle baseline, we assign rewards in
    the same way to ReLAM"): (labeller, make_eval_env, metrics) for :func:`baselines.runs.offline_run`.

    IS: subgoal images generated from each trajectory's first frame; Oracle (``ground_truth``):
    the expert's own keyframes, or the expert replayed from a noisy trajectory's seed.  Both use
    the task's embedding and calibrated threshold (:func:`fit_components`).  Evaluation runs
    through :class:`ImageSubgoalWrapper` with ``observe_embeddings`` (the policy's input).
    The caller closes ``labeller.planner`` (the Oracle's private expert env).
    """
    from relam.tasks import make_env

    spec = ctx.task_spec()
    comp = _components(ctx)
    planner = OracleSubgoalPlanner() if ground_truth else ImageSubgoalPlanner(comp.model)
    reward = ImageRewardSettings(similarity_threshold=comp.similarity_threshold)
    planner_id = "oracle" if ground_truth else f"generated-{_fingerprint(comp.model.state())}"
    labeller = ImageSubgoalLabeller(planner, comp.embedding, reward, planner_id=planner_id,
                                    own_keyframes=ground_truth, name="oracle" if ground_truth else "image_subgoal")

    def make_eval_env() -> gym.Env:
        return ImageSubgoalWrapper(make_env(spec), planner, comp.embedding, reward, seed=ctx.seed,
                                   observe_embeddings=True)

    return labeller, make_eval_env, {"similarity_threshold": comp.similarity_threshold}


class _ImageSubgoalMethod(RewardMethod):
    """IS and Oracle: one run method, the subgoals generated (IS) or the expert's (Oracle)."""

    Settings = ImageSubgoalSettings
    policy_inputs = IMAGE_POLICY_INPUTS  # learns from images alone (robot state: offline rows only)
    version = "1"
    ground_truth = False
    #: online runs (train_ppo) with a constant learning rate continue a shorter run's checkpoint: the
    #: reward (generator, embedding, threshold) is fixed before PPO starts, so the checkpoint holds
    #: all that changes
    extension_refused = staticmethod(ppo_extension_refused)

    def _ground_truth(self, ctx: RunContext) -> bool:
        return self.ground_truth or ctx.settings.subgoals == "ground_truth"  # type: ignore[attr-defined]

    def offline(self, ctx: RunContext) -> RunResult:
        """ManiSkill: label the offline set, IQL, evaluate (:func:`offline_labeller`)."""
        from baselines.runs import offline_run

        labeller, make_eval_env, metrics = offline_labeller(ctx, self._ground_truth(ctx))
        try:
            return offline_run(ctx, labeller, make_eval_env, metrics)
        finally:
            close_planner(labeller.planner)

    def online(self, ctx: RunContext) -> RunResult:
        """Meta-World: hierarchical PPO through the wrapper (images stacked for the shared policy)."""
        from baselines.runs import require_image_input
        from relam.rl.ppo import train_ppo
        from relam.tasks import make_env

        spec = ctx.task_spec()
        require_image_input(ctx, self.name)
        comp = _components(ctx)
        planner = OracleSubgoalPlanner() if self._ground_truth(ctx) else ImageSubgoalPlanner(comp.model)
        reward = ImageRewardSettings(similarity_threshold=comp.similarity_threshold)
        b = ctx.budget
        ppo = ctx.ppo_settings()

        def env_fn(seed: int) -> gym.Env:
            env = ImageSubgoalWrapper(make_env(spec), planner, comp.embedding, reward, seed=seed)
            return PolicyAdapter(env)

        res = train_ppo(env_fn, ppo, Path(ctx.out_dir), b.train_steps, b.eval_every,
                        b.eval_episodes, ctx.seed, progress=ctx.progress,
                        title=f"{self.name} {spec.name} seed {ctx.seed}")
        res.metrics["similarity_threshold"] = comp.similarity_threshold
        return res


@register_method("image_subgoal")
class ImageSubgoal(_ImageSubgoalMethod):
    """IS: generated image subgoals, embedding cosine-similarity reward."""


@register_method("oracle")
class Oracle(_ImageSubgoalMethod):
    """Oracle: IS with the expert's true keyframe images from the same initial state."""

    ground_truth = True
