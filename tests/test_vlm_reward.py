"""VLM-style reward baseline: the three terms, the learned backend, the held reward, BC, clear errors."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from baselines.vlm_models import (LearnedRewardConfig, LearnedRewardModel, RewardTerms, VLMRewardModel,
                                  VLMWeightsMissing, combine_terms, direction_from_logits, pair_directions,
                                  parse_completion, parse_direction, parse_progress)
from baselines.vlm_reward import HeldModelReward, PolicyImage, StopOnSuccess, VLMRewardSettings
from baselines.vlm_training import _freeze_actor, _make_refine_ppo, _ppo_settings, behaviour_cloning, make_reward_model
from relam.methods import Budget, MethodNotImplementedError, RunContext, get_method


# ------------------------------------------------------------------ pure pieces (known answers)


def test_combine_terms_is_the_mean_and_checks_ranges():
    np.testing.assert_allclose(combine_terms([1, -1, 0, 1], [0.5, 0.0, 0.25, 1.0], [0, 0, 1, 1]),
                               [0.5, -1 / 3, 1.25 / 3, 1.0])
    with pytest.raises(ValueError, match="temporal"):
        combine_terms([0.5], [0.5], [0])
    with pytest.raises(ValueError, match="progress"):
        combine_terms([1], [1.2], [0])
    with pytest.raises(ValueError, match="completion"):
        combine_terms([1], [0.2], [0.5])


def test_direction_from_logits_maps_away_none_toward():
    z = np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(direction_from_logits(z), [-1, 0, 1])
    with pytest.raises(ValueError, match="N, 3"):
        direction_from_logits(np.zeros((2, 2)))


def test_parse_vlm_answers():
    assert parse_direction("Toward.") == 1
    assert parse_direction("It moved away from the goal") == -1
    assert parse_direction("none") == 0
    assert parse_direction("No change at all") == 0
    assert parse_direction("I cannot tell") == 0
    assert parse_progress("75") == 0.75
    assert parse_progress("about 0.4 done") == 0.4
    assert parse_progress("150%") == 1.0
    assert parse_progress("no idea") == 0.0
    assert parse_completion("Yes, the drawer is open.") == 1.0
    assert parse_completion("No.") == 0.0


# ------------------------------------------------------------------ the learned backend


@pytest.fixture(scope="module")
def trained(videos):
    """A tiny reward model on 3 drawer-open demos + 2 random-action videos (conftest's ``videos``)."""
    torch.manual_seed(0)
    train, held, rand_train, rand_held = videos
    model = LearnedRewardModel(LearnedRewardConfig(steps=300, batch=32, seed=0))
    model.fit(train, rand_train)
    return model, held, rand_held


def test_temporal_term_signs_on_held_out_expert_pairs(trained):
    model, held, _ = trained
    d = [pair_directions(model, v, gap=10) for v in held]
    fwd = np.concatenate([x["forward"] for x in d])
    rev = np.concatenate([x["reversed"] for x in d])
    static = np.concatenate([x["static"] for x in d])
    for arr in (fwd, rev, static):
        assert set(np.unique(arr)) <= {-1.0, 0.0, 1.0}
    assert fwd.mean() > 0.8, f"forward pairs should score +1 on average, got {fwd.mean():.2f}"
    assert rev.mean() < -0.8, f"reversed pairs should score -1 on average, got {rev.mean():.2f}"
    assert np.mean(static == 0) > 0.8, "a frame compared with itself should score 0"


def test_progress_and_completion_terms_on_expert_and_random_frames(trained):
    model, held, rand = trained
    first = model.terms(np.stack([v[1] for v in held]), np.stack([v[0] for v in held]), np.stack([v[0] for v in held]))
    last = model.terms(np.stack([v[-1] for v in held]), np.stack([v[-11] for v in held]),
                       np.stack([v[0] for v in held]))
    assert ((first.progress >= 0) & (first.progress <= 1)).all() and ((last.progress >= 0) & (last.progress <= 1)).all()
    assert first.progress.max() < 0.2 and last.progress.min() > 0.8
    np.testing.assert_array_equal(first.completion, 0.0)
    np.testing.assert_array_equal(last.completion, 1.0)
    assert last.reward.min() > 0.9  # moved toward the goal, done and complete: close to the maximum 1
    r = model.terms(np.concatenate([v[1:] for v in rand]), np.concatenate([v[:-1] for v in rand]),
                    np.concatenate([np.repeat(v[:1], len(v) - 1, 0) for v in rand]))
    assert r.progress.mean() < 0.2 and r.completion.mean() < 0.1
    assert (r.reward >= -1 / 3).all() and (r.reward <= 1).all()
    assert r.reward.mean() < 0.2 < last.reward.mean()


def test_learned_model_save_load_gives_the_same_terms(trained, tmp_path):
    model, held, _ = trained
    model.save(tmp_path / "m.pt")
    again = LearnedRewardModel.load(tmp_path / "m.pt")
    a = model.terms(held[0][5:8], held[0][:3], held[0][:3])
    b = again.terms(held[0][5:8], held[0][:3], held[0][:3])
    np.testing.assert_array_equal(a.temporal, b.temporal)
    np.testing.assert_allclose(a.progress, b.progress)


# ------------------------------------------------------------------ the held reward


class _CountingModel:
    """Fake reward model: progress = (number of calls so far) / 100, and it records its inputs."""

    def __init__(self):
        self.calls: list[tuple[int, int, int]] = []

    def terms(self, current, previous, initial):
        self.calls.append((int(current[0, 0, 0, 0]), int(previous[0, 0, 0, 0]), int(initial[0, 0, 0, 0])))
        return RewardTerms(np.zeros(1), np.array([len(self.calls) / 100.0]), np.zeros(1))


class _TickEnv(gym.Env):
    """Frames whose pixels hold the step count; reward 100 always (must be ignored)."""

    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    action_space = gym.spaces.Box(-1, 1, (4,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros((8, 8, 3), np.uint8), {}

    def step(self, action):
        self.t += 1
        return np.full((8, 8, 3), self.t, np.uint8), 100.0, False, self.t >= 35, {"success": self.t == 30}


def test_held_reward_is_constant_between_queries_and_changes_at_each_query():
    model = _CountingModel()
    env = HeldModelReward(_TickEnv(), model, query_every=10)
    env.reset()
    rewards, queried, infos = [], [], []
    for _ in range(35):
        _, r, _, _, info = env.step(np.zeros(4))
        rewards.append(r)
        queried.append(info["reward_queried"])
        infos.append(info)
    assert [i + 1 for i, q in enumerate(queried) if q] == [1, 11, 21, 31]
    for start in (0, 10, 20):
        assert len(set(rewards[start:start + 10])) == 1, "the reward must be held for 10 steps"
    assert rewards[9] != rewards[10] != rewards[20] != rewards[30]
    np.testing.assert_allclose(rewards[0], (0 + 0.01 + 0) / 3)  # the env's 100 is ignored
    assert all(i["env_reward"] == 100.0 for i in infos)
    # current frame, previous *queried* frame (the initial one first), initial frame
    assert model.calls == [(1, 0, 0), (11, 1, 0), (21, 11, 0), (31, 21, 0)]
    env.reset()  # a new episode starts from the new initial frame and step count
    env.step(np.zeros(4))
    assert model.calls[-1] == (1, 0, 0)
    with pytest.raises(ValueError, match="query_every"):
        HeldModelReward(_TickEnv(), model, query_every=0)


def test_stop_on_success_and_policy_image_wrappers():
    env = PolicyImage(StopOnSuccess(_TickEnv()))
    obs, _ = env.reset()
    assert obs["image"].shape == (3, 64, 64) and obs["image"].dtype == np.uint8
    steps, terminated = 0, False
    while not terminated:
        _, _, terminated, _, info = env.step(np.zeros(4))
        steps += 1
    assert steps == 30 and info["success"]


# ------------------------------------------------------------------ behaviour cloning


class _ImageEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
    action_space = gym.spaces.Box(-1, 1, (4,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros((8, 8, 3), np.uint8), {}

    def step(self, action):
        return np.zeros((8, 8, 3), np.uint8), 0.0, False, True, {}


def test_behaviour_cloning_trains_the_ppo_actor_only():
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: PolicyImage(_ImageEnv())])
    model = _make_refine_ppo(venv, _ppo_settings(Budget(train_steps=64, eval_every=64, eval_episodes=1)), seed=0)
    rng = np.random.default_rng(0)
    level = rng.uniform(0, 1, 48)  # image brightness -> action, a function BC must learn
    images = np.repeat((level * 255).astype(np.uint8)[:, None, None, None], 3, 1) * np.ones((1, 1, 64, 64), np.uint8)
    actions = np.stack([2 * level - 1, 1 - 2 * level, 0.5 * level, -0.5 * np.ones_like(level)], 1).astype(np.float32)
    critic = {k: v.clone() for k, v in model.policy.state_dict().items()
              if k.startswith(("vf_features_extractor", "value_net", "mlp_extractor.value"))}
    losses = behaviour_cloning(model.policy, images, actions, steps=150, batch=16, lr=1e-3, shift=0, seed=0)
    assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:10])
    pred, _ = model.predict({"image": images[:8]}, deterministic=True)
    assert np.abs(pred - actions[:8]).mean() < 0.15
    for k, v in model.policy.state_dict().items():
        if k in critic:
            torch.testing.assert_close(v, critic[k], msg=f"BC must not touch the critic ({k})")
    _freeze_actor(model.policy, True)  # critic warm-up: only the critic's parameters train
    trainable = {n for n, p in model.policy.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("vf_features_extractor", "value_net", "mlp_extractor.value"))
                             for n in trainable)
    _freeze_actor(model.policy, False)
    assert all(p.requires_grad for p in model.policy.parameters())


