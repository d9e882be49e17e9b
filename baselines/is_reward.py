"""Image Subgoal (IS) and Oracle baselines, the reward: subgoal planners (generated or the
expert's true keyframe images), the embedding-similarity stage reward, the online wrapper and the
offline labeller. See :mod:`baselines.image_subgoal` for the method.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np

from baselines.embedding import ImageEmbedding, cosine_similarity
from baselines.is_generator import SubgoalImageModel
from relam.cache import BoundedMemo, torch_bytes
from relam.demos import PoseRecorder
from relam.perception.images import resize_images
from relam.reward import RewardSettings, StepOutcome, stage_reward
from relam.wrappers import SeededEpisodes

__all__ = [
    "ImageSubgoalPlanner",
    "OracleSubgoalPlanner",
    "ImageRewardSettings",
    "ImageSubgoalReward",
    "ImageSubgoalWrapper",
    "label",
    "label_details",
    "ImageSubgoalLabeller",
    "calibrate_threshold",
]


# =============================================================================== planners


class ImageSubgoalPlanner:
    """IS high level: ``plan(initial_frame, task) -> list of uint8 (64,64,3) subgoal images``.

    The sampling noise is seeded with the episode seed (0 when none), so a given initial state
    always gets the same plan.
    """

    def __init__(self, model: SubgoalImageModel):
        self.model = model

    def plan(self, initial_frame: np.ndarray, task: str | None = None, *, env: Any = None,
             seed: int | None = None) -> list[np.ndarray]:
        imgs = self.model.generate(initial_frame, seed=0 if seed is None else int(seed) % (2**63))
        return list(imgs)


class _StateRecorder(PoseRecorder):
    """The lean keypoint record (:class:`relam.demos.PoseRecorder`) plus the simulator state of
    every frame (``MetaWorldEnv.physics_state``), from which chosen frames are rendered afterwards."""

    def start(self, env: Any) -> None:
        self.states: list[np.ndarray] = []
        super().start(env)

    def _poses(self) -> None:  # called once per frame, frame 0 included
        super()._poses()
        self.states.append(self.env.physics_state())


class OracleSubgoalPlanner:
    """Oracle high level: the true keyframe images of an expert rollout from the same start.

    For episode seed ``s`` the task's expert runs from ``reset(seed=s)`` in a private env
    (``relam.demos.rollout_expert``); keyframes come from ``relam.subgoals.subgoal_sequence``
    (the same keypoint tracks and Eq. 2 selection as the subgoal dataset). Plans are memoised per
    (task, seed), at most ``cache_size`` of them (the oldest goes first): a plan is 2-8 images, and
    a 1M-step run makes about 4,000 plans (200-400 MB unbounded); a plan made again is the same,
    since the expert replays deterministically. ``rollout(task, seed) -> Demo`` and
    ``keyframes(demo) -> (S,H,W,3)`` can be injected (tests).

    Lean Meta-World path (``lean=True``, the default rollout and keyframes, sim segmenter and
    tracker): the expert is replayed without rendering its frames (:class:`_StateRecorder`: what
    the keypoints read, as ``relam.wrappers.GroundTruthSubgoals`` does, plus the simulator state of
    every step) and only the keyframes are rendered afterwards (``MetaWorldEnv.frame_of``). Why: a
    plan is made at every training reset, and rendering and segmenting each of the expert's ~100
    frames took about a third of an Oracle run's time (py-spy, drawer-open-v3, session 41). The
    images are the full path's bit for bit (``tests/test_image_subgoal.py``).
    """

    def __init__(self, keypoint_settings: Any = None, output_size: int = 64,
                 rollout: Callable[[str, int], Any] | None = None,
                 keyframes: Callable[[Any], np.ndarray] | None = None, lean: bool = True,
                 cache_size: int = 256):
        self._memo = BoundedMemo(cache_size, "OracleSubgoalPlanner(cache_size)")
        self.keypoint_settings = keypoint_settings
        self.output_size = int(output_size)
        self._rollout = rollout or self._expert_rollout
        self._keyframes = keyframes or self._true_keyframes
        sim_perception = all(getattr(keypoint_settings, k, "sim") == "sim" for k in ("tracker", "segmenter"))
        self._lean = bool(lean) and rollout is None and keyframes is None and sim_perception
        self._envs: dict[str, Any] = {}

    def _is_lean(self, task: str) -> bool:
        from relam.tasks import get_task

        return self._lean and get_task(task).suite == "metaworld"

    def _env(self, task: str, seed: int) -> Any:
        from relam.tasks import make_env

        if task not in self._envs:  # the lean path renders its keyframes only (frame_of)
            self._envs[task] = make_env(task, seed=seed, render=not self._is_lean(task))
        return self._envs[task]

    def _expert_rollout(self, task: str, seed: int, recorder: Any = None) -> Any:
        from relam.demos import rollout_expert

        demo = rollout_expert(self._env(task, seed), int(seed), recorder=recorder)
        if demo is None:
            raise RuntimeError(f"OracleSubgoalPlanner: the expert found no plan on task {task} seed {seed}; "
                               "no ground-truth subgoal images for this episode")
        # as relam.wrappers.GroundTruthSubgoals: a scripted expert that misses still shows the path
        self.expert_failures = getattr(self, "expert_failures", 0) + int(not demo.succeeded)
        return demo

    def _true_keyframes(self, demo: Any) -> np.ndarray:
        from relam.keypoints import KeypointSettings
        from relam.subgoals import subgoal_sequence

        seq, _ = subgoal_sequence(demo, self.keypoint_settings or KeypointSettings())
        return np.asarray(seq.keyframe_images)

    def _lean_keyframes(self, task: str, seed: int) -> np.ndarray:
        from relam.keypoints import KeypointSettings
        from relam.subgoals import subgoal_sequence

        rec = _StateRecorder()
        demo = self._expert_rollout(task, seed, recorder=rec)
        env = self._envs[task]
        seq, _ = subgoal_sequence(demo, self.keypoint_settings or KeypointSettings(), spec=env.task)
        return np.stack([env.frame_of(rec.states[k]) for k in seq.keyframe_steps])

    def keyframes_of(self, demo: Any) -> list[np.ndarray]:
        """The ground-truth subgoal images of a recorded expert trajectory (its own keyframes),
        at ``output_size``: what :meth:`plan` returns for that trajectory's seed."""
        return list(resize_images(np.asarray(self._keyframes(demo)), self.output_size))

    def plan(self, initial_frame: np.ndarray, task: str, *, env: Any = None,
             seed: int | None = None) -> list[np.ndarray]:
        if seed is None:
            raise ValueError("OracleSubgoalPlanner.plan needs the episode seed (the wrapper passes it) "
                             "to replay the same initial state with the expert")
        key = (str(task), int(seed))
        if key not in self._memo:
            t, s = key
            frames = self._lean_keyframes(t, s) if self._is_lean(t) else self._keyframes(self._rollout(t, s))
            self._memo[key] = list(resize_images(np.asarray(frames), self.output_size))
        return [im.copy() for im in self._memo[key]]

    def close(self) -> None:
        for e in self._envs.values():
            e.close()
        self._envs.clear()


