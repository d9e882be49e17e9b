"""Implicit Q-Learning (Kostrikov et al., 2022) on labelled image + keypoint datasets (section 4.2).

The paper trains its ManiSkill policies offline with IQL (OfflineRL-Kit, not on PyPI). This is a
compact torch implementation, the project's only IQL: d3rlpy 2.7.0's ran beside it in
``benchmarks/bench_iql.py`` (issue 17; the README's "Offline RL: one IQL" has the numbers) on the
same labelled data and network, and was 2-3x slower per gradient step (every critic and target
critic of its ensemble has its own encoder; batches are sampled transition by transition in
Python) for the same success at equal budgets. Besides:

- our observation is a dict (uint8 image + keypoints + target); d3rlpy wants tuples plus custom
  encoder factories, and would copy the images into its own buffer;
- checkpoints must be atomic and resumable mid-run, with our CSV log, progress bar and per-epoch
  evaluation in the live simulator -- glue around d3rlpy's ``fit`` loop that would be longer than
  the algorithm itself;
- the three losses are a few lines each, so they can be read (and tested) directly.

The algorithm (one gradient step, :meth:`IQL.update`):

1. value, expectile regression: ``L_V = E[|tau - 1(u < 0)| u^2]``, ``u = min(Q1', Q2')(s, a) - V(s)``
   (``Q'`` = target critics), ``tau = expectile``;
2. policy, advantage-weighted regression: ``L_pi = -E[min(exp(beta (Q' - V)), w_max) log pi(a|s)]``,
   ``beta = temperature`` (V before this step's value update);
3. critics: ``L_Q = E[(Q_i(s, a) - r - gamma (1 - d) V(s'))^2]`` for the twin Q_i (V(s') before
   this step's value update, as CORL's and d3rlpy's IQL take it);
4. Polyak averaging of the target critics with ``tau`` (the soft-update rate).

The three losses touch disjoint parameters (value and actor see detached inputs), so their sum is
back-propagated once and each optimiser (Adam, torch's fused form) steps on its own network's part.

Networks (``IQLSettings.encoder``; appendix C lists CNN channels, kernel sizes and strides and MLP
hidden sizes for IQL, so the image goes through a CNN, but says nothing of whether the three
networks share it or whether it is trained by the IQL losses):

- ``"separate"`` (default): each of actor, twin critic and value has its own encoder -- the online
  policy's :class:`relam.rl.policies.KeypointImageExtractor` (three-layer CNN on the image, MLP on
  the current and target keypoints, concatenated, appendix A.3) -- followed by an MLP head
  (256, 256). The twin critics share one encoder (two heads), as the online actor/critic heads
  share theirs in SB3. Five CNN passes and three CNN backward passes a gradient step.
- ``"shared"``: one CNN for all three; it is trained by the critic loss only, the value and actor
  see its features detached (the DrQ / SAC-AE arrangement); each network keeps its own keypoint
  MLP and heads, and the target critics read the online CNN's features. Two CNN passes (s, s')
  and one CNN backward a step.
- ``"frozen"``: as ``"shared"`` for the first ``encoder_steps`` gradient steps, then the CNN is
  frozen and the image features of every dataset frame are computed once; the remaining steps
  train MLPs only. ``encoder_steps=0`` freezes the randomly initialised CNN. This is what makes
  >= 100 gradient steps/s possible on a CPU core (``benchmarks/bench_iql.py``); the policy still
  reads raw images at evaluation time.

Observations of other methods (no keypoints) are mapped onto the same extractor: every vector entry
other than ``target`` is concatenated into its point input (see :func:`extractor_space`).

Device: ``IQLSettings.device`` ``"auto"`` trains on CUDA when torch sees a GPU (the dataset is
copied there once), else on the CPU with ``torch_threads`` threads.

Actor: a Gaussian with a state-independent log standard deviation over *standardised* actions
(dataset mean/std per dimension): the ManiSkill actions are absolute joint targets (pd_joint_pos,
radians, not in [-1, 1]), so a tanh squashing would not fit them; evaluation takes the mean.

Appendix C settings are the defaults of :class:`IQLSettings`: batch 64, 2000 gradient steps an
epoch, 50 epochs, gamma 0.99, tau 0.005, expectile 0.7, temperature 3.0. Not given by the paper,
our choices: learning rate 3e-4 for all three networks (the IQL paper's and OfflineRL-Kit's
default), weight clip 100 (IQL's), and the reward scale: rewards are multiplied so that the spread
(max - min) of trajectory returns equals the mean trajectory length (the D4RL normalisation of the
IQL code, which maps the spread to 1000 for 1000-step episodes), keeping advantages O(1) whatever
the labeller's reward units, which matters because ``exp(beta * A)`` is not scale-free.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch as th
from torch import nn

from relam.cache import atomic_write_bytes, atomic_write_json, settings_hash
from relam.devices import resolve_device as _resolve_device_name
from relam.rl.policies import KeypointImageExtractor

__all__ = [
    "IQLSettings",
    "IQL",
    "IQLPolicy",
    "IQLResult",
    "expectile_loss",
    "actor_lr",
    "ACTOR_LR_SCHEDULES",
    "awr_weights",
    "extractor_space",
    "reward_scale",
    "train_iql",
    "load_policy",
    "evaluate_policy",
    "resolve_device",
    "ENCODERS",
]


#: the encoder arrangements of :class:`IQLSettings` (module docstring)
ENCODERS = ("separate", "shared", "frozen")

#: :attr:`IQLSettings.actor_lr_schedule` values
ACTOR_LR_SCHEDULES = ("constant", "cosine")

#: settings that may differ between a checkpoint and the run resuming it
_RESUMABLE = ("epochs", "device")


def resolve_device(device: str = "auto") -> th.device:
    """:func:`relam.devices.resolve_device` (the project's one "auto" rule) as a ``torch.device``."""
    return th.device(_resolve_device_name(device))


@dataclass(frozen=True)
class IQLSettings:
    """IQL hyper-parameters (appendix C defaults; see the module docstring for our own choices)."""

    batch_size: int = 64
    steps_per_epoch: int = 2000
    epochs: int = 50
    gamma: float = 0.99
    tau: float = 0.005
    expectile: float = 0.7
    temperature: float = 3.0
    lr: float = 3e-4
    max_weight: float = 100.0
    hidden: tuple[int, ...] = (256, 256)
    image_dim: int = 256
    point_hidden: tuple[int, ...] = (128, 128)
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    #: "auto" (spread of returns -> mean length) or a number multiplying the labelled rewards.
    reward_scale: float | str = "auto"
    seed: int = 0
    torch_threads: int = 1
    #: "separate" | "shared" | "frozen" (module docstring)
    encoder: str = "separate"
    #: "frozen": gradient steps the shared encoder is trained before it is frozen (0: frozen at init)
    encoder_steps: int = 0
    #: the actor's learning rate over the run: "constant", or "cosine" (annealed from ``lr`` to 0
    #: over epochs x steps_per_epoch, as the original IQL and OfflineRL-Kit's run_iql do; the
    #: policy then settles instead of moving between evaluations)
    actor_lr_schedule: str = "constant"
    #: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...; not part of a checkpoint's identity
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.steps_per_epoch < 1 or self.epochs < 1:
            raise ValueError("IQLSettings: batch_size, steps_per_epoch and epochs must be >= 1")
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"IQLSettings.expectile={self.expectile}: must be in (0, 1)")
        if not 0.0 < self.tau <= 1.0 or not 0.0 <= self.gamma < 1.0:
            raise ValueError("IQLSettings: tau must be in (0, 1] and gamma in [0, 1)")
        if not (self.reward_scale == "auto" or isinstance(self.reward_scale, (int, float))):
            raise ValueError(f"IQLSettings.reward_scale={self.reward_scale!r}: 'auto' or a number")
        if self.encoder not in ENCODERS:
            raise ValueError(f"IQLSettings.encoder={self.encoder!r}: one of {', '.join(ENCODERS)}")
        if self.actor_lr_schedule not in ACTOR_LR_SCHEDULES:
            raise ValueError(f"IQLSettings.actor_lr_schedule={self.actor_lr_schedule!r}: one of "
                             f"{', '.join(ACTOR_LR_SCHEDULES)}")
        if self.encoder_steps < 0 or (self.encoder_steps and self.encoder != "frozen"):
            raise ValueError(f"IQLSettings.encoder_steps={self.encoder_steps}: >= 0, and only with encoder='frozen'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- pure pieces


def actor_lr(settings: IQLSettings, step: int) -> float:
    """The actor's learning rate at gradient step ``step`` (0-based) under ``settings.actor_lr_schedule``.

    A function of the step alone, so a resumed run continues the schedule where it stopped."""
    if settings.actor_lr_schedule == "constant":
        return settings.lr
    total = settings.epochs * settings.steps_per_epoch
    return 0.5 * settings.lr * (1.0 + math.cos(math.pi * min(step, total) / total))


def expectile_loss(diff: th.Tensor, expectile: float) -> th.Tensor:
    """Asymmetric squared loss ``|tau - 1(u < 0)| u^2`` (mean); its minimiser is the tau-expectile."""
    weight = th.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def awr_weights(advantage: th.Tensor, temperature: float, max_weight: float) -> th.Tensor:
    """Advantage weights ``min(exp(beta A), w_max)`` of the policy extraction step."""
    return th.exp(temperature * advantage).clamp(max=max_weight)


def reward_scale(rewards: np.ndarray, lengths: np.ndarray, setting: float | str = "auto") -> float:
    """Multiplier for the labelled rewards (see the module docstring)."""
    if setting != "auto":
        return float(setting)
    offs = np.concatenate([[0], np.cumsum(lengths)])
    rets = np.array([rewards[a:b].sum() for a, b in zip(offs[:-1], offs[1:])])
    spread = float(rets.max() - rets.min()) if len(rets) else 0.0
    return float(np.mean(lengths)) / spread if spread > 1e-8 else 1.0


def extractor_space(vector_dims: dict[str, int], image_shape: tuple[int, int, int] | None) -> gym.spaces.Dict:
    """The Dict space the shared extractor is built on: ``image`` (C,H,W), ``keypoints``, ``target``.

    ``keypoints`` gathers every vector entry but ``target`` (sorted by name, ``keypoints`` first);
    ``target`` may be empty for methods without one; with no vector entry at all ``keypoints`` is a
    single constant 0.
    """
    n_point = sum(d for k, d in vector_dims.items() if k != "target")
    if n_point + vector_dims.get("target", 0) == 0:
        n_point = 1  # image-only methods: one constant 0 input keeps the point MLP well-formed
    box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)  # noqa: E731
    spaces: dict[str, gym.spaces.Space] = {}
    if image_shape is not None:
        spaces["image"] = gym.spaces.Box(0, 255, image_shape, np.uint8)
    spaces["keypoints"] = box(n_point)
    spaces["target"] = box(vector_dims.get("target", 0))
    return gym.spaces.Dict(spaces)


