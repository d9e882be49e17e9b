"""Point tracking: where does a pixel of frame 0 go in later frames (the "track" of Eq. 1).

One interface, two uses:

- offline ``track(video_or_demo, query_uv (N,2)) -> (T+1, N, 2)`` for building the subgoal dataset;
- online ``reset(frame, query_uv, env=None)`` then ``update(frame, env=None) -> (N,2)`` per step, for
  the reward wrapper, which must know where the keypoints are now.

Backends:

- ``sim`` (default, no weights): ground-truth tracking. Each query pixel is lifted to 3D with the
  first frame's depth, attached to the simulator body it lies on (a query off every body snaps to
  the nearest body pixel), stored in that body's local frame and re-projected at every frame from the
  body poses. Online it only needs ``env.body_poses()`` and ``env.camera`` per step -- no extra
  rendering -- so it is cheap. Like CoTracker (appendix A.1), coordinates may leave the image, and
  occluded points keep moving with their body.
- ``lk``: OpenCV pyramidal Lucas-Kanade, frame to frame, with a forward-backward check; a point that
  fails keeps its last position. No weights; it works from pixels only (the sim-free option).
- ``cotracker``: CoTracker3 (Karaev et al., 2024) from a local checkpoint, the paper's tracker.

Pixel convention: uv[:,0] = column, uv[:,1] = row, pixel centres at integers.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from relam.devices import resolve_device

__all__ = [
    "Tracker",
    "SimTracker",
    "LKTracker",
    "CoTrackerTracker",
    "make_tracker",
    "list_trackers",
    "TRACKERS",
    "lift_to_bodies",
]


@runtime_checkable
class Tracker(Protocol):
    name: str

    def track(self, video: Any, query_uv: np.ndarray) -> np.ndarray: ...

    def reset(self, frame: np.ndarray, query_uv: np.ndarray, env: Any = None) -> None: ...

    def update(self, frame: np.ndarray, env: Any = None) -> np.ndarray: ...


def _check_query(query_uv: np.ndarray) -> np.ndarray:
    q = np.asarray(query_uv, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 2:
        raise ValueError(f"query_uv must be (N,2) pixel coordinates (u=column, v=row), got {q.shape}")
    return q


def _frames_of(video: Any) -> np.ndarray:
    frames = getattr(video, "frames", video)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"video must be (T+1,H,W,3) RGB frames or a Demo with .frames, got shape {frames.shape}"
        )
    return frames


# --------------------------------------------------------------------------------------- sim


def lift_to_bodies(
    query_uv: np.ndarray,
    depth: np.ndarray,
    body_seg: np.ndarray,
    camera: Any,
    body_pos: np.ndarray,
    body_rot: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Attach each query pixel to a body: returns (body index (N,), local point (N,3), used uv (N,2)).

    The pixel under a query (rounded, clipped to the image) gives its body and depth. A query whose
    pixel shows no tracked body (``body_seg == -1``) is moved to the nearest body pixel (Euclidean,
    first in row-major order on ties); "used uv" says where each query was lifted from. The 3D point
    ``P = camera.unproject(uv, depth)`` is stored in the body frame: ``R^T (P - p)``.
    """
    q = _check_query(query_uv)
    seg = np.asarray(body_seg)
    depth = np.asarray(depth, dtype=np.float64)
    h, w = seg.shape
    body_rows, body_cols = np.nonzero(seg >= 0)
    if body_rows.size == 0:
        raise ValueError("lift_to_bodies: body_seg shows no tracked body (all -1); nothing to track")
    cols = np.clip(np.rint(q[:, 0]).astype(int), 0, w - 1)
    rows = np.clip(np.rint(q[:, 1]).astype(int), 0, h - 1)
    used = q.copy()
    off = seg[rows, cols] < 0
    for i in np.flatnonzero(off):
        d2 = (body_cols - q[i, 0]) ** 2 + (body_rows - q[i, 1]) ** 2
        j = int(np.argmin(d2))
        rows[i], cols[i] = body_rows[j], body_cols[j]
        used[i] = (cols[i], rows[i])
    body = seg[rows, cols].astype(np.int64)
    z = depth[rows, cols]
    world = np.asarray(camera.unproject(used, z), dtype=np.float64)
    pos = np.asarray(body_pos, dtype=np.float64)[body]
    rot = np.asarray(body_rot, dtype=np.float64)[body]
    local = np.einsum("nji,nj->ni", rot, world - pos)  # R^T (P - p)
    return body, local, used


