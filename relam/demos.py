"""Expert demonstrations: the action-free video demos and the offline control datasets.

Two kinds per task (paper section 4.1):

* ``expert`` -- 100 successful expert videos per task (Meta-World scripted policies, ManiSkill
  motion planning). ReLAM reads only their frames; actions are recorded anyway (behaviour cloning
  baselines need them) but no ReLAM code path uses them.
* ``offline`` -- ManiSkill only: 200 trajectories with actions and success flags, rewards left
  unlabelled: 100 expert, 100 with Gaussian noise on the expert's joint targets
  (``TaskSpec.offline_noise``, chosen so the noisy half is a real mix of successes and failures).

Storage: one compressed ``.npz`` per trajectory under
``cache_dir()/demos/<task>/<kind>-<settings hash>/`` plus ``meta.json`` (task entry, camera, image
size, seeds tried, package versions). Each trajectory also keeps the simulator side data that the
weight-free perception backends use: per-frame body segmentation and body poses, first-frame
depth, the camera. Files are written atomically, so an interrupted run resumes where it stopped.
A damaged file (cut short, bad checksum, arrays missing) counts as missing: the loader and
``make_demos`` move it to ``quarantine/`` in its folder, with a warning, and make it again from its
recorded seed (the same demo; on ManiSkill the first rollout of a process differs slightly, about
2e-4 m in body poses, from every later rollout of that seed, which agree bit for bit across
processes); a damaged ``meta.json`` is rebuilt from the demo files.

Seeds: expert demos take environment seeds from 0 upward (failures are skipped and counted);
offline trajectories from 100_000 upward; evaluation episodes elsewhere use seeds >= 1_000_000, so
no evaluation start state is ever a demo's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from filelock import FileLock
from tqdm import tqdm

from relam.cache import (NPZ_ERRORS, atomic_save_npz, atomic_write_json, cache_dir, npz_problem,
                         quarantine, read_json, settings_hash)
from relam.tasks import SIM_REVISION, Camera, TaskEnv, TaskSpec, get_task, make_env
from relam.versions import package_versions

KINDS = ("expert", "offline")
OFFLINE_SEED_BASE = 100_000
EVAL_SEED_BASE = 1_000_000
FORMAT_VERSION = 1
#: the offline control sets' format: 2 records the robot's joint state (``Demo.proprio``), which a
#: ``...+proprio`` policy input reads; expert video demos stay at FORMAT_VERSION (their keys unchanged)
OFFLINE_FORMAT_VERSION = 2
#: arrays every demo file holds (a file without one of them is damaged)
ARRAYS = ("frames", "body_seg", "depth0", "body_pos", "body_rot", "actions", "env_reward", "success",
          "task", "seed", "body_names", "noisy")


@dataclass
class Demo:
    """One recorded trajectory (T steps, T+1 frames; frame 0 is the initial observation)."""

    frames: np.ndarray  # (T+1,H,W,3) uint8
    body_seg: np.ndarray  # (T+1,H,W) int16 index into body_names, -1 elsewhere
    depth0: np.ndarray  # (H,W) float32, z-depth of frame 0 in metres
    body_pos: np.ndarray  # (T+1,B,3)
    body_rot: np.ndarray  # (T+1,B,3,3)
    actions: np.ndarray  # (T,A) float32
    env_reward: np.ndarray  # (T,) the simulator's dense reward (sanity checks only)
    success: np.ndarray  # (T,) bool, success at each step
    camera: Camera
    task: str
    seed: int
    body_names: tuple[str, ...]
    noisy: bool = False
    #: (T+1,P) float32 the robot's own state per frame (:meth:`relam.tasks.TaskEnv.proprio`);
    #: recorded since offline format 2, None in older demos
    proprio: np.ndarray | None = None

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def succeeded(self) -> bool:
        return bool(self.success.any())

    def to_arrays(self) -> dict[str, np.ndarray]:
        return dict(
            frames=self.frames, body_seg=self.body_seg, depth0=self.depth0, body_pos=self.body_pos,
            body_rot=self.body_rot, actions=self.actions, env_reward=self.env_reward,
            success=self.success, task=np.array(self.task), seed=np.array(self.seed),
            body_names=np.array(self.body_names), noisy=np.array(self.noisy),
            format_version=np.array(FORMAT_VERSION), **self.camera.to_arrays(),
            **({} if self.proprio is None else {"proprio": self.proprio}),
        )

    def save(self, path: str | Path) -> Path:
        return atomic_save_npz(path, **self.to_arrays())

    @classmethod
    def load(cls, path: str | Path) -> "Demo":
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        return cls(
            frames=d["frames"], body_seg=d["body_seg"], depth0=d["depth0"], body_pos=d["body_pos"],
            body_rot=d["body_rot"], actions=d["actions"], env_reward=d["env_reward"],
            success=d["success"].astype(bool), camera=Camera.from_arrays(d), task=str(d["task"]),
            seed=int(d["seed"]), body_names=tuple(str(b) for b in d["body_names"]),
            noisy=bool(d["noisy"]), proprio=d.get("proprio"),
        )


@runtime_checkable
class Recorder(Protocol):
    """What :func:`rollout_expert` keeps of one trajectory; the rollout itself (reset, expert,
    clipping, stopping rule) is the same whatever is recorded.

    ``start(env)`` is called right after the reset (frame 0), ``record(action, info)`` after every
    step (``info`` has ``env_reward`` and ``success``), ``demo(seed, noisy)`` once at the end.
    ``start`` begins a new trajectory, so one recorder serves many rollouts.
    """

    def start(self, env: TaskEnv) -> None: ...

    def record(self, action: np.ndarray, info: dict) -> None: ...

    def demo(self, seed: int, noisy: bool = False) -> Demo: ...


class _StepRecorder:
    """The part both recorders share: actions, simulator reward, success and body poses per step."""

    def start(self, env: TaskEnv) -> None:
        self.env = env
        self.pos, self.rot, self.proprio = [], [], []
        self.actions, self.rewards, self.success = [], [], []

    def _poses(self) -> None:
        p, r = self.env.body_poses()
        self.pos.append(p)
        self.rot.append(r)

    def _observe(self) -> None:
        """What is kept of the frame after a step."""
        self._poses()

    def record(self, action: np.ndarray, info: dict) -> None:
        self.actions.append(np.asarray(action, np.float32).reshape(-1))
        self.rewards.append(info["env_reward"])
        self.success.append(info["success"])
        self._observe()

    def _demo(self, seed: int, noisy: bool, frames: np.ndarray, body_seg: np.ndarray) -> Demo:
        env = self.env
        return Demo(
            frames=frames, body_seg=body_seg, depth0=self.depth0.astype(np.float32), body_pos=np.stack(self.pos),
            body_rot=np.stack(self.rot),
            actions=np.stack(self.actions) if self.actions else np.zeros((0, env.action_space.shape[0]), np.float32),
            env_reward=np.asarray(self.rewards, np.float32), success=np.asarray(self.success, bool),
            camera=env.camera, task=env.task.name, seed=seed, body_names=env.body_names, noisy=noisy,
            proprio=np.stack(self.proprio).astype(np.float32) if self.proprio else None,
        )


class FrameRecorder(_StepRecorder):
    """The full demo (the default): RGB frame, body segmentation, body poses and the robot's own
    state (``Demo.proprio``) of every frame, and frame 0's depth."""

    def start(self, env: TaskEnv) -> None:
        super().start(env)
        self.frames, self.segs = [], []
        self._observe()
        self.depth0 = env.depth()

    def _observe(self) -> None:
        self.frames.append(self.env.frame())
        self.segs.append(self.env.body_segmentation())
        self._poses()
        if self.env.proprio_dim:  # the full demo only: the lean plan path never reads it
            self.proprio.append(self.env.proprio())

    def demo(self, seed: int, noisy: bool = False) -> Demo:
        return self._demo(seed, noisy, np.stack(self.frames).astype(np.uint8), np.stack(self.segs).astype(np.int16))


