"""``device: "auto"`` (issue 21, item 4): one rule, :func:`relam.devices.resolve_device`, used by PPO
and every learned reward component; SubprocVecEnv as a PPO setting.

On a CPU-only machine "auto" is the CPU and nothing moves (the components' results are the bits of
the code before the setting existed: the regression checks and their own tests pin them). The
``cuda``-marked checks at the end run only where torch sees a GPU: each component trains a few
steps there and comes back to the CPU.
"""
from __future__ import annotations

import functools
import inspect
import json
import types

import gymnasium as gym
import numpy as np
import pytest
import torch

from relam import devices
from relam.devices import moved_to, resolve_device

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="torch sees no GPU here")


@pytest.mark.parametrize("seen, expected", [(True, "cuda"), (False, "cpu")])
def test_auto_resolves_to_cuda_exactly_when_torch_sees_a_gpu(monkeypatch, seen, expected):
    from relam.rl import ppo

    monkeypatch.setattr(torch.cuda, "is_available", lambda: seen)
    assert resolve_device("auto") == expected
    assert resolve_device(None) == expected
    assert resolve_device() == expected
    assert ppo.resolve_device is resolve_device  # PPO uses the one rule, not a copy
    # names other than "auto" are taken as given, whatever torch sees
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device(torch.device("cpu")) == "cpu"


def test_a_device_typo_fails_at_once_and_says_what_to_use():
    with pytest.raises(ValueError, match="'auto', 'cpu' or 'cuda"):
        resolve_device("gpu0")


