"""Procedural subgoal sequences (a gripper pushing or lifting a block): the tests' data and the
benchmark's stand-in when no demos exist."""
from __future__ import annotations

import numpy as np

from relam.subgoals import SubgoalSequence


#: procedural items are plain :class:`relam.subgoals.SubgoalSequence` objects (no tracks, no
#: object mask); the name stays for callers that imported it
SyntheticSequence = SubgoalSequence


def _draw_scene(size: int, base: np.ndarray, grip: np.ndarray, obj: np.ndarray,
                bg: tuple[int, int, int], obj_colour: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((size, size, 3), np.uint8)
    img[:] = bg
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # an "arm": thick segment from the base to the gripper
    d = grip - base
    t = np.clip(((xx - base[0]) * d[0] + (yy - base[1]) * d[1]) / max(float(d @ d), 1e-6), 0, 1)
    dist = np.hypot(xx - (base[0] + t * d[0]), yy - (base[1] + t * d[1]))
    img[dist < size * 0.035] = (90, 90, 100)
    img[np.hypot(xx - grip[0], yy - grip[1]) < size * 0.05] = (40, 40, 40)
    half = size * 0.06
    box = (np.abs(xx - obj[0]) < half) & (np.abs(yy - obj[1]) < half)
    img[box] = obj_colour
    return img


def synthetic_subgoal_items(task: str = "synth-push", n: int = 20, seed: int = 0,
                            num_points: int = 4, size: int = 128,
                            scene_tint: tuple[int, int, int] | None = None
                            ) -> list[SubgoalSequence]:
    """Procedural stand-in for a subgoal dataset: an arm reaching a box, then moving it.

    Keypoints: ``num_points - 1`` points along the arm and the box centre. Tasks:
    ``synth-push`` (above box, onto box, push right; a 4th stage "push down" when the box starts
    in the upper half, so S varies 3-4) and ``synth-lift`` (onto box, lift up; S = 2). The box
    position is random, so subgoals depend on the frame. ``scene_tint`` overrides the background
    (by default the two tasks share the same scene, so only the task frame tells them apart).
    """
    bg = scene_tint or (200, 190, 170)
    base = np.array([0.1, 0.9]) * size
    items = []
    for i in range(n):
        s = seed * 1000 + i
        r = np.random.default_rng(s)  # scene depends on the seed only, not on the task
        obj = np.array([r.uniform(0.45, 0.8), r.uniform(0.3, 0.7)]) * size
        grip0 = np.array([0.3, 0.5]) * size + r.normal(0, 0.01, 2) * size
        path_g, path_o = [grip0], [obj]
        if task == "synth-push":
            stages = [(obj + np.array([0, -0.15]) * size, obj), (obj, obj)]
            o2 = obj + np.array([0.12, 0.0]) * size
            stages.append((o2, o2))
            if obj[1] < 0.5 * size:
                o3 = o2 + np.array([0.0, 0.15]) * size
                stages.append((o3, o3))
        elif task == "synth-lift":
            o2 = obj + np.array([0.0, -0.2]) * size
            stages = [(obj, obj), (o2, o2)]
        else:
            raise ValueError(f"unknown synthetic task '{task}'; use synth-push or synth-lift")
        for g, o in stages:
            path_g.append(g)
            path_o.append(o)
        kps = []
        for g, o in zip(path_g, path_o):
            arm = [base + (g - base) * f for f in np.linspace(1.0, 0.4, num_points - 1)]
            kps.append(np.stack(arm + [o]))
        kps = np.asarray(kps, np.float32)
        frames = [_draw_scene(size, base, g, o, bg, (40, 160, 60))
                  for g, o in zip(path_g, path_o)]
        items.append(SubgoalSequence(
            task=task, seed=s, initial_frame=frames[0], keypoints=kps,
            keyframe_steps=np.arange(1, len(kps), dtype=np.int64) * 10,
            keyframe_images=np.stack(frames[1:])))
    return items
