"""Online ReLAM check: hierarchical PPO on a Meta-World task with keypoint subgoals.

The "learning first" check of the project: before spending hours on pixels, show that the reward
and the segmented-GAE PPO teach a policy to reach the subgoals, on the fast points-only loop (no
rendering after reset; the policy sees current and target keypoints only).  ``--image`` adds the
64 px image (the paper's full input, about 10x slower here).

Writes ``train.csv``, ``eval.csv``, ``curve.png``, ``checkpoint.zip`` and ``summary.json`` under
``--out`` (default: ``<cache>/bench_online/<task>-<mode>-s<seed>``); a second call resumes.

Examples: the points-only check with ground-truth subgoals (minutes on one core), and the issue-5
quick run -- the paper's setting: image + keypoints, subgoals from the anticipation model::

    python benchmarks/bench_online.py --task drawer-open-v3 --steps 60000 --eval-every 20000
    python benchmarks/bench_online.py --task drawer-open-v3 --image --subgoals generated \
        --steps 200000 --eval-every 10000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any


def reward_theta(args: argparse.Namespace) -> str:
    from relam.reward import RewardSettings

    return f"{args.theta if args.theta is not None else RewardSettings().theta_s:g}"


def main(argv: list[str] | None = None) -> int:
    from relam.reward import REACH_RULES, STAGE_TERMS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--task", default="drawer-open-v3")
    ap.add_argument("--steps", type=int, default=60_000, help="environment steps of PPO")
    ap.add_argument("--eval-every", type=int, default=20_000)
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image", action="store_true", help="also give the policy the 64 px image")
    ap.add_argument("--proprio", action="store_true",
                    help="also give the policy the gripper's position and opening (policy_input points+proprio)")
    ap.add_argument("--shape", default="piecewise_linear", help="reward shape (relam.reward.SHAPES)")
    ap.add_argument("--theta", type=float, default=None, help="subgoal threshold theta_s in px (default: RewardSettings)")
    ap.add_argument("--final-theta", type=float, default=None,
                    help="the last subgoal's threshold in px (RewardSettings.final_theta_s; default: the task "
                         "entry's final_theta_s, else theta_s)")
    ap.add_argument("--skip-ahead", type=int, default=None,
                    help="subgoals past the current target that may be met directly (RewardSettings.skip_ahead; "
                         "default: the task entry's skip_ahead, else 0)")
    ap.add_argument("--stage-term", choices=STAGE_TERMS, default=None,
                    help="RewardSettings.stage_term: a penalty per unreached subgoal or one penalty a step until "
                         "all are reached (default: the task entry's stage_term)")
    ap.add_argument("--subgoals", choices=("ground_truth", "generated"), default="ground_truth",
                    help="ground truth (expert rollout from the same start) or the anticipation model's "
                         "(trained once at the quick scale on --n-demos demos and cached)")
    ap.add_argument("--n-demos", type=int, default=100, help="demos for the anticipation model (--subgoals generated)")
    ap.add_argument("--reach", choices=REACH_RULES, default=None,
                    help="subgoal reached when every keypoint / the mean distance is within theta_s (default: the "
                         "task entry's reach)")
    ap.add_argument("--point-theta", type=float, default=None,
                    help="with reach mean, every keypoint also within this many px (RewardSettings.point_theta_s)")
    ap.add_argument("--object-theta", type=float, default=None,
                    help="RewardSettings.object_theta_s: with reach mean, the object point within this many px too")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--lr-schedule", choices=("constant", "linear"), default="constant",
                    help="linear: anneal the learning rate to 0 at --steps")
    ap.add_argument("--ent-coef", type=float, default=0.0, help="PPO entropy bonus coefficient")
    ap.add_argument("--segment-bootstrap", type=float, default=0.0,
                    help="PPOSettings.segment_bootstrap: share of the next segment's value kept at a subgoal end "
                         "(0: the paper's cut)")
    ap.add_argument("--target-kl", type=float, default=None,
                    help="SB3 target_kl: stop an update's epochs past 1.5x this approximate KL (default: none)")
    ap.add_argument("--separate-extractors", action="store_true",
                    help="PPOSettings.share_features_extractor=False: the actor and the critic each get their own "
                         "features extractor (image CNN and point MLP)")
    ap.add_argument("--sde", type=int, default=None, metavar="FREQ",
                    help="SB3's gSDE exploration (PPOSettings.use_sde), its noise redrawn every FREQ steps "
                         "(-1: once a rollout); --log-std-init then sets the noise map's log std")
    ap.add_argument("--n-steps", type=int, default=2000, help="PPO rollout length over all envs (appendix C: 2000)")
    ap.add_argument("--batch-size", type=int, default=64,
                    help="PPO minibatch size (appendix C: 64; 10 epochs over the rollout either way)")
    ap.add_argument("--n-envs", type=int, default=8, help="parallel environments (the rollout is split between them)")
    ap.add_argument("--log-std-init", type=float, default=-0.5, help="initial log std of the policy")
    ap.add_argument("--vec-env", choices=("dummy", "subproc"), default="dummy")
    ap.add_argument("--arm-bodies", nargs="+", default=None, metavar="BODY",
                    help="override the bodies the arm prompt names (e.g. the gripper's: hand rightclaw leftclaw ...)")
    ap.add_argument("--n-points", type=int, default=4, help="keypoints per subgoal (Fig. 6a: 4/8/12)")
    ap.add_argument("--object-points", type=int, default=None,
                    help="keypoints taken on the object before FPS covers the arm (default: the task entry's "
                         "object_points; ground-truth subgoals only)")
    ap.add_argument("--arm-after-object", action="store_true",
                    help="points after the object's on the arm only (KeypointSettings.arm_after_object; ground-truth subgoals only)")
    ap.add_argument("--max-step", type=int, default=None,
                    help="keyframe window M (default: the task entry's keyframe_max_step, else KeypointSettings.max_step, "
                         "40): shorter windows, more subgoals")
    ap.add_argument("--camera", type=float, nargs=7, default=None, metavar=("PX", "PY", "PZ", "LX", "LY", "LZ", "FOVY"),
                    help="override the task's camera: position, look-at point (world metres) and vertical fov")
    ap.add_argument("--post-success-steps", type=int, default=None,
                    help="override the task entry's post_success_steps (expert steps after its first success)")
    ap.add_argument("--no-segment-gae", action="store_true", help="plain GAE (ablation)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--reference", type=int, default=0, metavar="N",
                    help="instead of training: returns of reference behaviours on N seeds")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from relam.cache import atomic_write_json, cache_dir
    from relam.relam_method import task_reward_settings
    from relam.rl.ppo import PPOSettings, train_ppo
    from relam.wrappers import GroundTruthSubgoals, make_relam_env

    from relam.tasks import get_task

    task = get_task(args.task)
    if args.post_success_steps is not None:
        task = dataclasses.replace(task, post_success_steps=args.post_success_steps)
    if args.camera:
        from relam.tasks import CameraPose

        task = dataclasses.replace(task, camera=CameraPose(tuple(args.camera[:3]), tuple(args.camera[3:6]), args.camera[6]))
    if args.max_step is not None:  # the task entry's window wins over KeypointSettings.max_step
        task = dataclasses.replace(task, keyframe_max_step=args.max_step)
    if args.arm_bodies:
        prompts = dict(task.prompts)
        prompts[task.arm_prompt] = tuple(args.arm_bodies)
        task = dataclasses.replace(task, prompts=prompts)
    final_theta = args.final_theta if args.final_theta is not None else task.final_theta_s
    mode = ("image" if args.image else "points") + ("+proprio" if args.proprio else "") + ("-gen" if args.subgoals == "generated" else "")
    # the step budget is part of the name: a longer run must not resume a shorter one's checkpoint,
    # whose learning-rate schedule annealed to 0 at the shorter budget
    variant = (f"{args.steps // 1000}k-{args.shape}-th{reward_theta(args)}-"
               + (f"fth{final_theta:g}-" if final_theta is not None else "")
               + (f"skip{args.skip_ahead}-" if args.skip_ahead is not None else "")
               + ("" if args.stage_term is None else f"{args.stage_term}-")
               + f"{args.reach or task.reach}-" + (f"pt{args.point_theta:g}-" if args.point_theta else "")
               + (f"ot{args.object_theta:g}-" if args.object_theta else "") + f"ps{task.post_success_steps}"
               f"-e{args.n_envs}-ls{args.log_std_init:g}-lr{args.lr:g}"
               + ("-lin" if args.lr_schedule == "linear" else "") + (f"-ent{args.ent_coef:g}" if args.ent_coef else "") + ("-arm" + "+".join(args.arm_bodies) if args.arm_bodies else "")
               + (f"-ns{args.n_steps}" if args.n_steps != 2000 else "") + (f"-b{args.batch_size}" if args.batch_size != 64 else "")
               + (f"-kl{args.target_kl:g}" if args.target_kl else "") + ("-plaingae" if args.no_segment_gae else "")
               + ("-sepfx" if args.separate_extractors else "")
               + (f"-sb{args.segment_bootstrap:g}" if args.segment_bootstrap else "")
               + (f"-sde{args.sde}" if args.sde is not None else "")
               + (f"-M{args.max_step}" if args.max_step else "") + (f"-n{args.n_points}" if args.n_points != 4 else "")
               + (f"-obj{args.object_points}" if args.object_points is not None else "")
               + ("-armrest" if args.arm_after_object else "")
               + ("-cam" + "_".join(f"{v:g}" for v in args.camera) if args.camera else ""))
    # the task entry (camera, keypoint rule, thresholds) as run: a changed entry must not resume a
    # checkpoint trained under the old one
    from relam.cache import settings_hash
    from relam.tasks import run_only_fields

    variant += "-t" + settings_hash({"entry": task.to_dict(), "run": run_only_fields(task)})[:6]
    out = args.out or cache_dir() / "bench_online" / f"{args.task}-{mode}-{variant}-s{args.seed}"
    # the task entry's reward fields, as relam run uses them (button-press-wall-v3: final_theta_s 3 px)
    # and the flags given on top of them
    flags = {"final_theta_s": args.final_theta, "skip_ahead": args.skip_ahead, "stage_term": args.stage_term,
             "theta_s": args.theta, "reach": args.reach, "point_theta_s": args.point_theta,
             "object_theta_s": args.object_theta}
    reward = dataclasses.replace(task_reward_settings(task, args.shape),
                                 **{k: v for k, v in flags.items() if v is not None})
    if args.reference:
        return reference_returns(task, args.reference, reward)
    ppo = PPOSettings(learning_rate=args.lr, lr_schedule=args.lr_schedule, ent_coef=args.ent_coef, n_steps=args.n_steps, batch_size=args.batch_size, segment_gae=not args.no_segment_gae,
                      n_envs=args.n_envs, log_std_init=args.log_std_init, vec_env=args.vec_env,
                      target_kl=args.target_kl, segment_bootstrap=args.segment_bootstrap,
                      share_features_extractor=not args.separate_extractors, use_sde=args.sde is not None, sde_sample_freq=args.sde if args.sde is not None else -1)

    # flags that change how ground-truth plans are made; the anticipation models were trained on the entry's
    ground_truth_only = {"--camera": ("camera", args.camera), "--max-step": ("keyframes", args.max_step is not None),
                         "--object-points": ("object points", args.object_points is not None or args.arm_after_object)}
    if args.subgoals == "generated":
        for flag, (what, given) in ground_truth_only.items():
            if given:
                ap.error(f"{flag}: the anticipation models are trained on the task entry's {what}; use it with "
                         "--subgoals ground_truth")
        from relam.relam_method import anticipation_model
        from relam.wrappers import AnticipationPlanner

        planner = AnticipationPlanner(anticipation_model(args.task, args.n_points, args.n_demos, "quick", progress=True))
    else:
        from relam.keypoints import KeypointSettings

        # --max-step reaches the plan through the task entry's keyframe_max_step (set above)
        kp = KeypointSettings(num_points=args.n_points, object_points=args.object_points or 1,
                              arm_after_object=args.arm_after_object)
        planner = GroundTruthSubgoals(keypoint_settings=kp)

    def env_fn(seed: int):
        return make_relam_env(task, planner, seed=seed, settings=reward, n_points=args.n_points,
                              include_image=args.image, policy_image_size=64, include_proprio=args.proprio)

    t0 = time.time()
    res = train_ppo(env_fn, ppo, out, total_steps=args.steps, eval_every=args.eval_every,
                    eval_episodes=args.eval_episodes, seed=args.seed, progress=True,
                    title=f"{args.task} {mode} {args.subgoals} subgoals")
    wall = time.time() - t0
    import csv

    with open(out / "eval.csv") as f:
        evals = list(csv.DictReader(f))
    summary = {"task": args.task, "mode": mode, "seed": args.seed, "steps": int(res.metrics["env_steps"]),
               "wall_s": round(wall, 1), "steps_per_s": round(res.metrics["env_steps"] / max(wall, 1e-9), 1),
               "final_success": res.success, "curve": res.curve,
               "mean_stage": [(int(e["step"]), float(e["mean_stage"])) for e in evals],
               "reward": reward.to_dict(), "ppo": ppo.to_dict()}
    atomic_write_json(out / "summary.json", summary)
    print(json.dumps({k: summary[k] for k in ("steps", "wall_s", "steps_per_s", "final_success", "curve",
                                              "mean_stage")}, indent=1))
    print(f"outputs in {out}")
    return 0


def reference_returns(task: Any, n: int, reward: Any) -> int:
    """Undiscounted ReLAM returns of expert / stop after subgoal k / hold still / random, under the
    reward settings ``reward`` that a training run with the same flags uses (the task entry's fields
    and the flags on top).

    The expert replays the scripted expert's actions (then holds still); "stop after k" replays
    them until the k-th subgoal is reached, then holds still.  The reward must order them
    expert > stop after k (larger k better) > hold still > random, or PPO is taught the wrong thing.
    """
    import numpy as np

    from relam.demos import rollout_expert
    from relam.tasks import make_env
    from relam.wrappers import GroundTruthSubgoals, ReLAMWrapper

    planner = GroundTruthSubgoals()
    env = ReLAMWrapper(make_env(task, render=False), planner, settings=reward,
                       include_image=False)
    expert_env = make_env(task, render=False)
    horizon = env.unwrapped.task.horizon
    table: dict[str, list[float]] = {}
    for seed in range(n):
        actions = rollout_expert(expert_env, seed).actions
        env.reset(seed=seed)
        n_sub = len(env.plan_) - 1

        def run(policy) -> float:
            env.reset(seed=seed)
            ret, stage = 0.0, 0
            for t in range(horizon):
                _, r, _, _, info = env.step(policy(t, stage))
                ret, stage = ret + r, info["stage"]
            return ret

        zero = np.zeros(env.action_space.shape, np.float32)
        rng = np.random.default_rng(seed)
        rows = {"expert": run(lambda t, st: actions[t] if t < len(actions) else zero)}
        for k in range(n_sub - 1, 0, -1):
            rows[f"stop_after_{k}"] = run(lambda t, st, k=k: actions[t] if st < k and t < len(actions) else zero)
        rows["hold_still"] = run(lambda t, st: zero)
        rows["random"] = run(lambda t, st: rng.uniform(-1, 1, zero.shape).astype(np.float32))
        for k, v in rows.items():
            table.setdefault(k, []).append(v)
        print(f"seed {seed} ({n_sub} subgoals): " + ", ".join(f"{k} {v:.0f}" for k, v in rows.items()))
    env.close()
    expert_env.close()
    print("mean: " + ", ".join(f"{k} {np.mean(v):.0f}" for k, v in table.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
