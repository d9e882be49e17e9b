"""The hierarchical ReLAM task as gymnasium wrappers (paper section 3.2, appendix A.3).

:class:`ReLAMWrapper` turns any registered :class:`relam.tasks.TaskEnv` into a ReLAM task:

- at ``reset`` a :class:`SubgoalPlanner` (the high level) proposes the initial keypoints and the
  subgoal sequence from the initial frame -- ``(S+1, N, 2)`` pixels, row 0 = initial keypoints;
- an online point tracker follows the keypoints every step;
- the simulator's reward is replaced by the ReLAM reward (:mod:`relam.reward`): distance to the
  current subgoal, stage bonus and target switch under ``theta_s``, final bonus;
- the observation is what the low-level goal-conditioned policy of A.3 sees: the RGB image
  (channel-first uint8), the current keypoints and the current target keypoints (both flattened,
  normalised to [-1, 1] over the image, so points that leave the image stay representable).

``info`` carries ``stage``, ``subgoal_reached`` (read by the segmented GAE of
:mod:`relam.rl.ppo`), ``success`` (the simulator's flag, for evaluation only), ``env_reward`` and
``keypoint_distance``.

Planners: :class:`AnticipationPlanner` (the learned anticipation model), :class:`GroundTruthSubgoals`
(subgoals from a scripted-expert rollout from the same initial state: the ground-truth mode of
Fig. 6c) and :class:`FixedSubgoals` (tests).  Image downsampling for the policy is a separate
wrapper, :class:`PolicyImageSize`, so the reward always sees full-resolution keypoints.

Reproducibility: every episode is reset with an explicit *episode seed*.  ``reset(seed=s)`` uses
``s`` itself (so evaluation episode ``s`` is the env's seed ``s``); ``reset()`` draws the next one
from a generator seeded by the wrapper's ``seed`` (or by the last explicit seed).  The planner
receives the episode seed, which is how :class:`GroundTruthSubgoals` replays the same initial
state with the expert.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from relam.cache import BoundedMemo
from relam.perception.images import resize_images
from relam.reward import ReLAMReward, RewardSettings

__all__ = [
    "SubgoalPlanner",
    "FixedSubgoals",
    "AnticipationPlanner",
    "GroundTruthSubgoals",
    "ReLAMWrapper",
    "PolicyImageSize",
    "normalise_points",
    "denormalise_points",
    "check_plan",
    "make_relam_env",
    "POLICY_RENDER",
]

#: observation bound for normalised keypoints; the tracker may follow points off the image (A.1).
POINT_BOUND = 3.0


# --------------------------------------------------------------------------- point coordinates


def normalise_points(uv: np.ndarray, image_size: int) -> np.ndarray:
    """Pixel coordinates (pixel centres at integers) -> [-1, 1] over the image, flattened, float32.

    The image's outer edges map to -1 and +1; points off the image go beyond and are clipped at
    +-``POINT_BOUND`` (three image widths) to keep the observation bounded.
    """
    uv = np.asarray(uv, dtype=np.float64)
    x = (uv + 0.5) / float(image_size) * 2.0 - 1.0
    # np.clip's values without its Python dispatch (a few microseconds twice a step; NaN stays NaN)
    np.minimum(np.maximum(x, -POINT_BOUND, out=x), POINT_BOUND, out=x)
    return x.astype(np.float32).reshape(-1)


def denormalise_points(x: np.ndarray, image_size: int) -> np.ndarray:
    """Inverse of :func:`normalise_points` (inside the bound): flat [-1, 1] -> (N, 2) pixels."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, 2)
    return (x + 1.0) * 0.5 * float(image_size) - 0.5


