"""ReLAMWrapper / PolicyImageSize: gymnasium API, reward replacement, stage switching, determinism."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from relam.reward import RewardSettings, label_trajectory
from relam.wrappers import (
    FixedSubgoals,
    GroundTruthSubgoals,
    PolicyImageSize,
    ReLAMWrapper,
    denormalise_points,
    normalise_points,
)


class PointEnv(gym.Env):
    """A 32 px world with one 'hand' point moved by 2-d actions (3 px per unit), seeded start."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, size: int = 32, horizon: int = 40):
        self.size, self.horizon = size, horizon
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.pos = np.zeros(2)
        self.t = 0

    def _img(self) -> np.ndarray:
        img = np.zeros((self.size, self.size, 3), np.uint8)
        c, r = np.clip(np.rint(self.pos).astype(int), 0, self.size - 1)
        img[r, c] = 255
        return img

    def frame(self) -> np.ndarray:
        return self._img()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(4, 8, size=2)
        self.t = 0
        return self._img(), {"success": False, "env_reward": 0.0}

    def step(self, action):
        self.pos = self.pos + 3.0 * np.clip(np.asarray(action, float), -1, 1)
        self.t += 1
        success = bool(np.linalg.norm(self.pos - 24.0) < 2.0)
        return self._img(), -1.0, False, self.t >= self.horizon, {"success": success, "env_reward": -1.0}


class PointTracker:
    """Online tracker protocol on PointEnv: points keep their offset to the hand."""

    name = "fake"

    def reset(self, frame, query_uv, env=None):
        self.offset = np.asarray(query_uv, float) - env.pos

    def update(self, frame, env=None):
        return env.pos + self.offset


class StartPlanner:
    """Plans from the actual start: two points on the hand, subgoals at (16,16) then (24,24)."""

    def plan(self, initial_frame, task, *, env=None, seed=None):
        start = np.stack([env.pos, env.pos + [1.0, 0.0]])
        sg = [np.array([[16.0, 16.0], [17.0, 16.0]]), np.array([[24.0, 24.0], [25.0, 24.0]])]
        return np.stack([start] + sg)


SETTINGS = RewardSettings(d_max=32.0, theta_s=2.0)


def make(include_image=True, seed=0):
    return ReLAMWrapper(PointEnv(), StartPlanner(), tracker=PointTracker(), settings=SETTINGS, n_points=2,
                        include_image=include_image, seed=seed)


def _clip_normalised(uv, size):
    """normalise_points as written before issue 21 (np.clip)."""
    x = (np.asarray(uv, np.float64) + 0.5) / float(size) * 2.0 - 1.0
    return np.clip(x, -3.0, 3.0).astype(np.float32).reshape(-1)


def test_normalise_points_equals_the_clip_form_bit_for_bit():
    uv = np.random.default_rng(0).uniform(-500, 600, (1000, 2))
    uv[:4] = [[np.nan, 1.0], [np.inf, -np.inf], [-0.5, 127.5], [-192.5, 319.5]]
    for size in (32, 128):
        got, want = normalise_points(uv, size), _clip_normalised(uv, size)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        assert np.array_equal(np.signbit(got), np.signbit(want))


def test_normalise_roundtrip_and_edges():
    uv = np.array([[-0.5, -0.5], [127.5, 63.5], [10.0, 20.0]])
    x = normalise_points(uv, 128)
    np.testing.assert_allclose(x[:4], [-1, -1, 1, 0])
    np.testing.assert_allclose(denormalise_points(x, 128), uv, atol=1e-4)
    assert normalise_points(np.array([[1e5, -1e5]]), 128).tolist() == [3.0, -3.0]


@pytest.mark.parametrize("include_image", [True, False])
def test_check_env_passes(include_image):
    check_env(make(include_image), skip_render_check=True)


def test_check_env_with_image_resize():
    env = PolicyImageSize(make(True), 16)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert obs["image"].shape == (3, 16, 16) and obs["image"].dtype == np.uint8


