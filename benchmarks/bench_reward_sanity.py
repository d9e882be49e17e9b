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

**Ranking AUC of every method** (``--auc``, issue 18's must-show): per task and method, the
probability that an expert step out-scores a random-action step (ties count half; 0.5 = no order,
1 = every expert step above every random one; :func:`baselines.evaluation.ranking_auc`). Expert
steps: the ``--n`` held-out demos (the last of the 100). Random steps: ``--n`` uniform-random-action
videos as long as the mean held-out demo (:func:`baselines.evaluation.random_action_videos`, seed 17;
ReLAM labels its own points-only random episodes of that length, :func:`random_side`). The success
reward is never paid (pixels / keypoints only). The methods and what they are fitted on:

* ``relam``: Eqs. (3)-(5) with ground-truth subgoals (each demo's own keyframes; an expert replay
  from the random episode's start), and with a cached anticipation model's subgoals when
  ``--subgoals auto/model`` finds one (as in the sanity table above);
* ``dacfo``: a 64 px discriminator fitted ``--dacfo-steps`` steps on the first ``--n-train`` demos
  against ``--n-train`` random videos (the online phase's first rollouts, in effect), with its
  held-out accuracy;
* ``diffusion_reward``: a small CPU video model (``--diffusion-size`` px, ``--diffusion-channels``,
  ``--diffusion-steps`` steps) on the first ``--n-train`` demos: its entropy term alone
  (``entropy``) and with RND after three passes over the random training videos (``ce+rnd``);
* ``image_subgoal`` / ``oracle``: the IS generator (``--is-flow-steps``) and temporal embedding
  (``--is-embedding-steps``) fitted on the first ``--n-train`` demos, threshold calibrated on them;
  Oracle takes each demo's own keyframes and replays the expert from each random video's start;
  ``--is-components SCALE`` takes instead the components a ``table4`` run of that scale uses
  (:func:`baselines.image_subgoal.fit_components`, cached).

These are the smallest models that train on a 2-core CPU in minutes, not the runs' quick-scale
models (the README gives the quick Diffusion Reward model's AUC, trained on a GPU)::

    nice -n 10 .venv/bin/python benchmarks/bench_reward_sanity.py --auc --tasks drawer-open-v3 --n 4
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


AUC_METHODS = ("relam", "diffusion_reward", "dacfo", "image_subgoal", "oracle")
RANDOM_VIDEO_SEED = 17  # random_action_videos(seed=...): env seeds 17000 + i


def _auc_row(task: str, method: str, variant: str, expert: list[np.ndarray], random: list[np.ndarray],
             **extra: Any) -> dict[str, Any]:
    from baselines.evaluation import ranking_auc

    e, r = np.concatenate(expert).astype(np.float64), np.concatenate(random).astype(np.float64)
    return {"task": task, "method": method, "variant": variant, "auc": ranking_auc(e, r),
            "expert_mean": float(e.mean()), "random_mean": float(r.mean()), "n_expert_steps": int(e.size),
            "n_random_steps": int(r.size), **extra}


def ranking_aucs(task: str, methods: list[str], n: int, n_train: int, a: argparse.Namespace,
                 anticipation: Any = None) -> list[dict[str, Any]]:
    """The ``--auc`` rows of one task (see the module docstring)."""
    from types import SimpleNamespace

    from baselines.evaluation import random_action_videos
    from relam.demos import load_demos
    from relam.reward import RewardSettings

    demos = heldout_demos(task, n)
    test_e = [d.frames for d in demos]
    steps = int(round(np.mean([len(v) - 1 for v in test_e])))
    rand = random_action_videos(task, n=n_train + n, steps=steps, seed=RANDOM_VIDEO_SEED)
    train_r, test_r = rand[:n_train], rand[n_train:]
    rand_demos = [SimpleNamespace(frames=v, task=task, seed=RANDOM_VIDEO_SEED * 1000 + n_train + i, noisy=True)
                  for i, v in enumerate(test_r)]
    train = load_demos(task, n=n_train) if set(methods) - {"relam"} else []
    if {d.seed for d in train} & {d.seed for d in demos}:
        raise SystemExit(f"{task}: --n-train {n_train} overlaps the {n} held-out demos; lower it")
    rows: list[dict[str, Any]] = []

    def say(row: dict[str, Any]) -> None:
        rows.append(row)
        print(f"  {row['method']:17s} {row['variant']:12s} AUC {row['auc']:.3f}  "
              f"(expert {row['expert_mean']:+.3f}, random {row['random_mean']:+.3f})", flush=True)

    if "relam" in methods:
        settings = RewardSettings()
        for variant, model in (("ground truth", None), ("anticipated", anticipation)):
            if variant == "anticipated" and model is None:
                continue
            t0 = time.time()
            exp = expert_side(demos, model, settings)
            rnd = random_side(task, n, model, settings, steps)
            say(_auc_row(task, "relam", variant, exp["rewards"], rnd["rewards"], seconds=time.time() - t0))
    if "dacfo" in methods:
        from baselines.dacfo import DACfO

        t0 = time.time()
        d = DACfO(size=64, seed=0, device="cpu")
        d.fit([x.frames for x in train], policy_videos=train_r, steps=a.dacfo_steps)
        acc = d.accuracy_items(*[tuple(np.concatenate(p) for p in zip(*[d.items_from_video(v) for v in vids]))
                                 for vids in (test_e, test_r)])
        say(_auc_row(task, "dacfo", f"{a.dacfo_steps} steps", [d.reward(v) for v in test_e],
                     [d.reward(v) for v in test_r], seconds=time.time() - t0, **acc))
    if "diffusion_reward" in methods:
        from baselines.diffusion_reward import CE_WEIGHTINGS, DiffusionReward

        t0 = time.time()
        ch = tuple(int(c) for c in a.diffusion_channels.split(","))
        m = DiffusionReward(size=a.diffusion_size, channels=ch, batch=16, lr=1e-3, seed=0)
        m.fit(train, steps=a.diffusion_steps, device="cpu")
        m.use_rnd = False
        # the entropy term alone under each step weighting (the AUC does not see the standardisation)
        for w in CE_WEIGHTINGS:  # the default first
            m.ce_weighting = w
            say(_auc_row(task, "diffusion_reward", "entropy" + ("" if w == CE_WEIGHTINGS[0] else f" ({w})"),
                         [m.reward(v) for v in test_e], [m.reward(v) for v in test_r], seconds=time.time() - t0))
        m.ce_weighting = CE_WEIGHTINGS[0]
        m.use_rnd = True
        for _ in range(3):
            m.update(train_r)
        say(_auc_row(task, "diffusion_reward", "ce+rnd", [m.reward(v) for v in test_e], [m.reward(v) for v in test_r],
                     seconds=time.time() - t0))
    if {"image_subgoal", "oracle"} & set(methods):
        from baselines.embedding import TemporalEmbedding
        from baselines.is_generator import FlowSettings, SubgoalImageModel
        from baselines.is_reward import (ImageRewardSettings, ImageSubgoalLabeller, ImageSubgoalPlanner,
                                         OracleSubgoalPlanner, calibrate_threshold)
        from relam.keypoints import KeypointSettings
        from relam.subgoals import build_subgoal_dataset
        from relam.wrappers import close_planner

        t0 = time.time()
        if a.is_components:  # a run's own components (cached by fit_components; trained when missing)
            from baselines.image_subgoal import fit_components
            from relam.experiments.spec import load_spec

            n_is = load_spec("table4").budget(task, a.is_components).n_demos
            comp = fit_components(task, n_is, a.is_components)
            emb, gen, thr = comp.embedding, comp.model, comp.similarity_threshold
        else:
            emb = TemporalEmbedding()
            emb.fit([x.frames for x in train], steps=a.is_embedding_steps, progress=False)
            gen = SubgoalImageModel(FlowSettings(train_steps=a.is_flow_steps))
            gen.fit(build_subgoal_dataset(task, KeypointSettings(), n_demos=n_train, progress=False).items,
                    progress=False, device="cpu")
            thr = calibrate_threshold(ImageSubgoalPlanner(gen), emb, train[:10])
        reward = ImageRewardSettings(similarity_threshold=thr)
        fit_s = time.time() - t0
        for method in ("image_subgoal", "oracle"):
            if method not in methods:
                continue
            oracle = method == "oracle"
            planner = OracleSubgoalPlanner() if oracle else ImageSubgoalPlanner(gen)
            lab = ImageSubgoalLabeller(planner, emb, reward, own_keyframes=oracle, name=method)
            try:
                e_lab = [lab.label(x) for x in demos]
                r_lab = [lab.label(x) for x in rand_demos]
            finally:
                close_planner(planner)
            say(_auc_row(task, method, f"thr {thr:.4f}", [x.rewards for x in e_lab], [x.rewards for x in r_lab],
                         seconds=fit_s + time.time() - t0,
                         expert_stages=float(np.mean([x.info["stages"][-1] for x in e_lab])),
                         random_stages=float(np.mean([x.info["stages"][-1] for x in r_lab]))))
    return rows


def print_auc_table(rows: list[dict[str, Any]]) -> None:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cols = list(dict.fromkeys((r["method"], r["variant"]) for r in rows))
    head = f"{'method':18s} {'variant':14s} " + " ".join(f"{t:>22s}" for t in tasks)
    print(head)
    print("-" * len(head))
    for method, variant in cols:
        cells = []
        for t in tasks:
            r = next((r for r in rows if r["task"] == t and r["method"] == method and r["variant"] == variant), None)
            cells.append(f"{r['auc']:22.3f}" if r else f"{'-':>22s}")
        print(f"{method:18s} {variant:14s} " + " ".join(cells))
    print("AUC: probability that an expert step out-scores a random-action step (ties half; 0.5 = no order).")


def main_auc(a: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    import torch

    from relam.anticipation import load_anticipation

    torch.set_num_threads(1)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(AUC_METHODS))
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose from {list(AUC_METHODS)}")
    rows: list[dict[str, Any]] = []
    t_all = time.time()
    for task in a.tasks:
        model = None
        if "relam" in methods and a.subgoals != "ground_truth":
            demos = heldout_demos(task, a.n)
            path = a.model or cached_model(task, {int(d.seed) for d in demos})
            model = load_anticipation(path) if path is not None else None
        print(f"{task}:", flush=True)
        rows += ranking_aucs(task, methods, a.n, a.n_train, a, anticipation=model)
    print()
    print_auc_table(rows)
    out = a.out or cache_dir() / "benchmarks" / "ranking_auc.json"
    atomic_write_json(out, {"rows": rows, "n": a.n, "n_train": a.n_train, "seconds": round(time.time() - t_all, 1),
                            "settings": {k: v for k, v in vars(a).items() if isinstance(v, (int, float, str))}})
    print(f"wrote {out} ({time.time() - t_all:.0f} s)")
    return 0


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
    g = p.add_argument_group("ranking AUC of every method (--auc; see the module docstring)")
    g.add_argument("--auc", action="store_true", help="print the expert-vs-random ranking AUC per method and task")
    g.add_argument("--methods", default=",".join(AUC_METHODS), help="comma-separated, of " + ", ".join(AUC_METHODS))
    g.add_argument("--n-train", type=int, default=8, help="demos (and random videos) the learned rewards fit on")
    g.add_argument("--dacfo-steps", type=int, default=200)
    g.add_argument("--diffusion-size", type=int, default=16)
    g.add_argument("--diffusion-channels", default="16,32")
    g.add_argument("--diffusion-steps", type=int, default=600)
    g.add_argument("--is-flow-steps", type=int, default=600)
    g.add_argument("--is-embedding-steps", type=int, default=300)
    g.add_argument("--is-components", choices=("smoke", "quick", "paper"), default=None,
                   help="IS/Oracle: the components a table4 run of this scale uses (fit_components, cached; "
                        "n_demos from table4's budget) instead of fitting them here")
    a = p.parse_args(argv)
    if not 1 <= a.n <= N_DEMOS:
        p.error(f"--n must be in 1..{N_DEMOS}")
    if a.auc:
        if a.out is None:
            a.out = cache_dir() / "benchmarks" / "ranking_auc.json"
        return main_auc(a, p)
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
