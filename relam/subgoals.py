"""The subgoal dataset (section 3.1.1): keypoints (Eq. 1) tracked to keyframes (Eq. 2), per demo.

For each action-free expert video: segment the first frame with the task's prompts, keep
square-filtered pixels, track them, keep the moving ones, pick N by farthest point sampling
(:mod:`relam.keypoints`), then choose keyframes where the keypoints' motion turns
(:mod:`relam.keyframes`). One :class:`SubgoalSequence` per demo holds what the anticipation model
learns from (the initial frame, the keypoints at frame 0 and at every keyframe) and what the
"ground-truth subgoal" / Oracle modes need (keyframe steps and images).

``build_subgoal_dataset(task, settings)`` caches the result under
``cache_dir()/subgoals/<task>/<hash>.npz``; the hash covers the settings, the number and kind of
demos and the task entry (camera, prompts), so changing any of them builds a new file. A damaged
file (cut short, bad checksum, arrays missing) is moved to ``quarantine/`` beside it, with a
warning, and built again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from relam.keyframes import select_keyframes
from relam.keypoints import (
    KeypointSelection,
    KeypointSettings,
    mask_pixels,
    select_keypoints,
    square_filter,
)

__all__ = [
    "KeypointSettings",
    "SubgoalSequence",
    "SubgoalDataset",
    "DemoKeypoints",
    "extract_keypoints",
    "keypoint_rule",
    "keypoint_object_points",
    "subgoal_sequence",
    "build_subgoal_dataset",
    "subgoal_cache_path",
]

_FORMAT_VERSION = 1
#: Bumped whenever keypoint/keyframe selection changes its output for the same settings, so that
#: cached subgoal datasets made by older code are not reused.
PIPELINE_VERSION = 4


@dataclass
class SubgoalSequence:
    """One demo's subgoals. S = number of keyframes (the last is the demo's final frame).

    - ``keypoints`` (S+1, N, 2) float32: row 0 = keypoints in the initial frame, row s = their
      positions at keyframe s (pixels, u=column, v=row; may lie outside the image);
    - ``keyframe_steps`` (S,) int64: video step of each keyframe, strictly increasing, last = T;
    - ``keyframe_images`` (S, H, W, 3) uint8: the true frames at the keyframes (Oracle baseline);
    - ``tracks`` (T+1, N, 2) float32: the keypoints at every step (reward sanity checks, overlays);
    - ``on_object`` (N,) bool: which keypoints were taken from the object prompt's mask.
    """

    task: str
    seed: int
    initial_frame: np.ndarray
    keypoints: np.ndarray
    keyframe_steps: np.ndarray
    keyframe_images: np.ndarray
    tracks: np.ndarray | None = None
    on_object: np.ndarray | None = None

    @property
    def num_subgoals(self) -> int:
        return int(self.keyframe_steps.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.keypoints.shape[1])


@dataclass
class SubgoalDataset:
    """All subgoal sequences of one task, plus the settings that made them.

    ``items`` (alias ``sequences``) is a plain list of :class:`SubgoalSequence`; ``counts`` holds,
    per demo, how many pixels survived each filter of Eq. (1) (keys as in
    :class:`relam.keypoints.KeypointSelection`).
    """

    task: str
    settings: dict[str, Any]
    items: list[SubgoalSequence]
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def sequences(self) -> list[SubgoalSequence]:
        return self.items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> SubgoalSequence:
        return self.items[i]

    def __iter__(self):
        return iter(self.items)

    @property
    def num_points(self) -> int:
        return self.items[0].num_points if self.items else int(self.settings.get("num_points", 0))

    def summary(self) -> dict[str, Any]:
        """Keyframe counts and filter survivors, for reports."""
        s = np.array([it.num_subgoals for it in self.items])
        out: dict[str, Any] = {
            "task": self.task,
            "demos": len(self.items),
            "keyframes_min": int(s.min()) if s.size else 0,
            "keyframes_mean": float(s.mean()) if s.size else 0.0,
            "keyframes_max": int(s.max()) if s.size else 0,
            "object_points_min": int(min((it.on_object.sum() for it in self.items
                                          if it.on_object is not None), default=0)),
        }
        for k, v in self.counts.items():
            out[f"{k}_median"] = float(np.median(v)) if len(v) else 0.0
        return out

    # ------------------------------------------------------------------------------- storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays (variable-length parts concatenated, with offsets) for one .npz file."""
        its = self.items
        if not its:
            raise ValueError("SubgoalDataset.to_arrays: the dataset has no items")
        n_key = np.array([it.keypoints.shape[0] for it in its])
        n_tr = np.array([0 if it.tracks is None else it.tracks.shape[0] for it in its])
        npts = its[0].num_points
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(_FORMAT_VERSION),
            "task": np.array(self.task),
            "settings_json": np.array(json.dumps(self.settings, sort_keys=True, default=str)),
            "item_task": np.array([it.task for it in its]),
            "seed": np.array([it.seed for it in its], dtype=np.int64),
            "initial_frame": np.stack([it.initial_frame for it in its]).astype(np.uint8),
            "keypoints": np.concatenate([it.keypoints for it in its]).astype(np.float32),
            "keypoints_len": n_key,
            "keyframe_steps": np.concatenate([it.keyframe_steps for it in its]).astype(np.int64),
            "keyframe_images": np.concatenate([it.keyframe_images for it in its]).astype(np.uint8),
            "tracks": (np.concatenate([it.tracks for it in its if it.tracks is not None])
                       if n_tr.sum() else np.zeros((0, npts, 2))).astype(np.float32),
            "tracks_len": n_tr,
            "on_object": np.stack([np.zeros(npts, bool) if it.on_object is None else it.on_object
                                   for it in its]),
        }
        for k, v in self.counts.items():
            arrays[f"count_{k}"] = np.asarray(v, dtype=np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, a: Any) -> "SubgoalDataset":
        ver = int(a["format_version"])
        if ver != _FORMAT_VERSION:
            raise ValueError(f"subgoal file has format_version {ver}, expected {_FORMAT_VERSION}; "
                             f"delete it and rebuild with build_subgoal_dataset")
        n_key = a["keypoints_len"]
        n_tr = a["tracks_len"]
        k_off = np.concatenate([[0], np.cumsum(n_key)])
        s_off = np.concatenate([[0], np.cumsum(n_key - 1)])
        t_off = np.concatenate([[0], np.cumsum(n_tr)])
        items = []
        for i in range(len(n_key)):
            items.append(SubgoalSequence(
                task=str(a["item_task"][i]),
                seed=int(a["seed"][i]),
                initial_frame=a["initial_frame"][i],
                keypoints=a["keypoints"][k_off[i]:k_off[i + 1]],
                keyframe_steps=a["keyframe_steps"][s_off[i]:s_off[i + 1]],
                keyframe_images=a["keyframe_images"][s_off[i]:s_off[i + 1]],
                tracks=a["tracks"][t_off[i]:t_off[i + 1]] if n_tr[i] else None,
                on_object=a["on_object"][i],
            ))
        counts = {k[len("count_"):]: a[k] for k in a.files if k.startswith("count_")} \
            if hasattr(a, "files") else {k[6:]: a[k] for k in a if k.startswith("count_")}
        return cls(task=str(a["task"]), settings=json.loads(str(a["settings_json"])), items=items,
                   counts=counts)

    def save(self, path: str | Path) -> Path:
        """Atomic compressed .npz write."""
        from relam.cache import atomic_save_npz

        return atomic_save_npz(path, **self.to_arrays())

    @classmethod
    def load(cls, path: str | Path) -> "SubgoalDataset":
        with np.load(path, allow_pickle=False) as f:
            return cls.from_arrays({k: f[k] for k in f.files})


