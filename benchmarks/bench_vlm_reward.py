"""The learned three-term reward model of the VLM-style baseline on held-out data
(:mod:`baselines.vlm_models`): trained on a task's demos and random-action videos, its terms on
held-out expert pairs and random-action videos, and its cost::

    python benchmarks/bench_vlm_reward.py drawer-open-v3 --train 8 --test 4
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from baselines.evaluation import random_action_videos
from baselines.vlm_models import LearnedRewardConfig, LearnedRewardModel, pair_directions, query_seconds
from baselines.vlm_training import RANDOM_VIDEO_STEPS
from relam.demos import load_demos


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench_vlm_reward.py",
        description="Train the default (learned) three-term reward model on a task's demos and print its "
                    "terms on held-out expert pairs and random-action videos, and its cost.")
    p.add_argument("task", nargs="?", default="drawer-open-v3")
    p.add_argument("--train", type=int, default=16, help="expert demos to train on")
    p.add_argument("--test", type=int, default=4, help="held-out expert demos")
    p.add_argument("--steps", type=int, default=LearnedRewardConfig.steps)
    p.add_argument("--random", type=int, default=8, help="random-action videos to train on")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    demos = load_demos(a.task, n=a.train + a.test)
    rand = random_action_videos(a.task, a.random + 2, RANDOM_VIDEO_STEPS, seed=1)
    model = LearnedRewardModel(LearnedRewardConfig(steps=a.steps))
    t0 = time.time()
    model.fit(demos[:a.train], rand[:a.random], progress=not a.quiet)
    train_s = time.time() - t0
    test = demos[a.train:]
    dirs = [pair_directions(model, d.frames) for d in test]
    last = model.terms(np.stack([d.frames[-1] for d in test]), np.stack([d.frames[-11] for d in test]),
                       np.stack([d.frames[0] for d in test]))
    first = model.terms(np.stack([d.frames[1] for d in test]), np.stack([d.frames[0] for d in test]),
                        np.stack([d.frames[0] for d in test]))
    held_rand = rand[a.random:]
    r = model.terms(np.concatenate([v[1:] for v in held_rand]), np.concatenate([v[:-1] for v in held_rand]),
                    np.concatenate([np.repeat(v[:1], len(v) - 1, 0) for v in held_rand]))
    res = {
        "task": a.task, "train_seconds": round(train_s, 1), "seconds_per_step": round(train_s / max(a.steps, 1), 4),
        "forward_mean": float(np.mean(np.concatenate([d["forward"] for d in dirs]))),
        "reversed_mean": float(np.mean(np.concatenate([d["reversed"] for d in dirs]))),
        "static_zero_rate": float(np.mean(np.concatenate([d["static"] for d in dirs]) == 0)),
        "progress_first": float(first.progress.mean()), "progress_last": float(last.progress.mean()),
        "completion_first": float(first.completion.mean()), "completion_last": float(last.completion.mean()),
        "random_progress": float(r.progress.mean()), "random_reward": float(r.reward.mean()),
        "expert_final_reward": float(last.reward.mean()),
        "reward_s_per_1k_steps": round(query_seconds(model, test[0].frames) * 100.0, 4),
    }
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