def _project_local(camera: Any, body: np.ndarray, local: np.ndarray, pos: np.ndarray,
                   rot: np.ndarray) -> np.ndarray:
    """Pixel positions of body-local points given poses pos (...,B,3), rot (...,B,3,3).

    A single frame (pos (B,3)) gathers each point's pose and calls ``camera.project``. Several
    frames (the offline ``track`` of about 1,200 candidate pixels through about 100 frames of a
    rollout) compose, per body, its pose with the camera's extrinsics (one rotation and shift per frame),
    take that body's points into the camera frame with one matmul over all frames, and hand the
    result to :meth:`relam.tasks.Camera.pixels`: no (F,N,3,3) gather; the same pixels up to
    rounding (~1e-13 px). A camera without ``pixels`` (and ``world_to_cam``) takes the gather path.
    """
    pos = np.asarray(pos, dtype=np.float64)
    rot = np.asarray(rot, dtype=np.float64)
    if pos.ndim <= 2 or not hasattr(camera, "pixels"):  # one frame (every env step): the plain way
        world = np.einsum("...nij,nj->...ni", rot[..., body, :, :], local) + pos[..., body, :]
        lead = world.shape[:-1]
        uv, _ = camera.project(world.reshape(-1, 3))
        return np.asarray(uv, dtype=np.float64).reshape(*lead, 2)
    body = np.asarray(body).reshape(-1)
    local = np.asarray(local, dtype=np.float64).reshape(-1, 3)
    lead, n_bodies = pos.shape[:-2], pos.shape[-2]
    pos, rot = pos.reshape(-1, n_bodies, 3), rot.reshape(-1, n_bodies, 3, 3)
    w2c = np.asarray(camera.world_to_cam, dtype=np.float64)
    Rc, tc = w2c[:3, :3], w2c[:3, 3]
    pc = np.empty((pos.shape[0], body.shape[0], 3))
    for b in np.unique(body):
        idx = np.flatnonzero(body == b)
        R = Rc @ rot[:, b]  # (F,3,3): body frame -> camera frame
        t = pos[:, b] @ Rc.T + tc  # (F,3)
        pc[:, idx] = np.swapaxes(R @ local[idx].T, 1, 2) + t[:, None, :]
    return camera.pixels(pc).reshape(*lead, body.shape[0], 2)


class SimTracker:
    """Ground-truth tracker from simulator body poses (default)."""

    name = "sim"

    def __init__(self) -> None:
        self._body: np.ndarray | None = None
        self._local: np.ndarray | None = None
        self._camera: Any = None

    def track(self, video: Any, query_uv: np.ndarray) -> np.ndarray:
        """Tracks through a stored Demo (needs depth0, body_seg, body_pos, body_rot, camera)."""
        needed = ("depth0", "body_seg", "body_pos", "body_rot", "camera")
        if not all(hasattr(video, a) for a in needed):
            raise ValueError(
                "SimTracker.track needs a Demo (with depth0, body_seg, body_pos, body_rot, camera), "
                "not bare frames; use make_tracker('lk') to track plain videos"
            )
        demo = video
        body, local, _ = lift_to_bodies(query_uv, demo.depth0, demo.body_seg[0], demo.camera,
                                        demo.body_pos[0], demo.body_rot[0])
        return _project_local(demo.camera, body, local, demo.body_pos, demo.body_rot).astype(
            np.float32)

    def reset(self, frame: np.ndarray, query_uv: np.ndarray, env: Any = None) -> None:
        """Lift the queries once per episode (reads env.depth(), env.body_segmentation())."""
        if env is None:
            raise ValueError("SimTracker.reset needs env= (a TaskEnv): it tracks simulator bodies")
        pos, rot = env.body_poses()
        self._camera = env.camera
        self._body, self._local, _ = lift_to_bodies(query_uv, env.depth(), env.body_segmentation(),
                                                    self._camera, pos, rot)

    @property
    def bodies(self) -> np.ndarray:
        """The body of each tracked point, as an index into the env's ``body_names`` (after
        :meth:`reset`): what a keypoint is on, for reading a policy's failures."""
        if self._body is None:
            raise RuntimeError("SimTracker.bodies read before reset")
        return self._body.copy()

    def update(self, frame: np.ndarray, env: Any = None) -> np.ndarray:
        """Current pixel positions (N,2) from env.body_poses(); no rendering."""
        if self._body is None:
            raise RuntimeError("SimTracker.update called before reset")
        if env is None:
            raise ValueError("SimTracker.update needs env= (a TaskEnv)")
        pos, rot = env.body_poses()
        return _project_local(self._camera, self._body, self._local, pos, rot).astype(np.float32)


