"""Tests of the IS baseline (baselines/is_generator.py, is_reward.py, image_subgoal.py): the IS
generator (shapes, overfitting a few keyframes), the image stage reward (known answers), the
wrapper, offline labelling and the Oracle planner."""
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from baselines.embedding import resize_images
from baselines.is_generator import FlowSettings, SubgoalImageModel, pixel_error, training_pairs
from baselines.is_reward import (
    ImageRewardSettings,
    ImageSubgoalPlanner,
    ImageSubgoalReward,
    ImageSubgoalWrapper,
    OracleSubgoalPlanner,
    calibrate_threshold,
    label,
    label_details,
    stages_passed,
)
from relam.reward import stage_reward


def _seq(frames, n=3):
    """A subgoal sequence with keyframes at evenly spaced steps (stand-in for Eq. 2)."""
    T = len(frames) - 1
    steps = np.linspace(0, T, n + 1).round().astype(int)[1:]
    return SimpleNamespace(initial_frame=frames[0], keyframe_images=frames[steps], keyframe_steps=steps)


@pytest.fixture(scope="module")
def drawer_demos():
    from relam.demos import load_demos

    return load_demos("drawer-open-v3", n=2)


# ------------------------------------------------------------------------------ generator


def test_settings_are_validated():
    with pytest.raises(ValueError, match="image_size"):
        FlowSettings(image_size=30)
    with pytest.raises(ValueError, match="width"):
        FlowSettings(width=12)
    with pytest.raises(ValueError, match="similarity_threshold"):
        ImageRewardSettings(similarity_threshold=1.5)


def test_generated_subgoals_have_the_policy_shape_and_uint8_range():
    model = SubgoalImageModel(FlowSettings(image_size=16, width=8, euler_steps=2), n_subgoals=3)
    frame = np.full((128, 128, 3), 90, np.uint8)
    imgs = model.generate(frame, seed=0)
    assert imgs.shape == (3, 64, 64, 3) and imgs.dtype == np.uint8
    assert imgs.min() >= 0 and imgs.max() <= 255 and imgs.std() > 0
    np.testing.assert_array_equal(imgs, model.generate(frame, seed=0))  # seeded: repeatable
    plan = ImageSubgoalPlanner(model).plan(frame, "drawer-open-v3", seed=5)
    assert isinstance(plan, list) and len(plan) == 3 and plan[0].shape == (64, 64, 3)
    with pytest.raises(ValueError, match="initial_frame"):
        model.generate(frame.astype(np.float32))


def test_training_pairs_condition_on_initial_and_previous_keyframe():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    d = training_pairs([_seq(frames, 3)], size=16, max_subgoals=2)
    assert d["cond"].shape == (3, 6, 16, 16) and d["target"].shape == (3, 3, 16, 16)
    assert d["k"].tolist() == [0, 1, 1]  # indices past max_subgoals share the last embedding
    assert d["last"].tolist() == [0, 0, 1]
    torch.testing.assert_close(d["cond"][1, 3:], d["target"][0])  # previous subgoal
    torch.testing.assert_close(d["cond"][0, 3:], d["cond"][0, :3])  # first: the initial image


def test_compose_setting_keeps_default_keys_and_is_validated():
    """FlowSettings.compose (issue 18 item 3): absent from to_dict (hence cache keys) at its default,
    present otherwise; unknown modes fail."""
    assert "compose" not in FlowSettings().to_dict()
    assert FlowSettings(compose="residual").to_dict()["compose"] == "residual"
    assert FlowSettings(**FlowSettings(compose="residual").to_dict()).compose == "residual"  # round trip
    with pytest.raises(ValueError, match="compose"):
        FlowSettings(compose="sharpen")


