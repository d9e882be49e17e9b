"""A GIF of a trained ReLAM policy: its evaluation episodes with the keypoints and subgoals drawn.

``relam gif SPEC --scale S --task T --method M --seed N`` finds the spec's run of that cell, loads
the PPO checkpoint the run left in its work folder (``<cache>/results/work/<key>/checkpoint.zip``,
the policy after the run's last evaluation), and plays evaluation episodes -- the same seeded
episodes as the run's own evaluation (:func:`relam.rl.evaluation.eval_seeds`), the policy acting
deterministically -- in the run's environment, built with rendering on (a points-only run renders
nothing after reset while it trains). The episodes are played one at a time; the run's evaluations
batched them over several envs, and where float rounding of the batched prediction decides an
episode (one of 10 on a button image run) its GIF may end otherwise (``relam failures`` plays them
batched). Each frame shows the current keypoints, the subgoals the
planner gave for the episode and the current target among them, the stage and success
(:func:`relam.overlay.draw_policy_frame`).

The GIF goes to ``<cache>/reports/<spec>/<scale>/policy/<task>__<label>__seed<N>.gif`` (or
``--out``) with a ``.json`` beside it naming the run's key and each episode's outcome;
``relam report`` embeds the GIFs it finds there whose run key is the cell's current one.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from relam.cache import atomic_write_bytes, atomic_write_json, read_json

__all__ = ["PolicyGifError", "PolicyEpisode", "default_gif_path", "find_policy_run", "gif_for_run",
           "load_policy", "policy_env", "policy_gif", "rollout", "run_context"]

#: the methods whose runs leave a PPO checkpoint with keypoints and subgoals to draw
GIF_METHODS = ("relam",)


class PolicyGifError(ValueError):
    """No GIF can be made for the cell asked for; ``fix`` says which command makes what is missing."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.fix = fix


@dataclass
class PolicyEpisode:
    """One rendered evaluation episode: the drawn frames and its outcome."""

    seed: int
    frames: list[np.ndarray] = field(default_factory=list)
    success: bool = False
    stage: int = 0
    n_subgoals: int = 0
    length: int = 0
    ret: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"seed": self.seed, "success": self.success, "stage": self.stage,
                "n_subgoals": self.n_subgoals, "length": self.length, "return": round(self.ret, 3)}


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "method"


def default_gif_path(spec: Any, scale: str, task: str, label: str, seed: int, root: str | Path | None = None) -> Path:
    """Where ``relam gif`` writes a cell's GIF by default (``root``: a reports folder of the spec)."""
    from relam.experiments.reports import report_dir

    base = Path(root) if root is not None else report_dir(spec, scale)
    return base / "policy" / f"{task}__{_slug(label)}__seed{int(seed)}.gif"


def _run_command(spec: Any, scale: str, task: str, label: str, seed: int, *extra: str) -> str:
    return shlex.join(["relam", "run", spec.name, "--scale", scale, "--tasks", task, "--methods", label,
                       "--seeds", str(seed), *extra])


