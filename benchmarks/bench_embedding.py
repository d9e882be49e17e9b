"""Approach score of the IS image embeddings (:func:`baselines.embedding.approach_score`).

Trains the temporal embedding on a task's demos and compares its approach score (similarity rising
towards the next keyframe, on held-out demos) with raw pixels; with ``--generator`` also towards
the subgoals a saved IS generator makes (``python benchmarks/bench_image_subgoal.py TASK --save F``)::

    python benchmarks/bench_embedding.py drawer-open-v3 --train 16 --test 4 --steps 400 \\
        --generator <IS model .pt>
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch

from baselines.embedding import PixelEmbedding, TemporalEmbedding, approach_score
from baselines.is_generator import SubgoalImageModel
from baselines.is_reward import ImageSubgoalPlanner, calibrate_threshold
from relam.demos import load_demos
from relam.keypoints import KeypointSettings
from relam.subgoals import build_subgoal_dataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench_embedding.py",
        description="Train the temporal embedding on a task's demos and compare its approach "
                    "score (similarity rising towards the next keyframe, held-out demos) with "
                    "raw pixels; with --generator also towards the generated subgoals.")
    p.add_argument("task", nargs="?", default="drawer-open-v3")
    p.add_argument("--train", type=int, default=16, help="training demos")
    p.add_argument("--test", type=int, default=4, help="held-out demos (after the training ones)")
    p.add_argument("--steps", type=int, default=600, help="training steps")
    p.add_argument("--generator", default=None,
                   help="a saved IS generator (.pt, python benchmarks/bench_image_subgoal.py --save)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    demos = load_demos(a.task, n=a.train + a.test)
    ds = build_subgoal_dataset(a.task, KeypointSettings(), n_demos=a.train + a.test,
                               progress=not a.quiet)
    test, seqs = demos[a.train:], ds.items[a.train:]
    emb = TemporalEmbedding()
    emb.fit([d.frames for d in demos[:a.train]], steps=a.steps, progress=not a.quiet)
    planner = None
    if a.generator:
        planner = ImageSubgoalPlanner(SubgoalImageModel.load(a.generator))
    for e in (PixelEmbedding(), emb):
        res: dict[str, Any] = {"true": approach_score(e, [d.frames for d in test],
                                                      [s.keyframe_steps for s in seqs])}
        if planner is not None:
            steps, targets = [], []
            for d, q in zip(test, seqs):  # generated k <-> true keyframe k; last <-> final frame
                g = planner.plan(d.frames[0], a.task, seed=d.seed)
                m = min(len(g), len(q.keyframe_steps))
                steps.append(np.array(list(q.keyframe_steps[:m - 1]) + [q.keyframe_steps[-1]]))
                targets.append(np.stack(list(g[:m - 1]) + [g[-1]]))
            res["generated"] = approach_score(e, [d.frames for d in test], steps, targets)
            res["threshold_q25"] = calibrate_threshold(planner, e, test, 0.25)
        print(e.name, json.dumps(res, default=lambda v: round(float(v), 3)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
