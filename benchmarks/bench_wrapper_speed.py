"""Cost of the ReLAM wrapper over the raw rendered env, and PPO training speed end to end.

Part 1 (issue 5's benchmark): steps/s of the wrapped env divided by steps/s of the raw env that
renders the same camera at the same size (the task's 128 px), with the sim tracker and with the
LK tracker, measured in ONE process.  The variants run in interleaved blocks (``--blocks`` blocks
of ``--block-steps`` steps, the order rotated every block, the same random actions from the same
initial state in every variant of a block), so a change in machine load hits every variant alike;
the ratio is taken per block and its median reported.  Resets (planning, lifting the keypoints)
are outside the timed steps and reported separately.  Variants:

* ``raw``     -- :func:`relam.tasks.make_env` with rendering: step + 128 px frame;
* ``sim``     -- :class:`relam.wrappers.ReLAMWrapper` on it, sim tracker, 128 px image observation;
* ``lk``      -- the same with the LK tracker (``make_tracker("lk")``);
* ``sim+64``  -- ``sim`` plus :class:`relam.wrappers.PolicyImageSize` (64 px), the training stack
  that :func:`relam.wrappers.make_relam_env` builds.

The plan is fixed (:class:`relam.wrappers.FixedSubgoals`, ground-truth subgoals of the block's
episode computed once), so the wrapper's per-step work is what is timed.

Part 2: PPO training steps/s end to end -- :func:`relam.rl.ppo.make_ppo` (the A.3 image + points
policy, appendix C settings, one torch thread) learning for ``--ppo-steps`` steps on
``make_relam_env`` with ground-truth subgoals (an expert replay per reset, as in training),
split into rollout collection and gradient updates.

Figures are printed (and written as JSON under ``<cache>/benchmarks/``); nothing is asserted.
Example (about 2-3 minutes on one core)::

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_wrapper_speed.py
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import numpy as np

from relam.cache import atomic_write_json, cache_dir

VARIANTS = ("raw", "sim", "lk", "sim+64")


def build_envs(task: str, plan: np.ndarray) -> dict[str, Any]:
    """One env per variant (each with its own simulator, all rendering the task's camera)."""
    from relam.perception.tracking import make_tracker
    from relam.tasks import make_env
    from relam.wrappers import FixedSubgoals, PolicyImageSize, ReLAMWrapper

    def wrapped(tracker: str) -> Any:
        return ReLAMWrapper(make_env(task, render=True), FixedSubgoals(plan), tracker=make_tracker(tracker),
                            n_points=plan.shape[1], include_image=True)

    return {"raw": make_env(task, render=True), "sim": wrapped("sim"), "lk": wrapped("lk"),
            "sim+64": PolicyImageSize(wrapped("sim"), 64)}


def run_block(env: Any, seed: int, actions: np.ndarray) -> tuple[float, float, float]:
    """Reset (timed apart), then step through ``actions``: (reset s, step wall s, step CPU s)."""
    t0 = time.perf_counter()
    env.reset(seed=seed)
    t_reset = time.perf_counter() - t0
    w0, c0 = time.perf_counter(), time.process_time()
    for a in actions:
        env.step(a)
    return t_reset, time.perf_counter() - w0, time.process_time() - c0


def wrapper_ratio(task: str, blocks: int, block_steps: int, seed: int) -> dict[str, Any]:
    from relam.wrappers import GroundTruthSubgoals

    gt = GroundTruthSubgoals()
    plan = gt.plan(None, task, seed=seed)  # the episode's ground-truth plan, computed once
    gt.close()
    envs = build_envs(task, plan)
    horizon = envs["raw"].task.horizon
    if block_steps > horizon:
        raise SystemExit(f"--block-steps {block_steps} exceeds the task horizon {horizon} (one episode a block)")
    rng = np.random.default_rng(seed)
    space = envs["raw"].action_space
    for env in envs.values():  # warm-up: first renders, LK's first calls, caches
        run_block(env, seed, rng.uniform(-1, 1, (20,) + space.shape).astype(np.float32))
    per: dict[str, dict[str, list[float]]] = {v: {"sps": [], "cpu_sps": [], "reset_s": []} for v in VARIANTS}
    from tqdm.auto import tqdm

    for b in tqdm(range(blocks), desc="blocks", leave=False):
        actions = rng.uniform(-1, 1, (block_steps,) + space.shape).astype(np.float32)
        order = VARIANTS[b % len(VARIANTS):] + VARIANTS[: b % len(VARIANTS)]
        for v in order:
            t_reset, wall, cpu = run_block(envs[v], seed, actions)
            per[v]["sps"].append(block_steps / wall)
            per[v]["cpu_sps"].append(block_steps / max(cpu, 1e-9))
            per[v]["reset_s"].append(t_reset)
    for env in envs.values():
        env.close()
    out: dict[str, Any] = {"task": task, "blocks": blocks, "block_steps": block_steps, "seed": seed,
                           "image_size": int(envs["raw"].observation_space.shape[0]), "variants": {}}
    raw = per["raw"]
    for v in VARIANTS:
        ratios = [w / r for w, r in zip(per[v]["sps"], raw["sps"])]
        cpu_ratios = [w / r for w, r in zip(per[v]["cpu_sps"], raw["cpu_sps"])]
        out["variants"][v] = {
            "steps_per_s_median": statistics.median(per[v]["sps"]),
            "ratio_median": statistics.median(ratios), "ratios": ratios,
            "cpu_ratio_median": statistics.median(cpu_ratios),
            "reset_ms_median": 1000 * statistics.median(per[v]["reset_s"]),
        }
    return out


class _RolloutClock:
    """Seconds spent collecting rollouts (the rest of ``learn`` is gradient updates)."""

    def __init__(self) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        clock = self

        class CB(BaseCallback):
            def _on_rollout_start(self) -> None:
                clock.t0 = time.perf_counter()

            def _on_rollout_end(self) -> None:
                clock.seconds += time.perf_counter() - clock.t0

            def _on_step(self) -> bool:
                return True

        self.seconds, self.t0 = 0.0, 0.0
        self.callback = CB()


def ppo_speed(task: str, steps: int, seed: int, image: bool) -> dict[str, Any]:
    from relam.rl.ppo import PPOSettings, make_ppo, make_vec_env
    from relam.wrappers import GroundTruthSubgoals, make_relam_env

    settings = PPOSettings(n_steps=min(2000, steps))
    env_fn: Callable[[int], Any] = lambda s: make_relam_env(task, GroundTruthSubgoals(), seed=s,  # noqa: E731
                                                            include_image=image, policy_image_size=64)
    venv = make_vec_env(env_fn, seed, settings)
    model = make_ppo(venv, settings, seed)
    clock = _RolloutClock()
    t0 = time.perf_counter()
    model.learn(steps, callback=clock.callback, progress_bar=False)
    wall = time.perf_counter() - t0
    venv.close()
    n = int(model.num_timesteps)
    return {"policy": "image+points" if image else "points", "steps": n, "n_steps": settings.n_steps,
            "wall_s": wall, "steps_per_s": n / wall, "rollout_s": clock.seconds,
            "rollout_steps_per_s": n / max(clock.seconds, 1e-9), "update_s": wall - clock.seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Writes <cache>/benchmarks/wrapper_speed-<task>.json too.")
    p.add_argument("--task", default="drawer-open-v3")
    p.add_argument("--blocks", type=int, default=5, help="interleaved blocks per variant")
    p.add_argument("--block-steps", type=int, default=200, help="timed steps per block (one episode)")
    p.add_argument("--seed", type=int, default=0, help="episode seed of every block; action RNG seed")
    p.add_argument("--ppo-steps", type=int, default=2000, help="PPO training steps (0: skip part 2)")
    p.add_argument("--ppo-points-only", action="store_true", help="PPO without the image (the fast loop)")
    a = p.parse_args(argv)
    if a.blocks < 1 or a.block_steps < 1:
        p.error("--blocks and --block-steps must be >= 1")
    import torch

    torch.set_num_threads(1)
    res: dict[str, Any] = {"wrapper": wrapper_ratio(a.task, a.blocks, a.block_steps, a.seed)}
    w = res["wrapper"]
    print(f"{a.task}: {w['blocks']} interleaved blocks of {w['block_steps']} steps, {w['image_size']} px, "
          "same actions and start in every variant of a block")
    print(f"{'variant':8s} {'steps/s':>8s} {'ratio to raw (median)':>22s} {'CPU-time ratio':>15s} "
          f"{'reset ms':>9s}  per-block ratios")
    for v, r in w["variants"].items():
        print(f"{v:8s} {r['steps_per_s_median']:8.1f} {r['ratio_median']:22.3f} {r['cpu_ratio_median']:15.3f} "
              f"{r['reset_ms_median']:9.1f}  " + " ".join(f"{x:.3f}" for x in r["ratios"]))
    if a.ppo_steps > 0:
        res["ppo"] = ppo_speed(a.task, a.ppo_steps, a.seed, image=not a.ppo_points_only)
        q = res["ppo"]
        print(f"PPO ({q['policy']} policy, ground-truth subgoals, n_steps {q['n_steps']}): {q['steps']} steps in "
              f"{q['wall_s']:.1f} s = {q['steps_per_s']:.1f} steps/s end to end; rollouts {q['rollout_s']:.1f} s "
              f"({q['rollout_steps_per_s']:.1f} steps/s), updates {q['update_s']:.1f} s")
    out = cache_dir() / "benchmarks" / f"wrapper_speed-{a.task}.json"
    atomic_write_json(out, res)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