def test_residual_compose_keeps_the_sharp_initial_frame_where_nothing_changed():
    from baselines.is_generator import compose_residual

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # fine texture a 16 px image loses
    small = np.repeat(resize_images(frame, 16), 2, 0)
    small[1, 4, 5] = np.clip(small[1, 4, 5].astype(int) + 60, 0, 255)  # one changed pixel in image 1
    out = compose_residual(small, frame, 64)
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8
    sharp = resize_images(frame, 64)[0]
    np.testing.assert_array_equal(out[0], sharp)  # no change: exactly the 64 px initial frame
    diff = np.abs(out[1].astype(int) - sharp.astype(int)).sum(-1)
    rows, cols = np.nonzero(diff)
    assert diff.max() > 0 and rows.min() >= 4 * 4 - 4 and rows.max() < 4 * 5 + 4 and cols.min() >= 4 * 5 - 4
    # plain upsampling loses the texture everywhere: far from the 64 px frame
    assert pixel_error(resize_images(small[:1], 64), sharp[None]) > 20 * max(pixel_error(out[:1], sharp[None]), 0.05)


def test_generate_with_residual_compose_is_the_composed_raw_output():
    from baselines.is_generator import compose_residual

    plain = SubgoalImageModel(FlowSettings(image_size=16, width=8, euler_steps=2), n_subgoals=2)
    res = SubgoalImageModel(FlowSettings(image_size=16, width=8, euler_steps=2, compose="residual"), n_subgoals=2)
    res.net.load_state_dict(plain.net.state_dict())
    frame = np.random.default_rng(2).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    raw = plain.generate(frame, seed=4, size=16)
    np.testing.assert_array_equal(res.generate(frame, seed=4), compose_residual(raw, frame, 64))
    np.testing.assert_array_equal(res.generate(frame, seed=4, size=16), raw)  # at its own size: the raw images
    again = SubgoalImageModel.from_state(res.state())
    assert again.settings.compose == "residual"


@pytest.mark.slow
def test_flow_model_overfits_a_few_keyframe_images(drawer_demos, tmp_path):
    # one demo's 4 keyframes: two demos' initial frames are nearly identical at 16 px, so a plan
    # could not tell them apart; memorising one sequence is the overfitting check
    torch.manual_seed(0)
    seqs = [_seq(drawer_demos[0].frames, 4)]
    s = FlowSettings(image_size=16, width=16, batch_size=4, lr=3e-3, euler_steps=8, output_size=16)
    model = SubgoalImageModel(s)
    losses = model.fit(seqs, steps=200, progress=False)
    assert model.n_subgoals == 4
    assert np.mean(losses[-20:]) < 0.2 * np.mean(losses[:10])
    for i, q in enumerate(seqs):
        gen = model.generate(q.initial_frame, seed=i)
        true = resize_images(q.keyframe_images, 16)
        err = pixel_error(gen, true)
        copy_err = pixel_error(np.repeat(resize_images(q.initial_frame, 16), 4, 0), true)
        # half the error of copying the initial frame (measured 3.3 vs 8.1 since Meta-World frame 0
        # shows the new episode's drawer); a model that learned nothing copies it (ratio ~1)
        assert err < 0.5 * copy_err, (err, copy_err)
    path = model.save(tmp_path / "m.pt")
    again = SubgoalImageModel.load(path)
    np.testing.assert_array_equal(again.generate(seqs[0].initial_frame, seed=3),
                                  model.generate(seqs[0].initial_frame, seed=3))


# ------------------------------------------------------------------------------ reward


class _OneHot:
    """A fake embedding: the value of pixel (0,0,0) picks a unit vector (0..3); for known answers."""

    name = "onehot"

    def embed(self, images):
        a = np.asarray(images)
        a = a[None] if a.ndim == 3 else a
        z = np.zeros((len(a), 4), np.float32)
        z[np.arange(len(a)), a[:, 0, 0, 0] % 4] = 1.0
        return z

    def state(self):
        return {}


def _img(v, size=8):
    return np.full((size, size, 3), v, np.uint8)


def test_image_stage_reward_known_answers():
    s = ImageRewardSettings(similarity_threshold=0.9)
    rs = s.reward_settings()
    assert rs.theta_s == pytest.approx(0.1) and rs.d_max == 1.0
    rew = ImageSubgoalReward(s)
    emb = _OneHot()
    rew.reset(emb.embed(np.stack([_img(1), _img(2)])))
    out, sim = rew.step(emb.embed(_img(3))[0])  # orthogonal to target 1: distance 1
    assert sim == 0.0 and not out.reached and out.reward == pytest.approx(stage_reward(1.0, 0, 2, False, rs))
    assert out.reward == pytest.approx(-1.0 - 2.0)
    out, sim = rew.step(emb.embed(_img(1))[0])  # reaches subgoal 1
    assert sim == 1.0 and out.reached and out.next_stage == 1
    assert out.reward == pytest.approx(0.0 - 2.0 + 2.0)
    out, _ = rew.step(emb.embed(_img(2))[0])  # reaches the last one: stage + final bonus
    assert out.reached and out.all_reached and out.reward == pytest.approx(-1.0 + 2.0 + 10.0)
    out, _ = rew.step(emb.embed(_img(2))[0])  # staying at the goal: 0
    assert not out.reached and out.reward == pytest.approx(0.0)