# =============================================================================== reward


@dataclass(frozen=True)
class ImageRewardSettings:
    """The IS/Oracle reward: ReLAM's shape and stage logic on the distance ``1 - cos``.

    ``similarity_threshold`` ends a stage (ReLAM's ``theta_s = 1 - threshold``); the shaped term
    spans ``[-reward_range, 0]`` over distances ``[0, d_max]``. The default threshold 0.75 comes
    from :func:`calibrate_threshold` on 4 held-out drawer-open-v3 demos with the temporal
    embedding (the 25 % quantile of the best similarity expert frames reach to each generated
    subgoal was 0.76); :func:`fit_components` recalibrates it per task and embedding.
    """

    similarity_threshold: float = 0.75
    d_max: float = 1.0
    shape: str = "piecewise_linear"
    reward_range: float = 1.0
    stage_bonus: float = 2.0
    final_bonus: float = 10.0
    unreached_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not -1.0 < self.similarity_threshold < 1.0:
            raise ValueError(f"ImageRewardSettings.similarity_threshold={self.similarity_threshold}: "
                             "must lie in (-1, 1)")
        self.reward_settings()  # validates the rest

    def reward_settings(self) -> RewardSettings:
        return RewardSettings(shape=self.shape, d_max=self.d_max, reward_range=self.reward_range,
                              theta_s=1.0 - self.similarity_threshold, stage_bonus=self.stage_bonus,
                              final_bonus=self.final_bonus, unreached_penalty=self.unreached_penalty)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ImageSubgoalReward:
    """Stage machine over target embeddings: ``reset(targets (S,D))``, ``step(obs (D,))``."""

    def __init__(self, settings: ImageRewardSettings = ImageRewardSettings()):
        self.settings = settings
        self._rs = settings.reward_settings()
        self.targets: np.ndarray | None = None
        self.stage = 0

    def reset(self, target_embeddings: np.ndarray) -> None:
        t = np.asarray(target_embeddings, np.float64)
        if t.ndim != 2 or len(t) < 1:
            raise ValueError(f"ImageSubgoalReward.reset: expected (S>=1, D) embeddings, got {t.shape}")
        self.targets, self.stage = t, 0

    @property
    def n_subgoals(self) -> int:
        if self.targets is None:
            raise RuntimeError("ImageSubgoalReward: call reset(targets) first")
        return len(self.targets)

    @property
    def target_index(self) -> int:
        return min(self.stage, self.n_subgoals - 1)

    def step(self, obs_embedding: np.ndarray) -> tuple[StepOutcome, float]:
        """Reward for arriving at an observation; returns the outcome and the similarity."""
        n = self.n_subgoals
        stage = self.stage
        sim = float(cosine_similarity(obs_embedding, self.targets[self.target_index])[0])
        dist = max(0.0, 1.0 - sim)
        reached = stage < n and sim >= self.settings.similarity_threshold
        r = stage_reward(dist, stage, n, reached, self._rs)
        if reached:
            self.stage += 1
        return StepOutcome(r, dist, stage, reached, self.stage, self.stage >= n), sim


