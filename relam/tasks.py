"""The task registry and one gymnasium interface over Meta-World and ManiSkill.

Tasks are declared as data in ``relam/tasks.yaml``; this module validates each entry into a
:class:`TaskSpec` and builds a :class:`TaskEnv` from it. A new Meta-World task needs one new YAML
entry and nothing else.

Every :class:`TaskEnv` renders the same thing the paper's policies see -- a fixed third-person RGB
image -- and also exposes what the weight-free perception backends need and a real robot would not
have: per-body segmentation, depth, the camera's intrinsics/extrinsics and body poses. Only
``relam.tasks`` imports the simulators; everything else talks to :class:`TaskEnv`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

import relam  # noqa: F401  (sets MUJOCO_GL before any simulator import)
from relam.keypoints import KEYPOINT_RULES
from relam.reward import REACH_RULES, STAGE_TERMS

REGISTRY_FILE = Path(__file__).with_name("tasks.yaml")
SUITES = ("metaworld", "maniskill")


class TaskError(ValueError):
    """A malformed task entry or an unknown task name."""


@dataclass(frozen=True)
class CameraPose:
    """A fixed camera: position and look-at point in world metres, vertical field of view (deg)."""

    pos: tuple[float, float, float]
    lookat: tuple[float, float, float]
    fovy: float = 45.0


@dataclass(frozen=True)
class TaskSpec:
    """One registered task, as declared in ``tasks.yaml``."""

    name: str
    suite: str
    env_id: str
    horizon: int
    image_size: int
    camera: CameraPose
    prompts: dict[str, tuple[str, ...]]
    object_prompt: str
    control_mode: str = "pd_joint_pos"
    offline: bool = False
    offline_noise: float = 0.0
    show_goal: bool = False
    #: Meta-World: steps the scripted expert keeps going after the first successful step. A demo
    #: that stops at the first success ends on the threshold state itself, so its last keyframe --
    #: the final subgoal -- is reached a few steps *before* success (every keypoint within 6 px of
    #: it 3 steps early on drawer, 5-7 on door, 9-10 on button); running on puts the final subgoal
    #: past the success threshold, so reaching it means the task is done.
    post_success_steps: int = 0
    #: the keyframe window M of Eq. (2) for this task (None: ``KeypointSettings.max_step``, 40). A
    #: door swings along an arc: with M = 40 its demos give 2-4 keyframes whose segments move the
    #: points 50-90 px, and points-only PPO reached 0.0-0.2 subgoals through 350k steps; with 15 the
    #: arc is cut into 5-8 chords and the same loop reached 1.5 by 100k.
    keyframe_max_step: int | None = None
    #: the keypoint selection rule of :func:`relam.keypoints.select_keypoints` for this task's
    #: subgoal datasets: ``fps`` (Eq. 1 as written: the object's most-moving pixel, then FPS over
    #: every moving pixel) or ``first_frame`` (the object's centre pixel, then FPS over the arm from
    #: its centre: a function of the first frame, so the anticipation model can predict it).
    #: ``KeypointSettings.rule`` overrides it. It shapes the subgoal datasets, not the demos, so
    #: :meth:`to_dict` (the demos' key) leaves it out; ``relam.subgoals.subgoal_cache_path`` keys it.
    keypoint_rule: str = "fps"
    #: keypoints taken on the object before the others (``KeypointSettings.object_points``, which
    #: overrides it when set above 1). Every entry keeps 1: on door-open-v3, 2 (the handle's end and
    #: the door's far corner, so that the swing weighs half of the keypoint distance) learned earlier
    #: but ended at 47 / 70% on seeds 0 / 1 against one point's 53 / 73%, and seed 2 had no success by
    #: 400k (README status, "Door, session 17").
    #: Shapes the subgoal datasets, not the demos: out of :meth:`to_dict`, keyed in the run key and
    #: by ``relam.subgoals.subgoal_cache_path``.
    object_points: int = 1
    #: the ReLAM reward's threshold for this task's *last* subgoal, px (None: theta_s; see
    #: :attr:`relam.reward.RewardSettings.final_theta_s`). For an object whose whole motion is short
    #: against theta_s (the button: 8.6-9.0 px), so that meeting the last subgoal means the task is
    #: done. It shapes the reward, not the demos: out of :meth:`to_dict`, keyed in the run key.
    final_theta_s: float | None = None
    #: subgoals past the current target that the ReLAM reward lets a policy meet directly (see
    #: :attr:`relam.reward.RewardSettings.skip_ahead`; 0: strict order). Like ``final_theta_s`` it
    #: shapes the reward, not the demos: out of :meth:`to_dict`, keyed in the run key.
    skip_ahead: int = 0
    #: the ReLAM reward's per-stage term for this task (see
    #: :attr:`relam.reward.RewardSettings.stage_term`; ``unreached``: a penalty per unreached
    #: subgoal). Shapes the reward, not the demos: out of :meth:`to_dict`, keyed in the run key.
    stage_term: str = "unreached"
    #: how the ReLAM reward decides that a subgoal is met for this task (see
    #: :attr:`relam.reward.RewardSettings.reach`; ``every``: every keypoint within theta_s).
    #: Shapes the reward, not the demos: out of :meth:`to_dict`, keyed in the run key.
    reach: str = "every"

    @property
    def bodies(self) -> tuple[str, ...]:
        """All bodies named by the prompts, in a fixed order (prompt order, then listed order)."""
        out: list[str] = []
        for names in self.prompts.values():
            out.extend(n for n in names if n not in out)
        return tuple(out)

    @property
    def arm_prompt(self) -> str:
        return next(p for p in self.prompts if p != self.object_prompt)

    def to_dict(self) -> dict[str, Any]:
        """The entry as plain data; it keys caches (demos), so optional fields that were added later
        are left out while at their default: adding one must not invalidate every stored demo."""
        d = dataclasses.asdict(self)
        for name in _NOT_DEMO_FIELDS:
            d.pop(name)
        defaults = _field_defaults()
        for name in _LATE_FIELDS:
            if d.get(name) == defaults[name]:
                d.pop(name)
        return d


#: optional fields added after demos were first cached: left out of TaskSpec.to_dict at their defaults
_LATE_FIELDS = ("show_goal", "post_success_steps", "keyframe_max_step")
#: fields that change what is computed from the demos, not the demos: never in :meth:`TaskSpec.to_dict`
_NOT_DEMO_FIELDS = ("keypoint_rule", "object_points", "final_theta_s", "skip_ahead", "stage_term", "reach")


def run_only_fields(spec: TaskSpec) -> dict[str, Any]:
    """The entry's fields that shape a run but not its demos, where they differ from their defaults
    (so a run key changes with them, and a task without them keeps its keys)."""
    defaults = _field_defaults()
    return {name: getattr(spec, name) for name in _NOT_DEMO_FIELDS if getattr(spec, name) != defaults[name]}


def _field_defaults() -> dict[str, Any]:
    """Each TaskSpec field's default, written once on the field itself."""
    return {f.name: f.default for f in dataclasses.fields(TaskSpec)}