class _FakeEnv(gym.Env):
    """Frames whose (0,0,0) pixel is a scripted value; success at the last frame."""

    def __init__(self, values):
        self.values = list(values)
        self.observation_space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.task = SimpleNamespace(name="fake-task")
        self.t = 0
        self.seeds = []

    def reset(self, *, seed=None, options=None):
        self.t = 0
        self.seeds.append(seed)
        return _img(self.values[0], 16), {"success": False, "env_reward": 0.0}

    def step(self, action):
        self.t += 1
        done = self.t == len(self.values) - 1
        return _img(self.values[self.t], 16), 0.0, False, done, {"success": done, "env_reward": 0.5}


class _FixedPlanner:
    def __init__(self, images):
        self.images, self.calls = images, []

    def plan(self, initial_frame, task, *, env=None, seed=None):
        self.calls.append((task, seed))
        return list(self.images)


def test_wrapper_observations_stages_and_info():
    env = _FakeEnv([0, 3, 1, 1, 2])
    planner = _FixedPlanner([_img(1, 32), _img(2, 32)])
    w = ImageSubgoalWrapper(env, planner, _OneHot(), ImageRewardSettings(similarity_threshold=0.9))
    assert w.observation_space["image"].shape == (3, 64, 64)
    assert w.observation_space["target_image"].shape == (3, 64, 64)
    obs, info = w.reset(seed=7)
    assert planner.calls == [("fake-task", 7)] and env.seeds == [7] and info["n_subgoals"] == 2
    assert w.observation_space.contains(obs)
    assert obs["target_image"][0, 0, 0] == 1
    stages, reached = [], []
    for _ in range(4):
        obs, r, term, trunc, info = w.step(np.zeros(2, np.float32))
        stages.append(info["stage"])
        reached.append(info["subgoal_reached"])
    assert stages == [0, 1, 1, 2] and reached == [False, True, False, True]
    assert info["all_subgoals_reached"] and info["success"] and info["env_reward"] == 0.5
    assert obs["target_image"][0, 0, 0] == 2  # the last subgoal stays the target
    w.reset()  # no seed: one is drawn
    assert isinstance(env.seeds[-1], int)


def test_label_matches_the_wrapper_logic():
    demo = SimpleNamespace(frames=np.stack([_img(v) for v in [0, 3, 1, 1, 2]]), task="fake", seed=4)
    planner = _FixedPlanner([_img(1), _img(2)])
    s = ImageRewardSettings(similarity_threshold=0.9)
    rewards, stages, reached, sims = label_details(demo, planner, _OneHot(), s)
    assert planner.calls[-1] == ("fake", 4)
    np.testing.assert_allclose(rewards, [-3.0, 0.0, -2.0, 11.0])
    assert stages.tolist() == [0, 0, 1, 1, 2] and reached.tolist() == [False, True, False, True]
    np.testing.assert_allclose(sims, [0, 1, 0, 1])
    assert label(demo, planner, _OneHot(), s).shape == (4,)
    assert calibrate_threshold(planner, _OneHot(), [demo], quantile=0.0) == pytest.approx(1.0)


# ------------------------------------------------------------------------------ oracle


def test_oracle_planner_memoises_and_resizes():
    calls = []

    def rollout(task, seed):
        calls.append((task, seed))
        return SimpleNamespace(seed=seed)

    def keyframes(demo):
        return np.stack([_img(demo.seed, 128), _img(demo.seed + 1, 128)])

    o = OracleSubgoalPlanner(rollout=rollout, keyframes=keyframes)
    p = o.plan(_img(0, 128), "t", seed=3)
    assert len(p) == 2 and p[0].shape == (64, 64, 3) and p[1][0, 0, 0] == 4
    o.plan(_img(0, 128), "t", seed=3)
    assert calls == [("t", 3)]
    with pytest.raises(ValueError, match="seed"):
        o.plan(_img(0, 128), "t")


