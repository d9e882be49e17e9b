"""The subgoal dataset on real demos of all five tasks, its storage and its cache."""
import numpy as np
import pytest

from relam.keypoints import KeypointSettings
from relam.subgoals import SubgoalDataset, build_subgoal_dataset, dataset_from_demos, subgoal_sequence

MW = ["drawer-open-v3", "door-open-v3", "button-press-wall-v3"]
MS = ["PushCube-v1", "PickCube-v1"]


@pytest.fixture(scope="module")
def demos_by_task():
    """Two demos per task, made once and cached under cache_dir() (ManiSkill: about 20 s a task)."""
    from relam.demos import load_demos

    cache: dict = {}

    def get(task):
        if task not in cache:
            cache[task] = load_demos(task, n=2)
        return cache[task]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("task", MW + [pytest.param(t, marks=pytest.mark.maniskill) for t in MS])
def test_keypoints_on_task_bodies_and_keyframes(task, demos_by_task):
    from relam.tasks import get_task

    spec = get_task(task)
    settings = KeypointSettings()
    for demo in demos_by_task(task):
        names = list(demo.body_names)
        task_bodies = {names.index(b) for bodies in spec.prompts.values() for b in bodies}
        obj_bodies = {names.index(b) for b in spec.prompts[spec.object_prompt]}
        seq, kp = subgoal_sequence(demo, settings)
        n = settings.num_points
        s = seq.num_subgoals
        assert seq.keypoints.shape == (s + 1, n, 2) and seq.keypoints.dtype == np.float32
        uv = np.rint(seq.keypoints[0]).astype(int)
        on = demo.body_seg[0][uv[:, 1], uv[:, 0]]
        assert set(on.tolist()) <= task_bodies, (task, on)
        assert sum(int(b) in obj_bodies for b in on) >= 1, (task, on)
        assert seq.on_object.sum() >= 1 and kp.selection.counts["filled"] == 0
        # keyframes: >= 2, increasing, last is the final frame, images are the true frames
        steps = seq.keyframe_steps
        assert s >= 2 and np.all(np.diff(steps) > 0) and steps[-1] == len(demo.frames) - 1
        np.testing.assert_array_equal(seq.keyframe_images, demo.frames[steps])
        np.testing.assert_allclose(seq.keypoints[1:], seq.tracks[steps])
        np.testing.assert_array_equal(seq.initial_frame, demo.frames[0])


@pytest.mark.slow
def test_point_number_ablation_and_determinism(demos_by_task):
    demo = demos_by_task("drawer-open-v3")[0]
    for n in (8, 12):
        seq, kp = subgoal_sequence(demo, KeypointSettings(num_points=n))
        assert seq.keypoints.shape[1] == n and len(set(kp.selection.indices.tolist())) == n
    a, _ = subgoal_sequence(demo)
    b, _ = subgoal_sequence(demo)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.keyframe_steps, b.keyframe_steps)


@pytest.mark.slow
def test_dataset_save_load_roundtrip(tmp_path, demos_by_task):
    demos = demos_by_task("drawer-open-v3")
    ds = dataset_from_demos("drawer-open-v3", demos, KeypointSettings(), progress=False)
    path = ds.save(tmp_path / "sub.npz")
    back = SubgoalDataset.load(path)
    assert len(back) == len(ds) == 2 and back.sequences is back.items
    assert back.settings == ds.settings and back.task == "drawer-open-v3"
    for x, y in zip(ds, back):
        assert (x.task, x.seed) == (y.task, y.seed)
        for f in ("initial_frame", "keypoints", "keyframe_steps", "keyframe_images", "tracks",
                  "on_object"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f))
    np.testing.assert_array_equal(back.counts["moving"], ds.counts["moving"])
    assert back.summary()["keyframes_min"] >= 2


@pytest.mark.slow
def test_build_caches_and_reuses(monkeypatch, demos_by_task):
    import relam.subgoals as sg

    demos_by_task("drawer-open-v3")  # make sure the 2 demos exist
    settings = KeypointSettings(num_points=4, max_step=35)
    path = sg.subgoal_cache_path("drawer-open-v3", settings, n_demos=2)
    first = build_subgoal_dataset("drawer-open-v3", settings, n_demos=2, progress=False)
    assert path.exists()

    def boom(*a, **k):
        raise AssertionError("the cached file should have been reused")

    monkeypatch.setattr(sg, "dataset_from_demos", boom)
    again = build_subgoal_dataset("drawer-open-v3", settings, n_demos=2, progress=False)
    np.testing.assert_array_equal(first[0].keypoints, again[0].keypoints)
    other = sg.subgoal_cache_path("drawer-open-v3", KeypointSettings(num_points=8), n_demos=2)
    assert other != path


