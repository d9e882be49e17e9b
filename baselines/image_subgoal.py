"""Image Subgoal (IS) and Oracle baselines (paper section 4.2, Fig. 6c).

IS is the ReLAM recipe with *images* in place of keypoints:

- **High level.** A conditional flow-matching model (rectified flow) generates the next subgoal
  image autoregressively from the initial image and the previous subgoal (the initial image for the
  first), trained on the keyframe images of the expert demos (:mod:`relam.subgoals`). The net predicts
  the clean image (x-prediction, see :func:`flow_matching_loss`); sampling is a few Euler steps
  from Gaussian noise. Measured (``python -m baselines.image_subgoal drawer-open-v3 --train 16
  --test 4 --steps 1200``, 4 held-out demos): mean absolute pixel error of generated vs true
  subgoals 8.2 / 255 at 64 px, against 10.8 for copying the initial frame and 4.3 for the mean
  training image of subgoal k -- the generated images put the arm roughly right but are blurrier
  and less accurate than a per-index average (a known weakness of pixel subgoals that the paper's
  Fig. 6c comparison is about).
- **End of the sequence.** The model generates a fixed number of subgoals per task: the median
  keyframe count of its training set (``SubgoalImageModel.n_subgoals``). It is conditioned on the
  subgoal index and on an ``is_last`` flag (true for a demo's final keyframe in training, for the
  K-th generated one at inference), so the last generated image is always "the goal" even when a
  demo had more or fewer keyframes than K. Why not a learned stop classifier: keyframe counts on
  the Meta-World demos vary by at most one around the median (4-5 on drawer-open), so a classifier
  would learn little beyond the median, and a fixed K keeps the policy's task well defined.
- **Reward.** Cosine similarity between the current observation and the target image in an image
  embedding space (:mod:`baselines.embedding`); the distance ``1 - cos`` goes through ReLAM's own
  reward shape and stage logic (:func:`relam.reward.stage_reward`: shaped distance, per-step
  penalty per unreached subgoal, stage bonus, final bonus). ``similarity >= similarity_threshold``
  ends a stage and the next image becomes the target.
- **Low level.** The policy sees ``{"image": uint8 (3,64,64), "target_image": uint8 (3,64,64)}``.
- **Offline (ManiSkill rows, appendix A.4).** "For IS and Oracle baseline, we assign rewards in the
  same way to ReLAM": :class:`ImageSubgoalLabeller` runs the same stage machine over the offline
  set's recorded frames (plan from each trajectory's first frame), IQL trains on it, and the
  policy is evaluated through :class:`ImageSubgoalWrapper`. The IQL policy takes the current image
  plus the current and target *embeddings* (``observe_embeddings``): the target image through the
  reward's frozen embedding (why: see :class:`ImageSubgoalLabeller`).

Oracle is IS with the ground-truth subgoal images: the task's expert is rolled out from the same
initial state (``relam.demos.rollout_expert`` in a private env) and its keyframe images are taken
with the ReLAM keyframe selection (:func:`relam.subgoals.subgoal_sequence`); everything else is
unchanged (:class:`OracleSubgoalPlanner`).

Resolution: the generator works at 32x32 (it trains in minutes on 2 shared CPU cores; 64x64 was
about 4x slower a step); its images are upsampled to the policy's 64x64. The default embedding
works at 32x32 too, so the reward compares like with like.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.embedding import ImageEmbedding, cosine_similarity, resize_images
from relam.cache import atomic_torch_save, torch_bytes
from relam.reward import RewardSettings, StepOutcome, stage_reward
from relam.scales import ScaleTable
from relam.wrappers import SeededEpisodes

__all__ = [
    "FlowSettings",
    "SubgoalImageModel",
    "flow_matching_loss",
    "euler_sample",
    "predict_clean",
    "training_pairs",
    "ImageSubgoalPlanner",
    "OracleSubgoalPlanner",
    "ImageRewardSettings",
    "ImageSubgoalReward",
    "ImageSubgoalWrapper",
    "label",
    "label_details",
    "ImageSubgoalLabeller",
    "calibrate_threshold",
    "pixel_error",
]


# =============================================================================== the generator


@dataclass(frozen=True)
class FlowSettings:
    """Knobs of the subgoal image generator (hashed into its cache key)."""

    image_size: int = 32  #: generator resolution (multiple of 4)
    width: int = 24  #: base channel count of the UNet
    max_subgoals: int = 8  #: size of the subgoal-index embedding (later indices share the last)
    train_steps: int = 1200
    batch_size: int = 16
    lr: float = 2e-3
    euler_steps: int = 8  #: Euler steps when sampling
    output_size: int = 64  #: size of the images handed to the policy / reward
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size % 4 or self.image_size < 8:
            raise ValueError(f"FlowSettings.image_size={self.image_size}: must be a multiple of 4, >= 8")
        if self.width % 8:
            raise ValueError(f"FlowSettings.width={self.width}: must be a multiple of 8 (GroupNorm)")
        if self.euler_steps < 1 or self.max_subgoals < 1:
            raise ValueError("FlowSettings.euler_steps and max_subgoals must be >= 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the flow time t in [0, 1] (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
    ang = (t[:, None] * 1000.0) * freqs[None]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the conditioning vector as a FiLM scale/shift."""

    def __init__(self, cin: int, cout: int, emb: int):
        super().__init__()
        self.n1 = nn.GroupNorm(8, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.film = nn.Linear(emb, 2 * cout)
        self.n2 = nn.GroupNorm(8, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.film(e)[:, :, None, None].chunk(2, dim=1)
        h = self.c2(F.silu(self.n2(h) * (1 + scale) + shift))
        return h + self.skip(x)


class _FlowUNet(nn.Module):
    """Velocity field v(x_t, t | initial image, previous subgoal, index, is_last).

    The two conditioning images enter as extra input channels (3 + 3 + 3 = 9), so the net can
    copy the static background straight from them; a two-level UNet (s, s/2, s/4).
    """

    def __init__(self, width: int, max_subgoals: int):
        super().__init__()
        w, e = width, 4 * width
        self.t_mlp = nn.Sequential(nn.Linear(w, e), nn.SiLU(), nn.Linear(e, e))
        self.k_emb = nn.Embedding(max_subgoals, e)
        self.last_emb = nn.Embedding(2, e)
        self.inp = nn.Conv2d(9, w, 3, 1, 1)
        self.d1 = _ResBlock(w, w, e)
        self.down1 = nn.Conv2d(w, 2 * w, 4, 2, 1)
        self.d2 = _ResBlock(2 * w, 2 * w, e)
        self.down2 = nn.Conv2d(2 * w, 2 * w, 4, 2, 1)
        self.mid1 = _ResBlock(2 * w, 2 * w, e)
        self.mid2 = _ResBlock(2 * w, 2 * w, e)
        self.up2 = nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1)
        self.u2 = _ResBlock(4 * w, 2 * w, e)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 4, 2, 1)
        self.u1 = _ResBlock(2 * w, w, e)
        self.out = nn.Sequential(nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, 3, 3, 1, 1))
        self.width = w

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, k: torch.Tensor,
                last: torch.Tensor) -> torch.Tensor:
        e = self.t_mlp(_time_features(t, self.width)) + self.k_emb(k) + self.last_emb(last)
        h1 = self.d1(self.inp(torch.cat([x, cond], dim=1)), e)
        h2 = self.d2(self.down1(h1), e)
        h = self.mid2(self.mid1(self.down2(h2), e), e)
        h = self.u2(torch.cat([self.up2(h), h2], dim=1), e)
        h = self.u1(torch.cat([self.up1(h), h1], dim=1), e)
        return self.out(h)


