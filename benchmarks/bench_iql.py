"""Offline ReLAM check: label a ManiSkill offline set with the ReLAM reward, train IQL, evaluate live.

Two modes:

- ``--speed N``: gradient steps per second of :class:`relam.rl.iql.IQL` on a synthetic dataset of
  the real shapes (64 px image, 4 keypoints + target, 8-d actions, batch 64); no simulator.
- default: label the first ``-n`` trajectories of the task's offline set (half expert, half
  noisy; ground-truth subgoals unless ``--model`` gives an anticipation checkpoint), print the
  reward sanity numbers, train IQL for ``--epochs`` x ``--steps-per-epoch`` gradient steps and
  evaluate the policy through :class:`relam.wrappers.ReLAMWrapper` on ``--eval-episodes`` seeded
  episodes after every epoch (success at any step; the last evaluation is the final number).

Writes under ``--out`` (default ``<cache>/bench_iql/<task>-...``): the IQL folder (checkpoint,
``log.csv``, ``curve.png``, ``result.json``), the sanity figure and ``summary.json``. Resumable.

Example (minutes, not the paper's 100k steps)::

    python benchmarks/bench_iql.py --task PushCube-v1 -n 16 --epochs 2 --steps-per-epoch 200 --eval-episodes 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def speed(steps: int, image_size: int = 64) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from relam.offline import OfflineDataset
    from relam.rl.iql import IQLSettings, train_iql

    rng = np.random.default_rng(0)
    lengths = np.full(20, 80)
    T, F = int(lengths.sum()), int(lengths.sum() + len(lengths))
    ds = OfflineDataset(
        observations={"image": rng.integers(0, 256, (F, image_size, image_size, 3), dtype=np.uint8),
                      "keypoints": rng.normal(size=(F, 8)).astype(np.float32),
                      "target": rng.normal(size=(F, 8)).astype(np.float32)},
        actions=rng.normal(size=(T, 8)).astype(np.float32), rewards=rng.normal(size=T).astype(np.float32),
        terminals=np.zeros(T, bool), timeouts=np.zeros(T, bool), lengths=lengths,
        success=np.zeros(len(lengths), bool), noisy=np.zeros(len(lengths), bool), seeds=np.arange(len(lengths)),
        env_reward=np.zeros(T, np.float32))
    t0 = time.time()
    train_iql(ds, IQLSettings(epochs=1, steps_per_epoch=steps), None, progress=True)
    dt = time.time() - t0
    return {"steps": steps, "seconds": round(dt, 1), "steps_per_s": round(steps / dt, 2), "batch": 64,
            "image_size": image_size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="PushCube-v1")
    ap.add_argument("-n", type=int, default=16, help="offline trajectories to label (half expert, half noisy)")
    ap.add_argument("--model", default=None, help="anticipation checkpoint (default: ground-truth subgoals)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps-per-epoch", type=int, default=200)
    ap.add_argument("--eval-episodes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--speed", type=int, default=0, metavar="N", help="only time N gradient steps (no simulator)")
    a = ap.parse_args(argv)
    if a.speed:
        print(json.dumps(speed(a.speed)))
        return 0

    import torch

    torch.set_num_threads(1)
    from relam.cache import atomic_write_json, cache_dir
    from relam.offline import label_offline_dataset, plot_reward_sanity, reward_sanity
    from relam.relam_method import make_relam_eval_fn, relam_labeller
    from relam.rl.iql import IQLSettings, train_iql

    mode = "model" if a.model else "ground_truth"
    out = a.out or cache_dir() / "bench_iql" / f"{a.task}-{mode}-n{a.n}-s{a.seed}"
    lab = relam_labeller(mode, a.model, 4, "sim")
    t0 = time.time()
    ds = label_offline_dataset(a.task, lab, n=a.n, image_size=64)
    t_label = time.time() - t0
    sanity = reward_sanity(ds)
    plot_reward_sanity(ds, out / "reward_sanity.png", f"{a.task}: ReLAM reward ({mode} subgoals)")
    print(json.dumps(sanity, indent=2))
    eval_fn = make_relam_eval_fn(a.task, lab.planner, n_episodes=a.eval_episodes, settings=lab.settings,
                                 n_points=ds.observations["keypoints"].shape[1] // 2, policy_image_size=64)
    s = IQLSettings(epochs=a.epochs, steps_per_epoch=a.steps_per_epoch, seed=a.seed)
    t0 = time.time()
    try:
        res = train_iql(ds, s, out / "iql", eval_fn=eval_fn)
    finally:
        eval_fn.close()
    summary = {"task": a.task, "subgoals": mode, "trajectories": ds.n_trajectories, "transitions": ds.n_transitions,
               "label_seconds": round(t_label, 1), "train_eval_seconds": round(time.time() - t0, 1),
               "final_success": res.final_success, "curve": res.curve, "sanity": sanity,
               "settings": s.to_dict(), "log_last": res.log[-1] if res.log else None}
    atomic_write_json(out / "summary.json", summary)
    print(json.dumps({k: summary[k] for k in ("final_success", "curve", "train_eval_seconds")}))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
