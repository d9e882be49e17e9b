"""Diffusion Reward (Huang et al., ECCV 2024): reward = low conditional entropy under an expert video model.

The idea: a video diffusion model trained on expert videos, asked for the next frame given the
previous ones, is *confident* (low conditional entropy) on expert-like transitions and unsure on
others.  The original (VQ-Diffusion over VQGAN codes) rewards the negative conditional entropy
estimated from the model's variational bound, standardises it with statistics of the expert
videos, and mixes in a random-network-distillation (RND) novelty bonus for exploration plus the
environment's sparse success reward.

Ours, sized for a 2-core CPU (the choices):

* **Model.** diffusers ``UNet2DModel`` on ``size`` px frames (32 by default; the 64 px policy
  image is area-pooled), the ``history`` previous frames (2) concatenated to the noisy next frame
  as extra input channels, predicting the noise (epsilon parametrisation), DDPM linear schedule
  (1e-4 .. 0.02, 1000 steps).  Default channels (32, 64, 128), one layer a block: about 2.5 M
  parameters (the issue asks for ~3 M).
* **Conditional entropy estimate.** ``-log p(x | context)`` is bounded by the diffusion ELBO, a
  sum over noise levels of denoising errors.  We estimate it with the *unweighted* denoising error
  averaged over a few fixed noise levels ``eval_timesteps`` (the "simple" ELBO proxy), with one
  fixed noise draw per level shared by all transitions (common random numbers: deterministic,
  low-variance comparisons, identical rewards after reload).  ``r_ce = -H``, standardised by the
  mean/std of ``r_ce`` over the expert training transitions (as the original standardises with
  expert statistics).
* **RND.** :class:`baselines.common.RND` on the next frame, trained online on the policy's frames
  (:meth:`update_items`), its bonus divided by the running std of bonuses seen.
* **Mix, following the original:** ``r = 0.95 * r_rnd + 0.05 * r_ce + success_bonus * success``.
  The sparse success reward is the one privileged signal the original uses; it is a switch
  (``success_reward``), on by default to follow the original.  ``reward()`` without a ``success``
  array pays no success term (a video alone has no success flag).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from baselines.common import RND, FrameRewardModel, RunningMeanStd, _to_float
from relam.methods import MethodSettings, RewardMethod, register_method
from relam.scales import ScaleTable

__all__ = ["DiffusionReward", "linear_alphas_cumprod", "noisy_sample"]


def linear_alphas_cumprod(n: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear beta schedule -> cumulative products of ``1 - beta`` (n,) (float64)."""
    betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


