"""Reward sanity on real data: does the ReLAM reward tell expert behaviour from random behaviour?

For each Meta-World task (issue 5, "reward sanity on real data"):

* **held-out expert demos** -- the last ``--n`` of the task's 100 stored expert videos (the ones
  the anticipation model holds out) are labelled with :class:`relam.relam_method.ReLAMLabeller`: the
  plan's first row is tracked through the recorded demo with the sim tracker and
  :func:`relam.reward.label_trajectory` pays the reward.  The reward should reach every stage and
  pay the final bonus;
* **random-action episodes** -- ``--n`` episodes of uniform random actions through
  :class:`relam.wrappers.ReLAMWrapper` (points only, no rendering after reset), full horizon.
  The reward should not reach every stage;
* **Spearman correlation** between the ReLAM per-step reward and Meta-World's own dense reward
  (``Demo.env_reward`` / ``info["env_reward"]``), expert and random steps pooled (the paper's
  Fig. 5c says the two are close).

Subgoals (``--subgoals``): ``auto`` uses a trained anticipation model from the cache when one
exists whose held-out split contains every evaluated demo (see
:func:`relam.relam_method.anticipation_model`; train one with ``relam run`` or
``python -m relam.anticipation``), else the ground truth; ``ground_truth`` takes each demo's own
keyframe keypoints (:func:`relam.subgoals.subgoal_sequence`) for the expert demos and an expert
replay from the same start (:class:`relam.wrappers.GroundTruthSubgoals`) for random episodes.
With ground-truth subgoals the expert reaches every stage by construction (its own keyframes are
the subgoals); the test is then the random episodes and the correlation.

Returns depend on episode length (every step in an unfinished stage costs ``unreached_penalty``
per unreached subgoal): expert demos stop at success (65-90 steps), random episodes run the
horizon (200), so the table also gives the mean reward per step.

Example (about 2 minutes for the three tasks on one core)::

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_reward_sanity.py
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from relam.cache import atomic_write_json, cache_dir, read_json
from relam.offline import spearman

TASKS = ("drawer-open-v3", "door-open-v3", "button-press-wall-v3")
N_DEMOS = 100  # the stored expert demos per task; the held-out ones are the last
RANDOM_SEED_BASE = 1_500_000  # env seeds of the random episodes: never a demo's (see relam.demos)


def heldout_demos(task: str, n: int) -> list[Any]:
    """The last ``n`` of the task's 100 expert demos (made first if missing)."""
    from relam.demos import Demo, demo_dir, make_demos

    make_demos(task, n=N_DEMOS, progress=True)
    folder = demo_dir(task)
    return [Demo.load(folder / f"expert_{i:03d}.npz") for i in range(N_DEMOS - n, N_DEMOS)]


def cached_model(task: str, seeds: set[int]) -> Path | None:
    """The newest cached anticipation model of ``task`` that held out ``seeds`` and was trained on
    the stored demos.

    The split names seeds only, so a model trained on an older recording of the demos (e.g. before
    a simulator fix changed frame 0) would pass on seeds alone; its task-indication frame -- frame 0
    of its smallest-seed training demo, :func:`relam.anticipation.default_task_frames` -- must
    also equal that demo's frame 0 as stored now.
    """
    import torch

    from relam.demos import Demo, demo_dir

    found = []
    for model in (cache_dir() / "anticipation" / task).glob("*/model.pt"):
        split = model.parent / "split.json"
        if not split.exists():
            continue
        held = {int(s) for t, s in read_json(split).get("heldout", []) if t == task}
        if seeds <= held:
            found.append((model.stat().st_mtime, model))
    first = Demo.load(demo_dir(task) / "expert_000.npz").frames[0]
    for _, model in sorted(found, reverse=True):
        frame = torch.load(model, map_location="cpu", weights_only=False)["task_frames"].get(task)
        if frame is not None and np.array_equal(np.asarray(frame), first):
            return model
        print(f"{task}: skipping {model}: trained on another recording of the demos (task frame differs)")
    return None