class PoseRecorder(_StepRecorder):
    """The lean, keypoint-only record: frame 0's body segmentation and depth (two render passes a
    trajectory, no RGB) and the body poses of every step, besides actions, rewards and success --
    what the sim segmenter and sim tracker read, so a plan made from it equals the full demo's.

    In its :class:`Demo`, ``frames`` is a read-only all-black stand-in of the right shape and
    ``body_seg`` repeats frame 0's (broadcast views, no copies); ``seg0`` and ``depth0`` stay on
    the recorder for the caller.
    """

    def start(self, env: TaskEnv) -> None:
        super().start(env)
        self.seg0 = np.asarray(env.body_segmentation()).astype(np.int16)
        self.depth0 = np.asarray(env.depth()).astype(np.float32)
        self._poses()

    def demo(self, seed: int, noisy: bool = False) -> Demo:
        n, (h, w) = len(self.pos), self.seg0.shape
        return self._demo(seed, noisy, np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (n, h, w, 3)),
                          np.broadcast_to(self.seg0, (n, h, w)))


def rollout_expert(env: TaskEnv, seed: int, noise: float = 0.0, recorder: Recorder | None = None) -> Demo | None:
    """Run the task's expert from ``env.reset(seed)`` and record it with ``recorder`` (default: a
    new :class:`FrameRecorder`, the full demo; :class:`PoseRecorder` keeps what keypoints need).

    Meta-World: the scripted policy (actions clipped to [-1, 1]), stopped ``post_success_steps``
    steps after the first successful one, or at the horizon. ManiSkill: the motion planner (returns
    ``None`` when planning fails for this seed). ``noise`` (ManiSkill only) adds Gaussian noise to
    the joint targets.
    """
    spec = env.task
    rec = recorder if recorder is not None else FrameRecorder()
    env.reset(seed=seed)
    rec.start(env)
    if spec.suite == "metaworld":
        from metaworld.policies import ENV_POLICY_MAP

        policy = ENV_POLICY_MAP[spec.env_id]()
        first_success = None  # the step of the first success; the expert runs post_success_steps more
        for t in range(spec.horizon):
            action = np.clip(policy.get_action(env.state()), -1, 1)
            _, _, _, trunc, info = env.step(action)
            rec.record(action, info)
            if info["success"] and first_success is None:
                first_success = t
            if trunc or (first_success is not None and t - first_success >= spec.post_success_steps):
                break
        return rec.demo(seed)
    from mani_skill.examples.motionplanning.panda import solutions

    solver = getattr(solutions, f"solve{spec.env_id.split('-')[0]}", None)
    if solver is None:
        raise ValueError(f"task '{spec.name}': no ManiSkill motion-planning solution for {spec.env_id}")
    rng = np.random.default_rng(seed)
    steps = [0]

    def on_step(action: np.ndarray, info: dict) -> None:
        steps[0] += 1
        rec.record(action, info)

    planner_env = env.planner_env(on_step=on_step, action_noise=noise, rng=rng)
    try:  # the planner resets the env with the same seed: the same state as frame 0 (deterministic)
        result = solver(planner_env, seed=seed, debug=False, vis=False)
    except Exception as e:  # planners raise on unreachable goals
        if not isinstance(e, (RuntimeError, ValueError, AssertionError)):
            raise
        result = -1
    if isinstance(result, int) and result == -1 or not steps[0]:
        return None
    return rec.demo(seed, noisy=noise > 0)


