"""Label a ManiSkill offline control set with the ReLAM reward and check it before any training:
expert vs noisy returns and the Spearman correlation with ManiSkill's dense reward
(:func:`relam.offline.reward_sanity`), with a figure::

    python benchmarks/bench_relam_labels.py PushCube-v1 -n 20 --subgoals ground_truth
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable

from relam.cache import atomic_write_json, cache_dir
from relam.offline import label_offline_dataset, plot_reward_sanity, reward_sanity
from relam.relam_method import relam_labeller


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_relam_labels.py",
                                description="Label a ManiSkill offline control set with the ReLAM reward and "
                                            "check it (expert vs noisy returns, Spearman with the dense reward).")
    p.add_argument("task", help="an offline task, e.g. PushCube-v1")
    p.add_argument("-n", type=int, default=None, help="first n trajectories (half expert, half noisy; default all)")
    p.add_argument("--subgoals", choices=("ground_truth", "model"), default="ground_truth")
    p.add_argument("--model", default=None, help="anticipation checkpoint for --subgoals model")
    p.add_argument("--n-points", type=int, default=4)
    p.add_argument("--tracker", default="sim")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--out", default=None, help="sanity figure path (default cache/offline/figures/...)")
    a = p.parse_args(list(argv) if argv is not None else None)
    if a.subgoals == "model" and not a.model:
        p.error("--subgoals model needs --model PATH (a trained anticipation checkpoint)")
    lab = relam_labeller(a.subgoals, a.model, a.n_points, a.tracker)
    ds = label_offline_dataset(a.task, lab, n=a.n, image_size=a.image_size, rebuild=a.rebuild)
    stats = reward_sanity(ds)
    stats["subgoals"] = a.subgoals
    out = Path(a.out) if a.out else cache_dir() / "offline" / "figures" / f"{a.task}-relam-{a.subgoals}-n{a.n}.png"
    plot_reward_sanity(ds, out, f"{a.task}: ReLAM reward ({a.subgoals} subgoals)")
    atomic_write_json(out.with_suffix(".json"), stats)
    print(json.dumps(stats, indent=2))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
