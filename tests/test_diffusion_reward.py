"""Diffusion Reward: schedule math, the entropy estimate on a known model, the reward mix and its
success switch, training, save/load."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from baselines.evaluation import expert_vs_random
from baselines.diffusion_reward import CE_WEIGHTINGS, DiffusionReward, linear_alphas_cumprod, noisy_sample

TASK = "drawer-open-v3"




def _tiny(**kw):
    """A 16 px, two-level UNet (about 0.17 M parameters): trains in seconds, same code path as the default."""
    kw = {"size": 16, "channels": (16, 32), "batch": 16, "lr": 1e-3, **kw}
    return DiffusionReward(**kw)


def test_schedule_known_values():
    abar = linear_alphas_cumprod(1000)
    assert abar[0].item() == pytest.approx(1 - 1e-4)
    assert abar[1].item() == pytest.approx((1 - 1e-4) * (1 - (1e-4 + 0.0199 / 999)))
    assert torch.all(abar[1:] < abar[:-1]) and 0 < abar[-1].item() < 1e-4
    x0, eps = torch.ones(2, 3, 4, 4), -torch.ones(2, 3, 4, 4)
    out = noisy_sample(x0, eps, torch.tensor([1.0, 0.0]))
    np.testing.assert_allclose(out[0].numpy(), 1.0)
    np.testing.assert_allclose(out[1].numpy(), -1.0)
    out = noisy_sample(x0, eps, torch.tensor([0.36]))
    np.testing.assert_allclose(out.numpy(), 0.6 - 0.8, rtol=1e-6)


def test_default_model_size_and_bad_settings():
    assert 2e6 < DiffusionReward().n_params < 4e6  # "small: ~3M params"
    with pytest.raises(ValueError, match="skip_step"):
        DiffusionReward(skip_step=999)
    with pytest.raises(ValueError, match="history"):
        DiffusionReward(history=0)


def test_denoising_chain_follows_the_original_skip():
    """The original's chain: 100 steps, skip 9 -> 99, 89, ..., 9, 0 (11 network calls); ours the same tenths of 1000."""
    assert DiffusionReward(size=16, channels=(16, 32)).denoise_steps == (999, 899, 799, 699, 599, 499, 399, 299, 199, 99, 0)
    assert DiffusionReward(size=16, channels=(16, 32), n_timesteps=100, skip_step=9).denoise_steps == (
        99, 89, 79, 69, 59, 49, 39, 29, 19, 9, 0)
    assert DiffusionReward(size=16, channels=(16, 32), n_timesteps=10, skip_step=2).denoise_steps == (9, 6, 3, 0)


class _GaussianNextFrame(torch.nn.Module):
    """The exact noise predictor when the next frame is ``N(0, sigma^2 I)`` with a small ``sigma`` after a
    bright context frame and a large one after a dark one: a video model with known conditional entropies."""

    def __init__(self, abar, narrow=0.05, broad=0.5):
        super().__init__()
        self.abar, self.narrow, self.broad = abar, narrow, broad

    def forward(self, x, t):
        xt, ctx = x[:, :3], x[:, 3:]
        sigma = torch.where(ctx.flatten(1).mean(1) > 0, self.narrow, self.broad).view(-1, 1, 1, 1)
        a = self.abar[t].float().view(-1, 1, 1, 1)
        return SimpleNamespace(sample=(1 - a).sqrt() * xt / (a * sigma ** 2 + 1 - a))


def test_step_weights_the_exact_bound_is_its_last_jump():
    """Under the Gaussian chain's exact KL (the default) the 99 -> 0 jump outweighs every other step of
    the 11-step chain more than 1000-fold (the estimate is then nearly the t=0 denoiser's error on the
    fixed noise, whatever the context); in noise units (``eps``) no step weighs 10x the next one."""
    elbo = DiffusionReward(size=16, channels=(16, 32)).step_weights()
    eps = DiffusionReward(size=16, channels=(16, 32), ce_weighting="eps").step_weights()
    assert len(elbo) == len(eps) == 10 and min(elbo) > 0 and min(eps) > 0
    assert elbo[-1] > 1000 * sum(elbo[:-1])
    assert max(b / a for a, b in zip(eps[:-1], eps[1:])) < 10 and eps[-1] < 10
    with pytest.raises(ValueError, match="ce_weighting"):
        DiffusionReward(size=16, channels=(16, 32), ce_weighting="simple")


def _frames(n, k, value):
    return np.full((n, k, 3, 16, 16), value, np.uint8) if k else np.full((n, 3, 16, 16), value, np.uint8)


