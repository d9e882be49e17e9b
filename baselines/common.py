"""Shared pieces of the video-reward baselines (DACfO, Diffusion Reward): one interface, one data path.

Both baselines are *frame reward models*: a reward for the transition ``o_t -> o_{t+1}`` computed
from pixels only, given the last ``history`` frames ``o_{t-history+1} .. o_t`` (DACfO looks at one
frame before, Diffusion Reward at ``k``).  :class:`FrameRewardModel` fixes the interface the runner
uses in any cell of Table 4:

* ``fit(demos, ...)`` -- learn from expert videos (subclasses);
* ``reward(frames, success=None) -> (T,)`` -- a whole video at once (batched);
* ``label(demo)`` -- the same for an offline trajectory;
* ``update(policy_videos)`` -- the online part (discriminator / RND), a no-op by default;
* ``wrap(env)`` -> :class:`VideoRewardWrapper` plus :class:`RolloutRewardCallback` for PPO;
* ``save(path)`` / ``load(path)``.

**One preprocessing path.**  Every frame, from a 128 px demo or from the live env, goes through
:func:`to_policy_images` (area resize to 64 px, channel-first uint8) -- the policy's own image --
and the models downsample further inside.  So offline labelling, online rewards and the policy's
observation see identical pixels.

**How rewards reach PPO (the choice, and why).**  A Diffusion Reward evaluation is several UNet
passes: far too slow per environment step (about 60 ms a call on this machine).  So the default is
*batched relabelling at the end of each PPO rollout*: :class:`VideoRewardWrapper` returns a
placeholder reward of 0 (``info["deferred_reward"] = True``); :class:`RolloutRewardCallback`
records every transition during collection (image before/after, success flag) and, when the rollout
ends -- after SB3 has filled the buffer and before the gradient steps -- computes all rewards in one
batched call, scales them by a running standard deviation of the discounted return (the job
``VecNormalize`` does for ordinary rewards, which here only ever sees the zeros), adds them to the
buffer's rewards (keeping SB3's time-limit bootstrap terms) and recomputes returns and advantages
with the buffer's own method (so a subclass such as the segmented-GAE buffer keeps its cut).  It
then calls ``model.update`` with the rollout (DACfO's discriminator step, Diffusion Reward's RND
step) -- after labelling, so a rollout is rewarded by the model that existed when it was collected.
Side effect: a ``Monitor`` under the VecEnv records the placeholder returns (0); the callback
logs the model reward's mean/std under ``reward_model/`` instead, and ``train_ppo`` keeps the mean
in ``train.csv`` (``model_reward_mean``) and plots it beside the success curve.
``wrap(env, per_step=True)`` instead calls the model every step (fine for DACfO's small CNN, no
callback needed for rewards, but the discriminator still needs the callback to learn).

**The ManiSkill (offline) rows** of every baseline go through :func:`baselines.runs.offline_run`,
the same path as ReLAM's offline runs: a labeller (``relam.offline.Labeller``; here
:class:`ModelLabeller` over a reward model, or IS/Oracle's
:class:`baselines.is_reward.ImageSubgoalLabeller`) labels the task's offline control set, IQL
(:mod:`relam.rl.iql`) trains on it, and the policy is evaluated in the live env after every epoch.
``python benchmarks/bench_offline_sanity.py PushCube-v1 PickCube-v1`` prints each baseline's mean
labelled return of expert vs noisy trajectories (:func:`baselines.evaluation.offline_reward_sanity`).
"""
from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.running_mean_std import RunningMeanStd as _SB3RunningMeanStd
from torch import nn

from relam.cache import atomic_torch_save, torch_bytes
from relam.perception.images import image_batch, resize_images
from relam.rl.ppo import MODEL_REWARD_PREFIX

__all__ = [
    "POLICY_IMAGE_SIZE",
    "to_policy_images",
    "transition_items",
    "RunningMeanStd",
    "RND",
    "FrameRewardModel",
    "ModelLabeller",
    "VideoRewardWrapper",
    "RolloutRewardCallback",
]

#: side of the policy's image observation (and of every frame a reward model sees before its own resize)
POLICY_IMAGE_SIZE = 64