def test_oracle_planner_memo_is_bounded_and_replans_the_same():
    calls = []

    def rollout(task, seed):
        calls.append(seed)
        return SimpleNamespace(seed=seed)

    o = OracleSubgoalPlanner(rollout=rollout, keyframes=lambda d: np.stack([_img(d.seed, 128)]), cache_size=2)
    first = [o.plan(_img(0, 128), "t", seed=s) for s in (1, 2, 3)]
    assert len(o._memo) == 2 and (("t", 1) not in o._memo)  # the oldest plan went first
    again = o.plan(_img(0, 128), "t", seed=1)
    assert calls == [1, 2, 3, 1] and np.array_equal(again[0], first[0][0])
    with pytest.raises(ValueError, match="cache_size"):
        OracleSubgoalPlanner(cache_size=0)


@pytest.mark.slow
def test_oracle_replays_the_expert_from_the_same_start(drawer_demos):
    from relam.keypoints import KeypointSettings
    from relam.subgoals import subgoal_sequence

    demo = drawer_demos[0]
    oracle = OracleSubgoalPlanner(output_size=128)
    try:
        plan = oracle.plan(demo.frames[0], demo.task, seed=demo.seed)
    finally:
        oracle.close()
    seq, _ = subgoal_sequence(demo, KeypointSettings())
    assert len(plan) == seq.num_subgoals
    assert pixel_error(np.stack(plan), seq.keyframe_images) < 1.0


@pytest.mark.slow
def test_oracle_lean_keyframes_equal_the_rendered_rollout():
    """The lean Meta-World path (nothing rendered during the expert's replay, the keyframes rendered
    afterwards from recorded simulator states) gives the full path's images bit for bit, and
    ``frame_of`` leaves the env where it was."""
    task = "drawer-open-v3"
    full, lean = OracleSubgoalPlanner(lean=False, output_size=128), OracleSubgoalPlanner(output_size=128)
    try:
        for seed in (3, 11):
            a, b = full.plan(None, task, seed=seed), lean.plan(None, task, seed=seed)
            assert len(a) == len(b) >= 2
            assert all(np.array_equal(x, y) for x, y in zip(a, b))
        env = lean._envs[task]
        assert env.render_enabled is False and full._envs[task].render_enabled is True
        before, frame_before = env.physics_state(), env.frame_of(env.physics_state())
        env.reset(seed=5)
        s0 = env.physics_state()
        env.step(np.array([0.0, 1.0, 0.0, 0.0]))
        s1 = env.physics_state()
        assert not np.array_equal(env.frame_of(s0), env.frame_of(s1))
        assert np.array_equal(env.physics_state(), s1)
        env.step(np.array([1.0, 0.0, 0.0, 1.0]))  # the next step as if nothing had been rendered
        s2 = env.physics_state()
        env.reset(seed=5)
        env.step(np.array([0.0, 1.0, 0.0, 0.0]))
        env.step(np.array([1.0, 0.0, 0.0, 1.0]))
        assert np.array_equal(env.physics_state(), s2)
        assert before.shape == s1.shape and frame_before.shape == (128, 128, 3)
    finally:
        full.close()
        lean.close()
    other = OracleSubgoalPlanner(keypoint_settings=SimpleNamespace(tracker="lk", segmenter="sim"))
    assert not other._lean  # the lean record serves the sim tracker only


# ------------------------------------------------------------------------------ registered method


@pytest.mark.slow
def test_image_subgoal_method_smoke_run(tmp_path, drawer_demos):
    """The registered method trains its parts (smoke scale) and runs PPO end to end."""
    from baselines.image_subgoal import ImageSubgoalSettings
    from relam.methods import Budget, RunContext, get_method

    method = get_method("image_subgoal")
    ctx = RunContext(task="drawer-open-v3", method="image_subgoal", settings=ImageSubgoalSettings(),
                     seed=0, budget=Budget(train_steps=64, eval_every=64, eval_episodes=1, n_demos=2,
                                           horizon=8),
                     scale="smoke", out_dir=tmp_path / "run")
    res = method.run(ctx)
    assert 0.0 <= res.success <= 1.0 and res.curve[-1][0] >= 64
    assert -1.0 < res.metrics["similarity_threshold"] < 1.0


