"""Which stage threshold lets near-expert behaviour through the IS / Oracle stage machine?

The IS and Oracle rewards (:mod:`baselines.is_reward`) end a stage when the cosine similarity of the
current frame to the target image, in the task's temporal embedding, reaches ``similarity_threshold``.
By default that threshold is *calibrated* on the generated subgoals (:func:`calibrate_threshold`:
the quantile of the best similarity each clean expert demo reaches to them), which gave 0.992 on
drawer-open at quick scale.  The Oracle applies it to the *true* keyframes, where a policy's frames
never match exactly: this script measures, per behaviour and per threshold, how many of the plan's
stages the stage machine (:class:`baselines.is_reward.ImageSubgoalReward`) passes, next to the
simulator's success, so a "done" that does not match the task's success shows up before a long run.

Behaviours, rolled out through :class:`baselines.is_reward.ImageSubgoalWrapper` from fixed episode
seeds (10**6 + i): the scripted expert with Gaussian action noise of each ``--noise`` std (0: the
replay the Oracle's keyframes come from), zero actions (holding still) and uniform random actions.

Example (drawer-open-v3, the quick components from the cache, about 3 minutes on one core)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_oracle_threshold.py drawer-open-v3 --episodes 8

Measured (session 43, 8 episodes, Oracle; mean stage of 4 at thresholds 0.8 / 0.85 / 0.9 / 0.95 /
0.98 / 0.992): expert + noise 0.3 (all succeed) 4.0 / 4.0 / 4.0 / 2.75 / 1.25 / 0.75; noise 0.6 (88 %
succeed) 2.62 / 2.0 / 1.25 / 0.75 / 0.25 / 0.25; random 0.12 / 0.12 / 0.12 / 0 / 0 / 0; holding still
0.  The calibrated threshold's 40 maxima lie in 0.980-0.999, so no calibration quantile goes below 0.98.
"""
from __future__ import annotations

import argparse

import numpy as np

from baselines.image_subgoal import fit_components
from baselines.is_reward import ImageSubgoalPlanner, ImageSubgoalWrapper, OracleSubgoalPlanner, stages_passed
from relam.tasks import get_task, make_env
from relam.wrappers import close_planner


def _episode(env: ImageSubgoalWrapper, seed: int, behaviour: str, noise: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """(frame embeddings (T, D), target embeddings (S, D), success) of one episode."""
    from metaworld.policies import ENV_POLICY_MAP

    env.reset(seed=seed)
    task = env.env.unwrapped.task
    policy = ENV_POLICY_MAP[task.env_id]() if behaviour == "expert" else None
    embs, success = [], False
    for _ in range(task.horizon):
        if policy is not None:
            action = np.clip(policy.get_action(env.env.unwrapped.state()), -1, 1)
            action = np.clip(action + rng.normal(0.0, noise, action.shape), -1, 1) if noise else action
        elif behaviour == "still":
            action = np.zeros(env.action_space.shape)
        else:
            action = rng.uniform(-1, 1, env.action_space.shape)
        obs, _, terminated, truncated, info = env.step(action)
        embs.append(obs["embedding"])
        success |= bool(info["success"])
        if terminated or truncated:
            break
    return np.stack(embs), env.reward_fn.targets, success


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task", nargs="?", default="drawer-open-v3", help="a Meta-World task (default drawer-open-v3)")
    ap.add_argument("--planner", choices=["oracle", "generated"], default="oracle",
                    help="true keyframes (Oracle) or generated subgoals (IS)")
    ap.add_argument("--scale", default="quick", help="whose components (generator, embedding): smoke/quick/paper")
    ap.add_argument("--episodes", type=int, default=8, help="episodes per behaviour")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.3, 0.6], help="expert action-noise stds")
    ap.add_argument("--thresholds", type=float, nargs="+",
                    default=[0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.992, 0.995])
    args = ap.parse_args(argv)
    spec = get_task(args.task)
    if spec.suite != "metaworld":
        ap.error(f"task {args.task}: the scripted expert here is Meta-World's (got suite {spec.suite})")
    comp = fit_components(args.task, 100, args.scale)
    planner = OracleSubgoalPlanner() if args.planner == "oracle" else ImageSubgoalPlanner(comp.model)
    env = ImageSubgoalWrapper(make_env(spec), planner, comp.embedding, observe_embeddings=True)
    rng = np.random.default_rng(0)
    seeds = [10**6 + i for i in range(args.episodes)]
    print(f"{args.task}, {args.planner} subgoals, {args.scale} components; calibrated threshold "
          f"{comp.similarity_threshold:.4f}; {args.episodes} episodes per behaviour")
    print("| behaviour | success | " + " | ".join(f"stage @ {t}" for t in args.thresholds) + " |")
    print("|---|---|" + "---|" * len(args.thresholds))
    behaviours = [("expert", n) for n in args.noise] + [("still", 0.0), ("random", 0.0)]
    try:
        for behaviour, noise in behaviours:
            eps = [_episode(env, s, behaviour, noise, rng) for s in seeds]
            n_sub = np.mean([len(t) for _, t, _ in eps])
            st = [np.mean([stages_passed(e, t, th) for e, t, _ in eps]) for th in args.thresholds]
            name = f"expert + noise {noise}" if behaviour == "expert" else behaviour
            print(f"| {name} | {np.mean([s for *_, s in eps]):.2f} | " +
                  " | ".join(f"{v:.2f} / {n_sub:.0f}" for v in st) + " |")
    finally:
        close_planner(planner)
        env.close()


if __name__ == "__main__":
    main()
