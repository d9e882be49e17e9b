"""Keypoint selection, Eq. (1) of the paper (section 3.1.1, appendix A.1).

The paper picks a handful of *representative* pixels in the first frame of each demonstration:

1. segment the task-relevant objects with a text-prompted segmenter (one prompt per object, e.g.
   "robot arm", "green drawer");
2. keep only pixels whose k x k square lies fully inside the mask (appendix A.1: SAM masks carry
   isolated stray pixels; a point must sit *inside* a contiguous region);
3. track every surviving pixel through the whole video and drop those whose motion range
   (largest displacement from the start, in pixels) is below a threshold -- pixels that never move
   say nothing about task progress;
4. farthest point sampling (FPS) down to N points, so the few points cover the moving parts.

This module holds the pure, array-in/array-out pieces (square filter, motion range, FPS and the
selection rule that ties them together) so they can be tested with known answers. Running the
segmenter and the tracker on a demo lives in :mod:`relam.subgoals`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

#: the selection rules :func:`select_keypoints` knows (see its docstring): ``"fps"`` is Eq. (1) as the
#: paper writes it, ``"fps_arm"`` is Eq. (1) with the points after the object's taken on the arm
#: only (``arm_after_object``), ``"first_frame"`` makes the choice a function of the first frame alone.
KEYPOINT_RULES = ("fps", "fps_arm", "first_frame")

__all__ = [
    "KEYPOINT_RULES",
    "KeypointSettings",
    "KeypointSelection",
    "square_filter",
    "mask_pixels",
    "motion_range",
    "farthest_point_sampling",
    "select_keypoints",
]


@dataclass(frozen=True)
class KeypointSettings:
    """Every knob of subgoal-dataset generation (keypoints Eq. 1 + keyframes Eq. 2), hashed for the cache.

    Defaults and why. Measured with the sim segmenter/tracker on the stored expert demos at 128 px
    (drawer-open 40 demos, door-open 40, button-press-wall 10, PushCube 10, PickCube 10; see
    ``benchmarks/bench_keypoints.py`` and look at the result with ``relam overlay``):

    - ``num_points = 4``: the paper's main setting (appendix C); 8 and 12 for the point-number
      ablation (Fig. 6a).
    - ``square = 3``: removes stray pixels and 1-2 px slivers while every object keeps interior
      pixels. Object pixels left (fewest over the demos) for k = 1/3/5/7: button 107/55/14/1,
      PushCube cube 48/21/5/0, drawer 208/132/76/33; k = 5 nearly empties the button and the cube.
    - ``motion_threshold = 2.0`` px: the prompts name only moving bodies (the arm's upper links and
      the manipulated object), so almost nothing is dropped here (door: about 10 of 2,088 pixels;
      others none), but it keeps SAM's background pixels out when EVF-SAM is used. It must stay
      well below the smallest object motion: the button moves only 7.5 px (a 10 px threshold
      dropped every button pixel), the PushCube cube 14.9 px, the drawer 18 px, the door 87 px.
      (Two PickCube demos move the cube only 1.6-2.4 px: their goal is right above it; the object
      guarantee of :func:`select_keypoints` keeps a cube point there.)
    - ``min_step = 5`` / ``max_step = 40`` (m, M of Eq. 2): demos are 49-114 steps long. m = 5 keeps
      stages at least 5 control steps long; M = 40 lets the first window reach the approach turn of
      every task (steps 26-40) while still giving long smooth runs (the door's arc) a waypoint.
      With M = 30, PushCube and PickCube got an extra mid-reach waypoint (their turn is at step
      32-36) and button-press-wall an early one on its climb over the wall.
      Keyframes per demo with these defaults, final frame included (S: demos):
      drawer 4: 40/40; door 2: 1, 3: 26, 4: 11, 5: 2; button 3: 3, 4: 7; PushCube 2: 8, 3: 2;
      PickCube 2: 5, 3: 4, 4: 1.
    - ``min_displacement = 3.0`` px: Eq. (2)'s displacement vectors are measured over 3 px of
      root-mean-square keypoint motion (see :func:`relam.keyframes.turning_angles`). The arm moves
      about 2 px a step, so 2 px means nearly one-step vectors, which saw the rounded turn over the
      button's wall as 26 deg (3 px: 35 deg); 5 px started to merge nearby turns (the drawer's
      grasp and pull, 7 steps apart).
    - ``min_angle_deg = 30``: the turns chosen as keyframes measured 35-155 deg (3 demos a task),
      the median step 0-11 deg, and the wiggles that are not turns 10-29 deg (PushCube's push,
      the door's arc, the arm's first steps). At 20 deg such wiggles added keyframes in some demos
      only; at 30 every demo of a task got the same turns. Below it a window counts as turn-free
      (see :func:`relam.keyframes.select_keyframes`).
    - ``segmenter = "sim"`` / ``tracker = "sim"``: the defaults need no weights (EVF-SAM and
      CoTracker3 need local checkpoints, passed through ``segmenter_kwargs`` / ``tracker_kwargs``).
      ``"lk"`` needs no weights either but drifts by several px on these textureless arms.
    """

    num_points: int = 4
    square: int = 3
    motion_threshold: float = 2.0
    min_step: int = 5
    max_step: int = 40
    min_displacement: float = 3.0
    min_angle_deg: float = 30.0
    segmenter: str = "sim"
    tracker: str = "sim"
    segmenter_kwargs: dict[str, Any] = field(default_factory=dict)
    tracker_kwargs: dict[str, Any] = field(default_factory=dict)
    #: points taken on the object prompt's mask before FPS covers the rest (the paper: at least one;
    #: its drawer example has "three on the robotic arm and one on the drawer"). With 2 the object
    #: weighs twice in the mean distance of Eq. (3), so pulling the arm back without the drawer pays
    #: less (an experiment of the online-learning issue; see the README).
    object_points: int = 1
    #: take the points after the object's on the arm only. Plain FPS (False, the default) runs over
    #: every moving pixel, so an object that moves far gets a second point: on door-open-v3 the
    #: door swings 90-100 px and FPS put 2 of the 4 points on the door, the 2 arm points on the
    #: upper links (one at the image corner), none on the gripper, so no subgoal said where the hand
    #: must be. True follows the paper's example ("three on the robotic arm and one on the drawer").
    arm_after_object: bool = False
    #: the selection rule of :func:`select_keypoints`: ``None`` (default) lets the task decide
    #: (``keypoint_rule`` in ``relam/tasks.yaml``: ``fps`` unless set; ``first_frame`` on the
    #: ManiSkill tasks, ``fps_arm`` on door-open-v3); ``"fps"``, ``"fps_arm"`` or ``"first_frame"``
    #: force one (benchmarks compare them).
    #: Left out of :meth:`to_dict` while None, so existing cache keys stay valid; the subgoal cache
    #: key records the rule a task actually uses when it is not ``fps``.
    rule: str | None = None

    def __post_init__(self) -> None:
        if self.rule is not None and self.rule not in KEYPOINT_RULES:
            raise ValueError(f"KeypointSettings.rule must be None or one of {KEYPOINT_RULES}, got "
                             f"{self.rule!r}")
        if int(self.num_points) < 1:
            raise ValueError(f"KeypointSettings.num_points must be >= 1, got {self.num_points}")
        if not 1 <= int(self.object_points) <= int(self.num_points):
            raise ValueError(
                f"KeypointSettings.object_points must be in 1..num_points={self.num_points}, got "
                f"{self.object_points}"
            )
        if int(self.square) < 1 or int(self.square) % 2 == 0:
            raise ValueError(
                f"KeypointSettings.square must be a positive odd integer (a square centred on the "
                f"pixel), got {self.square}"
            )
        if self.motion_threshold < 0:
            raise ValueError(
                f"KeypointSettings.motion_threshold must be >= 0 px, got {self.motion_threshold}"
            )
        if not 1 <= int(self.min_step) <= int(self.max_step):
            raise ValueError(
                f"KeypointSettings needs 1 <= min_step <= max_step, got min_step={self.min_step}, "
                f"max_step={self.max_step}"
            )
        if not self.min_displacement > 0:
            raise ValueError(
                f"KeypointSettings.min_displacement must be > 0 px, got {self.min_displacement}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (used for the settings hash of the cache).

        ``object_points`` is left out at its default 1 and ``rule`` at None, so datasets made before the field existed
        keep their cache keys (they were all made with one object point).
        """
        d = asdict(self)
        if d["object_points"] == 1:
            del d["object_points"]
        if not d["arm_after_object"]:  # the same: datasets made before the field keep their keys
            del d["arm_after_object"]
        if d["rule"] is None:  # the same (the task's rule; the subgoal key records it)
            del d["rule"]
        return d


