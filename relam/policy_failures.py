"""Where a trained ReLAM policy stops: its evaluation episodes replayed, each with a verdict.

``relam failures SPEC --scale S --task T --method M --seed N`` loads the checkpoint a finished
online run left (the cell is found as ``relam gif`` finds it: :func:`relam.policy_gif.find_policy_run`)
and plays the run's own evaluation episodes (:func:`relam.rl.evaluation.eval_seeds`, the mean
action) in the run's own environment (:func:`relam.relam_method.online_env`: points-only runs
render nothing after reset), batched over as many envs as the run's evaluations used, so that
``--episodes`` equal to the run's ``eval_episodes`` gives the episodes of its final evaluation.
Each episode gets one verdict:

- ``success`` -- the simulator reported success;
- ``plan met, no success`` -- every subgoal was met and the task was not done: the reward's "done"
  is not the task's (on a ground-truth plan, ``expert_missed`` says whether the scripted expert
  itself failed from that start, so that the plan leads nowhere);
- ``stopped, object behind`` -- at the end the arm points are within the target's threshold and
  only the object's point(s) are not: the hand is where the plan's hand is *in the image*, and the
  object did not follow (on one camera view this is the hand off along the line of sight);
- ``stopped, arm off`` -- an arm point is beyond the threshold at the end.

Why a command: sessions of this project diagnosed door-open (the hand 2-4 cm above the handle on its
line of sight), PickCube and button-press-wall by hand with throw-away scripts; each found a
reason the reward's stages and the task's success part ways. The per-episode table (printed and
written as CSV next to the GIFs, ``<cache>/reports/<spec>/<scale>/policy/..failures.csv``) is that
diagnosis, reproducible from the store. The verdicts describe where an episode ended, not why.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relam.cache import atomic_write_bytes

__all__ = ["VERDICTS", "EpisodeVerdict", "EpisodeVerdicts", "default_failures_path", "diagnose_run",
           "policy_failures", "verdict_counts"]

#: the verdicts, in the order the summary lists them
VERDICTS = ("success", "plan met, no success", "stopped, object behind", "stopped, arm off")


@dataclass
class EpisodeVerdict:
    """One replayed evaluation episode: how far it got and what was off at its end."""

    seed: int
    success: bool
    success_step: int | None  #: the first step the simulator reported success (None: never)
    met: int  #: subgoals met
    n_subgoals: int
    #: ground-truth plans: the scripted expert failed from this start (None: the plan is not ground truth)
    expert_missed: bool | None
    closest_last_px: float  #: over the episode, the least of the farthest keypoint's distance to the last subgoal
    theta_px: float  #: the threshold of the target at the end (px)
    end_px: list[float] = field(default_factory=list)  #: each keypoint's distance to that target at the end
    points: list[str] = field(default_factory=list)  #: what each keypoint is on (a body name, or "point i")
    object_points: list[int] = field(default_factory=list)  #: which keypoints are on the object
    length: int = 0

    @property
    def off(self) -> list[int]:
        """The keypoints beyond the threshold at the end."""
        return [i for i, d in enumerate(self.end_px) if d >= self.theta_px]

    @property
    def verdict(self) -> str:
        if self.success:
            return VERDICTS[0]
        if self.met >= self.n_subgoals:
            return VERDICTS[1]
        off = self.off
        if off and set(off) <= set(self.object_points):
            return VERDICTS[2]
        return VERDICTS[3]

    def row(self) -> dict[str, Any]:
        return {"seed": self.seed, "verdict": self.verdict, "success": self.success,
                "success_step": "" if self.success_step is None else self.success_step,
                "met": self.met, "n_subgoals": self.n_subgoals,
                "expert_missed": "" if self.expert_missed is None else self.expert_missed,
                "closest_last_px": round(self.closest_last_px, 2), "theta_px": self.theta_px,
                "end_px": " ".join(f"{d:.1f}" for d in self.end_px), "points": " ".join(self.points),
                "length": self.length}

    def line(self) -> str:
        """One printed line: the verdict, the stage, and each point's distance at the end."""
        got = f"success at step {self.success_step}" if self.success else self.verdict
        pts = ", ".join(f"{n} {d:.1f}" for n, d in zip(self.points, self.end_px))
        extra = " (the scripted expert fails from this start)" if self.expert_missed else ""
        return (f"  episode seed {self.seed}: {got}{extra}; met {self.met}/{self.n_subgoals}; px to the target "
                f"at the end (threshold {self.theta_px:g}): {pts}; closest to the last subgoal "
                f"{self.closest_last_px:.1f} px")


def _relam_wrapper(env: Any) -> Any:
    w = env
    while not hasattr(w, "reward_fn"):
        if not hasattr(w, "env"):
            raise TypeError(f"{type(env).__name__} wraps no ReLAMWrapper")
        w = w.env
    return w


def _point_names(wrapper: Any, spec: Any) -> tuple[list[str], list[int]]:
    """What each keypoint is on, and which are the object's: from the sim tracker's bodies and the
    task's object prompt; without body names (a pixel tracker) point 0 is the object's, as
    farthest-point sampling starts from the object's most-moving pixel."""
    n = int(wrapper.n_points)
    bodies = getattr(wrapper.tracker, "bodies", None)
    names = getattr(wrapper.env.unwrapped, "body_names", None)
    if bodies is None or names is None:
        return [f"point {i}" for i in range(n)], [0]
    out = [str(names[int(b)]) for b in bodies]
    obj = set(spec.prompts.get(spec.object_prompt, ()))
    return out, [i for i, b in enumerate(out) if b in obj] or [0]


