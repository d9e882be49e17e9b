"""Draw keypoints, their tracks and the keyframes over a demo, to check Eq. (1) and Eq. (2) by eye.

A person should see at a glance that the points sit on the arm and the object, and that keyframes
fall where the motion turns. Usage::

    python -m relam.overlay drawer-open-v3 --demo 0 --out drawer.png   # keyframe panels + angles
    python -m relam.overlay PushCube-v1 --demo 0 --out push.gif        # every frame, with trails

PNG: the initial frame with every keypoint's full track (arm points in one colour family, object
points ringed white), one panel per keyframe with the keypoints there, and the turning-angle score
of Eq. (2) over time with the keyframes marked. GIF: each frame with the points and their trails;
keyframes get a red border.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from relam.keyframes import turning_angles
from relam.keypoints import KeypointSettings

__all__ = ["overlay_png", "overlay_gif", "main"]

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


def overlay_gif(demo: Any, seq: Any, out: str | Path, scale: int = 3, trail: int = 15,
                fps: int = 10) -> Path:
    """Every frame with the keypoints and their recent trail; keyframes get a red border."""
    import cv2
    import imageio.v2 as imageio

    frames = np.asarray(demo.frames)
    tracks = np.asarray(seq.tracks, dtype=np.float64)
    steps = set(int(s) for s in seq.keyframe_steps)
    on_obj = np.asarray(seq.on_object) if seq.on_object is not None else np.zeros(tracks.shape[1], bool)
    out_frames = []
    for t in range(len(frames)):
        img = cv2.resize(frames[t], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        img = np.ascontiguousarray(img)
        for i in range(tracks.shape[1]):
            c = tuple(int(v) for v in _color(i))
            lo = max(0, t - trail)
            pts = np.rint((tracks[lo:t + 1, i] + 0.5) * scale - 0.5).astype(np.int32)
            if len(pts) > 1:
                cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, c, 1, cv2.LINE_AA)
            center = tuple(int(v) for v in pts[-1])
            cv2.circle(img, center, 4, c, -1, cv2.LINE_AA)
            cv2.circle(img, center, 5, (255, 255, 255) if on_obj[i] else (0, 0, 0), 1, cv2.LINE_AA)
        if t in steps:
            cv2.rectangle(img, (0, 0), (img.shape[1] - 1, img.shape[0] - 1), (255, 0, 0), 4)
        cv2.putText(img, f"t={t}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)
        out_frames.append(img)
        if t in steps:  # hold keyframes a little longer
            out_frames.extend([img] * 3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(out, out_frames, duration=1.0 / fps, loop=0)
    return out


def main(argv: list[str] | None = None) -> None:
    from relam.cli import add_weights_args, tool_parser, weights_kwargs

    p = tool_parser(
        "overlay",
        "Draw the keypoints (Eq. 1), their tracks and the keyframes (Eq. 2) over one stored demo "
        "of a task, as a PNG summary or an animated GIF.")
    p.add_argument("task", help="task name, e.g. drawer-open-v3 or PushCube-v1")
    p.add_argument("--demo", type=int, default=0, help="index of the stored demo")
    p.add_argument("--out", required=True, help="output file, .png or .gif")
    p.add_argument("--kind", default="expert", help="demo kind (expert | offline)")
    p.add_argument("--num-points", type=int, default=KeypointSettings.num_points, help="keypoints per demo")
    add_weights_args(p, segmenter=True, tracker=True)
    a = p.parse_args(argv)
    settings = KeypointSettings(num_points=a.num_points, **weights_kwargs(a))  # weights checked first
    from relam.demos import load_demos
    from relam.subgoals import subgoal_sequence

    demos = load_demos(a.task, kind=a.kind, n=a.demo + 1)
    if len(demos) <= a.demo:
        raise SystemExit(f"--demo {a.demo}: only {len(demos)} {a.kind} demos of {a.task} are stored; "
                         f"run relam.demos.make_demos({a.task!r}, n={a.demo + 1})")
    demo = demos[a.demo]
    seq, _ = subgoal_sequence(demo, settings)
    suffix = Path(a.out).suffix.lower()
    if suffix == ".gif":
        path = overlay_gif(demo, seq, a.out)
    elif suffix == ".png":
        path = overlay_png(demo, seq, a.out, settings)
    else:
        raise SystemExit(f"--out must end in .png or .gif, got {a.out!r}")
    print(f"{path}: keypoints at t=0 {np.round(seq.keypoints[0], 1).tolist()}, "
          f"keyframes {seq.keyframe_steps.tolist()}")


if __name__ == "__main__":
    main()