@dataclass
class KeypointSelection:
    """Result of Eq. (1) on one demo.

    ``indices`` index into the candidate arrays given to :func:`select_keypoints`;
    ``counts`` says how many candidates survived each filter (for reports and the docstring of
    :class:`KeypointSettings`).
    """

    indices: np.ndarray  # (N,) int64 into the candidates
    uv: np.ndarray  # (N,2) float32 pixel coordinates at frame 0
    on_object: np.ndarray  # (N,) bool
    counts: dict[str, int]


def square_filter(mask: np.ndarray, k: int) -> np.ndarray:
    """Pixels of ``mask`` whose whole k x k square (centred on the pixel) lies inside ``mask``.

    Appendix A.1: segmentation masks contain stray pixels from the background, which appear as
    isolated specks; requiring a full square of mask around a point removes them (an erosion with a
    square structuring element). Squares that leave the image count as outside the mask, so no point
    sits on the image border. ``k`` must be odd (1 keeps the mask unchanged).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"square_filter: mask must be (H,W), got shape {mask.shape}")
    k = int(k)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"square_filter: k must be a positive odd integer, got {k}")
    if k == 1:
        return mask.copy()
    r = k // 2
    h, w = mask.shape
    # Summed-area table with a zero border of r pixels on every side.
    padded = np.zeros((h + 2 * r + 1, w + 2 * r + 1), dtype=np.int32)
    padded[r + 1 : r + 1 + h, r + 1 : r + 1 + w] = mask
    sat = padded.cumsum(0).cumsum(1)
    # Window sum for the square whose top-left padded index is (i, j): rows i..i+k-1, cols j..j+k-1.
    total = sat[k:, k:] - sat[:-k, k:] - sat[k:, :-k] + sat[:-k, :-k]
    return total[:h, :w] == k * k


def mask_pixels(mask: np.ndarray) -> np.ndarray:
    """(P,2) float32 pixel coordinates (u=column, v=row) of the True pixels, in row-major order."""
    rows, cols = np.nonzero(np.asarray(mask, dtype=bool))
    return np.stack([cols, rows], axis=1).astype(np.float32)


def motion_range(tracks: np.ndarray) -> np.ndarray:
    """Largest distance (px) of each point from its start over the video: max_t ||x_t - x_0||.

    ``tracks`` is (T+1, N, 2). This is the quantity thresholded in Eq. (1).
    """
    tracks = np.asarray(tracks, dtype=np.float64)
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise ValueError(f"motion_range: tracks must be (T+1,N,2), got shape {tracks.shape}")
    return np.linalg.norm(tracks - tracks[:1], axis=-1).max(axis=0)


def farthest_point_sampling(points: np.ndarray, n: int, start: int | Sequence[int] = 0) -> np.ndarray:
    """Indices of ``n`` points picked by farthest point sampling (Eldar et al., 1997).

    Starts at index ``start`` (or with the distinct indices of a sequence, kept in order); each next
    point is the one farthest from all points picked so far (ties go to the lowest index, so the
    result is deterministic). If there are at most ``n`` points, all indices are returned (in FPS
    order from ``start``).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2:
        raise ValueError(f"farthest_point_sampling: points must be (P,D), got shape {pts.shape}")
    p = pts.shape[0]
    if p == 0:
        return np.zeros(0, dtype=np.int64)
    starts = [int(start)] if np.ndim(start) == 0 else list(dict.fromkeys(int(i) for i in start))  # type: ignore[union-attr]
    if not starts or any(not 0 <= i < p for i in starts):
        raise ValueError(f"farthest_point_sampling: start={start} is outside 0..{p - 1}")
    n = min(int(n), p)
    starts = starts[:n]
    chosen = np.empty(n, dtype=np.int64)
    chosen[: len(starts)] = starts
    dist = np.min([np.linalg.norm(pts - pts[i], axis=1) for i in starts], axis=0)
    for i in range(len(starts), n):
        nxt = int(np.argmax(dist))
        chosen[i] = nxt
        dist = np.minimum(dist, np.linalg.norm(pts - pts[nxt], axis=1))
    return chosen


