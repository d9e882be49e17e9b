"""DACfO discriminator reward, its checkpoint ensemble, and the shared baseline plumbing (baselines.common,
baselines.evaluation)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from baselines.common import RolloutRewardCallback, to_policy_images, transition_items
from baselines.evaluation import expert_vs_random, ranking_auc
from baselines.dacfo import DACfO, DiscriminatorEnsemble, logit_reward

TASK = "drawer-open-v3"




# ------------------------------------------------------------------ pure pieces (known answers)


def test_ranking_auc_known_values():
    assert ranking_auc([3, 4], [1, 2]) == 1.0
    assert ranking_auc([1, 2], [3, 4]) == 0.0
    assert ranking_auc([1, 3], [2, 2]) == 0.5
    assert ranking_auc([2], [2]) == 0.5


def test_logit_reward_forms():
    z = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(logit_reward(z, "logit"), z)  # log D - log(1-D) == logit
    D = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(logit_reward(z, "gail"), -np.log(1 - D))
    with pytest.raises(ValueError, match="reward_form"):
        logit_reward(z, "nope")


def test_to_policy_images_area_resize_and_layout():
    img = np.zeros((4, 4, 3), np.uint8)
    img[:2, :2] = 200  # top-left 2x2 block
    img[0, 3] = 100  # one pixel of the top-right block
    out = to_policy_images(img, size=2)
    assert out.shape == (1, 3, 2, 2) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [[200, 25], [0, 0]])
    same = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_policy_images(same), same.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="uint8"):
        to_policy_images(same.astype(np.float32))


def test_transition_items_pads_history_with_first_frame():
    vid = np.arange(4)[:, None, None, None] * np.ones((4, 3, 2, 2), np.uint8)  # frame i has value i
    hist, nxt = transition_items(vid, history=2)
    assert hist.shape == (3, 2, 3, 2, 2)
    np.testing.assert_array_equal(hist[:, :, 0, 0, 0], [[0, 0], [0, 1], [1, 2]])
    np.testing.assert_array_equal(nxt[:, 0, 0, 0], [1, 2, 3])


# ------------------------------------------------------------------ the learned reward


def _small(seed=0, **kw):
    return DACfO(size=32, batch=32, seed=seed, **kw)


def test_trained_discriminator_ranks_expert_above_random(videos):
    train_e, test_e, train_r, test_r = videos
    model = _small()
    before = expert_vs_random(model, test_e, test_r)
    model.fit(train_e, policy_videos=train_r, steps=40)
    after = expert_vs_random(model, test_e, test_r)
    # an untrained discriminator orders expert and random steps no better than chance
    assert before["auc"] < 0.75, before
    assert after["expert_mean"] > after["random_mean"], after
    assert after["auc"] > 0.75, after


def test_save_load_gives_identical_rewards(videos, tmp_path):
    train_e, test_e, train_r, _ = videos
    model = _small(seed=3)
    model.fit(train_e[:1], policy_videos=train_r[:1], steps=2)
    path = model.save(tmp_path / "d.pt")
    again = DACfO.load(path)
    np.testing.assert_array_equal(again.reward(test_e[0]), model.reward(test_e[0]))
    assert again.config() == model.config()
    with pytest.raises(FileNotFoundError, match="fit"):
        DACfO.load(tmp_path / "missing.pt")


def test_ensemble_averages_last_ten_checkpoints(videos, tmp_path):
    train_e, test_e, train_r, _ = videos
    model = _small(seed=1, updates_per_call=1)
    model.fit(train_e[:1])
    model.checkpoint_dir = tmp_path
    hist, nxt = model.items_from_video(train_r[0])
    for _ in range(12):  # each online update writes one checkpoint; only the newest 10 stay
        model.update_items(hist[:16], nxt[:16])
    files = sorted(tmp_path.glob("disc_*.pt"))
    assert [f.name for f in files] == [f"disc_{i:06d}.pt" for i in range(3, 13)]
    ens = DiscriminatorEnsemble.from_dir(tmp_path)
    assert len(ens) == 10
    # by hand: mean of the members' probabilities, then log p - log(1 - p)
    h, n = ens.items_from_video(test_e[0][:20])
    p = np.mean([1 / (1 + np.exp(-DACfO.load(f).logits_items(h, n))) for f in files], axis=0)
    np.testing.assert_allclose(ens.reward(test_e[0][:20]), np.log(p) - np.log(1 - p), rtol=1e-6, atol=1e-6)
    # the newest member is the live model
    np.testing.assert_array_equal(ens.members[-1].reward(test_e[0][:5]), model.reward(test_e[0][:5]))


# ------------------------------------------------------------------ online plumbing with SB3


class _NoiseImageEnv(gym.Env):
    """A cheap stand-in for a TaskEnv: random 64 px frames, success never."""

    observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    action_space = gym.spaces.Box(-1, 1, (4,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._img(), {"success": False}

    def _img(self):
        return self.np_random.integers(0, 256, (64, 64, 3), dtype=np.uint8)

    def step(self, action):
        return self._img(), 123.0, False, False, {"success": False}


def test_callback_relabels_rollout_in_batch_and_updates_discriminator(videos):
    from stable_baselines3 import PPO

    from relam.rl.ppo import MODEL_REWARD_KEY

    train_e = videos[0]
    model = _small(seed=2, updates_per_call=1)
    model.fit(train_e[:1])
    env = model.wrap(_NoiseImageEnv())
    assert env.observation_space["image"].shape == (3, 64, 64)
    ppo = PPO("MultiInputPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    snapshot = {}

    class _Grab(RolloutRewardCallback):  # the rewards the policy was trained on, before the update
        def _on_rollout_end(self):
            obs = ppo.rollout_buffer.observations["image"][:, 0].copy()
            snapshot["r"] = model.reward_items(obs[:-1, None], obs[1:])
            super()._on_rollout_end()
            snapshot["buf"] = ppo.rollout_buffer.rewards[:, 0].copy()
            snapshot["std"] = self.ret_rms.std
            snapshot["logged"] = self.logger.name_to_value.get(MODEL_REWARD_KEY)

    cb = _Grab(model, gamma=ppo.gamma)
    ppo.learn(16, callback=cb)
    # the env's own reward (123) is replaced: buffer = model reward / running return std
    np.testing.assert_allclose(snapshot["buf"][:-1] * snapshot["std"], snapshot["r"], rtol=1e-4, atol=1e-5)
    assert model.n_updates == 1  # the discriminator learned from the rollout
    assert len(model.replay) == 16
    # train_ppo's train.csv reads the rollout's mean model reward from this logger key
    assert snapshot["logged"] == pytest.approx(float(np.mean(snapshot["buf"] * snapshot["std"])), rel=1e-4)


def test_methods_are_registered_for_the_runner():
    from relam.methods import get_method, is_implemented

    assert is_implemented("dacfo") and is_implemented("diffusion_reward")
    assert type(get_method("dacfo")).__name__ == "DACfOMethod"


# ------------------------------------------------------------------ offline labelling (ManiSkill rows)


def _fake_demo(frames, seed=0, noisy=False):
    from types import SimpleNamespace

    T = len(frames) - 1
    return SimpleNamespace(frames=frames, actions=np.zeros((T, 8), np.float32), env_reward=np.zeros(T, np.float32),
                           success=np.zeros(T, bool), task="fake", seed=seed, noisy=noisy)


def test_ensemble_labels_a_two_trajectory_set(videos, tmp_path):
    """The discriminator ensemble behind relam.offline's Labeller: one finite reward per step, equal to
    the ensemble's own reward, and a cache key that names the weights."""
    from relam.offline import label_demos

    train_e, test_e, train_r, _ = videos
    model = _small(seed=5, updates_per_call=1)
    model.fit(train_e[:1])
    model.checkpoint_dir = tmp_path
    hist, nxt = model.items_from_video(train_r[0])
    for _ in range(10):
        model.update_items(hist[:16], nxt[:16])
    ens = DiscriminatorEnsemble.from_dir(tmp_path)
    lab = ens.as_labeller()
    demos = [_fake_demo(test_e[0][:9]), _fake_demo(train_r[1][:6], seed=1, noisy=True)]
    ds = label_demos(demos, lab, progress=False)
    assert ds.rewards.shape == (8 + 5,) and np.all(np.isfinite(ds.rewards))
    np.testing.assert_allclose(ds.rewards[:8], ens.reward(test_e[0][:9]), rtol=1e-5, atol=1e-5)
    assert ds.vector_keys() == [] and ds.observations["image"].shape[1:] == (64, 64, 3)  # image-only policy
    assert lab.config() == {"kind": "dacfo_ensemble", "fingerprint": ens.fingerprint(), "prepare": None}
    model.update_items(hist[:16], nxt[:16])  # new weights -> another cache key
    assert DiscriminatorEnsemble.from_dir(tmp_path).as_labeller().config() != lab.config()