# ------------------------------------------------------------------------------ offline (ManiSkill rows)


def _demo(values, seed=4, noisy=False, size=8):
    T = len(values) - 1
    succ = np.zeros(T, bool)
    succ[-1] = True
    return SimpleNamespace(frames=np.stack([_img(v, size) for v in values]), task="fake", seed=seed, noisy=noisy,
                           actions=np.zeros((T, 2), np.float32), env_reward=np.zeros(T, np.float32), success=succ)


def test_offline_labeller_rewards_targets_and_dataset():
    from baselines.is_reward import ImageSubgoalLabeller
    from relam.offline import label_demos

    planner = _FixedPlanner([_img(1), _img(2)])
    s = ImageRewardSettings(similarity_threshold=0.9)
    lab = ImageSubgoalLabeller(planner, _OneHot(), s, planner_id="fixed")
    demos = [_demo([0, 3, 1, 1, 2]), _demo([0, 3, 3], seed=5, noisy=True)]
    out = lab.label(demos[0]).validate(4)
    np.testing.assert_allclose(out.rewards, [-3.0, 0.0, -2.0, 11.0])  # = label_details (known answers above)
    e = _OneHot().embed
    np.testing.assert_array_equal(out.extra_obs["embedding"], e(demos[0].frames))
    # the target at frame t is the subgoal of the stage at t (stages 0,0,1,1,2 -> last stays)
    np.testing.assert_array_equal(out.extra_obs["target"], e(np.stack([_img(v) for v in [1, 1, 2, 2, 2]])))
    ds = label_demos(demos, lab, image_size=16, progress=False)
    assert ds.rewards.shape == (6,) and np.all(np.isfinite(ds.rewards))
    assert ds.observations["image"].shape == (8, 16, 16, 3) and ds.observations["target"].shape == (8, 4)
    assert ds.info["stage"].tolist() == [0, 0, 1, 1, 0, 0] and ds.info["n_subgoals"].tolist() == [2] * 6
    assert planner.calls == [("fake", 4), ("fake", 4), ("fake", 5)]
    assert lab.config()["planner"] == "fixed"


def test_offline_labels_agree_with_the_wrapper_step_for_step():
    """What IQL trains on (labelled frames) is what the evaluation wrapper shows and pays."""
    from baselines.is_reward import ImageSubgoalLabeller

    values = [0, 3, 1, 1, 2]
    s = ImageRewardSettings(similarity_threshold=0.9)
    planner = _FixedPlanner([_img(1, 16), _img(2, 16)])
    lab = ImageSubgoalLabeller(planner, _OneHot(), s).label(_demo(values, size=16))
    w = ImageSubgoalWrapper(_FakeEnv(values), planner, _OneHot(), s, observe_embeddings=True)
    assert w.observation_space["target"].shape == (4,)
    obs, _ = w.reset(seed=4)
    rows, rewards = [obs], []
    for _ in range(4):
        obs, r, *_ = w.step(np.zeros(2, np.float32))
        rows.append(obs)
        rewards.append(r)
    np.testing.assert_allclose(rewards, lab.rewards)
    for k in ("embedding", "target"):
        np.testing.assert_array_equal(np.stack([o[k] for o in rows]), lab.extra_obs[k])
    assert all(w.observation_space.contains(o) for o in rows)