# ----------------------------------------------------------------------------------- pipeline


@dataclass
class DemoKeypoints:
    """Eq. (1) on one demo: the selection, the keypoints' tracks and the candidate masks."""

    selection: KeypointSelection
    tracks: np.ndarray  # (T+1, N, 2) float32
    masks: dict[str, np.ndarray]  # prompt -> square-filtered mask at frame 0


def _spec_for(demo: Any, spec: Any) -> Any:
    if spec is not None:
        return spec
    from relam.tasks import get_task

    return get_task(demo.task)


def keypoint_rule(settings: KeypointSettings, spec: Any) -> str:
    """The selection rule used: ``settings.rule`` when set, else the task's ``keypoint_rule`` (fps)."""
    return settings.rule or getattr(spec, "keypoint_rule", None) or "fps"


def keypoint_object_points(settings: KeypointSettings, spec: Any) -> int:
    """Keypoints taken on the object: ``settings.object_points`` when set above 1, else the task's
    ``object_points`` (1)."""
    if int(settings.object_points) != 1:
        return int(settings.object_points)
    return int(getattr(spec, "object_points", 1) or 1)


def extract_keypoints(demo: Any, settings: KeypointSettings | None = None, *, segmenter: Any = None,
                      tracker: Any = None, spec: Any = None) -> DemoKeypoints:
    """Eq. (1) on one demo: segment frame 0 per prompt, square filter, track, motion filter, FPS.

    Prompts are taken in the task's order; a pixel claimed by two masks belongs to the first.
    ``spec`` (anything with ``prompts`` and ``object_prompt``) defaults to the demo's task entry.
    """
    from relam.perception import make_segmenter, make_tracker

    settings = settings or KeypointSettings()
    spec = _spec_for(demo, spec)
    if segmenter is None:
        kw = dict(settings.segmenter_kwargs)
        if settings.segmenter == "sim":  # the simulator maps the entry's own prompts to bodies
            kw.setdefault("prompts", spec.prompts)
        segmenter = make_segmenter(settings.segmenter, **kw)
    tracker = tracker or make_tracker(settings.tracker, **settings.tracker_kwargs)
    frame0 = np.asarray(demo.frames[0])
    taken = np.zeros(frame0.shape[:2], dtype=bool)
    masks: dict[str, np.ndarray] = {}
    cand, obj = [], []
    rule = keypoint_rule(settings, spec)
    for prompt in spec.prompts:
        m = np.asarray(segmenter.segment(frame0, prompt, demo=demo, t=0), dtype=bool)
        kept = square_filter(m, settings.square) & ~taken
        # first_frame rule: an object the square filter empties (PickCube's cube half hidden by the
        # gripper: 28 visible pixels, no 3x3 square) keeps the pixels of the largest square that
        # leaves any, so every demo has its object point in the same slot
        k = settings.square
        while rule == "first_frame" and prompt == spec.object_prompt and not kept.any() and k > 1:
            k -= 2
            kept = square_filter(m, k) & ~taken
        taken |= kept
        masks[prompt] = kept
        px = mask_pixels(kept)
        cand.append(px)
        obj.append(np.full(len(px), prompt == spec.object_prompt))
    candidates = np.concatenate(cand) if cand else np.zeros((0, 2), np.float32)
    on_object = np.concatenate(obj) if obj else np.zeros(0, bool)
    if len(candidates) < settings.num_points:
        raise ValueError(
            f"extract_keypoints: task {getattr(demo, 'task', '?')} seed {getattr(demo, 'seed', '?')}: "
            f"only {len(candidates)} pixels of the prompts {list(spec.prompts)} survive the "
            f"{settings.square}x{settings.square} square filter, fewer than num_points="
            f"{settings.num_points}; lower KeypointSettings.square or check the segmentation"
        )
    all_tracks = np.asarray(tracker.track(demo, candidates), dtype=np.float32)
    sel = select_keypoints(candidates, all_tracks, on_object, settings.num_points,
                           settings.motion_threshold, object_points=keypoint_object_points(settings, spec),
                           arm_after_object=settings.arm_after_object, rule=rule)
    return DemoKeypoints(selection=sel, tracks=all_tracks[:, sel.indices].copy(), masks=masks)