def select_keypoints(
    candidates_uv: np.ndarray,
    tracks: np.ndarray,
    on_object: np.ndarray,
    num_points: int,
    motion_threshold: float,
    object_points: int = 1,
    arm_after_object: bool = False,
    rule: str = "fps",
) -> KeypointSelection:
    """Eq. (1) after segmentation: motion filter, then FPS with a guaranteed object point.

    ``candidates_uv`` (P,2) are the square-filtered mask pixels at frame 0, ``tracks`` (T+1,P,2)
    their tracks through the demo, ``on_object`` (P,) marks pixels of the object prompt(s) (not the
    robot arm).

    Rules (deterministic):

    - *moving* candidates are those with ``motion_range > motion_threshold``;
    - **object guarantee**: FPS starts at the object pixel with the largest motion range (lowest
      index on ties). Starting there, rather than adding an object point afterwards, keeps plain FPS
      for the rest. If no object pixel moves beyond the threshold (on 1 of 10 PickCube demos the
      goal lies right above the cube, which moves 1.6 px), that pixel is kept anyway
      (``counts["object_forced"] = 1``): the object's place is what the task is about, and the
      anticipation model needs the same kind of points in every demo. Only when the object's mask
      is empty after the square filter does the start fall back to the most-moving pixel overall;
      so there is >= 1 object point whenever any object pixel survives the square filter;
    - ``object_points > 1``: FPS first runs on the moving object pixels alone, from that start,
      until it has ``object_points`` of them (fewer if fewer object pixels move), then goes on
      over all moving candidates;
    - ``arm_after_object``: after those object points, FPS goes on over the moving *arm* pixels
      only (not the object's), so exactly ``object_points`` points lie on the object whenever the
      arm has enough moving pixels (else the object's fill in);
    - FPS runs on the frame-0 pixel positions (the paper selects points "in one image");
    - if fewer than ``num_points`` candidates move, the remaining slots are filled with the
      non-moving candidates of largest motion range, so every demo of a task yields the same
      number of points (the anticipation model needs a fixed N). ``counts["filled"]`` says how many.

    ``rule="fps_arm"`` is ``"fps"`` with ``arm_after_object=True`` (a task's ``keypoint_rule`` in
    ``relam/tasks.yaml`` can name it, so the choice reaches the task's datasets and run keys).

    ``rule="first_frame"`` (a task's ``keypoint_rule`` in ``relam/tasks.yaml``) replaces the two
    choices above that depend on the video with choices read off the first frame, so that the
    anticipation model, which sees only that frame, can say where the points are:

    - the object point is the object pixel nearest the centroid of the object's pixels (all of
      them, moving or not; the ``object_points - 1`` others by FPS over the object's pixels from
      there), not the object pixel that happens to move most;
    - the other points are FPS over the moving *arm* pixels alone, started at the arm pixel nearest
      the centroid of the moving arm pixels, so where the object lies does not move them; they
      come after the object's points, in FPS order.

    Why: under ``"fps"`` the arm points are the ones farthest from the cube's most-moving pixel,
    and on PushCube/PickCube which arm pixels those are jumps with the cube's place (the same slot
    lay 10-30 px apart on demos with nearly the same first frame), so no model could predict the
    initial keypoints from the image (6.3 / 12.9 px held-out error). The motion filter stays (a
    pixel that never moves still cannot be a keypoint; on these tasks every arm pixel moves).
    """
    uv = np.asarray(candidates_uv, dtype=np.float32)
    on_object = np.asarray(on_object, dtype=bool)
    p = uv.shape[0]
    if tracks.shape[1] != p or on_object.shape[0] != p:
        raise ValueError(
            f"select_keypoints: candidates_uv has {p} points but tracks has {tracks.shape[1]} and "
            f"on_object has {on_object.shape[0]}; they must agree"
        )
    if p < num_points:
        raise ValueError(
            f"select_keypoints: only {p} candidate pixels survived the square filter but "
            f"num_points={num_points}; use a smaller KeypointSettings.square or fewer points"
        )
    rng_px = motion_range(tracks)
    moving = rng_px > motion_threshold
    counts = {
        "candidates": int(p),
        "candidates_object": int(on_object.sum()),
        "moving": int(moving.sum()),
        "moving_object": int((moving & on_object).sum()),
        "object_forced": 0,
        "filled": 0,
    }
    if rule == "fps_arm":
        rule, arm_after_object = "fps", True
    if rule == "first_frame":
        return _select_first_frame(uv, rng_px, moving, on_object, num_points, object_points, counts)
    if rule != "fps":
        raise ValueError(f"select_keypoints: rule must be one of {KEYPOINT_RULES}, got {rule!r}")
    obj_moving = np.flatnonzero(moving & on_object)
    if obj_moving.size:
        start = int(obj_moving[np.argmax(rng_px[obj_moving])])
    elif on_object.any():
        # the object hardly moves in this demo (PickCube with its goal right above the cube):
        # keep its most-moving pixel anyway, so every demo of a task has an object point
        obj = np.flatnonzero(on_object)
        start = int(obj[np.argmax(rng_px[obj])])
        moving[start] = True
        counts["object_forced"] = 1
    elif moving.any():
        idx = np.flatnonzero(moving)
        start = int(idx[np.argmax(rng_px[idx])])
    else:
        start = -1
    if start >= 0:
        # np.argmax takes the first (lowest index) on ties, so the start is deterministic
        idx_moving = np.flatnonzero(moving)
        first = [start]
        idx_obj = np.flatnonzero(moving & on_object)
        if object_points > 1 and idx_obj.size > 1:  # the start is an object pixel here
            k = min(int(object_points), num_points, idx_obj.size)
            first = idx_obj[farthest_point_sampling(uv[idx_obj], k, int(np.searchsorted(idx_obj, start)))].tolist()
        if arm_after_object and on_object[start]:
            pool = np.union1d(np.asarray(first, dtype=np.int64), np.flatnonzero(moving & ~on_object))
            if pool.size < num_points:  # too few moving arm pixels: the object's fill in
                pool = idx_moving
            idx_moving = pool
        seeds = [int(np.searchsorted(idx_moving, i)) for i in first]
        picked = idx_moving[farthest_point_sampling(uv[idx_moving], num_points, seeds)]
    else:
        picked = np.zeros(0, dtype=np.int64)
    return _filled_selection(uv, rng_px, on_object, picked, num_points, counts)


