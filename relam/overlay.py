"""Draw keypoints, their tracks and the keyframes over a demo, to check Eq. (1) and Eq. (2) by eye.

A person should see at a glance that the points sit on the arm and the object, and that keyframes
fall where the motion turns. Usage::

    relam overlay drawer-open-v3 --demo 0 --out drawer.png   # keyframe panels + angles
    relam overlay PushCube-v1 --demo 0 --out push.gif        # every frame, with trails

PNG: the initial frame with every keypoint's full track (arm points in one colour family, object
points ringed white), one panel per keyframe with the keypoints there, and the turning-angle score
of Eq. (2) over time with the keyframes marked. GIF: each frame with the points and their trails;
keyframes get a red border.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from relam.cache import atomic_write_bytes
from relam.keyframes import turning_angles
from relam.keypoints import KeypointSettings

__all__ = ["draw_policy_frame", "gif_bytes", "overlay_png", "overlay_gif"]

_COLORS = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40],
], dtype=np.uint8)


def _color(i: int) -> np.ndarray:
    return _COLORS[i % len(_COLORS)]


def overlay_png(demo: Any, seq: Any, out: str | Path, settings: KeypointSettings | None = None,
                title: str | None = None) -> Path:
    """Keyframe panels + turning-angle plot as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = settings or KeypointSettings()
    frames = np.asarray(demo.frames)
    tracks = np.asarray(seq.tracks)
    steps = np.asarray(seq.keyframe_steps)
    on_obj = np.asarray(seq.on_object) if seq.on_object is not None else np.zeros(tracks.shape[1], bool)
    n_panels = 1 + len(steps)
    fig = plt.figure(figsize=(2.6 * max(n_panels, 3), 5.6))
    gs = fig.add_gridspec(2, max(n_panels, 3), height_ratios=[2.2, 1])
    h, w = frames.shape[1:3]

    def draw_points(ax, t):
        for i in range(tracks.shape[1]):
            c = _color(i) / 255.0
            ax.scatter([tracks[t, i, 0]], [tracks[t, i, 1]], s=40, color=c,
                       edgecolors="white" if on_obj[i] else "black", linewidths=1.5, zorder=3)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])

    ax = fig.add_subplot(gs[0, 0])
    ax.imshow(frames[0], interpolation="nearest")
    for i in range(tracks.shape[1]):
        ax.plot(tracks[:, i, 0], tracks[:, i, 1], "-", color=_color(i) / 255.0, lw=1.2)
        ax.plot(tracks[steps, i, 0], tracks[steps, i, 1], "x", color=_color(i) / 255.0, ms=5)
    draw_points(ax, 0)
    ax.set_title("t=0, tracks (x = keyframes)", fontsize=8)
    for j, s in enumerate(steps):
        ax = fig.add_subplot(gs[0, 1 + j]) if 1 + j < gs.ncols else None
        if ax is None:
            break
        ax.imshow(frames[s], interpolation="nearest")
        draw_points(ax, s)
        ax.set_title(f"keyframe {j + 1}: t={s}", fontsize=8)
    ax = fig.add_subplot(gs[1, :])
    score = np.rad2deg(turning_angles(tracks,
                                      min_displacement=settings.min_displacement))
    ax.plot(score, "k-", lw=1)
    for s in steps:
        ax.axvline(s, color="r", lw=1, ls="--")
    ax.axhline(settings.min_angle_deg, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("step")
    ax.set_ylabel("turning angle (deg)")
    ax.set_xlim(0, len(frames) - 1)
    fig.suptitle(title or f"{getattr(demo, 'task', '')} seed {getattr(demo, 'seed', '')}: "
                 f"{tracks.shape[1]} keypoints (white ring = object), {len(steps)} keyframes",
                 fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _canvas(frame: np.ndarray, scale: int) -> np.ndarray:
    """``frame`` enlarged ``scale`` times (nearest neighbour: the pixels the keypoints live on)."""
    import cv2

    return np.ascontiguousarray(cv2.resize(np.asarray(frame, dtype=np.uint8), None, fx=scale, fy=scale,
                                           interpolation=cv2.INTER_NEAREST))


def _px(uv: np.ndarray, scale: int) -> np.ndarray:
    """Pixel coordinates (u, v) of the original frame -> integer points on a ``scale``-times canvas
    (pixel centres stay centres)."""
    return np.rint((np.asarray(uv, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.int32)


def _dot(img: np.ndarray, center: Any, color: Any, ring: tuple[int, int, int] = (0, 0, 0), radius: int = 4) -> None:
    """A keypoint: a filled disc in its colour with a thin ring (white: an object point)."""
    import cv2

    center = tuple(int(v) for v in center)
    cv2.circle(img, center, radius, tuple(int(v) for v in color), -1, cv2.LINE_AA)
    cv2.circle(img, center, radius + 1, ring, 1, cv2.LINE_AA)


def _cross(img: np.ndarray, center: Any, color: Any, size: int = 14) -> None:
    """A subgoal keypoint: a tilted cross in its colour, outlined in black."""
    import cv2

    center = tuple(int(v) for v in center)
    cv2.drawMarker(img, center, (0, 0, 0), cv2.MARKER_TILTED_CROSS, size + 2, 5, cv2.LINE_AA)
    cv2.drawMarker(img, center, tuple(int(v) for v in color), cv2.MARKER_TILTED_CROSS, size, 2, cv2.LINE_AA)


def _text_box(img: np.ndarray, lines: list[tuple[str, tuple[int, int, int]]], corner: str = "top-left") -> None:
    """Lines of text on a dark box in a corner of ``img`` (each line in its own colour)."""
    import cv2

    font, size, thick, pad, step = cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1, 4, 15
    width = max(cv2.getTextSize(t, font, size, thick)[0][0] for t, _ in lines) + 2 * pad
    height = step * len(lines) + pad
    x0 = 0 if corner.endswith("left") else img.shape[1] - width
    y0 = 0 if corner.startswith("top") else img.shape[0] - height
    box = img[y0:y0 + height, x0:x0 + width]
    box[:] = (box.astype(np.float32) * 0.35).astype(np.uint8)
    for i, (text, color) in enumerate(lines):
        cv2.putText(img, text, (x0 + pad, y0 + step * (i + 1) - 3), font, size, color, thick, cv2.LINE_AA)


def _legend(img: np.ndarray) -> None:
    """Bottom-right key of :func:`draw_policy_frame`'s markers: a disc = a keypoint now, a cross = its target."""
    import cv2

    w, h = 86, 34
    y0 = img.shape[0] - h
    box = img[y0:, img.shape[1] - w:]
    box[:] = (box.astype(np.float32) * 0.35).astype(np.uint8)
    x = img.shape[1] - w + 10
    _dot(img, (x, y0 + 9), (200, 200, 200), radius=4)
    _cross(img, (x, y0 + 25), (200, 200, 200), size=10)
    for y, text in ((y0 + 13, "keypoint"), (y0 + 29, "target")):
        cv2.putText(img, text, (x + 12, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)


#: colours every GIF's palette holds exactly: the keypoints' and the text's (see :func:`gif_bytes`)
_EXACT_COLORS = np.concatenate([_COLORS, np.array([[255, 255, 255], [0, 0, 0], [200, 200, 200], [120, 255, 120],
                                                   [255, 170, 170], [255, 0, 0]], dtype=np.uint8)])


def gif_bytes(frames: list[np.ndarray], fps: float = 10.0) -> bytes:
    """An animated, looping GIF of ``frames`` (H, W, 3 uint8), ``fps`` frames a second.

    One palette for all frames: the drawing colours exactly (a per-frame median cut turns the small
    keypoint discs into the scene's nearest tones), the rest from a median cut of a sample of frames;
    no dithering, so the markers stay flat."""
    import io

    from PIL import Image

    frames = [np.ascontiguousarray(f, dtype=np.uint8) for f in frames]
    if not frames:
        raise ValueError("gif_bytes: no frames")
    n_scene = 256 - len(_EXACT_COLORS)
    sample = np.concatenate([f.reshape(-1, 3) for f in frames[::max(1, len(frames) // 8)]])
    scene = Image.fromarray(sample[None]).quantize(n_scene, method=Image.Quantize.MEDIANCUT)
    colours = (scene.getpalette() or [])[:3 * n_scene]
    colours += [0] * (3 * n_scene - len(colours)) + _EXACT_COLORS.reshape(-1).tolist()
    palette = Image.new("P", (1, 1))
    palette.putpalette(colours)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=round(1000.0 / fps),
                   loop=0)
    return buf.getvalue()


def overlay_gif(demo: Any, seq: Any, out: str | Path, scale: int = 3, trail: int = 15,
                fps: int = 10) -> Path:
    """Every frame with the keypoints and their recent trail; keyframes get a red border."""
    import cv2

    frames = np.asarray(demo.frames)
    tracks = np.asarray(seq.tracks, dtype=np.float64)
    steps = set(int(s) for s in seq.keyframe_steps)
    on_obj = np.asarray(seq.on_object) if seq.on_object is not None else np.zeros(tracks.shape[1], bool)
    out_frames = []
    for t in range(len(frames)):
        img = _canvas(frames[t], scale)
        for i in range(tracks.shape[1]):
            c = tuple(int(v) for v in _color(i))
            pts = _px(tracks[max(0, t - trail):t + 1, i], scale)
            if len(pts) > 1:
                cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, c, 1, cv2.LINE_AA)
            _dot(img, pts[-1], c, (255, 255, 255) if on_obj[i] else (0, 0, 0))
        if t in steps:
            cv2.rectangle(img, (0, 0), (img.shape[1] - 1, img.shape[0] - 1), (255, 0, 0), 4)
        cv2.putText(img, f"t={t}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)
        out_frames.append(img)
        if t in steps:  # hold keyframes a little longer
            out_frames.extend([img] * 3)
    return atomic_write_bytes(out, gif_bytes(out_frames, fps))


def draw_policy_frame(frame: np.ndarray, keypoints: np.ndarray, plan: np.ndarray, stage: int,
                      success: bool, step: int, scale: int = 3, title: str | None = None) -> np.ndarray:
    """One frame of a policy rollout: the current keypoints, the subgoals and the stage.

    ``keypoints`` (N, 2) and ``plan`` (1 + S, N, 2, the initial keypoints then the S subgoals) are
    pixel coordinates of ``frame``; ``stage`` counts the subgoals reached, so the target is subgoal
    ``min(stage, S - 1)``. Each keypoint has its colour: a filled disc where it is now, a thin line
    through its S subgoals (the plan), small rings on the subgoals not yet reached, and a cross on
    the current target joined to the disc by a line. The bottom-left corner holds ``title``, the
    step, the stage (``stage k/S``) and whether the episode has succeeded; the bottom-right corner
    the key of the markers.
    """
    import cv2

    plan = np.asarray(plan, dtype=np.float64)
    subgoals = plan[1:]
    n_sub = len(subgoals)
    target = min(int(stage), n_sub - 1)
    img = _canvas(frame, scale)
    kp = _px(keypoints, scale)
    goals = _px(subgoals, scale)  # (S, N, 2)
    for i in range(kp.shape[0]):
        c = tuple(int(v) for v in _color(i))
        dim = tuple(int(v) // 2 + 64 for v in _color(i))
        cv2.polylines(img, [np.ascontiguousarray(goals[:, i]).reshape(-1, 1, 2)], False, dim, 1, cv2.LINE_AA)
        for j in range(target + 1, n_sub):  # subgoals still ahead
            cv2.circle(img, tuple(int(v) for v in goals[j, i]), 3, dim, 1, cv2.LINE_AA)
        g = tuple(int(v) for v in goals[target, i])
        if stage < n_sub:
            cv2.line(img, tuple(int(v) for v in kp[i]), g, c, 1, cv2.LINE_AA)
        _cross(img, g, c)
        _dot(img, kp[i], c, radius=5)
    lines = [(title, (255, 255, 255))] if title else []
    lines += [(f"t={step}   stage {min(int(stage), n_sub)}/{n_sub}",
               (255, 255, 255) if stage < n_sub else (120, 255, 120)),
              ("success" if success else "no success yet", (120, 255, 120) if success else (255, 170, 170))]
    _text_box(img, lines, "bottom-left")
    _legend(img)
    return img


if __name__ == "__main__":  # `python -m relam.overlay` is `relam overlay` (the parsing is in relam.cli)
    import sys

    from relam.cli import main

    raise SystemExit(main(["overlay", *sys.argv[1:]]))
