"""Keypoint selection (Eq. 1): square filter, motion range, farthest point sampling, selection rule."""
import numpy as np
import pytest

from relam.keypoints import (
    KeypointSettings,
    farthest_point_sampling,
    mask_pixels,
    motion_range,
    select_keypoints,
    square_filter,
)


def test_square_filter_drops_isolated_pixels_and_borders():
    mask = np.zeros((20, 20), bool)
    mask[5:12, 5:12] = True  # a 7x7 block
    mask[2, 17] = True  # isolated stray pixel
    mask[15, 2:6] = True  # one-pixel-thick sliver
    mask[0:4, 0:4] = True  # block touching the border
    out = square_filter(mask, 3)
    expected = np.zeros_like(mask)
    expected[6:11, 6:11] = True  # 7x7 eroded by 1
    expected[1:3, 1:3] = True  # border block: squares leaving the image count as outside
    np.testing.assert_array_equal(out, expected)
    assert square_filter(mask, 7).sum() == 1 and square_filter(mask, 7)[8, 8]
    np.testing.assert_array_equal(square_filter(mask, 1), mask)
    with pytest.raises(ValueError, match="odd"):
        square_filter(mask, 4)


def test_mask_pixels_uv_convention():
    mask = np.zeros((4, 6), bool)
    mask[1, 4] = True  # row 1, column 4
    np.testing.assert_array_equal(mask_pixels(mask), [[4.0, 1.0]])


def test_fps_known_answer():
    # corners of a square plus its centre and a point near a corner
    pts = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [5, 5], [1, 1]], float)
    order = farthest_point_sampling(pts, 4, start=0)
    assert order.tolist() == [0, 2, 1, 3]  # ties (1 and 3 at distance 10) go to the lowest index
    assert farthest_point_sampling(pts, 5, start=4).tolist() == [4, 0, 1, 2, 3]
    assert sorted(farthest_point_sampling(pts, 10).tolist()) == list(range(6))
    with pytest.raises(ValueError, match="start"):
        farthest_point_sampling(pts, 2, start=6)
    # several starts are kept in order, then FPS goes on from all of them
    assert farthest_point_sampling(pts, 3, start=[4, 0]).tolist() == [4, 0, 1]  # 1, 2, 3 tie at 7.07
    assert farthest_point_sampling(pts, 1, start=[4, 0]).tolist() == [4]


def test_select_keypoints_takes_object_points_first():
    uv, tracks, on_obj = _scene()
    # two object points (10 and 11) before FPS reaches the arm; the object weighs 2/3 of Eq. (3)
    sel = select_keypoints(uv, tracks, on_obj, num_points=3, motion_threshold=3.0, object_points=2)
    assert sel.indices.tolist() == [11, 10, 0]
    assert sel.on_object.tolist() == [True, True, False]
    # more object points asked than object pixels move: the ones that move, then the arm
    sel = select_keypoints(uv, tracks, on_obj, num_points=4, motion_threshold=3.0, object_points=3)
    assert sel.on_object.sum() == 2
    # no object pixel at all: plain FPS from the most-moving pixel, as with one object point
    no_obj = np.zeros(len(uv), bool)
    assert (select_keypoints(uv, tracks, no_obj, num_points=2, motion_threshold=5.0, object_points=2).indices.tolist()
            == select_keypoints(uv, tracks, no_obj, num_points=2, motion_threshold=5.0).indices.tolist())
    with pytest.raises(ValueError, match="object_points"):
        KeypointSettings(num_points=4, object_points=5)
    # the default leaves the cache keys of datasets made before the field existed unchanged
    assert "object_points" not in KeypointSettings().to_dict()
    assert KeypointSettings(object_points=2).to_dict()["object_points"] == 2


def test_motion_range_is_max_displacement_from_start():
    tracks = np.zeros((4, 2, 2))
    tracks[1, 0] = [3, 4]  # 5 px away at t=1
    tracks[3, 0] = [1, 0]  # back near the start at the end
    tracks[:, 1] = [[7, 7], [7, 8], [7, 9], [7, 7]]
    np.testing.assert_allclose(motion_range(tracks), [5.0, 2.0])