# ------------------------------------------------------------------------------- frames


def to_policy_images(frames: np.ndarray, size: int = POLICY_IMAGE_SIZE) -> np.ndarray:
    """RGB frames (N,H,W,3) or one (H,W,3) uint8 -> channel-first (N,3,size,size) uint8.

    Downsampled by :func:`relam.perception.images.resize_images` (area average, as ReLAM's own
    policy image), so that thin parts such as a handle do not flicker in and out of the small
    image. Frames already at ``size`` pass through unchanged (bit for bit).
    """
    x = image_batch(frames, "frames")
    return np.ascontiguousarray(resize_images(x, size).transpose(0, 3, 1, 2))


def transition_items(images: np.ndarray, history: int) -> tuple[np.ndarray, np.ndarray]:
    """A video of policy images (T+1,3,S,S) -> per-transition inputs (hist (T,history,3,S,S), next (T,3,S,S)).

    ``hist[t]`` holds ``o_{t-history+1} .. o_t``, padded at the start by repeating ``o_0`` (what an
    episode's first steps look like online too: the callback pads the same way after each reset).
    """
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(f"need a video of at least 2 frames shaped (T+1,3,S,S), got {images.shape}")
    T = images.shape[0] - 1
    idx = np.arange(T)[:, None] + np.arange(-history + 1, 1)[None, :]
    hist = images[np.clip(idx, 0, None)]
    return hist, images[1:]