def test_ppo_settings_default_to_auto_and_the_model_lands_on_the_resolved_device(monkeypatch):
    from relam.rl.ppo import PPOSettings, make_ppo, make_vec_env

    assert PPOSettings().device == "auto"
    settings = PPOSettings(n_steps=8, batch_size=4, n_epochs=1, point_hidden=(8,), net_arch=(8,),
                           cnn_channels=(4, 4, 4), image_dim=8, reward_scaling=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = make_ppo(make_vec_env(_PointsEnv, 0, settings), settings)
    assert model.device.type == "cpu"


def _default_device(fn) -> str:
    return inspect.signature(fn).parameters["device"].default


def test_every_learned_component_defaults_to_auto():
    """PPO, the baselines' reward models and the anticipation model train on CUDA when it is there
    (IQL's own setting, ``relam.rl.iql.IQLSettings.device``, is checked in tests/test_iql.py)."""
    from baselines.dacfo import DACfO
    from baselines.diffusion_reward import DiffusionReward
    from baselines.embedding import TemporalEmbedding
    from baselines.is_generator import SubgoalImageModel
    from baselines.vlm_models import LearnedRewardModel, VLMRewardModel
    from relam.anticipation.training import train_anticipation
    from relam.perception.encoders import ConvAEEncoder
    from relam.perception.segmentation import EvfSamSegmenter
    from relam.perception.tracking import CoTrackerTracker
    from relam.rl.ppo import PPOSettings

    components = {
        "DACfO": DACfO.__init__, "DiffusionReward": DiffusionReward.__init__,
        "DiffusionReward.fit": DiffusionReward.fit, "SubgoalImageModel.fit": SubgoalImageModel.fit,
        "TemporalEmbedding.fit": TemporalEmbedding.fit, "LearnedRewardModel.fit": LearnedRewardModel.fit,
        "VLMRewardModel": VLMRewardModel.__init__, "ConvAEEncoder.fit": ConvAEEncoder.fit,
        "train_anticipation": train_anticipation, "EvfSamSegmenter": EvfSamSegmenter.__init__,
        "CoTrackerTracker": CoTrackerTracker.__init__,
    }
    defaults = {name: _default_device(fn) for name, fn in components.items()}
    defaults["PPOSettings"] = PPOSettings().device
    assert defaults == {name: devices.AUTO for name in defaults}


def test_the_device_is_not_part_of_any_cache_key_or_fingerprint():
    """Records and cached models made before the setting existed keep their keys."""
    from baselines.dacfo import DACfO
    from baselines.diffusion_reward import DiffusionReward

    assert "device" not in DACfO().config()
    assert "device" not in DiffusionReward(size=16, channels=(16, 32)).config()
    assert DACfO(device="cpu").fingerprint() == DACfO(device="auto").fingerprint()


def test_moved_to_on_the_cpu_moves_nothing():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    ptrs = [p.data_ptr() for p in net.parameters()] + [v.data_ptr() for s in opt.state.values()
                                                         for v in s.values()]
    with moved_to("cpu", [net, None], [opt]) as dev:
        assert dev == torch.device("cpu")
    assert ptrs == [p.data_ptr() for p in net.parameters()] + [v.data_ptr() for s in opt.state.values()
                                                                for v in s.values()]


# ------------------------------------------------------------------ SubprocVecEnv as a setting


class _PointsEnv(gym.Env):
    """The points-only ReLAM observation (keypoints, target), constant: enough for make_ppo."""

    observation_space = gym.spaces.Dict({"keypoints": gym.spaces.Box(-1, 1, (8,), np.float32),
                                         "target": gym.spaces.Box(-1, 1, (8,), np.float32)})
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def __init__(self, seed: int = 0):
        super().__init__()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return {k: np.zeros(8, np.float32) for k in ("keypoints", "target")}, {}

    def step(self, action):
        return self.reset()[0], 0.0, False, False, {}


def _train(tmp_path, vec_env: str) -> dict:
    from relam.rl.ppo import PPOSettings, train_ppo
    from relam.wrappers import GroundTruthSubgoals, make_relam_env

    # a partial of library callables: picklable, so SubprocVecEnv's spawned workers can build it
    env_fn = functools.partial(make_relam_env, "drawer-open-v3", GroundTruthSubgoals(), include_image=False)
    settings = PPOSettings(n_envs=2, n_steps=100, batch_size=50, n_epochs=1, vec_env=vec_env, device="cpu")
    out = tmp_path / vec_env
    train_ppo(env_fn, settings, out, total_steps=200, eval_every=200, eval_episodes=1, seed=0, progress=False)
    state = json.loads((out / "state.json").read_text())
    for row in state["train_rows"] + state["eval_rows"]:
        row.pop("wall_s", None)
    return state


def test_ppo_with_subproc_vec_env_trains_as_the_dummy_one(tmp_path):
    """``vec_env="subproc"`` (one spawned process per environment) runs the real points-only loop
    and turns over the same rollouts and updates as the in-process DummyVecEnv (the envs are
    deterministic given their seeds)."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from relam.rl.ppo import PPOSettings, make_vec_env

    venv = make_vec_env(_PointsEnv, 0, PPOSettings(n_envs=2, n_steps=8, vec_env="subproc"))
    try:
        assert isinstance(venv.venv, SubprocVecEnv) and venv.num_envs == 2
    finally:
        venv.close()
    sub, dummy = _train(tmp_path, "subproc"), _train(tmp_path, "dummy")
    assert sub["num_timesteps"] == dummy["num_timesteps"] == 200
    # both leave their environments in the same episodes, at the same step (what a resumed run replays)
    envs_sub, envs_dummy = sub.pop("resume")["envs"], dummy.pop("resume")["envs"]
    assert [e["episode"] for e in envs_sub] == [e["episode"] for e in envs_dummy]
    assert [len(e["actions"]) for e in envs_sub] == [len(e["actions"]) for e in envs_dummy] == [100, 100]
    flat_sub, flat_dummy = _flat(sub), _flat(dummy)
    assert flat_sub.keys() == flat_dummy.keys()
    # equal up to float rounding (measured: 1e-9 relative): the in-process envs share one planner
    # object (and its expert simulator), each worker has its own copy
    assert flat_sub == pytest.approx(flat_dummy, rel=1e-6, abs=1e-9, nan_ok=True)


def _flat(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flat(val, f"{prefix}/{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in _flat(val, f"{prefix}/{i}").items()}
    return {prefix: obj}


# ------------------------------------------------------------------ on a GPU (skipped without one)


def _videos(n=3, t=25, size=64):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8) for _ in range(n)]


def _on_cpu(*modules) -> bool:
    return all(p.device.type == "cpu" for m in modules for p in m.parameters())


@needs_cuda
def test_reward_models_train_on_cuda_and_come_back_to_the_cpu():
    from baselines.dacfo import DACfO
    from baselines.diffusion_reward import DiffusionReward
    from baselines.embedding import TemporalEmbedding
    from baselines.is_generator import FlowSettings, SubgoalImageModel
    from baselines.vlm_models import LearnedRewardConfig, LearnedRewardModel
    from relam.perception.encoders import ConvAEEncoder

    vids = _videos()
    d = DACfO(seed=0, updates_per_call=3, device="cuda")
    d.fit(vids[:2], policy_videos=vids[2:], steps=3)
    d.update(vids[2])
    assert _on_cpu(d.disc) and np.isfinite(d.reward(vids[0])).all()
    m = DiffusionReward(size=16, channels=(16, 32), batch=4, seed=0, device="cuda")
    m.fit(vids[:2], steps=3, stats_items=8, device="cuda")
    gpu = m.reward(vids[0][:6])
    assert _on_cpu(m.unet) and np.isfinite(gpu).all()
    m.device = "cpu"
    np.testing.assert_allclose(m.reward(vids[0][:6]), gpu, rtol=1e-3, atol=1e-3)
    seqs = [types.SimpleNamespace(initial_frame=v[0], keyframe_images=v[[5, 10, 20]]) for v in vids]
    g = SubgoalImageModel(FlowSettings(train_steps=3, width=8, batch_size=2, image_size=16))
    assert np.isfinite(g.fit(seqs, progress=False, device="cuda")).all() and _on_cpu(g.net)
    assert g.generate(vids[0][0], seed=1).dtype == np.uint8
    e = TemporalEmbedding(input_size=16, dim=8, width=4)
    e.fit(vids, steps=3, batch_size=8, progress=False, device="cuda")
    assert _on_cpu(e.net) and np.isfinite(e.embed(vids[0])).all()
    r = LearnedRewardModel(LearnedRewardConfig(steps=3, batch=8, min_gap=1, max_gap=5, size=16))
    r.fit(vids[:2], random_videos=vids[2:], device="cuda")
    assert _on_cpu(r.net) and np.isfinite(r.terms(vids[0][5:8], vids[0][2:5], vids[0][:3]).progress).all()
    c = ConvAEEncoder(image_size=64, stride=16, dim=8, width=4)
    c.fit(vids[0], steps=3, batch_size=4, progress=False, device="cuda")
    assert _on_cpu(c.net) and torch.isfinite(c.encode(vids[1][:4])).all()


@needs_cuda
def test_anticipation_trains_on_cuda_close_to_the_cpu_run(tmp_path):
    from relam.anticipation import AnticipationConfig, synthetic_subgoal_items, train_anticipation

    items = synthetic_subgoal_items("synth-push", n=6, seed=3, size=64)
    cfg = AnticipationConfig(layers=1, width=32, heads=2, dropout=0.0, steps=30, lr=3e-3, warmup=5,
                             batch_size=4, image_size=64, encoder="pixels", encoder_kwargs={"patch": 16},
                             max_len=6, task_grid=1, log_every=10, ckpt_every=20, seed=0)
    runs = {}
    for dev in ("cpu", "cuda"):
        model = train_anticipation(items, cfg, tmp_path / dev, holdout=0, progress=False, evaluate=False,
                                   device=dev)
        assert _on_cpu(model.net)
        runs[dev] = json.loads((tmp_path / dev / "history.json").read_text())["mse"]
    np.testing.assert_allclose(runs["cuda"], runs["cpu"], rtol=0.05)


@needs_cuda
def test_ppo_auto_trains_on_cuda(tmp_path):
    from relam.rl.ppo import PPOSettings, make_ppo, make_vec_env

    settings = PPOSettings(n_steps=8, batch_size=4, n_epochs=1, point_hidden=(8,), net_arch=(8,),
                           reward_scaling=False)
    model = make_ppo(make_vec_env(_PointsEnv, 0, settings), settings)
    assert model.device.type == "cuda"
    model.learn(8)