# ------------------------------------------------------------------ settings and clear errors


def test_missing_vlm_weights_name_the_setting_and_the_fix(tmp_path):
    with pytest.raises(VLMWeightsMissing, match="model_path.*backend: learned"):
        VLMRewardModel(None, "drawer-open-v3")
    with pytest.raises(VLMWeightsMissing, match=r"model_path='.*nowhere'.*backend: learned"):
        VLMRewardModel(str(tmp_path / "nowhere"), "drawer-open-v3")
    with pytest.raises(VLMWeightsMissing, match="model_path"):
        make_reward_model(VLMRewardSettings(backend="vlm"), "drawer-open-v3", n_demos=3, scale="smoke")


def test_settings_validation_and_maniskill_not_implemented(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="query_every"):
        VLMRewardSettings(query_every=0)
    with pytest.raises(ValidationError, match="backend"):
        VLMRewardSettings(backend="gpt")
    ctx = RunContext(task="PushCube-v1", method="vlm_reward", settings=VLMRewardSettings(), seed=0,
                     budget=Budget(train_steps=10, eval_every=5, eval_episodes=1), scale="smoke", out_dir=tmp_path)
    with pytest.raises(MethodNotImplementedError, match="Meta-World"):
        get_method("vlm_reward").run(ctx)