def _to_float(x: np.ndarray | torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 (N,C,S,S) -> float in [-1, 1], optionally average-pooled to ``size``."""
    t = torch.as_tensor(np.asarray(x)).float().div_(127.5).sub_(1.0)
    if size is not None and t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="area")
    return t


# ------------------------------------------------------------------------------- statistics


class RunningMeanStd(_SB3RunningMeanStd):
    """SB3's running mean/variance of a scalar stream (parallel merge), started from given moments,
    with a plain-float dict state for save/load."""

    def __init__(self, mean: float = 0.0, var: float = 1.0, count: float = 1e-4):
        super().__init__(epsilon=float(count), shape=())
        self.mean, self.var = np.float64(mean), np.float64(var)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1)
        if x.size:
            super().update(x)

    @property
    def std(self) -> float:
        return math.sqrt(self.var + 1e-8)

    def state(self) -> dict[str, float]:
        return {"mean": float(self.mean), "var": float(self.var), "count": float(self.count)}


# ------------------------------------------------------------------------------- RND


def _small_cnn(in_ch: int, out_dim: int, size: int) -> nn.Sequential:
    """Three stride-2 convolutions + linear: enough capacity for 32-64 px frames, cheap on CPU."""
    side = size // 8
    return nn.Sequential(
        nn.Conv2d(in_ch, 16, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(16, 32, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(32, 32, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(32 * side * side, out_dim),
    )


class RND(nn.Module):
    """Random network distillation (Burda et al. 2019): novelty = error of a predictor of a frozen random net.

    The bonus is high on frames unlike those the predictor was trained on (the policy's past
    visits), which is what Diffusion Reward mixes in for exploration.  Frames are uint8
    (N,3,S,S) policy images, resized to ``size``.
    """

    def __init__(self, size: int = 32, feat: int = 64, lr: float = 1e-3, seed: int = 0):
        super().__init__()
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(seed)
            self.target = _small_cnn(3, feat, size)
            self.predictor = _small_cnn(3, feat, size)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.size = size
        self.lr = lr
        self._opt: torch.optim.Optimizer | None = None

    @torch.no_grad()
    def bonus(self, images: np.ndarray, batch: int = 512) -> np.ndarray:
        """Per-frame squared prediction error (N,), float64."""
        out = []
        for i in range(0, len(images), batch):
            x = _to_float(images[i:i + batch], self.size)
            out.append((self.predictor(x) - self.target(x)).pow(2).mean(1).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def train_on(self, images: np.ndarray, epochs: int = 1, batch: int = 64, seed: int = 0) -> float:
        """A few predictor steps on visited frames; returns the last loss."""
        if self._opt is None:
            self._opt = torch.optim.Adam(self.predictor.parameters(), lr=self.lr)
        rng = np.random.default_rng(seed)
        loss = float("nan")
        for _ in range(epochs):
            for idx in np.array_split(rng.permutation(len(images)), max(1, len(images) // batch)):
                x = _to_float(images[idx], self.size)
                batch_loss = (self.predictor(x) - self.target(x)).pow(2).mean()
                self._opt.zero_grad()
                batch_loss.backward()
                self._opt.step()
                loss = batch_loss.item()
        return loss


# ------------------------------------------------------------------------------- the interface


class FrameRewardModel:
    """Base of the pixel reward models: batched rewards over videos, online update, save/load, wrap.

    Subclasses set ``kind`` and ``history``, implement :meth:`reward_items` (the batched core),
    :meth:`config` / :meth:`_state` / :meth:`_load_state`, and optionally :meth:`update_items`.
    """

    kind: str = ""
    history: int = 1

    # --- subclass hooks
    def reward_items(self, hist: np.ndarray, nxt: np.ndarray, success: np.ndarray | None = None) -> np.ndarray:
        """Rewards (N,) for N transitions: ``hist`` (N,history,3,S,S) uint8, ``nxt`` (N,3,S,S) uint8."""
        raise NotImplementedError

    def update_items(self, hist: np.ndarray, nxt: np.ndarray) -> dict[str, float]:
        """Online learning from the policy's transitions (default: nothing to learn)."""
        return {}

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # --- shared API
    def items_from_video(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw (T+1,H,W,3) uint8 frames -> this model's (hist, next) transition inputs."""
        return transition_items(to_policy_images(frames), self.history)

    def reward(self, frames: np.ndarray, success: np.ndarray | None = None) -> np.ndarray:
        """Rewards (T,) float64 for a whole video (T+1,H,W,3) uint8, in one batched computation.

        ``success`` (T,) bool is the simulator's per-step success flag; only a model configured to
        pay the sparse success reward reads it.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[0] < 2:
            raise ValueError(f"reward(frames): need (T+1,H,W,3) uint8 with T >= 1, got shape {frames.shape}")
        hist, nxt = self.items_from_video(frames)
        if success is not None:
            success = np.asarray(success, bool).reshape(-1)
            if len(success) != len(nxt):
                raise ValueError(f"reward(success=...): need one flag per step ({len(nxt)}), got {len(success)}")
        return np.asarray(self.reward_items(hist, nxt, success), np.float64)

    def label(self, demo: Any) -> np.ndarray:
        """Rewards (T,) for an offline trajectory (a :class:`relam.demos.Demo`)."""
        return self.reward(demo.frames, success=getattr(demo, "success", None))

    def update(self, policy_videos: Sequence[np.ndarray] | np.ndarray) -> dict[str, float]:
        """Online learning from the policy's videos (a (T+1,H,W,3) array or a list of them)."""
        videos = [policy_videos] if isinstance(policy_videos, np.ndarray) and policy_videos.ndim == 4 else policy_videos
        parts = [self.items_from_video(v) for v in videos]
        hist = np.concatenate([p[0] for p in parts])
        nxt = np.concatenate([p[1] for p in parts])
        return self.update_items(hist, nxt)

    def as_labeller(self) -> "ModelLabeller":
        """This model behind :class:`relam.offline.Labeller` (``label(demo) -> LabelledTrajectory``)."""
        return ModelLabeller(self)

    def fingerprint(self) -> str:
        """16 hex chars identifying the config *and* the weights (a cache key for labelled datasets)."""
        import hashlib

        return hashlib.sha256(json.dumps(self.config(), sort_keys=True, default=str).encode()
                              + torch_bytes(self._state())).hexdigest()[:16]

    def wrap(self, env: gym.Env, per_step: bool = False) -> "VideoRewardWrapper":
        """The env for online training: image observation, this model's reward (see module docstring)."""
        return VideoRewardWrapper(env, self, per_step=per_step)

    def callback(self, **kwargs: Any) -> "RolloutRewardCallback":
        """The SB3 callback that labels each rollout in a batch and runs the online update."""
        return RolloutRewardCallback(self, **kwargs)

    def save(self, path: str | Path) -> Path:
        """One file: a torch archive of ``{"kind", "config", "state"}`` (written atomically)."""
        return atomic_torch_save(path, {"kind": self.kind, "config": self.config(), "state": self._state()})

    @classmethod
    def load(cls, path: str | Path) -> "FrameRewardModel":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no saved {cls.kind or 'reward'} model at {path}; train one with fit() and save()")
        blob = torch.load(path, map_location="cpu", weights_only=False)
        if cls.kind and blob.get("kind") != cls.kind:
            raise ValueError(f"{path} holds a {blob.get('kind')!r} model, not {cls.kind!r}")
        model = cls(**blob["config"])
        model._load_state(blob["state"])
        return model


class ModelLabeller:
    """Adapter to the offline pipeline's ``Labeller`` protocol (:mod:`relam.offline`).

    ``config()`` carries the model's fingerprint, taken when the labeller is made, so datasets
    labelled by different weights never share a cache entry.  ``prepare(demos)`` (called by
    :func:`relam.offline.label_demos` with the whole set first) hands the set's videos to the
    model's ``prepare_offline`` when it has one (Diffusion Reward trains its RND on them); what
    that learns follows from the fingerprint and the set, so the key stays valid.  Success flags of
    the trajectory are passed on (Diffusion Reward pays the sparse success reward when its switch
    is on).  The policy sees only the image (no extra observations).
    """

    def __init__(self, model: FrameRewardModel):
        self.model = model
        self.name = model.kind
        self._config = {"kind": model.kind, "fingerprint": model.fingerprint(),
                        "prepare": getattr(model, "prepare_offline_config", lambda: None)()}

    def config(self) -> dict:
        return dict(self._config)

    def prepare(self, demos: Sequence[Any]) -> None:
        prep = getattr(self.model, "prepare_offline", None)
        if callable(prep):
            prep([getattr(d, "frames", d) for d in demos])

    def label(self, demo: Any):
        from relam.offline import LabelledTrajectory

        return LabelledTrajectory(rewards=self.model.label(demo).astype(np.float32))


# ------------------------------------------------------------------------------- online plumbing


class VideoRewardWrapper(gym.Wrapper):
    """A TaskEnv seen by the policy: Dict({"image": (3,64,64) uint8}); reward from a :class:`FrameRewardModel`.

    ``per_step=False`` (default): the reward is a placeholder 0 and :class:`RolloutRewardCallback`
    fills the real ones in at the end of each rollout (``info["deferred_reward"] = True``).
    ``per_step=True``: the model is called on every step (batch of one).  ``info["env_reward"]``
    (the simulator's own reward) and ``info["success"]`` pass through untouched.
    """

    def __init__(self, env: gym.Env, model: FrameRewardModel, per_step: bool = False,
                 size: int = POLICY_IMAGE_SIZE):
        super().__init__(env)
        self.model, self.per_step, self.size = model, bool(per_step), int(size)
        self.observation_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (3, size, size), np.uint8)})
        self._hist: deque[np.ndarray] = deque(maxlen=max(1, model.history))

    def _image(self, obs: np.ndarray) -> np.ndarray:
        return to_policy_images(obs, self.size)[0]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        img = self._image(obs)
        self._hist.clear()
        self._hist.extend([img] * self._hist.maxlen)
        return {"image": img}, info

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        img = self._image(obs)
        info = dict(info)
        if self.per_step:
            succ = np.array([bool(info.get("success", False))])
            r = float(self.model.reward_items(np.stack(self._hist)[None], img[None], succ)[0])
        else:
            r = 0.0
            info["deferred_reward"] = True
        self._hist.append(img)
        return {"image": img}, r, terminated, truncated, info