def _versions() -> dict[str, str]:
    return package_versions(("metaworld", "mujoco", "mani-skill", "sapien", "gymnasium", "numpy", "torch"))


def demo_dir(task: str | TaskSpec, kind: str = "expert") -> Path:
    """Folder of a task's demos of one kind, keyed by the settings that make them."""
    spec = get_task(task)
    if kind not in KINDS:
        raise ValueError(f"demo kind must be one of {KINDS}, got {kind!r}")
    if kind == "offline" and not spec.offline:
        raise ValueError(f"task '{spec.name}' has no offline control dataset (only ManiSkill tasks do)")
    payload = {"task": spec.to_dict(), "kind": kind,
               "format": OFFLINE_FORMAT_VERSION if kind == "offline" else FORMAT_VERSION}
    if SIM_REVISION.get(spec.suite):  # absent for suites never revised, so their caches stay valid
        payload["sim_revision"] = SIM_REVISION[spec.suite]
    key = settings_hash(payload)
    return cache_dir() / "demos" / spec.name / f"{kind}-{key}"


def _targets(spec: TaskSpec, kind: str, n: int) -> list[tuple[str, float]]:
    """File names and noise levels to produce: expert_000.. or (offline) 100 expert + 100 noisy."""
    if kind == "expert":
        return [(f"expert_{i:03d}", 0.0) for i in range(n)]
    half = n // 2
    return [(f"expert_{i:03d}", 0.0) for i in range(half)] + [
        (f"noisy_{i:03d}", spec.offline_noise) for i in range(n - half)
    ]


