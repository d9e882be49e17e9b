"""A task entry's ``object_points`` (door-open-v3: 2): keypoints on the object before the arm's,
the subgoal datasets and run keys that follow it, and an explicit KeypointSettings that overrides it."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np

import relam.tasks as tasks
from relam.keypoints import KeypointSettings
from relam.subgoals import extract_keypoints, keypoint_object_points, subgoal_cache_path


def _toy_demo():
    """A moving arm (a 20x20 body) and a moving, turning box (a 20x20 body), 11 frames."""
    from relam.tasks import Camera

    cam = Camera(K=np.array([[100.0, 0, 64], [0, 100.0, 64], [0, 0, 1]]), world_to_cam=np.eye(4),
                 width=128, height=128)
    seg = -np.ones((128, 128), np.int16)
    seg[20:40, 20:40] = 0
    seg[70:90, 70:90] = 1
    t = np.arange(11)
    arm = np.stack([0.04 * t, np.zeros(11), np.full(11, 2.0)], 1)
    box = np.stack([np.zeros(11), 0.04 * t, np.full(11, 2.0)], 1)
    ang = 0.05 * t  # the box turns about the camera axis, so its pixels move apart
    rot = np.tile(np.eye(3), (11, 2, 1, 1))
    rot[:, 1, 0, 0], rot[:, 1, 0, 1], rot[:, 1, 1, 0], rot[:, 1, 1, 1] = np.cos(ang), -np.sin(ang), np.sin(ang), np.cos(ang)
    return SimpleNamespace(frames=np.zeros((11, 128, 128, 3), np.uint8), body_seg=np.repeat(seg[None], 11, 0),
                           depth0=np.full((128, 128), 2.0, np.float32), body_pos=np.stack([arm, box], 1),
                           body_rot=rot, camera=cam, task="toy", seed=0, body_names=("arm_link", "box"))


def test_extract_keypoints_takes_the_entrys_object_points():
    from relam.perception import SimSegmenter, make_tracker

    demo = _toy_demo()
    spec = SimpleNamespace(prompts={"robot arm": ("arm_link",), "box": ("box",)}, object_prompt="box",
                           keypoint_rule="fps_arm", object_points=2)
    seg = SimSegmenter(prompts=spec.prompts)

    def on_object(settings, spec):
        kp = extract_keypoints(demo, settings, segmenter=seg, tracker=make_tracker("sim"), spec=spec)
        return int(kp.selection.on_object.sum())

    assert on_object(KeypointSettings(), spec) == 2
    assert on_object(KeypointSettings(), SimpleNamespace(**{**vars(spec), "object_points": 1})) == 1
    assert on_object(KeypointSettings(object_points=3), spec) == 3  # an explicit setting wins
    assert keypoint_object_points(KeypointSettings(), SimpleNamespace()) == 1  # no field: one


def test_object_points_key_subgoals_and_runs_not_demos(monkeypatch):
    from relam.experiments.runner import Run

    base = tasks.get_task("drawer-open-v3")
    two = dataclasses.replace(base, object_points=2)
    assert two.to_dict() == base.to_dict()  # the demos are the same
    assert tasks.run_only_fields(base) == {} and tasks.run_only_fields(two) == {"object_points": 2}
    run = Run(task="drawer-open-v3", method="ReLAM", settings={}, seed=0, budget={}, scale="smoke")
    before_run, before_set = run.key, subgoal_cache_path("drawer-open-v3", KeypointSettings(), 100)
    monkeypatch.setattr(tasks, "get_task", lambda name: two if str(name) == "drawer-open-v3" else base)
    assert run.key != before_run
    assert subgoal_cache_path("drawer-open-v3", KeypointSettings(), 100) != before_set
