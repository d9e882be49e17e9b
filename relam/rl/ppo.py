"""PPO for the hierarchical ReLAM task (appendix A.3, hyper-parameters of appendix C).

Stable-Baselines3 2.9.2 PPO with the paper's two changes:

1. **GAE per subgoal segment.**  The paper sets the "done" flag "once a subgoal is achieved or a
   whole episode ends", so GAE is computed separately for each low-level segment.  The env is *not*
   reset at a subgoal: the cut exists only in the advantage computation.  :func:`segmented_gae` is
   the pure formula; :class:`SubgoalRolloutBuffer` stores a per-step ``segment_ends`` flag (from
   ``info["subgoal_reached"]``, recorded by :class:`SubgoalEndRecorder` just before SB3 adds the
   step to the buffer) and multiplies ``1 - segment_end`` into both the bootstrap term and the
   lambda chain.
2. **Reward scaling**: rewards are divided by a running standard deviation of the discounted
   return (SB3's ``VecNormalize(norm_obs=False, norm_reward=True)``), which keeps the value targets
   O(1) whatever the bonuses and penalties of :class:`relam.reward.RewardSettings` are.

Policy and critic: :class:`relam.rl.policies.KeypointImageExtractor` + ``net_arch``.

Appendix C settings are the defaults of :class:`PPOSettings`.  Not given by the paper (lost from
its table), our choices: learning rate 3e-4 (SB3's PPO default, also the rate of the first
try in ENVIRONMENT.md), CNN (32, 64, 64)/(8, 4, 3)/(4, 2, 1), point MLP (128, 128), heads
(256, 256).

Known edge: when a subgoal is reached on the very step the episode is truncated, SB3 has already
added ``gamma * V(terminal obs)`` to that reward; the cut then keeps that bootstrap (one step in an
episode, negligible).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from relam.devices import resolve_device
from relam.rl.policies import KeypointImageExtractor
from relam.rl.resume import (
    CheckpointAfterUpdate,
    EpisodeReplay,
    RNGSnapshot,
    load_checkpoint,
    restore_envs,
    save_checkpoint,
)

__all__ = [
    "segmented_gae",
    "SubgoalRolloutBuffer",
    "SubgoalEndRecorder",
    "HierarchicalPPO",
    "PPOSettings",
    "make_ppo",
    "make_vec_env",
    "env_seed",
    "resolve_device",
    "train_ppo",
]


# --------------------------------------------------------------------------- the GAE cut


def segmented_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    episode_starts: np.ndarray,
    segment_ends: np.ndarray,
    last_values: np.ndarray,
    last_dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
    segment_bootstrap: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE(lambda) cut at episode ends *and* at subgoal ends.

    Arrays are ``(T, n_envs)`` in SB3's convention: ``episode_starts[t]`` is 1 when observation t
    starts an episode (so transition t-1 ended one); ``segment_ends[t]`` is 1 when transition t
    reached a subgoal.  ``last_values``/``last_dones`` (n_envs,) are the value of the observation
    after the rollout and whether the last transition ended an episode.

    With ``c_t = (1 - done_t)(1 - segment_end_t)`` and ``b_t = (1 - done_t)(1 - (1 - kappa)
    segment_end_t)``, ``kappa = segment_bootstrap``:
    ``delta_t = r_t + gamma b_t V_{t+1} - V_t``, ``A_t = delta_t + gamma lambda c_t A_{t+1}``;
    returns ``(advantages, returns = advantages + values)``, float32. ``kappa = 0`` (the paper's
    "done" at a subgoal) makes a segment end terminal; ``kappa > 0`` keeps that share of the
    next segment's value at the end of this one (the lambda chain stays cut), so a segment's
    advantage sees what its end state is worth to the rest of the plan.
    """
    r = np.asarray(rewards, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    T = r.shape[0]
    if not (v.shape == r.shape == np.shape(episode_starts) == np.shape(segment_ends)):
        raise ValueError(
            "segmented_gae: rewards, values, episode_starts, segment_ends must share the shape "
            f"(T, n_envs); got {r.shape}, {v.shape}, {np.shape(episode_starts)}, {np.shape(segment_ends)}"
        )
    starts = np.asarray(episode_starts, dtype=np.float64)
    seg = np.asarray(segment_ends, dtype=np.float64)
    adv = np.zeros_like(r)
    last = np.zeros(r.shape[1:], dtype=np.float64)
    for t in reversed(range(T)):
        if t == T - 1:
            cont = 1.0 - np.asarray(last_dones, dtype=np.float64)
            next_v = np.asarray(last_values, dtype=np.float64)
        else:
            cont = 1.0 - starts[t + 1]
            next_v = v[t + 1]
        boot = cont * (1.0 - (1.0 - segment_bootstrap) * seg[t])
        cont = cont * (1.0 - seg[t])
        delta = r[t] + gamma * next_v * boot - v[t]
        last = delta + gamma * gae_lambda * cont * last
        adv[t] = last
    return adv.astype(np.float32), (adv + v).astype(np.float32)


class SubgoalRolloutBuffer(DictRolloutBuffer):
    """DictRolloutBuffer that also stores, per step, whether a subgoal ended there.

    ``cut_segments=False`` keeps SB3's plain GAE (for ablations); the flags are still stored.
    """

    cut_segments: bool = True
    #: the share of the next segment's value kept at a subgoal end (segmented_gae's ``kappa``)
    segment_bootstrap: float = 0.0

    def reset(self) -> None:
        super().reset()
        self.segment_ends = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        self._pending: np.ndarray | None = None

    def mark_segment_ends(self, flags: Any) -> None:
        """Flags (n_envs,) for the step about to be added (called from the step callback)."""
        f = np.asarray(flags, dtype=np.float32).reshape(self.n_envs)
        self._pending = f

    def add(self, *args: Any, **kwargs: Any) -> None:
        if self._pending is not None:
            self.segment_ends[self.pos] = self._pending
            self._pending = None
        super().add(*args, **kwargs)

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        seg = self.segment_ends if self.cut_segments else np.zeros_like(self.segment_ends)
        self.advantages, self.returns = segmented_gae(
            self.rewards,
            self.values,
            self.episode_starts,
            seg,
            last_values.clone().cpu().numpy().flatten(),
            np.asarray(dones),
            self.gamma,
            self.gae_lambda,
            self.segment_bootstrap,
        )


class SubgoalEndRecorder(BaseCallback):
    """Copies ``info["subgoal_reached"]`` of every env into the rollout buffer before each add.

    SB3 calls ``callback.on_step()`` after ``env.step`` and before ``rollout_buffer.add``, with
    ``infos`` and ``rollout_buffer`` in ``self.locals``.
    """

    def _on_step(self) -> bool:
        buf = self.locals.get("rollout_buffer")
        if isinstance(buf, SubgoalRolloutBuffer):
            infos = self.locals["infos"]
            buf.mark_segment_ends([bool(i.get("subgoal_reached", False)) for i in infos])
        return True


class HierarchicalPPO(PPO):
    """PPO whose GAE is cut at subgoal ends (see the module docstring)."""

    def __init__(self, *args: Any, segment_gae: bool = True, segment_bootstrap: float = 0.0, **kwargs: Any):
        kwargs.setdefault("rollout_buffer_class", SubgoalRolloutBuffer)
        self.segment_gae = bool(segment_gae)
        self.segment_bootstrap = float(segment_bootstrap)
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if isinstance(self.rollout_buffer, SubgoalRolloutBuffer):
            self.rollout_buffer.cut_segments = self.segment_gae
            self.rollout_buffer.segment_bootstrap = getattr(self, "segment_bootstrap", 0.0)

    def train(self) -> None:
        super().train()
        # the random streams as the update left them: a checkpoint taken before the next rollout
        # saves these, so that a resumed run draws what this one will (relam.rl.resume)
        self.rng_after_update = RNGSnapshot.take()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "rng_after_update"]

    def learn(self, total_timesteps: int, callback: Any = None, **kwargs: Any):
        cbs: list = [SubgoalEndRecorder()]
        if isinstance(callback, list):
            cbs += callback
        elif callback is not None:
            cbs.append(callback)
        return super().learn(total_timesteps, callback=CallbackList(cbs), **kwargs)