@pytest.mark.parametrize("weighting", CE_WEIGHTINGS)
def test_entropy_reward_prefers_the_confident_context_on_a_known_model(weighting):
    """Lower conditional entropy of what comes next -> higher reward (a sign error or a likelihood of the
    observed frame fails this), conditioned on the frames up to the *reached* one, as in the original."""
    m = _tiny(ce_weighting=weighting)
    m.unet = _GaussianNextFrame(m.abar)
    bright, dark = 230, 20
    sure = m.ce_reward_raw(_frames(3, 2, bright), _frames(3, 0, bright))
    unsure = m.ce_reward_raw(_frames(3, 2, dark), _frames(3, 0, dark))
    assert np.all(np.isfinite(sure)) and np.all(sure > unsure + 50), (sure, unsure)
    # the context is (o_t, o_{t+1}): the reached frame decides, the oldest history frame is not read
    hist = np.concatenate([_frames(3, 1, dark), _frames(3, 1, bright)], 1)
    np.testing.assert_allclose(m.ce_reward_raw(hist, _frames(3, 0, bright)), sure)
    assert np.all(m.ce_reward_raw(_frames(3, 2, bright), _frames(3, 0, dark)) < sure - 50)
    # standardised with the expert statistics: an expert-like (confident) step scores above an unsure one
    m.ce_stats = type(m.ce_stats)(float(sure.mean()), 1.0, 3.0)
    assert np.all(m.ce_reward(_frames(3, 2, dark), _frames(3, 0, dark)) < 0)


def test_mix_weights_and_success_switch(videos):
    vid = videos[1][0][:12]
    m = _tiny()
    hist, nxt = m.items_from_video(vid)
    ce, rnd = m.ce_reward(hist, nxt), m.rnd_reward(nxt)
    np.testing.assert_allclose(m.reward(vid), 0.95 * rnd + 0.05 * ce)  # the original's mix
    succ = np.zeros(11, bool)
    succ[-3:] = True
    np.testing.assert_allclose(m.reward(vid, success=succ) - m.reward(vid), succ.astype(float))  # on by default
    off = _tiny(success_reward=False)
    np.testing.assert_allclose(off.reward(vid, success=succ), off.reward(vid))
    with pytest.raises(ValueError, match="one flag per step"):
        m.reward(vid, success=succ[:5])


def test_trained_model_ranks_expert_above_random(videos):
    """Fit on expert videos, one online RND update on the (random) policy's videos, then rank held-out steps."""
    train_e, test_e, train_r, test_r = videos
    untrained = _tiny(seed=1)
    before = expert_vs_random(untrained, test_e, test_r)
    m = _tiny(seed=1)
    stats = m.fit(train_e, steps=60)
    assert np.isfinite(stats["loss"]) and stats["ce_std"] > 0
    for _ in range(3):  # three PPO rollouts' worth of RND updates on the random policy's frames
        m.update(train_r)
    after = expert_vs_random(m, test_e, test_r)
    assert before["auc"] < 0.75, before
    assert after["expert_mean"] > after["random_mean"], after
    assert after["auc"] > 0.75, after


def test_save_load_gives_identical_rewards(videos, tmp_path):
    vid = videos[1][0][:10]
    m = _tiny(seed=4)
    m.fit(videos[0][:1], steps=2)
    m.update(videos[2][0][:10])
    path = m.save(tmp_path / "dr.pt")
    again = DiffusionReward.load(path)
    succ = np.arange(9) > 6
    np.testing.assert_array_equal(again.reward(vid, success=succ), m.reward(vid, success=succ))
    assert again.config() == m.config()
    from baselines.dacfo import DACfO

    with pytest.raises(ValueError, match="not 'dacfo'"):
        DACfO.load(path)


def test_offline_labeller_fits_rnd_on_the_set_then_labels(videos):
    """ManiSkill rows: label_demos calls prepare(demos) (RND: one online update on the set's frames)
    before labelling; rewards are the model's own, one finite value a step; the cache key is fixed
    before prepare."""
    from types import SimpleNamespace

    from relam.offline import label_demos

    def demo(frames, seed, noisy):
        T = len(frames) - 1
        succ = np.arange(T) >= T - 2
        return SimpleNamespace(frames=frames, actions=np.zeros((T, 8), np.float32), env_reward=np.zeros(T, np.float32),
                               success=succ, task="fake", seed=seed, noisy=noisy)

    m = _tiny(seed=6)
    m.fit(videos[0][:1], steps=2)
    demos = [demo(videos[1][0][:9], 0, False), demo(videos[3][0][:7], 1, True)]
    lab = m.as_labeller()
    cfg = lab.config()
    bonus_before = m.rnd.bonus(m.items_from_video(demos[0].frames)[1])
    ds = label_demos(demos, lab, progress=False)
    assert ds.rewards.shape == (8 + 6,) and np.all(np.isfinite(ds.rewards))
    assert m.rnd_stats.count > 1  # prepare ran: RND statistics and predictor updated on the set
    assert not np.allclose(m.rnd.bonus(m.items_from_video(demos[0].frames)[1]), bonus_before)
    np.testing.assert_allclose(ds.rewards[:8], m.reward(demos[0].frames, success=demos[0].success), rtol=1e-5)
    assert lab.config() == cfg and cfg["prepare"]["rnd"]
    assert ds.vector_keys() == []