def test_oracle_labeller_uses_own_keyframes_for_expert_and_replays_noisy():
    from baselines.is_reward import ImageSubgoalLabeller

    rolled = []

    def rollout(task, seed):
        rolled.append(seed)
        if seed == 99:
            raise RuntimeError("no plan")
        return SimpleNamespace(frames=np.stack([_img(1, 8), _img(2, 8)]))

    oracle = OracleSubgoalPlanner(rollout=rollout, keyframes=lambda d: np.asarray(d.frames)[[-1]], output_size=8)
    lab = ImageSubgoalLabeller(oracle, _OneHot(), ImageRewardSettings(similarity_threshold=0.9), own_keyframes=True)
    expert = lab.label(_demo([0, 3, 1], seed=1))  # own last frame (1) is the one subgoal: reached at the end
    assert rolled == [] and expert.info["stages"].tolist() == [0, 0, 1] and not expert.info["fallback"]
    noisy = lab.label(_demo([0, 2, 3], seed=2, noisy=True))  # the expert replay's keyframe (2)
    assert rolled == [2] and noisy.info["stages"].tolist() == [0, 1, 1]
    miss = lab.label(_demo([0, 3, 3], seed=99, noisy=True))
    assert miss.info["fallback"] and miss.info["stages"].tolist() == [0, 1, 1]
    with pytest.raises(TypeError, match="keyframes_of"):
        ImageSubgoalLabeller(_FixedPlanner([_img(1)]), _OneHot(), own_keyframes=True)


def test_iql_policy_trained_on_labels_acts_on_the_wrapper_observation():
    """The offline policy's input (image + embedding + target) is what the evaluation wrapper gives."""
    from baselines.is_reward import ImageSubgoalLabeller
    from relam.offline import label_demos
    from relam.rl.iql import IQLSettings, train_iql

    values = [0, 3, 1, 1, 2]
    s = ImageRewardSettings(similarity_threshold=0.9)
    planner = _FixedPlanner([_img(1, 16), _img(2, 16)])
    ds = label_demos([_demo(values, size=16), _demo([0, 1, 2], seed=5, size=16)],
                     ImageSubgoalLabeller(planner, _OneHot(), s), image_size=64, progress=False)
    res = train_iql(ds, IQLSettings(batch_size=4, steps_per_epoch=2, epochs=1, hidden=(16,), image_dim=16,
                                    point_hidden=(8,)), progress=False)
    w = ImageSubgoalWrapper(_FakeEnv(values), planner, _OneHot(), s, observe_embeddings=True)
    obs, _ = w.reset(seed=4)
    a = res.policy(obs)
    assert a.shape == (2,) and np.all(np.isfinite(a))
    assert sorted(res.policy.agent.vector_dims) == ["embedding", "target"]


# ------------------------------------------------------------------------------ calibration quantile


class _Angle:
    """A fake embedding: pixel value v -> the unit vector at angle v/100 rad (graded similarities)."""

    name = "angle"

    def embed(self, images):
        a = np.asarray(images)
        a = a[None] if a.ndim == 3 else a
        th = a[:, 0, 0, 0].astype(np.float64) / 100.0
        return np.stack([np.cos(th), np.sin(th)], 1).astype(np.float32)

    def state(self):
        return {}


def test_calibration_quantile_moves_the_threshold_and_the_keys():
    """The quantile is a setting: another value gives another threshold, another run key and another
    components key; the default is left out of both keys (records and caches made before stay valid)."""
    from pydantic import ValidationError

    from baselines.image_subgoal import CALIBRATION_QUANTILE, ImageSubgoalSettings, components_key

    # subgoals at angles 0.1 .. 0.5 rad; the demo's frames get within 0, 0.05, 0.1, 0.2, 0.3 rad of them
    planner = _FixedPlanner([_img(v) for v in (10, 20, 30, 40, 50)])
    demo = SimpleNamespace(frames=np.stack([_img(v) for v in (0, 10, 15, 20, 20)]), task="fake", seed=0)
    low = calibrate_threshold(planner, _Angle(), [demo], quantile=0.1)
    default = calibrate_threshold(planner, _Angle(), [demo], quantile=CALIBRATION_QUANTILE)
    assert low < default < 1.0
    best = np.cos([0.0, 0.0, 0.1, 0.2, 0.3])
    assert default == pytest.approx(np.quantile(best, CALIBRATION_QUANTILE))

    assert ImageSubgoalSettings().model_dump(mode="json") == {"subgoals": "generated"}
    assert ImageSubgoalSettings(calibration_quantile=CALIBRATION_QUANTILE).model_dump() == {"subgoals": "generated"}
    assert ImageSubgoalSettings(calibration_quantile=0.1).model_dump(mode="json")["calibration_quantile"] == 0.1
    assert ImageSubgoalSettings(**ImageSubgoalSettings(calibration_quantile=0.1).model_dump()).calibration_quantile == 0.1
    for bad in (0.0, 1.0):
        with pytest.raises(ValidationError, match="calibration_quantile"):
            ImageSubgoalSettings(calibration_quantile=bad)

    key = components_key("drawer-open-v3", 2, "smoke")
    assert components_key("drawer-open-v3", 2, "smoke", calibration_quantile=CALIBRATION_QUANTILE) == key
    assert components_key("drawer-open-v3", 2, "smoke", calibration_quantile=0.1) != key