def stages_passed(frame_embeddings: np.ndarray, targets: np.ndarray, threshold: float) -> int:
    """How many subgoals :class:`ImageSubgoalReward` passes along ``frame_embeddings`` (T, D) with
    ``targets`` (S, D) at ``threshold``: in order, a frame near a later subgoal counts only once the
    earlier ones are passed (``benchmarks/bench_oracle_threshold.py``)."""
    reward = ImageSubgoalReward(ImageRewardSettings(similarity_threshold=threshold))
    reward.reset(targets)
    for e in frame_embeddings:
        reward.step(e)
    return reward.stage


def _chw(image: np.ndarray, size: int) -> np.ndarray:
    return np.ascontiguousarray(resize_images(image, size)[0].transpose(2, 0, 1))


class ImageSubgoalWrapper(SeededEpisodes, gym.Wrapper):
    """A TaskEnv as the IS/Oracle hierarchical task.

    Observation ``{"image": uint8 (3,s,s), "target_image": uint8 (3,s,s)}`` (s = ``image_size``,
    64); reward from :class:`ImageSubgoalReward`; ``info`` has ``stage``, ``n_subgoals``,
    ``subgoal_reached`` (read by the segmented GAE of :mod:`relam.rl.ppo`),
    ``all_subgoals_reached``, ``similarity``, ``success`` and ``env_reward``. Episode seeds work as
    in :class:`relam.wrappers.ReLAMWrapper` (``reset(seed=s)`` uses s; ``reset()`` draws one), and
    the planner receives it (the Oracle replays that start with the expert).

    ``observe_embeddings=True`` adds ``"embedding"`` (the current frame's embedding) and
    ``"target"`` (the current target image's embedding), float32 (D,): the observation of the
    offline (IQL) policies, which take the target image through the frozen embedding (see
    :class:`ImageSubgoalLabeller`).
    """

    def __init__(self, env: gym.Env, planner: Any, embedding: ImageEmbedding,
                 settings: ImageRewardSettings = ImageRewardSettings(), image_size: int = 64,
                 seed: int | None = None, observe_embeddings: bool = False):
        super().__init__(env)
        if not hasattr(planner, "plan"):
            raise TypeError("ImageSubgoalWrapper: planner must have plan(initial_frame, task, env=, seed=)")
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
                and space.shape[-1] == 3):
            raise ValueError(f"ImageSubgoalWrapper: env must observe (H, W, 3) uint8 images, got {space}")
        self.planner, self.embedding, self.settings = planner, embedding, settings
        self.image_size = int(image_size)
        box = gym.spaces.Box(0, 255, (3, self.image_size, self.image_size), np.uint8)
        spaces: dict[str, gym.spaces.Space] = {"image": box, "target_image": box}
        self.observe_embeddings = bool(observe_embeddings)
        if self.observe_embeddings:
            dim = int(embedding.embed(np.zeros((1, 8, 8, 3), np.uint8)).shape[1])
            vec = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
            spaces.update(embedding=vec, target=vec)
        self.observation_space = gym.spaces.Dict(spaces)
        self._frame_emb: np.ndarray | None = None
        self.reward_fn = ImageSubgoalReward(settings)
        self._seed_rng = np.random.default_rng(seed)
        self.plan_: list[np.ndarray] | None = None
        self._targets_chw: list[np.ndarray] = []
        self.episode_seed: int | None = None

    def _obs(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        obs = {"image": _chw(frame, self.image_size),
               "target_image": self._targets_chw[self.reward_fn.target_index]}
        if self.observe_embeddings:
            if self._frame_emb is None:
                self._frame_emb = self.embedding.embed(frame)[0]
            obs["embedding"] = np.asarray(self._frame_emb, np.float32)
            obs["target"] = self.reward_fn.targets[self.reward_fn.target_index].astype(np.float32)
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        episode_seed = self._next_episode_seed(seed)
        frame, info = self.env.reset(seed=episode_seed, options=options)
        task = getattr(getattr(self.env.unwrapped, "task", None), "name", None)
        plan = [np.asarray(p, np.uint8) for p in
                self.planner.plan(frame, task, env=self.env.unwrapped, seed=episode_seed)]
        if not plan or any(p.ndim != 3 or p.shape[-1] != 3 for p in plan):
            raise ValueError("ImageSubgoalWrapper: planner.plan must return a non-empty list of "
                             "uint8 (H,W,3) images")
        self.plan_ = plan
        self._targets_chw = [_chw(p, self.image_size) for p in plan]
        self.reward_fn.reset(self.embedding.embed(np.stack(plan)))
        self._frame_emb = None
        info = dict(info)
        info.update(stage=0, n_subgoals=len(plan), subgoal_reached=False, all_subgoals_reached=False,
                    success=bool(info.get("success", False)),
                    env_reward=float(info.get("env_reward", 0.0)), episode_seed=episode_seed)
        return self._obs(frame), info

    def step(self, action):
        if self.plan_ is None:
            raise RuntimeError("ImageSubgoalWrapper.step called before reset")
        frame, env_reward, terminated, truncated, info = self.env.step(action)
        self._frame_emb = self.embedding.embed(frame)[0]
        out, sim = self.reward_fn.step(self._frame_emb)
        info = dict(info)
        info.update(stage=out.next_stage, n_subgoals=self.reward_fn.n_subgoals,
                    subgoal_reached=bool(out.reached), all_subgoals_reached=bool(out.all_reached),
                    similarity=sim, success=bool(info.get("success", False)),
                    env_reward=float(info.get("env_reward", env_reward)))
        return self._obs(frame), float(out.reward), bool(terminated), bool(truncated), info


def _label_with_plan(frames: np.ndarray, plan: Sequence[np.ndarray], embedding: ImageEmbedding,
                     settings: ImageRewardSettings) -> dict[str, np.ndarray]:
    """The online reward's state machine over recorded frames, for a given plan (see label_details);
    also returns the frame embeddings (T+1, D) and the target embeddings (S, D)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"label: demo.frames must be (T+1>=2, H, W, 3) uint8, got {frames.shape}")
    rew = ImageSubgoalReward(settings)
    rew.reset(embedding.embed(np.stack([np.asarray(p, np.uint8) for p in plan])))
    emb = embedding.embed(frames)
    T = len(frames) - 1
    rewards, sims = np.zeros(T, np.float32), np.zeros(T, np.float32)
    stages, reached = np.zeros(T + 1, np.int64), np.zeros(T, bool)
    for t in range(T):
        out, sim = rew.step(emb[t + 1])
        rewards[t], sims[t], reached[t], stages[t + 1] = out.reward, sim, out.reached, out.next_stage
    return {"rewards": rewards, "stages": stages, "reached": reached, "similarity": sims,
            "frame_embeddings": emb, "target_embeddings": rew.targets.astype(np.float32)}


def label_details(demo: Any, planner: Any, embedding: ImageEmbedding,
                  settings: ImageRewardSettings = ImageRewardSettings()
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Offline labelling of one trajectory with the online logic.

    The plan comes from ``demo.frames[0]`` (episode seed ``demo.seed``). Returns
    ``rewards (T,) float32``, ``stages (T+1,) int64`` (subgoals reached before frame t),
    ``reached (T,) bool`` and ``similarity (T,) float32`` (to the target current at each step).
    """
    frames = np.asarray(demo.frames)
    plan = planner.plan(frames[0], getattr(demo, "task", None), seed=int(getattr(demo, "seed", 0)))
    d = _label_with_plan(frames, plan, embedding, settings)
    return d["rewards"], d["stages"], d["reached"], d["similarity"]


def label(demo: Any, planner: Any, embedding: ImageEmbedding,
          settings: ImageRewardSettings = ImageRewardSettings()) -> np.ndarray:
    """Rewards (T,) for an offline trajectory (see :func:`label_details`)."""
    return label_details(demo, planner, embedding, settings)[0]


class ImageSubgoalLabeller:
    """IS / Oracle labelling of a recorded trajectory for offline RL (:mod:`relam.offline`, app. A.4).

    "For IS and Oracle baseline, we assign rewards in the same way to ReLAM": the plan is made from
    the trajectory's first frame (episode seed ``demo.seed``), and the online stage machine
    (:class:`ImageSubgoalReward`) runs over the recorded frames, so online and offline rewards
    agree step for step (:func:`label_details`).

    Policy input (our choice): the dataset keeps the current 64 px image (as every method) and adds
    two vectors, ``embedding`` (the current frame's embedding) and ``target`` (the embedding of
    the target image of the stage at frame t, the last one once all are reached) -- the target
    image reaches the IQL policy through the same frozen embedding the reward uses, in the way
    ReLAM's policy gets its target keypoints.  Why not the raw target image as a second image
    stack: :class:`relam.offline.OfflineDataset` stores one image per frame, and a second one (as
    a float vector) would cost 12,288 floats a frame; the embedding is the smallest change that
    needs no edit of IQL (its extractor feeds ``target`` and the other vectors to its point MLP).
    :class:`ImageSubgoalWrapper` (``observe_embeddings=True``) gives the same entries online.

    ``own_keyframes`` (the Oracle): a trajectory that is not noisy *is* the expert's rollout from
    its seed, so its own keyframes (Eq. 2 on its own frames, ``planner.keyframes_of``) are the
    ground-truth subgoals -- what the planner's expert replay would give, without re-simulating;
    noisy trajectories get the expert replayed from their seed (``planner.plan``).  If the expert
    finds no plan for a seed, the trajectory's own keyframes are used and ``info["fallback"]`` says so.
    """

    def __init__(self, planner: Any, embedding: ImageEmbedding,
                 settings: ImageRewardSettings = ImageRewardSettings(), planner_id: str | None = None,
                 own_keyframes: bool = False, name: str = "image_subgoal"):
        if not hasattr(planner, "plan"):
            raise TypeError("ImageSubgoalLabeller: planner must have plan(initial_frame, task, env=, seed=)")
        if own_keyframes and not hasattr(planner, "keyframes_of"):
            raise TypeError("ImageSubgoalLabeller(own_keyframes=True) needs a planner with keyframes_of(demo)")
        self.planner, self.embedding, self.settings = planner, embedding, settings
        self.planner_id = planner_id or type(planner).__name__
        self.own_keyframes, self.name = bool(own_keyframes), str(name)
        self._embedding_id = _fingerprint(embedding.state())

    def config(self) -> dict:
        return {"planner": self.planner_id, "embedding": self._embedding_id, "reward": self.settings.to_dict(),
                "own_keyframes": self.own_keyframes, "observation": "image+embedding+target"}

    def _plan(self, demo: Any) -> tuple[list[np.ndarray], bool]:
        if self.own_keyframes and not bool(getattr(demo, "noisy", False)):
            return self.planner.keyframes_of(demo), False
        try:
            return list(self.planner.plan(np.asarray(demo.frames[0]), str(getattr(demo, "task", "")),
                                          seed=int(getattr(demo, "seed", 0)))), False
        except RuntimeError:
            if not self.own_keyframes:
                raise
            return self.planner.keyframes_of(demo), True

    def label(self, demo: Any):
        from relam.offline import LabelledTrajectory

        plan, fallback = self._plan(demo)
        d = _label_with_plan(np.asarray(demo.frames), plan, self.embedding, self.settings)
        n = len(d["target_embeddings"])
        targets = d["target_embeddings"][np.minimum(d["stages"], n - 1)]
        frame0 = resize_images(np.asarray(demo.frames[0])[None], np.asarray(plan[0]).shape[0])[0]
        return LabelledTrajectory(
            rewards=d["rewards"], extra_obs={"embedding": d["frame_embeddings"], "target": targets},
            # plan row 0 = the initial image, rows 1.. = subgoals (ReLAM's layout: row 0 = now)
            info={"stages": d["stages"], "reached": d["reached"], "similarity": d["similarity"],
                  "plan": [frame0] + [np.asarray(p) for p in plan], "fallback": fallback})


def _fingerprint(state: Any) -> str:
    """16 hex chars identifying a state dict (weights included): a cache-key part."""
    import hashlib

    return hashlib.sha256(torch_bytes(state)).hexdigest()[:16]


def calibrate_threshold(planner: Any, embedding: ImageEmbedding, demos: Sequence[Any],
                        quantile: float = 0.25) -> float:
    """A similarity threshold that expert demos reach for most planned subgoals.

    For each demo and each planned subgoal k, the best similarity any of the demo's frames
    reaches to it; the threshold is the ``quantile`` of those maxima (0.25: the expert gets close
    enough to about 75 % of the generated subgoals). Generated images are blurrier than real
    frames, so a threshold set on true keyframes would be unreachable.
    """
    best = []
    for d in demos:
        plan = planner.plan(np.asarray(d.frames[0]), getattr(d, "task", None), seed=int(d.seed))
        tgt = embedding.embed(np.stack(plan))
        emb = embedding.embed(np.asarray(d.frames))
        sims = emb.astype(np.float64) @ tgt.astype(np.float64).T  # unit vectors: cosines
        best.extend(sims.max(axis=0).tolist())
    if not best:
        raise ValueError("calibrate_threshold: no demos given")
    return float(np.quantile(best, quantile))