# --------------------------------------------------------------------------- settings and builders


@dataclass(frozen=True)
class PPOSettings:
    """PPO settings; appendix C values where the paper gives them (see the module docstring)."""

    learning_rate: float = 3e-4
    #: "constant", or "linear": anneal the learning rate to 0 over the run's total steps (CleanRL's
    #: default for continuous PPO). Measured on drawer-open-v3 (points-only, ground-truth subgoals,
    #: constant 3e-4): one 2000-step update moved the deterministic policy from 60% to 83% success
    #: late in training, so the final evaluation of a constant-rate run is a draw from a swinging
    #: curve; annealing lets the last updates settle it.
    lr_schedule: str = "constant"
    #: environment steps per rollout over all environments (appendix C: 2000); each of the
    #: ``n_envs`` environments collects ``n_steps // n_envs`` of them.
    n_steps: int = 2000
    batch_size: int = 64
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    #: SB3's ``target_kl``: stop an update's epochs once the approximate KL between the rollout's
    #: policy and the updated one passes 1.5x this; None (appendix C: not given) runs all
    #: ``n_epochs``. ``train.csv`` logs each update's ``ppo_approx_kl`` to choose it from.
    target_kl: float | None = None
    segment_gae: bool = True
    #: with ``segment_gae``, the share of the next segment's value that a subgoal end keeps
    #: (:func:`segmented_gae`'s ``kappa``): 0 is the paper's "done" at every subgoal, which makes
    #: each segment blind to the state it ends in; 1 bootstraps through (the lambda chain stays cut).
    segment_bootstrap: float = 0.0
    reward_scaling: bool = True
    clip_scaled_reward: float = 10.0
    cnn_channels: tuple[int, ...] = (32, 64, 64)
    cnn_kernels: tuple[int, ...] = (8, 4, 3)
    cnn_strides: tuple[int, ...] = (4, 2, 1)
    image_dim: int = 256
    point_hidden: tuple[int, ...] = (128, 128)
    net_arch: tuple[int, ...] = (256, 256)
    #: initial log standard deviation of the Gaussian policy. SB3's default 0 (std 1.0 on
    #: Meta-World's [-1, 1] actions) saturates the action box half the time; measured on
    #: drawer-open-v3 (points-only, ground-truth subgoals): std 1.0 sat at stage 3 of 4 with 0%
    #: success through 450k steps, std 0.6 (log -0.5) reached the stages 5-10x sooner.
    log_std_init: float = 0.0
    #: SB3's generalized state-dependent exploration (gSDE): the exploration noise is a linear map of
    #: the policy's last hidden layer, redrawn every ``sde_sample_freq`` steps (-1: once a rollout),
    #: so it is smooth along a trajectory instead of white. With it ``log_std_init`` sets the log std
    #: of that map's entries, not of the action: the action's std scales with the latent's norm
    #: (measured at initialisation on door's points-only policy: log_std_init -0.5 gave an action
    #: std of 1.10, -2 gave 0.25, so -1.1 gives about the 0.6 that -0.5 gives without gSDE).
    #: ``train.csv``'s ``ppo_std`` (SB3's ``train/std``) is then the mean of that map's stds.
    use_sde: bool = False
    sde_sample_freq: int = -1
    #: whether the actor and the critic share one features extractor (SB3's default, True) or each
    #: has its own (then the critic's loss no longer trains the image CNN the actor reads). The image
    #: runs log an approximate KL of 0.06-0.18 per update by 20k steps and 0.2-1.8 after (clip
    #: fraction 0.4-0.8, the action std down to 0.02-0.04 by 400k), where the points-only runs stay
    #: at 0.01-0.03; measured on button-press-wall (session 27), separate extractors did not lower
    #: it (0.36-0.45 over 24k-48k): the actor's own CNN moves the policy. ``target_kl`` bounds it.
    share_features_extractor: bool = True
    #: parallel environments; ``n_steps`` is split between them (the rollout stays n_steps long).
    n_envs: int = 1
    #: "dummy" steps the environments in this process (best on 1-2 cores: no pickling);
    #: "subproc" runs one process per environment (SB3's SubprocVecEnv, spawn start method).
    vec_env: str = "dummy"
    torch_threads: int = 1
    #: where the policy and its updates run: "auto" takes CUDA when torch sees it, else the CPU
    #: (:func:`relam.devices.resolve_device`); "cpu" or "cuda[:N]" as given. Rollouts stay in
    #: this process's environments either way; the GPU pays off on the image policy's updates.
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("n_steps", "batch_size", "n_epochs", "torch_threads", "n_envs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PPOSettings.{name}={getattr(self, name)}: must be >= 1")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError("PPOSettings.gamma must be in (0, 1] and gae_lambda in [0, 1]")
        if self.n_steps % self.n_envs:
            raise ValueError(f"PPOSettings.n_steps={self.n_steps} must be a multiple of n_envs={self.n_envs} "
                             "(each environment collects n_steps // n_envs steps a rollout)")
        if not 0.0 <= self.segment_bootstrap <= 1.0:
            raise ValueError(f"PPOSettings.segment_bootstrap={self.segment_bootstrap}: must be in [0, 1]")
        if self.target_kl is not None and not self.target_kl > 0:
            raise ValueError(f"PPOSettings.target_kl={self.target_kl}: must be > 0, or None for no early stop")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError(f"PPOSettings.lr_schedule={self.lr_schedule!r}: choose 'constant' or 'linear'")
        if self.vec_env not in ("dummy", "subproc"):
            raise ValueError(f"PPOSettings.vec_env={self.vec_env!r}: choose 'dummy' or 'subproc'")

    @property
    def steps_per_env(self) -> int:
        return self.n_steps // self.n_envs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def env_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th training environment of a run with ``seed``: the run's seed
    itself for the first (so one environment behaves as before), spread far apart for the others."""
    return int(seed) if index == 0 else int(seed) + 100_003 * int(index)


class _MonitoredEnv:
    """Picklable ``env_fn(seed)`` in a Monitor (SubprocVecEnv sends it to a new process), in an
    :class:`relam.rl.resume.EpisodeReplay` (what puts it back where it was on a resume)."""

    def __init__(self, env_fn: Callable[[int], gym.Env], seed: int):
        self.env_fn, self.seed = env_fn, int(seed)

    def __call__(self) -> gym.Env:
        th.set_num_threads(1)
        return EpisodeReplay(Monitor(self.env_fn(self.seed)))


def make_vec_env(env_fn: Callable[[int], gym.Env], seed: int, settings: PPOSettings) -> VecEnv:
    """``settings.n_envs`` environments (``env_fn(env_seed(seed, i))``) with episode monitoring and
    reward scaling, in this process (DummyVecEnv) or one process each (SubprocVecEnv)."""
    fns = [_MonitoredEnv(env_fn, env_seed(seed, i)) for i in range(settings.n_envs)]
    if settings.vec_env == "subproc" and settings.n_envs > 1:
        from stable_baselines3.common.vec_env import SubprocVecEnv

        venv: VecEnv = SubprocVecEnv(fns, start_method="spawn")
    else:
        venv = DummyVecEnv(fns)
    if settings.reward_scaling:
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=settings.gamma,
                            clip_reward=settings.clip_scaled_reward)
    return venv


def make_ppo(env: VecEnv | gym.Env, settings: PPOSettings = PPOSettings(), seed: int = 0) -> HierarchicalPPO:
    """The A.3 policy/critic with appendix C settings; writes no log folder."""
    th.set_num_threads(int(settings.torch_threads))
    policy_kwargs = dict(
        features_extractor_class=KeypointImageExtractor,
        features_extractor_kwargs=dict(
            cnn_channels=tuple(settings.cnn_channels),
            cnn_kernels=tuple(settings.cnn_kernels),
            cnn_strides=tuple(settings.cnn_strides),
            image_dim=int(settings.image_dim),
            point_hidden=tuple(settings.point_hidden),
        ),
        net_arch=dict(pi=list(settings.net_arch), vf=list(settings.net_arch)),
        log_std_init=float(settings.log_std_init),
        share_features_extractor=bool(settings.share_features_extractor),
        # SB3's Adam (eps 1e-5) in torch's fused form: one kernel for all parameters instead of one per
        # tensor; measured 1.19 -> 0.92 s per 2000-step update of the points-only policy on one core
        optimizer_kwargs=dict(eps=1e-5, fused=True),
    )
    return HierarchicalPPO(
        "MultiInputPolicy",
        env,
        segment_gae=settings.segment_gae,
        segment_bootstrap=settings.segment_bootstrap,
        learning_rate=learning_rate_schedule(settings),
        n_steps=settings.steps_per_env,
        batch_size=settings.batch_size,
        n_epochs=settings.n_epochs,
        gamma=settings.gamma,
        gae_lambda=settings.gae_lambda,
        clip_range=settings.clip_range,
        ent_coef=settings.ent_coef,
        vf_coef=settings.vf_coef,
        max_grad_norm=settings.max_grad_norm,
        target_kl=settings.target_kl,
        use_sde=settings.use_sde,
        sde_sample_freq=settings.sde_sample_freq,
        policy_kwargs=policy_kwargs,
        tensorboard_log=None,
        verbose=0,
        seed=int(seed),
        device=resolve_device(settings.device),
    )


def learning_rate_schedule(settings: PPOSettings) -> float | LinearSchedule:
    """SB3's learning rate argument: the constant, or SB3's :class:`LinearSchedule` from it to 0.

    SB3 feeds a schedule the fraction of ``learn``'s total steps still to go; ``train_ppo`` calls
    ``learn`` with ``reset_num_timesteps=False`` so a resumed run keeps the schedule of its total."""
    if settings.lr_schedule == "linear":
        return LinearSchedule(float(settings.learning_rate), 0.0, 1.0)
    return float(settings.learning_rate)


# --------------------------------------------------------------------------- training loop


_TRAIN_FIELDS = ("step", "wall_s", "ep_return_mean", "episodes", "stage_mean", "train_success",
                 "model_reward_mean")
#: SB3 logger prefix of a batched reward model's statistics (DACfO, Diffusion Reward:
#: ``baselines.common.RolloutRewardCallback``); its ``reward_mean`` is the mean reward it gave a
#: rollout. Their environments pay a placeholder 0, so ``ep_return_mean`` says nothing for them.
MODEL_REWARD_PREFIX = "reward_model/"
MODEL_REWARD_KEY = MODEL_REWARD_PREFIX + "reward_mean"
#: SB3's statistics of the last PPO update, logged per rollout as ``ppo_<name>`` (the update that
#: ran before the rollout the row describes; absent on the first rollout): how far each update
#: moves the policy, which :attr:`PPOSettings.target_kl` bounds.
PPO_UPDATE_KEYS = ("approx_kl", "clip_fraction", "std", "explained_variance")
_EVAL_FIELDS = ("step", "success_rate", "mean_stage", "mean_return", "wall_s")


def _train_fields(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """``train.csv``'s columns: :data:`_TRAIN_FIELDS`, then any ``model_*`` statistics a reward
    model logged under :data:`MODEL_REWARD_PREFIX` and the ``ppo_*`` update statistics
    (:data:`PPO_UPDATE_KEYS`), in order of first appearance."""
    extra: dict[str, None] = {}
    for row in rows:
        extra.update((k, None) for k in row if k not in _TRAIN_FIELDS)
    return _TRAIN_FIELDS + tuple(extra)


class _TrainLog(BaseCallback):
    """Per-rollout training statistics (CSV rows) and a tqdm bar.

    ``model_reward_mean`` is the rollout's mean per-step reward from a batched reward model, read
    from the SB3 logger under :data:`MODEL_REWARD_KEY` (callbacks passed to :func:`train_ppo` run
    before this one, so the value is the current rollout's); NaN for methods without one.
    """

    def __init__(self, total: int, start: int, progress: bool):
        super().__init__(verbose=0)
        self.rows: list[dict[str, Any]] = []
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=start, desc="ppo", unit="step", dynamic_ncols=True)
        self._ep_stage: list[int] = []
        self._ep_success: list[bool] = []
        self._cur_stage: dict[int, int] = {}
        self._cur_success: dict[int, bool] = {}
        self._t0 = time.time()

    def _on_step(self) -> bool:
        if self._bar is not None:
            self._bar.update(self.training_env.num_envs)
        for i, (info, done) in enumerate(zip(self.locals["infos"], self.locals["dones"])):
            self._cur_stage[i] = max(self._cur_stage.get(i, 0), int(info.get("stage", 0)))
            self._cur_success[i] = self._cur_success.get(i, False) or bool(info.get("success", False))
            if done:
                self._ep_stage.append(self._cur_stage.pop(i))
                self._ep_success.append(self._cur_success.pop(i))
        return True

    def _on_rollout_end(self) -> None:
        eps = list(self.model.ep_info_buffer)
        row = {
            "step": int(self.num_timesteps),
            "wall_s": round(time.time() - self._t0, 2),
            "ep_return_mean": float(np.mean([e["r"] for e in eps])) if eps else float("nan"),
            "episodes": len(self._ep_stage),
            "stage_mean": float(np.mean(self._ep_stage)) if self._ep_stage else float("nan"),
            "train_success": float(np.mean(self._ep_success)) if self._ep_success else float("nan"),
            "model_reward_mean": float(self.model.logger.name_to_value.get(MODEL_REWARD_KEY, float("nan"))),
        }
        # the reward model's other statistics of this rollout (e.g. DACfO's discriminator accuracy)
        for key, value in self.model.logger.name_to_value.items():
            if key.startswith(MODEL_REWARD_PREFIX) and key != MODEL_REWARD_KEY:
                row["model_" + key[len(MODEL_REWARD_PREFIX):]] = float(value)
        for name in PPO_UPDATE_KEYS:
            if "train/" + name in self.model.logger.name_to_value:
                row["ppo_" + name] = float(self.model.logger.name_to_value["train/" + name])
        self.rows.append(row)
        self._ep_stage.clear()
        self._ep_success.clear()
        if self._bar is not None:
            self._bar.set_postfix(stage=row["stage_mean"], succ=row["train_success"])

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def unfinished(self) -> dict[str, dict[str, Any]]:
        """The stage and success of each environment's unfinished episode (a checkpoint keeps them)."""
        return {"stage": {str(i): v for i, v in self._cur_stage.items()},
                "success": {str(i): v for i, v in self._cur_success.items()}}

    def restore(self, unfinished: dict[str, dict[str, Any]] | None) -> None:
        if unfinished:
            self._cur_stage = {int(i): int(v) for i, v in unfinished["stage"].items()}
            self._cur_success = {int(i): bool(v) for i, v in unfinished["success"].items()}


def train_ppo(
    env_fn: Callable[[int], gym.Env],
    settings: PPOSettings,
    out_dir: str | Path,
    total_steps: int,
    eval_every: int,
    eval_episodes: int,
    seed: int,
    eval_env_fn: Callable[[int], gym.Env] | None = None,
    progress: bool = True,
    title: str = "",
    callbacks: list[BaseCallback] | None = None,
    tensorboard: bool | str | Path | None = None,
):
    """Train :class:`HierarchicalPPO` on ``env_fn(seed)`` and evaluate on fixed seeded episodes.

    Evaluates at step 0, every ``eval_every`` steps and at the end (the last point is the final
    success rate).  Writes into ``out_dir``: ``checkpoint.zip`` + ``state.json`` (also used to
    resume: a second call with the same ``out_dir`` continues from the checkpoint, taken after the
    update that follows each evaluation; where every environment has seeded episodes (ReLAM, IS,
    Oracle), the resumed run retraces the uninterrupted one: :mod:`relam.rl.resume`),
    ``train.csv``, ``eval.csv``, ``curve.png``.

    ``callbacks`` are extra SB3 callbacks passed to ``learn`` (after the subgoal-end recorder and
    before the logger and the evaluator), e.g. a baseline's reward relabelling at rollout end.

    ``tensorboard``: True (``out_dir/tensorboard``) or a folder gives a TensorBoard log through SB3's
    logger (rollout/train/time values and ``eval/``); None follows ``$RELAM_TENSORBOARD``
    (:mod:`relam.tblog`; needs the ``tensorboard`` extra).

    Returns a :class:`relam.methods.RunResult` (success, curve, metrics).
    """
    from relam.cache import atomic_write_bytes
    from relam.results import RunResult
    from relam.rl.evaluation import SuccessEvalCallback, curve_to_csv, eval_env_count, eval_seeds, plot_curve
    from relam.tblog import log_scalars, tensorboard_logger

    if int(total_steps) < 1 or int(eval_every) < 1 or int(eval_episodes) < 1:
        raise ValueError("train_ppo: total_steps, eval_every and eval_episodes must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tb = tensorboard_logger(tensorboard, out, "train_ppo")
    th.set_num_threads(int(settings.torch_threads))
    t0 = time.time()
    venv = make_vec_env(env_fn, seed, settings)
    # evaluation episodes are played on up to n_envs envs at once (batched predictions)
    eval_envs = [(eval_env_fn or env_fn)(seed + 1 + i) for i in range(eval_env_count(settings.n_envs, eval_episodes))]
    state, model = load_checkpoint(
        out, lambda ckpt: HierarchicalPPO.load(ckpt, env=venv, device=resolve_device(settings.device)))
    if state is not None:
        restore_envs(state, venv)
        curve = [tuple(c) for c in state["curve"]]
        rows, eval_rows = list(state["train_rows"]), list(state["eval_rows"])
    else:
        model = make_ppo(venv, settings, seed)
        curve, rows, eval_rows = [], [], []
    if tb is not None:
        model.set_logger(tb)
    done_steps = int(model.num_timesteps)
    t_prev = float(eval_rows[-1]["wall_s"]) if eval_rows else 0.0  # wall time before a resume

    log = _TrainLog(int(total_steps), done_steps, progress)
    log.rows = rows
    if state is not None and (state.get("resume") or {}).get("envs") is not None:
        log.restore(state["resume"].get("train_log"))

    def on_eval(step: int, res) -> None:
        eval_rows.append({"step": step, "success_rate": res.success_rate, "mean_stage": res.mean_stage,
                          "mean_return": float(np.mean(res.returns)),
                          "wall_s": round(t_prev + time.time() - t0, 2)})
        if tb is not None:
            log_scalars(tb, "eval", eval_rows[-1], step)
        atomic_write_bytes(out / "eval.csv", curve_to_csv(eval_rows, _EVAL_FIELDS))
        atomic_write_bytes(out / "train.csv", curve_to_csv(log.rows, _train_fields(log.rows)))
        plot_curve(cb.curve, out / "curve.png", title, train_rows=log.rows)
        if learning:
            saver.due = True  # after the update this rollout feeds, at the next rollout's start
        else:
            save()

    def save() -> None:
        if saver.replay_differed and resumes:
            resumes[-1]["exact"] = False
        save_checkpoint(model, venv, out, {"curve": cb.curve, "train_rows": log.rows, "eval_rows": eval_rows,
                                           "resumes": resumes}, extra={"train_log": log.unfinished()})

    # every resume of this run: its step and whether it retraced the uninterrupted run's path
    # (the record's metrics count them)
    resumes: list[dict[str, Any]] = list((state or {}).get("resumes", []))
    if state is not None and int(total_steps) > done_steps:
        resumes.append({"step": done_steps, "exact": bool(state.get("exact", False))})
    learning = False
    saver = CheckpointAfterUpdate(save, resume=(state or {}).get("resume"))

    # the last evaluation comes after learn(), on the policy the checkpoint keeps
    cb = SuccessEvalCallback(eval_envs, eval_seeds(eval_episodes), eval_every, on_eval,
                             final_step=int(total_steps))
    cb.curve = list(curve)
    cb.next_eval = (done_steps // int(eval_every) + 1) * int(eval_every)
    if not curve:
        cb.init_callback(model)
        cb.evaluate_now(0)
    remaining = int(total_steps) - done_steps
    if remaining > 0:
        learning = True
        model.learn(remaining, callback=list(callbacks or []) + [log, cb, saver], reset_num_timesteps=False,
                    progress_bar=False)
        learning = False
    if not cb.curve or cb.curve[-1][0] < int(model.num_timesteps):
        cb.evaluate_now(int(model.num_timesteps))  # writes the outputs, the last rollout's row included
    venv.close()
    for e in eval_envs:
        e.close()
    if tb is not None:
        tb.dump(step=int(model.num_timesteps))  # the last update's train/ values
        tb.close()
    last = eval_rows[-1] if eval_rows else {}
    return RunResult(
        success=float(cb.curve[-1][1]),
        curve=[(int(s), float(v)) for s, v in cb.curve],
        metrics={"env_steps": float(model.num_timesteps), "wall_s": time.time() - t0,
                 "resumes": float(len(resumes)), "inexact_resumes": float(sum(not r["exact"] for r in resumes)),
                 "final_mean_stage": float(last.get("mean_stage", 0.0))},
    ).validate()