# ---------------------------------------------------------------------------------------- lk


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    f = np.asarray(frame)
    if f.ndim == 2:
        return np.ascontiguousarray(f, dtype=np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(f, dtype=np.uint8), cv2.COLOR_RGB2GRAY)


class LKTracker:
    """Pyramidal Lucas-Kanade (OpenCV) with a forward-backward consistency check.

    Each step tracks the points from the previous frame to the current one, then back; a point whose
    round trip misses its start by more than ``fb_threshold`` px, or that OpenCV reports as lost,
    keeps its last position (holding still is the least harmful guess for a reward). LK cannot follow
    points outside the image, unlike CoTracker or the sim tracker.
    """

    name = "lk"

    def __init__(self, win_size: int = 15, max_level: int = 2, fb_threshold: float = 1.0,
                 iterations: int = 30, epsilon: float = 0.01) -> None:
        self.win_size = int(win_size)
        self.max_level = int(max_level)
        self.fb_threshold = float(fb_threshold)
        self.iterations = int(iterations)
        self.epsilon = float(epsilon)
        self._prev: np.ndarray | None = None
        self._pts: np.ndarray | None = None

    def _step(self, prev: np.ndarray, cur: np.ndarray, pts: np.ndarray) -> np.ndarray:
        import cv2

        if pts.shape[0] == 0:
            return pts
        crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, self.iterations, self.epsilon)
        kw = dict(winSize=(self.win_size, self.win_size), maxLevel=self.max_level, criteria=crit)
        p0 = pts.reshape(-1, 1, 2).astype(np.float32)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, **kw)
        p0b, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, **kw)
        fb = np.linalg.norm((p0b - p0).reshape(-1, 2), axis=1)
        ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < self.fb_threshold)
        ok &= np.isfinite(p1.reshape(-1, 2)).all(axis=1)
        out = pts.copy()
        out[ok] = p1.reshape(-1, 2)[ok]
        return out

    def track(self, video: Any, query_uv: np.ndarray) -> np.ndarray:
        frames = _frames_of(video)
        q = _check_query(query_uv).astype(np.float32)
        out = np.empty((frames.shape[0], q.shape[0], 2), dtype=np.float32)
        out[0] = q
        prev = _gray(frames[0])
        for t in range(1, frames.shape[0]):
            cur = _gray(frames[t])
            out[t] = self._step(prev, cur, out[t - 1])
            prev = cur
        return out

    def reset(self, frame: np.ndarray, query_uv: np.ndarray, env: Any = None) -> None:
        self._prev = _gray(frame)
        self._pts = _check_query(query_uv).astype(np.float32)

    def update(self, frame: np.ndarray, env: Any = None) -> np.ndarray:
        if self._prev is None or self._pts is None:
            raise RuntimeError("LKTracker.update called before reset")
        cur = _gray(frame)
        self._pts = self._step(self._prev, cur, self._pts)
        self._prev = cur
        return self._pts.copy()


