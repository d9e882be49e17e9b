"""Training throughput against the simulator's own speed, and the projected wall time of Table 4.

Why: learning at the budgets Meta-World needs (1M+ env steps) is bounded by how many env steps a
training loop turns over per second, and the loops ran far below what the simulator allows
(issue 21). This script measures, in ONE process and one run (so every ratio compares figures taken
under the same machine load), with one torch thread unless stated:

Raw env rates (steps/s, random actions, resets at the horizon included):
  * Meta-World drawer-open-v3 through :func:`relam.tasks.make_env`: no render; render at the
    task's 128 px; render at 64 px (a copy of the task entry with ``image_size=64``); and the
    expert-plan cost a training reset pays with :class:`relam.wrappers.GroundTruthSubgoals`
    (a scripted-expert rollout + keypoint extraction per new episode seed).
  * ManiSkill PushCube-v1 with ``render=True`` and ``render=False``, and ManiSkill's own
    state-only env (no camera) for reference; skipped with a note when SAPIEN cannot start
    (no Vulkan).

Training loops (each rate also as a ratio to the matching raw rate of this run):
  * points-only PPO: :func:`relam.rl.ppo.train_ppo`, ``PPOSettings(n_envs=8, log_std_init=-0.5,
    device="auto")`` on ``make_relam_env(task, GroundTruthSubgoals(), include_image=False)``;
    ratio over the raw no-render rate;
  * image + points PPO (``include_image=True, policy_image_size=64``); ratio of its rollout rate
    over the raw 128 px render rate and over the raw 64 px rate. ``--image-render`` picks where
    the 64 px policy image comes from (``make_relam_env(policy_render=...)``): ``auto`` (default;
    with the sim tracker on Meta-World the env renders it at 64 px, nothing at 128 px after reset)
    or ``downsample`` (a 128 px frame every step, area-averaged: the loop before issue 21 item 3);
    a comma-separated list times each in turn in this one run (keys ``image_*`` for the first,
    ``image_<mode>_*`` for the others), so the two are compared under the same load.
  Rollout collection and gradient updates are timed apart by an SB3 callback
  (``_on_rollout_start``/``_on_rollout_end``). The loop rate is env steps / (rollout + update)
  time; the end-to-end rate also counts ``train_ppo``'s set-up and its evaluations at step 0 and at
  the end (in a short run these dominate, so the loop rate is the figure to compare).
  No evaluation runs inside the timed loop; the final evaluation (with its checkpoint and plot
  writes) is timed apart and gives the cost of one evaluation episode. The first reset of every
  env (an expert plan each) falls in the set-up; later resets fall in the rollouts, so a run
  shorter than one episode per env (``--smoke``: 128 and 32 steps per env, horizon 200) times
  rollouts without any reset.
  * update cost against the number of torch threads: ``model.train()`` on the last filled rollout
    buffer of each trained model, per 1,000 env steps;
  * DACfO and Diffusion Reward relabelling cost per 1,000 steps (``bench_reward_cost.py cost``,
    imported), CPU;
  * IQL gradient steps/s (``bench_iql.py --speed``, imported), CPU.

Projection: from the measured per-step rates, the wall time of Table 4 at paper scale
(``experiments/table4.yaml``: Meta-World 3 tasks x 5 methods x 5 seeds x 1M image + points env
steps with their evaluations and the video baselines' relabelling; ManiSkill 2 tasks x 5 methods
x 5 seeds x 100k IQL gradient steps with their evaluations, the video baselines' labelling of the
offline set and DACfO's online phase before it) on one box of ``--cores`` cores (one run per core) and on a Ray cluster of
``--boxes`` such boxes. It is a projection from the rates measured HERE: each core is assumed to
run as fast as one idle core here (the image loop and its evaluations at their CPU-time rates),
and no GPU speed-up is assumed unless the PPO figures were measured on a GPU (``device`` in the
output).

CPU time: on a shared machine (other jobs at a higher priority) the wall-clock rates move with the
load from one minute to the next, so a ratio of two wall rates taken minutes apart can be off by
several times. Every raw Meta-World rate and every loop rate is therefore also taken in CPU
seconds of this process (``time.process_time``: its own threads, the software renderer's
included), and the ratios are printed both ways (``*_cpu`` keys). With one torch thread a CPU-time
rate is what one idle core would turn over; on a quiet machine the two agree.

Figures are printed; nothing is asserted. The last line printed is one JSON object with every
figure (``points_ppo_over_raw``, ``image_ppo_steps_per_s``, ...). On the shared machine run it
with ``nice``; ``--smoke`` (tiny counts) finishes in under a minute::

    MUJOCO_GL=egl nice -n 19 .venv/bin/python benchmarks/bench_throughput.py --smoke
    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_throughput.py --cores 16 --boxes 4
"""
from __future__ import annotations

