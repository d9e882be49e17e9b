"""Reward cost per 1,000 environment steps, and expert-vs-random reward of the video baselines.

Two commands (run with ``nice -n 10`` on the shared machine; one torch thread):

``cost``     seconds to compute the reward of 1,000 transitions of 128 px frames for
             - ReLAM: the point reward of ``relam.reward.label_trajectory`` on a tracked keypoint
               track (distance math only), and, separately, the LK tracker that produces the track;
             - DACfO: the discriminator, batched over the whole rollout and called once per step;
             - Diffusion Reward: the default 2.5 M-parameter UNet at 32 px, an 11-step skipped reverse chain (skip_step 99 of 1000), + RND,
               batched (timed on ``--diffusion-steps`` transitions and scaled to 1,000).
``ranking``  per task: fit both baselines on expert videos and compare the mean per-step reward of
             held-out expert videos with random-action videos (success reward not paid).
             Defaults are a small Diffusion Reward model (16 px, 600 steps) that fits on a CPU in
             minutes; ``--diffusion-size 32 --diffusion-channels 32,64,128 --diffusion-batch 32
             --diffusion-lr 3e-4 --diffusion-fit-steps 5000 --n-train 90 --n-test 10`` is the quick
             scale's model, for a GPU box (``--device cuda``).
``videos``   write the 64 px expert and random-action videos ``ranking`` reads into one ``.npz``, so
             ``ranking --videos FILE`` runs on a machine without the simulators (a GPU box).

Times are CPU seconds of the (single-threaded) process, the best of a few repeats.
Results are printed and written as JSON under ``cache_dir()/benchmarks/``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from baselines.evaluation import expert_vs_random, random_action_videos
from baselines.dacfo import DACfO
from baselines.diffusion_reward import DiffusionReward
from relam.cache import atomic_write_json, cache_dir


def _timed(fn, repeat: int = 1) -> float:
    """Best-of-``repeat`` CPU seconds of this process (one torch thread, so CPU time ~ wall time on an
    idle core; on the shared machine wall time is inflated by other jobs, CPU time much less)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def cost(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(0)
    n = 1000
    frames = rng.integers(0, 256, (n + 1, 128, 128, 3), dtype=np.uint8)
    out: dict[str, float] = {}

    # ReLAM: distance math on a tracked keypoint track (4 points, 3 subgoals)
    from relam.reward import label_trajectory

    track = np.cumsum(rng.normal(0, 0.5, (n + 1, 4, 2)), 0) + 64
    subgoals = track[[300, 600, 900]] + rng.normal(0, 1, (3, 4, 2))
    out["relam_reward_s"] = _timed(lambda: label_trajectory(track, subgoals), repeat=3)
    try:
        from relam.perception.tracking import make_tracker

        tracker = make_tracker("lk")
        q = np.array([[40.0, 40.0], [60.0, 50.0], [80.0, 70.0], [90.0, 30.0]])
        out["relam_lk_tracking_s"] = _timed(lambda: tracker.track(frames, q))
    except Exception as e:  # the tracker is another module's; report, do not fail the benchmark
        print(f"(LK tracking not timed: {e})")

    # DACfO at its default 64 px (on the CPU: these are CPU seconds, whatever device "auto" would take)
    d = DACfO(device="cpu")
    out["dacfo_batched_s"] = _timed(lambda: d.reward(frames), repeat=2)
    hist, nxt = d.items_from_video(frames[:101])
    t = _timed(lambda: [d.reward_items(hist[i:i + 1], nxt[i:i + 1]) for i in range(100)])
    out["dacfo_per_step_s"] = t * n / 100

    # Diffusion Reward, default model
    m = DiffusionReward(device="cpu")
    k = int(args.diffusion_steps)
    out["diffusion_params_M"] = m.n_params / 1e6
    out["diffusion_eval_levels"] = len(m.eval_timesteps)
    out["diffusion_batched_s"] = _timed(lambda: m.reward(frames[: k + 1])) * n / k
    hist, nxt = m.items_from_video(frames[:11])
    t = _timed(lambda: [m.reward_items(hist[i:i + 1], nxt[i:i + 1]) for i in range(10)])
    out["diffusion_per_step_s"] = t * n / 10
    return out


def _ranking_videos(task: str, n_train: int, n_test: int, n_random_train: int | None = None):
    """(train expert, test expert, train random, test random) videos of ``task`` from the simulator."""
    from relam.demos import load_demos

    demos = [d.frames for d in load_demos(task, n=n_train + n_test)]
    steps = int(np.mean([len(v) - 1 for v in demos]))
    n_rt = n_train if n_random_train is None else n_random_train
    rand = random_action_videos(task, n=n_rt + n_test, steps=steps, seed=17)
    return demos[:n_train], demos[n_train:], rand[:n_rt], rand[n_rt:]


def export_videos(args: argparse.Namespace) -> dict:
    """Write ``ranking``'s videos, as 64 px policy images (what both models read), to ``args.out``."""
    from baselines.common import to_policy_images

    arrays, counts = {}, {}
    for task in args.tasks:
        parts = _ranking_videos(task, args.n_train, args.n_test, args.n_random_train)
        counts[task] = [len(p) for p in parts]
        for name, vids in zip(("train_e", "test_e", "train_r", "test_r"), parts):
            for i, v in enumerate(vids):
                arrays[f"{task}/{name}/{i:03d}"] = to_policy_images(v).transpose(0, 2, 3, 1)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.1f} MiB)")
    return counts