def expert_side(demos: list[Any], model: Any, settings: Any) -> dict[str, Any]:
    """Label held-out demos: per demo stages reached, plan length, return, per-step rewards."""
    from tqdm.auto import tqdm

    from relam.keypoints import KeypointSettings
    from relam.relam_method import ReLAMLabeller
    from relam.subgoals import subgoal_sequence
    from relam.wrappers import FixedSubgoals

    out: dict[str, list] = {"stages": [], "n_subgoals": [], "returns": [], "lengths": [], "rewards": [],
                            "env_rewards": []}
    for demo in tqdm(demos, desc="expert demos", leave=False):
        if model is None:
            seq, _ = subgoal_sequence(demo, KeypointSettings())
            planner: Any = FixedSubgoals(np.asarray(seq.keypoints, np.float64))
        else:
            planner = model
        lab = ReLAMLabeller(planner, tracker="sim", settings=settings).label(demo)
        out["stages"].append(int(lab.info["stages"][-1]))
        out["n_subgoals"].append(len(lab.info["plan"]) - 1)
        out["returns"].append(float(lab.rewards.sum()))
        out["lengths"].append(len(lab.rewards))
        out["rewards"].append(lab.rewards)
        out["env_rewards"].append(np.asarray(demo.env_reward, np.float64))
    return out


def random_side(task: str, n: int, model: Any, settings: Any, steps: int | None) -> dict[str, Any]:
    """``n`` random-action episodes through the points-only ReLAM wrapper."""
    from tqdm.auto import tqdm

    from relam.tasks import make_env
    from relam.wrappers import AnticipationPlanner, GroundTruthSubgoals, ReLAMWrapper

    planner = AnticipationPlanner(model) if model is not None else GroundTruthSubgoals()
    env = ReLAMWrapper(make_env(task, render=False), planner, tracker="sim", settings=settings,
                       include_image=False)
    horizon = int(steps or env.unwrapped.task.horizon)
    out: dict[str, list] = {"stages": [], "n_subgoals": [], "returns": [], "lengths": [], "rewards": [],
                            "env_rewards": [], "success": []}
    try:
        for i in tqdm(range(n), desc="random episodes", leave=False):
            rng = np.random.default_rng(i)
            _, info = env.reset(seed=RANDOM_SEED_BASE + i)
            rew, env_rew, success = [], [], False
            for _ in range(horizon):
                _, r, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
                rew.append(r)
                env_rew.append(info["env_reward"])
                success = success or bool(info["success"])
                if term or trunc:
                    break
            out["stages"].append(int(info["stage"]))
            out["n_subgoals"].append(int(info["n_subgoals"]))
            out["returns"].append(float(np.sum(rew)))
            out["lengths"].append(len(rew))
            out["rewards"].append(np.asarray(rew, np.float64))
            out["env_rewards"].append(np.asarray(env_rew, np.float64))
            out["success"].append(success)
    finally:
        env.close()
    return out