def check_plan(plan: Any, n_points: int | None = None) -> np.ndarray:
    """Validate a planner's output: ``(S+1, N, 2)`` finite pixels with S >= 1."""
    p = np.asarray(plan, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] != 2 or p.shape[0] < 2:
        raise ValueError(
            "SubgoalPlanner.plan must return (S+1, N, 2) pixel keypoints (row 0 = the initial "
            f"keypoints, then S >= 1 subgoals), got shape {p.shape}"
        )
    if n_points is not None and p.shape[1] != n_points:
        raise ValueError(
            f"SubgoalPlanner.plan returned N={p.shape[1]} keypoints but the wrapper was built with "
            f"n_points={n_points}; pass ReLAMWrapper(n_points={p.shape[1]})"
        )
    if not np.all(np.isfinite(p)):
        raise ValueError("SubgoalPlanner.plan returned non-finite keypoints")
    return p


# --------------------------------------------------------------------------- planners


@runtime_checkable
class SubgoalPlanner(Protocol):
    """The high level: initial keypoints and subgoal sequence from the initial frame.

    ``plan(initial_frame (H,W,3) uint8, task name, env=, seed=) -> (S+1, N, 2)`` pixels.
    ``env`` (the TaskEnv) and ``seed`` (the episode seed) are context a planner may ignore; the
    anticipation model uses only the frame and the task.
    """

    def plan(self, initial_frame: np.ndarray, task: str, *, env: Any = None, seed: int | None = None) -> np.ndarray: ...


class FixedSubgoals:
    """Always the same plan (tests, debugging)."""

    def __init__(self, plan: np.ndarray):
        self._plan = check_plan(plan)

    @property
    def n_points(self) -> int:
        return int(self._plan.shape[1])

    def plan(self, initial_frame: np.ndarray, task: str, *, env: Any = None, seed: int | None = None) -> np.ndarray:
        return self._plan.copy()


class AnticipationPlanner:
    """Adapter for :class:`relam.anticipation.AnticipationModel` (``generate(frame, task)``)."""

    def __init__(self, model: Any):
        if not hasattr(model, "generate"):
            raise TypeError("AnticipationPlanner needs a model with generate(initial_frame, task) -> (S+1, N, 2)")
        self.model = model

    def plan(self, initial_frame: np.ndarray, task: str, *, env: Any = None, seed: int | None = None) -> np.ndarray:
        return check_plan(self.model.generate(initial_frame, task))


class _FirstFrameView:
    """A TaskEnv seen by the demo recorder with images rendered only at reset.

    The ground-truth plan needs frame 0 (segmentation, depth) and the body poses of every step
    (the sim tracker re-projects body-attached points); rendering every step of the expert rollout
    (about 4 s an episode here) would dominate a points-only training loop.  After the first frame
    ``frame()`` and ``body_segmentation()`` return the frame-0 images, so the recorded demo's later
    frames are *not* real: only its keypoints are used.
    """

    def __init__(self, env: Any):
        self._env = env
        self._frame0: np.ndarray | None = None
        self._seg0: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def reset(self, *args: Any, **kwargs: Any):
        self._frame0 = self._seg0 = None
        return self._env.reset(*args, **kwargs)

    def frame(self) -> np.ndarray:
        if self._frame0 is None:
            self._frame0 = self._env.frame()
        return self._frame0

    def body_segmentation(self) -> np.ndarray:
        if self._seg0 is None:
            self._seg0 = self._env.body_segmentation()
        return self._seg0


def _expert_task(task: str, env: Any) -> Any:
    """The task entry the expert replays: the training env's own entry (it may differ from the
    registry's, e.g. in ``post_success_steps``) with the registry's horizon, so that a short smoke
    horizon does not cut the expert off before it succeeds."""
    import dataclasses

    from relam.tasks import TaskError, get_task

    spec = getattr(env, "task", None)
    if spec is None or not hasattr(spec, "suite"):
        return task
    try:
        return dataclasses.replace(spec, horizon=max(spec.horizon, get_task(spec.name).horizon))
    except TaskError:
        return spec


