"""The first_frame keypoint rule (ManiSkill's tasks.yaml keypoint_rule) and the keys it moves.

Known answers on hand-made candidates: under ``first_frame`` the choice depends on the frame-0
pixels only (not on how the video moves them), the object point is the object's centre pixel and
the arm points do not follow the object; ``fps`` (Eq. 1 as written) is shown to depend on the video
on the same inputs, so the tests would catch the rule falling back to it. Meta-World's cache keys
must not move; ManiSkill's must.
"""
import numpy as np
import pytest

from relam.keypoints import KeypointSettings, select_keypoints


def _scene(obj_offset=(0.0, 0.0)):
    """An 'arm' blob (a 9x3 vertical bar of pixels at u=20..22, v=10..18) and an 'object' 5x5
    square around (60, 60) shifted by ``obj_offset``; arm first, as extract_keypoints orders them."""
    arm = np.array([(u, v) for v in range(10, 19) for u in range(20, 23)], np.float32)
    obj = np.array([(u, v) for v in range(58, 63) for u in range(58, 63)], np.float32) + np.float32(obj_offset)
    uv = np.concatenate([arm, obj])
    on_object = np.r_[np.zeros(len(arm), bool), np.ones(len(obj), bool)]
    return uv, on_object


def _tracks(uv, motion):
    """(T+1, P, 2) tracks: every point drifts right by its own ``motion`` (px) over 5 steps."""
    t = np.linspace(0, 1, 6)[:, None, None]
    return uv[None] + t * np.stack([motion, np.zeros_like(motion)], 1)[None]


def test_first_frame_choice_does_not_depend_on_the_video():
    uv, on = _scene()
    rng = np.random.default_rng(0)
    picks_ff, picks_fps = set(), set()
    for _ in range(5):  # five 'videos' of the same first frame, each moving the pixels differently
        tr = _tracks(uv, rng.uniform(5, 30, len(uv)))
        picks_ff.add(tuple(select_keypoints(uv, tr, on, 4, 2.0, rule="first_frame").indices))
        picks_fps.add(tuple(select_keypoints(uv, tr, on, 4, 2.0).indices))
    assert len(picks_ff) == 1
    assert len(picks_fps) > 1  # Eq. (1)'s start (the most-moving object pixel) follows the video


def test_first_frame_object_centre_then_arm_fps_from_its_centre():
    uv, on = _scene()
    tr = _tracks(uv, np.full(len(uv), 10.0))
    sel = select_keypoints(uv, tr, on, 4, 2.0, rule="first_frame")
    assert sel.on_object.tolist() == [True, False, False, False]
    np.testing.assert_array_equal(sel.uv[0], [60, 60])  # the object square's centre pixel
    np.testing.assert_array_equal(sel.uv[1], [21, 14])  # the arm bar's centre pixel starts FPS
    # then FPS over the arm alone: the bar's corners, 4.1 px from the centre; ties go to the lowest
    # index (row-major), so the top-left corner, then the bottom-left one
    np.testing.assert_array_equal(sel.uv[2:], [[20, 10], [20, 18]])
    assert sel.counts["filled"] == 0 and sel.counts["object_forced"] == 0


def test_first_frame_arm_points_do_not_follow_the_object():
    out_ff, out_fps = [], []
    for off in [(0, 0), (-30, -40), (25, -45)]:
        uv, on = _scene(off)
        tr = _tracks(uv, np.full(len(uv), 10.0))
        ff = select_keypoints(uv, tr, on, 4, 2.0, rule="first_frame")
        fps = select_keypoints(uv, tr, on, 4, 2.0)
        out_ff.append(ff.uv[1:].tolist())
        out_fps.append(fps.uv[~fps.on_object].tolist())
    assert out_ff[0] == out_ff[1] == out_ff[2]
    assert not out_fps[0] == out_fps[1] == out_fps[2]  # plain FPS: the farthest arm pixels move


def test_first_frame_keeps_a_still_object_and_fills_a_still_arm():
    uv, on = _scene()
    motion = np.where(on, 0.0, 10.0)  # the object never moves (PickCube, goal above the cube)
    sel = select_keypoints(uv, _tracks(uv, motion), on, 4, 2.0, rule="first_frame")
    assert sel.on_object[0] and sel.counts["object_forced"] == 1
    motion = np.where(on, 10.0, 0.0)
    motion[:2] = 10.0  # only two arm pixels move: one slot is filled from the rest
    sel = select_keypoints(uv, _tracks(uv, motion), on, 4, 2.0, rule="first_frame")
    assert sel.on_object[0] and sel.counts["filled"] == 1 and len(set(sel.indices.tolist())) == 4
    # object_points > 1: FPS over the object's pixels from its centre comes first
    sel = select_keypoints(uv, _tracks(uv, np.full(len(uv), 10.0)), on, 4, 2.0, object_points=2,
                           rule="first_frame")
    assert sel.on_object.tolist() == [True, True, False, False]


def test_rule_is_checked_and_left_out_of_the_key_when_unset():
    with pytest.raises(ValueError, match="rule"):
        KeypointSettings(rule="nearest")
    uv, on = _scene()
    with pytest.raises(ValueError, match="rule"):
        select_keypoints(uv, _tracks(uv, np.full(len(uv), 10.0)), on, 4, 2.0, rule="nearest")
    assert "rule" not in KeypointSettings().to_dict()
    assert KeypointSettings(rule="fps").to_dict()["rule"] == "fps"


