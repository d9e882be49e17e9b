"""Held-out quality of the IS subgoal-image generator (:mod:`baselines.is_generator`).

Trains the generator on the first ``--train`` demos' subgoals of a task and prints the pixel error
of generated vs true subgoal images on the next ``--test`` demos, beside copying the initial frame
and the mean training image of subgoal k; ``--png`` writes them side by side, ``--save`` the model
(for ``benchmarks/bench_embedding.py --generator``)::

    python benchmarks/bench_image_subgoal.py drawer-open-v3 --train 16 --test 4 --png is.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from baselines.is_generator import FlowSettings, SubgoalImageModel, pixel_error
from relam.keypoints import KeypointSettings
from relam.perception.images import resize_images
from relam.subgoals import build_subgoal_dataset


def evaluate_generator(task: str, n_train: int = 16, n_test: int = 4, steps: int | None = None,
                       settings: FlowSettings = FlowSettings(), out_png: str | Path | None = None,
                       progress: bool = True, save: str | Path | None = None) -> dict[str, float]:
    """Train on the first ``n_train`` demos' subgoals, measure on the next ``n_test``.

    Pixel error of generated vs true subgoal images (0-255, 64 px), paired by index up to the
    shorter sequence; the references are "copy the initial frame" and "the mean training image of
    subgoal k". Optionally writes a PNG: per test demo a row of [initial | generated... ] above
    [initial | true...].
    """
    ds = build_subgoal_dataset(task, KeypointSettings(), n_demos=n_train + n_test, progress=progress)
    train, test = ds.items[:n_train], ds.items[n_train:]
    model = SubgoalImageModel(settings)
    model.fit(train, steps=steps, progress=progress)
    if save is not None:
        model.save(save)
    size = settings.output_size
    mean_k = {}
    for k in range(settings.max_subgoals):
        ims = [resize_images(q.keyframe_images[k:k + 1], size)[0].astype(np.float64)
               for q in train if len(q.keyframe_images) > k]
        if ims:
            mean_k[k] = np.mean(ims, 0).round().astype(np.uint8)
    errs, copy_errs, mean_errs, rows = [], [], [], []
    for i, q in enumerate(test):
        gen = model.generate(q.initial_frame, seed=i)
        true = resize_images(q.keyframe_images, size)
        m = min(len(gen), len(true))
        # the last generated subgoal is the goal: compare it with the true final frame
        pairs = [(gen[k], true[k]) for k in range(m - 1)] + [(gen[-1], true[-1])]
        errs.append(pixel_error(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])))
        init = resize_images(q.initial_frame[None], size)
        copy_errs.append(pixel_error(np.repeat(init, len(true), 0), true))
        mean_errs.append(pixel_error(np.stack([mean_k[min(k, max(mean_k))] for k in range(len(true))]), true))
        if out_png is not None:
            width = 1 + max(len(gen), len(true))
            pad = lambda ims: list(ims) + [np.zeros_like(init[0])] * (width - 1 - len(ims))  # noqa: E731
            rows.append(np.concatenate([init[0]] + pad(gen), 1))
            rows.append(np.concatenate([init[0]] + pad(true), 1))
    res = {"task": task, "n_subgoals": model.n_subgoals, "pixel_error": float(np.mean(errs)),
           "copy_initial_error": float(np.mean(copy_errs)), "mean_image_error": float(np.mean(mean_errs)),
           "final_loss": float(np.mean(model.fit_loss[-50:]))}
    if out_png is not None:
        import imageio.v2 as imageio

        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        imageio.imwrite(out_png, np.concatenate(rows, 0))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench_image_subgoal.py",
        description="Train the IS subgoal-image generator on a task's demos and report the pixel "
                    "error of generated vs true subgoal images on held-out demos (+ a PNG).")
    p.add_argument("task", nargs="?", default="drawer-open-v3")
    p.add_argument("--train", type=int, default=16)
    p.add_argument("--test", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="training steps (default FlowSettings)")
    p.add_argument("--png", default=None, help="where to write generated-vs-true images")
    p.add_argument("--save", default=None, help="where to save the trained model (.pt)")
    p.add_argument("--width", type=int, default=FlowSettings.width)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    res = evaluate_generator(a.task, a.train, a.test, a.steps, FlowSettings(width=a.width),
                             out_png=a.png, progress=not a.quiet, save=a.save)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