class GroundTruthSubgoals:
    """Ground-truth subgoals (Fig. 6c): keypoint selection on an expert rollout from the same start.

    For episode seed ``s`` the scripted expert is run from ``reset(seed=s)`` of a private env of the
    same task, and keypoint selection (Eq. 1), tracking and keyframes (Eq. 2) on that rollout give
    the plan ``(S+1, N, 2)`` (:func:`relam.subgoals.subgoal_sequence`).  Results are memoised per
    (task, seed), so repeated evaluation episodes cost nothing; at most ``cache_size`` plans, the
    oldest dropped first (:class:`relam.cache.BoundedMemo`).

    ``fast=True`` renders only the rollout's first frame (see :class:`_FirstFrameView`); the plan
    is the same as with full rendering, because the sim segmenter reads frame 0 only and the sim
    tracker reads body poses.  Both steps are injectable (``rollout(task, seed) -> demo``,
    ``extract(demo) -> plan``) for tests and for other trackers/segmenters.

    Lean Meta-World path (``fast=True``, the default rollout and extraction, sim segmenter and
    tracker): the expert is replayed by :meth:`_lean_rollout`, which records what the plan reads
    (frame 0's body segmentation and depth, the body poses of every step, actions, success) and
    renders two passes per episode (segmentation and depth; no RGB frame, which neither the sim
    segmenter nor the plan reads). Those frame-0 views are kept for the last few seeds, and
    :meth:`frame0_env` hands them to the training env's sim tracker at its reset (same seed, same
    initial state: checked against the recorded body and geom poses), so that reset renders
    nothing. Measured (issue 21, drawer-open-v3, one core under load): 6 render passes an
    episode became 2, and the plan is bit-identical to the :class:`_FirstFrameView` path
    (``tests/test_wrappers.py``).
    """

    #: ``plan`` ignores ``initial_frame`` (it replays the expert from the seed), so
    #: :class:`ReLAMWrapper` does not render one for it.
    needs_frame = False
    #: frame-0 views kept for this many recent seeds (depth + segmentation, about 100 KB each)
    views_kept = 8

    def __init__(
        self,
        rollout: Callable[[str, int], Any] | None = None,
        extract: Callable[[Any], np.ndarray] | None = None,
        keypoint_settings: Any = None,
        fast: bool = True,
        cache_size: int = 4096,
    ):
        self._rollout = rollout or self._expert_rollout
        self._extract = extract or self._subgoals
        self.keypoint_settings = keypoint_settings
        self.fast = bool(fast)
        if self.fast and keypoint_settings is not None and (
            getattr(keypoint_settings, "tracker", "sim") != "sim" or getattr(keypoint_settings, "segmenter", "sim") != "sim"
        ):
            raise ValueError("GroundTruthSubgoals(fast=True) needs the sim segmenter and tracker; pass fast=False")
        self._envs: dict[str, Any] = {}
        self._memo = BoundedMemo(cache_size, "GroundTruthSubgoals(cache_size)")
        self.expert_failures = 0
        self._missed: set[tuple[str, int]] = set()  # (task, seed) of the expert replays that failed
        self._lean = self.fast and rollout is None and extract is None
        self._views = BoundedMemo(self.views_kept, "GroundTruthSubgoals.views_kept")

    def _expert_rollout(self, task: Any, seed: int) -> Any:
        from relam.demos import rollout_expert
        from relam.tasks import make_env

        name = str(getattr(task, "name", task))
        if name not in self._envs:
            self._envs[name] = make_env(task, render=not self.fast)
        env = self._envs[name]
        if self._lean and getattr(env.task, "suite", None) == "metaworld":
            demo = self._lean_rollout(env, int(seed))
        else:
            demo = rollout_expert(_FirstFrameView(env) if self.fast else env, int(seed))
        if demo is None:  # ManiSkill's motion planner found no plan from this state
            raise RuntimeError(
                f"GroundTruthSubgoals: the expert found no plan on task {task} seed {seed}; no ground-truth "
                "subgoals for this episode"
            )
        # A scripted expert that misses (about 8% of button-press-wall starts) still moves along the
        # task's path: its keyframes remain the best ground truth there is, so they are used, and
        # counted, rather than failing the whole run.
        self.expert_failures += int(not demo.succeeded)
        if not demo.succeeded:
            self._missed.add((name, int(seed)))
        return demo

    def expert_missed(self, task: str, seed: int) -> bool:
        """Whether the scripted expert replayed from ``seed`` failed the task, so that this
        episode's ground-truth plan leads to no success (False for a seed not replayed yet)."""
        return (str(task), int(seed)) in self._missed

    def _lean_rollout(self, env: Any, seed: int) -> Any:
        """:func:`relam.demos.rollout_expert` on a Meta-World TaskEnv with the lean
        :class:`relam.demos.PoseRecorder` (frame 0's body segmentation and depth, body poses every
        step; no RGB), whose frame-0 views are kept for :meth:`frame0_env` together with the
        initial geom poses and camera that identify the state. ``tests/test_wrappers.py`` checks
        the demo against the full ``rollout_expert`` path array by array."""
        from relam.demos import PoseRecorder, rollout_expert

        class Recorder(PoseRecorder):  # the geom poses of frame 0 too: they identify the initial state
            def start(self, env: Any) -> None:
                super().start(env)
                self.geom0 = (env.sim.data.geom_xpos.copy(), env.sim.data.geom_xmat.copy())

        rec = Recorder()
        demo = rollout_expert(env, seed, recorder=rec)
        self._views[(env.task.name, int(seed))] = {
            "seg": rec.seg0, "depth": rec.depth0, "pos": demo.body_pos[0], "rot": demo.body_rot[0],
            "geom_xpos": rec.geom0[0], "geom_xmat": rec.geom0[1], "K": np.array(env.camera.K),
            "world_to_cam": np.array(env.camera.world_to_cam)}
        return demo

    def frame0_env(self, env: Any, task: str, seed: int | None) -> Any:
        """``env`` for a sim tracker's reset, serving ``depth()`` and ``body_segmentation()`` from
        the expert replay of the same seed when ``env`` is in exactly the recorded initial state
        (body and geom poses and camera equal bit for bit), so nothing is rendered; else ``env``."""
        if seed is None:
            return env
        v = self._views.get((str(task), int(seed)))
        sim = getattr(getattr(env, "sim", None), "data", None)
        if v is None or sim is None or not hasattr(env, "body_poses"):
            return env
        cam = getattr(env, "camera", None)
        pos, rot = env.body_poses()
        same = (
            cam is not None and np.array_equal(cam.K, v["K"]) and np.array_equal(cam.world_to_cam, v["world_to_cam"])
            and np.array_equal(pos, v["pos"]) and np.array_equal(rot, v["rot"])
            and np.array_equal(sim.geom_xpos, v["geom_xpos"]) and np.array_equal(sim.geom_xmat, v["geom_xmat"])
        )
        return _RecordedViews(env, v["depth"], v["seg"]) if same else env

    def _subgoals(self, demo: Any) -> np.ndarray:
        from relam.keypoints import KeypointSettings
        from relam.subgoals import subgoal_sequence

        seq, _ = subgoal_sequence(demo, self.keypoint_settings or KeypointSettings(),
                                  spec=getattr(self._envs.get(str(demo.task)), "task", None))
        return np.asarray(seq.keypoints, dtype=np.float64)

    def plan(self, initial_frame: np.ndarray, task: str, *, env: Any = None, seed: int | None = None) -> np.ndarray:
        if seed is None:
            raise ValueError(
                "GroundTruthSubgoals.plan needs the episode seed (ReLAMWrapper passes it) to replay "
                "the same initial state with the expert"
            )
        key = (str(task), int(seed))
        if key not in self._memo:
            demo = self._rollout(_expert_task(task, env), int(seed))
            self._memo[key] = check_plan(self._extract(demo))
        return self._memo[key].copy()

    def close(self) -> None:
        for e in self._envs.values():
            e.close()
        self._envs.clear()
        self._views.clear()