def test_task_rules_and_keys():
    from relam.subgoals import subgoal_cache_path
    from relam.tasks import TaskError, get_task, parse_task

    assert get_task("PushCube-v1").keypoint_rule == get_task("PickCube-v1").keypoint_rule == "first_frame"
    assert get_task("drawer-open-v3").keypoint_rule == "fps"
    # door's got 2 points under fps; button's follows door's (session 24)
    assert get_task("door-open-v3").keypoint_rule == get_task("button-press-wall-v3").keypoint_rule == "fps_arm"
    # the rule does not shape the demos: it stays out of the entry's dict (the demos' key)
    assert "keypoint_rule" not in get_task("PushCube-v1").to_dict()
    entry = {"suite": "maniskill", "env_id": "PushCube-v1", "horizon": 10, "image_size": 64,
             "camera": {"pos": [0, 0, 1], "lookat": [0, 0, 0]}, "prompts": {"a": ["x"], "b": ["y"]},
             "object_prompt": "b", "keypoint_rule": "nearest"}
    with pytest.raises(TaskError, match="keypoint_rule"):
        parse_task("t", entry)
    # forcing fps on a first_frame task gives a dataset of its own
    a = subgoal_cache_path("PushCube-v1", KeypointSettings(), 100)
    b = subgoal_cache_path("PushCube-v1", KeypointSettings(rule="fps"), 100)
    assert a != b


def test_meta_world_subgoal_keys_unchanged():
    """The stems of Meta-World's subgoal datasets as made before the rule existed (HEAD 0268fb2):
    the drawer online runs are cached on them; door's and button's rule (fps_arm) is recorded in their keys."""
    from relam.cache import settings_hash
    from relam.demos import demo_dir
    from relam.subgoals import _FORMAT_VERSION, PIPELINE_VERSION, subgoal_cache_path

    for t in ("drawer-open-v3", "door-open-v3", "button-press-wall-v3"):
        for n in (None, 100):
            for s in (KeypointSettings(), KeypointSettings(num_points=8)):
                payload = {"format_version": _FORMAT_VERSION, "pipeline_version": PIPELINE_VERSION,
                           "demos": demo_dir(t, "expert").name, "settings": s.to_dict(),
                           "n_demos": n, "kind": "expert"}
                if t != "drawer-open-v3":
                    payload["keypoint_rule"] = "fps_arm"
                assert subgoal_cache_path(t, s, n).stem == settings_hash(payload)
    # and the ManiSkill ones are not the fps-era keys
    for t in ("PushCube-v1", "PickCube-v1"):
        s = KeypointSettings()
        old = settings_hash({"format_version": _FORMAT_VERSION, "pipeline_version": PIPELINE_VERSION,
                             "demos": demo_dir(t, "expert").name, "settings": s.to_dict(),
                             "n_demos": 100, "kind": "expert"})
        assert subgoal_cache_path(t, s, 100).stem != old


def test_run_keys_follow_the_rule():
    from relam.experiments.runner import Run

    mw = Run(task="drawer-open-v3", method="ReLAM", settings={}, seed=0, budget={}, scale="smoke").resolved()
    ms = Run(task="PushCube-v1", method="ReLAM", settings={}, seed=0, budget={}, scale="smoke").resolved()
    assert "keypoint_rule" not in mw and ms["keypoint_rule"] == "first_frame"


def test_extract_keypoints_first_frame_keeps_a_small_object(two_body_demo):
    """A 2x2 object has no 3x3 square: under first_frame the largest square that leaves pixels is
    used, so the object point stays in slot 0; under fps nothing changes (no object candidate)."""
    from types import SimpleNamespace

    from relam.perception import SimSegmenter, make_tracker
    from relam.subgoals import extract_keypoints

    demo = two_body_demo()
    spec = SimpleNamespace(prompts={"robot arm": ("arm_link",), "box": ("box",)}, object_prompt="box",
                           keypoint_rule="first_frame")
    seg_ = SimSegmenter(prompts=spec.prompts)
    kp = extract_keypoints(demo, KeypointSettings(), segmenter=seg_, tracker=make_tracker("sim"), spec=spec)
    assert kp.selection.on_object.tolist() == [True, False, False, False]
    assert kp.masks["box"].sum() == 4
    kp = extract_keypoints(demo, KeypointSettings(rule="fps"), segmenter=seg_, tracker=make_tracker("sim"),
                           spec=spec)
    assert not kp.selection.on_object.any() and kp.masks["box"].sum() == 0


def test_relam_label_and_is_component_keys_follow_the_rule(monkeypatch):
    import dataclasses

    import relam.tasks
    from baselines.image_subgoal import components_key
    from relam.offline import offline_cache_path

    class Lab:
        def __init__(self, name):
            self.name = name

        def config(self):
            return {}

    real = relam.tasks.get_task
    before = {n: offline_cache_path("PushCube-v1", Lab(n), 10, 64) for n in ("relam", "dacfo")}
    is_before = components_key("PushCube-v1", 10)
    monkeypatch.setattr(relam.tasks, "get_task",
                        lambda t: dataclasses.replace(real(t), keypoint_rule="fps"))
    assert offline_cache_path("PushCube-v1", Lab("relam"), 10, 64) != before["relam"]
    assert offline_cache_path("PushCube-v1", Lab("dacfo"), 10, 64) == before["dacfo"]  # no keypoints
    assert components_key("PushCube-v1", 10) != is_before
