"""Online PPO settings a spec sets: policy input, parallel environments, exploration std.

They live in the budget (so they are part of every run key) and reach every online method through
``RunContext.ppo_settings``, which keeps appendix C's 2000-step rollout split between the envs.
"""
from __future__ import annotations

import copy
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

from relam.experiments import SpecError, load_spec
from relam.methods import Budget, RunContext, policy_inputs
from relam.relam_method import ReLAMSettings
from relam.rl.ppo import PPOSettings, env_seed, make_ppo, make_vec_env

SPEC = {
    "name": "mini",
    "title": "points-only budget beside an image-only baseline",
    "report": "table",
    "tasks": ["drawer-open-v3"],
    "methods": [{"label": "ReLAM", "method": "relam"}, {"label": "DACfO", "method": "dacfo"}],
    "seeds": [0],
    "budgets": {"metaworld": {s: {"train_steps": 10, "eval_every": 5, "eval_episodes": 1}
                              for s in ("smoke", "quick", "paper")}},
}


def _ctx(**budget) -> RunContext:
    b = Budget(**{"train_steps": 100_000, "eval_every": 1000, "eval_episodes": 1, **budget})
    return RunContext("drawer-open-v3", "relam", ReLAMSettings(), 0, b, "quick", Path("."))


def test_an_image_only_method_with_a_points_only_budget_is_a_spec_error(tmp_path):
    data = copy.deepcopy(SPEC)
    data["budgets"]["metaworld"]["quick"]["policy_input"] = "points"
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as e:
        load_spec(path)
    msg = str(e.value)
    assert "budgets.metaworld.quick.policy_input" in msg and "DACfO" in msg and "images only" in msg
    data["methods"] = data["methods"][:1]  # ReLAM alone can use it
    path.write_text(yaml.safe_dump(data))
    assert load_spec(path).budget("drawer-open-v3", "quick").policy_input == "points"


def test_policy_inputs_come_from_the_registered_classes():
    assert policy_inputs("relam") == ("image+points", "points", "points+proprio", "image+points+proprio")
    assert policy_inputs("dacfo") == ("image+points", "image+points+proprio")
    assert policy_inputs("vlm_reward") == ("image+points",)  # online only: no robot-state input


def test_a_baseline_gets_the_robot_state_offline_only():
    """The offline spec sets image-based baselines beside ReLAM with the joint positions added
    (offline_relam); on a Meta-World row their env has no such entry, so the budget is refused."""
    from baselines.runs import require_image_input

    def ctx(task: str) -> RunContext:
        b = Budget(train_steps=10, eval_every=5, eval_episodes=1, policy_input="image+points+proprio")
        return RunContext(task, "dacfo", ReLAMSettings(), 0, b, "quick", Path("."))

    require_image_input(ctx("PushCube-v1"), "DACfO")  # DACfO's discriminator phase on ManiSkill
    with pytest.raises(ValueError) as e:
        require_image_input(ctx("drawer-open-v3"), "DACfO")
    assert "policy_input='image+points+proprio'" in str(e.value) and "image+points" in str(e.value)


def test_ppo_settings_split_the_2000_step_rollout_between_the_envs():
    ppo = _ctx(n_envs=8, log_std_init=-0.5, learning_rate=1e-4).ppo_settings()
    assert (ppo.n_steps, ppo.n_envs, ppo.steps_per_env) == (2000, 8, 250)
    assert (ppo.log_std_init, ppo.learning_rate) == (-0.5, 1e-4)
    assert ppo.segment_bootstrap == 0.0  # appendix A.3's cut unless a budget says otherwise
    assert _ctx(ppo_segment_bootstrap=0.5).ppo_settings().segment_bootstrap == 0.5
    shared = _ctx().ppo_settings()
    assert shared.share_features_extractor and shared.target_kl is None  # SB3's defaults unless a budget says
    own = _ctx(ppo_share_encoder=False, ppo_target_kl=0.02).ppo_settings()
    assert (own.share_features_extractor, own.target_kl) == (False, 0.02)
    assert shared.ent_coef == 0.0 and _ctx(ppo_ent_coef=0.01).ppo_settings().ent_coef == 0.01
    assert shared.n_epochs == 10 and _ctx(ppo_n_epochs=4).ppo_settings().n_epochs == 4
    small = _ctx(train_steps=300, eval_every=100, n_envs=16).ppo_settings()  # smoke-sized budgets collect what they can
    assert small.n_steps % 16 == 0 and small.n_steps <= 300
    with pytest.raises(ValueError, match="multiple of n_envs"):
        PPOSettings(n_steps=2000, n_envs=3)