class _RecordedViews:
    """A TaskEnv whose frame-0 depth and body segmentation are served from a recording of the same
    state (:meth:`GroundTruthSubgoals.frame0_env`); everything else is the env's own."""

    def __init__(self, env: Any, depth: np.ndarray, seg: np.ndarray):
        self._env, self._depth, self._seg = env, depth, seg

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def depth(self) -> np.ndarray:
        return self._depth.copy()

    def body_segmentation(self) -> np.ndarray:
        return self._seg.copy()


# --------------------------------------------------------------------------- wrappers


def _task_name(env: gym.Env) -> str:
    task = getattr(env.unwrapped, "task", None)
    return str(getattr(task, "name", task if task is not None else type(env.unwrapped).__name__))


def close_planner(planner: Any) -> None:
    """Close a planner that holds resources (an expert replay keeps private envs); most have none."""
    close = getattr(planner, "close", None)
    if callable(close):
        close()


class SeededEpisodes:
    """Episode seeds for subgoal wrappers: ``reset(seed=s)`` plays episode ``s`` and reseeds the
    stream; ``reset()`` draws the next episode seed from that stream. Planners that replay an
    expert from the same start (ground-truth subgoals, Oracle) need the episode's seed, and such a
    planner's private envs live as long as the wrapper: closing the wrapper closes its planner."""

    _seed_rng: np.random.Generator
    episode_seed: int | None = None
    planner: Any
    _replay: dict[str, Any] | None = None

    def close(self) -> None:
        close_planner(self.planner)
        super().close()  # type: ignore[misc]  # the gym.Wrapper this is mixed into

    def episode_state(self) -> dict[str, Any]:
        """What replays the start of the current episode: its seed, and the seed stream as it stood
        after drawing it (JSON-ready). A training run's checkpoint keeps it, beside the episode's
        actions so far (:class:`relam.rl.resume.EpisodeReplay`)."""
        return {"episode_seed": self.episode_seed, "stream": self._seed_rng.bit_generator.state}

    def replay_episode(self, state: dict[str, Any]) -> None:
        """Make the next ``reset`` replay the episode of ``state`` (from :meth:`episode_state`),
        whatever seed that reset is given, and leave the seed stream where it stood after it: a
        resumed run's environments then play the episodes the uninterrupted run would have."""
        if state.get("episode_seed") is None:
            raise ValueError("replay_episode: the state has no episode_seed (saved before the first reset?)")
        self._replay = dict(state)

    def _next_episode_seed(self, seed: int | None) -> int:
        if self._replay is not None:
            state, self._replay = self._replay, None
            self._seed_rng = np.random.default_rng()
            self._seed_rng.bit_generator.state = state["stream"]
            self.episode_seed = int(state["episode_seed"])
        elif seed is not None:
            self._seed_rng = np.random.default_rng(seed)
            self.episode_seed = int(seed)
        else:
            self.episode_seed = int(self._seed_rng.integers(0, 2**31 - 1))
        return self.episode_seed