def find_policy_run(spec: Any, scale: str, task: str | None = None, label: str | None = None,
                    seed: int | None = None, store: Any = None) -> tuple[Any, dict[str, Any], Path]:
    """The run of one cell of ``spec`` at ``scale``, its finished record and its checkpoint path.

    ``task`` defaults to the spec's first Meta-World task, ``label`` to its first ReLAM column and
    ``seed`` to the scale's first seed. Raises :class:`PolicyGifError` naming what is missing and
    the command that makes it.
    """
    from relam.experiments.runner import expand
    from relam.experiments.store import ResultStore

    store = store or ResultStore()
    online = [t for t in spec.tasks if spec.suite_of(t) == "metaworld"]
    gif_labels = [m.label for m in spec.methods if m.method in GIF_METHODS]
    if task is None:
        if not online:
            raise PolicyGifError(f"spec {spec.name} has no Meta-World task: only online (PPO) runs leave a "
                                 "policy checkpoint to play", fix="pick a spec with a Meta-World task, e.g. headline")
        task = online[0]
    elif task not in spec.tasks:
        raise PolicyGifError(f"--task {task!r} is not in spec {spec.name}", fix=f"its tasks: {', '.join(spec.tasks)}")
    elif task not in online:
        raise PolicyGifError(f"--task {task!r} is a {spec.suite_of(task)} task, trained offline (IQL): only "
                             "Meta-World runs leave a PPO checkpoint to play",
                             fix=f"its Meta-World tasks: {', '.join(online) or 'none'}")
    if label is None:
        if not gif_labels:
            raise PolicyGifError(f"spec {spec.name} has no ReLAM column: the GIF draws ReLAM's keypoints and "
                                 "subgoals", fix="pick a spec with a method: relam entry, e.g. headline")
        label = gif_labels[0]
    elif label not in spec.labels():
        by_method = [m.label for m in spec.methods if m.method == label]
        if len(by_method) != 1:
            raise PolicyGifError(f"--method {label!r} is not a column of spec {spec.name}",
                                 fix=f"its ReLAM columns: {', '.join(gif_labels) or 'none'}")
        label = by_method[0]
    if spec.entry(label).method not in GIF_METHODS:
        raise PolicyGifError(f"--method {label!r} is method {spec.entry(label).method!r}: the GIF draws ReLAM's "
                             "keypoints and subgoals, which only ReLAM runs have",
                             fix=f"its ReLAM columns: {', '.join(gif_labels) or 'none'}")
    seeds = spec.seeds_at(scale)
    if seed is None:
        seed = seeds[0]
    elif int(seed) not in seeds:
        raise PolicyGifError(f"--seed {seed} is not a seed of spec {spec.name} at scale {scale}",
                             fix=f"its seeds at {scale}: {', '.join(map(str, seeds))}")
    [run] = [r for r in expand(spec, scale) if r.task == task and r.label == label and r.seed == int(seed)]
    rec = store.get(run.key)
    if rec is None:
        raise PolicyGifError(f"{spec.name} [{scale}] {task} / {label} / seed {seed} has no record yet (run "
                             f"{run.key})", fix="train it first: " + _run_command(spec, scale, task, label, seed))
    if rec.get("status") != "ok":
        raise PolicyGifError(f"{spec.name} [{scale}] {task} / {label} / seed {seed} failed: {rec.get('error')}",
                             fix="run it again: " + _run_command(spec, scale, task, label, seed, "--retry-failed"))
    ckpt = store.work_path(run.key) / "checkpoint.zip"
    if not ckpt.exists():
        raise PolicyGifError(
            f"{spec.name} [{scale}] {task} / {label} / seed {seed} has a finished record but no checkpoint "
            f"({ckpt} is missing): an imported record carries none (`relam export` leaves them out)",
            fix=f"make the GIF on the machine that trained it, or delete {store.record_path(run.key)} and run "
                + _run_command(spec, scale, task, label, seed))
    return run, rec, ckpt


def load_policy(ckpt: str | Path) -> Any:
    """The trained PPO model saved by :func:`relam.rl.ppo.train_ppo` (on the CPU)."""
    from relam.rl.ppo import HierarchicalPPO

    return HierarchicalPPO.load(str(ckpt), device="cpu")


def run_context(run: Any, out_dir: Path) -> Any:
    """The :class:`relam.methods.RunContext` that trained ``run`` (its settings, budget, seed)."""
    from relam.methods import Budget, RunContext, get_method

    method = get_method(run.method)
    return RunContext(task=run.task, method=run.method, settings=method.Settings(**run.settings), seed=run.seed,
                      budget=Budget(**run.budget), scale=run.scale, out_dir=out_dir, progress=False)


def policy_env(ctx: Any) -> tuple[Any, Any]:
    """The run's ReLAM environment (its task entry, horizon, planner, reward settings and policy
    input) with the simulator rendering every step; returns (env for the policy, the ReLAM wrapper)."""
    from relam.relam_method import make_planner, reward_settings
    from relam.tasks import make_env
    from relam.wrappers import RobotProprio, PolicyImageSize, ReLAMWrapper

    s = ctx.settings
    with_image = ctx.budget.sees_image
    base = make_env(ctx.task_spec(), seed=None, render=True)
    wrapper = ReLAMWrapper(base, make_planner(ctx), settings=reward_settings(ctx),
                           n_points=s.n_points, include_image=with_image, seed=ctx.seed)
    # the policy sees the image its training loop gave it: rendered at 64 px where the simulator
    # can (Meta-World, sim tracker: relam.wrappers.make_relam_env's "auto"), else area-averaged
    source = "render" if hasattr(base, "render_rgb_at") else "downsample"
    env = PolicyImageSize(wrapper, 64, source=source) if with_image else wrapper
    if ctx.budget.sees_proprio:
        env = RobotProprio(env)
    return env, wrapper