def _to_unit(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float (B,3,size,size) in [-1, 1]."""
    small = resize_images(images, size)
    return torch.from_numpy(np.ascontiguousarray(small)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def training_pairs(sequences: Sequence[Any], size: int, max_subgoals: int) -> dict[str, torch.Tensor]:
    """Teacher-forced examples from subgoal sequences (anything with ``initial_frame`` and
    ``keyframe_images``): for subgoal k of a demo with S keyframes, condition = (initial image,
    keyframe k-1 or the initial image for k = 0), index ``min(k, max_subgoals-1)``,
    ``is_last = k == S-1``; target = keyframe k. Images resized to ``size``."""
    cond, tgt, ks, last = [], [], [], []
    for seq in sequences:
        kf = np.asarray(seq.keyframe_images)
        if kf.ndim != 4 or len(kf) < 1:
            raise ValueError("training_pairs: every sequence needs keyframe_images (S>=1,H,W,3)")
        init = _to_unit(np.asarray(seq.initial_frame)[None], size)
        imgs = _to_unit(kf, size)
        prev = torch.cat([init, imgs[:-1]])
        s = len(kf)
        cond.append(torch.cat([init.expand(s, -1, -1, -1), prev], dim=1))
        tgt.append(imgs)
        ks.append(torch.clamp(torch.arange(s), max=max_subgoals - 1))
        last.append((torch.arange(s) == s - 1).long())
    if not tgt:
        raise ValueError("training_pairs: no sequences given")
    return {"cond": torch.cat(cond), "target": torch.cat(tgt), "k": torch.cat(ks),
            "last": torch.cat(last)}


def flow_matching_loss(net: nn.Module, x1: torch.Tensor, cond: torch.Tensor, k: torch.Tensor,
                       last: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rectified-flow loss in its x-prediction form.

    x_t = (1-t) x0 + t x1 with x0 ~ N(0, I); the net predicts the clean image x1 (as a residual
    on the previous subgoal, see :func:`predict_clean`) and the velocity follows as
    ``v = (x1_hat - x_t) / (1 - t)``. Why x- rather than v-prediction: with a small net and a few
    minutes of CPU training, predicting a clean image that mostly *is* the previous subgoal is far
    easier than predicting ``x1 - x0`` (which is mostly noise); v-prediction at the same budget
    gave images worse than copying the initial frame.
    """
    x0 = torch.randn(x1.shape, generator=gen)
    t = torch.rand(x1.shape[0], generator=gen)
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * x1
    return F.mse_loss(predict_clean(net, xt, t, cond, k, last), x1)


def predict_clean(net: nn.Module, xt: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                  k: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """The clean-image estimate: previous subgoal (cond channels 3:6) plus the net's residual."""
    return cond[:, 3:6] + net(xt, t, cond, k, last)


@torch.no_grad()
def euler_sample(net: nn.Module, cond: torch.Tensor, k: torch.Tensor, last: torch.Tensor,
                 steps: int, gen: torch.Generator) -> torch.Tensor:
    """Integrate dx/dt = v = (x1_hat - x) / (1 - t) from Gaussian noise at t=0 to t=1 with
    ``steps`` Euler steps (the last step lands exactly on x1_hat)."""
    b, _, h, w = cond.shape
    x = torch.randn((b, 3, h, w), generator=gen)
    for i in range(steps):
        t = i / steps
        x1_hat = predict_clean(net, x, torch.full((b,), t), cond, k, last)
        x = x + (x1_hat - x) / (1 - t) / steps
    return x.clamp(-1, 1)


class SubgoalImageModel:
    """The IS high level: generates K subgoal images from an initial frame (see module doc)."""

    def __init__(self, settings: FlowSettings = FlowSettings(), n_subgoals: int = 4):
        self.settings = settings
        torch.manual_seed(settings.seed)
        self.net = _FlowUNet(settings.width, settings.max_subgoals).eval()
        self.n_subgoals = int(n_subgoals)
        self.fit_loss: list[float] = []

    def fit(self, sequences: Sequence[Any], steps: int | None = None, progress: bool = True) -> list[float]:
        """Train on subgoal sequences; sets ``n_subgoals`` to their median keyframe count."""
        from tqdm.auto import tqdm

        s = self.settings
        steps = s.train_steps if steps is None else int(steps)
        data = training_pairs(sequences, s.image_size, s.max_subgoals)
        self.n_subgoals = max(1, int(np.round(np.median([len(q.keyframe_images) for q in sequences]))))
        gen = torch.Generator().manual_seed(s.seed)
        net = self.net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=max(steps, 1),
                                                    pct_start=0.1)
        n = len(data["target"])
        bar = tqdm(range(steps), desc="IS flow model", disable=not progress, leave=False)
        for _ in bar:
            idx = torch.randint(n, (min(s.batch_size, n),), generator=gen)
            loss = flow_matching_loss(net, data["target"][idx], data["cond"][idx], data["k"][idx],
                                      data["last"][idx], gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            self.fit_loss.append(float(loss.detach()))
            bar.set_postfix(loss=f"{self.fit_loss[-1]:.4f}")
        net.eval()
        return self.fit_loss

    @torch.no_grad()
    def generate(self, initial_frame: np.ndarray, n: int | None = None, seed: int = 0,
                 size: int | None = None) -> np.ndarray:
        """``n`` (default ``n_subgoals``) subgoal images, uint8 (n, size, size, 3), size default
        ``settings.output_size``; each conditioned on the previous generated one."""
        s = self.settings
        n = self.n_subgoals if n is None else int(n)
        if n < 1:
            raise ValueError(f"SubgoalImageModel.generate: n must be >= 1, got {n}")
        size = s.output_size if size is None else int(size)
        frame = np.asarray(initial_frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"initial_frame must be uint8 (H,W,3), got {frame.dtype} {frame.shape}")
        gen = torch.Generator().manual_seed(int(seed))
        init = _to_unit(frame[None], s.image_size)
        prev = init
        out = []
        for k in range(n):
            kk = torch.tensor([min(k, s.max_subgoals - 1)])
            last = torch.tensor([int(k == n - 1)])
            x = euler_sample(self.net, torch.cat([init, prev], dim=1), kk, last, s.euler_steps, gen)
            img = _to_uint8(x)
            out.append(img[0])
            prev = _to_unit(img, s.image_size)  # what the next step sees is a real (quantised) image
        return resize_images(np.stack(out), size)

    # -- storage
    def state(self) -> dict[str, Any]:
        return {"settings": self.settings.to_dict(), "n_subgoals": self.n_subgoals,
                "weights": {k: v.clone() for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "SubgoalImageModel":
        m = cls(FlowSettings(**state["settings"]), int(state["n_subgoals"]))
        m.net.load_state_dict(state["weights"])
        return m

    def save(self, path: str | Path) -> Path:
        return atomic_torch_save(path, self.state())

    @classmethod
    def load(cls, path: str | Path) -> "SubgoalImageModel":
        return cls.from_state(torch.load(path, weights_only=False))


def pixel_error(generated: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute pixel error (0-255 scale) between two image stacks, compared at the smaller
    of the two sizes (area-resized)."""
    g, t = np.asarray(generated), np.asarray(true)
    size = min(g.shape[-2], t.shape[-2])
    g = resize_images(g, size).astype(np.float64)
    t = resize_images(t, size).astype(np.float64)
    if g.shape != t.shape:
        raise ValueError(f"pixel_error: stacks differ in count: {g.shape} vs {t.shape}")
    return float(np.abs(g - t).mean())


# =============================================================================== planners


class ImageSubgoalPlanner:
    """IS high level: ``plan(initial_frame, task) -> list of uint8 (64,64,3) subgoal images``.

    The sampling noise is seeded with the episode seed (0 when none), so a given initial state
    always gets the same plan.
    """

    def __init__(self, model: SubgoalImageModel):
        self.model = model

    def plan(self, initial_frame: np.ndarray, task: str | None = None, *, env: Any = None,
             seed: int | None = None) -> list[np.ndarray]:
        imgs = self.model.generate(initial_frame, seed=0 if seed is None else int(seed) % (2**63))
        return list(imgs)


class OracleSubgoalPlanner:
    """Oracle high level: the true keyframe images of an expert rollout from the same start.

    For episode seed ``s`` the task's expert runs from ``reset(seed=s)`` in a private env
    (``relam.demos.rollout_expert``); keyframes come from ``relam.subgoals.subgoal_sequence``
    (the same keypoint tracks and Eq. 2 selection as the subgoal dataset). Plans are memoised per
    (task, seed). ``rollout(task, seed) -> Demo`` and ``keyframes(demo) -> (S,H,W,3)`` can be
    injected (tests).
    """

    def __init__(self, keypoint_settings: Any = None, output_size: int = 64,
                 rollout: Callable[[str, int], Any] | None = None,
                 keyframes: Callable[[Any], np.ndarray] | None = None):
        self.keypoint_settings = keypoint_settings
        self.output_size = int(output_size)
        self._rollout = rollout or self._expert_rollout
        self._keyframes = keyframes or self._true_keyframes
        self._envs: dict[str, Any] = {}
        self._memo: dict[tuple[str, int], list[np.ndarray]] = {}

    def _expert_rollout(self, task: str, seed: int) -> Any:
        from relam.demos import rollout_expert
        from relam.tasks import make_env

        if task not in self._envs:
            self._envs[task] = make_env(task, seed=seed)
        demo = rollout_expert(self._envs[task], int(seed))
        if demo is None:
            raise RuntimeError(f"OracleSubgoalPlanner: the expert found no plan on task {task} seed {seed}; "
                               "no ground-truth subgoal images for this episode")
        # as relam.wrappers.GroundTruthSubgoals: a scripted expert that misses still shows the path
        self.expert_failures = getattr(self, "expert_failures", 0) + int(not demo.succeeded)
        return demo

    def _true_keyframes(self, demo: Any) -> np.ndarray:
        from relam.keypoints import KeypointSettings
        from relam.subgoals import subgoal_sequence

        seq, _ = subgoal_sequence(demo, self.keypoint_settings or KeypointSettings())
        return np.asarray(seq.keyframe_images)

    def keyframes_of(self, demo: Any) -> list[np.ndarray]:
        """The ground-truth subgoal images of a recorded expert trajectory (its own keyframes),
        at ``output_size``: what :meth:`plan` returns for that trajectory's seed."""
        return list(resize_images(np.asarray(self._keyframes(demo)), self.output_size))

    def plan(self, initial_frame: np.ndarray, task: str, *, env: Any = None,
             seed: int | None = None) -> list[np.ndarray]:
        if seed is None:
            raise ValueError("OracleSubgoalPlanner.plan needs the episode seed (the wrapper passes it) "
                             "to replay the same initial state with the expert")
        key = (str(task), int(seed))
        if key not in self._memo:
            self._memo[key] = self.keyframes_of(self._rollout(str(task), int(seed)))
        return [im.copy() for im in self._memo[key]]

    def close(self) -> None:
        for e in self._envs.values():
            e.close()
        self._envs.clear()


# =============================================================================== reward


@dataclass(frozen=True)
class ImageRewardSettings:
    """The IS/Oracle reward: ReLAM's shape and stage logic on the distance ``1 - cos``.

    ``similarity_threshold`` ends a stage (ReLAM's ``theta_s = 1 - threshold``); the shaped term
    spans ``[-reward_range, 0]`` over distances ``[0, d_max]``. The default threshold 0.75 comes
    from :func:`calibrate_threshold` on 4 held-out drawer-open-v3 demos with the temporal
    embedding (the 25 % quantile of the best similarity expert frames reach to each generated
    subgoal was 0.76); :func:`fit_components` recalibrates it per task and embedding.
    """

    similarity_threshold: float = 0.75
    d_max: float = 1.0
    shape: str = "piecewise_linear"
    reward_range: float = 1.0
    stage_bonus: float = 2.0
    final_bonus: float = 10.0
    unreached_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not -1.0 < self.similarity_threshold < 1.0:
            raise ValueError(f"ImageRewardSettings.similarity_threshold={self.similarity_threshold}: "
                             "must lie in (-1, 1)")
        self.reward_settings()  # validates the rest

    def reward_settings(self) -> RewardSettings:
        return RewardSettings(shape=self.shape, d_max=self.d_max, reward_range=self.reward_range,
                              theta_s=1.0 - self.similarity_threshold, stage_bonus=self.stage_bonus,
                              final_bonus=self.final_bonus, unreached_penalty=self.unreached_penalty)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ImageSubgoalReward:
    """Stage machine over target embeddings: ``reset(targets (S,D))``, ``step(obs (D,))``."""

    def __init__(self, settings: ImageRewardSettings = ImageRewardSettings()):
        self.settings = settings
        self._rs = settings.reward_settings()
        self.targets: np.ndarray | None = None
        self.stage = 0

    def reset(self, target_embeddings: np.ndarray) -> None:
        t = np.asarray(target_embeddings, np.float64)
        if t.ndim != 2 or len(t) < 1:
            raise ValueError(f"ImageSubgoalReward.reset: expected (S>=1, D) embeddings, got {t.shape}")
        self.targets, self.stage = t, 0

    @property
    def n_subgoals(self) -> int:
        if self.targets is None:
            raise RuntimeError("ImageSubgoalReward: call reset(targets) first")
        return len(self.targets)

    @property
    def target_index(self) -> int:
        return min(self.stage, self.n_subgoals - 1)

    def step(self, obs_embedding: np.ndarray) -> tuple[StepOutcome, float]:
        """Reward for arriving at an observation; returns the outcome and the similarity."""
        n = self.n_subgoals
        stage = self.stage
        sim = float(cosine_similarity(obs_embedding, self.targets[self.target_index])[0])
        dist = max(0.0, 1.0 - sim)
        reached = stage < n and sim >= self.settings.similarity_threshold
        r = stage_reward(dist, stage, n, reached, self._rs)
        if reached:
            self.stage += 1
        return StepOutcome(r, dist, stage, reached, self.stage, self.stage >= n), sim


def _chw(image: np.ndarray, size: int) -> np.ndarray:
    return np.ascontiguousarray(resize_images(image, size)[0].transpose(2, 0, 1))


class ImageSubgoalWrapper(SeededEpisodes, gym.Wrapper):
    """A TaskEnv as the IS/Oracle hierarchical task.

    Observation ``{"image": uint8 (3,s,s), "target_image": uint8 (3,s,s)}`` (s = ``image_size``,
    64); reward from :class:`ImageSubgoalReward`; ``info`` has ``stage``, ``n_subgoals``,
    ``subgoal_reached`` (read by the segmented GAE of :mod:`relam.rl.ppo`),
    ``all_subgoals_reached``, ``similarity``, ``success`` and ``env_reward``. Episode seeds work as
    in :class:`relam.wrappers.ReLAMWrapper` (``reset(seed=s)`` uses s; ``reset()`` draws one), and
    the planner receives it (the Oracle replays that start with the expert).

    ``observe_embeddings=True`` adds ``"embedding"`` (the current frame's embedding) and
    ``"target"`` (the current target image's embedding), float32 (D,): the observation of the
    offline (IQL) policies, which take the target image through the frozen embedding (see
    :class:`ImageSubgoalLabeller`).
    """

    def __init__(self, env: gym.Env, planner: Any, embedding: ImageEmbedding,
                 settings: ImageRewardSettings = ImageRewardSettings(), image_size: int = 64,
                 seed: int | None = None, observe_embeddings: bool = False):
        super().__init__(env)
        if not hasattr(planner, "plan"):
            raise TypeError("ImageSubgoalWrapper: planner must have plan(initial_frame, task, env=, seed=)")
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
                and space.shape[-1] == 3):
            raise ValueError(f"ImageSubgoalWrapper: env must observe (H, W, 3) uint8 images, got {space}")
        self.planner, self.embedding, self.settings = planner, embedding, settings
        self.image_size = int(image_size)
        box = gym.spaces.Box(0, 255, (3, self.image_size, self.image_size), np.uint8)
        spaces: dict[str, gym.spaces.Space] = {"image": box, "target_image": box}
        self.observe_embeddings = bool(observe_embeddings)
        if self.observe_embeddings:
            dim = int(embedding.embed(np.zeros((1, 8, 8, 3), np.uint8)).shape[1])
            vec = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
            spaces.update(embedding=vec, target=vec)
        self.observation_space = gym.spaces.Dict(spaces)
        self._frame_emb: np.ndarray | None = None
        self.reward_fn = ImageSubgoalReward(settings)
        self._seed_rng = np.random.default_rng(seed)
        self.plan_: list[np.ndarray] | None = None
        self._targets_chw: list[np.ndarray] = []
        self.episode_seed: int | None = None

    def _obs(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        obs = {"image": _chw(frame, self.image_size),
               "target_image": self._targets_chw[self.reward_fn.target_index]}
        if self.observe_embeddings:
            if self._frame_emb is None:
                self._frame_emb = self.embedding.embed(frame)[0]
            obs["embedding"] = np.asarray(self._frame_emb, np.float32)
            obs["target"] = self.reward_fn.targets[self.reward_fn.target_index].astype(np.float32)
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        episode_seed = self._next_episode_seed(seed)
        frame, info = self.env.reset(seed=episode_seed, options=options)
        task = getattr(getattr(self.env.unwrapped, "task", None), "name", None)
        plan = [np.asarray(p, np.uint8) for p in
                self.planner.plan(frame, task, env=self.env.unwrapped, seed=episode_seed)]
        if not plan or any(p.ndim != 3 or p.shape[-1] != 3 for p in plan):
            raise ValueError("ImageSubgoalWrapper: planner.plan must return a non-empty list of "
                             "uint8 (H,W,3) images")
        self.plan_ = plan
        self._targets_chw = [_chw(p, self.image_size) for p in plan]
        self.reward_fn.reset(self.embedding.embed(np.stack(plan)))
        self._frame_emb = None
        info = dict(info)
        info.update(stage=0, n_subgoals=len(plan), subgoal_reached=False, all_subgoals_reached=False,
                    success=bool(info.get("success", False)),
                    env_reward=float(info.get("env_reward", 0.0)), episode_seed=episode_seed)
        return self._obs(frame), info

    def step(self, action):
        if self.plan_ is None:
            raise RuntimeError("ImageSubgoalWrapper.step called before reset")
        frame, env_reward, terminated, truncated, info = self.env.step(action)
        self._frame_emb = self.embedding.embed(frame)[0]
        out, sim = self.reward_fn.step(self._frame_emb)
        info = dict(info)
        info.update(stage=out.next_stage, n_subgoals=self.reward_fn.n_subgoals,
                    subgoal_reached=bool(out.reached), all_subgoals_reached=bool(out.all_reached),
                    similarity=sim, success=bool(info.get("success", False)),
                    env_reward=float(info.get("env_reward", env_reward)))
        return self._obs(frame), float(out.reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        closer = getattr(self.planner, "close", None)
        if callable(closer):
            closer()
        super().close()


def _label_with_plan(frames: np.ndarray, plan: Sequence[np.ndarray], embedding: ImageEmbedding,
                     settings: ImageRewardSettings) -> dict[str, np.ndarray]:
    """The online reward's state machine over recorded frames, for a given plan (see label_details);
    also returns the frame embeddings (T+1, D) and the target embeddings (S, D)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"label: demo.frames must be (T+1>=2, H, W, 3) uint8, got {frames.shape}")
    rew = ImageSubgoalReward(settings)
    rew.reset(embedding.embed(np.stack([np.asarray(p, np.uint8) for p in plan])))
    emb = embedding.embed(frames)
    T = len(frames) - 1
    rewards, sims = np.zeros(T, np.float32), np.zeros(T, np.float32)
    stages, reached = np.zeros(T + 1, np.int64), np.zeros(T, bool)
    for t in range(T):
        out, sim = rew.step(emb[t + 1])
        rewards[t], sims[t], reached[t], stages[t + 1] = out.reward, sim, out.reached, out.next_stage
    return {"rewards": rewards, "stages": stages, "reached": reached, "similarity": sims,
            "frame_embeddings": emb, "target_embeddings": rew.targets.astype(np.float32)}


def label_details(demo: Any, planner: Any, embedding: ImageEmbedding,
                  settings: ImageRewardSettings = ImageRewardSettings()
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Offline labelling of one trajectory with the online logic.

    The plan comes from ``demo.frames[0]`` (episode seed ``demo.seed``). Returns
    ``rewards (T,) float32``, ``stages (T+1,) int64`` (subgoals reached before frame t),
    ``reached (T,) bool`` and ``similarity (T,) float32`` (to the target current at each step).
    """
    frames = np.asarray(demo.frames)
    plan = planner.plan(frames[0], getattr(demo, "task", None), seed=int(getattr(demo, "seed", 0)))
    d = _label_with_plan(frames, plan, embedding, settings)
    return d["rewards"], d["stages"], d["reached"], d["similarity"]


def label(demo: Any, planner: Any, embedding: ImageEmbedding,
          settings: ImageRewardSettings = ImageRewardSettings()) -> np.ndarray:
    """Rewards (T,) for an offline trajectory (see :func:`label_details`)."""
    return label_details(demo, planner, embedding, settings)[0]


class ImageSubgoalLabeller:
    """IS / Oracle labelling of a recorded trajectory for offline RL (:mod:`relam.offline`, app. A.4).

    "For IS and Oracle baseline, we assign rewards in the same way to ReLAM": the plan is made from
    the trajectory's first frame (episode seed ``demo.seed``), and the online stage machine
    (:class:`ImageSubgoalReward`) runs over the recorded frames, so online and offline rewards
    agree step for step (:func:`label_details`).

    Policy input (our choice): the dataset keeps the current 64 px image (as every method) and adds
    two vectors, ``embedding`` (the current frame's embedding) and ``target`` (the embedding of
    the target image of the stage at frame t, the last one once all are reached) -- the target
    image reaches the IQL policy through the same frozen embedding the reward uses, in the way
    ReLAM's policy gets its target keypoints.  Why not the raw target image as a second image
    stack: :class:`relam.offline.OfflineDataset` stores one image per frame, and a second one (as
    a float vector) would cost 12,288 floats a frame; the embedding is the smallest change that
    needs no edit of IQL (its extractor feeds ``target`` and the other vectors to its point MLP).
    :class:`ImageSubgoalWrapper` (``observe_embeddings=True``) gives the same entries online.

    ``own_keyframes`` (the Oracle): a trajectory that is not noisy *is* the expert's rollout from
    its seed, so its own keyframes (Eq. 2 on its own frames, ``planner.keyframes_of``) are the
    ground-truth subgoals -- what the planner's expert replay would give, without re-simulating;
    noisy trajectories get the expert replayed from their seed (``planner.plan``).  If the expert
    finds no plan for a seed, the trajectory's own keyframes are used and ``info["fallback"]`` says so.
    """

    def __init__(self, planner: Any, embedding: ImageEmbedding,
                 settings: ImageRewardSettings = ImageRewardSettings(), planner_id: str | None = None,
                 own_keyframes: bool = False, name: str = "image_subgoal"):
        if not hasattr(planner, "plan"):
            raise TypeError("ImageSubgoalLabeller: planner must have plan(initial_frame, task, env=, seed=)")
        if own_keyframes and not hasattr(planner, "keyframes_of"):
            raise TypeError("ImageSubgoalLabeller(own_keyframes=True) needs a planner with keyframes_of(demo)")
        self.planner, self.embedding, self.settings = planner, embedding, settings
        self.planner_id = planner_id or type(planner).__name__
        self.own_keyframes, self.name = bool(own_keyframes), str(name)
        self._embedding_id = _fingerprint(embedding.state())

    def config(self) -> dict:
        return {"planner": self.planner_id, "embedding": self._embedding_id, "reward": self.settings.to_dict(),
                "own_keyframes": self.own_keyframes, "observation": "image+embedding+target"}

    def _plan(self, demo: Any) -> tuple[list[np.ndarray], bool]:
        if self.own_keyframes and not bool(getattr(demo, "noisy", False)):
            return self.planner.keyframes_of(demo), False
        try:
            return list(self.planner.plan(np.asarray(demo.frames[0]), str(getattr(demo, "task", "")),
                                          seed=int(getattr(demo, "seed", 0)))), False
        except RuntimeError:
            if not self.own_keyframes:
                raise
            return self.planner.keyframes_of(demo), True

    def label(self, demo: Any):
        from relam.offline import LabelledTrajectory

        plan, fallback = self._plan(demo)
        d = _label_with_plan(np.asarray(demo.frames), plan, self.embedding, self.settings)
        n = len(d["target_embeddings"])
        targets = d["target_embeddings"][np.minimum(d["stages"], n - 1)]
        frame0 = resize_images(np.asarray(demo.frames[0])[None], np.asarray(plan[0]).shape[0])[0]
        return LabelledTrajectory(
            rewards=d["rewards"], extra_obs={"embedding": d["frame_embeddings"], "target": targets},
            # plan row 0 = the initial image, rows 1.. = subgoals (ReLAM's layout: row 0 = now)
            info={"stages": d["stages"], "reached": d["reached"], "similarity": d["similarity"],
                  "plan": [frame0] + [np.asarray(p) for p in plan], "fallback": fallback})


def _fingerprint(state: Any) -> str:
    """16 hex chars identifying a state dict (weights included): a cache-key part."""
    import hashlib

    return hashlib.sha256(torch_bytes(state)).hexdigest()[:16]


def calibrate_threshold(planner: Any, embedding: ImageEmbedding, demos: Sequence[Any],
                        quantile: float = 0.25) -> float:
    """A similarity threshold that expert demos reach for most planned subgoals.

    For each demo and each planned subgoal k, the best similarity any of the demo's frames
    reaches to it; the threshold is the ``quantile`` of those maxima (0.25: the expert gets close
    enough to about 75 % of the generated subgoals). Generated images are blurrier than real
    frames, so a threshold set on true keyframes would be unreachable.
    """
    best = []
    for d in demos:
        plan = planner.plan(np.asarray(d.frames[0]), getattr(d, "task", None), seed=int(d.seed))
        tgt = embedding.embed(np.stack(plan))
        emb = embedding.embed(np.asarray(d.frames))
        sims = emb.astype(np.float64) @ tgt.astype(np.float64).T  # unit vectors: cosines
        best.extend(sims.max(axis=0).tolist())
    if not best:
        raise ValueError("calibrate_threshold: no demos given")
    return float(np.quantile(best, quantile))


# =============================================================================== methods

@dataclass(frozen=True)
class ISBudget:
    flow_steps: int  #: subgoal-image generator training steps
    embedding_steps: int  #: temporal-embedding training steps


#: per-scale budgets of the learned parts; ``smoke`` is for CI.
SCALE_STEPS: ScaleTable[ISBudget] = ScaleTable(
    "image_subgoal", smoke=ISBudget(30, 30), quick=ISBudget(3000, 600), paper=ISBudget(4000, 1500))


@dataclass
class ISComponents:
    """What an IS run learns from the demos: generator, embedding, calibrated threshold."""

    model: SubgoalImageModel
    embedding: ImageEmbedding
    similarity_threshold: float


def fit_components(task: str, n_demos: int, scale: str = "quick", progress: bool = False,
                   calibrate_demos: int = 10) -> ISComponents:
    """Train (or load from the cache) the IS generator and the temporal embedding of a task.

    Both learn from the first ``n_demos`` expert videos (the embedding from all their frames, the
    generator from their keyframe images). The similarity threshold is calibrated with
    :func:`calibrate_threshold` on up to ``calibrate_demos`` of those demos. Cached under
    ``cache_dir()/image_subgoal/<task>/<hash>/`` (file-locked: parallel runs train once).
    """
    from filelock import FileLock

    from baselines.embedding import TemporalEmbedding, embedding_from_state
    from relam.cache import cache_dir, settings_hash
    from relam.demos import load_demos
    from relam.keypoints import KeypointSettings
    from relam.subgoals import build_subgoal_dataset

    steps = SCALE_STEPS[scale]
    flow = FlowSettings(train_steps=steps.flow_steps)
    emb = TemporalEmbedding()
    key = settings_hash({"task": task, "n_demos": n_demos, "flow": flow.to_dict(),
                         "embedding": emb.state()["kwargs"], "embedding_steps": steps.embedding_steps,
                         "calibrate_demos": calibrate_demos, "keypoints": KeypointSettings().to_dict()})
    out = cache_dir() / "image_subgoal" / task / key
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "components.pt").exists():
            st = torch.load(out / "components.pt", weights_only=False)
            return ISComponents(SubgoalImageModel.from_state(st["model"]),
                                embedding_from_state(st["embedding"]), float(st["threshold"]))
        ds = build_subgoal_dataset(task, KeypointSettings(), n_demos=n_demos, progress=progress)
        demos = load_demos(task, n=n_demos)
        emb.fit([d.frames for d in demos], steps=steps.embedding_steps, progress=progress)
        model = SubgoalImageModel(flow)
        model.fit(ds.items, progress=progress)
        thr = calibrate_threshold(ImageSubgoalPlanner(model), emb, demos[:calibrate_demos])
        atomic_torch_save(out / "components.pt", {"model": model.state(), "embedding": emb.state(),
                                                  "threshold": thr})
        return ISComponents(model, emb, thr)


class PolicyAdapter(gym.ObservationWrapper):
    """IS observations in the form the shared PPO policy (``relam.rl.ppo.make_ppo``) reads.

    That policy's extractor wants ``image`` plus ``keypoints``/``target`` vectors; IS has two
    images and no points. The adapter stacks image and target image into one 6-channel ``image``
    (the CNN sees both) and passes empty-information ``keypoints``/``target`` (two zeros each).
    Replace with a dedicated extractor once ``make_ppo`` accepts one.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        c, h, w = env.observation_space["image"].shape
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (2 * c, h, w), np.uint8),
            "keypoints": gym.spaces.Box(-1, 1, (2,), np.float32),
            "target": gym.spaces.Box(-1, 1, (2,), np.float32),
        })

    def observation(self, observation: dict) -> dict:
        z = np.zeros(2, np.float32)
        return {"image": np.concatenate([observation["image"], observation["target_image"]]),
                "keypoints": z, "target": z.copy()}


def offline_labeller(ctx: Any, ground_truth: bool = False) -> tuple["ImageSubgoalLabeller", Any, dict[str, float]]:
    """The ManiSkill row's labelling (appendix A.4: "for IS and Oracle baseline, we assign rewards in
    the same way to ReLAM"): (labeller, make_eval_env, metrics) for :func:`baselines.common.offline_run`.

    IS: subgoal images generated from each trajectory's first frame; Oracle (``ground_truth``):
    the expert's own keyframes, or the expert replayed from a noisy trajectory's seed.  Both use
    the task's embedding and calibrated threshold (:func:`fit_components`).  Evaluation runs
    through :class:`ImageSubgoalWrapper` with ``observe_embeddings`` (the policy's input).
    The caller closes ``labeller.planner`` (the Oracle's private expert env).
    """
    from relam.tasks import make_env

    spec = ctx.task_spec()
    comp = fit_components(ctx.task, ctx.budget.n_demos, ctx.scale, ctx.progress)
    planner = OracleSubgoalPlanner() if ground_truth else ImageSubgoalPlanner(comp.model)
    reward = ImageRewardSettings(similarity_threshold=comp.similarity_threshold)
    planner_id = "oracle" if ground_truth else f"generated-{_fingerprint(comp.model.state())}"
    labeller = ImageSubgoalLabeller(planner, comp.embedding, reward, planner_id=planner_id,
                                    own_keyframes=ground_truth, name="oracle" if ground_truth else "image_subgoal")

    def make_eval_env() -> gym.Env:
        return ImageSubgoalWrapper(make_env(spec), planner, comp.embedding, reward, seed=ctx.seed,
                                   observe_embeddings=True)

    return labeller, make_eval_env, {"similarity_threshold": comp.similarity_threshold}


def _register() -> None:
    from relam.methods import ImageSubgoalSettings, RewardMethod, RunContext, RunResult, register_method

    class _ImageSubgoalMethod(RewardMethod):
        Settings = ImageSubgoalSettings
        policy_inputs = ("image+points",)  # learns from images alone
        version = "1"
        ground_truth = False

        def run(self, ctx: RunContext) -> RunResult:
            gt = self.ground_truth or ctx.settings.subgoals == "ground_truth"  # type: ignore[attr-defined]
            if ctx.task_spec().suite != "metaworld":
                return self._offline(ctx, gt)
            return self._online(ctx, gt)

        def _offline(self, ctx: RunContext, gt: bool) -> RunResult:
            """ManiSkill: label the offline set, IQL, evaluate (:func:`offline_labeller`)."""
            from baselines.common import offline_run

            labeller, make_eval_env, metrics = offline_labeller(ctx, gt)
            try:
                return offline_run(ctx, labeller, make_eval_env, metrics)
            finally:
                close = getattr(labeller.planner, "close", None)
                if callable(close):
                    close()

        def _online(self, ctx: RunContext, gt: bool) -> RunResult:
            """Meta-World: hierarchical PPO through the wrapper (images stacked for the shared policy)."""
            from baselines.common import require_image_input
            from relam.rl.ppo import train_ppo
            from relam.tasks import make_env

            spec = ctx.task_spec()
            require_image_input(ctx, self.name)
            comp = fit_components(ctx.task, ctx.budget.n_demos, ctx.scale, ctx.progress)
            planner = OracleSubgoalPlanner() if gt else ImageSubgoalPlanner(comp.model)
            reward = ImageRewardSettings(similarity_threshold=comp.similarity_threshold)
            b = ctx.budget
            ppo = ctx.ppo_settings()

            def env_fn(seed: int) -> gym.Env:
                env = ImageSubgoalWrapper(make_env(spec), planner, comp.embedding, reward, seed=seed)
                return PolicyAdapter(env)

            res = train_ppo(env_fn, ppo, Path(ctx.out_dir), b.train_steps, b.eval_every,
                            b.eval_episodes, ctx.seed, progress=ctx.progress,
                            title=f"{self.name} {spec.name} seed {ctx.seed}")
            res.metrics["similarity_threshold"] = comp.similarity_threshold
            return res

    @register_method("image_subgoal")
    class ImageSubgoal(_ImageSubgoalMethod):
        """IS: generated image subgoals, embedding cosine-similarity reward."""

    @register_method("oracle")
    class Oracle(_ImageSubgoalMethod):
        """Oracle: IS with the expert's true keyframe images from the same initial state."""

        ground_truth = True


_register()


# =============================================================================== CLI


def evaluate_generator(task: str, n_train: int = 16, n_test: int = 4, steps: int | None = None,
                       settings: FlowSettings = FlowSettings(), out_png: str | Path | None = None,
                       progress: bool = True, save: str | Path | None = None) -> dict[str, float]:
    """Train on the first ``n_train`` demos' subgoals, measure on the next ``n_test``.

    Pixel error of generated vs true subgoal images (0-255, 64 px), paired by index up to the
    shorter sequence; the references are "copy the initial frame" and "the mean training image of
    subgoal k". Optionally writes a PNG: per test demo a row of [initial | generated... ] above
    [initial | true...].
    """
    from relam.keypoints import KeypointSettings
    from relam.subgoals import build_subgoal_dataset

    ds = build_subgoal_dataset(task, KeypointSettings(), n_demos=n_train + n_test, progress=progress)
    train, test = ds.items[:n_train], ds.items[n_train:]
    model = SubgoalImageModel(settings)
    model.fit(train, steps=steps, progress=progress)
    if save is not None:
        model.save(save)
    size = settings.output_size
    mean_k = {}
    for k in range(settings.max_subgoals):
        ims = [resize_images(q.keyframe_images[k:k + 1], size)[0].astype(np.float64)
               for q in train if len(q.keyframe_images) > k]
        if ims:
            mean_k[k] = np.mean(ims, 0).round().astype(np.uint8)
    errs, copy_errs, mean_errs, rows = [], [], [], []
    for i, q in enumerate(test):
        gen = model.generate(q.initial_frame, seed=i)
        true = resize_images(q.keyframe_images, size)
        m = min(len(gen), len(true))
        # the last generated subgoal is the goal: compare it with the true final frame
        pairs = [(gen[k], true[k]) for k in range(m - 1)] + [(gen[-1], true[-1])]
        errs.append(pixel_error(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])))
        init = resize_images(q.initial_frame[None], size)
        copy_errs.append(pixel_error(np.repeat(init, len(true), 0), true))
        mean_errs.append(pixel_error(np.stack([mean_k[min(k, max(mean_k))] for k in range(len(true))]), true))
        if out_png is not None:
            width = 1 + max(len(gen), len(true))
            pad = lambda ims: list(ims) + [np.zeros_like(init[0])] * (width - 1 - len(ims))  # noqa: E731
            rows.append(np.concatenate([init[0]] + pad(gen), 1))
            rows.append(np.concatenate([init[0]] + pad(true), 1))
    res = {"task": task, "n_subgoals": model.n_subgoals, "pixel_error": float(np.mean(errs)),
           "copy_initial_error": float(np.mean(copy_errs)), "mean_image_error": float(np.mean(mean_errs)),
           "final_loss": float(np.mean(model.fit_loss[-50:]))}
    if out_png is not None:
        import imageio.v2 as imageio

        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        imageio.imwrite(out_png, np.concatenate(rows, 0))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m baselines.image_subgoal",
        description="Train the IS subgoal-image generator on a task's demos and report the pixel "
                    "error of generated vs true subgoal images on held-out demos (+ a PNG).")
    p.add_argument("task", nargs="?", default="drawer-open-v3")
    p.add_argument("--train", type=int, default=16)
    p.add_argument("--test", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="training steps (default FlowSettings)")
    p.add_argument("--png", default=None, help="where to write generated-vs-true images")
    p.add_argument("--save", default=None, help="where to save the trained model (.pt)")
    p.add_argument("--width", type=int, default=FlowSettings.width)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    res = evaluate_generator(a.task, a.train, a.test, a.steps, FlowSettings(width=a.width),
                             out_png=a.png, progress=not a.quiet, save=a.save)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