class ReLAMWrapper(SeededEpisodes, gym.Wrapper):
    """A registered task as the ReLAM hierarchical task (see the module docstring).

    Args:
        env: a TaskEnv (observation = (H, W, 3) uint8 image; ``info["success"]``).
        planner: the :class:`SubgoalPlanner` called at every reset.
        tracker: an online tracker (``reset(frame, query_uv, env)``, ``update(frame, env)``) or a
            name for :func:`relam.perception.tracking.make_tracker` (default ``"sim"``).
        settings: the reward settings.
        n_points: keypoints per subgoal (fixes the observation space before the first reset).
        include_image: put the image in the observation (False gives the fast points-only task;
            with the sim tracker and a ``render=False`` env nothing is rendered after reset).
        seed: seeds the generator of episode seeds for ``reset()`` without a seed.
    """

    def __init__(
        self,
        env: gym.Env,
        planner: SubgoalPlanner,
        tracker: Any = "sim",
        settings: RewardSettings = RewardSettings(),
        n_points: int = 4,
        include_image: bool = True,
        seed: int | None = None,
    ):
        super().__init__(env)
        if not hasattr(planner, "plan"):
            raise TypeError("ReLAMWrapper: planner must have plan(initial_frame, task, env=, seed=)")
        if isinstance(tracker, str):
            from relam.perception.tracking import make_tracker

            tracker = make_tracker(tracker)
        self.planner = planner
        self.tracker = tracker
        self.settings = settings
        self.n_points = int(n_points)
        self.include_image = bool(include_image)
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
                and space.shape[-1] == 3):
            raise ValueError(f"ReLAMWrapper: env must observe (H, W, 3) uint8 images, got {space}")
        h, w, _ = space.shape
        if h != w:
            raise ValueError(f"ReLAMWrapper: square images expected (keypoint normalisation), got {h}x{w}")
        self.image_size = int(h)
        pts = gym.spaces.Box(-POINT_BOUND, POINT_BOUND, (2 * self.n_points,), np.float32)
        spaces: dict[str, gym.spaces.Space] = {}
        if self.include_image:
            spaces["image"] = gym.spaces.Box(0, 255, (3, h, w), np.uint8)
        spaces["keypoints"] = pts
        spaces["target"] = pts
        self.observation_space = gym.spaces.Dict(spaces)
        self.reward_fn = ReLAMReward(settings)
        self._seed_rng = np.random.default_rng(seed)
        self._needs_frames = getattr(tracker, "name", "") != "sim"
        self.plan_: np.ndarray | None = None
        self.keypoints_: np.ndarray | None = None
        self._targets: list[np.ndarray] = []  # the subgoals' normalised keypoints (observation)
        self.episode_seed: int | None = None

    # -- helpers
    def _frame(self, obs_image: np.ndarray) -> np.ndarray:
        base = self.env.unwrapped
        return base.frame() if hasattr(base, "frame") else obs_image

    def _obs(self, image: np.ndarray | None) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if self.include_image:
            out["image"] = np.ascontiguousarray(np.transpose(image, (2, 0, 1)))
        out["keypoints"] = normalise_points(self.keypoints_, self.image_size)
        # the target changes only at a stage switch: each subgoal is normalised once, at reset
        out["target"] = self._targets[min(self.reward_fn.stage, len(self._targets) - 1)].copy()
        return out

    # -- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        episode_seed = self._next_episode_seed(seed)
        image, info = self.env.reset(seed=episode_seed, options=options)
        # the frame is rendered only for someone who reads it: the policy image, a pixel tracker, or
        # a planner that plans from it (GroundTruthSubgoals replays the seed instead)
        need_frame = self.include_image or self._needs_frames or getattr(self.planner, "needs_frame", True)
        frame = self._frame(image) if need_frame else None
        base = self.env.unwrapped
        task = _task_name(self.env)
        plan = check_plan(self.planner.plan(frame, task, env=base, seed=episode_seed), self.n_points)
        self.plan_ = plan
        tracker_env = base
        if not self._needs_frames and hasattr(self.planner, "frame0_env"):
            tracker_env = self.planner.frame0_env(base, task, episode_seed)
        self.tracker.reset(frame, plan[0], env=tracker_env)
        self.keypoints_ = np.asarray(self.tracker.update(frame, env=base), dtype=np.float64)
        self.reward_fn.reset(plan[1:])
        self._targets = [normalise_points(g, self.image_size) for g in self.reward_fn.tracker.subgoals]
        info = dict(info)
        info.update(
            stage=0,
            n_subgoals=self.reward_fn.n_subgoals,
            subgoal_reached=False,
            all_subgoals_reached=False,
            success=bool(info.get("success", False)),
            env_reward=float(info.get("env_reward", 0.0)),
            episode_seed=episode_seed,
        )
        return self._obs(frame if self.include_image else None), info

    def step(self, action):
        if self.plan_ is None:
            raise RuntimeError("ReLAMWrapper.step called before reset")
        image, env_reward, terminated, truncated, info = self.env.step(action)
        need_frame = self.include_image or self._needs_frames
        frame = self._frame(image) if need_frame else None
        self.keypoints_ = np.asarray(self.tracker.update(frame, env=self.env.unwrapped), dtype=np.float64)
        success = bool(info.get("success", False))
        out = self.reward_fn.step(self.keypoints_, env_success=success)
        info = dict(info)
        info.update(
            stage=out.next_stage,
            n_subgoals=self.reward_fn.n_subgoals,
            subgoal_reached=bool(out.reached),
            all_subgoals_reached=bool(out.all_reached),
            keypoint_distance=float(out.distance),
            success=success,
            env_reward=float(info.get("env_reward", env_reward)),
        )
        return self._obs(frame), float(out.reward), bool(terminated), bool(truncated), info