def test_late_budget_fields_stay_out_of_run_keys_at_their_defaults():
    # a budget at every default keys as the first records did: only the five original fields, so a
    # new budget field that is not named in Budget._LATE_FIELDS would re-key every stored run here
    assert set(_ctx().budget.key_dict()) == {"train_steps", "eval_every", "eval_episodes", "n_demos", "horizon"}
    assert "n_envs" not in _ctx().budget.key_dict()
    assert _ctx(n_envs=8).budget.key_dict()["n_envs"] == 8
    assert _ctx(policy_input="points").budget.key_dict()["policy_input"] == "points"
    assert not {"ppo_share_encoder", "ppo_target_kl", "ppo_ent_coef", "ppo_n_epochs"} & set(_ctx().budget.key_dict())
    assert _ctx(ppo_n_epochs=4).budget.key_dict()["ppo_n_epochs"] == 4
    assert _ctx(ppo_ent_coef=0.01).budget.key_dict()["ppo_ent_coef"] == 0.01
    assert _ctx(ppo_share_encoder=False).budget.key_dict()["ppo_share_encoder"] is False
    assert _ctx(ppo_target_kl=0.05).budget.key_dict()["ppo_target_kl"] == 0.05
    with pytest.raises(ValueError, match="ppo_target_kl"):
        _ctx(ppo_target_kl=0.0)


class _SeedEcho(gym.Env):
    observation_space = gym.spaces.Dict({"keypoints": gym.spaces.Box(-1, 1, (2,)),
                                         "target": gym.spaces.Box(-1, 1, (2,))})
    action_space = gym.spaces.Box(-1, 1, (1,))

    def __init__(self, seed: int):
        self.seed_ = seed

    def reset(self, *, seed=None, options=None):
        return {"keypoints": np.zeros(2, np.float32), "target": np.zeros(2, np.float32)}, {}

    def step(self, action):
        return self.reset()[0], 0.0, False, False, {}


def test_each_env_gets_its_own_seed_and_the_policy_its_std():
    settings = PPOSettings(n_steps=40, batch_size=20, n_envs=4, log_std_init=-0.5, reward_scaling=False)
    venv = make_vec_env(_SeedEcho, 7, settings)
    seeds = [e.unwrapped.seed_ for e in venv.envs]
    assert seeds[0] == 7 and len(set(seeds)) == 4 and seeds == [env_seed(7, i) for i in range(4)]
    model = make_ppo(venv, settings)
    assert model.n_steps == 10 and np.allclose(model.policy.log_std.detach().numpy(), -0.5)


def test_points_plus_proprio_gives_the_policy_the_gripper_position_and_opening():
    """The points+proprio input adds the simulator's hand position (m) and finger opening, read at
    every step, and the policy's point MLP takes it in; the reward does not read it."""
    import torch as th

    from relam.rl.policies import KeypointImageExtractor
    from relam.wrappers import FixedSubgoals, make_relam_env

    plan = np.zeros((2, 4, 2))
    env = make_relam_env("drawer-open-v3", FixedSubgoals(plan), seed=0, include_image=False, include_proprio=True)
    try:
        obs, _ = env.reset(seed=3)
        assert set(obs) == {"keypoints", "target", "proprio"} and obs["proprio"].shape == (4,)
        assert np.allclose(obs["proprio"], env.unwrapped.state()[:4])
        before = obs["proprio"].copy()
        for _ in range(5):
            obs, *_ = env.step(np.array([0.0, 0.0, 1.0, 0.0], np.float32))  # move the hand up
        assert obs["proprio"][2] > before[2] + 1e-3
        ext = KeypointImageExtractor(env.observation_space)
        assert ext.point_keys == ["keypoints", "target", "proprio"]
        feats = ext({k: th.as_tensor(v)[None] for k, v in obs.items()})
        assert feats.shape == (1, ext.features_dim)
    finally:
        env.close()


def test_proprio_needs_a_task_env_with_one():
    from relam.wrappers import RobotProprio

    with pytest.raises(ValueError, match="has no proprio"):
        RobotProprio(_SeedEcho(0))