def _callback_base():
    from stable_baselines3.common.callbacks import BaseCallback

    return BaseCallback


class RolloutRewardCallback(_callback_base()):
    """SB3 callback: batched reward labelling of each rollout, then the model's online update.

    Works with any on-policy SB3 algorithm whose env is (a VecEnv of) :class:`VideoRewardWrapper`:
    it reads images from ``new_obs`` / ``infos[i]["terminal_observation"]`` and success from
    ``infos``.  ``relabel=False`` leaves the rewards alone (use with ``per_step=True`` wrappers) and
    only runs the update.  ``update_every`` rollouts between online updates (1 = every rollout).
    """

    def __init__(self, model: FrameRewardModel, relabel: bool = True, normalize: bool = True,
                 gamma: float = 0.99, update: bool = True, update_every: int = 1, verbose: int = 0):
        super().__init__(verbose)
        self.reward_model, self.relabel, self.normalize = model, relabel, normalize
        self.gamma, self.do_update, self.update_every = gamma, update, max(1, int(update_every))
        self.ret_rms = RunningMeanStd()
        self._ret: np.ndarray | None = None
        self._ctx: list[deque] | None = None
        self._items: list[tuple[int, int, np.ndarray, np.ndarray, bool]] = []
        self._n_rollouts = 0
        self.last_stats: dict[str, float] = {}

    def _reset_ctx(self, i: int, img: np.ndarray) -> None:
        self._ctx[i] = deque([img] * self.reward_model.history, maxlen=self.reward_model.history)

    def _on_rollout_start(self) -> None:
        obs = self.model._last_obs
        n = self.training_env.num_envs
        if self._ctx is None or len(self._ctx) != n:
            self._ctx = [None] * n
            for i in range(n):
                self._reset_ctx(i, np.asarray(obs["image"][i], np.uint8))
            self._ret = np.zeros(n)
        self._items = []
        self._step = 0

    def _on_step(self) -> bool:
        new_obs, dones, infos = self.locals["new_obs"], self.locals["dones"], self.locals["infos"]
        for i in range(len(dones)):
            if dones[i] and infos[i].get("terminal_observation") is not None:
                nxt = np.asarray(infos[i]["terminal_observation"]["image"], np.uint8)
            else:
                nxt = np.asarray(new_obs["image"][i], np.uint8)
            hist = np.stack(self._ctx[i])
            self._items.append((self._step, i, hist, nxt, bool(infos[i].get("success", False))))
            if dones[i]:
                self._reset_ctx(i, np.asarray(new_obs["image"][i], np.uint8))
            else:
                self._ctx[i].append(nxt)
        self._step += 1
        return True

    def _on_rollout_end(self) -> None:
        if not self._items:
            return
        steps = np.array([it[0] for it in self._items])
        envs = np.array([it[1] for it in self._items])
        hist = np.stack([it[2] for it in self._items])
        nxt = np.stack([it[3] for it in self._items])
        succ = np.array([it[4] for it in self._items])
        dones = np.zeros((steps.max() + 1, len(self._ctx)), bool)
        if self.relabel:
            r = np.asarray(self.reward_model.reward_items(hist, nxt, succ), np.float64)
            R = np.zeros_like(dones, dtype=np.float64)
            R[steps, envs] = r
            ep_end = np.zeros_like(dones)
            # episode ends from the buffer's episode_starts (start at t+1 <=> end at t)
            buf = self.model.rollout_buffer
            starts = np.asarray(buf.episode_starts, bool)
            ep_end[:-1] = starts[1:len(dones)]
            ep_end[-1] = np.asarray(self.locals["dones"], bool)
            if self.normalize:
                for t in range(len(R)):
                    self._ret = self._ret * self.gamma + R[t]
                    self.ret_rms.update(self._ret)
                    self._ret[ep_end[t]] = 0.0
                R = R / self.ret_rms.std
            buf.rewards[: len(R)] += R.astype(buf.rewards.dtype)
            buf.compute_returns_and_advantage(last_values=self.locals["values"], dones=self.locals["dones"])
            self.last_stats = {"reward_mean": float(r.mean()), "reward_std": float(r.std())}
        self._n_rollouts += 1
        if self.do_update and self._n_rollouts % self.update_every == 0:
            self.last_stats.update(self.reward_model.update_items(hist, nxt))
        for k, v in self.last_stats.items():
            self.logger.record(MODEL_REWARD_PREFIX + k, v)  # train_ppo's train.csv reads reward_mean
        self._items = []