class PolicyImageSize(gym.ObservationWrapper):
    """The ``image`` entry of a Dict observation at ``size`` x ``size``, for the policy.

    Separate from :class:`ReLAMWrapper` because only the policy needs the small image; keypoints
    are normalised, so they do not change. Two sources:

    - ``"downsample"`` (default): the area average of the wrapped observation's ``image`` (the
      task's full-size frame, which a pixel tracker or a frame-reading reward needs anyway);
    - ``"render"``: the simulator renders the image directly at ``size``
      (``env.unwrapped.render_rgb_at(size)``: :meth:`relam.tasks.MetaWorldEnv.render_rgb_at`),
      after the wrapped env's reset/step, so no full-size frame is rendered for the policy. The
      wrapped observation need not have an ``image`` entry (a points-only :class:`ReLAMWrapper`
      over a ``render=False`` env: nothing else is rendered after reset); one it has is replaced.
      Same camera and view; the pixels are not those of ``"downsample"`` (no averaging).
    """

    SOURCES = ("downsample", "render")

    def __init__(self, env: gym.Env, size: int = 64, source: str = "downsample"):
        super().__init__(env)
        if source not in self.SOURCES:
            raise ValueError(f"PolicyImageSize.source={source!r}: choose from {self.SOURCES}")
        space = env.observation_space
        has_image = isinstance(space, gym.spaces.Dict) and "image" in space.spaces
        if not isinstance(space, gym.spaces.Dict) or (source == "downsample" and not has_image):
            raise ValueError("PolicyImageSize needs a Dict observation with an 'image' entry (C, H, W)")
        if source == "render" and not hasattr(env.unwrapped, "render_rgb_at"):
            raise ValueError(f"PolicyImageSize(source='render'): {type(env.unwrapped).__name__} cannot render "
                             "at another size (no render_rgb_at); use source='downsample'")
        c = space["image"].shape[0] if has_image else 3
        if int(size) < 8:
            raise ValueError(f"PolicyImageSize.size={size}: must be >= 8 pixels")
        self.size = int(size)
        self.source = source
        spaces = dict(space.spaces)
        spaces["image"] = gym.spaces.Box(0, 255, (c, self.size, self.size), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, observation: dict) -> dict:
        out = dict(observation)
        if self.source == "render":
            img = self.env.unwrapped.render_rgb_at(self.size)
            out["image"] = np.ascontiguousarray(np.transpose(img, (2, 0, 1)))
        else:
            out["image"] = resize_images(observation["image"], self.size, channels_first=True,
                                         what="policy image")[0]
        return out