def make_demos(task: str | TaskSpec, n: int | None = None, kind: str = "expert",
               progress: bool = True, max_new: int | None = None) -> Path:
    """Make (or finish making) ``n`` trajectories of a task; returns their folder.

    Expert trajectories keep successes only and count the seeds tried; noisy ones are kept
    whatever their outcome. Resumable trajectory by trajectory: each one is written atomically as
    soon as it is recorded (then ``meta.json``), a rerun records only the missing ones, an
    interrupted run loses at most the trajectory in flight, and no seed is recorded twice (a file
    written just before an interruption, not yet in ``meta.json``, is entered from its own arrays).
    ``max_new`` records at most that many this call (several sittings); the offline set is recorded
    expert/noisy alternately, so a partial set already holds both halves.
    """
    spec = get_task(task)
    n = n if n is not None else (100 if kind == "expert" else 200)
    out = demo_dir(spec, kind)
    out.mkdir(parents=True, exist_ok=True)
    # one maker per folder at a time (parallel test workers, concurrent sweeps): no double work
    with FileLock(str(out) + ".lock"):
        return _make_demos_locked(spec, n, kind, out, progress, max_new)


def demos_missing(task: str | TaskSpec, n: int | None = None, kind: str = "expert") -> int:
    """How many of the first ``n`` trajectories of a kind are not stored yet (files present count as
    stored; :func:`make_demos` checks them)."""
    spec = get_task(task)
    n = n if n is not None else (100 if kind == "expert" else 200)
    out = demo_dir(spec, kind)
    return sum(not (out / f"{name}.npz").exists() for name, _ in _targets(spec, kind, n))


def _usable(path: Path) -> bool:
    """The demo file exists and is intact; a damaged one is moved to quarantine (False)."""
    try:
        seen = path.stat()
        problem = npz_problem(path, ARRAYS)
    except FileNotFoundError:
        return False
    if problem is None:
        return True
    quarantine(path, problem, seen, then="it is made again from its recorded seed")
    return False


def _file_entry(path: Path, spec: TaskSpec) -> dict:
    """A demo file's ``meta.json`` entry, read from its own arrays."""
    with np.load(path) as z:
        return {"seed": int(z["seed"]), "length": len(z["actions"]), "success": bool(z["success"].any()),
                "noise": spec.offline_noise if bool(z["noisy"]) else 0.0}