def _point_order(keys: Sequence[str]) -> list[str]:
    rest = sorted(k for k in keys if k not in ("keypoints", "target", "image"))
    return (["keypoints"] if "keypoints" in keys else []) + rest


# --------------------------------------------------------------------------- networks


def _mlp(n_in: int, hidden: Sequence[int], n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, int(h)), nn.ReLU()]
        n_in = int(h)
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class _Encoded(nn.Module):
    """Extractor + head(s): the common shape of actor, critics and value. With a shared CNN the
    extractor is the network's own keypoint MLP and ``n_in_extra`` counts the CNN's features."""

    def __init__(self, space: gym.spaces.Dict, s: IQLSettings, n_in_extra: int, n_out: int, heads: int = 1):
        super().__init__()
        self.enc = KeypointImageExtractor(space, image_dim=s.image_dim, point_hidden=s.point_hidden)
        self.heads = nn.ModuleList(_mlp(self.enc.features_dim + n_in_extra, s.hidden, n_out) for _ in range(heads))


def _adam(params: Any, lr: float) -> th.optim.Adam:
    # torch's fused Adam: one kernel for all parameters (CPU and CUDA), instead of one per tensor
    try:
        return th.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # a torch build without the fused kernel for this device
        return th.optim.Adam(params, lr=lr)