# --------------------------------------------------------------------------------- cotracker


class CoTrackerTracker:
    """CoTracker3 (Karaev et al., 2024) from a local checkpoint, the paper's tracker.

    Needs the ``cotracker`` package (github.com/facebookresearch/co-tracker) and a checkpoint file
    (e.g. ``scaled_offline.pth``) copied from a machine with network access. Online use re-runs the
    offline model on all frames seen so far at every update (quadratic in time): meant for checking
    the sim tracker, not for RL training speed.
    """

    name = "cotracker"

    def __init__(self, checkpoint: str | Path | None = None, device: str = "auto",
                 window_len: int = 60) -> None:
        if checkpoint is None:
            raise ValueError(
                "CoTrackerTracker needs checkpoint= (a local CoTracker3 .pth file, e.g. "
                "scaled_offline.pth); use tracker 'sim' or 'lk' to run without weights"
            )
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"CoTrackerTracker: checkpoint {str(path)!r} does not exist. Copy a CoTracker3 "
                f"checkpoint (e.g. scaled_offline.pth from the co-tracker release) there from a "
                f"machine with network access, or use tracker 'sim' or 'lk', which need no weights"
            )
        try:
            from cotracker.predictor import CoTrackerPredictor  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "CoTrackerTracker: the `cotracker` package is not installed. Install it from "
                "https://github.com/facebookresearch/co-tracker (pip install -e . in a clone), or "
                "use tracker 'sim' or 'lk'"
            ) from exc
        self.checkpoint = path
        self.device = resolve_device(device)  # "auto": CUDA when torch sees it
        self.window_len = int(window_len)
        self._model = None
        self._frames: list[np.ndarray] = []
        self._query: np.ndarray | None = None

    def _load(self):  # pragma: no cover - needs the weights
        from cotracker.predictor import CoTrackerPredictor

        params = inspect.signature(CoTrackerPredictor).parameters
        kw: dict[str, Any] = {"checkpoint": str(self.checkpoint)}
        if "offline" in params:
            kw["offline"] = True
        if "window_len" in params:
            kw["window_len"] = self.window_len
        self._model = CoTrackerPredictor(**kw).eval().to(self.device)
        return self._model

    def track(self, video: Any, query_uv: np.ndarray) -> np.ndarray:  # pragma: no cover
        import torch

        frames = _frames_of(video)
        q = _check_query(query_uv)
        model = self._model or self._load()
        vid = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)[None].float()
        queries = torch.zeros((1, q.shape[0], 3), dtype=torch.float32)
        queries[0, :, 1:] = torch.from_numpy(q.astype(np.float32))
        with torch.no_grad():
            tracks, _vis = model(vid.to(self.device), queries=queries.to(self.device))
        return tracks[0].cpu().numpy().astype(np.float32)

    def reset(self, frame: np.ndarray, query_uv: np.ndarray, env: Any = None) -> None:
        self._frames = [np.asarray(frame)]
        self._query = _check_query(query_uv)

    def update(self, frame: np.ndarray, env: Any = None) -> np.ndarray:  # pragma: no cover
        if self._query is None:
            raise RuntimeError("CoTrackerTracker.update called before reset")
        self._frames.append(np.asarray(frame))
        return self.track(np.stack(self._frames), self._query)[-1]


TRACKERS: dict[str, Callable[..., Tracker]] = {
    "sim": SimTracker,
    "lk": LKTracker,
    "cotracker": CoTrackerTracker,
}


def list_trackers() -> list[str]:
    return sorted(TRACKERS)


def make_tracker(name: str = "sim", **kwargs: Any) -> Tracker:
    """Build a tracker by registry name ("sim" | "lk" | "cotracker"); kwargs go to its constructor."""
    if name not in TRACKERS:
        raise ValueError(f"unknown tracker {name!r}; known: {list_trackers()}")
    return TRACKERS[name](**kwargs)