class EpisodeVerdicts:
    """An :data:`relam.rl.evaluation.Observer` that gives each episode it sees an :class:`EpisodeVerdict`
    (``verdicts``, by episode seed): the closest the farthest keypoint came to the last subgoal, the
    first step of success, and where the episode ended."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.verdicts: dict[int, EpisodeVerdict] = {}
        self._open: dict[int, dict[str, Any]] = {}

    def __call__(self, env: Any, seed: int, steps: int, info: dict, done: bool) -> None:
        if steps == 0:  # the episode's wrapper and last subgoal, found once
            w = _relam_wrapper(env)
            self._open[seed] = {"wrapper": w, "last": w.reward_fn.tracker.subgoals[-1], "closest": np.inf,
                                "success_step": None}
        ep = self._open[seed]
        w = ep["wrapper"]
        ep["closest"] = min(ep["closest"], float(np.linalg.norm(w.keypoints_ - ep["last"], axis=-1).max()))
        if steps and ep["success_step"] is None and info.get("success"):
            ep["success_step"] = steps
        if not done:
            return
        del self._open[seed]
        tracker = w.reward_fn.tracker
        points, obj = _point_names(w, self.spec)
        index = min(tracker.stage, tracker.n_subgoals - 1)
        missed = getattr(w.planner, "expert_missed", None)
        self.verdicts[seed] = EpisodeVerdict(
            seed=int(seed), success=ep["success_step"] is not None, success_step=ep["success_step"],
            met=int(tracker.stage), n_subgoals=int(tracker.n_subgoals),
            expert_missed=None if missed is None else bool(missed(self.spec.name, seed)),
            closest_last_px=ep["closest"], theta_px=tracker.threshold(index),
            end_px=[float(d) for d in np.linalg.norm(w.keypoints_ - tracker.target, axis=-1)],
            points=points, object_points=obj, length=int(steps))


def diagnose_run(run: Any, ckpt: str | Path, episodes: int) -> list[EpisodeVerdict]:
    """Play ``episodes`` evaluation episodes of ``run``'s checkpoint as its evaluations did (the mean
    action, on as many of the run's environments at once, :func:`relam.rl.evaluation.eval_env_count`)
    and give each a verdict. With ``episodes`` the run's ``eval_episodes`` these are the episodes of
    its final evaluation."""
    from relam.policy_gif import PolicyGifError, load_policy, run_context
    from relam.relam_method import make_planner, online_env
    from relam.rl.evaluation import eval_env_count, eval_seeds, evaluate_success

    if int(episodes) < 1:
        raise PolicyGifError(f"--episodes {episodes}: must be >= 1")
    ctx = run_context(run, Path(ckpt).parent)
    model = load_policy(ckpt)
    envs = [online_env(ctx, make_planner(ctx)) for _ in range(eval_env_count(ctx.ppo_settings().n_envs, episodes))]
    try:
        missing = set(model.observation_space.spaces) ^ set(envs[0].observation_space.spaces)
        if missing:
            raise PolicyGifError(f"the checkpoint {ckpt} observes {sorted(model.observation_space.spaces)} but "
                                 f"the run's environment gives {sorted(envs[0].observation_space.spaces)}")
        seeds = eval_seeds(int(episodes))
        verdicts = EpisodeVerdicts(ctx.task_spec())
        evaluate_success(model, envs, seeds, deterministic=True, observe=verdicts)
        return [verdicts.verdicts[s] for s in seeds]
    finally:
        for env in envs:
            env.close()


def verdict_counts(eps: list[EpisodeVerdict]) -> dict[str, int]:
    """How many episodes got each verdict (every verdict listed, zeros included)."""
    return {v: sum(e.verdict == v for e in eps) for v in VERDICTS}


def default_failures_path(spec: Any, scale: str, task: str, label: str, seed: int) -> Path:
    """Where ``relam failures`` writes a cell's table: beside its GIF, as ``.failures.csv``."""
    from relam.policy_gif import default_gif_path

    return default_gif_path(spec, scale, task, label, seed).with_suffix(".failures.csv")


def policy_failures(spec: Any, scale: str, task: str | None = None, label: str | None = None,
                    seed: int | None = None, episodes: int = 30, out: str | Path | None = None,
                    store: Any = None) -> tuple[Path, list[EpisodeVerdict], Any]:
    """Find the cell's run (:func:`relam.policy_gif.find_policy_run`), replay its evaluation
    episodes (:func:`diagnose_run`) and write the table to ``out`` (CSV, atomically)."""
    from relam.policy_gif import find_policy_run

    run, _, ckpt = find_policy_run(spec, scale, task, label, seed, store)
    eps = diagnose_run(run, ckpt, episodes)
    path = Path(out) if out is not None else default_failures_path(spec, scale, run.task, run.label, run.seed)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(eps[0].row()))
    writer.writeheader()
    writer.writerows(e.row() for e in eps)
    atomic_write_bytes(path, buf.getvalue().encode())
    return path, eps, run
