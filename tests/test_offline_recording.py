"""The offline control set is recorded resumably (issue 17 item 2): each trajectory is stored as soon
as it is recorded, a rerun records only the missing ones, an interrupted run loses at most the
trajectory in flight, and no seed is recorded twice. The simulator is replaced by a fake expert
(a few tiny frames a trajectory), so these tests take well under a second."""
import json

import numpy as np
import pytest

import relam.demos as demos
from relam.demos import OFFLINE_SEED_BASE, Demo, demo_dir, load_demos, make_demos
from relam.tasks import Camera

TASK = "PushCube-v1"
FAILS = {OFFLINE_SEED_BASE + 2}  # the planner finds no plan from this start


class Stop(Exception):
    pass


class FakeEnv:
    def close(self):
        pass


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake expert in a fresh cache; ``calls`` lists (seed, noise) of every rollout, ``stop_after``
    raises when that many rollouts have returned (the next one is 'in flight')."""
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path))
    state = {"calls": [], "stop_after": None}

    def rollout(env, seed, noise=0.0, recorder=None):
        if state["stop_after"] is not None and len(state["calls"]) >= state["stop_after"]:
            raise Stop(f"interrupted while recording seed {seed}")
        state["calls"].append((seed, noise))
        if seed in FAILS:
            return None
        T = 3 + seed % 4
        return Demo(frames=np.full((T + 1, 4, 4, 3), seed % 251, np.uint8), body_seg=np.zeros((T + 1, 4, 4), np.int16),
                    depth0=np.ones((4, 4), np.float32), body_pos=np.zeros((T + 1, 2, 3)),
                    body_rot=np.zeros((T + 1, 2, 3, 3)), actions=np.full((T, 8), seed, np.float32),
                    env_reward=np.zeros(T, np.float32), success=np.arange(T) == T - 1 if noise == 0 else np.zeros(T, bool),
                    camera=Camera(K=np.eye(3), world_to_cam=np.eye(4), width=4, height=4), task=TASK, seed=seed,
                    body_names=("a", "b"), noisy=noise > 0)

    monkeypatch.setattr(demos, "make_env", lambda spec: FakeEnv())
    monkeypatch.setattr(demos, "rollout_expert", rollout)
    return state


def _stored(n):
    out = demo_dir(TASK, "offline")
    meta = json.loads((out / "meta.json").read_text())
    seeds = {p.stem: int(Demo.load(p).seed) for p in sorted(out.glob("*.npz"))}
    return meta, seeds


def test_interrupted_recording_resumes_without_recording_anything_twice(fake):
    fake["stop_after"] = 4  # 4 rollouts return (one of them a planning failure), the 5th is cut off
    with pytest.raises(Stop):
        make_demos(TASK, n=8, kind="offline", progress=False)
    meta, seeds = _stored(8)
    # recorded expert/noisy alternately; what returned is stored, the failed seed is remembered
    assert sorted(seeds) == ["expert_000", "expert_001", "noisy_000"]
    assert sorted(meta["files"]) == sorted(seeds) and meta["failed_seeds"] == sorted(FAILS)
    first = list(fake["calls"])

    fake["stop_after"] = None
    make_demos(TASK, n=8, kind="offline", progress=False)
    meta, seeds = _stored(8)
    assert len(seeds) == 8 and sorted(meta["files"]) == sorted(seeds)
    assert {k: v["seed"] for k, v in meta["files"].items()} == seeds
    assert len(set(seeds.values())) == 8  # no trajectory twice
    # the rerun tried none of the seeds the first run finished (stored or failed)
    again = fake["calls"][len(first):]
    assert not {s for s, _ in first} & {s for s, _ in again}
    assert len(fake["calls"]) == 8 + len(FAILS)  # the cut-off trajectory is the only one lost
    assert all((noise > 0) == name.startswith("noisy") for name in seeds for s, noise in fake["calls"]
               if s == seeds[name])
    before = {p: p.stat().st_mtime_ns for p in demo_dir(TASK, "offline").glob("*.npz")}
    make_demos(TASK, n=8, kind="offline", progress=False)  # complete: nothing recorded
    assert len(fake["calls"]) == 8 + len(FAILS)
    assert before == {p: p.stat().st_mtime_ns for p in demo_dir(TASK, "offline").glob("*.npz")}
    # a larger set tops this one up; a smaller one is its first trajectories
    make_demos(TASK, n=12, kind="offline", progress=False)
    assert len(fake["calls"]) == 12 + len(FAILS) and len(set(_stored(12)[1].values())) == 12
    small = load_demos(TASK, kind="offline", n=4, make=False)
    assert [d.seed for d in small] == [seeds[k] for k in ("expert_000", "expert_001", "noisy_000", "noisy_001")]


def test_a_file_stored_just_before_a_stop_keeps_its_seed(fake):
    """A run stopped between writing a trajectory and meta.json: the file is entered from its own
    arrays, so its seed is not given to another trajectory."""
    make_demos(TASK, n=4, kind="offline", progress=False)
    out = demo_dir(TASK, "offline")
    meta = json.loads((out / "meta.json").read_text())
    lost = meta["files"].pop("noisy_001")
    (out / "meta.json").write_text(json.dumps(meta))
    make_demos(TASK, n=6, kind="offline", progress=False)
    meta, seeds = _stored(6)
    assert meta["files"]["noisy_001"]["seed"] == lost["seed"] == seeds["noisy_001"]
    assert len(set(seeds.values())) == 6 and len(fake["calls"]) == 6 + len(FAILS)


def test_max_new_records_a_sitting_at_a_time(fake):
    for k in (3, 3, 3):
        make_demos(TASK, n=8, kind="offline", progress=False, max_new=k)
    _, seeds = _stored(8)
    assert len(seeds) == 8 and len(set(seeds.values())) == 8 and len(fake["calls"]) == 8 + len(FAILS)
    assert demos.demos_missing(TASK, 8, kind="offline") == 0 and demos.demos_missing(TASK, 10, kind="offline") == 2


def test_offline_data_command_sizes_the_set_from_the_spec_and_tops_it_up(fake, capsys):
    from relam.cli import main

    # table4's smoke ManiSkill budget: n_demos 3 -> 3 + 3 trajectories
    assert main(["offline-data", TASK, "--scale", "smoke", "--max", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{TASK}: 4/6 trajectories of the smoke set" in out and "2 to go" in out
    assert main(["offline-data", TASK, "--scale", "smoke", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{TASK}: 6/6 trajectories" in out and "to go" not in out
    assert len(fake["calls"]) == 6 + len(FAILS)
    assert main(["offline-data", "drawer-open-v3", "--scale", "smoke"]) == 2
    assert "no offline control set" in capsys.readouterr().err


def test_quick_offline_set_is_the_papers_100_plus_100_and_smoke_stays_small():
    from relam.experiments import load_spec

    for name in ("table4", "fig5"):
        spec = load_spec(name)
        for task in ("PushCube-v1", "PickCube-v1"):
            assert spec.budget(task, "quick").offline_set_size() == 200
            assert spec.budget(task, "smoke").offline_set_size() <= 10
