"""Held-out quality of the IS subgoal-image generator (:mod:`baselines.is_generator`).

Trains the generator on the first ``--train`` demos' subgoals of a task and prints the pixel error
of generated vs true subgoal images on the next ``--test`` demos, beside copying the initial frame
and the mean training image of subgoal k; ``--png`` writes them side by side, ``--save`` the model
(for ``benchmarks/bench_embedding.py --generator``)::

    python benchmarks/bench_image_subgoal.py drawer-open-v3 --train 16 --test 4 --png is.png

Diagnostics printed with every run (issue 18 item 3: why the generator loses to copying on ManiSkill):

* ``pixel_error`` / ``pixel_error_residual``: the generated subgoals enlarged as they are
  (``FlowSettings(compose="upsample")``) or as a change to the sharp initial frame
  (``compose="residual"``); both come from the same trained model;
* ``floor_error`` / ``floor_error_residual``: the true subgoals shrunk to the generator's
  ``--image-size`` and brought back to 64 px by either compose mode, i.e. the error of a *perfect*
  generator at that resolution;
* ``*_at_gen_size``: generated vs true and copy vs true compared at the generator's own resolution;
* ``share_*`` / ``area_*``: which part of the image the error sits on: the arm (the task's "robot arm"
  bodies), the object, or the rest (background, other links), from the demos' segmentation at the
  initial frame and the keyframe (a pixel of either counts);
* ``object_motion_px`` / ``arm_motion_px``: how far the object's and the arm's keypoints move from
  the initial frame to the last keyframe, in pixels of the generator's image;
* ``loss_curve``: the training loss averaged over ten equal windows.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from baselines.is_generator import COMPOSE_MODES, FlowSettings, SubgoalImageModel, compose_residual, pixel_error
from relam.keypoints import KeypointSettings
from relam.perception.images import resize_images
from relam.subgoals import build_subgoal_dataset


def _masks(demo, steps, size: int, object_bodies: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """(arm, object) bool masks (len(steps), size, size) from a demo's body segmentation at ``steps``,
    shrunk to ``size`` (a pixel belongs to a part when any of its source pixels does)."""
    seg = np.asarray(demo.body_seg)[np.asarray(steps)]
    names = list(demo.body_names)
    obj_ids = [i for i, n in enumerate(names) if n in object_bodies]
    arm = (seg >= 0) & ~np.isin(seg, obj_ids)
    obj = np.isin(seg, obj_ids)

    def shrink(m: np.ndarray) -> np.ndarray:
        im = np.repeat((m.astype(np.uint8) * 255)[..., None], 3, axis=-1)
        return resize_images(im, size)[..., 0] > 0

    return shrink(arm), shrink(obj)


def _regions(gen: np.ndarray, true: np.ndarray, arm: np.ndarray, obj: np.ndarray) -> dict[str, float]:
    """Sum of absolute error per region (arm, object, rest) over (N,S,S,3) stacks."""
    err = np.abs(gen.astype(np.float64) - true.astype(np.float64)).sum(-1)
    rest = ~(arm | obj)
    return {"arm": float(err[arm].sum()), "object": float(err[obj & ~arm].sum()), "rest": float(err[rest].sum()),
            "n_arm": float(arm.sum()), "n_object": float((obj & ~arm).sum()), "n_rest": float(rest.sum())}


def evaluate_generator(task: str, n_train: int = 16, n_test: int = 4, steps: int | None = None,
                       settings: FlowSettings = FlowSettings(), out_png: str | Path | None = None,
                       progress: bool = True, save: str | Path | None = None) -> dict[str, float]:
    """Train on the first ``n_train`` demos' subgoals, measure on the next ``n_test``.

    Pixel error of generated vs true subgoal images (0-255, at ``settings.output_size``), paired by
    index up to the shorter sequence, the last generated one against the true final frame; the
    references are "copy the initial frame" and "the mean training image of subgoal k", and the
    diagnostics of the module docstring. ``pixel_error`` is the generator's own output (its
    ``compose`` setting). Optionally writes a PNG: per test demo a row of [initial | generated... ]
    above [initial | true...].
    """
    from relam.demos import load_demos
    from relam.tasks import get_task

    ds = build_subgoal_dataset(task, KeypointSettings(), n_demos=n_train + n_test, progress=progress)
    train, test = ds.items[:n_train], ds.items[n_train:]
    demos = {int(d.seed): d for d in load_demos(task, n=n_train + n_test)}
    spec = get_task(task)
    object_bodies = set(spec.prompts[spec.object_prompt])
    model = SubgoalImageModel(settings)
    model.fit(train, steps=steps, progress=progress)
    if save is not None:
        model.save(save)
    size, gs = settings.output_size, settings.image_size
    mean_k = {}
    for k in range(settings.max_subgoals):
        ims = [resize_images(q.keyframe_images[k:k + 1], size)[0].astype(np.float64)
               for q in train if len(q.keyframe_images) > k]
        if ims:
            mean_k[k] = np.mean(ims, 0).round().astype(np.uint8)
    acc: dict[str, list] = {k: [] for k in ("upsample", "residual", "copy", "copy_paired", "mean", "floor", "floor_residual",
                                             "gen_small", "copy_small", "object_motion", "arm_motion")}
    regions = {k: [] for k in ("upsample", "residual", "copy")}
    rows = []
    for i, q in enumerate(test):
        small = model.generate(q.initial_frame, seed=i, size=gs)  # the generator's own images (gs px)
        true = resize_images(q.keyframe_images, size)
        m = min(len(small), len(true))
        # the last generated subgoal is the goal: compare it with the true final frame
        ig, it = list(range(m - 1)) + [len(small) - 1], list(range(m - 1)) + [len(true) - 1]
        tgt = true[it]
        init = resize_images(q.initial_frame[None], size)
        outs = {"upsample": resize_images(small[ig], size), "residual": compose_residual(small[ig], q.initial_frame, size),
                "copy": np.repeat(init, len(tgt), 0)}
        for k in ("upsample", "residual"):
            acc[k].append(pixel_error(outs[k], tgt))
        acc["copy"].append(pixel_error(np.repeat(init, len(true), 0), true))
        acc["copy_paired"].append(pixel_error(outs["copy"], tgt))
        acc["mean"].append(pixel_error(np.stack([mean_k[min(k, max(mean_k))] for k in range(len(true))]), true))
        acc["floor"].append(pixel_error(resize_images(resize_images(tgt, gs), size), tgt))
        acc["floor_residual"].append(pixel_error(compose_residual(resize_images(tgt, gs), q.initial_frame, size), tgt))
        acc["gen_small"].append(pixel_error(small[ig], resize_images(tgt, gs)))
        acc["copy_small"].append(pixel_error(np.repeat(resize_images(q.initial_frame[None], gs), len(tgt), 0),
                                             resize_images(tgt, gs)))
        demo = demos.get(int(q.seed))
        if demo is not None:
            kf = np.asarray(q.keyframe_steps)[it]
            arm, obj = _masks(demo, kf, size, object_bodies)
            arm0, obj0 = _masks(demo, [0], size, object_bodies)
            arm, obj = arm | arm0, obj | obj0
            for k in regions:
                regions[k].append(_regions(outs[k], tgt, arm, obj))
        kp, on = np.asarray(q.keypoints, np.float64), q.on_object
        if on is not None:
            on = np.asarray(on, bool)
            disp = np.linalg.norm(kp[-1] - kp[0], axis=-1) * gs / q.initial_frame.shape[0]
            if on.any():
                acc["object_motion"].append(float(disp[on].mean()))
            if (~on).any():
                acc["arm_motion"].append(float(disp[~on].mean()))
        if out_png is not None:
            gen = list(outs[settings.compose])
            width = 1 + max(len(gen), len(true))
            pad = lambda ims: list(ims) + [np.zeros_like(init[0])] * (width - 1 - len(ims))  # noqa: E731
            rows.append(np.concatenate([init[0]] + pad(gen), 1))
            rows.append(np.concatenate([init[0]] + pad(true), 1))
    mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
    loss = np.asarray(model.fit_loss, np.float64)
    res = {"task": task, "image_size": gs, "compose": settings.compose, "train_steps": len(loss),
           "n_subgoals": model.n_subgoals,
           "pixel_error": mean(acc[settings.compose]), "pixel_error_upsample": mean(acc["upsample"]),
           "pixel_error_residual": mean(acc["residual"]), "copy_initial_error": mean(acc["copy"]),
           "copy_paired_error": mean(acc["copy_paired"]), "mean_image_error": mean(acc["mean"]),
           "floor_error": mean(acc["floor"]), "floor_error_residual": mean(acc["floor_residual"]),
           "gen_error_at_gen_size": mean(acc["gen_small"]),
           "copy_error_at_gen_size": mean(acc["copy_small"]),
           "object_motion_px": mean(acc["object_motion"]), "arm_motion_px": mean(acc["arm_motion"]),
           "final_loss": float(np.mean(loss[-50:])) if len(loss) else float("nan"),
           "loss_curve": [round(float(w.mean()), 5) for w in np.array_split(loss, 10) if len(w)]}
    for k, parts in regions.items():
        if not parts:
            continue
        tot = {r: sum(p[r] for p in parts) for r in parts[0]}
        n_all = tot["n_arm"] + tot["n_object"] + tot["n_rest"]
        err_all = tot["arm"] + tot["object"] + tot["rest"]
        for r in ("arm", "object", "rest"):
            res[f"{k}_error_{r}"] = tot[r] / max(3 * tot[f"n_{r}"], 1)  # mean abs error (0-255) on the part
            res[f"{k}_share_{r}"] = tot[r] / max(err_all, 1e-9)  # the part's share of the total error
            if k == "copy":
                res[f"area_{r}"] = tot[f"n_{r}"] / n_all
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
    p.add_argument("--image-size", type=int, default=FlowSettings.image_size, help="generator resolution")
    p.add_argument("--compose", choices=COMPOSE_MODES, default=FlowSettings.compose,
                   help="how generated images reach 64 px (both are measured; this one is pixel_error)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    res = evaluate_generator(a.task, a.train, a.test, a.steps, FlowSettings(width=a.width, image_size=a.image_size, compose=a.compose),
                             out_png=a.png, progress=not a.quiet, save=a.save)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