def test_reward_replaced_and_stages_switch():
    env = make(include_image=False)
    obs, info = env.reset(seed=1)
    assert info["stage"] == 0 and info["n_subgoals"] == 2
    start = env.keypoints_.copy()
    np.testing.assert_allclose(denormalise_points(obs["target"], 32), [[16, 16], [17, 16]], atol=1e-4)
    track, rewards, reached, successes = [start], [], [], []
    for _ in range(20):  # steer straight to the current target
        tgt = denormalise_points(obs["target"], 32)[0]
        a = np.clip((tgt - env.unwrapped.pos) / 3.0, -1, 1)
        obs, r, term, trunc, info = env.step(a)
        track.append(env.keypoints_.copy())
        rewards.append(r), reached.append(info["subgoal_reached"]), successes.append(info["success"])
        assert info["env_reward"] == -1.0 and r != -1.0
    assert sum(reached) == 2 and info["stage"] == 2 and info["all_subgoals_reached"]
    assert any(successes)
    # the online rewards are exactly the offline labels of the same keypoint track
    lab, stages, lab_reached = label_trajectory(np.stack(track), env.plan_[1:], SETTINGS)
    np.testing.assert_allclose(rewards, lab, rtol=1e-6)
    np.testing.assert_array_equal(reached, lab_reached)


def test_same_seed_same_rollout():
    def rollout(seed):
        env = make(True, seed=seed)
        obs, _ = env.reset()
        rng = np.random.default_rng(0)
        out = [obs["keypoints"]]
        for _ in range(10):
            obs, r, *_ = env.step(rng.uniform(-1, 1, 2))
            out.append(np.concatenate([obs["keypoints"], [r], obs["image"].ravel()[:50]]))
        obs, _ = env.reset()  # second episode: seed drawn from the wrapper's generator
        out.append(obs["keypoints"])
        return out, env.episode_seed

    a, sa = rollout(5)
    b, sb = rollout(5)
    c, _ = rollout(6)
    assert sa == sb
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_bad_plans_are_rejected():
    env = ReLAMWrapper(PointEnv(), FixedSubgoals(np.zeros((2, 3, 2))), tracker=PointTracker(), n_points=2)
    with pytest.raises(ValueError, match="n_points"):
        env.reset(seed=0)
    with pytest.raises(ValueError, match="S\\+1, N, 2"):
        FixedSubgoals(np.zeros((1, 2, 2)))


def test_ground_truth_planner_memoises_per_seed():
    calls = []

    def rollout(task, seed):
        calls.append(seed)
        return {"seed": seed}

    def extract(demo):
        return np.full((3, 2, 2), float(demo["seed"]))

    gt = GroundTruthSubgoals(rollout, extract)
    p1 = gt.plan(None, "t", seed=7)
    p2 = gt.plan(None, "t", seed=7)
    gt.plan(None, "t", seed=8)
    assert calls == [7, 8] and p1[0, 0, 0] == 7.0
    np.testing.assert_array_equal(p1, p2)
    with pytest.raises(ValueError, match="seed"):
        gt.plan(None, "t")


# ----------------------------------------------------------------------------- real simulator

DRAWER_PLAN = np.array(  # ground-truth plan of drawer-open-v3 seed 0 (4 keypoints, 4 subgoals)
    [[[94.0, 66.0], [5.0, 1.0], [63.0, 15.0], [55.0, 57.0]],
     [[83.0, 58.1], [11.2, -9.1], [68.7, -11.6], [60.1, 32.8]],
     [[83.0, 58.1], [33.4, 13.6], [71.3, 21.2], [63.1, 56.3]],
     [[79.2, 59.4], [32.4, 17.5], [67.2, 28.9], [58.1, 62.7]],
     [[64.6, 64.5], [8.4, 10.3], [48.8, 30.9], [40.7, 66.8]]])


@pytest.mark.slow
def test_check_env_on_drawer_open():
    pytest.importorskip("metaworld")
    from relam.wrappers import make_relam_env

    env = make_relam_env("drawer-open-v3", FixedSubgoals(DRAWER_PLAN), seed=0, policy_image_size=64)
    try:
        check_env(env, skip_render_check=True)
        obs, info = env.reset(seed=0)
        assert obs["image"].shape == (3, 64, 64) and obs["keypoints"].shape == (8,)
        assert info["n_subgoals"] == 4 and info["stage"] == 0
        obs2, r, term, trunc, info = env.step(np.zeros(4, np.float32))
        assert {"stage", "subgoal_reached", "success", "env_reward", "keypoint_distance"} <= set(info)
        assert r < -3.0  # four subgoals unreached
    finally:
        env.close()