def _read_meta(out: Path, spec: TaskSpec, kind: str) -> dict:
    """The folder's meta.json; a new one when there is none, rebuilt from the intact demo files
    (their seeds, lengths, outcomes) when it is damaged."""
    meta_path = out / "meta.json"
    meta = {"task": spec.to_dict(), "kind": kind, "format_version": FORMAT_VERSION, "files": {},
            "versions": _versions(), "seeds_tried": 0, "failed_seeds": []}
    try:
        old = read_json(meta_path)
        if isinstance(old, dict) and isinstance(old.get("files"), dict) and "seeds_tried" in old:
            return old
        problem = "not a demo folder's meta.json"
    except FileNotFoundError:
        return meta
    except (ValueError, UnicodeDecodeError) as e:
        problem = f"not valid JSON: {e}"
    quarantine(meta_path, problem, then="rebuilt from the demo files")
    _enter_unlisted(out, spec, meta)
    meta["seeds_tried"] = len(meta["files"])
    atomic_write_json(meta_path, meta)
    return meta


def _enter_unlisted(out: Path, spec: TaskSpec, meta: dict) -> int:
    """Enter into ``meta`` the intact demo files it does not list (a run stopped between writing a
    file and its meta.json), from their own arrays, so that their seeds are not handed out again.
    Returns how many were entered."""
    entered = 0
    for path in sorted(out.glob("*.npz")):
        if path.stem not in meta["files"] and _usable(path):
            meta["files"][path.stem] = _file_entry(path, spec)
            meta["seeds_tried"] += 1
            entered += 1
    return entered


