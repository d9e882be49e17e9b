"""Labelled-reward sanity per offline task (:func:`baselines.evaluation.offline_reward_sanity`),
before any IQL: does each method's reward give the offline control set's expert trajectories a
higher mean return than the noisy ones that succeed, and those a higher one than the noisy ones
that fail? And how does it rank with ManiSkill's dense reward (Spearman, per step and per
trajectory return)? Prints one Markdown table (and, with ``--json``, one JSON line per row)::

    python benchmarks/bench_offline_sanity.py PushCube-v1 PickCube-v1 --methods relam_gt -n 10
    python benchmarks/bench_offline_sanity.py PushCube-v1 --methods relam --n-demos 100 --scale quick -n 10

``relam_gt`` is ReLAM's labeller with ground-truth subgoals (the expert's own keypoints at its
keyframes), ``relam`` with the anticipation model's (trained on ``--n-demos`` expert videos at
``--scale``; the model ReLAM's runs use, cached); the others are the baselines' labellers.
``-n`` expert and ``-n`` noisy trajectories of the offline set are labelled (recorded first if
missing). The exit status is 1 when some row is out of order.
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

import torch

from baselines.evaluation import OFFLINE_LABELLERS, offline_reward_sanity, sanity_table
from relam.scales import SCALES

ROW_KEYS = ("task", "method", "scale", "n_demos", "n_expert", "n_noisy_success", "n_noisy_failure", "return_expert",
            "return_noisy_success", "return_noisy_failure", "order_ok", "order", "spearman_step", "spearman_return",
            "subgoal_fraction_expert", "subgoal_fraction_noisy_success", "subgoal_fraction_noisy_failure",
            "anticipation_initial_error_px", "anticipation_final_error_px")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_offline_sanity.py",
                                description="Labelled-reward sanity per offline task: expert > noisy that succeed > "
                                            "noisy that fail, and Spearman with ManiSkill's dense reward.")
    p.add_argument("tasks", nargs="+", help="offline tasks, e.g. PushCube-v1 PickCube-v1")
    p.add_argument("--methods", nargs="+", default=["relam_gt", "relam"], choices=sorted(OFFLINE_LABELLERS))
    p.add_argument("-n", type=int, default=10, help="expert (and as many noisy) offline trajectories labelled")
    p.add_argument("--n-demos", type=int, default=None,
                   help="expert videos the reward model learns from (default: -n)")
    p.add_argument("--scale", default="smoke", choices=SCALES, help="budget of the learned parts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also one JSON line per row")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(1)
    rows = []
    for task in a.tasks:
        for m in a.methods:
            st = offline_reward_sanity(task, m, a.n_demos or a.n, a.scale, a.seed, progress=not a.quiet,
                                       n_trajectories=a.n)
            rows.append(st)
            if a.json:
                print(json.dumps({k: st.get(k) for k in ROW_KEYS}), flush=True)
    print(sanity_table(rows), flush=True)
    return 0 if all(r.get("order_ok") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