def test_damaged_dataset_is_quarantined_and_built_again(demos_by_task, caplog):
    import logging

    import relam.subgoals as sg

    demos_by_task("drawer-open-v3")
    settings = KeypointSettings(num_points=5, max_step=35)
    path = sg.subgoal_cache_path("drawer-open-v3", settings, n_demos=2)
    first = build_subgoal_dataset("drawer-open-v3", settings, n_demos=2, progress=False)
    moved = lambda: len(list((path.parent / "quarantine").glob(f"{path.stem}.*.npz")))  # noqa: E731
    before = moved()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut short
    with caplog.at_level(logging.WARNING, logger="relam.cache"):
        again = build_subgoal_dataset("drawer-open-v3", settings, n_demos=2, progress=False)
    assert str(path) in caplog.text and "BadZipFile" in caplog.text and "built again" in caplog.text
    assert moved() == before + 1
    np.testing.assert_array_equal(first[0].keypoints, again[0].keypoints)
    assert SubgoalDataset.load(path).task == "drawer-open-v3"  # the rebuilt file is whole


def _toy_demo():
    """Two flat bodies at 2 m in front of a pinhole camera (f=100 px): an 'arm' that moves right
    2 px/step for 20 steps and then down, and a 'box' that stays still until step 20 and then moves
    down with the arm. Known answer: one keyframe at the corner (20), then the final frame (40)."""
    from types import SimpleNamespace

    from relam.tasks import Camera

    cam = Camera(K=np.array([[100.0, 0, 64], [0, 100.0, 64], [0, 0, 1]]), world_to_cam=np.eye(4),
                 width=128, height=128)
    seg = -np.ones((128, 128), np.int16)
    seg[20:40, 20:40] = 0
    seg[80:100, 80:100] = 1
    seg[60, 60] = 1  # a stray 'segmentation' pixel: the square filter must drop it
    t = np.arange(41)
    arm = np.stack([0.04 * np.minimum(t, 20), 0.04 * np.maximum(t - 20, 0), np.full(41, 2.0)], 1)
    box = np.stack([np.zeros(41), 0.04 * np.maximum(t - 20, 0), np.full(41, 2.0)], 1)
    pos = np.stack([arm, box], axis=1)
    rot = np.tile(np.eye(3), (41, 2, 1, 1))
    frames = np.zeros((41, 128, 128, 3), np.uint8)
    frames[:, :, :, 0] = t[:, None, None]  # distinct frames, to check the keyframe images
    demo = SimpleNamespace(frames=frames, body_seg=np.repeat(seg[None], 41, 0),
                           depth0=np.full((128, 128), 2.0, np.float32), body_pos=pos, body_rot=rot,
                           camera=cam, task="toy", seed=7, body_names=("arm_link", "box"))
    spec = SimpleNamespace(prompts={"robot arm": ("arm_link",), "box": ("box",)}, object_prompt="box")
    return demo, spec


def test_pipeline_known_answer_on_a_toy_scene():
    from relam.perception import SimSegmenter, make_tracker

    demo, spec = _toy_demo()
    settings = KeypointSettings(num_points=4, max_step=30)
    seg = SimSegmenter(prompts=spec.prompts)
    seq, kp = subgoal_sequence(demo, settings, segmenter=seg, tracker=make_tracker("sim"), spec=spec)
    assert kp.selection.counts["candidates"] == 18 * 18 * 2  # 20x20 squares eroded by 1, no stray
    assert seq.on_object[0] and seq.on_object.sum() >= 1
    uv0 = np.rint(seq.keypoints[0]).astype(int)
    assert set(demo.body_seg[0][uv0[:, 1], uv0[:, 0]].tolist()) <= {0, 1}
    assert seq.keyframe_steps.tolist() == [20, 40]
    np.testing.assert_array_equal(seq.keyframe_images[:, 0, 0, 0], [20, 40])
    # the arm points moved 40 px right by the corner, then 40 px down
    arm = ~seq.on_object
    np.testing.assert_allclose(seq.keypoints[1, arm] - seq.keypoints[0, arm], [[40, 0]] * arm.sum(),
                               atol=1e-3)
    np.testing.assert_allclose(seq.keypoints[2] - seq.keypoints[1], [[0, 40]] * 4, atol=1e-3)
    with pytest.raises(ValueError, match="num_points"):
        subgoal_sequence(demo, KeypointSettings(num_points=1000), segmenter=seg, spec=spec)