def _recording_order(todo: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """expert_000, noisy_000, expert_001, ...: a partly recorded offline set holds both halves."""
    return sorted(todo, key=lambda t: (int(t[0].rsplit("_", 1)[1]), t[0]))


def _make_demos_locked(spec: TaskSpec, n: int, kind: str, out: Path, progress: bool,
                       max_new: int | None = None) -> Path:
    meta_path = out / "meta.json"
    meta = _read_meta(out, spec, kind)
    if _enter_unlisted(out, spec, meta):
        atomic_write_json(meta_path, meta)
    targets = _targets(spec, kind, n)
    todo = _recording_order([(name, noise) for name, noise in targets if not _usable(out / f"{name}.npz")])
    done = len(targets) - len(todo)
    if max_new is not None:
        todo = todo[:max(0, int(max_new))]
    if not todo:
        return out
    env = make_env(spec)
    base = 0 if kind == "expert" else OFFLINE_SEED_BASE
    used = {int(v["seed"]) for v in meta["files"].values()} | set(meta["failed_seeds"])
    seed = base
    t0 = time.time()
    bar = tqdm(total=len(targets), initial=done, desc=f"{kind} {spec.name}", disable=not progress, unit="traj")
    try:
        for name, noise in todo:
            # a file moved to quarantine is made again from its recorded seed: the same demo
            again = meta["files"].get(name, {}).get("seed")
            while True:
                if again is not None:
                    seed_now, again = int(again), None
                else:
                    while seed in used:
                        seed += 1
                    used.add(seed)
                    seed_now = seed
                    meta["seeds_tried"] += 1
                demo = rollout_expert(env, seed_now, noise=noise)
                ok = demo is not None and (noise > 0 or demo.succeeded)
                if ok:
                    break
                if seed_now not in meta["failed_seeds"]:
                    meta["failed_seeds"].append(seed_now)
                atomic_write_json(meta_path, meta)  # a failed seed is not tried again after a stop
            demo.save(out / f"{name}.npz")
            meta["files"][name] = {"seed": seed_now, "length": demo.length, "success": demo.succeeded,
                                   "noise": noise}
            meta["seconds"] = meta.get("seconds", 0.0) + (time.time() - t0)
            t0 = time.time()
            atomic_write_json(meta_path, meta)
            bar.update(1)
            bar.set_postfix(tries=meta["seeds_tried"], s_per_traj=round(meta["seconds"] / len(meta["files"]), 1))
    finally:
        bar.close()
        env.close()
    return out


def load_demos(task: str | TaskSpec, kind: str = "expert", n: int | None = None,
               make: bool = True, progress: bool = True) -> list[Demo]:
    """Load a task's demos (making the missing ones first unless ``make=False``, with a progress
    bar unless ``progress=False``: a run started with ``--no-progress`` writes no bar to its log)."""
    spec = get_task(task)
    n_default = 100 if kind == "expert" else 200
    want = n if n is not None else n_default
    d = demo_dir(spec, kind)
    names = [name for name, _ in _targets(spec, kind, want)]
    loaded: dict[str, Demo] = {}
    for attempt in range(3):  # a damaged file is moved aside and made again, then loaded again
        missing = [x for x in names if x not in loaded and not (d / f"{x}.npz").exists()]
        if missing:
            if not make:
                raise FileNotFoundError(
                    f"{len(missing)} {kind} demos of '{spec.name}' are missing in {d}; "
                    f"make them with `relam demos make {spec.name} --kind {kind}`")
            make_demos(spec, n=want, kind=kind, progress=progress)
        for x in names:
            path = d / f"{x}.npz"
            if x in loaded:
                continue
            try:
                seen = path.stat()
                loaded[x] = Demo.load(path)
            except FileNotFoundError:
                continue  # moved aside by another process just now: made again on the next pass
            except NPZ_ERRORS as e:
                if attempt == 2:
                    raise OSError(f"demo {path} is unreadable ({type(e).__name__}: {e}) and was not "
                                  f"replaced; delete it and run `relam demos make {spec.name}`") from e
                quarantine(path, f"{type(e).__name__}: {e}", seen,
                           then="it is made again from its recorded seed" if make else
                           f"make it again with `relam demos make {spec.name} --kind {kind}`")
        if len(loaded) == len(names):
            return [loaded[x] for x in names]
    raise FileNotFoundError(f"{len(names) - len(loaded)} {kind} demos of '{spec.name}' keep disappearing "
                            f"from {d} (another process moving them?); run `relam demos make {spec.name}`")


def summarize(task: str | TaskSpec, kind: str = "expert") -> dict:
    """Counts, lengths, success and timing of a task's stored demos (from meta.json)."""
    d = demo_dir(task, kind)
    meta = read_json(d / "meta.json")
    files = meta["files"]
    lengths = [f["length"] for f in files.values()]
    noisy = [f for f in files.values() if f["noise"] > 0]
    return {
        "task": get_task(task).name, "kind": kind, "folder": str(d), "count": len(files),
        "seeds_tried": meta["seeds_tried"], "failed_seeds": len(meta["failed_seeds"]),
        "length_mean": float(np.mean(lengths)) if lengths else 0.0,
        "length_min": int(min(lengths)) if lengths else 0, "length_max": int(max(lengths)) if lengths else 0,
        "noisy_count": len(noisy), "noisy_success_rate": float(np.mean([f["success"] for f in noisy])) if noisy else None,
        "seconds": round(meta.get("seconds", 0.0), 1),
        "seconds_per_trajectory": round(meta.get("seconds", 0.0) / len(files), 1) if files else None,
    }


def demo_strip(demo: Demo, n: int = 8) -> np.ndarray:
    """``n`` evenly spaced frames of a demo side by side (the viewer's picture)."""
    idx = np.linspace(0, len(demo.frames) - 1, n).round().astype(int)
    return np.concatenate([demo.frames[i] for i in idx], axis=1)


def save_view(demo: Demo, out: str | Path, n: int = 8) -> Path:
    """Write a demo as a PNG strip or, for a ``.gif`` path, an animation."""
    import imageio.v2 as imageio

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":
        imageio.mimsave(out, list(demo.frames), duration=0.05)
    else:
        imageio.imwrite(out, demo_strip(demo, n))
    return out


if __name__ == "__main__":  # `python -m relam.demos` is `relam demos` (the parsing is in relam.cli)
    import sys

    from relam.cli import main

    raise SystemExit(main(["demos", *sys.argv[1:]]))