class RobotProprio(gym.ObservationWrapper):
    """Adds ``proprio``: the robot's own state from the simulator (:meth:`relam.tasks.TaskEnv.proprio`).

    Meta-World: the gripper's 3-D position (m) and opening. The points-only policy sees 2-D
    keypoints from one camera, so two arm poses that differ along the camera's line of sight look
    the same to it (a hand 5 cm in front of the drawer handle, or above the door handle, meets the
    same 6 px subgoal); in the paper the 64 px image carries that depth. This gives the fast loop
    the depth without rendering (budget ``policy_input: points+proprio``).

    ManiSkill: the joint positions. Its expert's actions (``pd_joint_pos``) are absolute joint
    targets, which a policy reading a 64 px image must otherwise infer the arm's joint angles to
    give (budget ``policy_input: image+points+proprio``, offline). The reward does not read it.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict):
            raise ValueError(f"RobotProprio: a Dict observation expected (wrap a ReLAMWrapper), got {space}")
        base = env.unwrapped
        if not getattr(base, "proprio_dim", 0):
            raise ValueError(f"RobotProprio: {type(base).__name__} has no proprio(); a policy_input with "
                             "'proprio' needs a Meta-World or ManiSkill task env")
        self.observation_space = gym.spaces.Dict({**space.spaces, "proprio": gym.spaces.Box(
            -np.inf, np.inf, (int(base.proprio_dim),), np.float32)})

    def observation(self, observation: dict) -> dict:
        out = dict(observation)
        out["proprio"] = self.env.unwrapped.proprio()
        return out


#: ``make_relam_env(policy_render=...)`` values
POLICY_RENDER = ("auto", "render", "downsample")


def make_relam_env(
    task: str,
    planner: SubgoalPlanner,
    seed: int | None = None,
    tracker: Any = "sim",
    settings: RewardSettings = RewardSettings(),
    n_points: int = 4,
    include_image: bool = True,
    policy_image_size: int | None = 64,
    policy_render: str = "auto",
    include_proprio: bool = False,
) -> gym.Env:
    """A registered task wrapped for ReLAM training.

    With ``include_image=False`` the simulator is built with ``render=False`` (only the reset frame
    and its depth/segmentation are rendered, for planning and lifting the tracked points).

    ``policy_render`` says where the policy's ``policy_image_size`` image comes from when it differs
    from the task's ``image_size``: ``"render"``, rendered at that size every step
    (:class:`PolicyImageSize` ``source="render"``; the reward still gets the full-size reset frame
    for planning and the body poses for the sim tracker, and no full-size frame is rendered after
    reset); ``"downsample"``, the full-size frame rendered every step and area-averaged; ``"auto"``
    (default), ``"render"`` wherever the reward reads no per-step frame (the ``"sim"`` tracker) and
    the simulator can render at another size (Meta-World), else ``"downsample"`` (pixel trackers
    need the full-size frames; ManiSkill captures its camera at one size). The two give slightly
    different images (see :meth:`relam.tasks.MetaWorldEnv.render_rgb_at`): a policy trained on one
    is evaluated on the same (a run's key says which, :meth:`relam.relam_method.ReLAM.key_version`).
    ``include_proprio`` adds the robot's own state (:class:`RobotProprio`).
    """
    from relam.tasks import get_task, make_env

    if policy_render not in POLICY_RENDER:
        raise ValueError(f"make_relam_env: policy_render={policy_render!r}, choose from {POLICY_RENDER}")
    spec = get_task(task)
    sim_tracker = getattr(tracker, "name", tracker) == "sim"
    env = make_env(spec, seed=None, render=include_image or not sim_tracker)
    resize = bool(include_image and policy_image_size and int(policy_image_size) != spec.image_size)
    can_render = sim_tracker and hasattr(env, "render_rgb_at")
    direct = resize and can_render and policy_render != "downsample"
    if resize and policy_render == "render" and not direct:
        env.close()
        raise ValueError(f"make_relam_env: policy_render='render' needs the 'sim' tracker (got {tracker!r}) and a "
                         f"simulator that renders at another size ({type(env).__name__})")
    if direct:
        env.render_enabled = False  # the policy image is rendered at its own size; no full-size frames
    env = ReLAMWrapper(env, planner, tracker=tracker, settings=settings, n_points=n_points,
                       include_image=include_image and not direct, seed=seed)
    if include_image and policy_image_size:
        env = PolicyImageSize(env, policy_image_size, source="render" if direct else "downsample")
    if include_proprio:
        env = RobotProprio(env)
    return env