_FIELDS = {
    "suite": str, "env_id": str, "horizon": int, "image_size": int, "camera": dict,
    "prompts": dict, "object_prompt": str, "control_mode": str, "offline": bool,
    "offline_noise": (int, float), "show_goal": bool, "post_success_steps": int, "keyframe_max_step": int,
    "keypoint_rule": str, "object_points": int, "final_theta_s": (int, float), "skip_ahead": int, "stage_term": str, "reach": str,
}
_REQUIRED = ("suite", "env_id", "horizon", "image_size", "camera", "prompts", "object_prompt")


def parse_task(name: str, entry: Any, source: str = str(REGISTRY_FILE)) -> TaskSpec:
    """Validate one registry entry; errors name the task, the field and what was expected."""
    where = f"{source}: task '{name}'"
    if not isinstance(entry, dict):
        raise TaskError(f"{where}: expected a mapping of fields, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise TaskError(f"{where}: unknown field(s) {unknown}; known fields: {sorted(_FIELDS)}")
    missing = [f for f in _REQUIRED if f not in entry]
    if missing:
        raise TaskError(f"{where}: missing required field(s) {missing}")
    for key, typ in _FIELDS.items():
        if key in entry and not isinstance(entry[key], typ) or (
            key in entry and typ is int and isinstance(entry[key], bool)
        ):
            exp = typ.__name__ if isinstance(typ, type) else "number"
            raise TaskError(f"{where}: field '{key}' must be {exp}, got {entry[key]!r}")
    if entry["suite"] not in SUITES:
        raise TaskError(f"{where}: field 'suite' must be one of {SUITES}, got {entry['suite']!r}")
    if entry["horizon"] <= 0 or entry["image_size"] < 16:
        raise TaskError(f"{where}: 'horizon' must be > 0 and 'image_size' >= 16")
    if entry.get("keyframe_max_step", 5) < 5:
        raise TaskError(f"{where}: field 'keyframe_max_step' must be >= 5 (the keyframe window's minimum), "
                        f"got {entry['keyframe_max_step']!r}")
    if entry.get("post_success_steps", 0) < 0:
        raise TaskError(f"{where}: field 'post_success_steps' must be >= 0 (steps the expert runs on "
                        f"after its first success), got {entry['post_success_steps']!r}")
    if entry.get("keypoint_rule", "fps") not in KEYPOINT_RULES:
        raise TaskError(f"{where}: field 'keypoint_rule' must be one of {KEYPOINT_RULES}, got "
                        f"{entry['keypoint_rule']!r}")
    if entry.get("object_points", 1) < 1:
        raise TaskError(f"{where}: field 'object_points' must be >= 1 (keypoints on the object; leave it out "
                        f"for one), got {entry['object_points']!r}")
    if "final_theta_s" in entry and not entry["final_theta_s"] > 0:
        raise TaskError(f"{where}: field 'final_theta_s' must be > 0 (pixels; leave it out for theta_s), "
                        f"got {entry['final_theta_s']!r}")
    if entry.get("skip_ahead", 0) < 0:
        raise TaskError(f"{where}: field 'skip_ahead' must be >= 0 (subgoals past the current one that may be "
                        f"met directly; leave it out for the strict order), got {entry['skip_ahead']!r}")
    if entry.get("stage_term", "unreached") not in STAGE_TERMS:
        raise TaskError(f"{where}: field 'stage_term' must be one of {STAGE_TERMS}, got {entry['stage_term']!r}")
    if entry.get("reach", "every") not in REACH_RULES:
        raise TaskError(f"{where}: field 'reach' must be one of {REACH_RULES} (every keypoint within theta_s, or "
                        f"their mean distance), got {entry['reach']!r}")
    cam = entry["camera"]
    try:
        pose = CameraPose(
            pos=tuple(float(v) for v in cam["pos"]),
            lookat=tuple(float(v) for v in cam["lookat"]),
            fovy=float(cam.get("fovy", 45.0)),
        )
        assert len(pose.pos) == 3 and len(pose.lookat) == 3 and set(cam) <= {"pos", "lookat", "fovy"}
    except Exception:
        raise TaskError(
            f"{where}: field 'camera' must be {{pos: [x, y, z], lookat: [x, y, z], fovy: deg}}, got {cam!r}"
        ) from None
    prompts = entry["prompts"]
    if len(prompts) < 2 or not all(
        isinstance(v, list) and v and all(isinstance(b, str) for b in v) for v in prompts.values()
    ):
        raise TaskError(
            f"{where}: field 'prompts' must map at least two text prompts to non-empty lists of body names"
        )
    if entry["object_prompt"] not in prompts:
        raise TaskError(
            f"{where}: field 'object_prompt' {entry['object_prompt']!r} is not one of the prompts {list(prompts)}"
        )
    return TaskSpec(
        name=name,
        suite=entry["suite"],
        env_id=entry["env_id"],
        horizon=int(entry["horizon"]),
        image_size=int(entry["image_size"]),
        camera=pose,
        prompts={k: tuple(v) for k, v in prompts.items()},
        object_prompt=entry["object_prompt"],
        control_mode=entry.get("control_mode", "pd_joint_pos"),
        offline=bool(entry.get("offline", False)),
        offline_noise=float(entry.get("offline_noise", 0.0)),
        show_goal=bool(entry.get("show_goal", False)),
        post_success_steps=int(entry.get("post_success_steps", 0)),
        keyframe_max_step=int(entry["keyframe_max_step"]) if "keyframe_max_step" in entry else None,
        keypoint_rule=entry.get("keypoint_rule", "fps"),
        object_points=int(entry.get("object_points", 1)),
        final_theta_s=float(entry["final_theta_s"]) if "final_theta_s" in entry else None,
        skip_ahead=int(entry.get("skip_ahead", 0)),
        stage_term=entry.get("stage_term", "unreached"),
        reach=entry.get("reach", "every"),
    )


def load_registry(path: str | Path = REGISTRY_FILE) -> dict[str, TaskSpec]:
    """Parse and validate a registry file (the default one unless told otherwise)."""
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise TaskError(f"{path}: the registry must be a mapping of task name -> entry")
    return {name: parse_task(name, entry, str(path)) for name, entry in raw.items()}


@lru_cache(maxsize=1)
def _registry() -> dict[str, TaskSpec]:
    return load_registry()


def list_tasks() -> list[str]:
    return list(_registry())


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Look a task up by name; an unknown name fails with the list of known ones."""
    if isinstance(name, TaskSpec):
        return name
    reg = _registry()
    if name not in reg:
        raise TaskError(
            f"unknown task {name!r}; known tasks: {', '.join(reg)} "
            f"(add an entry to {REGISTRY_FILE} to register a new one)"
        )
    return reg[name]


# --------------------------------------------------------------------------------------------------
# Camera geometry (OpenCV convention: x right, y down, z forward; pixel centres at integers)


@dataclass
class Camera:
    """A pinhole camera: intrinsics ``K`` and world-to-camera extrinsics (OpenCV convention)."""

    K: np.ndarray
    world_to_cam: np.ndarray
    width: int
    height: int

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N,3) -> pixel coordinates (N,2) as (column, row), and depth z (N,)."""
        P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        pc = P @ self.world_to_cam[:3, :3].T + self.world_to_cam[:3, 3]
        return self.pixels(pc), pc[:, 2]

    def pixels(self, pc: np.ndarray) -> np.ndarray:
        """Camera-frame points (..., 3) -> pixel coordinates (..., 2) (depths under 1e-9 count as 1e-9)."""
        z = pc[..., 2]
        zs = np.where(np.abs(z) < 1e-9, 1e-9, z)
        return (pc[..., :2] / zs[..., None]) @ self.K[:2, :2].T + self.K[:2, 2]

    def unproject(self, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Pixel coordinates (N,2) with depth z (N,) -> world points (N,3)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        xy = (uv - self.K[:2, 2]) / np.diag(self.K)[:2]
        pc = np.concatenate([xy * z[:, None], z[:, None]], axis=1)
        R, t = self.world_to_cam[:3, :3], self.world_to_cam[:3, 3]
        return (pc - t) @ R

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"K": self.K, "world_to_cam": self.world_to_cam,
                "image_hw": np.array([self.height, self.width])}

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray]) -> "Camera":
        h, w = (int(v) for v in d["image_hw"])
        return cls(np.asarray(d["K"], float), np.asarray(d["world_to_cam"], float), w, h)