def summarise(task: str, source: str, exp: dict, rnd: dict) -> dict[str, Any]:
    e_st, e_n = np.array(exp["stages"]), np.array(exp["n_subgoals"])
    r_st, r_n = np.array(rnd["stages"]), np.array(rnd["n_subgoals"])
    rew = np.concatenate(exp["rewards"] + rnd["rewards"])
    env = np.concatenate(exp["env_rewards"] + rnd["env_rewards"])
    return {
        "task": task, "subgoals": source, "n_expert": len(e_st), "n_random": len(r_st),
        "expert_all_stages": float(np.mean(e_st == e_n)),
        "random_all_stages": float(np.mean(r_st == r_n)),
        "random_env_success": float(np.mean(rnd["success"])),
        "expert_stages": float(e_st.mean()), "expert_n_subgoals": float(e_n.mean()),
        "random_stages": float(r_st.mean()), "random_n_subgoals": float(r_n.mean()),
        "expert_return": float(np.mean(exp["returns"])), "random_return": float(np.mean(rnd["returns"])),
        "expert_length": float(np.mean(exp["lengths"])), "random_length": float(np.mean(rnd["lengths"])),
        "expert_reward_per_step": float(np.concatenate(exp["rewards"]).mean()),
        "random_reward_per_step": float(np.concatenate(rnd["rewards"]).mean()),
        "spearman_pooled": spearman(rew, env),
        "spearman_expert": spearman(np.concatenate(exp["rewards"]), np.concatenate(exp["env_rewards"])),
        "spearman_random": spearman(np.concatenate(rnd["rewards"]), np.concatenate(rnd["env_rewards"])),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'task':22s} {'subgoals':12s} {'exp all':>7s} {'stages exp/rand (of S)':>24s} "
            f"{'return exp/rand':>17s} {'per step exp/rand':>18s} {'Spearman':>8s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        stages = f"{r['expert_stages']:.2f}/{r['random_stages']:.2f} ({r['expert_n_subgoals']:.1f})"
        print(f"{r['task']:22s} {r['subgoals']:12s} {r['expert_all_stages']:7.2f} {stages:>24s} "
              f"{r['expert_return']:8.1f}/{r['random_return']:<8.1f} "
              f"{r['expert_reward_per_step']:8.2f}/{r['random_reward_per_step']:<9.2f} {r['spearman_pooled']:8.3f}")
    print("exp all: fraction of held-out expert demos whose reward reached every stage (and the final bonus); "
          "Spearman: ReLAM vs Meta-World dense reward per step, expert and random steps pooled.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Writes <cache>/benchmarks/reward_sanity.json too.")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), help="Meta-World tasks (default: the three)")
    p.add_argument("--n", type=int, default=10, help="held-out expert demos and random episodes per task")
    p.add_argument("--subgoals", choices=("auto", "model", "ground_truth"), default="auto",
                   help="auto: a cached trained anticipation model when there is one, else ground truth")
    p.add_argument("--model", type=Path, default=None,
                   help="an anticipation checkpoint to use (one task's runs only; implies --subgoals model)")
    p.add_argument("--random-steps", type=int, default=None, help="steps per random episode (default: horizon)")
    p.add_argument("--out", type=Path, default=None, help="JSON output (default <cache>/benchmarks/reward_sanity.json)")
    a = p.parse_args(argv)
    if not 1 <= a.n <= N_DEMOS:
        p.error(f"--n must be in 1..{N_DEMOS}")
    import torch

    from relam.anticipation import load_anticipation
    from relam.reward import RewardSettings

    torch.set_num_threads(1)
    settings = RewardSettings()
    rows = []
    t_all = time.time()
    for task in a.tasks:
        t0 = time.time()
        demos = heldout_demos(task, a.n)
        path = a.model
        if path is None and a.subgoals != "ground_truth":
            path = cached_model(task, {int(d.seed) for d in demos})
            if path is None and a.subgoals == "model":
                p.error(f"no cached anticipation model of {task} holds out demo seeds "
                        f"{sorted(int(d.seed) for d in demos)}; pass --model PATH or --subgoals ground_truth")
        model = load_anticipation(path) if path is not None else None
        if model is not None and task not in model.tasks:
            p.error(f"--model {path} was trained on {model.tasks}, not on {task}")
        source = "model" if model is not None else "ground_truth"
        print(f"{task}: subgoals from {path if path is not None else 'ground truth (each demo / expert replay)'}")
        exp = expert_side(demos, model, settings)
        rnd = random_side(task, a.n, model, settings, a.random_steps)
        row = summarise(task, source, exp, rnd)
        row["model"] = str(path) if path is not None else None
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        print(f"  done in {row['seconds']} s")
    print()
    print_table(rows)
    out = a.out or cache_dir() / "benchmarks" / "reward_sanity.json"
    atomic_write_json(out, {"rows": rows, "reward_settings": settings.to_dict(), "n": a.n,
                            "seconds": round(time.time() - t_all, 1)})
    print(f"wrote {out} ({time.time() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