@pytest.mark.slow
def test_ground_truth_plan_fast_equals_full_and_expert_reaches_it():
    pytest.importorskip("metaworld")
    from relam.demos import rollout_expert
    from relam.tasks import make_env

    fast, full = GroundTruthSubgoals(fast=True), GroundTruthSubgoals(fast=False)
    try:
        p_fast = fast.plan(None, "drawer-open-v3", seed=3)
        p_full = full.plan(None, "drawer-open-v3", seed=3)
        np.testing.assert_allclose(p_fast, p_full, atol=1e-4)
        # the training env's tracker starts on the planned keypoints (same initial state)
        env = ReLAMWrapper(make_env("drawer-open-v3", render=False), fast, include_image=False)
        env.reset(seed=3)
        np.testing.assert_allclose(env.keypoints_, p_fast[0], atol=1.0)
        # replaying the expert's actions reaches every subgoal and pays more than holding still
        demo = rollout_expert(make_env("drawer-open-v3", render=False), 3)
        env.reset(seed=3)
        track, ret_expert = [env.keypoints_.copy()], 0.0
        for a in demo.actions:
            _, r, _, _, info = env.step(a)
            ret_expert += r
            track.append(env.keypoints_.copy())
        assert info["stage"] == p_fast.shape[0] - 1 and info["success"]
        env.reset(seed=3)
        ret_hold = sum(env.step(np.zeros(4))[1] for _ in demo.actions)
        assert ret_expert > ret_hold
        env.close()
    finally:
        fast.close(), full.close()


def test_anticipation_planner_adapter():
    from relam.wrappers import AnticipationPlanner

    class Model:
        def generate(self, initial_frame, task):
            assert initial_frame.shape == (32, 32, 3) and task == "PointEnv"
            return np.array([[[5.0, 5.0], [6.0, 5.0]], [[16.0, 16.0], [17.0, 16.0]]])

    env = ReLAMWrapper(PointEnv(), AnticipationPlanner(Model()), tracker=PointTracker(), n_points=2)
    obs, info = env.reset(seed=0)
    assert info["n_subgoals"] == 1
    np.testing.assert_allclose(denormalise_points(obs["target"], 32), [[16, 16], [17, 16]], atol=1e-4)
    with pytest.raises(TypeError, match="generate"):
        AnticipationPlanner(object())


def test_closing_a_subgoal_wrapper_closes_its_planner_and_env():
    """ReLAM's and IS/Oracle's wrappers share SeededEpisodes.close: an expert-replay planner's
    private envs are closed with the wrapper, and a planner without close() is fine."""
    from relam.wrappers import SeededEpisodes

    closed = []

    class Env(gym.Env):
        observation_space = gym.spaces.Box(0, 1, (1,))
        action_space = gym.spaces.Box(0, 1, (1,))

        def close(self):
            closed.append("env")

    class Planner:
        def close(self):
            closed.append("planner")

    class Wrapper(SeededEpisodes, gym.Wrapper):
        def __init__(self, env, planner):
            super().__init__(env)
            self.planner = planner

    Wrapper(Env(), Planner()).close()
    assert closed == ["planner", "env"]
    Wrapper(Env(), object()).close()
    assert closed == ["planner", "env", "env"]