def _scene():
    # arm pixels at x 0..9 (moving), object pixels at x 30..31 (moving a little), static pixels
    uv = np.array([[x, 0] for x in range(10)] + [[30, 0], [31, 0]] + [[50, 50], [60, 60]], float)
    on_obj = np.array([False] * 10 + [True, True] + [False, False])
    t = np.arange(6)[:, None, None]
    vel = np.zeros((1, len(uv), 2))
    vel[0, :10, 1] = 2.0  # arm moves 10 px
    vel[0, 10, 0] = 0.7  # object pixel 10: 3.5 px
    vel[0, 11, 0] = 0.8  # object pixel 11: 4 px (largest object motion)
    tracks = uv[None] + t * vel
    return uv, tracks, on_obj


def test_select_keypoints_motion_filter_fps_and_object_guarantee():
    uv, tracks, on_obj = _scene()
    sel = select_keypoints(uv, tracks, on_obj, num_points=3, motion_threshold=3.0)
    # FPS starts at the object pixel with the largest motion (11), then the farthest arm pixels
    assert sel.indices.tolist() == [11, 0, 9]
    assert sel.on_object.tolist() == [True, False, False]
    assert sel.counts["moving"] == 12 and sel.counts["moving_object"] == 2
    assert sel.counts["filled"] == 0
    # object moving below the threshold: its most-moving pixel is kept anyway (forced)
    sel = select_keypoints(uv, tracks, on_obj, num_points=2, motion_threshold=5.0)
    assert sel.indices.tolist() == [11, 0] and sel.counts["object_forced"] == 1
    assert sel.counts["moving_object"] == 0
    # no object pixel at all: start at the largest motion overall (first on ties)
    sel = select_keypoints(uv, tracks, np.zeros(len(uv), bool), num_points=2, motion_threshold=5.0)
    assert sel.indices.tolist() == [0, 9] and not sel.on_object.any()
    # too few moving points: fill with the largest-motion non-moving candidates
    sel = select_keypoints(uv, tracks, on_obj, num_points=12, motion_threshold=5.0)
    assert sel.counts["filled"] == 1 and sel.indices[-1] == 10
    assert len(set(sel.indices.tolist())) == 12
    with pytest.raises(ValueError, match="num_points"):
        select_keypoints(uv, tracks, on_obj, num_points=20, motion_threshold=1.0)


def test_settings_validation_and_hashable_dict():
    s = KeypointSettings()
    assert s.to_dict()["num_points"] == 4
    with pytest.raises(ValueError, match="square"):
        KeypointSettings(square=4)
    with pytest.raises(ValueError, match="min_step"):
        KeypointSettings(min_step=10, max_step=5)


def test_arm_after_object_keeps_a_far_moving_object_to_its_own_points():
    # the door case: the object's pixels spread far (x 30 and 60), so plain FPS gives it a second
    # point; arm_after_object takes the points after the object's on the arm only
    uv = np.array([[x, 0] for x in range(10)] + [[30, 0], [60, 0]], float)
    on_obj = np.array([False] * 10 + [True, True])
    vel = np.zeros((1, len(uv), 2))
    vel[0, :10, 1] = 2.0
    vel[0, 10, 1] = 1.0
    vel[0, 11, 1] = 3.0  # the most-moving object pixel: FPS starts there
    tracks = uv[None] + np.arange(6)[:, None, None] * vel
    plain = select_keypoints(uv, tracks, on_obj, num_points=3, motion_threshold=3.0)
    assert plain.indices.tolist() == [11, 0, 10] and plain.on_object.sum() == 2
    arm = select_keypoints(uv, tracks, on_obj, num_points=3, motion_threshold=3.0, arm_after_object=True)
    assert arm.indices.tolist() == [11, 0, 9] and arm.on_object.sum() == 1
    # too few moving arm pixels: the object's fill in rather than a non-moving pixel
    few = select_keypoints(uv[9:], tracks[:, 9:], on_obj[9:], num_points=3, motion_threshold=3.0,
                           arm_after_object=True)
    assert few.on_object.sum() == 2 and few.counts["filled"] == 0
    # off by default and out of the cache key there, so existing datasets keep their keys
    assert "arm_after_object" not in KeypointSettings().to_dict()
    assert KeypointSettings(arm_after_object=True).to_dict()["arm_after_object"] is True
    # the task-level name of the same choice (tasks.yaml keypoint_rule: fps_arm)
    named = select_keypoints(uv, tracks, on_obj, num_points=3, motion_threshold=3.0, rule="fps_arm")
    assert named.indices.tolist() == arm.indices.tolist()
    assert KeypointSettings(rule="fps_arm").rule == "fps_arm"