def subgoal_sequence(demo: Any, settings: KeypointSettings | None = None, *, segmenter: Any = None,
                     tracker: Any = None, spec: Any = None) -> tuple[SubgoalSequence, DemoKeypoints]:
    """Keypoints (Eq. 1) + keyframes (Eq. 2) of one demo -> its :class:`SubgoalSequence`."""
    settings = settings or KeypointSettings()
    spec = _spec_for(demo, spec)
    kp = extract_keypoints(demo, settings, segmenter=segmenter, tracker=tracker, spec=spec)
    # a task whose motions are arcs (a door's swing) sets a shorter window, so its keyframes cut the
    # arc into chords that the linear-motion assumption of Eq. (2) fits (TaskSpec.keyframe_max_step)
    max_step = getattr(spec, "keyframe_max_step", None) or settings.max_step
    steps = select_keyframes(kp.tracks, settings.min_step, max(max_step, settings.min_step),
                             min_displacement=settings.min_displacement,
                             min_angle_deg=settings.min_angle_deg)
    frames = np.asarray(demo.frames)
    seq = SubgoalSequence(
        task=str(demo.task),
        seed=int(demo.seed),
        initial_frame=frames[0].copy(),
        keypoints=np.concatenate([kp.tracks[:1], kp.tracks[steps]]).astype(np.float32),
        keyframe_steps=steps.astype(np.int64),
        keyframe_images=frames[steps].copy(),
        tracks=kp.tracks,
        on_object=kp.selection.on_object,
    )
    return seq, kp


