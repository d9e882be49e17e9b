"""Diffusion Reward (Huang et al., ECCV 2024): reward = low conditional entropy under an expert video model.

The idea: a video diffusion model trained on expert videos, asked for the next frame given the
previous ones, is *confident* (low conditional entropy) in expert-like states and unsure in
others.  The original (github TEA-Lab/diffusion_reward; VQ-Diffusion over VQGAN codes) rewards
minus the conditional entropy of the frame *after* the reached one, estimated from the model's
variational bound on a sample it draws itself, standardises it with statistics of the expert
videos, and mixes in a random-network-distillation (RND) novelty bonus plus the environment's
sparse success reward.

Checked against the original's reward code and its Meta-World configs, point by point
(issue 18; "was" = our version 1, the cause of the fix where it differed):

| point | original | ours | why, if different |
|---|---|---|---|
| video model | VQ-Diffusion: VQGAN codes (64 px -> 8x8 tokens), transformer, 100 discrete steps | DDPM ``UNet2DModel`` on 32 px pixels, Gaussian, 1000 linear-schedule steps, eps-prediction, ~2.5 M parameters | no pretrained VQGAN, 2 CPU cores; the entropy below is the same quantity for a Gaussian chain |
| conditioning frames | 2 (``num_cond_frames: 2``, ``frame_skip: 1``); the step ``o_t -> o_{t+1}`` gets the entropy of the next frame given ``(o_t, o_{t+1})`` | the same: ``history=2``, context ``(o_t, o_{t+1})`` (:meth:`DiffusionReward.reward_context`); training pairs ``(o_{t-1}, o_t) -> o_{t+1}`` | was ``(o_{t-1}, o_t)``, scoring the observed ``o_{t+1}``: fixed |
| skip step | ``skip_step: 9`` on 100 steps: chain 99, 89, ..., 9, 0 (11 network calls) | ``skip_step=99`` on 1000 steps: 999, 899, ..., 99, 0 (11 calls, :attr:`DiffusionReward.denoise_steps`) | was 3 fixed noise levels (500, 700, 900), no chain: fixed |
| entropy estimate | ``reward_type: entropy``: sample the next frame with the skipped reverse chain (``num_sample: 1``, noise on), score the *sample* by the chain's bound (sum of ``-KL`` of each step + log-prob of the last): ``E[log p(x|c)] = -H`` | the same on the Gaussian chain: ancestral sampling, ``-sum_k 0.5 (SNR(s_k) - SNR(t_k)) |x - x0_hat_k|^2``; the last step is a deterministic decoder (no term); one sample drawn with fixed noise (common random numbers) | was the unweighted denoising error of the *observed* frame (a likelihood, the original's other ``reward_type``), which pays whatever frame is easy to predict from its context, expert-like or not; fixed.  It does not by itself explain the inversion (random steps out-scoring expert ones, AUC 0.37/0.30/0.12 at quick scale): see *Ranking* below.  Fixed noise instead of fresh noise: deterministic rewards, identical after reload |
| standardisation | fixed per task and skip step, from the expert videos (``statistics/diffusion_reward/entropy/metaworld.yaml``, e.g. drawer-open-v2: mean -176.4, std 32.9) | mean/std of ``r_ce`` over up to 512 expert training transitions, measured at the end of :meth:`DiffusionReward.fit` | same role; measured per trained model because our scale differs |
| mix | ``(1 - 0.95) * r_ce_std + 0.95 * r_rnd + r_env`` (``expl_scale: 0.95``, ``use_env_reward: true``) | ``0.05 * r_ce_std + 0.95 * r_rnd + success_bonus * success`` | same |
| success reward | Meta-World wrapper: ``int(success)`` summed over the 2 action repeats (0..2 a step) | ``success_bonus=1`` per step when the simulator says success (``success_reward`` switch, on) | we have no action repeat |
| RND | conv net, 512-d features, bonus ``0.5 * sum (err^2)``, not normalised (``expl_std: true`` is in the config but the reward code does not read it); predictor: one batch of 256 replay frames every agent update (the Meta-World script sets ``expl_update_interval=1``; the yaml default is 100), lr 1e-4 (DrQ-v2, off-policy) | :class:`baselines.common.RND`: small CNN, 64-d, bonus = mean squared error divided by the running std of bonuses; one predictor epoch on each PPO rollout, lr 1e-3 | a different net and on-policy PPO: normalising makes 0.95 mean the same share whatever the net's scale |
| when rewards are computed | whole episode at its end (``ReplayCache.pop``); RND on replay batches at update time | whole PPO rollout at its end (:class:`baselines.common.RolloutRewardCallback`) | PPO is on-policy: labels once per rollout |

Ranking (the entropy term alone, expert vs random-action steps, AUC as in
:func:`baselines.evaluation.expert_vs_random`), smoke check only: a 16 px model fitted 150 steps
on 3 demos, 2 held-out expert videos vs 2 random-action ones: drawer-open 0.72 with this estimate
(0.21 with version 1's), door-open 0.21 (0.50 with version 1's).  Door's expert steps score
-670..-676 over the whole episode against -672 for random ones, and the score hardly follows the
frame-to-frame motion (Spearman -0.04 within expert steps), so at this size the inversion is not a
"static frames are easy" artefact; the quick-scale ranking is still to be measured
(``python benchmarks/bench_reward_cost.py ranking TASK ...``).  Why the estimate is nearly
context-free: on the linear schedule the exact bound's last jump (99 -> 0) weighs about 5,000
against at most 3.4 for the other steps (:meth:`DiffusionReward.step_weights`), so it scores
mostly the t = 0 denoiser's error on the fixed sampling noise.  Scored in noise units instead
(``ce_weighting="eps"``) on the same trained models (``python benchmarks/bench_reward_sanity.py
--auc --tasks door-open-v3 drawer-open-v3 button-press-wall-v3 --methods diffusion_reward --n 4
--n-train 8``: 16 px, 600 CPU steps on 8 demos, 4 held-out demos against 4 random-action videos),
the entropy-only AUC went door 0.559 -> 0.712, button 0.585 -> 0.618, drawer 0.588 -> 0.432
(the full mix with the default: 0.733, 0.717, 0.565).  Not one direction at this size, so the
exact bound stays the default; the quick-scale models (GPU-trained) are where to decide.
The original leans on RND (0.95)
and the success reward for learning; its entropy term is 0.05 of the reward.

Costs: one reward is 11 UNet passes (was 3), all batched at the end of a rollout.  The trained
model's cache key holds :meth:`DiffusionReward.config` (``skip_step`` replaced
``eval_timesteps``), so models trained for version 1 are not reused, and the method's ``version``
is 2, so version-1 runs are not reused either.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from baselines.common import RND, FrameRewardModel, RunningMeanStd, _to_float
from baselines.runs import IMAGE_POLICY_INPUTS
from relam.devices import moved_to
from relam.methods import MethodSettings, RewardMethod, register_method
from relam.scales import ScaleTable

__all__ = ["DiffusionReward", "linear_alphas_cumprod", "noisy_sample", "CE_WEIGHTINGS"]

#: the values of ``DiffusionReward.ce_weighting``, the default first (see :meth:`DiffusionReward.step_weights`)
CE_WEIGHTINGS: tuple[str, ...] = ("elbo", "eps")


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
                 layers_per_block: int = 1, n_timesteps: int = 1000, skip_step: int = 99,
                 lr: float = 3e-4, batch: int = 32,
                 rnd_weight: float = 0.95, ce_weight: float = 0.05, success_reward: bool = True,
                 success_bonus: float = 1.0, use_rnd: bool = True, seed: int = 0, device: str = "auto",
                 ce_weighting: str = "elbo"):
        from diffusers import UNet2DModel

        if history < 1:
            raise ValueError(f"DiffusionReward(history=...): need >= 1 context frame, got {history}")
        if size % (2 ** (len(channels) - 1)):
            raise ValueError(f"DiffusionReward(size={size}): must be divisible by 2^(len(channels)-1)")
        if not 0 <= skip_step < n_timesteps - 1:
            raise ValueError(f"DiffusionReward(skip_step={skip_step}): need 0 <= skip_step < n_timesteps - 1 "
                             f"({n_timesteps - 1}), so that the reverse chain has at least two steps")
        self.size, self.history, self.channels = int(size), int(history), tuple(int(c) for c in channels)
        self.layers_per_block, self.n_timesteps = int(layers_per_block), int(n_timesteps)
        self.skip_step = int(skip_step)
        self.lr, self.batch = float(lr), int(batch)
        self.rnd_weight, self.ce_weight = float(rnd_weight), float(ce_weight)
        self.success_reward, self.success_bonus = bool(success_reward), float(success_bonus)
        self.use_rnd, self.seed = bool(use_rnd), int(seed)
        if ce_weighting not in CE_WEIGHTINGS:
            raise ValueError(f"DiffusionReward(ce_weighting={ce_weighting!r}): choose one of {CE_WEIGHTINGS}")
        #: how the steps of the chain's bound are weighted in the entropy estimate (:meth:`ce_reward_raw`).
        #: It scores a trained model, it does not train one: in :meth:`config` (labelled data sets are
        #: keyed by it) where it is not the default, never in :func:`trained_model`'s key.
        self.ce_weighting = ce_weighting
        #: where the video model's reverse chain runs when rewards are computed ("auto": CUDA when
        #: torch sees it; :func:`relam.devices.resolve_device`). Not part of :meth:`config` (keys).
        self.device = device
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
            # row 0: the chain's start x_T; row k: the noise of the step into denoise_steps[k]
            self.eval_noise = torch.randn(len(self.denoise_steps), 3, self.size, self.size, generator=g)
        self.rnd = RND(size=self.size, seed=seed + 2)
        self.abar = linear_alphas_cumprod(self.n_timesteps)
        self.opt = torch.optim.Adam(self.unet.parameters(), lr=self.lr)
        self.ce_stats = RunningMeanStd(0.0, 1.0, 0.0)
        self.rnd_stats = RunningMeanStd(0.0, 1.0, 1e-4)
        self.train_steps = 0

    @property
    def denoise_steps(self) -> tuple[int, ...]:
        """The reverse chain's timesteps: ``T-1, T-1-(skip+1), ...`` and 0 (11 for T=1000, skip 99).

        The original's chain (100 steps, ``skip_step`` 9) is ``99, 89, ..., 9, 0``; ours is the
        same tenths of a 1000-step schedule.
        """
        steps = list(range(self.n_timesteps - 1, -1, -(self.skip_step + 1)))
        return tuple(steps if steps[-1] == 0 else steps + [0])

    @property
    def eval_timesteps(self) -> tuple[int, ...]:
        """The timesteps at which the network runs for one reward (= :attr:`denoise_steps`)."""
        return self.denoise_steps

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    # ---------------------------------------------------------------- training
    def _inputs(self, hist: np.ndarray) -> torch.Tensor:
        """(N,k,3,S,S) uint8 context -> (N,3k,size,size) float in [-1, 1]."""
        N, k = hist.shape[:2]
        return _to_float(hist.reshape(N * k, *hist.shape[2:]), self.size).reshape(N, 3 * k, self.size, self.size)

    def fit(self, demos: Sequence[Any], steps: int = 2000, progress: bool = False,
            stats_items: int = 512, device: str | torch.device = "auto") -> dict[str, float]:
        """Train the next-frame model on expert videos, then measure the expert ``r_ce`` statistics.

        Demos may be :class:`relam.demos.Demo` objects or raw (T+1,H,W,3) uint8 videos.
        ``device`` is where the training steps run (``"auto"``: CUDA when torch sees it, see
        :func:`relam.devices.resolve_device`; the 5000 quick-scale steps take hours on 2 CPU cores).  Batches, timesteps and noise are drawn on the CPU with
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
        self.unet.train()
        loss = float("nan")
        bar = tqdm(range(steps), desc="Diffusion Reward model", disable=not progress)
        with moved_to(device, [self.unet], [self.opt]) as dev:
            for _ in bar:
                idx = rng.integers(0, len(nxt), self.batch)
                x0 = _to_float(nxt[idx], self.size)
                t = torch.randint(0, self.n_timesteps, (self.batch,), generator=gen)
                eps = torch.randn(x0.shape, generator=gen)
                noisy = noisy_sample(x0, eps, self.abar[t])
                pred = self.unet(torch.cat([noisy, self._inputs(hist[idx])], 1).to(dev), t.to(dev)).sample
                batch_loss = F.mse_loss(pred, eps.to(dev))
                self.opt.zero_grad()
                batch_loss.backward()
                self.opt.step()
                loss = batch_loss.item()
                self.train_steps += 1
                bar.set_postfix(loss=f"{loss:.4f}")
        self.unet.eval()
        sub = rng.permutation(len(nxt))[:stats_items]
        ce = self.ce_reward_raw(hist[sub], nxt[sub])
        self.ce_stats = RunningMeanStd(float(ce.mean()), float(ce.var()), float(len(ce)))
        return {"loss": loss, "ce_mean": self.ce_stats.mean, "ce_std": self.ce_stats.std}

    # ---------------------------------------------------------------- reward
    def reward_context(self, hist: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """The frames the entropy is conditioned on: the last ``history`` frames *up to the reached
        one* ``o_{t+2-history} .. o_{t+1}`` (N,history,3,S,S).

        The original rewards the step ``o_t -> o_{t+1}`` with the entropy of the frame after
        ``o_{t+1}`` given ``(o_t, o_{t+1})``: the confidence of the expert model *in the state
        reached*.  ``hist`` holds ``o_{t+1-history} .. o_t``, so drop its oldest frame, append ``nxt``.
        """
        return np.concatenate([hist[:, 1:], nxt[:, None]], 1)

    def _posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: int, s: int) -> tuple[torch.Tensor, float]:
        """``q(x_s | x_t, x_0)`` for ``s < t`` (a jump of the chain): its mean and standard deviation."""
        a_t, a_s = float(self.abar[t]), float(self.abar[s])
        a_ts = a_t / a_s
        mean = (math.sqrt(a_s) * (1 - a_ts) * x0 + math.sqrt(a_ts) * (1 - a_s) * xt) / (1 - a_t)
        return mean, math.sqrt((1 - a_s) * (1 - a_ts) / (1 - a_t))

    def _snr(self, t: int) -> float:
        return float(self.abar[t] / (1 - self.abar[t]))

    def step_weights(self) -> list[float]:
        """The weight of each step ``t_k -> t_{k+1}`` of :attr:`denoise_steps` on ``|x - x0_hat(t_k)|^2``.

        ``"elbo"`` (default): the Gaussian chain's exact KL, ``0.5 (SNR(t_{k+1}) - SNR(t_k))``.  On the
        linear 1000-step schedule the last jump (99 -> 0) weighs about 5,000 against at most 3.4 for
        the others, so the estimate is close to ``0.5 |z - eps_hat(t=0)|^2``: how well the model
        removes the fixed sampling noise at t = 0, which hardly depends on the context frames.  The
        original's steps are KLs between categorical distributions over VQGAN tokens, each in nats
        over the same 64 tokens, so no step dominates there.  ``"eps"``: ``0.5 SNR(t_k)``, the same
        error in noise units (DDPM's "simple" loss, with which the model is trained), where the
        context-dependent middle of the chain decides.  Measured on the same trained models, the
        ranking of expert above random-action steps does not move one way (module docstring,
        *Ranking*), so the exact bound stays the default.
        """
        steps = self.denoise_steps
        if self.ce_weighting == "elbo":
            return [0.5 * (self._snr(s) - self._snr(t)) for t, s in zip(steps[:-1], steps[1:])]
        return [0.5 * self._snr(t) for t in steps[:-1]]

    @torch.no_grad()
    def ce_reward_raw(self, hist: np.ndarray, nxt: np.ndarray, batch: int = 64) -> np.ndarray:
        """``-H``: minus the conditional entropy of the *next* frame given the reached context (N,).

        As the original's ``entropy`` reward: sample a frame ``x`` from the model with the skipped
        reverse chain (:attr:`denoise_steps`), then score that sample by the chain's variational
        bound, ``log p(x | c) >= -sum_k KL(q(x_{s_k} | x_{t_k}, x) || p(x_{s_k} | x_{t_k}, c))``.
        Its expectation over samples is ``-H(x | c)`` up to the bound's gap: high where the
        expert model is sure what comes next.  For Gaussian steps the KL of step ``t -> s`` is
        ``0.5 (SNR(s) - SNR(t)) |x - x0_hat(x_t)|^2`` (sum over pixels), so no network call is
        needed beyond the sampling ones.  The last step's prediction is the sample (a
        deterministic decoder: no term).  One sample per transition, drawn with the fixed noise
        ``eval_noise`` (common random numbers: deterministic, identical after reload).  The
        observed next frame enters only as context (see :meth:`reward_context`). The chain runs
        on :attr:`device` (the network comes back to the CPU afterwards).
        """
        self.unet.eval()
        steps = self.denoise_steps
        ctx_all = self.reward_context(hist, nxt)
        out = []
        with moved_to(self.device, [self.unet]) as dev:
            noise = self.eval_noise.to(dev)
            for i in range(0, len(nxt), batch):
                ctx = self._inputs(ctx_all[i:i + batch]).to(dev)
                n = len(ctx)
                x = noise[0].expand(n, -1, -1, -1)
                preds = []
                for k, t in enumerate(steps):
                    tt = torch.full((n,), t, dtype=torch.long, device=dev)
                    eps = self.unet(torch.cat([x, ctx], 1), tt).sample
                    a = float(self.abar[t])
                    x0 = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)
                    preds.append(x0)
                    if k + 1 < len(steps):
                        mean, std = self._posterior(x0, x, t, steps[k + 1])
                        x = mean + std * noise[k + 1]
                sample = preds[-1]
                kl = torch.zeros(n, dtype=torch.float64, device=dev)
                for k, w in enumerate(self.step_weights()):
                    kl += w * (sample - preds[k]).pow(2).flatten(1).sum(1).double()
                out.append(-kl.cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def ce_reward(self, hist: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """The standardised conditional-entropy reward ``(r_ce - mean_expert) / std_expert``
        (statistics of ``r_ce`` on expert transitions, measured by :meth:`fit`)."""
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
                "skip_step": self.skip_step, "lr": self.lr, "batch": self.batch,
                "rnd_weight": self.rnd_weight, "ce_weight": self.ce_weight,
                "success_reward": self.success_reward, "success_bonus": self.success_bonus,
                "use_rnd": self.use_rnd, "seed": self.seed,
                **({} if self.ce_weighting == "elbo" else {"ce_weighting": self.ce_weighting})}

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

    The video model trains on the GPU when torch sees one (``device="auto"``, see
    :meth:`DiffusionReward.fit`).
    """
    from filelock import FileLock

    from relam.cache import cache_dir, settings_hash
    from relam.demos import load_demos

    steps = FIT_STEPS[scale].fit_steps
    # the scoring's step weights do not change what is trained
    cfg = {k: v for k, v in DiffusionReward(seed=seed).config().items() if k != "ce_weighting"}
    key = settings_hash({"task": task, "n_demos": n_demos, "steps": steps, "config": cfg})
    path = cache_dir() / "diffusion_reward" / task / f"{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return DiffusionReward.load(path)
        model = DiffusionReward(seed=seed)
        model.fit(load_demos(task, n=n_demos, progress=progress), steps=steps, progress=progress, device="auto")
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
    policy_inputs = IMAGE_POLICY_INPUTS  # learns from images alone (robot state: offline rows only)
    #: 2: the entropy term is the original's (sampled next frame scored by the chain's bound, context
    #: ending at the reached frame), not the denoising error of the observed frame (version 1)
    version = "2"

    def offline(self, ctx):
        from baselines.runs import offline_run

        return offline_run(ctx, *offline_labeller(ctx))

    def online(self, ctx):
        from baselines.runs import online_run

        model = trained_model(ctx.task, ctx.budget.n_demos, ctx.scale, progress=ctx.progress)
        model.rnd = RND(size=model.size, seed=ctx.seed + 2)  # a fresh novelty model per run
        return online_run(ctx, model, "Diffusion Reward")