def rollout(model: Any, env: Any, wrapper: Any, seed: int, scale: int = 3, title: str | None = None,
            deterministic: bool = True) -> PolicyEpisode:
    """Play one episode from ``reset(seed=seed)`` and draw every frame (the reset frame included)."""
    from relam.overlay import draw_policy_frame

    obs, info = env.reset(seed=int(seed))
    ep = PolicyEpisode(seed=int(seed), n_subgoals=int(info["n_subgoals"]), success=bool(info.get("success")))
    frame = wrapper.env.unwrapped.frame

    def draw(t: int, stage: int) -> None:
        ep.frames.append(draw_policy_frame(frame(), wrapper.keypoints_, wrapper.plan_, stage, ep.success, t,
                                           scale=scale, title=title))

    draw(0, 0)
    while True:
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, r, terminated, truncated, info = env.step(action)
        ep.length += 1
        ep.ret += float(r)
        ep.success = ep.success or bool(info.get("success", False))
        ep.stage = max(ep.stage, int(info.get("stage", 0)))
        draw(ep.length, int(info.get("stage", 0)))
        if terminated or truncated:
            return ep


def gif_for_run(run: Any, ckpt: str | Path, out: str | Path, episodes: int = 1, scale: int = 3,
                fps: float = 20.0, work_dir: str | Path | None = None) -> tuple[Path, list[PolicyEpisode]]:
    """Write the GIF of ``episodes`` evaluation episodes of ``run``'s checkpoint to ``out`` (with
    ``out``'s ``.json``: the run key and the episodes' outcomes); the last frame of each episode is
    held for a second."""
    from relam.overlay import gif_bytes
    from relam.rl.evaluation import eval_seeds

    out = Path(out)
    if out.suffix.lower() != ".gif":
        raise PolicyGifError(f"--out {out}: the file must end in .gif")
    if int(episodes) < 1:
        raise PolicyGifError(f"--episodes {episodes}: must be >= 1")
    ctx = run_context(run, Path(work_dir) if work_dir is not None else Path(ckpt).parent)
    model = load_policy(ckpt)
    env, wrapper = policy_env(ctx)
    try:
        missing = set(model.observation_space.spaces) ^ set(env.observation_space.spaces)
        if missing:
            raise PolicyGifError(f"the checkpoint {ckpt} observes {sorted(model.observation_space.spaces)} but "
                                 f"the run's environment gives {sorted(env.observation_space.spaces)}")
        eps = []
        for i, s in enumerate(eval_seeds(int(episodes))):
            title = f"{run.label or run.method} seed {run.seed}, episode {i + 1}/{episodes}"
            eps.append(rollout(model, env, wrapper, s, scale=scale, title=title))
    finally:
        env.close()
    frames: list[np.ndarray] = []
    for ep in eps:
        frames += ep.frames + [ep.frames[-1]] * int(round(fps))
    atomic_write_bytes(out, gif_bytes(frames, fps))
    state = Path(ckpt).parent / "state.json"
    steps = read_json(state).get("num_timesteps") if state.exists() else None
    atomic_write_json(out.with_suffix(".json"), {
        "key": run.key, "spec": run.spec, "scale": run.scale, "task": run.task, "label": run.label,
        "method": run.method, "seed": run.seed, "checkpoint": str(ckpt), "checkpoint_steps": steps,
        "episodes": [e.summary() for e in eps], "frames": len(frames), "fps": fps,
        "made_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return out, eps


def policy_gif(spec: Any, scale: str, task: str | None = None, label: str | None = None, seed: int | None = None,
               out: str | Path | None = None, episodes: int = 1, scale_px: int = 3, fps: float = 20.0,
               store: Any = None) -> tuple[Path, list[PolicyEpisode], Any]:
    """:func:`find_policy_run`, then :func:`gif_for_run` to ``out`` (default :func:`default_gif_path`)."""
    run, _, ckpt = find_policy_run(spec, scale, task, label, seed, store)
    out = Path(out) if out is not None else default_gif_path(spec, scale, run.task, run.label, run.seed)
    path, eps = gif_for_run(run, ckpt, out, episodes=episodes, scale=scale_px, fps=fps)
    return path, eps, run