def _videos_from_file(path: str, task: str):
    with np.load(path) as z:
        names = sorted(k for k in z.files if k.startswith(task + "/"))
        if not names:
            raise SystemExit(f"ranking --videos {path}: no videos of {task!r} in it; write them with "
                             f"`bench_reward_cost.py videos {task} --out {path}`")
        return tuple([z[k] for k in names if k.split("/")[1] == part]
                     for part in ("train_e", "test_e", "train_r", "test_r"))


def ranking(args: argparse.Namespace) -> dict:
    res = {}
    for task in args.tasks:
        if args.videos:
            train_e, test_e, train_r, test_r = _videos_from_file(args.videos, task)
        else:
            train_e, test_e, train_r, test_r = _ranking_videos(task, args.n_train, args.n_test)
        row: dict[str, dict] = {}
        torch.manual_seed(0)
        if args.dacfo_steps > 0:
            d = DACfO(size=args.dacfo_size)
            row["dacfo_untrained"] = expert_vs_random(d, test_e, test_r)
            t0 = time.time()
            d.fit(train_e, policy_videos=train_r, steps=args.dacfo_steps, progress=args.progress)
            row["dacfo"] = {**expert_vs_random(d, test_e, test_r), "fit_s": time.time() - t0}
        ch = tuple(int(c) for c in args.diffusion_channels.split(","))
        m = DiffusionReward(size=args.diffusion_size, channels=ch, batch=args.diffusion_batch,
                            lr=args.diffusion_lr)
        row["diffusion_untrained"] = expert_vs_random(m, test_e, test_r)
        t0 = time.time()
        m.fit(train_e, steps=args.diffusion_fit_steps, progress=args.progress, device=args.device)
        fit_s = time.time() - t0
        m.use_rnd = False
        row["diffusion_ce_only"] = expert_vs_random(m, test_e, test_r)
        m.use_rnd = True
        row["diffusion_rnd_untrained"] = expert_vs_random(m, test_e, test_r)
        for _ in range(3):  # RND after three rollouts of the random policy
            m.update(train_r)
        row["diffusion"] = {**expert_vs_random(m, test_e, test_r), "fit_s": fit_s,
                            "params_M": m.n_params / 1e6}
        res[task] = row
        for k, v in row.items():
            print(f"{task:22s} {k:26s} expert {v['expert_mean']:+.4f}  random {v['random_mean']:+.4f}  "
                  f"AUC {v['auc']:.3f}")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost", help="reward cost per 1,000 steps")
    c.add_argument("--diffusion-steps", type=int, default=100, help="transitions to time Diffusion Reward on")
    videos = argparse.ArgumentParser(add_help=False)  # which videos: shared by ranking and videos
    videos.add_argument("tasks", nargs="+")
    videos.add_argument("--n-train", type=int, default=8, help="expert training videos (ignored with --videos)")
    videos.add_argument("--n-test", type=int, default=4, help="held-out expert and random videos (ignored with --videos)")
    r = sub.add_parser("ranking", parents=[videos], help="expert vs random mean reward per task")
    r.add_argument("--dacfo-size", type=int, default=64)
    r.add_argument("--dacfo-steps", type=int, default=200, help="0 skips DACfO")
    r.add_argument("--diffusion-size", type=int, default=16)
    r.add_argument("--diffusion-channels", default="16,32")
    r.add_argument("--diffusion-fit-steps", type=int, default=600)
    r.add_argument("--diffusion-lr", type=float, default=1e-3)
    r.add_argument("--diffusion-batch", type=int, default=16)
    r.add_argument("--device", default="cpu", help="where the Diffusion Reward model trains (cuda on a GPU box)")
    r.add_argument("--videos", default="", help="read the videos from this file (see `videos`), not the simulator")
    r.add_argument("--no-progress", dest="progress", action="store_false")
    v = sub.add_parser("videos", parents=[videos], help="export ranking's videos for a machine without the simulators")
    v.add_argument("--n-random-train", type=int, default=None,
                   help="random-action training videos (default --n-train; only DACfO and RND use them)")
    v.add_argument("--out", required=True)
    p.add_argument("--tag", default="", help="suffix of the output JSON name")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 for the cost timings)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.cmd == "videos":
        export_videos(a)  # the .npz is the output
        return 0
    out = cost(a) if a.cmd == "cost" else ranking(a)
    if a.cmd == "cost":
        for k, v in out.items():
            print(f"{k:28s} {v:10.3f}")
    path = cache_dir() / "benchmarks" / f"reward_{a.cmd}{a.tag}.json"
    atomic_write_json(path, out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