def subgoal_cache_path(task: str, settings: KeypointSettings, n_demos: int | None = None,
                       kind: str = "expert") -> Path:
    """Where :func:`build_subgoal_dataset` keeps the dataset for these inputs."""
    from relam.cache import cache_dir, settings_hash
    from relam.demos import demo_dir
    from relam.tasks import get_task

    payload = {
        "format_version": _FORMAT_VERSION,
        "pipeline_version": PIPELINE_VERSION,
        # the demo folder's name keys the task entry and the simulator revision the demos come
        # from, so demos made again (e.g. after a simulator fix) give a new dataset
        "demos": demo_dir(task, kind).name,
        "settings": settings.to_dict(),
        "n_demos": n_demos,
        "kind": kind,
    }
    # the task's keypoint rule (not part of the demos' key): recorded when it is not Eq. (1)'s
    # plain fps, so tasks on fps keep their keys and the others' old fps datasets are not reused
    spec = get_task(task)
    rule = keypoint_rule(settings, spec)
    if rule != "fps":
        payload["keypoint_rule"] = rule
    # the same for the task's object points (settings.to_dict() holds an explicit setting)
    n_object = keypoint_object_points(settings, spec)
    if n_object != int(settings.object_points):
        payload["task_object_points"] = n_object
    key = settings_hash(payload)
    return cache_dir() / "subgoals" / task / f"{key}.npz"


def dataset_from_demos(task: str, demos: Sequence[Any], settings: KeypointSettings,
                       progress: bool = True) -> SubgoalDataset:
    """Run the pipeline on given demos (no caching)."""
    from tqdm.auto import tqdm

    from relam.perception import make_segmenter, make_tracker

    segmenter = make_segmenter(settings.segmenter, **settings.segmenter_kwargs)
    tracker = make_tracker(settings.tracker, **settings.tracker_kwargs)
    items: list[SubgoalSequence] = []
    counts: dict[str, list[int]] = {}
    for demo in tqdm(demos, desc=f"subgoals {task}", disable=not progress, leave=False):
        seq, kp = subgoal_sequence(demo, settings, segmenter=segmenter, tracker=tracker)
        items.append(seq)
        for k, v in kp.selection.counts.items():
            counts.setdefault(k, []).append(v)
    return SubgoalDataset(task=task, settings=settings.to_dict(), items=items,
                          counts={k: np.asarray(v) for k, v in counts.items()})


def build_subgoal_dataset(task: str, settings: KeypointSettings | None = None,
                          n_demos: int | None = None, kind: str = "expert",
                          progress: bool = True, rebuild: bool = False) -> SubgoalDataset:
    """The subgoal dataset of ``task`` from its stored demos, cached on disk (atomic, reused).

    ``n_demos=None`` uses every stored demo of ``kind`` (100 expert videos by default).
    The demos must exist (``relam.demos.make_demos(task, n)``).
    """
    from relam.demos import load_demos

    from relam.cache import NPZ_ERRORS, quarantine

    settings = settings or KeypointSettings()
    path = subgoal_cache_path(task, settings, n_demos, kind)
    if path.exists() and not rebuild:
        try:
            seen = path.stat()
            return SubgoalDataset.load(path)
        except FileNotFoundError:
            pass  # moved aside by another process just now: build it here too (same result)
        except NPZ_ERRORS as e:
            quarantine(path, f"{type(e).__name__}: {e}", seen, then="the dataset is built again")
    demos = load_demos(task, kind=kind, n=n_demos, progress=progress)
    if not demos:
        raise ValueError(f"build_subgoal_dataset: no {kind!r} demos stored for {task!r}; run "
                         f"relam.demos.make_demos({task!r}, n=...) first")
    if n_demos is not None and len(demos) < n_demos:
        raise ValueError(f"build_subgoal_dataset: n_demos={n_demos} but only {len(demos)} {kind!r} "
                         f"demos of {task!r} are stored; run make_demos({task!r}, n={n_demos})")
    ds = dataset_from_demos(task, demos, settings, progress=progress)
    ds.save(path)
    return ds


if __name__ == "__main__":  # `python -m relam.subgoals` is `relam subgoals` (the parsing is in relam.cli)
    import sys

    from relam.cli import main

    raise SystemExit(main(["subgoals", *sys.argv[1:]]))