def look_at_rotation(pos: np.ndarray, lookat: np.ndarray) -> np.ndarray:
    """Camera-to-world rotation of an OpenCV camera at ``pos`` looking at ``lookat``, world z up."""
    fwd = np.asarray(lookat, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    return np.stack([right, down, fwd], axis=1)


def quat_wxyz_to_mat(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) in (w, x, y, z) order -> rotation matrices (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


# --------------------------------------------------------------------------------------------------
# The common environment interface


class TaskEnv(gym.Env):
    """A registered task as a gymnasium env whose observation is the camera's RGB image.

    ``step`` returns the simulator's own dense reward (kept for sanity checks such as the Spearman
    correlation with the ReLAM reward; no method trains on it) and ``info["success"]`` at this
    step. Episodes never terminate early; they are truncated at ``spec.horizon``. ``reset(seed=s)``
    gives the same initial state, and the same first frame bit for bit, for the same ``s``.
    """

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, spec: TaskSpec, render: bool = True):
        self.spec_ = spec
        self.render_enabled = render
        n = spec.image_size
        self.observation_space = gym.spaces.Box(0, 255, (n, n, 3), np.uint8)
        self.body_names: tuple[str, ...] = spec.bodies
        self._t = 0
        self._frame: np.ndarray | None = None

    # gymnasium reserves ``spec`` for its EnvSpec; the task entry is ``task``.
    @property
    def task(self) -> TaskSpec:
        return self.spec_

    @property
    def t(self) -> int:
        return self._t

    def frame(self) -> np.ndarray:
        """The current RGB image (rendered lazily when rendering is off)."""
        if self._frame is None:
            self._frame = self._render_rgb()
        return self._frame

    def render(self) -> np.ndarray:
        return self.frame()

    def prompt_mask(self, prompt: str) -> np.ndarray:
        """Boolean mask of the bodies a text prompt names (the simulator's 'segmenter')."""
        if prompt not in self.spec_.prompts:
            raise KeyError(f"prompt {prompt!r} is not declared for task {self.spec_.name}; "
                           f"declared prompts: {list(self.spec_.prompts)}")
        ids = [self.body_names.index(b) for b in self.spec_.prompts[prompt]]
        return np.isin(self.body_segmentation(), ids)

    def _after_step(self, info: dict) -> None:
        self._t += 1
        self._frame = self._render_rgb() if self.render_enabled else None

    # To implement per suite ---------------------------------------------------------------------
    camera: Camera

    def _render_rgb(self) -> np.ndarray:
        raise NotImplementedError

    def depth(self) -> np.ndarray:
        raise NotImplementedError

    def body_segmentation(self) -> np.ndarray:
        raise NotImplementedError

    def body_poses(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    #: length of :meth:`proprio`
    proprio_dim: int = 0

    def proprio(self) -> np.ndarray:
        """The robot's own state that a ``...+proprio`` policy input adds to the camera's view
        (Meta-World: the hand's position and finger opening; ManiSkill: the joint positions)."""
        raise NotImplementedError


class MetaWorldEnv(TaskEnv):
    """Meta-World v3 task rendered by our own MuJoCo renderer from the registry's camera.

    The scene's shadows, reflections and anti-aliasing are switched off and the goal markers are
    hidden (measured: 60-150 ms a frame with them, under 10 ms without); frames are bit-identical
    across processes and between the EGL and OSMesa backends.
    """

    def __init__(self, spec: TaskSpec, render: bool = True):
        super().__init__(spec, render)
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        if spec.env_id not in ALL_V3_ENVIRONMENTS:
            raise TaskError(f"task '{spec.name}': env_id {spec.env_id!r} is not a Meta-World v3 task")
        self._mj = mujoco
        env = ALL_V3_ENVIRONMENTS[spec.env_id]()
        # Our own seeded reset replaces Meta-World's benchmark task sampling: the initial object/goal
        # vector is drawn from the env's np_random, which reset(seed=s) seeds (set_task is not needed).
        env._set_task_called = True
        env._partially_observable = False
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.max_path_length = max(env.max_path_length, spec.horizon)
        self.sim = env
        m = env.model
        m.vis.quality.offsamples = 0
        m.light_castshadow[:] = 0
        m.mat_reflectance[:] = 0
        m.site_rgba[:, 3] = 0
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        missing = [b for b in self.body_names if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, b) < 0]
        if missing:
            raise TaskError(f"task '{spec.name}': prompts name bodies {missing} that the Meta-World model "
                            f"{spec.env_id} does not have")
        self._body_ids = np.array([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, b) for b in self.body_names])
        # geom id -> index into body_names (or -1), for the segmentation map
        lut = np.full(m.ngeom + 1, -1, np.int16)
        for i, bid in enumerate(self._body_ids):
            lut[:-1][m.geom_bodyid == bid] = i
        self._geom_lut = lut
        n = spec.image_size
        self._renderer = mujoco.Renderer(m, n, n)
        self._cam = self._make_free_camera()
        self.camera = self._camera_model()
        # renderers of other sizes (the policy's own image), made on first use: same model, same
        # free camera and fovy, so only the pixel grid differs from the task's image_size frame
        self._sized_renderers: dict[int, Any] = {}
        self._last_obs: np.ndarray | None = None

    def _make_free_camera(self):
        mj = self._mj
        c = self.spec_.camera
        cam = mj.MjvCamera()
        cam.type = mj.mjtCamera.mjCAMERA_FREE
        d = np.asarray(c.lookat) - np.asarray(c.pos)
        cam.lookat[:] = c.lookat
        cam.distance = float(np.linalg.norm(d))
        cam.azimuth = math.degrees(math.atan2(d[1], d[0]))
        cam.elevation = math.degrees(math.asin(d[2] / np.linalg.norm(d)))
        self.sim.model.vis.global_.fovy = c.fovy
        return cam

    def _camera_model(self) -> Camera:
        c, n = self.spec_.camera, self.spec_.image_size
        f = 0.5 * n / math.tan(math.radians(c.fovy) / 2)
        K = np.array([[f, 0, n / 2 - 0.5], [0, f, n / 2 - 0.5], [0, 0, 1.0]])
        R = look_at_rotation(np.asarray(c.pos), np.asarray(c.lookat))
        E = np.eye(4)
        E[:3, :3] = R.T
        E[:3, 3] = -R.T @ np.asarray(c.pos)
        return Camera(K, E, n, n)

    def _render_pass(self, kind: str) -> np.ndarray:
        r = self._renderer
        if kind == "depth":
            r.enable_depth_rendering()
        elif kind == "seg":
            r.enable_segmentation_rendering()
        try:
            r.update_scene(self.sim.data, camera=self._cam)
            return r.render()
        finally:
            r.disable_depth_rendering()
            r.disable_segmentation_rendering()

    def _render_rgb(self) -> np.ndarray:
        return self._render_pass("rgb").copy()

    def render_rgb_at(self, size: int) -> np.ndarray:
        """The current RGB image rendered directly at ``size`` x ``size`` (uint8, (size, size, 3)).

        For a policy that sees a smaller image than the task's ``image_size``: one MuJoCo render at
        that size instead of a render at ``image_size`` and an area-average downsampling
        (``benchmarks/bench_throughput.py`` measures both). Same free camera and field of view,
        so the image shows the same view; the pixels differ slightly from the downsampled frame
        (no anti-aliasing: each pixel is one sample, not the mean of four). The camera model, the
        frame of :meth:`frame`, depth and segmentation stay at ``image_size``, and nothing here
        changes what :meth:`step` returns.
        """
        n = int(size)
        if n == self.spec_.image_size:
            return self._render_rgb()
        if n < 1:
            raise ValueError(f"render_rgb_at: size must be >= 1, got {size}")
        r = self._sized_renderers.get(n)
        if r is None:
            r = self._sized_renderers[n] = self._mj.Renderer(self.sim.model, n, n)
        r.update_scene(self.sim.data, camera=self._cam)
        return r.render().copy()

    def physics_state(self) -> np.ndarray:
        """The simulator's state now (MuJoCo's ``mjSTATE_INTEGRATION``: positions, velocities, mocap
        targets, controls, warm start), a float64 vector for :meth:`frame_of`."""
        mj, m, d = self._mj, self.sim.model, self.sim.data
        out = np.empty(mj.mj_stateSize(m, mj.mjtState.mjSTATE_INTEGRATION))
        mj.mj_getState(m, d, out, mj.mjtState.mjSTATE_INTEGRATION)
        return out

    def frame_of(self, state: np.ndarray) -> np.ndarray:
        """The RGB frame (at ``image_size``) of a :meth:`physics_state` taken earlier in this episode.

        Why: a rollout that renders nothing can still show chosen steps afterwards (the Oracle's
        keyframes). The state is set and its kinematics recomputed with ``mj_forward``, which is how
        Meta-World's ``step`` and this env's ``reset`` end, so the frame equals the one :meth:`step`
        rendered at that state bit for bit (``tests/test_image_subgoal.py``); the env's own state
        is put back afterwards (set twice: ``mj_forward`` rewrites the solver's warm start in its
        last bits, and the next ``step`` starts from it). Within one episode only: the object
        placement lives in the model.
        """
        mj, m, d = self._mj, self.sim.model, self.sim.data
        now = self.physics_state()
        try:
            mj.mj_setState(m, d, np.asarray(state, np.float64), mj.mjtState.mjSTATE_INTEGRATION)
            mj.mj_forward(m, d)
            return self._render_rgb()
        finally:
            mj.mj_setState(m, d, now, mj.mjtState.mjSTATE_INTEGRATION)
            mj.mj_forward(m, d)
            mj.mj_setState(m, d, now, mj.mjtState.mjSTATE_INTEGRATION)

    def depth(self) -> np.ndarray:
        return self._render_pass("depth").astype(np.float32)

    def body_segmentation(self) -> np.ndarray:
        seg = self._render_pass("seg")
        ids, types = seg[..., 0], seg[..., 1]
        geom = np.where((types == int(self._mj.mjtObj.mjOBJ_GEOM)) & (ids >= 0), ids, -1)
        return self._geom_lut[geom]

    def body_poses(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.sim.data
        return d.xpos[self._body_ids].copy(), d.xmat[self._body_ids].reshape(-1, 3, 3).copy()

    def state(self) -> np.ndarray:
        """The simulator's 39-d state observation (for the scripted expert only)."""
        return self._last_obs

    proprio_dim = 4

    def proprio(self) -> np.ndarray:
        # the 39-d state starts with the hand's position (m) and the finger opening
        return np.asarray(self._last_obs[: self.proprio_dim], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.sim.seed(int(seed))
        obs, _ = self.sim.reset()
        # Meta-World's reset writes the new object placement (drawer, door, button box) into the
        # model/qpos but does not run forward kinematics, so body poses -- and hence the rendered
        # frame 0 and its depth/segmentation -- still show the *previous* episode's placement until
        # the first step.  Frame 0 is what the anticipation model plans from, so recompute here.
        self._mj.mj_forward(self.sim.model, self.sim.data)
        self._last_obs = obs
        self._t = 0
        self._frame = self._render_rgb() if self.render_enabled else None
        return self.frame() if self.render_enabled else self._blank(), {"success": False, "env_reward": 0.0}

    def _blank(self) -> np.ndarray:
        n = self.spec_.image_size
        return np.zeros((n, n, 3), np.uint8)

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        obs, reward, _, _, info = self.sim.step(a)
        self._last_obs = obs
        info = {"success": bool(info.get("success", 0.0) > 0.5), "env_reward": float(reward)}
        self._after_step(info)
        truncated = self._t >= self.spec_.horizon
        img = self._frame if self.render_enabled else self._blank()
        return img, float(reward), False, truncated, info

    def close(self):
        for r in (self._renderer, *self._sized_renderers.values()):
            try:
                r.close()
            except Exception:
                pass
        self._sized_renderers.clear()
        self.sim.close()


#: Bumped when a suite's simulator wrapper changes what it records, so cached demos made before
#: are not reused (:func:`relam.demos.demo_dir` keys on it).  Meta-World 1: frame 0 rendered after
#: ``mj_forward`` (earlier demos showed the previous episode's object placement in frame 0).
SIM_REVISION: dict[str, int] = {"metaworld": 1}


class ManiSkillEnv(TaskEnv):
    """ManiSkill 3 task (CPU physics, one env) seen through its base camera placed by the registry.

    Needs Vulkan (Mesa 25 lavapipe; ``scripts/setup.sh`` installs it). RGB, depth and segmentation
    come from one sensor capture per step.
    """

    def __init__(self, spec: TaskSpec, render: bool = True):
        super().__init__(spec, render)
        import mani_skill.envs  # noqa: F401  (registers the tasks)
        from mani_skill.utils import sapien_utils

        c, n = spec.camera, spec.image_size
        pose = sapien_utils.look_at(eye=list(c.pos), target=list(c.lookat))
        try:
            self.sim = gym.make(
                spec.env_id,
                obs_mode="rgb+depth+segmentation",
                control_mode=spec.control_mode,
                render_mode="rgb_array",
                sim_backend="physx_cpu",
                num_envs=1,
                max_episode_steps=None,
                sensor_configs=dict(base_camera=dict(pose=pose, width=n, height=n, fov=math.radians(c.fovy))),
            )
        except RuntimeError as e:  # SAPIEN without a Vulkan device
            raise RuntimeError(
                f"ManiSkill could not start for task '{spec.name}': {e}. Rendering needs Vulkan: run "
                f"`bash scripts/setup.sh` (installs Mesa 25 lavapipe from bookworm-backports)."
            ) from e
        self.u = self.sim.unwrapped
        if spec.show_goal:  # draw the goal marker in the camera image (ManiSkill hides it from sensors)
            goal = getattr(self.u, "goal_site", None)
            if goal is None:
                raise TaskError(f"task '{spec.name}': show_goal is set but {spec.env_id} has no goal_site")
            if goal in self.u._hidden_objects:
                self.u._hidden_objects.remove(goal)
            self._show_goal = goal
        self.action_space = gym.spaces.Box(
            self.sim.action_space.low.astype(np.float32), self.sim.action_space.high.astype(np.float32)
        )
        self._obs: dict | None = None
        self.camera: Camera | None = None
        self.proprio_dim = int(self.u.agent.robot.get_qpos().shape[-1])

    def proprio(self) -> np.ndarray:
        # the arm's joint positions and the fingers' (rad, m): the state that pd_joint_pos actions,
        # absolute joint targets, are relative to
        return np.asarray(self.u.agent.robot.get_qpos()[0].cpu(), np.float32)

    def _objects(self) -> list:
        """The simulator objects (links/actors) behind ``body_names``, looked up once."""
        if getattr(self, "_objs", None) is None:
            by_name = {}
            for link in self.u.agent.robot.get_links():
                by_name[link.name] = link
            for name, actor in self.u.scene.actors.items():
                by_name.setdefault(name, actor)
            missing = [b for b in self.body_names if b not in by_name]
            if missing:
                raise TaskError(f"task '{self.spec_.name}': prompts name bodies {missing} that ManiSkill's "
                                f"{self.spec_.env_id} does not have; it has {sorted(by_name)}")
            self._objs = [by_name[b] for b in self.body_names]
            seg_map = self.u.segmentation_id_map
            lut = np.full(max(seg_map) + 2, -1, np.int16)
            for i, obj in enumerate(self._objs):
                for sid, o in seg_map.items():
                    if o is obj or getattr(o, "name", None) == obj.name:
                        lut[sid] = i
            self._seg_lut = lut
        return self._objs

    def _take(self, obs: dict) -> None:
        self._obs = obs
        cam = obs["sensor_param"]["base_camera"]
        K = np.asarray(cam["intrinsic_cv"])[0].astype(np.float64)
        E = np.eye(4)
        E[:3] = np.asarray(cam["extrinsic_cv"])[0]
        n = self.spec_.image_size
        self.camera = Camera(K, E, n, n)

    def _sensor(self, key: str) -> np.ndarray:
        return np.asarray(self._obs["sensor_data"]["base_camera"][key][0].cpu())

    def _render_rgb(self) -> np.ndarray:
        return self._sensor("rgb").astype(np.uint8)

    def depth(self) -> np.ndarray:
        # int16 millimetres; rays that hit nothing (sky, beyond 32.7 m) read 0 or wrap negative:
        # report them at the far plane (100 m), as MuJoCo does for empty pixels.
        d = self._sensor("depth")[..., 0].astype(np.float32) / 1000.0
        return np.where(d > 0, d, 100.0).astype(np.float32)

    def body_segmentation(self) -> np.ndarray:
        self._objects()
        seg = self._sensor("segmentation")[..., 0].astype(np.int64)
        return self._seg_lut[np.clip(seg, 0, len(self._seg_lut) - 1)]

    def body_poses(self) -> tuple[np.ndarray, np.ndarray]:
        pos, quat = [], []
        for o in self._objects():
            p = o.pose
            pos.append(np.asarray(p.p[0].cpu(), np.float64))
            quat.append(np.asarray(p.q[0].cpu(), np.float64))
        return np.stack(pos), quat_wxyz_to_mat(np.stack(quat))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, _ = self.sim.reset(seed=seed, options=options)
        if getattr(self, "_show_goal", None) is not None:  # un-hide, then render again
            self._show_goal.show_visual()
            obs = self.u.get_obs()
        self._take(obs)
        self._t = 0
        self._frame = self._render_rgb()
        return self._frame, {"success": False, "env_reward": 0.0}

    def step(self, action):
        obs, reward, _, _, info = self.sim.step(np.asarray(action, dtype=np.float32)[None])
        self._take(obs)
        info = {"success": bool(np.asarray(info["success"].cpu()).item()),
                "env_reward": float(np.asarray(reward.cpu()).item())}
        self._t += 1
        self._frame = self._render_rgb()
        truncated = self._t >= self.spec_.horizon
        return self._frame, info["env_reward"], False, truncated, info

    def planner_env(self, on_step=None, action_noise: float = 0.0, rng=None) -> gym.Env:
        """The raw ManiSkill env for ManiSkill's motion planners, kept in sync with this TaskEnv.

        The planners drive the env they are given step by step; the returned wrapper forwards every
        step to the simulator, updates this TaskEnv's state (frame, camera, time) and then calls
        ``on_step(action, info)``. ``action_noise`` adds Gaussian noise to the joint targets (the
        noisy half of the offline control dataset).
        """
        task_env = self

        class _Synced(gym.Wrapper):
            def step(self, action):
                a = np.asarray(action, dtype=np.float32).reshape(-1)
                if action_noise > 0:
                    a = a.copy()
                    a[:-1] += rng.normal(0.0, action_noise, size=a.shape[0] - 1).astype(np.float32)
                obs, reward, term, trunc, info = self.env.step(a[None])
                task_env._take(obs)
                task_env._t += 1
                task_env._frame = task_env._render_rgb()
                if on_step is not None:
                    on_step(a, {"success": bool(np.asarray(info["success"].cpu()).item()),
                                "env_reward": float(np.asarray(reward.cpu()).item())})
                return obs, reward, term, trunc, info

        return _Synced(self.sim)

    def close(self):
        self.sim.close()


_SUITE_ENVS = {"metaworld": MetaWorldEnv, "maniskill": ManiSkillEnv}


def make_env(task: str | TaskSpec, seed: int | None = None, render: bool = True) -> TaskEnv:
    """Build the env of a registered task; if ``seed`` is given it is reset with it once."""
    spec = get_task(task)
    env = _SUITE_ENVS[spec.suite](spec, render=render)
    if seed is not None:
        env.reset(seed=seed)
    return env
