"""Segmented GAE (A.3), the PPO wiring, the A.3 policy network and train_ppo's outputs."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from relam.rl.evaluation import eval_seeds, evaluate_success
from relam.rl.policies import KeypointImageExtractor, conv_output_size
from relam.rl.ppo import (
    HierarchicalPPO,
    PPOSettings,
    SubgoalRolloutBuffer,
    make_ppo,
    make_vec_env,
    segmented_gae,
    train_ppo,
)

th.set_num_threads(1)


def test_segmented_gae_hand_computed():
    r = np.array([[1.0], [2.0], [3.0]])
    v = np.array([[0.5], [1.0], [1.5]])
    starts = np.zeros((3, 1))
    seg = np.array([[0.0], [1.0], [0.0]])  # a subgoal is reached on transition 1
    adv, ret = segmented_gae(r, v, starts, seg, np.array([2.0]), np.array([False]), 0.5, 0.5)
    # t=2: 3 + .5*2 - 1.5 = 2.5 ; t=1 (cut): 2 - 1 = 1 ; t=0: (1 + .5*1 - .5) + .25*1 = 1.25
    np.testing.assert_allclose(adv[:, 0], [1.25, 1.0, 2.5])
    np.testing.assert_allclose(ret[:, 0], [1.75, 2.0, 4.0])
    # without the cut the chain runs through: A1 = 1.75 + .25*2.5, A0 = 1 + .25*A1
    adv0, _ = segmented_gae(r, v, starts, np.zeros((3, 1)), np.array([2.0]), np.array([False]), 0.5, 0.5)
    np.testing.assert_allclose(adv0[:, 0], [1.0 + 0.25 * 2.375, 2.375, 2.5])
    # an episode end cuts the same way; the last transition uses last_dones
    adv_e, _ = segmented_gae(r, v, np.array([[0.0], [0.0], [1.0]]), np.zeros((3, 1)), np.array([2.0]),
                             np.array([True]), 0.5, 0.5)
    np.testing.assert_allclose(adv_e[:, 0], [1.25, 1.0, 1.5])
    with pytest.raises(ValueError, match="shape"):
        segmented_gae(r, v, starts, seg[:2], np.array([2.0]), np.array([False]), 0.5, 0.5)
    # segment_bootstrap kappa keeps kappa * V(next) at the cut, the chain still cut:
    # t=1: 2 + .5*.5*1.5 - 1 = 1.375 ; t=0: (1 + .5*1 - .5) + .25*1.375
    adv_k, _ = segmented_gae(r, v, starts, seg, np.array([2.0]), np.array([False]), 0.5, 0.5, 0.5)
    np.testing.assert_allclose(adv_k[:, 0], [1.0 + 0.25 * 1.375, 1.375, 2.5])
    with pytest.raises(ValueError, match="segment_bootstrap"):
        PPOSettings(segment_bootstrap=1.5)


class CountEnv(gym.Env):
    """Dict obs like ReLAMWrapper's (points only); a 'subgoal' ends on steps 3 and 7; horizon 10."""

    def __init__(self, image: bool = False):
        spaces = {"keypoints": gym.spaces.Box(-3, 3, (4,), np.float32),
                  "target": gym.spaces.Box(-3, 3, (4,), np.float32)}
        if image:
            spaces["image"] = gym.spaces.Box(0, 255, (3, 32, 32), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.t = 0

    def _obs(self):
        o = {"keypoints": np.full(4, self.t / 10, np.float32), "target": np.zeros(4, np.float32)}
        if "image" in self.observation_space.spaces:
            o["image"] = np.full((3, 32, 32), self.t * 10, np.uint8)
        return o

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {"stage": 0}

    def step(self, action):
        self.t += 1
        reached = self.t in (3, 7)
        info = {"subgoal_reached": reached, "stage": int(self.t >= 3) + int(self.t >= 7),
                "success": self.t >= 7 and float(np.asarray(action)[0]) > 0.9}
        return self._obs(), float(action[0]), False, self.t >= 10, info


def test_buffer_records_subgoal_ends_and_cuts_gae():
    settings = PPOSettings(n_steps=24, batch_size=8, n_epochs=1, reward_scaling=False)
    model = make_ppo(make_vec_env(lambda s: CountEnv(), 0, settings), settings, seed=0)
    model.learn(24)
    buf = model.rollout_buffer
    assert isinstance(buf, SubgoalRolloutBuffer) and buf.cut_segments
    # steps (1-based within each 10-step episode) 3 and 7 are transitions 2, 6, 12, 16, 22
    np.testing.assert_array_equal(np.flatnonzero(buf.segment_ends[:, 0]), [2, 6, 12, 16, 22])
    # the stored advantages are the segmented GAE of the stored arrays; thanks to the cut on
    # transition 22, transitions 0..22 do not depend on the bootstrap value after the rollout
    # (which the policy update has since changed), so any last value gives the same numbers there
    for last_v in (0.0, 100.0):
        adv, _ = segmented_gae(buf.rewards, buf.values, buf.episode_starts, buf.segment_ends,
                               np.array([last_v]), np.array([False]), 0.99, 0.95)
        np.testing.assert_allclose(buf.advantages[:23], adv[:23], rtol=1e-5, atol=1e-5)


def test_segment_gae_switch_off_gives_plain_gae():
    settings = PPOSettings(n_steps=10, batch_size=5, n_epochs=1, reward_scaling=False, segment_gae=False)
    model = make_ppo(make_vec_env(lambda s: CountEnv(), 0, settings), settings, seed=0)
    model.learn(10)
    assert not model.rollout_buffer.cut_segments


def test_extractor_shapes_and_errors():
    env = CountEnv(image=True)
    ext = KeypointImageExtractor(env.observation_space, cnn_channels=(8, 8, 8), cnn_kernels=(4, 3, 3),
                                 cnn_strides=(2, 1, 1), image_dim=32, point_hidden=(16,))
    assert ext.features_dim == 48
    obs = {k: th.as_tensor(v[None], dtype=th.float32) for k, v in env._obs().items()}
    assert ext(obs).shape == (1, 48)
    pts_only = KeypointImageExtractor(CountEnv().observation_space, point_hidden=(16, 8))
    assert pts_only.cnn is None and pts_only.features_dim == 8
    assert conv_output_size(64, (8, 4, 3), (4, 2, 1)) == 4
    with pytest.raises(ValueError, match="policy_image_size"):
        conv_output_size(8, (8, 4, 3), (4, 2, 1))


def test_same_seed_same_training():
    settings = PPOSettings(n_steps=20, batch_size=10, n_epochs=2, cnn_channels=(4, 4, 4),
                           cnn_kernels=(4, 3, 3), cnn_strides=(2, 1, 1), image_dim=16,
                           point_hidden=(16,), net_arch=(16,))

    def run(seed):
        model = make_ppo(make_vec_env(lambda s: CountEnv(image=True), seed, settings), settings, seed=seed)
        model.learn(40)
        return th.cat([p.detach().ravel() for p in model.policy.parameters()])

    a, b, c = run(1), run(1), run(2)
    assert th.equal(a, b) and not th.equal(a, c)


def test_evaluate_success_any_step():
    env = CountEnv()
    res = evaluate_success(lambda obs: np.array([1.0, 0.0]), env, eval_seeds(3))
    assert res.success_rate == 1.0 and res.lengths == [10, 10, 10] and res.stages == [2, 2, 2]
    res = evaluate_success(lambda obs: np.array([0.0, 0.0]), env, eval_seeds(2))
    assert res.success_rate == 0.0
    assert eval_seeds(2) == [1_000_000, 1_000_001]


def test_train_ppo_writes_outputs_and_resumes(tmp_path):
    settings = PPOSettings(n_steps=20, batch_size=10, n_epochs=1, point_hidden=(8,), net_arch=(8,))
    res = train_ppo(lambda s: CountEnv(), settings, tmp_path, total_steps=40, eval_every=20,
                    eval_episodes=2, seed=0, progress=False)
    assert [s for s, _ in res.curve] == [0, 20, 40]
    assert res.success == res.curve[-1][1]
    for name in ("checkpoint.zip", "state.json", "eval.csv", "train.csv", "curve.png"):
        assert (tmp_path / name).stat().st_size > 0
    # resuming continues from the checkpoint and keeps the curve, also from a checkpoint written
    # before checkpoints kept what replays the environments (no "resume" entry)
    state = json.loads((tmp_path / "state.json").read_text())
    del state["resume"], state["exact"]
    (tmp_path / "state.json").write_text(json.dumps(state))
    res2 = train_ppo(lambda s: CountEnv(), settings, tmp_path, total_steps=60, eval_every=20,
                     eval_episodes=2, seed=0, progress=False)
    assert [s for s, _ in res2.curve] == [0, 20, 40, 60]
    assert isinstance(HierarchicalPPO.load(tmp_path / "checkpoint.zip"), HierarchicalPPO)


def test_image_only_observation_and_extra_callbacks(tmp_path):
    from stable_baselines3.common.callbacks import BaseCallback

    class ImageOnly(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = gym.spaces.Dict({"image": env.observation_space["image"]})

        def observation(self, obs):
            return {"image": obs["image"]}

    class Count(BaseCallback):
        n = 0

        def _on_step(self):
            return True

        def _on_rollout_end(self):
            Count.n += 1

    with pytest.raises(ValueError, match="keypoints"):
        KeypointImageExtractor(gym.spaces.Dict({"keypoints": gym.spaces.Box(-1, 1, (4,))}))
    settings = PPOSettings(n_steps=20, batch_size=10, n_epochs=1, cnn_channels=(4, 4, 4),
                           cnn_kernels=(4, 3, 3), cnn_strides=(2, 1, 1), image_dim=8, net_arch=(8,))
    res = train_ppo(lambda s: ImageOnly(CountEnv(image=True)), settings, tmp_path, total_steps=40,
                    eval_every=40, eval_episodes=1, seed=0, progress=False, callbacks=[Count()])
    assert Count.n == 2 and [s for s, _ in res.curve] == [0, 40]


def test_train_log_keeps_a_batched_reward_models_rollout_mean(tmp_path):
    """DACfO / Diffusion Reward episodes return a placeholder 0; their curve shows the model's reward."""
    import csv

    from stable_baselines3.common.callbacks import BaseCallback

    from relam.rl.evaluation import _training_signal
    from relam.rl.ppo import MODEL_REWARD_KEY

    class FakeModelReward(BaseCallback):
        k = 0

        def _on_step(self):
            return True

        def _on_rollout_end(self):
            FakeModelReward.k += 1
            self.logger.record(MODEL_REWARD_KEY, 0.25 * FakeModelReward.k)

    settings = PPOSettings(n_steps=20, batch_size=10, n_epochs=1, point_hidden=(8,), net_arch=(8,))
    train_ppo(lambda s: CountEnv(), settings, tmp_path, total_steps=60, eval_every=60, eval_episodes=1,
              seed=0, progress=False, callbacks=[FakeModelReward()])
    rows = list(csv.DictReader((tmp_path / "train.csv").open()))
    assert [float(r["model_reward_mean"]) for r in rows] == [0.25, 0.5, 0.75]
    label, steps, vals = _training_signal(rows)
    assert label.startswith("reward model") and steps == [20, 40, 60] and vals == [0.25, 0.5, 0.75]
    # without a reward model the column is empty/NaN and the episode return is the signal
    plain = [{"step": 20, "ep_return_mean": -3.0, "model_reward_mean": float("nan")}]
    assert _training_signal(plain)[0] == "training episode return"
    assert _training_signal([{"step": 20, "ep_return_mean": 0.0, "model_reward_mean": ""}]) is None


class SeedEnv(gym.Env):
    """Episodes that depend on their seed alone: length 3 + seed % 5, observations from the seed."""

    observation_space = gym.spaces.Dict({"keypoints": gym.spaces.Box(-3, 3, (4,), np.float32),
                                         "target": gym.spaces.Box(-3, 3, (4,), np.float32)})
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.rng, self.t, self.len = np.random.default_rng(seed), 0, 3 + int(seed) % 5
        return self._obs(), {"stage": 0}

    def _obs(self):
        x = self.rng.uniform(-1, 1, 4).astype(np.float32)
        return {"keypoints": x, "target": -x}

    def step(self, action):
        self.t += 1
        done = self.t >= self.len
        return self._obs(), float(action[0]), False, done, {"stage": self.t, "success": done and action[1] > 0}


def test_batched_evaluation_plays_the_same_episodes_as_the_sequential_one():
    settings = PPOSettings(n_steps=16, batch_size=8, n_epochs=1, reward_scaling=False)
    model = make_ppo(make_vec_env(lambda s: SeedEnv(), 0, settings), settings, seed=3)
    seeds = eval_seeds(7)
    seen: dict[str, dict[int, list]] = {"one": {}, "many": {}}

    def observer(name):
        def observe(env, seed, steps, info, done):
            assert isinstance(env, SeedEnv) and env.t == steps
            seen[name].setdefault(seed, []).append((steps, info.get("stage"), done))
        return observe

    one = evaluate_success(model, SeedEnv(), seeds, observe=observer("one"))
    many = evaluate_success(model, [SeedEnv() for _ in range(3)], seeds, observe=observer("many"))
    assert many.seeds == one.seeds and many.lengths == one.lengths and many.stages == one.stages
    assert many.successes == one.successes
    np.testing.assert_allclose(many.returns, one.returns, rtol=1e-5)
    assert one.lengths == [3 + s % 5 for s in seeds]
    # the observer sees each episode's reset and every step, the last one marked done, either way
    assert seen["one"] == seen["many"] and sorted(seen["one"]) == seeds
    for s, n in zip(seeds, one.lengths):
        assert seen["one"][s] == [(0, 0, False)] + [(t, t, t == n) for t in range(1, n + 1)]


def test_a_damaged_checkpoint_is_quarantined_and_the_run_starts_over(tmp_path, caplog):
    settings = PPOSettings(n_steps=20, batch_size=10, n_epochs=1, point_hidden=(8,), net_arch=(8,))
    train_ppo(lambda s: CountEnv(), settings, tmp_path, total_steps=40, eval_every=20, eval_episodes=1, seed=0,
              progress=False)
    ckpt = tmp_path / "checkpoint.zip"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # cut short, as by a full disk or a kill mid-copy
    with caplog.at_level("WARNING"):
        res = train_ppo(lambda s: CountEnv(), settings, tmp_path, total_steps=60, eval_every=20, eval_episodes=1,
                        seed=0, progress=False)
    assert res.metrics["env_steps"] == 60 and [s for s, _ in res.curve] == [0, 20, 40, 60]
    moved = sorted(p.name for p in (tmp_path / "quarantine").iterdir())
    assert len(moved) == 2 and moved[0].startswith("checkpoint") and moved[1].startswith("state")
    assert "checkpoint.zip is damaged" in caplog.text and "starts over" in caplog.text


def test_linear_lr_schedule_anneals_to_zero_over_the_total_and_survives_a_resume(tmp_path):
    settings = PPOSettings(n_steps=20, batch_size=10, n_epochs=1, point_hidden=(8,), net_arch=(8,),
                           learning_rate=1e-3, lr_schedule="linear")
    train_ppo(lambda s: CountEnv(), settings, tmp_path, total_steps=40, eval_every=20,
              eval_episodes=1, seed=0, progress=False)
    model = HierarchicalPPO.load(tmp_path / "checkpoint.zip")
    assert model.lr_schedule(1.0) == pytest.approx(1e-3) and model.lr_schedule(0.5) == pytest.approx(5e-4)
    # SB3 sets the rate before each update from the steps done: 40 of 40 before the last one
    assert model.policy.optimizer.param_groups[0]["lr"] == 0.0
    # a resumed run keeps its schedule (read from the checkpoint) and the total it anneals over
    train_ppo(lambda s: CountEnv(), settings, tmp_path, total_steps=60, eval_every=20,
              eval_episodes=1, seed=0, progress=False)
    assert HierarchicalPPO.load(tmp_path / "checkpoint.zip").lr_schedule(0.0) == 0.0
    constant = make_ppo(make_vec_env(lambda s: CountEnv(), 0, PPOSettings(n_steps=20, batch_size=10)),
                        PPOSettings(n_steps=20, batch_size=10))
    assert constant.lr_schedule(0.0) == constant.lr_schedule(1.0) == 3e-4
    with pytest.raises(ValueError, match="lr_schedule"):
        PPOSettings(lr_schedule="cosine")


def test_the_final_evaluation_scores_the_saved_policy(tmp_path):
    """The last curve point is the checkpoint's policy, not the one before the last update."""
    import csv

    settings = PPOSettings(n_steps=20, batch_size=10, n_epochs=4, point_hidden=(8,), net_arch=(8,),
                           learning_rate=3e-2)
    res = train_ppo(lambda s: CountEnv(), settings, tmp_path, total_steps=40, eval_every=20,
                    eval_episodes=2, seed=0, progress=False)
    assert [s for s, _ in res.curve] == [0, 20, 40]
    with open(tmp_path / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    saved = evaluate_success(HierarchicalPPO.load(tmp_path / "checkpoint.zip"), CountEnv(), eval_seeds(2))
    assert float(rows[-1]["mean_return"]) == pytest.approx(np.mean(saved.returns), abs=1e-9)
    # ... and an update did happen after the evaluation at 20 (so the check above can fail)
    assert float(rows[-2]["mean_return"]) != pytest.approx(float(rows[-1]["mean_return"]), abs=1e-9)


def test_target_kl_stops_an_updates_epochs_and_train_csv_logs_each_update(tmp_path):
    """``target_kl`` reaches SB3 and cuts the epochs of an update; ``train.csv`` carries the update's
    approximate KL (what to choose it from) on every rollout after the first."""
    import csv

    small = dict(n_steps=20, batch_size=10, n_epochs=8, point_hidden=(8,), net_arch=(8,), learning_rate=3e-2)
    with pytest.raises(ValueError, match="target_kl"):
        PPOSettings(target_kl=0.0)
    epochs = {}
    for name, kl in (("free", None), ("bounded", 1e-9)):
        train_ppo(lambda s: CountEnv(), PPOSettings(**small, target_kl=kl), tmp_path / name, total_steps=60,
                  eval_every=60, eval_episodes=1, seed=0, progress=False)
        model = HierarchicalPPO.load(tmp_path / name / "checkpoint.zip")
        assert model.target_kl == kl
        epochs[name] = model._n_updates
        rows = list(csv.DictReader((tmp_path / name / "train.csv").open()))
        assert rows[0]["ppo_approx_kl"] == "" and all(float(r["ppo_approx_kl"]) >= 0 for r in rows[1:])
        assert all(0 < float(r["ppo_std"]) for r in rows[1:])
    assert epochs["free"] == 3 * 8 and epochs["bounded"] < epochs["free"]


def test_segment_bootstrap_reaches_the_rollout_buffer_and_a_resumed_model(tmp_path):
    settings = PPOSettings(n_steps=20, batch_size=10, n_epochs=1, point_hidden=(8,), net_arch=(8,),
                           segment_bootstrap=0.5)
    model = make_ppo(make_vec_env(lambda s: CountEnv(), 0, settings), settings, seed=0)
    assert model.rollout_buffer.segment_bootstrap == 0.5
    model.save(tmp_path / "m.zip")
    loaded = HierarchicalPPO.load(tmp_path / "m.zip", env=make_vec_env(lambda s: CountEnv(), 0, settings))
    assert loaded.rollout_buffer.segment_bootstrap == 0.5
    plain = make_ppo(make_vec_env(lambda s: CountEnv(), 0, PPOSettings(n_steps=20, batch_size=10)),
                     PPOSettings(n_steps=20, batch_size=10))
    assert plain.rollout_buffer.segment_bootstrap == 0.0


def test_gsde_reaches_sb3_and_a_resumed_model(tmp_path):
    """``use_sde`` gives SB3's state-dependent noise (its exploration matrix, redrawn every
    ``sde_sample_freq`` steps) to the model that trains and to the one a resumed run loads."""
    small = dict(n_steps=20, batch_size=10, n_epochs=1, point_hidden=(8,), net_arch=(8,))
    settings = PPOSettings(**small, use_sde=True, sde_sample_freq=4, log_std_init=-1.0)
    train_ppo(lambda s: CountEnv(), settings, tmp_path, total_steps=40, eval_every=40, eval_episodes=1,
              seed=0, progress=False)
    model = HierarchicalPPO.load(tmp_path / "checkpoint.zip")
    assert model.use_sde and model.sde_sample_freq == 4
    # the noise's log std is a (latent x action) matrix under gSDE, a vector without it
    assert model.policy.log_std.shape == (8, 2)
    plain = make_ppo(make_vec_env(lambda s: CountEnv(), 0, PPOSettings(**small)), PPOSettings(**small))
    assert not plain.use_sde and plain.policy.log_std.shape == (2,)


def test_separate_features_extractors_reach_sb3_and_a_resumed_model(tmp_path):
    """``share_features_extractor=False`` gives the actor and the critic their own extractor, so the
    critic's loss no longer moves the features the actor reads; a resumed run loads the same layout."""
    small = dict(n_steps=20, batch_size=10, n_epochs=2, point_hidden=(8,), net_arch=(8,), learning_rate=1e-2)
    settings = PPOSettings(**small, share_features_extractor=False)
    model = make_ppo(make_vec_env(lambda s: CountEnv(), 0, settings), settings, seed=0)
    policy = model.policy
    assert not policy.share_features_extractor
    assert policy.pi_features_extractor is not policy.vf_features_extractor
    # the critic's gradient stops at its own extractor: the actor's stays untouched by the value loss
    env = CountEnv()
    env.reset()
    obs = {k: th.as_tensor(np.stack([v] * 3)) for k, v in env.step(np.zeros(2, np.float32))[0].items()}
    policy.zero_grad()
    policy.predict_values(obs).sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in policy.pi_features_extractor.parameters())
    assert any(p.grad is not None and p.grad.any() for p in policy.vf_features_extractor.parameters())
    train_ppo(lambda s: CountEnv(), settings, tmp_path, total_steps=40, eval_every=40, eval_episodes=1,
              seed=0, progress=False)
    assert not HierarchicalPPO.load(tmp_path / "checkpoint.zip").policy.share_features_extractor
    shared = make_ppo(make_vec_env(lambda s: CountEnv(), 0, PPOSettings(**small)), PPOSettings(**small))
    assert shared.policy.share_features_extractor


class _ShiftedCountEnv(CountEnv):
    """CountEnv whose keypoints and reward are shifted by a per-episode offset."""

    offset = 0.0

    def _obs(self):
        o = super()._obs()
        o["keypoints"] = o["keypoints"] + np.float32(self.offset)
        return o

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        return obs, r - abs(float(action[1]) - self.offset), term, trunc, info


def _seeded_count_env(seed: int) -> gym.Env:
    """A ShiftedCountEnv whose offsets come from seeded episodes, as ReLAMWrapper's starts do."""
    from relam.wrappers import SeededEpisodes

    class Seeded(SeededEpisodes, gym.Wrapper):
        planner = None

        def __init__(self):
            super().__init__(_ShiftedCountEnv())
            self._seed_rng = np.random.default_rng(seed)

        def reset(self, *, seed=None, options=None):
            episode = self._next_episode_seed(seed)
            self.env.unwrapped.offset = float(np.random.default_rng(episode).uniform(-1, 1))
            return self.env.reset(seed=episode, options=options)

    return Seeded()


def _params(folder):
    """A saved run's policy parameters, flattened (to compare two runs' ends)."""
    return th.cat([p.detach().ravel() for p in HierarchicalPPO.load(folder / "checkpoint.zip").policy.parameters()])


def _log(folder, name):
    """A run's train.csv / eval.csv rows without their wall times."""
    import csv

    with open(folder / name) as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


def test_a_resumed_run_retraces_the_uninterrupted_one(tmp_path, monkeypatch, caplog):
    """Interrupted after an evaluation, with its environments in mid-episode, and resumed, a run
    ends with the parameters, curve and training log of the run that was not interrupted
    (relam.rl.resume); without the episode replay it does not, and says so."""

    from stable_baselines3.common.callbacks import BaseCallback

    import relam.rl.resume as resume

    class Interrupt(BaseCallback):
        def _on_step(self):
            if self.num_timesteps >= 40:
                raise RuntimeError("interrupted")
            return True

    # 2 envs x 8 steps a rollout, 10-step episodes: the checkpoint at 32 finds them at step 6
    settings = PPOSettings(n_steps=16, batch_size=8, n_epochs=2, n_envs=2, point_hidden=(8,), net_arch=(8,),
                           lr_schedule="linear")
    kw = dict(total_steps=80, eval_every=16, eval_episodes=2, seed=3, progress=False)

    whole = train_ppo(_seeded_count_env, settings, tmp_path / "whole", **kw)
    results = {}
    for variant in ("replayed", "not replayed"):
        cut = tmp_path / variant
        with pytest.raises(RuntimeError, match="interrupted"):
            train_ppo(_seeded_count_env, settings, cut, callbacks=[Interrupt()], **kw)
        state = json.loads((cut / "state.json").read_text())
        assert state["num_timesteps"] == 32 and state["exact"]  # saved after the update at 32
        assert [len(e["actions"]) for e in state["resume"]["envs"]] == [6, 6]
        if variant == "not replayed":
            monkeypatch.setattr(resume, "restore_envs", lambda state, venv: None)
            monkeypatch.setattr("relam.rl.ppo.restore_envs", lambda state, venv: None)
        caplog.clear()
        results[variant] = (train_ppo(_seeded_count_env, settings, cut, **kw), cut)
        assert ("leaves the uninterrupted one's path" in caplog.text) == (variant == "not replayed")
    res, cut = results["replayed"]
    assert res.curve == whole.curve and th.equal(_params(cut), _params(tmp_path / "whole"))
    # the records count the resumes, and the ones that left the path
    assert (whole.metrics["resumes"], res.metrics["resumes"], res.metrics["inexact_resumes"]) == (0, 1, 0)
    assert results["not replayed"][0].metrics["inexact_resumes"] == 1
    assert _log(cut, "train.csv") == _log(tmp_path / "whole", "train.csv")
    assert _log(cut, "eval.csv") == _log(tmp_path / "whole", "eval.csv")
    _, other = results["not replayed"]
    assert not th.equal(_params(other), _params(tmp_path / "whole"))


def test_a_run_stopped_before_its_first_update_resumes_as_a_fresh_start(tmp_path):
    """Interrupted before its first checkpoint after an update, a run resumes from its step-0
    checkpoint (taken before any environment was reset) and ends where an uninterrupted run ends;
    measured before the fix: the resume failed (no episode to replay)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Interrupt(BaseCallback):
        def _on_step(self):
            if self.num_timesteps >= 8:
                raise RuntimeError("interrupted")
            return True

    settings = PPOSettings(n_steps=16, batch_size=8, n_epochs=2, n_envs=2, point_hidden=(8,), net_arch=(8,))
    kw = dict(total_steps=48, eval_every=16, eval_episodes=2, seed=3, progress=False)
    whole = train_ppo(_seeded_count_env, settings, tmp_path / "whole", **kw)
    with pytest.raises(RuntimeError, match="interrupted"):
        train_ppo(_seeded_count_env, settings, tmp_path / "cut", callbacks=[Interrupt()], **kw)
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert state["num_timesteps"] == 0 and state["exact"] and state["resume"]["envs"] is None
    res = train_ppo(_seeded_count_env, settings, tmp_path / "cut", **kw)
    assert res.curve == whole.curve and (res.metrics["resumes"], res.metrics["inexact_resumes"]) == (1, 0)
    params = [th.cat([p.detach().ravel() for p in HierarchicalPPO.load(d / "checkpoint.zip").policy.parameters()])
              for d in (tmp_path / "whole", tmp_path / "cut")]
    assert th.equal(*params)


def test_an_extended_constant_rate_run_retraces_the_longer_uninterrupted_one(tmp_path):
    """What `relam extend` relies on (relam.experiments.extend): a finished run's folder, trained on
    to a larger total with a constant learning rate, ends with the parameters and training log of the
    run that had the larger total from the start; only the shorter run's final evaluation (taken after
    its last update, on the saved policy) differs from the longer run's evaluation at that step."""
    import dataclasses
    import shutil

    settings = PPOSettings(n_steps=16, batch_size=8, n_epochs=2, n_envs=2, point_hidden=(8,), net_arch=(8,))
    kw = dict(eval_every=16, eval_episodes=2, seed=3, progress=False)

    whole = train_ppo(_seeded_count_env, settings, tmp_path / "whole", total_steps=80, **kw)
    train_ppo(_seeded_count_env, settings, tmp_path / "short", total_steps=32, **kw)
    shutil.copytree(tmp_path / "short", tmp_path / "extended")
    ext = train_ppo(_seeded_count_env, settings, tmp_path / "extended", total_steps=80, **kw)
    assert th.equal(_params(tmp_path / "extended"), _params(tmp_path / "whole"))
    assert _log(tmp_path / "extended", "train.csv") == _log(tmp_path / "whole", "train.csv")
    evals = _log(tmp_path / "extended", "eval.csv"), _log(tmp_path / "whole", "eval.csv")
    assert [r["step"] for r in evals[0]] == [r["step"] for r in evals[1]] == ["0", "16", "32", "48", "64", "80"]
    assert [a == b for a, b in zip(*evals)] == [True, True, False, True, True, True]
    assert ext.curve[-1] == whole.curve[-1] and (ext.metrics["resumes"], ext.metrics["inexact_resumes"]) == (1, 0)
    # with a learning rate annealed over the total it would not (the reason extend refuses it)
    linear = dataclasses.replace(settings, lr_schedule="linear")
    train_ppo(_seeded_count_env, linear, tmp_path / "lin_short", total_steps=32, **kw)
    train_ppo(_seeded_count_env, linear, tmp_path / "lin_whole", total_steps=80, **kw)
    shutil.copytree(tmp_path / "lin_short", tmp_path / "lin_ext")
    train_ppo(_seeded_count_env, linear, tmp_path / "lin_ext", total_steps=80, **kw)
    assert not th.equal(_params(tmp_path / "lin_ext"), _params(tmp_path / "lin_whole"))
