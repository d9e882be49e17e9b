"""Success of the refinement's behaviour-cloning base (:mod:`baselines.vlm_reward`) for candidate
weak bases: BC on the first ``--bc-demos`` expert demos for ``--bc-steps`` gradient steps, evaluated
deterministically on the first ``--episodes`` fixed evaluation seeds with the budget of
``experiments/refine.yaml`` at ``--scale`` (its horizon). The BC weights go to the same cache as the
spec's runs (``_bc_policy_state``), so a refine run with these settings starts from the very policy
measured here::

    python benchmarks/bench_refine_base.py drawer-open-v3 --scale quick --bc-demos 1 2 5 --episodes 30

No reward model is trained: the base column does not use it.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def measure(task: str, scale: str, bc_demos: int | None, bc_steps: int | None, episodes: int, seed: int = 0,
            progress: bool = False) -> dict:
    """One candidate base: its success over ``episodes`` evaluation seeds and its BC numbers."""
    import dataclasses

    from baselines.vlm_reward import PolicyImage, StopOnSuccess, VLMRewardSettings, bc_demos as n_bc_demos
    from baselines.vlm_training import SCALE_STEPS, _bc_policy_state, _make_refine_ppo, _ppo_settings
    from relam.experiments import load_spec
    from relam.rl.evaluation import eval_seeds, evaluate_success
    from relam.rl.ppo import make_vec_env
    from relam.tasks import get_task, make_env

    budget = load_spec("refine").budget(task, scale)
    settings = VLMRewardSettings(bc_demos=bc_demos, bc_steps=bc_steps)
    spec = get_task(task)
    if budget.horizon is not None:
        spec = dataclasses.replace(spec, horizon=budget.horizon)
    ppo = _ppo_settings(budget)
    venv = make_vec_env(lambda s: PolicyImage(make_env(spec)), seed, ppo)
    eval_env = PolicyImage(StopOnSuccess(make_env(spec)))
    t0 = time.time()
    try:
        model = _make_refine_ppo(venv, ppo, seed)
        n = n_bc_demos(settings, budget)
        weights, stats = _bc_policy_state(task, n, scale, seed, ppo, venv, progress, steps=bc_steps)
        bc_s = time.time() - t0
        model.policy.load_state_dict(weights)
        res = evaluate_success(model, eval_env, eval_seeds(episodes))
    finally:
        venv.close()
        eval_env.close()
    return {"task": task, "scale": scale, "seed": seed, "bc_demos": n,
            "bc_steps": int(bc_steps or SCALE_STEPS[scale].bc_steps), "episodes": episodes,
            "successes": int(np.sum(res.successes)), "success": res.success_rate,
            "bc_loss_final": round(stats["bc_loss_final"], 4), "bc_seconds": round(bc_s, 1),
            "eval_seconds": round(time.time() - t0 - bc_s, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench_refine_base.py",
        description="Measure the refinement's behaviour-cloning base success for candidate weak bases "
                    "(one JSON line per candidate).")
    p.add_argument("task", nargs="?", default="drawer-open-v3")
    p.add_argument("--scale", default="quick", choices=("smoke", "quick", "paper"))
    p.add_argument("--bc-demos", type=int, nargs="*", default=[None],
                   help="candidate demo counts (default: the budget's n_demos)")
    p.add_argument("--bc-steps", type=int, nargs="*", default=[None],
                   help="candidate BC step counts (default: the scale's)")
    p.add_argument("--episodes", type=int, default=30, help="evaluation episodes (fixed seeds)")
    p.add_argument("--seed", type=int, default=0, help="the run seed (BC initialisation and batches)")
    p.add_argument("--progress", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    for demos in a.bc_demos:
        for steps in a.bc_steps:
            print(json.dumps(measure(a.task, a.scale, demos, steps, a.episodes, a.seed, a.progress)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