@pytest.mark.slow
def test_lean_ground_truth_path_is_bit_identical_to_the_first_frame_view_path():
    """Issue 21: the lean Meta-World expert replay (two render passes, frame-0 views handed to the
    training env's tracker) gives the same demo arrays, plans, observations and rewards as the
    rollout_expert + _FirstFrameView path with the training env rendering its own frame 0."""
    pytest.importorskip("metaworld")
    from relam.demos import rollout_expert
    from relam.tasks import make_env
    from relam.wrappers import _FirstFrameView

    task = "drawer-open-v3"
    ref_env = make_env(task, render=False)
    lean = GroundTruthSubgoals()
    ref = GroundTruthSubgoals(rollout=lambda t, s: rollout_expert(_FirstFrameView(ref_env), s))
    new_env = ReLAMWrapper(make_env(task, render=False), lean, include_image=False)
    renders = []
    base = new_env.unwrapped
    render_pass = base._render_pass
    base._render_pass = lambda kind: renders.append(kind) or render_pass(kind)
    try:
        for seed in (0, 7, 123456):
            demo_ref = rollout_expert(_FirstFrameView(ref_env), seed)
            lean.plan(None, task, seed=seed + 1)  # the expert env exists, another seed is kept
            demo_new = lean._rollout(task, seed)
            for name in ("body_pos", "body_rot", "actions", "env_reward", "success", "depth0"):
                np.testing.assert_array_equal(getattr(demo_new, name), getattr(demo_ref, name), err_msg=name)
            np.testing.assert_array_equal(demo_new.body_seg[0], demo_ref.body_seg[0])
            assert demo_new.frames.shape == demo_ref.frames.shape and demo_new.body_seg.shape == demo_ref.body_seg.shape
            p_ref, p_new = ref.plan(None, task, seed=seed), lean.plan(None, task, seed=seed)
            np.testing.assert_array_equal(p_new, p_ref)
            # the same episode, once with the training env rendering its own frame 0 (a fixed plan),
            # once with the planner's recorded views (nothing rendered at reset)
            old_env = ReLAMWrapper(make_env(task, render=False), FixedSubgoals(p_ref), include_image=False)
            renders.clear()
            lean._memo.clear()  # a fresh replay of this seed, as a new training episode does
            obs_o, _ = old_env.reset(seed=seed)
            obs_n, info_n = new_env.reset(seed=seed)
            assert renders == [] and info_n["episode_seed"] == seed
            rng = np.random.default_rng(seed)
            for t in range(120):
                for k in obs_o:
                    np.testing.assert_array_equal(obs_n[k], obs_o[k], err_msg=f"{k} step {t}")
                # the observed target is the current subgoal, normalised as before issue 21
                np.testing.assert_array_equal(obs_n["target"], _clip_normalised(new_env.reward_fn.target, 128))
                a = rng.uniform(-1, 1, 4).astype(np.float32)
                if t < len(demo_ref.actions):
                    a = demo_ref.actions[t]  # the expert's actions reach subgoals: stage switches too
                obs_o, r_o, _, _, i_o = old_env.step(a)
                obs_n, r_n, _, _, i_n = new_env.step(a)
                assert r_n == r_o and i_n == i_o
            assert i_n["stage"] >= 1
            old_env.close()
    finally:
        new_env.close(), ref.close(), ref_env.close()


def test_recorded_views_are_not_used_for_another_state():
    """frame0_env falls back to the env itself when no view is kept or the state differs."""
    gt = GroundTruthSubgoals()

    class Env:
        class sim:  # noqa: N801
            class data:  # noqa: N801
                geom_xpos = np.zeros((2, 3))
                geom_xmat = np.zeros((2, 9))

        camera = type("Cam", (), {"K": np.eye(3), "world_to_cam": np.eye(4)})()

        def body_poses(self):
            return np.ones((1, 3)), np.ones((1, 3, 3))

    env = Env()
    assert gt.frame0_env(env, "t", 3) is env
    gt._views[("t", 3)] = {"seg": np.zeros((2, 2), np.int16), "depth": np.ones((2, 2), np.float32),
                           "pos": np.ones((1, 3)), "rot": np.ones((1, 3, 3)), "geom_xpos": np.zeros((2, 3)),
                           "geom_xmat": np.zeros((2, 9)), "K": np.eye(3), "world_to_cam": np.eye(4)}
    view = gt.frame0_env(env, "t", 3)
    assert view is not env and view.depth().sum() == 4 and view.camera is env.camera
    gt._views[("t", 3)]["pos"] = np.full((1, 3), 2.0)
    assert gt.frame0_env(env, "t", 3) is env and gt.frame0_env(env, "t", None) is env
