"""Benchmark the anticipation model: held-out keypoint error and training time per task.

Trains one model per task (90 demos, 10 held out by default) and prints a table of per-stage and
final-subgoal errors in pixels, length accuracy and wall time. Results go to
``<cache>/bench/anticipation/<tag>/results.json`` (and each run's folder: model, loss curve,
prediction picture). Also times one training step for several model sizes (``--speed``), which is
how the ``quick`` scale was chosen (the paper's 12x512 model is ~30x slower per step on CPU).

Also prints, per task, a training-free reference that says whether the keypoints can be read off
the first frame at all: each held-out demo copies the keypoints (initial and final rows) of the
training demo whose initial object point lies nearest its own (``nn copy``). When the choice of
points depends on how each demo moves (ManiSkill under the ``fps`` rule), even that copy is many
pixels off; ``--rule`` forces a keypoint rule (default: each task's ``keypoint_rule``), so the
two rules compare on the same demos, and ``--nn-only`` prints only that reference (seconds).

With the default model settings on real tasks the model is the one ReLAM's runs use
(:func:`relam.relam_method.anticipation_model`, cached), so a later run or the offline reward
sanity reuses it instead of training again.

Examples::

    python benchmarks/bench_anticipation.py --synthetic --tasks synth-push synth-lift
    python benchmarks/bench_anticipation.py --tasks drawer-open-v3 door-open-v3 \\
        button-press-wall-v3 PushCube-v1 PickCube-v1 --scale quick
    python benchmarks/bench_anticipation.py --tasks PushCube-v1 PickCube-v1 --nn-only --rule fps
    python benchmarks/bench_anticipation.py --speed
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from relam.anticipation import AnticipationConfig, AnticipationNet, synthetic_subgoal_items, train_anticipation
from relam.anticipation.cli import _build_dataset
from relam.cache import atomic_write_json, cache_dir
from relam.keypoints import KEYPOINT_RULES
from relam.scales import SCALES
from relam.tasks import get_task


def time_step(layers: int, width: int, heads: int, patches: int, reps: int = 3) -> float:
    """Seconds per training step (batch 8, 6 rows, 4 points, 64-d tokens)."""
    cfg = AnticipationConfig(layers=layers, width=width, heads=heads)
    net = AnticipationNet(cfg, 64, int(round(patches ** 0.5))).train()
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    img, kp = torch.randn(8, patches, 64), torch.randn(8, 6, 4, 2)
    t = 0.0
    for i in range(reps + 1):
        t0 = time.perf_counter()
        c, e = net(img, img, kp)
        loss = c.pow(2).mean() + e.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            t += time.perf_counter() - t0
    return t / reps


def load_items(task: str, synthetic: bool, n: int, num_points: int, rule: str | None = None) -> list:
    if synthetic:
        return synthetic_subgoal_items(task, n=n, num_points=num_points)
    from relam.subgoals import build_subgoal_dataset

    if rule is None:  # the task's own rule: the dataset ReLAM's runs use
        return list(_build_dataset(build_subgoal_dataset, task, num_points, n).items)
    from relam.keypoints import KeypointSettings

    return list(build_subgoal_dataset(task, KeypointSettings(num_points=num_points, rule=rule), n_demos=n).items)


def nn_copy_error(items: list, holdout: int) -> dict[str, float]:
    """Error (px, mean over points and held-out demos) of copying the initial and final keypoints of
    the training demo whose initial object point is nearest (the held-out split of the model)."""
    from relam.anticipation.data import split_holdout

    train, held = split_holdout(items, holdout)

    def obj_point(it) -> np.ndarray:
        k = int(np.flatnonzero(it.on_object)[0]) if it.on_object is not None and it.on_object.any() else 0
        return np.asarray(it.keypoints[0, k], np.float64)

    ref = np.stack([obj_point(it) for it in train])
    init, final = [], []
    for it in held:
        j = int(np.argmin(np.linalg.norm(ref - obj_point(it), axis=1)))
        init.append(np.linalg.norm(train[j].keypoints[0] - it.keypoints[0], axis=-1).mean())
        final.append(np.linalg.norm(train[j].keypoints[-1] - it.keypoints[-1], axis=-1).mean())
    return {"nn_initial_error_px": float(np.mean(init)), "nn_final_error_px": float(np.mean(final))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="*", default=["synth-push", "synth-lift"])
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--scale", default="quick", choices=SCALES)
    p.add_argument("--encoder", default="pixels")
    p.add_argument("--encoder-path", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--n-demos", type=int, default=100)
    p.add_argument("--holdout", type=int, default=10)
    p.add_argument("--num-points", type=int, default=4)
    p.add_argument("--augment-shifts", type=int, default=None,
                   help="translated copies per training frame (AnticipationConfig)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default=None)
    p.add_argument("--speed", action="store_true", help="only time one step per model size")
    p.add_argument("--rule", default=None, choices=KEYPOINT_RULES,
                   help="force a keypoint rule (default: each task's keypoint_rule in relam/tasks.yaml)")
    p.add_argument("--nn-only", action="store_true",
                   help="only the training-free nearest-demo copy reference (no model)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    if args.speed:
        for layers, width, heads, patches in [(12, 512, 8, 64), (6, 256, 8, 64), (4, 128, 4, 64),
                                              (4, 128, 4, 256), (2, 64, 4, 64)]:
            s = time_step(layers, width, heads, patches)
            print(f"layers={layers:2d} width={width:3d} patches/frame={patches:3d}: "
                  f"{s:.3f} s/step -> {900 / s:.0f} steps in 15 min", flush=True)
        return 0

    over = {k: v for k, v in dict(steps=args.steps, layers=args.layers, width=args.width,
                                  encoder=args.encoder, encoder_path=args.encoder_path,
                                  num_points=args.num_points,
                                  augment_shifts=args.augment_shifts).items() if v is not None}
    cfg = AnticipationConfig.for_scale(args.scale, **over)
    tag = args.tag or (f"{args.scale}-{args.encoder}-{'synthetic' if args.synthetic else 'real'}"
                       + (f"-{args.rule}" if args.rule else ""))
    root = cache_dir() / "bench" / "anticipation" / tag
    # the model ReLAM's runs use (cached, shared) when nothing here departs from it
    shared = (not args.synthetic and args.rule is None and args.holdout == min(10, args.n_demos // 10)
              and cfg == AnticipationConfig.for_scale(args.scale, num_points=args.num_points))
    results = {}
    rows = []
    for task in args.tasks:
        items = load_items(task, args.synthetic, args.n_demos, args.num_points, args.rule)
        nn = nn_copy_error(items, args.holdout) if not args.synthetic else {}
        if args.nn_only:
            rule = args.rule or getattr(get_task(task), "keypoint_rule", "fps")
            rows.append((task, rule, nn))
            print(f"{task:22s} rule {rule:11s} nn copy: initial {nn['nn_initial_error_px']:5.2f} px, "
                  f"final {nn['nn_final_error_px']:5.2f} px", flush=True)
            continue
        t0 = time.time()
        if shared:
            from relam.relam_method import anticipation_model

            model = anticipation_model(task, args.num_points, args.n_demos, args.scale, progress=False)
            run_dir = cache_dir() / "anticipation" / task / model.cache_key
        else:
            run_dir = root / task
            train_anticipation(items, cfg, run_dir, holdout=args.holdout, threads=args.threads)
        wall = time.time() - t0
        m = json.loads((run_dir / "metrics.json").read_text())
        results[task] = {k: m[k] for k in ("n", "initial_error_px", "per_stage_error_px",
                                           "per_stage_count", "teacher_forced_error_px",
                                           "final_error_px", "final_error_px_median",
                                           "length_accuracy", "train_wall_s")}
        results[task]["total_wall_s"] = wall
        results[task]["n_train"] = len(items) - args.holdout
        results[task]["model_dir"] = str(run_dir)
        results[task]["rule"] = args.rule or getattr(get_task(task), "keypoint_rule", "fps") \
            if not args.synthetic else None
        results[task].update(nn)
        atomic_write_json(root / "results.json", {"config": cfg.to_dict(), "results": results})
        r = results[task]
        print(f"{task:22s} final {r['final_error_px']:5.2f} px (median "
              f"{r['final_error_px_median']:.2f}) | per stage "
              f"{' '.join(f'{e:.1f}' for e in r['per_stage_error_px'])} | len acc "
              f"{r['length_accuracy']:.2f} | train {r['train_wall_s'] / 60:.1f} min "
              f"(total {wall / 60:.1f})", flush=True)
        rows.append((task, results[task]["rule"], results[task]))
    if rows:
        print(error_table(rows))
    if results:
        print(f"results: {root / 'results.json'}")
    return 0


def error_table(rows: list[tuple[str, str | None, dict]]) -> str:
    """Markdown table of held-out errors (px): the model's initial / final (when trained) and the
    nearest-demo copy's."""
    def f(r: dict, k: str) -> str:
        return f"{r[k]:.2f}" if k in r and r[k] == r[k] else "-"

    out = ["| task | keypoint rule | initial (model) | final (model) | final median | nn copy initial | nn copy final |",
           "|---|---|---|---|---|---|---|"]
    for task, rule, r in rows:
        out.append(f"| {task} | {rule or '-'} | {f(r, 'initial_error_px')} | {f(r, 'final_error_px')} | "
                   f"{f(r, 'final_error_px_median')} | {f(r, 'nn_initial_error_px')} | {f(r, 'nn_final_error_px')} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