def test_fixed_similarity_threshold_replaces_the_calibrated_one(tmp_path, monkeypatch):
    """similarity_threshold (issue 18 item 2): a fixed stage threshold in place of the calibrated one,
    with the same generator and embedding; left out of the dumped settings (so of run keys) when
    unset; with a calibration_quantile too it is an error that names both fields."""
    from pydantic import ValidationError

    from baselines.embedding import TemporalEmbedding
    from baselines.image_subgoal import SCALE_STEPS, ImageSubgoalSettings, _components, components_key
    from baselines.is_reward import _fingerprint
    from relam.cache import atomic_torch_save

    assert ImageSubgoalSettings(similarity_threshold=None).model_dump(mode="json") == {"subgoals": "generated"}
    fixed = ImageSubgoalSettings(subgoals="ground_truth", similarity_threshold=0.9)
    assert fixed.model_dump(mode="json") == {"subgoals": "ground_truth", "similarity_threshold": 0.9}
    assert ImageSubgoalSettings(**fixed.model_dump()) == fixed
    with pytest.raises(ValidationError, match="similarity_threshold=0.9 and calibration_quantile=0.1"):
        ImageSubgoalSettings(similarity_threshold=0.9, calibration_quantile=0.1)
    for bad in (-1.0, 1.0):
        with pytest.raises(ValidationError, match="similarity_threshold"):
            ImageSubgoalSettings(similarity_threshold=bad)

    monkeypatch.setenv("RELAM_CACHE", str(tmp_path))  # a planted default entry: nothing trains
    model = SubgoalImageModel(FlowSettings(train_steps=SCALE_STEPS["smoke"].flow_steps))
    base = tmp_path / "image_subgoal" / "drawer-open-v3" / components_key("drawer-open-v3", 2, "smoke")
    atomic_torch_save(base / "components.pt", {"model": model.state(), "embedding": TemporalEmbedding().state(),
                                               "threshold": 0.5})

    def ctx(settings):
        return SimpleNamespace(task="drawer-open-v3", budget=SimpleNamespace(n_demos=2), scale="smoke",
                               progress=False, settings=settings)

    calibrated = _components(ctx(ImageSubgoalSettings(subgoals="ground_truth")))
    assert calibrated.similarity_threshold == 0.5
    comp = _components(ctx(fixed))
    assert comp.similarity_threshold == 0.9
    assert _fingerprint(comp.model.state()) == _fingerprint(calibrated.model.state())
    assert _fingerprint(comp.embedding.state()) == _fingerprint(calibrated.embedding.state())


def test_fit_components_recalibrates_at_another_quantile_without_retraining(tmp_path, monkeypatch, drawer_demos):
    """Another quantile reuses the default entry's generator and embedding (no training here: the
    default entry is planted) and caches its own, different threshold under its own key."""
    from baselines.embedding import TemporalEmbedding
    from baselines.image_subgoal import SCALE_STEPS, components_key, fit_components
    from relam.cache import atomic_torch_save

    monkeypatch.setenv("RELAM_CACHE", str(tmp_path))
    model = SubgoalImageModel(FlowSettings(train_steps=SCALE_STEPS["smoke"].flow_steps))
    emb = TemporalEmbedding()
    base = tmp_path / "image_subgoal" / "drawer-open-v3" / components_key("drawer-open-v3", 2, "smoke")
    atomic_torch_save(base / "components.pt", {"model": model.state(), "embedding": emb.state(), "threshold": 0.5})
    assert fit_components("drawer-open-v3", 2, "smoke").similarity_threshold == 0.5  # the planted entry
    comp = fit_components("drawer-open-v3", 2, "smoke", calibration_quantile=0.9)
    expected = calibrate_threshold(ImageSubgoalPlanner(comp.model), comp.embedding, drawer_demos, quantile=0.9)
    assert comp.similarity_threshold == pytest.approx(expected) and comp.similarity_threshold != 0.5
    other = tmp_path / "image_subgoal" / "drawer-open-v3" / components_key("drawer-open-v3", 2, "smoke",
                                                                             calibration_quantile=0.9)
    assert (other / "threshold.json").exists() and not (other / "components.pt").exists()
    assert fit_components("drawer-open-v3", 2, "smoke", calibration_quantile=0.9).similarity_threshold == \
        comp.similarity_threshold