def test_online_phase_budget_gives_ten_checkpoints():
    from baselines.dacfo import ONLINE_PHASE

    for scale, phase in ONLINE_PHASE.items():
        assert phase.env_steps // phase.rollout >= 10, scale  # one discriminator checkpoint per PPO rollout


# ------------------------------------------------------------------ the discriminator's accuracy (issue 18 item 4)


def test_discriminator_accuracy_is_a_rate_and_can_fail(videos):
    """accuracy_items: in [0, 1]; an untrained net and a net that cannot tell the two sets apart sit
    near 0.5 (chance); a net trained on expert vs random transitions is well above it."""
    train_e, test_e, train_r, test_r = videos
    model = _small(seed=4)
    held_e = model.items_from_video(test_e[0])
    held_r = model.items_from_video(test_r[0])
    untrained = model.accuracy_items(held_e, held_r)
    assert all(0.0 <= v <= 1.0 for v in untrained.values()), untrained
    assert untrained["d_accuracy"] == pytest.approx(0.5 * (untrained["d_acc_expert"] + untrained["d_acc_policy"]))
    assert abs(untrained["d_accuracy"] - 0.5) < 0.2, untrained
    model.fit(train_e, policy_videos=train_r, steps=40)
    trained = model.accuracy_items(held_e, held_r)
    assert trained["d_accuracy"] > 0.8, trained
    # the same expert videos on both sides: nothing to tell apart, the accuracy stays at chance
    same = _small(seed=4)
    same.fit(train_e, policy_videos=train_e, steps=40)
    fooled = same.accuracy_items(held_e, model.items_from_video(test_e[1]))
    assert abs(fooled["d_accuracy"] - 0.5) < 0.2, fooled