import argparse
import dataclasses
import heapq
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402  (after MUJOCO_GL)

PARTS = ("raw", "maniskill", "points", "image", "threads", "reward", "iql")

#: step counts: ``--smoke`` and the default run
COUNTS = {
    "smoke": dict(raw_steps=300, render_steps=60, maniskill_steps=15, plan_seeds=2, points_steps=1024,
                  points_n_steps=512, image_steps=256, image_n_steps=256, eval_episodes=1, thread_epochs=1,
                  diffusion_steps=10, iql_steps=20),
    "full": dict(raw_steps=5000, render_steps=500, maniskill_steps=100, plan_seeds=6, points_steps=20000,
                 points_n_steps=2000, image_steps=4000, image_n_steps=2000, eval_episodes=2, thread_epochs=2,
                 diffusion_steps=100, iql_steps=200),
}


def _bench_module(name: str) -> Any:
    """Another benchmark script of this folder, imported (its functions reused, not copied)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- raw env rates


def _clock() -> tuple[float, float]:
    """(wall, CPU) seconds now: ``perf_counter`` and this process's ``process_time``."""
    return time.perf_counter(), time.process_time()


def step_rates(env: Any, n: int, seed: int = 0) -> tuple[float, float]:
    """(wall, CPU-time) steps/s of ``env`` over ``n`` uniform random actions (resets at the
    horizon included; a short warm-up first, so the first render and lazy set-up are not timed)."""
    space = env.action_space
    rng = np.random.default_rng(seed)
    acts = rng.uniform(space.low, space.high, (n,) + space.shape).astype(np.float32)
    env.reset(seed=seed)
    for a in acts[:5]:
        env.step(a)
    env.reset(seed=seed)
    episode = seed
    t0, c0 = _clock()
    for a in acts:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            episode += 1
            env.reset(seed=episode)
    t1, c1 = _clock()
    return n / (t1 - t0), n / max(c1 - c0, 1e-9)


def step_rate(env: Any, n: int, seed: int = 0) -> float:
    """Wall-clock steps/s of :func:`step_rates`."""
    return step_rates(env, n, seed)[0]


def raw_metaworld(task: str, c: dict) -> dict:
    from relam.tasks import get_task, make_env
    from relam.wrappers import GroundTruthSubgoals

    out: dict[str, Any] = {}
    for key, spec, render, n in (
        ("metaworld_norender_steps_per_s", get_task(task), False, c["raw_steps"]),
        ("metaworld_render128_steps_per_s", get_task(task), True, c["render_steps"]),
        ("metaworld_render64_steps_per_s", dataclasses.replace(get_task(task), image_size=64), True,
         c["render_steps"]),
    ):
        env = make_env(spec, render=render)
        try:
            out[key], out[key.replace("_steps_per_s", "_cpu_steps_per_s")] = step_rates(env, n)
        finally:
            env.close()
    gt = GroundTruthSubgoals()
    try:
        gt.plan(None, task, seed=10_000)  # builds the expert's env (once per run)
        t0 = time.perf_counter()
        for s in range(c["plan_seeds"]):
            gt.plan(None, task, seed=s)
        out["expert_plan_ms_per_reset"] = 1000 * (time.perf_counter() - t0) / c["plan_seeds"]
    finally:
        gt.close()
    return out


