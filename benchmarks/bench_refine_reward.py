"""Does the refinement's reward rank its own policies as the task does? (issue 18: why refinement
lowers drawer-open's base.)

For one task and seed of ``experiments/refine.yaml`` this plays the behaviour-cloning base and the
refined policy that ``relam run refine`` left (its ``checkpoint.zip``) on the same fixed evaluation
starts, in the refinement's own training environment (the held model reward, the whole horizon, no
stop at success), with the mean action, and prints one JSON line per policy:

- ``success``: the simulator reported success at some step;
- ``model_return``: the return PPO maximised (the learned three-term reward, queried every 10 steps
  and held), its mean over all, successful and failed episodes;
- ``env_return``: the simulator's dense reward over the same steps (Meta-World's shaped reward: a
  reference the refinement never sees);
- ``auc_success``: the probability that a successful episode's model return beats a failed one's
  (0.5: the reward does not tell them apart);
- ``spearman_env``: Spearman's rho of model and simulator returns over the episodes.

If the refined policy earns *more* model return than the base while succeeding less, PPO found what
the reward model pays for and the task does not (the refinement optimised the wrong thing); if it
earns less, PPO did not climb its own reward (an optimisation problem, not the reward's)::

    python benchmarks/bench_refine_reward.py drawer-open-v3 --seeds 0 1 2 --episodes 10

The runs must exist (``relam run refine --scale quick``); the reward model and the BC weights are read
from the cache they left.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def play(model, env, seeds) -> list[dict]:
    """Per-episode outcomes of ``model`` (mean action) on ``env`` from each seed."""
    from relam.rl.evaluation import run_episode

    eps: list[dict] = []
    acc = {"env": 0.0, "success_step": None}

    def observe(_env, _seed, steps, info, _done):
        if steps == 0:
            acc.update(env=0.0, success_step=None)
            return
        acc["env"] += float(info.get("env_reward", 0.0))
        if acc["success_step"] is None and info.get("success", False):
            acc["success_step"] = steps

    act = lambda obs: model.predict(obs, deterministic=True)[0]  # noqa: E731
    for s in seeds:
        ok, ret, n, _ = run_episode(act, env, int(s), observe=observe)
        eps.append({"seed": int(s), "success": bool(ok), "model_return": float(ret), "env_return": acc["env"],
                    "success_step": acc["success_step"], "length": int(n)})
    return eps


def summarise(eps: list[dict]) -> dict:
    """Success rate, mean returns (all / successful / failed), and how the model return ranks them."""
    from baselines.evaluation import ranking_auc
    from relam.offline import spearman

    ok = np.array([e["success"] for e in eps])
    mret = np.array([e["model_return"] for e in eps])
    eret = np.array([e["env_return"] for e in eps])

    def mean(x):
        return round(float(np.mean(x)), 1) if len(x) else None

    return {"episodes": len(eps), "success": round(float(ok.mean()), 3),
            "model_return": mean(mret), "model_return_success": mean(mret[ok]),
            "model_return_failure": mean(mret[~ok]), "env_return": mean(eret),
            "auc_success": round(ranking_auc(mret[ok], mret[~ok]), 3) if ok.any() and (~ok).any() else None,
            "spearman_env": _finite(round(spearman(mret, eret), 3))}


def _finite(x: float) -> float | None:
    """``x``, or None where it is NaN (JSON has no NaN)."""
    return None if np.isnan(x) else x


def measure(task: str, seed: int, episodes: int, scale: str = "quick") -> list[dict]:
    """The base and the refined policy of one refine cell, each summarised on ``episodes`` starts."""
    from baselines.vlm_reward import HeldModelReward, PolicyImage, bc_demos
    from baselines.vlm_training import _bc_policy_state, _make_refine_ppo, _ppo_settings, make_reward_model
    from relam.experiments import load_spec
    from relam.experiments.runner import expand
    from relam.experiments.store import ResultStore
    from relam.policy_gif import load_policy, run_context
    from relam.rl.evaluation import eval_seeds
    from relam.rl.ppo import make_vec_env
    from relam.tasks import make_env

    spec = load_spec("refine")
    refined_label = [m.label for m in spec.methods if m.settings.get("refine_iterations", None) != 0][0]
    [run] = [r for r in expand(spec, scale) if r.task == task and r.label == refined_label and r.seed == seed]
    store = ResultStore()
    ckpt = store.work_path(run.key) / "checkpoint.zip"
    if store.get(run.key) is None or not ckpt.exists():
        raise SystemExit(f"{task} seed {seed}: no finished refined run with a checkpoint ({run.key}); "
                         f"make it with: relam run refine --scale {scale} --tasks {task} --seeds {seed}")
    ctx = run_context(run, store.work_path(run.key))  # the run's settings, budget and task entry
    settings, budget, tspec = ctx.settings, ctx.budget, ctx.task_spec()
    reward_model = make_reward_model(settings, task, budget.n_demos, scale)
    env = PolicyImage(HeldModelReward(make_env(tspec), reward_model, settings.query_every))
    ppo = _ppo_settings(budget)
    venv = make_vec_env(lambda s: PolicyImage(make_env(tspec)), seed, ppo)
    seeds = eval_seeds(episodes)
    out = []
    try:
        base = _make_refine_ppo(venv, ppo, seed)
        weights, _ = _bc_policy_state(task, bc_demos(settings, budget), scale, seed, ppo, venv, False,
                                      steps=settings.bc_steps)
        base.policy.load_state_dict(weights)
        for name, model in (("base", base), ("refined", load_policy(ckpt))):
            t0 = time.time()
            eps = play(model, env, seeds)
            out.append({"task": task, "seed": seed, "policy": name, **summarise(eps),
                        "seconds": round(time.time() - t0, 1),
                        "per_episode": [[e["seed"], int(e["success"]), round(e["model_return"], 1),
                                         round(e["env_return"], 1)] for e in eps]})
    finally:
        venv.close()
        env.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench_refine_reward.py",
        description="The refine spec's base and refined policies under the refinement's own reward and "
                    "the simulator's (one JSON line per policy and seed).")
    p.add_argument("task", nargs="?", default="drawer-open-v3")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--episodes", type=int, default=10, help="evaluation starts (the spec's fixed seeds)")
    p.add_argument("--scale", default="quick", choices=("smoke", "quick", "paper"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    for seed in a.seeds:
        for row in measure(a.task, seed, a.episodes, a.scale):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