def test_update_reports_accuracy_loss_and_keeps_a_log(videos):
    train_e, _, train_r, _ = videos
    model = _small(seed=6, updates_per_call=3)
    model.fit(train_e[:2])
    hist, nxt = model.items_from_video(train_r[0])
    first = model.update_items(hist[:32], nxt[:32])
    for key in ("d_accuracy", "d_acc_expert", "d_acc_policy", "d_acc_rollout"):
        assert 0.0 <= first[key] <= 1.0, (key, first)
    assert first["d_loss"] > 0 and np.isfinite(first["d_gp"])
    for _ in range(5):
        last = model.update_items(hist[:32], nxt[:32])
    assert [row["update"] for row in model.update_log] == list(range(1, 7))
    assert model.update_log[-1]["d_accuracy"] == last["d_accuracy"]
    # the rollout it has trained on six times over is now called policy more often than at first
    assert last["d_acc_rollout"] >= first["d_acc_rollout"]


def test_train_csv_carries_the_discriminator_curve_beside_the_success_curve(videos, tmp_path):
    """Through train_ppo (the online path): one train.csv row per rollout with the discriminator's
    accuracy and loss (model_* columns), read back by discriminator_curve/summary and drawn next to
    the success curve in discriminator.png."""
    from baselines.dacfo import DISCRIMINATOR_COLUMNS, discriminator_curve, discriminator_summary, plot_discriminator
    from relam.rl.ppo import PPOSettings, train_ppo

    train_e = videos[0]
    model = _small(seed=7, updates_per_call=2)
    model.fit(train_e[:1])
    settings = PPOSettings(n_steps=16, batch_size=16, n_epochs=1, n_envs=1, device="cpu")

    def env_fn(seed):
        return model.wrap(gym.wrappers.TimeLimit(_NoiseImageEnv(), max_episode_steps=8))

    res = train_ppo(env_fn, settings, tmp_path, 48, 48, 1, 0, progress=False, callbacks=[model.callback()])
    header = (tmp_path / "train.csv").read_text().splitlines()[0].split(",")
    assert set(DISCRIMINATOR_COLUMNS) <= set(header)
    rows = discriminator_curve(tmp_path)
    assert len(rows) == 3 == model.n_updates
    assert [r["step"] for r in rows] == [16, 32, 48]
    for r in rows:
        for k in DISCRIMINATOR_COLUMNS:
            assert np.isfinite(r[k]) and (k == "model_d_loss" or 0.0 <= r[k] <= 1.0), (k, r)
    summary = discriminator_summary(tmp_path)
    assert summary["disc_d_accuracy_last"] == pytest.approx(rows[-1]["model_d_accuracy"])
    assert plot_discriminator(tmp_path, "test").exists()
    assert 0.0 <= res.success <= 1.0


def test_train_csv_header_is_unchanged_without_a_reward_model():
    from relam.rl.ppo import _TRAIN_FIELDS, _train_fields

    rows = [{k: 0.0 for k in _TRAIN_FIELDS}]
    assert _train_fields(rows) == _TRAIN_FIELDS
    assert _train_fields(rows + [{**rows[0], "model_d_accuracy": 0.5}]) == _TRAIN_FIELDS + ("model_d_accuracy",)


def test_dacfo_and_relam_share_budget_and_parallel_envs_in_every_spec():
    """Equal terms (issue 18 item 4): wherever a spec has both DACfO and ReLAM on an online task,
    the two cells get the same budget and therefore the same PPO settings (n_envs, rollout, steps)."""
    from pathlib import Path

    from relam.experiments.spec import load_spec
    from relam.methods import RunContext, settings_model

    root = Path(__file__).resolve().parents[1] / "experiments"
    checked = 0
    for path in sorted(root.glob("*.yaml")):
        spec = load_spec(path)
        methods = {m.method for m in spec.methods}
        if not {"dacfo", "relam"} <= methods:
            continue
        for task in spec.tasks:
            if spec.suite_of(task) != "metaworld":
                continue
            for scale in ("smoke", "quick", "paper"):
                budget = spec.budget(task, scale)
                ppo = {name: RunContext(task=task, method=name, settings=settings_model(name)(), seed=0, budget=budget,
                                        scale=scale, out_dir=Path("."), progress=False).ppo_settings()
                       for name in ("dacfo", "relam")}
                assert ppo["dacfo"] == ppo["relam"], (path.name, task, scale)
                if scale != "smoke":
                    assert ppo["dacfo"].n_envs >= 8, (path.name, task, scale)
                checked += 1
    assert checked > 0