def raw_maniskill(task: str, c: dict) -> dict:
    """ManiSkill rates, or ``{"maniskill_error": ...}`` when the simulator cannot start."""
    from relam.tasks import get_task, make_env

    out: dict[str, Any] = {}
    try:
        for key, render in (("maniskill_render_steps_per_s", True), ("maniskill_norender_steps_per_s", False)):
            env = make_env(task, render=render)
            try:
                out[key] = step_rate(env, c["maniskill_steps"])
            finally:
                env.close()
        import gymnasium as gym

        env = gym.make(get_task(task).env_id, obs_mode="state", sim_backend="physx_cpu", num_envs=1)
        try:
            env.reset(seed=0)
            space = env.action_space
            acts = np.random.default_rng(0).uniform(space.low, space.high, (c["maniskill_steps"] * 5,) + space.shape)
            t0 = time.perf_counter()
            for a in acts.astype(np.float32):
                env.step(a)
            out["maniskill_state_steps_per_s"] = len(acts) / (time.perf_counter() - t0)
        finally:
            env.close()
    except Exception as e:  # no Vulkan device, SAPIEN missing, ...
        out = {"maniskill_error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    return out


# --------------------------------------------------------------------------- PPO loops


def _loop_clock():
    """An SB3 callback that sums rollout and update seconds and keeps the model."""
    from stable_baselines3.common.callbacks import BaseCallback

    class LoopClock(BaseCallback):
        def __init__(self) -> None:
            super().__init__(verbose=0)
            self.rollout_s = self.update_s = 0.0
            self.rollout_cpu_s = self.update_cpu_s = 0.0  # the same in CPU seconds of this process
            self.rollouts = 0
            self.t_start = self.t_end = self.c_end = 0.0
            self._t_roll = self._c_roll = 0.0
            self._t_roll_end: float | None = None
            self._c_roll_end = 0.0
            self.trained_model = None

        def _on_training_start(self) -> None:
            self.t_start = time.perf_counter()

        def _on_rollout_start(self) -> None:
            t, c = _clock()
            if self._t_roll_end is not None:  # the update of the previous rollout
                self.update_s += t - self._t_roll_end
                self.update_cpu_s += c - self._c_roll_end
            self._t_roll, self._c_roll = t, c

        def _on_rollout_end(self) -> None:
            t, c = _clock()
            self.rollout_s += t - self._t_roll
            self.rollout_cpu_s += c - self._c_roll
            self.rollouts += 1
            self._t_roll_end, self._c_roll_end = t, c

        def _on_training_end(self) -> None:
            t, c = _clock()
            if self._t_roll_end is not None:
                self.update_s += t - self._t_roll_end
                self.update_cpu_s += c - self._c_roll_end
            self.t_end, self.c_end = t, c
            self.trained_model = self.model

        def _on_step(self) -> bool:
            return True

    return LoopClock()


def ppo_loop(task: str, image: bool, steps: int, n_steps: int, n_envs: int, eval_episodes: int,
             seed: int = 0, policy_render: str = "auto") -> tuple[dict, Any]:
    """One ``train_ppo`` run, split into set-up (+ step-0 evaluation), rollouts, updates and the
    final evaluation; returns (figures, trained model). ``policy_render`` goes to
    :func:`relam.wrappers.make_relam_env`; ``policy_image_source`` in the figures says what the
    envs did (``render``, ``downsample``, or ``None`` without an image)."""
    from relam.rl.ppo import PPOSettings, resolve_device, train_ppo
    from relam.tasks import get_task
    from relam.wrappers import GroundTruthSubgoals, make_relam_env

    settings = PPOSettings(n_envs=n_envs, log_std_init=-0.5, n_steps=n_steps, device="auto")

    sources: set[str | None] = set()

    def env_fn(s: int):
        env = make_relam_env(task, GroundTruthSubgoals(), seed=s, include_image=image, policy_image_size=64,
                             policy_render=policy_render)
        sources.add(getattr(env, "source", None))
        return env

    clock = _loop_clock()
    with tempfile.TemporaryDirectory(prefix="bench_throughput-") as out_dir:
        t0 = time.perf_counter()
        # eval_every past the end: no evaluation inside the timed loop (only at step 0 and the end)
        train_ppo(env_fn, settings, out_dir, total_steps=steps, eval_every=steps + 1,
                  eval_episodes=eval_episodes, seed=seed, progress=False, callbacks=[clock])
        t1, c1 = _clock()
    model = clock.trained_model
    n = int(model.num_timesteps)
    loop_s = clock.rollout_s + clock.update_s
    horizon = get_task(task).horizon
    final_eval_s = t1 - clock.t_end
    return {
        "steps": n, "n_steps": settings.n_steps, "n_envs": settings.n_envs, "rollouts": clock.rollouts,
        "device": resolve_device(settings.device),
        "policy_render": policy_render if image else None,
        "policy_image_source": ",".join(sorted(str(x) for x in sources)) if image else None,
        "steps_per_s": n / loop_s,
        "rollout_steps_per_s": n / clock.rollout_s,
        "rollout_s": clock.rollout_s, "update_s": clock.update_s,
        "update_s_per_1k": 1000 * clock.update_s / n,
        "steps_per_cpu_s": n / max(clock.rollout_cpu_s + clock.update_cpu_s, 1e-9),
        "rollout_steps_per_cpu_s": n / max(clock.rollout_cpu_s, 1e-9),
        "rollout_cpu_s": clock.rollout_cpu_s, "update_cpu_s": clock.update_cpu_s,
        "update_cpu_s_per_1k": 1000 * clock.update_cpu_s / n,
        "setup_and_first_eval_s": clock.t_start - t0,
        "final_eval_s": final_eval_s,
        "eval_s_per_episode": final_eval_s / eval_episodes,
        "eval_cpu_s_per_episode": (c1 - clock.c_end) / eval_episodes,
        "eval_steps_per_s": eval_episodes * horizon / final_eval_s,  # episodes never end early
        "end_to_end_steps_per_s": n / (t1 - t0),
        "wall_s": t1 - t0,
        "horizon": horizon,
    }, model


def update_vs_threads(model: Any, threads: list[int], epochs: int | None = None,
                      cpu: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds per 1,000 env steps of one full update (``model.n_epochs`` passes) of ``model.train()``
    on its last filled rollout buffer, per torch thread count. With ``epochs`` only that many
    passes are timed and the time is scaled to ``model.n_epochs`` (an epoch is the same number of
    minibatches every time). ``cpu``: a dict that receives the same in CPU seconds of this process
    (all its threads: with k threads, k busy cores count k times)."""
    import torch

    size = int(model.n_steps) * int(model.n_envs)
    full = int(model.n_epochs)
    k_ep = full if epochs is None else max(1, min(int(epochs), full))
    before = torch.get_num_threads()
    out = {}
    try:
        model.n_epochs = k_ep
        for k in threads:
            torch.set_num_threads(int(k))
            t0, c0 = _clock()
            model.train()
            t1, c1 = _clock()
            out[str(k)] = 1000 * (t1 - t0) * full / k_ep / size
            if cpu is not None:
                cpu[str(k)] = 1000 * (c1 - c0) * full / k_ep / size
    finally:
        model.n_epochs = full
        torch.set_num_threads(before)
    return out


# --------------------------------------------------------------------------- projection


def table4_plan(path: Path | None = None) -> dict:
    """Paper-scale runs of Table 4 per suite: tasks, methods (reference columns left out), seeds,
    training and evaluation budgets, horizons, the offline set's size and DACfO's online phase
    before offline labelling (``path``: the spec file; default Table 4's, from the checkout or the
    installed package)."""
    import yaml

    from baselines.dacfo import ONLINE_PHASE
    from relam.experiments.spec import find_spec

    path = Path(path) if path is not None else find_spec("table4")
    from relam.tasks import get_task

    spec = yaml.safe_load(path.read_text())
    methods = [m["method"] for m in spec["methods"] if not m.get("reference")]
    seeds = list(spec["seeds"]["paper"])
    plan: dict[str, dict] = {}
    for t in spec["tasks"]:
        entry = get_task(t)
        b = spec["budgets"][entry.suite]["paper"]
        s = plan.setdefault(entry.suite, {"tasks": [], "horizon": {}, "methods": methods, "seeds": len(seeds),
                                          "train_steps": int(b["train_steps"]), "eval_every": int(b["eval_every"]),
                                          "eval_episodes": int(b["eval_episodes"]),
                                          "offline_trajectories": int(b.get("offline_trajectories")
                                                                      or 2 * b.get("n_demos", 100)),
                                          "dacfo_online_steps": int(ONLINE_PHASE["paper"].env_steps)})
        s["tasks"].append(t)
        s["horizon"][t] = int(entry.horizon)
    return plan


def _schedule(durations: list[float], slots: int) -> float:
    """Makespan of independent runs on ``slots`` workers, longest first to the least-loaded one."""
    loads = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + d)
    return max(loads)


#: discriminators whose average labels DACfO's offline set (appendix A.4: the last 10)
DACFO_ENSEMBLE = 10


def project_table4(fig: dict, plan: dict, cores: int, boxes: int) -> dict:
    """Projected seconds of Table 4 at paper scale from the measured per-step figures.

    Meta-World run: ``train_steps`` at the image + points loop rate (rollout + update), plus
    ``train_steps // eval_every + 1`` evaluations of ``eval_episodes`` episodes at the measured
    per-episode cost (scaled by horizon), plus, for DACfO and Diffusion Reward, the batched
    relabelling per 1,000 steps. The loop rate and the evaluation cost are taken in CPU time when
    measured (``image_ppo_steps_per_cpu_s``, ``image_eval_cpu_s_per_episode``: what one idle core
    turns over, one run per core), else in wall time; the relabelling figures are CPU seconds
    already (``bench_reward_cost.py``). ManiSkill run: ``train_steps`` IQL gradient steps (at the CPU-time rate when ``bench_iql.speed``
    reports one, ``iql_steps_per_cpu_s``) plus the
    evaluations, each episode ``horizon`` steps at the raw ManiSkill render rate (policy forward
    not counted); DACfO and Diffusion Reward also label the offline set (``offline_trajectories``
    x ``horizon`` transitions; DACfO with its ensemble of :data:`DACFO_ENSEMBLE` discriminators),
    and DACfO first runs its online phase (``dacfo_online_steps`` image PPO steps in ManiSkill:
    rollouts at the raw render rate, the image update, the discriminator's relabelling). Returns
    ``None`` figures where an input was not measured.
    """
    relabel = {"dacfo": fig.get("dacfo_s_per_1k"), "diffusion_reward": fig.get("diffusion_s_per_1k")}
    runs: list[float] = []
    per_suite: dict[str, Any] = {}
    missing: list[str] = []
    for suite, s in plan.items():
        n_evals = s["train_steps"] // s["eval_every"] + 1
        durations: dict[str, float] = {}
        for task in s["tasks"]:
            h = s["horizon"][task]
            for m in s["methods"]:
                if suite == "metaworld":
                    rate = fig.get("image_ppo_steps_per_cpu_s") or fig.get("image_ppo_steps_per_s")
                    ep = fig.get("image_eval_cpu_s_per_episode") or fig.get("image_eval_s_per_episode")
                    ref_h = fig.get("image_eval_horizon") or h
                    if rate is None or ep is None:
                        missing.append("image PPO")
                        continue
                    d = s["train_steps"] / rate + n_evals * s["eval_episodes"] * ep * h / ref_h
                    if m in relabel:
                        if relabel[m] is None:
                            missing.append(f"{m} relabelling")
                            continue
                        d += s["train_steps"] / 1000 * relabel[m]
                else:
                    iql = fig.get("iql_steps_per_cpu_s") or fig.get("iql_steps_per_s")
                    ms = fig.get("maniskill_render_steps_per_s")
                    if iql is None or ms is None:
                        missing.append("IQL and ManiSkill render rates")
                        continue
                    d = s["train_steps"] / iql + n_evals * s["eval_episodes"] * h / ms
                    if m in relabel:
                        if relabel[m] is None:
                            missing.append(f"{m} relabelling")
                            continue
                        members = DACFO_ENSEMBLE if m == "dacfo" else 1
                        d += s.get("offline_trajectories", 0) * h / 1000 * relabel[m] * members
                    online = s.get("dacfo_online_steps", 0) if m == "dacfo" else 0
                    if online:
                        upd = fig.get("image_update_cpu_s_per_1k") or fig.get("image_update_s_per_1k")
                        if upd is None:
                            missing.append("image PPO")
                            continue
                        d += online / ms + online / 1000 * (upd + relabel["dacfo"])
                durations[f"{task}/{m}"] = d
        runs += [d for d in durations.values() for _ in range(s["seeds"])]
        per_suite[suite] = {"runs": len(s["tasks"]) * len(s["methods"]) * s["seeds"],
                            "run_h": {k: v / 3600 for k, v in durations.items()}}
    complete = not missing
    total = sum(runs)
    return {
        "complete": complete, "missing": sorted(set(missing)), "per_suite": per_suite,
        "runs": len(runs), "cpu_h": total / 3600 if complete else None,
        "cores": cores, "boxes": boxes,
        "one_box_h": _schedule(runs, cores) / 3600 if complete else None,
        "cluster_h": _schedule(runs, cores * boxes) / 3600 if complete else None,
    }


# --------------------------------------------------------------------------- report


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return (f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}") + unit
    return f"{v}{unit}"


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny step counts (under a minute); figures are rough")
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts to run, of {','.join(PARTS)} (threads needs points and/or image)")
    p.add_argument("--task", default="drawer-open-v3", help="Meta-World task of the raw rates and PPO loops")
    p.add_argument("--maniskill-task", default="PushCube-v1")
    p.add_argument("--n-envs", type=int, default=8, help="PPO environments (DummyVecEnv, this process)")
    p.add_argument("--points-steps", type=int, default=None, help="points-only PPO env steps (default 20k; smoke 1024)")
    p.add_argument("--image-steps", type=int, default=None, help="image + points PPO env steps (default 4k; smoke 256)")
    p.add_argument("--image-render", default="auto",
                   help="policy_render of the image loop's envs: auto (64 px rendered directly where the reward "
                        "allows) or downsample (128 px frame area-averaged); a comma-separated list times each")
    p.add_argument("--threads", default="1,2", help="torch thread counts of the update timing")
    p.add_argument("--cores", type=int, default=16, help="cores of one box in the projection (one run per core)")
    p.add_argument("--boxes", type=int, default=4, help="boxes of the Ray cluster in the projection")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON figures to this file")
    a = p.parse_args(argv)
    parts = [x.strip() for x in a.only.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        p.error(f"--only: unknown part(s) {bad}; choose from {','.join(PARTS)}")
    if a.cores < 1 or a.boxes < 1:
        p.error("--cores and --boxes must be >= 1")
    c = dict(COUNTS["smoke" if a.smoke else "full"])
    for key, val in (("points_steps", a.points_steps), ("image_steps", a.image_steps)):
        if val is not None:
            c[key] = val
    for key in ("points", "image"):  # whole rollouts of n_envs-divisible length
        n_steps = min(c[f"{key}_n_steps"], c[f"{key}_steps"])
        n_steps = max(a.n_envs, n_steps // a.n_envs * a.n_envs)
        c[f"{key}_n_steps"] = n_steps
        c[f"{key}_steps"] = max(n_steps, c[f"{key}_steps"] // n_steps * n_steps)
    threads = [int(x) for x in a.threads.split(",") if x.strip()]
    image_renders = [x.strip() for x in a.image_render.split(",") if x.strip()]
    from relam.wrappers import POLICY_RENDER

    if not image_renders or any(x not in POLICY_RENDER for x in image_renders) or len(set(image_renders)) < len(
            image_renders):
        p.error(f"--image-render: distinct values of {','.join(POLICY_RENDER)}")

    import warnings

    import torch

    from relam.rl.ppo import resolve_device

    warnings.filterwarnings("ignore", message="Constant.s. may be too high")  # Meta-World's experts
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    fig: dict[str, Any] = {
        "smoke": bool(a.smoke), "parts": parts, "task": a.task, "loadavg_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(), "torch_cuda_available": bool(torch.cuda.is_available()),
        "ppo_device": resolve_device("auto"), "counts": c,
    }

    def row(name: str, value: str, note: str = "") -> None:
        print(f"  {name:44s} {value:>16s}  {note}", flush=True)

    def cpu_note(key: str) -> str:
        return f"CPU time: {_fmt(fig.get(key), ' st/s')}"

    print(f"bench_throughput{' --smoke' if a.smoke else ''}: task {a.task}, 1 torch thread, "
          f"load average {fig['loadavg_1min']} on {fig['cpu_count']} CPUs, "
          f"CUDA {'available' if fig['torch_cuda_available'] else 'not available'}, "
          f"PPO device {fig['ppo_device']}", flush=True)

    if "raw" in parts:
        print("raw env rates (one process)", flush=True)
        fig.update(raw_metaworld(a.task, c))
        row(f"Meta-World {a.task} no render", _fmt(fig["metaworld_norender_steps_per_s"], " st/s"),
            cpu_note("metaworld_norender_cpu_steps_per_s"))
        row("Meta-World render 128 px", _fmt(fig["metaworld_render128_steps_per_s"], " st/s"),
            cpu_note("metaworld_render128_cpu_steps_per_s"))
        row("Meta-World render 64 px", _fmt(fig["metaworld_render64_steps_per_s"], " st/s"),
            cpu_note("metaworld_render64_cpu_steps_per_s"))
        row("expert plan per training reset", _fmt(fig["expert_plan_ms_per_reset"], " ms"),
            "GroundTruthSubgoals, new seed")
    if "maniskill" in parts:
        fig.update(raw_maniskill(a.maniskill_task, c))
        if "maniskill_error" in fig:
            print(f"  NOTE: ManiSkill skipped, it did not start ({fig['maniskill_error']})", flush=True)
        else:
            row(f"ManiSkill {a.maniskill_task} render=True", _fmt(fig["maniskill_render_steps_per_s"], " st/s"))
            row("ManiSkill render=False", _fmt(fig["maniskill_norender_steps_per_s"], " st/s"),
                "ManiSkillEnv captures the camera either way")
            row("ManiSkill obs_mode=state (no camera)", _fmt(fig["maniskill_state_steps_per_s"], " st/s"),
                "gym.make directly, reference")

    models: dict[str, Any] = {}
    raw_nr = fig.get("metaworld_norender_steps_per_s")
    raw128 = fig.get("metaworld_render128_steps_per_s")
    raw64 = fig.get("metaworld_render64_steps_per_s")
    cpu_nr = fig.get("metaworld_norender_cpu_steps_per_s")
    cpu128 = fig.get("metaworld_render128_cpu_steps_per_s")
    cpu64 = fig.get("metaworld_render64_cpu_steps_per_s")
    loops = [("points", False, "auto")] if "points" in parts else []
    if "image" in parts:
        loops += [("image" if i == 0 else f"image_{mode}", True, mode) for i, mode in enumerate(image_renders)]
    for key, image, mode in loops:
        label = "image + points" if image else "points-only"
        print(f"{label} PPO ({c['image_steps' if image else 'points_steps']} steps, rollouts of "
              f"{c['image_n_steps' if image else 'points_n_steps']} over {a.n_envs} envs)", flush=True)
        r, models[key] = ppo_loop(a.task, image, c["image_steps" if image else "points_steps"],
                                  c["image_n_steps" if image else "points_n_steps"], a.n_envs,
                                  c["eval_episodes"], policy_render=mode)
        if image:
            print(f"  policy image: policy_render={mode} -> {r['policy_image_source']} "
                  "(render: 64 px rendered directly; downsample: 128 px frame area-averaged)", flush=True)
            fig[f"{key}_policy_image_source"] = r["policy_image_source"]
        fig[f"{key}_ppo"] = r
        fig[f"{key}_ppo_steps_per_s"] = r["steps_per_s"]
        fig[f"{key}_rollout_steps_per_s"] = r["rollout_steps_per_s"]
        fig[f"{key}_update_s_per_1k"] = r["update_s_per_1k"]
        fig[f"{key}_eval_s_per_episode"] = r["eval_s_per_episode"]
        fig[f"{key}_ppo_steps_per_cpu_s"] = r["steps_per_cpu_s"]
        fig[f"{key}_update_cpu_s_per_1k"] = r["update_cpu_s_per_1k"]
        fig[f"{key}_eval_cpu_s_per_episode"] = r["eval_cpu_s_per_episode"]
        fig[f"{key}_eval_horizon"] = r["horizon"]
        ref, ref_name = (raw128, "raw 128 px render") if image else (raw_nr, "raw no-render")
        ref_cpu = cpu128 if image else cpu_nr
        fig[f"{key}_ppo_over_raw"] = _ratio(r["steps_per_s"], ref)
        fig[f"{key}_rollout_over_raw"] = _ratio(r["rollout_steps_per_s"], ref)
        fig[f"{key}_ppo_over_raw_cpu"] = _ratio(r["steps_per_cpu_s"], ref_cpu)
        fig[f"{key}_rollout_over_raw_cpu"] = _ratio(r["rollout_steps_per_cpu_s"], ref_cpu)
        if image:
            fig[f"{key}_rollout_over_raw64"] = _ratio(r["rollout_steps_per_s"], raw64)
            fig[f"{key}_rollout_over_raw64_cpu"] = _ratio(r["rollout_steps_per_cpu_s"], cpu64)
        loop_share = r["rollout_s"] / (r["rollout_s"] + r["update_s"])
        row("loop (rollout + update)", _fmt(r["steps_per_s"], " st/s"),
            f"{_fmt(fig[f'{key}_ppo_over_raw'])} x {ref_name}; rollouts {100 * loop_share:.0f}% of loop")
        row("  in CPU time", _fmt(r["steps_per_cpu_s"], " st/s"),
            f"{_fmt(fig[f'{key}_ppo_over_raw_cpu'])} x {ref_name} (CPU time)")
        row("  rollouts", _fmt(r["rollout_steps_per_s"], " st/s"),
            f"{_fmt(fig[f'{key}_rollout_over_raw'])} x {ref_name}"
            + (f", {_fmt(fig[f'{key}_rollout_over_raw64'])} x raw 64 px" if image else ""))
        row("  rollouts in CPU time", _fmt(r["rollout_steps_per_cpu_s"], " st/s"),
            f"{_fmt(fig[f'{key}_rollout_over_raw_cpu'])} x {ref_name}"
            + (f", {_fmt(fig[f'{key}_rollout_over_raw64_cpu'])} x raw 64 px" if image else "") + " (CPU time)")
        row("  updates", _fmt(r["update_s_per_1k"], " s/1k st"),
            f"device {r['device']}; CPU time {_fmt(r['update_cpu_s_per_1k'], ' s/1k st')}")
        row("  end to end (set-up, 2 evals)", _fmt(r["end_to_end_steps_per_s"], " st/s"),
            f"set-up + step-0 eval {r['setup_and_first_eval_s']:.1f} s")
        row("  evaluation episode", _fmt(r["eval_s_per_episode"], " s"),
            f"{_fmt(r['eval_steps_per_s'])} st/s incl. checkpoint + plot")
    if "threads" in parts:
        if not models:
            print("  NOTE: threads needs the points or image part (it times model.train() of their models)")
        for key, model in models.items():
            if key not in ("points", "image"):  # the other image modes train the same network
                continue
            cpu_t: dict[str, float] = {}
            t = update_vs_threads(model, threads, c["thread_epochs"], cpu=cpu_t)
            fig.setdefault("update_s_per_1k_by_threads", {})[key] = t
            fig.setdefault("update_cpu_s_per_1k_by_threads", {})[key] = cpu_t
            row(f"{key} update vs torch threads", " / ".join(f"{k}: {v:.2f}" for k, v in t.items()),
                f"s per 1k env steps, wall (model.train(), {c['thread_epochs']} of {model.n_epochs} epochs timed)")
            row("  in CPU time (all threads)", " / ".join(f"{k}: {v:.2f}" for k, v in cpu_t.items()),
                f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if "reward" in parts:
        print("reward relabelling per 1,000 steps (bench_reward_cost.py cost, CPU)", flush=True)
        rc = _bench_module("bench_reward_cost").cost(argparse.Namespace(diffusion_steps=c["diffusion_steps"]))
        fig["reward_cost"] = rc
        fig["dacfo_s_per_1k"] = rc.get("dacfo_batched_s")
        fig["diffusion_s_per_1k"] = rc.get("diffusion_batched_s")
        image_1k = 1000 / fig["image_ppo_steps_per_s"] if fig.get("image_ppo_steps_per_s") else None
        for name, k in (("DACfO (batched)", "dacfo"), ("Diffusion Reward (batched)", "diffusion")):
            v = fig[f"{k}_s_per_1k"]
            row(name, _fmt(v, " s/1k st"),
                f"{_fmt(_ratio(v, image_1k))} x the image loop's time" if image_1k else "")
        row("ReLAM point reward", _fmt(rc.get("relam_reward_s"), " s/1k st"))
    if "iql" in parts:
        print("IQL (bench_iql.py --speed, synthetic 64 px data, batch 64, CPU)", flush=True)
        q = _bench_module("bench_iql").speed(c["iql_steps"])
        torch.set_num_threads(1)
        fig["iql_steps_per_s"] = q["steps_per_s"]
        fig["iql_steps_per_cpu_s"] = q.get("steps_per_cpu_s")  # when bench_iql.speed reports it
        row("IQL gradient steps", _fmt(fig["iql_steps_per_s"], " st/s"))

    proj = project_table4(fig, table4_plan(), a.cores, a.boxes)
    fig["projection"] = proj
    clock = "CPU-time" if fig.get("image_ppo_steps_per_cpu_s") else "wall-clock"
    iql_clock = "CPU-time" if fig.get("iql_steps_per_cpu_s") else "wall-clock"
    print(f"PROJECTION of Table 4 at paper scale (experiments/table4.yaml), from the rates measured HERE "
          f"(image PPO loop and evaluation at their {clock} rates, one run per core, every core as fast as "
          f"one idle core here); no GPU speed-up assumed (PPO device here: {fig['ppo_device']}; with a GPU "
          f"the image update moves there, rollouts stay on the CPU); IQL at its {iql_clock} rate and ManiSkill "
          "evaluation at its wall rate; demo recording, reward-model and anticipation-model training, recording the offline "
          "set and its labelling by ReLAM, IS and Oracle not counted")
    if proj["complete"]:
        for suite, s in proj["per_suite"].items():
            hs = list(s["run_h"].values())
            row(f"{suite}: {s['runs']} runs", f"{min(hs):.1f}-{max(hs):.1f} h/run")
        row(f"all {proj['runs']} runs, one after another", _fmt(proj["cpu_h"], " core-h"))
        row(f"one box, {a.cores} cores (1 run per core)", _fmt(proj["one_box_h"], " h"),
            f"= {proj['one_box_h'] / 24:.1f} days")
        row(f"Ray cluster of {a.boxes} such boxes", _fmt(proj["cluster_h"], " h"),
            f"= {proj['cluster_h'] / 24:.1f} days")
    else:
        print(f"  n/a: not measured in this run: {', '.join(proj['missing'])}")
    fig["bench_wall_s"] = time.perf_counter() - t_all
    print(f"(benchmark wall time {fig['bench_wall_s']:.1f} s)")
    fig.setdefault("points_ppo_over_raw", None)
    fig.setdefault("image_ppo_steps_per_s", None)
    text = json.dumps(fig, default=float)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
