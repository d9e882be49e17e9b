"""Expert demos: the experts reach success, demos round-trip, the offline set mixes outcomes,
damaged files are moved aside and made again."""
import json
import logging

import numpy as np
import pytest

from relam.demos import Demo, load_demos, make_demos, rollout_expert, summarize
from relam.tasks import make_env


@pytest.mark.parametrize("name", ["drawer-open-v3", "door-open-v3", "button-press-wall-v3",
                                  "PushCube-v1", "PickCube-v1"])
def test_expert_reaches_success(name):
    env = make_env(name)
    demos = []
    for seed in range(3):  # ENVIRONMENT.md: 92-99% of seeds succeed; stop at the first success
        d = rollout_expert(env, seed)
        if d is not None:
            demos.append(d)
            if d.succeeded:
                break
    env.close()
    assert demos, "the expert never produced a trajectory"
    assert any(d.succeeded for d in demos)
    d = demos[-1]
    T = d.length
    assert d.frames.shape[0] == T + 1 and d.body_seg.shape[0] == T + 1 and d.body_pos.shape[0] == T + 1
    assert d.actions.shape[0] == T and d.success.shape == (T,)
    assert not np.array_equal(d.frames[0], d.frames[-1]), "nothing moved"
    # the robot's own state per frame (RobotProprio's input): Meta-World hand xyz + opening,
    # ManiSkill the panda's 9 joint positions, whose targets the pd_joint_pos actions are
    assert d.proprio.shape == (T + 1, 4 if name.endswith("-v3") else 9)
    if not name.endswith("-v3"):
        assert np.abs(d.proprio[1:, :7] - d.actions[:, :7]).mean() < 0.05


def test_demo_roundtrip_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path))
    out = make_demos("drawer-open-v3", n=2, progress=False)
    files = sorted(out.glob("*.npz"))
    assert len(files) == 2
    d = Demo.load(files[0])
    path = d.save(tmp_path / "copy.npz")
    e = Demo.load(path)
    for k, v in d.to_arrays().items():
        np.testing.assert_array_equal(v, e.to_arrays()[k], err_msg=k)
    # resume: delete one file, make again -> only that one is redone, the other is untouched
    mtime = files[0].stat().st_mtime_ns
    files[1].unlink()
    make_demos("drawer-open-v3", n=2, progress=False)
    assert files[1].exists() and files[0].stat().st_mtime_ns == mtime
    s = summarize("drawer-open-v3")
    assert s["count"] == 2 and s["length_mean"] > 20
    assert len(load_demos("drawer-open-v3", n=2, make=False)) == 2


def test_load_demos_makes_the_missing_ones_without_a_bar_when_asked(tmp_path, monkeypatch, capsys):
    """A run started with ``--no-progress`` reaches ``make_demos`` through ``load_demos``: its log
    must not fill with the recording bar."""
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path))
    assert len(load_demos("drawer-open-v3", n=1, progress=False)) == 1
    assert "expert drawer-open-v3" not in capsys.readouterr().err
    assert len(load_demos("drawer-open-v3", n=2)) == 2  # the default keeps the bar
    assert "expert drawer-open-v3" in capsys.readouterr().err


def test_missing_demos_fail_clearly_without_make(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="relam demos make door-open-v3"):
        load_demos("door-open-v3", n=1, make=False)


def test_offline_set_only_for_maniskill():
    with pytest.raises(ValueError, match="no offline control dataset"):
        load_demos("drawer-open-v3", kind="offline", n=2)


def _cut(path, keep=0.5):
    """Cut a file short (what a full disk or an interrupted copy leaves)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_damaged_demo_is_quarantined_and_made_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path))
    out = make_demos("drawer-open-v3", n=2, progress=False)
    good = Demo.load(out / "expert_001.npz")
    bad = out / "expert_001.npz"
    quarantine = out / "quarantine"

    # the loader: named in a warning, moved aside, made again from its recorded seed (the same demo)
    _cut(bad)
    with caplog.at_level(logging.WARNING, logger="relam.cache"):
        demos = load_demos("drawer-open-v3", n=2)
    assert str(bad) in caplog.text and "BadZipFile" in caplog.text and str(quarantine) in caplog.text
    assert len(list(quarantine.iterdir())) == 1
    assert demos[1].seed == good.seed
    np.testing.assert_array_equal(demos[1].frames, good.frames)

    # `demos make` sees a damaged file as missing (it used to skip it because the file existed)
    _cut(bad, keep=0.9)
    mtime = (out / "expert_000.npz").stat().st_mtime_ns
    make_demos("drawer-open-v3", n=2, progress=False)
    assert len(list(quarantine.iterdir())) == 2
    assert Demo.load(bad).seed == good.seed and (out / "expert_000.npz").stat().st_mtime_ns == mtime

    # without make: the damaged file is moved aside and the error says how to make it again
    _cut(bad)
    with pytest.raises(FileNotFoundError, match="relam demos make drawer-open-v3"):
        load_demos("drawer-open-v3", n=2, make=False)
    assert not bad.exists() and len(list(quarantine.iterdir())) == 3

    # a damaged meta.json is rebuilt from the demo files (their seeds are kept)
    make_demos("drawer-open-v3", n=2, progress=False)
    meta = out / "meta.json"
    seeds = {k: v["seed"] for k, v in json.loads(meta.read_text())["files"].items()}
    meta.write_text('{"files": {')
    make_demos("drawer-open-v3", n=2, progress=False)
    assert summarize("drawer-open-v3")["count"] == 2 and len(list(quarantine.glob("meta.*.json"))) == 1
    assert {k: v["seed"] for k, v in json.loads(meta.read_text())["files"].items()} == seeds


def test_one_rollout_loop_whatever_is_recorded():
    """rollout_expert's recorder hook: the lean PoseRecorder and a hand-made recorder see the same
    rollout (reset, expert, stopping rule) as the default full-frame record (issue 21 follow-up)."""
    from relam.demos import FrameRecorder, PoseRecorder, Recorder

    class Counting:
        def start(self, env):
            self.env, self.steps = env, []

        def record(self, action, info):
            self.steps.append((np.asarray(action, np.float32).copy(), info["success"]))

        def demo(self, seed, noisy=False):
            return len(self.steps)

    env = make_env("drawer-open-v3")
    try:
        full = rollout_expert(env, 4)
        lean = PoseRecorder()
        assert isinstance(lean, Recorder) and isinstance(FrameRecorder(), Recorder)
        for _ in range(2):  # one recorder serves several rollouts
            d = rollout_expert(env, 4, recorder=lean)
            for k in ("body_pos", "body_rot", "actions", "env_reward", "success", "depth0"):
                np.testing.assert_array_equal(getattr(d, k), getattr(full, k), err_msg=k)
            np.testing.assert_array_equal(d.body_seg[0], full.body_seg[0])
            assert d.frames.shape == full.frames.shape and not d.frames.any() and not d.frames.flags.writeable
            np.testing.assert_array_equal(lean.seg0, full.body_seg[0])
        counting = Counting()
        assert rollout_expert(env, 4, recorder=counting) == full.length
        np.testing.assert_array_equal(np.stack([a for a, _ in counting.steps]), full.actions)
        assert full.succeeded and not any(s for _, s in counting.steps[:-1 - env.task.post_success_steps])
    finally:
        env.close()