def noisy_sample(x0: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The forward process: ``sqrt(abar) x0 + sqrt(1 - abar) eps`` with ``abar`` (N,) per sample."""
    a = abar.float().view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


class DiffusionReward(FrameRewardModel):
    """Conditional video diffusion model + RND as a reward model (see the module docstring)."""

    kind = "diffusion_reward"

    def __init__(self, size: int = 32, history: int = 2, channels: Sequence[int] = (32, 64, 128),
                 layers_per_block: int = 1, n_timesteps: int = 1000,
                 eval_timesteps: Sequence[int] = (500, 700, 900), lr: float = 3e-4, batch: int = 32,
                 rnd_weight: float = 0.95, ce_weight: float = 0.05, success_reward: bool = True,
                 success_bonus: float = 1.0, use_rnd: bool = True, seed: int = 0):
        from diffusers import UNet2DModel

        if history < 1:
            raise ValueError(f"DiffusionReward(history=...): need >= 1 context frame, got {history}")
        if size % (2 ** (len(channels) - 1)):
            raise ValueError(f"DiffusionReward(size={size}): must be divisible by 2^(len(channels)-1)")
        bad = [t for t in eval_timesteps if not 0 <= t < n_timesteps]
        if bad or not eval_timesteps:
            raise ValueError(f"DiffusionReward(eval_timesteps=...): need values in [0, {n_timesteps}), got {list(eval_timesteps)}")
        self.size, self.history, self.channels = int(size), int(history), tuple(int(c) for c in channels)
        self.layers_per_block, self.n_timesteps = int(layers_per_block), int(n_timesteps)
        self.eval_timesteps = tuple(int(t) for t in eval_timesteps)
        self.lr, self.batch = float(lr), int(batch)
        self.rnd_weight, self.ce_weight = float(rnd_weight), float(ce_weight)
        self.success_reward, self.success_bonus = bool(success_reward), float(success_bonus)
        self.use_rnd, self.seed = bool(use_rnd), int(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            n = len(self.channels)
            self.unet = UNet2DModel(
                sample_size=self.size, in_channels=3 * (self.history + 1), out_channels=3,
                block_out_channels=self.channels, layers_per_block=self.layers_per_block,
                down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
                norm_num_groups=min(8, self.channels[0]),
            )
            g = torch.Generator().manual_seed(seed + 1)
            self.eval_noise = torch.randn(len(self.eval_timesteps), 3, self.size, self.size, generator=g)
        self.rnd = RND(size=self.size, seed=seed + 2)
        self.abar = linear_alphas_cumprod(self.n_timesteps)
        self.opt = torch.optim.Adam(self.unet.parameters(), lr=self.lr)
        self.ce_stats = RunningMeanStd(0.0, 1.0, 0.0)
        self.rnd_stats = RunningMeanStd(0.0, 1.0, 1e-4)
        self.train_steps = 0

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    # ---------------------------------------------------------------- training
    def _inputs(self, hist: np.ndarray) -> torch.Tensor:
        """(N,k,3,S,S) uint8 context -> (N,3k,size,size) float in [-1, 1]."""
        N, k = hist.shape[:2]
        return _to_float(hist.reshape(N * k, *hist.shape[2:]), self.size).reshape(N, 3 * k, self.size, self.size)

    def fit(self, demos: Sequence[Any], steps: int = 2000, progress: bool = False,
            stats_items: int = 512, device: str | torch.device = "cpu") -> dict[str, float]:
        """Train the next-frame model on expert videos, then measure the expert ``r_ce`` statistics.

        Demos may be :class:`relam.demos.Demo` objects or raw (T+1,H,W,3) uint8 videos.
        ``device`` is where the training steps run (``"cuda"`` on a GPU box: the 5000 quick-scale
        steps take hours on 2 CPU cores).  Batches, timesteps and noise are drawn on the CPU with
        the same generators whatever the device, and the model comes back to the CPU afterwards,
        where rewards are computed next to the simulator.  A GPU-trained model differs from a
        CPU-trained one only through floating-point rounding, which compounds over the steps
        (two GPU fits of drawer-open's quick model ended at losses 0.0025 and 0.0027).
        """
        vids = [getattr(d, "frames", d) for d in demos]
        if not vids:
            raise ValueError("DiffusionReward.fit(demos=...): need at least one expert video")
        parts = [self.items_from_video(v) for v in vids]
        hist = np.concatenate([p[0] for p in parts])
        nxt = np.concatenate([p[1] for p in parts])
        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed + 3)
        dev = torch.device(device)
        self._to_device(dev)
        self.unet.train()
        loss = float("nan")
        bar = tqdm(range(steps), desc="Diffusion Reward model", disable=not progress)
        for _ in bar:
            idx = rng.integers(0, len(nxt), self.batch)
            x0 = _to_float(nxt[idx], self.size)
            t = torch.randint(0, self.n_timesteps, (self.batch,), generator=gen)
            eps = torch.randn(x0.shape, generator=gen)
            noisy = noisy_sample(x0, eps, self.abar[t])
            pred = self.unet(torch.cat([noisy, self._inputs(hist[idx])], 1).to(dev), t.to(dev)).sample
            l = F.mse_loss(pred, eps.to(dev))
            self.opt.zero_grad()
            l.backward()
            self.opt.step()
            loss = l.item()
            self.train_steps += 1
            bar.set_postfix(loss=f"{loss:.4f}")
        self._to_device(torch.device("cpu"))
        self.unet.eval()
        sub = rng.permutation(len(nxt))[:stats_items]
        ce = self.ce_reward_raw(hist[sub], nxt[sub])
        self.ce_stats = RunningMeanStd(float(ce.mean()), float(ce.var()), float(len(ce)))
        return {"loss": loss, "ce_mean": self.ce_stats.mean, "ce_std": self.ce_stats.std}

    def _to_device(self, dev: torch.device) -> None:
        """Move the network and its optimiser state (Adam's moments) to ``dev``."""
        self.unet.to(dev)
        for st in self.opt.state.values():
            for k, v in st.items():
                if torch.is_tensor(v) and k != "step":
                    st[k] = v.to(dev)

    # ---------------------------------------------------------------- reward
    @torch.no_grad()
    def ce_reward_raw(self, hist: np.ndarray, nxt: np.ndarray, batch: int = 64) -> np.ndarray:
        """``-H`` per transition: minus the mean denoising error over the fixed noise levels (N,)."""
        self.unet.eval()
        L = len(self.eval_timesteps)
        ts = torch.tensor(self.eval_timesteps)
        out = []
        for i in range(0, len(nxt), batch):
            x0 = _to_float(nxt[i:i + batch], self.size)
            ctx = self._inputs(hist[i:i + batch])
            n = len(x0)
            x0r, ctxr = x0.repeat_interleave(L, 0), ctx.repeat_interleave(L, 0)
            eps = self.eval_noise.repeat(n, 1, 1, 1)
            t = ts.repeat(n)
            pred = self.unet(torch.cat([noisy_sample(x0r, eps, self.abar[t]), ctxr], 1), t).sample
            err = (pred - eps).pow(2).flatten(1).mean(1).view(n, L).mean(1)
            out.append(-err.double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def ce_reward(self, hist: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """The standardised conditional-entropy reward ``(r_ce - mean_expert) / std_expert``."""
        return (self.ce_reward_raw(hist, nxt) - self.ce_stats.mean) / self.ce_stats.std

    def rnd_reward(self, nxt: np.ndarray) -> np.ndarray:
        return self.rnd.bonus(nxt) / self.rnd_stats.std

    def reward_items(self, hist: np.ndarray, nxt: np.ndarray, success: np.ndarray | None = None) -> np.ndarray:
        """``rnd_weight * r_rnd + ce_weight * r_ce (+ success_bonus * success)`` per transition."""
        r = self.ce_weight * self.ce_reward(hist, nxt)
        if self.use_rnd:
            r = r + self.rnd_weight * self.rnd_reward(nxt)
        if self.success_reward and success is not None:
            r = r + self.success_bonus * np.asarray(success, np.float64)
        return r

    def prepare_offline_config(self) -> dict[str, Any]:
        """What :meth:`prepare_offline` does, for the offline cache key."""
        return {"rnd": "one online update (bonus statistics, then one predictor epoch) on the labelled set's frames"
                if self.use_rnd else None}

    def prepare_offline(self, videos: Sequence[np.ndarray]) -> dict[str, float]:
        """The RND term for offline labelling: treat the labelled set as the visited frames.

        Online, RND's predictor has trained on the frames the policy visited before a rollout is
        labelled; offline there is no policy, and the data set is what was visited.  So before
        labelling, RND gets one online update (:meth:`update_items`: bonus statistics, then one
        predictor epoch) on the next-frames of all the set's trajectories; the bonus then pays
        frames that are rare *within the set*.  The entropy term and the success reward are
        labelled as online.  Called by :class:`baselines.common.ModelLabeller.prepare`.
        """
        from baselines.common import to_policy_images

        if not self.use_rnd or not len(videos):
            return {}
        nxt = np.concatenate([to_policy_images(np.asarray(v))[1:] for v in videos])
        return self.update_items(None, nxt)  # hist is unused by the RND update

    def update_items(self, hist: np.ndarray, nxt: np.ndarray) -> dict[str, float]:
        """RND's online step: update the bonus statistics on the policy's frames, then train the predictor."""
        if not self.use_rnd:
            return {}
        self.rnd_stats.update(self.rnd.bonus(nxt))
        loss = self.rnd.train_on(nxt, epochs=1, seed=self.seed + int(self.rnd_stats.count))
        return {"rnd_loss": loss}

    # ---------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        return {"size": self.size, "history": self.history, "channels": list(self.channels),
                "layers_per_block": self.layers_per_block, "n_timesteps": self.n_timesteps,
                "eval_timesteps": list(self.eval_timesteps), "lr": self.lr, "batch": self.batch,
                "rnd_weight": self.rnd_weight, "ce_weight": self.ce_weight,
                "success_reward": self.success_reward, "success_bonus": self.success_bonus,
                "use_rnd": self.use_rnd, "seed": self.seed}

    def _state(self) -> dict[str, Any]:
        return {"unet": self.unet.state_dict(), "rnd": self.rnd.state_dict(), "opt": self.opt.state_dict(),
                "ce_stats": self.ce_stats.state(), "rnd_stats": self.rnd_stats.state(),
                "eval_noise": self.eval_noise, "train_steps": self.train_steps}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.unet.load_state_dict(state["unet"])
        self.unet.eval()
        self.rnd.load_state_dict(state["rnd"])
        self.opt.load_state_dict(state["opt"])
        self.ce_stats = RunningMeanStd(**state["ce_stats"])
        self.rnd_stats = RunningMeanStd(**state["rnd_stats"])
        self.eval_noise = state["eval_noise"]
        self.train_steps = int(state["train_steps"])


# ------------------------------------------------------------------------------- the Table 4 column


@dataclass(frozen=True)
class VideoModelBudget:
    fit_steps: int  #: video-model training steps


#: the video model's budget per experiment scale
FIT_STEPS: ScaleTable[VideoModelBudget] = ScaleTable(
    "diffusion_reward", smoke=VideoModelBudget(20), quick=VideoModelBudget(5000), paper=VideoModelBudget(5000))


def trained_model(task: str, n_demos: int, scale: str, seed: int = 0, progress: bool = False) -> DiffusionReward:
    """The task's trained Diffusion Reward model, trained once per (task, demos, scale) and cached.

    The video model trains on the GPU when torch sees one (see :meth:`DiffusionReward.fit`).
    """
    from filelock import FileLock

    from relam.cache import cache_dir, settings_hash
    from relam.demos import load_demos

    steps = FIT_STEPS[scale].fit_steps
    cfg = DiffusionReward(seed=seed).config()
    key = settings_hash({"task": task, "n_demos": n_demos, "steps": steps, "config": cfg})
    path = cache_dir() / "diffusion_reward" / task / f"{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return DiffusionReward.load(path)
        model = DiffusionReward(seed=seed)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model.fit(load_demos(task, n=n_demos), steps=steps, progress=progress, device=device)
        model.save(path)
        return model


def offline_labeller(ctx: Any) -> tuple[Any, Any, dict[str, float]]:
    """The ManiSkill row's labelling: (labeller, make_eval_env, metrics) for
    :func:`baselines.runs.offline_run` -- the task's trained video model with a fresh RND (seed
    ``ctx.seed``) fitted on the offline set before labelling (:meth:`DiffusionReward.prepare_offline`),
    the plain task env (image only) to evaluate in."""
    from relam.tasks import make_env

    spec = ctx.task_spec()
    model = trained_model(ctx.task, ctx.budget.n_demos, ctx.scale, progress=ctx.progress)
    model.rnd = RND(size=model.size, seed=ctx.seed + 2)  # a fresh novelty model per run
    return model.as_labeller(), lambda: model.wrap(make_env(spec)), {"video_model_steps": float(model.train_steps)}


@register_method("diffusion_reward")
class DiffusionRewardMethod(RewardMethod):
    """Diffusion Reward as a column of the paper's tables.

    The video model is shared by all seeds of a task (cached); each run has its own RND.  The
    sparse success reward is on, as in the original.  Meta-World (online): RND trains on the
    policy's rollouts.  ManiSkill (offline): the offline set is labelled with
    ``0.95 * r_rnd + 0.05 * r_ce + success`` per step, RND fitted on the set first
    (:meth:`DiffusionReward.prepare_offline`), then IQL; the policy is evaluated in the plain task
    env (image only) through :class:`baselines.common.VideoRewardWrapper`.
    """

    Settings = MethodSettings
    policy_inputs = ("image+points",)  # learns from images alone
    version = "1"

    def offline(self, ctx):
        from baselines.runs import offline_run

        return offline_run(ctx, *offline_labeller(ctx))

    def online(self, ctx):
        from baselines.runs import online_run

        model = trained_model(ctx.task, ctx.budget.n_demos, ctx.scale, progress=ctx.progress)
        model.rnd = RND(size=model.size, seed=ctx.seed + 2)  # a fresh novelty model per run
        return online_run(ctx, model, "Diffusion Reward")