def _filled_selection(uv: np.ndarray, rng_px: np.ndarray, on_object: np.ndarray, picked: np.ndarray,
                      num_points: int, counts: dict[str, int]) -> KeypointSelection:
    """The selection from ``picked``, topped up to ``num_points`` with the most-moving pixels left
    (stable order, so ties keep the lowest index); ``counts["filled"]`` says how many."""
    if picked.size < num_points:
        rest = np.setdiff1d(np.arange(uv.shape[0]), picked)
        order = rest[np.argsort(-rng_px[rest], kind="stable")]
        fill = order[: num_points - picked.size]
        counts["filled"] = int(fill.size)
        picked = np.concatenate([picked, fill])
    picked = picked.astype(np.int64)
    return KeypointSelection(
        indices=picked, uv=uv[picked].copy(), on_object=on_object[picked].copy(), counts=counts
    )


def _nearest(points: np.ndarray, target: np.ndarray) -> int:
    """Index of the point nearest ``target`` (lowest index on ties)."""
    return int(np.argmin(np.linalg.norm(np.asarray(points, np.float64) - target, axis=1)))


def _select_first_frame(uv: np.ndarray, rng_px: np.ndarray, moving: np.ndarray, on_object: np.ndarray,
                        num_points: int, object_points: int, counts: dict[str, int]) -> KeypointSelection:
    """``rule="first_frame"`` of :func:`select_keypoints`: the choice made from frame 0's pixels."""
    obj = np.flatnonzero(on_object)
    picked = np.zeros(0, dtype=np.int64)
    if obj.size:
        k = min(int(object_points), int(num_points), obj.size)
        start = _nearest(uv[obj], uv[obj].astype(np.float64).mean(axis=0))
        picked = obj[farthest_point_sampling(uv[obj], k, start)]
        if not moving[picked[0]]:
            counts["object_forced"] = 1
    arm = np.flatnonzero(moving & ~on_object)
    need = int(num_points) - picked.size
    if arm.size and need > 0:
        start = _nearest(uv[arm], uv[arm].astype(np.float64).mean(axis=0))
        picked = np.concatenate([picked, arm[farthest_point_sampling(uv[arm], need, start)]])
    # too few moving arm pixels: the most-moving others fill in
    return _filled_selection(uv, rng_px, on_object, picked, num_points, counts)