def test_generator_compose_is_a_setting_in_the_keys_and_reuses_the_trained_generator(tmp_path, monkeypatch,
                                                                                      drawer_demos):
    """generator_compose (issue 18 item 3): left out of run and components keys at its default (the
    default key is the one made before the setting existed); "residual" gets its own key, the default
    entry's weights (no retraining) with compose="residual", and a threshold calibrated on its images."""
    from baselines.embedding import TemporalEmbedding
    from baselines.image_subgoal import SCALE_STEPS, ImageSubgoalSettings, components_key, fit_components
    from relam.cache import atomic_torch_save, settings_hash
    from relam.keypoints import KeypointSettings

    assert "generator_compose" not in ImageSubgoalSettings().model_dump()
    assert ImageSubgoalSettings(generator_compose="residual").model_dump()["generator_compose"] == "residual"
    old_parts = {"task": "drawer-open-v3", "n_demos": 2, "flow": dataclasses_asdict_without_compose(
        FlowSettings(train_steps=SCALE_STEPS["smoke"].flow_steps)),
        "embedding": TemporalEmbedding().state()["kwargs"], "embedding_steps": SCALE_STEPS["smoke"].embedding_steps,
        "calibrate_demos": 10, "keypoints": KeypointSettings().to_dict()}
    key = components_key("drawer-open-v3", 2, "smoke")
    assert key == settings_hash(old_parts) == components_key("drawer-open-v3", 2, "smoke", compose="upsample")
    assert components_key("drawer-open-v3", 2, "smoke", compose="residual") != key

    monkeypatch.setenv("RELAM_CACHE", str(tmp_path))
    model = SubgoalImageModel(FlowSettings(train_steps=SCALE_STEPS["smoke"].flow_steps))
    atomic_torch_save(tmp_path / "image_subgoal" / "drawer-open-v3" / key / "components.pt",
                      {"model": model.state(), "embedding": TemporalEmbedding().state(), "threshold": 0.5})
    comp = fit_components("drawer-open-v3", 2, "smoke", compose="residual")
    assert comp.model.settings.compose == "residual"
    for name, w in model.net.state_dict().items():
        torch.testing.assert_close(comp.model.net.state_dict()[name], w)
    expected = calibrate_threshold(ImageSubgoalPlanner(comp.model), comp.embedding, drawer_demos)
    assert comp.similarity_threshold == pytest.approx(expected)
    assert fit_components("drawer-open-v3", 2, "smoke").model.settings.compose == "upsample"  # default untouched


def dataclasses_asdict_without_compose(settings):
    import dataclasses

    d = dataclasses.asdict(settings)
    d.pop("compose")
    return d


def _unit(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([np.cos(a), np.sin(a)])


def test_stages_are_passed_in_order_at_the_threshold():
    """What benchmarks/bench_oracle_threshold.py counts: the reward's stage machine, in order, one
    target at a time, each passed when the similarity reaches the threshold."""
    targets = np.stack([_unit(30), _unit(60)])
    near_both = np.stack([_unit(29), _unit(61)])  # cos 1 deg = 0.99985 to each, in order
    assert stages_passed(near_both, targets, 0.999) == 2
    assert stages_passed(near_both[::-1], targets, 0.999) == 1  # the second first: no credit
    off = np.stack([_unit(40), _unit(70)])  # 10 deg from each: cos = 0.985
    assert stages_passed(off, targets, 0.99) == 0
    assert stages_passed(off, targets, 0.98) == 2
