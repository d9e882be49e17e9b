"""A task entry's ``object_points`` (every entry keeps 1; session 17 probed 2 on door): keypoints on the object before the arm's,
the subgoal datasets and run keys that follow it, and an explicit KeypointSettings that overrides it."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np

import relam.tasks as tasks
from relam.keypoints import KeypointSettings
from relam.subgoals import extract_keypoints, keypoint_object_points, subgoal_cache_path


def test_extract_keypoints_takes_the_entrys_object_points(two_body_demo):
    from relam.perception import SimSegmenter, make_tracker

    ang = 0.05 * np.arange(11)  # a 20x20 box turning about the camera axis: its pixels move apart
    rot = np.tile(np.eye(3), (11, 1, 1))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = np.cos(ang), -np.sin(ang), np.sin(ang), np.cos(ang)
    demo = two_body_demo(box=(slice(70, 90), slice(70, 90)), box_rot=rot)
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