class IQL(nn.Module):
    """The networks, optimisers and one-step update of IQL (``settings.encoder``: module docstring)."""

    def __init__(self, vector_dims: dict[str, int], image_shape: tuple[int, int, int] | None, action_dim: int,
                 settings: IQLSettings, action_mean: np.ndarray | None = None, action_std: np.ndarray | None = None,
                 device: str | th.device | None = None):
        super().__init__()
        self.settings = s = settings
        self.vector_dims = dict(vector_dims)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.action_dim = int(action_dim)
        space = extractor_space(self.vector_dims, self.image_shape)
        #: the CNN shared by the three networks ("shared"/"frozen" with an image; else None, and each
        #: network's extractor reads the image itself)
        self.encoder: KeypointImageExtractor | None = None
        n_img = 0
        if s.encoder != "separate" and self.image_shape is not None:
            self.encoder = KeypointImageExtractor(gym.spaces.Dict({"image": space["image"]}), image_dim=s.image_dim)
            space, n_img = extractor_space(self.vector_dims, None), self.encoder.features_dim
        self.actor = _Encoded(space, s, n_img, action_dim)
        self.critic = _Encoded(space, s, n_img + action_dim, 1, heads=2)
        self.value = _Encoded(space, s, n_img, 1)
        self.log_std = nn.Parameter(th.zeros(action_dim))
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        mean = np.zeros(action_dim) if action_mean is None else np.asarray(action_mean)
        std = np.ones(action_dim) if action_std is None else np.maximum(np.asarray(action_std), 1e-3)
        self.register_buffer("action_mean", th.as_tensor(mean, dtype=th.float32))
        self.register_buffer("action_std", th.as_tensor(std, dtype=th.float32))
        self.device = resolve_device(s.device) if device is None else th.device(device)
        self.to(self.device)
        critic_params = list(self.critic.parameters()) + (list(self.encoder.parameters()) if self.encoder else [])
        self.opt_actor = _adam(list(self.actor.parameters()) + [self.log_std], s.lr)
        self.opt_critic = _adam(critic_params, s.lr)
        self.opt_value = _adam(self.value.parameters(), s.lr)
        #: "frozen" after encoder_steps: the CNN no longer trains (its features come precomputed)
        self.image_frozen = False

    # -- observation plumbing
    def features_in(self, obs: dict[str, th.Tensor]) -> dict[str, th.Tensor]:
        """Batch of dataset observations -> the extractor's input (image float CHW in [0, 1]).

        A batch may carry ``image_features`` (precomputed CNN output, :meth:`image_features`)
        instead of ``image``; it is passed through."""
        b = next(iter(obs.values())).shape[0]
        dev = self.device
        keys = _point_order(list(self.vector_dims))
        pts = [obs[k].to(dev).float() for k in keys]
        n_pt = 0 if pts or "target" in self.vector_dims else 1
        out = {"keypoints": th.cat(pts, 1) if pts else th.zeros(b, n_pt, device=dev),
               "target": obs["target"].to(dev).float() if "target" in self.vector_dims else th.zeros(b, 0, device=dev)}
        if "image_features" in obs:
            out["image_features"] = obs["image_features"].to(dev)
        elif self.image_shape is not None:
            img = obs["image"].to(dev)
            if img.shape[-1] == 3 and img.shape[1] != 3:  # (B,H,W,3) -> (B,3,H,W)
                img = img.permute(0, 3, 1, 2)
            out["image"] = img.float() / 255.0
        return out

    def _extract(self, enc: KeypointImageExtractor, x: dict[str, th.Tensor]) -> th.Tensor:
        feats = []
        if enc.cnn is not None:
            feats.append(x["image_features"] if "image_features" in x else enc.cnn(x["image"]))
        if enc.point_mlp is not None:
            feats.append(enc.point_mlp(th.cat([x["keypoints"], x["target"]], dim=1)))
        return th.cat(feats, dim=1)

    def _features(self, net: _Encoded, x: dict[str, th.Tensor]) -> th.Tensor:
        """The network's features: its own extractor's, after the shared CNN's (if any; taken from
        ``x["image_features"]`` when the batch carries them)."""
        f = self._extract(net.enc, x)
        if self.encoder is not None:
            img = x["image_features"] if "image_features" in x else self.encoder.cnn(x["image"])
            f = th.cat([img, f], 1)
        return f

    @th.no_grad()
    def image_features(self, images: th.Tensor, chunk: int = 512) -> th.Tensor:
        """CNN features of uint8 images (N,H,W,3) or (N,3,H,W) through the shared encoder, in chunks."""
        if self.encoder is None or self.encoder.cnn is None:
            raise ValueError("IQL.image_features: needs encoder 'shared' or 'frozen' and an image")
        out = []
        for i in range(0, len(images), chunk):
            img = images[i:i + chunk].to(self.device)
            if img.shape[-1] == 3 and img.shape[1] != 3:
                img = img.permute(0, 3, 1, 2)
            out.append(self.encoder.cnn(img.float() / 255.0))
        return th.cat(out) if out else th.zeros(0, self.settings.image_dim, device=self.device)

    def freeze_image_encoder(self) -> None:
        """Stop training the shared CNN (encoder 'frozen'): it gets no gradient from here on (its
        parameters stay in the critic's optimiser, which skips them)."""
        if self.encoder is None or self.encoder.cnn is None:
            return
        self.encoder.cnn.requires_grad_(False)
        self.image_frozen = True

    def q_values(self, net: _Encoded, x: dict[str, th.Tensor], action: th.Tensor) -> list[th.Tensor]:
        f = th.cat([self._features(net, x), action], 1)
        return [h(f).squeeze(-1) for h in net.heads]

    def v(self, x: dict[str, th.Tensor]) -> th.Tensor:
        return self.value.heads[0](self._features(self.value, x)).squeeze(-1)

    def dist(self, x: dict[str, th.Tensor]) -> th.distributions.Normal:
        mean = self.actor.heads[0](self._features(self.actor, x))
        log_std = self.log_std.clamp(self.settings.log_std_min, self.settings.log_std_max)
        return th.distributions.Normal(mean, log_std.exp().expand_as(mean), validate_args=False)

    def normalise_action(self, a: th.Tensor) -> th.Tensor:
        return (a.to(self.device) - self.action_mean) / self.action_std

    @th.no_grad()
    def act(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """Deterministic action (the Gaussian's mean) in the environment's units."""
        return self.dist(self.features_in(obs)).mean * self.action_std + self.action_mean

    # -- one gradient step
    def update(self, obs: dict[str, th.Tensor], action: th.Tensor, reward: th.Tensor, next_obs: dict[str, th.Tensor],
               terminal: th.Tensor) -> dict[str, float]:
        s = self.settings
        x, xn = self.features_in(obs), self.features_in(next_obs)
        a = self.normalise_action(action)
        reward, terminal = reward.to(self.device), terminal.to(self.device)
        if self.encoder is None:  # "separate": each network reads the observation through its own encoder
            f_q, f_t, f_v, f_pi, f_next = x, x, x, x, xn
        else:  # "shared"/"frozen": one CNN pass per batch, trained by the critic loss only
            img = x["image_features"] if "image_features" in x else self.encoder.cnn(x["image"])
            with th.no_grad():
                img_next = xn["image_features"] if "image_features" in xn else self.encoder.cnn(xn["image"])
            f_q = {**x, "image_features": img}
            f_t = f_v = f_pi = {**x, "image_features": img.detach()}
            f_next = {**xn, "image_features": img_next}
        with th.no_grad():
            q_t = th.min(*self.q_values(self.critic_target, f_t, a))
            # the TD target uses V(s') before this step's updates (as CORL's and d3rlpy's IQL do)
            y = reward + s.gamma * (1.0 - terminal) * self.v(f_next)
        # 1. value: expectile regression onto the target critics
        v = self.v(f_v)
        adv = (q_t - v).detach()
        v_loss = expectile_loss(q_t - v, s.expectile)
        # 2. policy: advantage-weighted log-likelihood of the dataset action (V before this step's
        #    update, as CORL's IQL does)
        w = awr_weights(adv, s.temperature, s.max_weight)
        logp = self.dist(f_pi).log_prob(a).sum(-1)
        pi_loss = -(w * logp).mean()
        # 3. critics: one-step TD onto V(s')
        q1, q2 = self.q_values(self.critic, f_q, a)
        q_loss = ((q1 - y).pow(2) + (q2 - y).pow(2)).mean()
        # the three losses touch disjoint parameters (the value and actor see detached inputs), so
        # one backward pass of their sum gives each network exactly its own loss's gradient
        for opt in (self.opt_value, self.opt_actor, self.opt_critic):
            opt.zero_grad(set_to_none=True)
        (v_loss + pi_loss + q_loss).backward()
        for opt in (self.opt_value, self.opt_actor, self.opt_critic):
            opt.step()
        # 4. target critics
        with th.no_grad():
            tp, op = list(self.critic_target.parameters()), list(self.critic.parameters())
            th._foreach_mul_(tp, 1.0 - s.tau)
            th._foreach_add_(tp, op, alpha=s.tau)
        stats = th.stack([v_loss, q_loss, pi_loss, adv.mean(), q1.mean(), w.mean()]).tolist()  # one sync
        return dict(zip(("v_loss", "q_loss", "pi_loss", "adv_mean", "q_mean", "weight_mean"), stats))


# --------------------------------------------------------------------------- the policy for evaluation


class IQLPolicy:
    """``policy(obs) -> action`` over one observation dict (image CHW or HWC, vectors flat)."""

    def __init__(self, agent: IQL):
        self.agent = agent

    def __call__(self, obs: dict[str, Any]) -> np.ndarray:
        batch = {k: th.as_tensor(np.asarray(v))[None] for k, v in obs.items()
                 if k == "image" or k in self.agent.vector_dims}
        missing = [k for k in list(self.agent.vector_dims) + (["image"] if self.agent.image_shape else []) if k not in batch]
        if missing:
            raise KeyError(f"IQLPolicy: observation lacks {missing} (the policy was trained on "
                           f"{sorted(self.agent.vector_dims)} + image)")
        if "image" in batch:
            img = batch["image"]
            if img.shape[1] != 3 and img.shape[-1] == 3:
                img = img.permute(0, 3, 1, 2)
            if tuple(img.shape[1:]) != self.agent.image_shape:
                raise ValueError(f"IQLPolicy: image {tuple(img.shape[1:])} but the policy was trained on "
                                 f"{self.agent.image_shape} (C,H,W); wrap the env in PolicyImageSize({self.agent.image_shape[-1]})")
            batch["image"] = img
        return self.agent.act(batch)[0].cpu().numpy().astype(np.float32)


# --------------------------------------------------------------------------- training


@dataclass
class IQLResult:
    """Outcome of :func:`train_iql`: the curve [(gradient step, success rate)] and the final number."""

    final_success: float | None
    curve: list[tuple[int, float]]
    log: list[dict[str, float]]
    policy: IQLPolicy
    out_dir: Path
    steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def _dataset_fingerprint(ds: Any) -> str:
    return settings_hash({"n": int(ds.n_transitions), "lengths": np.asarray(ds.lengths).tolist(),
                          "rewards": float(np.asarray(ds.rewards, np.float64).sum()),
                          "actions": float(np.asarray(ds.actions, np.float64).sum()),
                          "keys": sorted(ds.observations)})


def _save_checkpoint(path: Path, agent: IQL, state: dict) -> None:
    buf = io.BytesIO()
    th.save({"model": agent.state_dict(), "opt_actor": agent.opt_actor.state_dict(),
             "opt_critic": agent.opt_critic.state_dict(), "opt_value": agent.opt_value.state_dict(),
             "torch_rng": th.get_rng_state(), **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def _plot(log: list[dict], curve: list[tuple[int, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    if curve:
        ax[0].plot(*zip(*curve), marker="o", ms=3)
    ax[0].set_ylim(-0.02, 1.02)
    ax[0].set_xlabel("gradient steps")
    ax[0].set_ylabel("success rate")
    ax[0].grid(alpha=0.3)
    if log:
        steps = [r["step"] for r in log]
        for k in ("v_loss", "q_loss", "pi_loss"):
            ax[1].plot(steps, [r[k] for r in log], label=k)
        ax[1].set_yscale("symlog")
        ax[1].legend(fontsize=7)
    ax[1].set_xlabel("gradient steps")
    ax[1].grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _success_of(res: Any) -> tuple[float, dict[str, float]]:
    if isinstance(res, (int, float, np.floating)):
        return float(res), {}
    extra = {"eval_mean_stage": float(getattr(res, "mean_stage", float("nan")))}
    if getattr(res, "returns", None):
        extra["eval_return"] = float(np.mean(res.returns))
    return float(res.success_rate), extra


def train_iql(dataset: Any, settings: IQLSettings = IQLSettings(), out_dir: str | Path | None = None,
              eval_fn: Callable[[IQLPolicy], Any] | None = None, eval_every_epochs: int = 1,
              progress: bool = True, tensorboard: bool | str | Path | None = None) -> IQLResult:
    """Train IQL on an :class:`relam.offline.OfflineDataset`; resumable from ``out_dir``.

    After every ``eval_every_epochs`` epochs (and always after the last) ``eval_fn(policy)`` is
    called; it returns a success rate or an object with ``success_rate`` (e.g.
    :class:`relam.rl.evaluation.EvalResult`). The last evaluation is the final number.

    ``out_dir`` gets ``checkpoint.pt`` (written atomically after every epoch; a rerun with the same
    settings and dataset continues from it, bit for bit as if never stopped; ``epochs`` may be
    raised to extend a finished run), ``log.csv`` (one row per epoch), ``curve.png`` and
    ``result.json``. With ``out_dir=None`` nothing is written.

    ``tensorboard``: True (``out_dir/tensorboard``) or a folder gives a TensorBoard log of every
    epoch's row through SB3's logger; None follows ``$RELAM_TENSORBOARD`` (:mod:`relam.tblog`).

    ``settings.device`` (default ``"auto"``): the whole dataset and the networks go to that device
    once; a checkpoint resumes on another device. ``settings.encoder="frozen"``: after
    ``encoder_steps`` steps the CNN features of every frame are computed once and the rest of the
    run trains on them (the freeze is recomputed, not stored, when a run resumes past it).
    """
    from tqdm.auto import tqdm

    from relam.tblog import log_scalars, tensorboard_logger

    s = settings
    if eval_every_epochs < 1:
        raise ValueError(f"train_iql: eval_every_epochs={eval_every_epochs} must be >= 1")
    th.set_num_threads(int(s.torch_threads))
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt" if out is not None else None
    fingerprint = _dataset_fingerprint(dataset)
    dev = resolve_device(s.device)

    # data as tensors on the training device, once (images stay uint8; converted per batch)
    obs_np = dataset.observations
    image = obs_np.get("image")
    vec_keys = [k for k in obs_np if k != "image"]
    obs_t = {k: th.as_tensor(np.ascontiguousarray(obs_np[k])).to(dev) for k in obs_np}
    idx, nidx = (th.as_tensor(a).to(dev) for a in dataset.transition_indices())
    scale = reward_scale(np.asarray(dataset.rewards), np.asarray(dataset.lengths), s.reward_scale)
    rew = th.as_tensor(np.asarray(dataset.rewards, np.float32) * scale).to(dev)
    term = th.as_tensor(np.asarray(dataset.terminals, np.float32)).to(dev)
    act_np = np.asarray(dataset.actions, np.float32)
    act = th.as_tensor(act_np).to(dev)
    n = len(rew)
    if n == 0:
        raise ValueError("train_iql: the dataset has no transitions")

    th.manual_seed(s.seed)
    img_shape = (3, image.shape[1], image.shape[2]) if image is not None else None
    agent = IQL({k: int(obs_np[k].shape[1]) for k in vec_keys}, img_shape, act.shape[1], s,
                act_np.mean(0), act_np.std(0), device=dev)
    rng = np.random.default_rng(s.seed)
    epoch0, curve, log = 0, [], []
    if ckpt is not None and ckpt.exists():
        st = th.load(ckpt, weights_only=False, map_location=dev)
        if not _same_settings(st["settings"], s) or st["fingerprint"] != fingerprint:
            raise ValueError(f"train_iql: {ckpt} was written with other settings or another dataset "
                             f"(only {' and '.join(map(repr, _RESUMABLE))} may change on resume); delete it or "
                             f"pick another out_dir")
        agent.load_state_dict(st["model"])
        agent.opt_actor.load_state_dict(st["opt_actor"])
        agent.opt_critic.load_state_dict(st["opt_critic"])
        agent.opt_value.load_state_dict(st["opt_value"])
        th.set_rng_state(st["torch_rng"].cpu())
        rng.bit_generator.state = st["np_rng"]
        epoch0, curve, log = int(st["epoch"]), [tuple(c) for c in st["curve"]], list(st["log"])
    policy = IQLPolicy(agent)
    tb = tensorboard_logger(tensorboard, out, "train_iql")

    total = s.epochs * s.steps_per_epoch
    bar = tqdm(total=total, initial=epoch0 * s.steps_per_epoch, desc="IQL", disable=not progress, unit="step")
    t0 = time.time()
    freeze_at = s.encoder_steps if s.encoder == "frozen" and image is not None else None
    step = epoch0 * s.steps_per_epoch
    for epoch in range(epoch0, s.epochs):
        sums: dict[str, float] = {}
        agent.train()
        for _ in range(s.steps_per_epoch):
            if freeze_at is not None and step >= freeze_at and not agent.image_frozen:
                # the CNN stops here: every frame's image features once, then MLP-only steps
                agent.freeze_image_encoder()
                obs_t = {"image_features": agent.image_features(obs_t.pop("image")), **obs_t}
            if s.actor_lr_schedule != "constant":
                for group in agent.opt_actor.param_groups:
                    group["lr"] = actor_lr(s, step)
            b = th.as_tensor(rng.integers(0, n, s.batch_size)).to(dev)
            o, no = idx[b], nidx[b]
            stats = agent.update({k: v[o] for k, v in obs_t.items()}, act[b], rew[b],
                                 {k: v[no] for k, v in obs_t.items()}, term[b])
            step += 1
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.update(1)
        step = (epoch + 1) * s.steps_per_epoch
        row: dict[str, float] = {"epoch": epoch + 1, "step": step,
                                 **{k: v / s.steps_per_epoch for k, v in sums.items()}}
        last = epoch + 1 == s.epochs
        if eval_fn is not None and ((epoch + 1) % eval_every_epochs == 0 or last):
            agent.eval()
            rate, extra = _success_of(eval_fn(policy))
            curve.append((step, rate))
            row.update(success=rate, **extra)
            bar.set_postfix(success=f"{rate:.2f}", q=f"{row['q_mean']:.2f}")
        row["seconds"] = time.time() - t0
        log.append(row)
        if tb is not None:
            log_scalars(tb, "iql", row, step)
        if out is not None:
            _save_checkpoint(ckpt, agent, {"settings": s.to_dict(), "fingerprint": fingerprint, "epoch": epoch + 1,
                                           "curve": curve, "log": log, "np_rng": rng.bit_generator.state})
            keys = sorted({k for r in log for k in r})
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=keys)
            w.writeheader()
            w.writerows(log)
            atomic_write_bytes(out / "log.csv", buf.getvalue().encode())
            _plot(log, curve, out / "curve.png", f"IQL {dataset.meta.get('task', '')} {dataset.meta.get('labeller', '')}")
    bar.close()
    if tb is not None:
        tb.close()
    agent.eval()
    final = curve[-1][1] if curve else None
    result = IQLResult(final, curve, log, policy, out if out is not None else Path("."), s.epochs * s.steps_per_epoch,
                       {"reward_scale": scale})
    if out is not None:
        atomic_write_json(out / "result.json", {"final_success": final, "curve": curve, "reward_scale": scale,
                                                "settings": s.to_dict(), "steps": result.steps})
    return result


def _same_settings(saved: dict, s: IQLSettings) -> bool:
    """Whether a checkpoint's settings are ``s`` up to :data:`_RESUMABLE` (keys a checkpoint predates
    count as their defaults)."""
    default = {f.name: f.default for f in dataclasses.fields(IQLSettings)}
    old = {**default, **saved}
    return {k: v for k, v in old.items() if k not in _RESUMABLE} == \
        {k: v for k, v in s.to_dict().items() if k not in _RESUMABLE}


def load_policy(checkpoint: str | Path, dataset: Any, device: str = "auto") -> IQLPolicy:
    """Rebuild the trained policy from ``checkpoint.pt`` (needs the dataset for shapes and action stats).

    ``device``: where the policy runs (``"auto"``: CUDA when available), whatever it trained on."""
    st = th.load(checkpoint, weights_only=False, map_location="cpu")
    s = IQLSettings(**{**{k: tuple(v) if isinstance(v, list) else v for k, v in st["settings"].items()},
                       "device": device})
    obs = dataset.observations
    img = obs.get("image")
    agent = IQL({k: int(v.shape[1]) for k, v in obs.items() if k != "image"},
                (3, img.shape[1], img.shape[2]) if img is not None else None, dataset.actions.shape[1], s)
    agent.load_state_dict(st["model"])
    return IQLPolicy(agent.eval())


# --------------------------------------------------------------------------- evaluation


def evaluate_policy(policy: Callable[[Any], np.ndarray], make_eval_env: Callable[[int], Any], seeds: Sequence[int],
                    max_steps: int | None = None):
    """Success rate of ``policy`` over seeded episodes: ``env = make_eval_env(seed)``, ``env.reset(seed=seed)``.

    Success counts at any step (``info["success"]``). ``make_eval_env`` owns the envs (it may build
    a new one per seed or return one shared env); this function never closes them.
    """
    from relam.rl.evaluation import EvalResult, run_episode

    res = EvalResult([], [], [], [], [])
    for sd in seeds:
        res.add(sd, run_episode(policy, make_eval_env(int(sd)), int(sd), max_steps))
    return res
