"""Offline reward sanity of the baselines on ManiSkill (:func:`baselines.evaluation.offline_reward_sanity`):
the mean labelled return of expert vs noisy trajectories of the offline control set, and the
Spearman correlation with ManiSkill's dense reward, before any IQL::

    python benchmarks/bench_offline_sanity.py PushCube-v1 PickCube-v1 --scale smoke
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

import torch

from baselines.evaluation import OFFLINE_LABELLERS, offline_reward_sanity
from relam.scales import SCALES


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_offline_sanity.py",
                                description="Offline reward sanity of the baselines on ManiSkill: mean labelled "
                                            "return of expert vs noisy trajectories of the offline control set.")
    p.add_argument("tasks", nargs="+", help="offline tasks, e.g. PushCube-v1 PickCube-v1")
    p.add_argument("--methods", nargs="+", default=sorted(OFFLINE_LABELLERS), choices=sorted(OFFLINE_LABELLERS))
    p.add_argument("-n", type=int, default=10, help="expert videos to learn from = expert (and noisy) trajectories labelled")
    p.add_argument("--scale", default="smoke", choices=SCALES, help="budget of the learned parts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(1)
    for task in a.tasks:
        for m in a.methods:
            st = offline_reward_sanity(task, m, a.n, a.scale, a.seed, progress=not a.quiet)
            keys = ("task", "method", "return_expert", "return_noisy", "return_noisy_success", "return_noisy_failure",
                    "n_noisy_success", "n_noisy_failure", "spearman_return", "spearman_step")
            print(json.dumps({k: st.get(k) for k in keys}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
