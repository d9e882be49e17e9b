"""DACfO: Discriminator-Actor-Critic from Observation (paper section 4.2, appendix A.4).

Adversarial imitation from *videos*: a discriminator ``D(o_t, o_{t+1})`` learns to tell expert
transitions (consecutive frames of the expert videos) from the policy's transitions, and the policy
is rewarded for transitions the discriminator takes for expert ones.  Two ingredients, two papers:

* GAIfO (Torabi et al. 2019): the discriminator sees *state transitions* ``(o_t, o_{t+1})``, not
  ``(o, a)``, because expert videos carry no actions.  Here the two 64 px policy images stacked
  along the channel axis (6 channels) go through a small CNN to one logit.
* DAC (Kostrikov et al. 2019): a replay of the policy's past transitions as negatives (not only the
  last rollout) and a gradient penalty as the stabiliser: ``gp_weight * (||grad_x D(x_hat)|| - 1)^2``
  on random interpolations ``x_hat`` between expert and policy pairs (the WGAN-GP form DAC uses);
  it keeps D smooth so its reward does not collapse to 0/1 saturation early in training.

Reward (choice): ``log D - log(1 - D)``, i.e. the discriminator's logit (``reward_form="logit"``,
DAC's and AIRL's form).  It is positive on expert-like and negative on policy-like transitions, so
it carries neither the survival bonus of ``-log(1 - D)`` nor the living penalty of ``log D``; with a
fixed horizon that bias would not change the optimum, but it changes what early PPO updates
prefer.  ``reward_form="gail"`` gives ``-log(1 - D)`` for comparison.

Online use: ``fit(demos)`` stores the expert transitions (optionally pre-trains against given
policy videos); :class:`baselines.common.RolloutRewardCallback` labels each PPO rollout and then
calls :meth:`DACfO.update_items` with it (``updates_per_call`` discriminator steps).  With
``checkpoint_dir`` set, each update saves the discriminator and keeps the last
``keep_checkpoints`` (10) files: appendix A.4 labels an offline dataset with the *average output of
the last 10 discriminators* (an ensemble, after Luo et al. 2022) -- :class:`DiscriminatorEnsemble`.

Device: ``DACfO(device="auto")`` takes the discriminator steps on CUDA when torch sees a GPU
(:func:`relam.devices.resolve_device`; not part of :meth:`DACfO.config`, so keys and fingerprints
do not depend on it). Batches and interpolation weights are drawn on the CPU as before, the
network comes back to the CPU after each round of steps, and rewards are computed on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from baselines.common import POLICY_IMAGE_SIZE, FrameRewardModel, _small_cnn, _to_float
from baselines.runs import IMAGE_POLICY_INPUTS
from relam.devices import moved_to
from relam.methods import MethodSettings, RewardMethod, register_method
from relam.scales import ScaleTable

__all__ = ["DACfO", "DiscriminatorEnsemble", "logit_reward", "DISCRIMINATOR_COLUMNS", "discriminator_curve",
           "discriminator_summary", "plot_discriminator"]

REWARD_FORMS = ("logit", "gail")


def logit_reward(logits: np.ndarray, form: str = "logit") -> np.ndarray:
    """Discriminator logits -> reward: ``log D - log(1-D)`` (= the logit) or ``-log(1-D)`` (= softplus)."""
    z = np.asarray(logits, np.float64)
    if form == "logit":
        return z
    if form == "gail":
        return np.logaddexp(0.0, z)
    raise ValueError(f"reward_form must be one of {REWARD_FORMS}, got {form!r}")


class DACfO(FrameRewardModel):
    """The DACfO discriminator as a reward model (see the module docstring)."""

    kind = "dacfo"
    history = 1

    def __init__(self, size: int = 64, lr: float = 3e-4, gp_weight: float = 10.0, batch: int = 64,
                 updates_per_call: int = 50, replay_size: int = 5000, reward_form: str = "logit",
                 keep_checkpoints: int = 10, seed: int = 0, device: str = "auto"):
        if reward_form not in REWARD_FORMS:
            raise ValueError(f"DACfO(reward_form=...): choose one of {REWARD_FORMS}, got {reward_form!r}")
        if size % 8 or size < 16:
            raise ValueError(f"DACfO(size=...): need a multiple of 8 >= 16, got {size}")
        self.size, self.lr, self.gp_weight, self.batch = int(size), float(lr), float(gp_weight), int(batch)
        self.updates_per_call, self.replay_size = int(updates_per_call), int(replay_size)
        self.reward_form, self.keep_checkpoints, self.seed = reward_form, int(keep_checkpoints), int(seed)
        self.device = device  #: where the discriminator steps run (see the module docstring)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.disc = _small_cnn(6, 1, self.size)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=self.lr, betas=(0.5, 0.999))
        self.rng = np.random.default_rng(seed)
        self.expert: np.ndarray | None = None  # (N,6,64,64) uint8 expert pairs
        self.replay = np.zeros((0, 6, POLICY_IMAGE_SIZE, POLICY_IMAGE_SIZE), np.uint8)
        self.n_updates = 0
        #: one row of statistics per online update (:meth:`update_items`), this process only
        self.update_log: list[dict[str, float]] = []
        self.checkpoint_dir: Path | None = None

    # ---------------------------------------------------------------- data
    @staticmethod
    def pairs(hist: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """(N,1,3,S,S) + (N,3,S,S) -> (N,6,S,S) stacked transitions."""
        return np.concatenate([hist[:, -1], nxt], axis=1)

    def fit(self, demos: Sequence[Any], policy_videos: Sequence[np.ndarray] | None = None,
            steps: int = 0, progress: bool = False) -> dict[str, float]:
        """Store the expert transitions of ``demos``; train ``steps`` discriminator steps against
        ``policy_videos`` (e.g. the initial random policy's) if given.

        Demos may be :class:`relam.demos.Demo` objects or raw (T+1,H,W,3) uint8 videos.
        """
        vids = [getattr(d, "frames", d) for d in demos]
        if not vids:
            raise ValueError("DACfO.fit(demos=...): need at least one expert video")
        self.expert = np.concatenate([self.pairs(*self.items_from_video(v)) for v in vids])
        stats: dict[str, float] = {}
        if policy_videos is not None and len(policy_videos):
            parts = [self.items_from_video(v) for v in policy_videos]
            self._add_replay(np.concatenate([self.pairs(h, n) for h, n in parts]))
        if steps > 0:
            bar = tqdm(range(steps), desc="DACfO discriminator", disable=not progress)
            with moved_to(self.device, [self.disc], [self.opt]) as dev:
                for _ in bar:
                    stats = self._train_step(dev)
                    bar.set_postfix(loss=f"{stats['d_loss']:.3f}")
        return stats

    def _add_replay(self, pairs: np.ndarray) -> None:
        self.replay = np.concatenate([self.replay, pairs])[-self.replay_size:]

    # ---------------------------------------------------------------- training
    def _logits(self, pairs: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = pairs if isinstance(pairs, torch.Tensor) else _to_float(pairs)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
        return self.disc(x).squeeze(1)

    def _train_step(self, dev: torch.device | None = None) -> dict[str, float]:
        """One discriminator step; ``dev``: where :attr:`disc` is now (None: the CPU)."""
        if self.expert is None or len(self.replay) == 0:
            raise RuntimeError("DACfO: call fit(demos) first and give it policy transitions (update/fit)")
        dev = dev or torch.device("cpu")
        e = _to_float(self.expert[self.rng.integers(0, len(self.expert), self.batch)]).to(dev)
        p = _to_float(self.replay[self.rng.integers(0, len(self.replay), self.batch)]).to(dev)
        le, lp = self._logits(e), self._logits(p)
        bce = F.binary_cross_entropy_with_logits(le, torch.ones_like(le)) + \
            F.binary_cross_entropy_with_logits(lp, torch.zeros_like(lp))
        alpha = torch.from_numpy(self.rng.uniform(size=(self.batch, 1, 1, 1))).float().to(dev)
        x_hat = (alpha * e + (1 - alpha) * p).requires_grad_(True)
        g, = torch.autograd.grad(self._logits(x_hat).sum(), x_hat, create_graph=True)
        gp = (g.flatten(1).norm(dim=1) - 1.0).pow(2).mean()
        loss = bce + self.gp_weight * gp
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        acc_e, acc_p = (le > 0).float().mean().item(), (lp < 0).float().mean().item()
        return {"d_loss": bce.item(), "d_gp": gp.item(), "d_expert": torch.sigmoid(le).mean().item(),
                "d_policy": torch.sigmoid(lp).mean().item(), "d_acc_expert": acc_e, "d_acc_policy": acc_p,
                "d_accuracy": 0.5 * (acc_e + acc_p)}

    @torch.no_grad()
    def accuracy_items(self, expert: tuple[np.ndarray, np.ndarray],
                       policy: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        """How well the discriminator tells ``expert`` from ``policy`` transitions (each a
        ``(hist, next)`` pair of :meth:`items_from_video`'s form), with no training step:
        the fraction of expert transitions it calls expert (logit > 0), of policy transitions it
        calls policy (logit < 0), and their mean ``d_accuracy`` (0.5: a constant guess, e.g. an
        untrained net or two sets it cannot tell apart; 1: every transition right)."""
        le, lp = self.logits_items(*expert), self.logits_items(*policy)
        acc_e, acc_p = float(np.mean(le > 0)), float(np.mean(lp < 0))
        return {"d_acc_expert": acc_e, "d_acc_policy": acc_p, "d_accuracy": 0.5 * (acc_e + acc_p)}

    def update_items(self, hist: np.ndarray, nxt: np.ndarray) -> dict[str, float]:
        """Add the policy's transitions to the replay and take ``updates_per_call`` discriminator steps.

        Returns the update's statistics, each the mean over its steps (SB3 logs them under
        ``reward_model/`` through :class:`baselines.common.RolloutRewardCallback`, and ``train_ppo``
        keeps them in ``train.csv`` as ``model_<name>``): ``d_loss`` (the binary cross-entropy,
        without the gradient penalty ``d_gp``), ``d_expert`` / ``d_policy`` (mean D on the
        batches), ``d_acc_expert`` / ``d_acc_policy`` / ``d_accuracy`` (accuracy on the training
        batches, threshold D = 0.5), and ``d_acc_rollout``: the fraction of *this* rollout's
        transitions the discriminator called policy before it trained on them (held out: near 0
        when the policy fools it, near 1 when it does not).
        """
        pairs = self.pairs(hist, nxt)
        stats: dict[str, float] = {}
        with moved_to(self.device, [self.disc], [self.opt]) as dev:
            fresh = _fraction_negative(self, pairs, dev)
            self._add_replay(pairs)
            steps = [self._train_step(dev) for _ in range(self.updates_per_call)]
        if steps:
            stats = {k: float(np.mean([st[k] for st in steps])) for k in steps[0]}
        stats["d_acc_rollout"] = fresh
        self.n_updates += 1
        self.update_log.append({"update": self.n_updates, **stats})
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        return stats

    def save_checkpoint(self, directory: str | Path | None = None) -> Path:
        """Save ``disc_<n>.pt`` and delete all but the newest ``keep_checkpoints`` of them."""
        d = Path(directory or self.checkpoint_dir or ".")
        path = self.save(d / f"disc_{self.n_updates:06d}.pt")
        for old in sorted(d.glob("disc_*.pt"))[:-self.keep_checkpoints]:
            old.unlink()
        return path

    # ---------------------------------------------------------------- reward
    @torch.no_grad()
    def logits_items(self, hist: np.ndarray, nxt: np.ndarray, batch: int = 256) -> np.ndarray:
        pairs = self.pairs(hist, nxt)
        return np.concatenate([self._logits(pairs[i:i + batch]).double().numpy()
                               for i in range(0, len(pairs), batch)])

    def reward_items(self, hist: np.ndarray, nxt: np.ndarray, success: np.ndarray | None = None) -> np.ndarray:
        """Discriminator reward per transition (the sparse success flag is not used: DACfO is pixels only)."""
        return logit_reward(self.logits_items(hist, nxt), self.reward_form)

    # ---------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        return {"size": self.size, "lr": self.lr, "gp_weight": self.gp_weight, "batch": self.batch,
                "updates_per_call": self.updates_per_call, "replay_size": self.replay_size,
                "reward_form": self.reward_form, "keep_checkpoints": self.keep_checkpoints, "seed": self.seed}

    def _state(self) -> dict[str, Any]:
        # the expert/replay data are not saved (100+ MB); call fit(demos) again to resume training
        return {"disc": self.disc.state_dict(), "opt": self.opt.state_dict(), "n_updates": self.n_updates}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["opt"])
        self.n_updates = int(state["n_updates"])



@torch.no_grad()
def _fraction_negative(model: DACfO, pairs: np.ndarray, dev: torch.device, batch: int = 256) -> float:
    """The fraction of ``pairs`` the discriminator (now on ``dev``) calls policy (logit < 0)."""
    if not len(pairs):
        return float("nan")
    neg = sum(int((model._logits(_to_float(pairs[i:i + batch]).to(dev)) < 0).sum())
              for i in range(0, len(pairs), batch))
    return neg / len(pairs)


class DiscriminatorEnsemble(FrameRewardModel):
    """The average of several saved DACfO discriminators (appendix A.4: the last 10, after Luo et al. 2022).

    The ensemble averages the discriminators' *probabilities* ``D_k`` and turns the mean ``D`` into
    a reward with the same form as the members (``log D - log(1 - D)`` by default): averaging
    probabilities damps any single checkpoint's over-confident logit.
    """

    kind = "dacfo_ensemble"
    history = 1

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [str(p) for p in paths]
        if not self.paths:
            raise ValueError("DiscriminatorEnsemble(paths=...): need at least one saved DACfO discriminator")
        self.members = [DACfO.load(p) for p in self.paths]
        self.reward_form = self.members[0].reward_form

    @classmethod
    def from_dir(cls, directory: str | Path, last: int = 10) -> "DiscriminatorEnsemble":
        """The newest ``last`` ``disc_*.pt`` checkpoints of an online DACfO run."""
        paths = sorted(Path(directory).glob("disc_*.pt"))[-last:]
        if not paths:
            raise FileNotFoundError(f"no disc_*.pt checkpoints in {directory}; run DACfO online with checkpoint_dir set")
        return cls(paths)

    def __len__(self) -> int:
        return len(self.members)

    @torch.no_grad()
    def reward_items(self, hist: np.ndarray, nxt: np.ndarray, success: np.ndarray | None = None) -> np.ndarray:
        probs = np.mean([1.0 / (1.0 + np.exp(-m.logits_items(hist, nxt))) for m in self.members], axis=0)
        probs = np.clip(probs, 1e-6, 1 - 1e-6)
        return logit_reward(np.log(probs) - np.log1p(-probs), self.reward_form)

    def config(self) -> dict[str, Any]:
        return {"paths": self.paths}

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256("".join(m.fingerprint() for m in self.members).encode()).hexdigest()[:16]

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        pass


# ------------------------------------------------------------------------------- the discriminator's curve

#: ``train.csv`` columns of the discriminator (``train_ppo`` writes every ``reward_model/`` value as
#: ``model_<name>``, one row per PPO rollout): accuracy on its training batches, on the rollout it had
#: not yet seen, and its cross-entropy
DISCRIMINATOR_COLUMNS = ("model_d_accuracy", "model_d_acc_expert", "model_d_acc_policy", "model_d_acc_rollout",
                         "model_d_loss")


def discriminator_curve(run_dir: str | Path) -> list[dict[str, float]]:
    """The discriminator's statistics per PPO rollout of an online run (``run_dir/train.csv``):
    rows with ``step`` and the :data:`DISCRIMINATOR_COLUMNS` present; [] when there are none."""
    import csv

    path = Path(run_dir) / "train.csv"
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            vals = {k: float(r[k]) for k in DISCRIMINATOR_COLUMNS if r.get(k) not in (None, "")}
            if vals:
                rows.append({"step": float(r["step"]), **vals})
    return rows


def discriminator_summary(run_dir: str | Path, last: float = 0.1) -> dict[str, float]:
    """Run metrics from :func:`discriminator_curve`: the mean over the last ``last`` fraction of the
    rollouts (at least one) of each column, as ``disc_<name>_last`` (``disc_d_accuracy_last``, ...)."""
    rows = discriminator_curve(run_dir)
    if not rows:
        return {}
    tail = rows[-max(1, int(round(len(rows) * last))):]
    out = {}
    for k in DISCRIMINATOR_COLUMNS:
        v = [r[k] for r in tail if k in r and np.isfinite(r[k])]
        if v:
            out[f"disc_{k[len('model_'):]}_last"] = float(np.mean(v))
    return out


def plot_discriminator(run_dir: str | Path, title: str = "") -> Path | None:
    """``run_dir/discriminator.png``: the evaluation success curve (``eval.csv``) beside the
    discriminator's accuracy and loss per rollout (:func:`discriminator_curve`). None when the
    run logged no discriminator statistics."""
    import csv
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relam.cache import atomic_write_bytes

    run_dir = Path(run_dir)
    rows = discriminator_curve(run_dir)
    if not rows:
        return None
    evals = []
    if (run_dir / "eval.csv").exists():
        with open(run_dir / "eval.csv", newline="") as f:
            evals = [(float(r["step"]), float(r["success_rate"])) for r in csv.DictReader(f)]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.2), dpi=100)
    if evals:
        a1.plot(*zip(*evals), marker="o", ms=3)
    a1.set_ylim(-0.02, 1.02)
    a1.set(xlabel="environment steps", ylabel="success rate (evaluation)")
    a1.set_title(title, fontsize=9)
    steps = [r["step"] for r in rows]
    for k, label in (("model_d_accuracy", "accuracy (training batches)"),
                     ("model_d_acc_rollout", "new rollout called policy"), ("model_d_loss", "BCE loss")):
        a2.plot(steps, [r.get(k, np.nan) for r in rows], lw=1, label=label)
    a2.axhline(0.5, color="grey", lw=0.5, ls="--")
    a2.set(xlabel="environment steps", title="discriminator per rollout")
    a2.legend(fontsize=7)
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(run_dir / "discriminator.png", buf.getvalue())


# ------------------------------------------------------------------------------- the Table 4 column



#: the online DACfO phase that precedes offline labelling (appendix A.4), per experiment scale:
#: (PPO env steps, rollout length, discriminator steps per rollout).  One discriminator update
#: -- and checkpoint -- per rollout, so steps / rollout >= 10 gives the ten checkpoints of the
#: ensemble.  ManiSkill with 128 px rendering runs about 10-20 env steps/s here, so these budgets,
#: not the paper's (not given), rule: smoke ~1-2 min, quick ~15 min, paper ~2-3 h on one CPU core.
@dataclass(frozen=True)
class OnlinePhaseBudget:
    env_steps: int  #: PPO environment steps
    rollout: int  #: PPO rollout length (one discriminator update and checkpoint each)
    disc_steps: int  #: discriminator gradient steps per rollout


ONLINE_PHASE: ScaleTable[OnlinePhaseBudget] = ScaleTable(
    "dacfo", smoke=OnlinePhaseBudget(320, 32, 5), quick=OnlinePhaseBudget(10_000, 500, 50),
    paper=OnlinePhaseBudget(100_000, 2000, 50))


def resumed_model(ctx: Any, checkpoint_dir: Path, **kwargs: Any) -> DACfO:
    """The run's discriminator: the newest checkpoint in ``checkpoint_dir`` or a new one
    (``DACfO(seed=ctx.seed, **kwargs)``), given the expert transitions of ``budget.n_demos``
    videos and set to save its checkpoints there."""
    from relam.demos import load_demos

    last = sorted(Path(checkpoint_dir).glob("disc_*.pt"))
    model = DACfO.load(last[-1]) if last else DACfO(seed=ctx.seed, **kwargs)
    model.fit(load_demos(ctx.task, n=ctx.budget.n_demos, progress=ctx.progress))
    model.checkpoint_dir = Path(checkpoint_dir)
    return model


def online_discriminators(ctx: Any) -> tuple[Path, dict[str, float]]:
    """Run DACfO online on the run's task and return the folder of its discriminator checkpoints.

    PPO on ``DACfO.wrap(make_env(task))`` with the discriminator learning from each rollout
    (:func:`baselines.runs.ppo_with_model`), the expert transitions from ``budget.n_demos``
    videos; each update saves a checkpoint and only the newest ``keep_checkpoints`` (10) stay in
    ``out_dir/discriminators``.  Resumable: PPO continues from ``out_dir/online``, the
    discriminator from its newest checkpoint, and a finished phase is not run again.
    Returns the folder and the phase's metrics (``online_*``).
    """
    from relam.cache import atomic_write_json, read_json

    from baselines.runs import ppo_with_model

    phase = ONLINE_PHASE[ctx.scale]
    steps, rollout, d_steps = phase.env_steps, phase.rollout, phase.disc_steps
    ck = Path(ctx.out_dir) / "discriminators"
    done = Path(ctx.out_dir) / "online" / "phase.json"
    if done.exists():
        return ck, read_json(done)
    model = resumed_model(ctx, ck, updates_per_call=d_steps)
    res = ppo_with_model(ctx, model, "DACfO online", Path(ctx.out_dir) / "online", steps, eval_every=steps,
                         eval_episodes=1, n_steps=rollout)
    metrics = {"online_env_steps": float(res.metrics.get("env_steps", steps)), "online_success": float(res.success),
               "online_discriminator_updates": float(model.n_updates)}
    atomic_write_json(done, metrics)
    return ck, metrics


def offline_labeller(ctx: Any) -> tuple[Any, Any, dict[str, float]]:
    """The ManiSkill row's labelling: (labeller, make_eval_env, metrics) for
    :func:`baselines.runs.offline_run` -- the ensemble of the last 10 discriminators of the
    online phase (:func:`online_discriminators`), the plain task env (image only) to evaluate in."""
    from relam.tasks import make_env

    spec = ctx.task_spec()
    ck, phase = online_discriminators(ctx)
    ensemble = DiscriminatorEnsemble.from_dir(ck, last=10)
    return ensemble.as_labeller(), lambda: ensemble.wrap(make_env(spec)), {**phase, "ensemble_members": float(len(ensemble))}


@register_method("dacfo")
class DACfOMethod(RewardMethod):
    """DACfO as a column of the paper's tables.

    Meta-World (online): the discriminator starts from the expert transitions of
    ``budget.n_demos`` videos and learns online from each PPO rollout; its checkpoints (the last
    10) are kept in ``out_dir/discriminators``.  On resume the newest checkpoint is reloaded.

    ManiSkill (offline, appendix A.4): "we first run online DAC in the task environment and save
    the last 10 checkpoints of the discriminator. After online training, rewards are given by the
    average of the output from these 10 discriminators" -- :func:`online_discriminators` (a
    budget-sized online phase, :data:`ONLINE_PHASE`), then :class:`DiscriminatorEnsemble` labels
    the offline set, IQL trains on it and the policy is evaluated in the plain task env (image
    only) through :class:`baselines.common.VideoRewardWrapper`.
    """

    Settings = MethodSettings
    policy_inputs = IMAGE_POLICY_INPUTS  # learns from images alone (robot state: offline rows only)
    version = "1"

    def online(self, ctx):
        from baselines.runs import online_run

        res = online_run(ctx, resumed_model(ctx, Path(ctx.out_dir) / "discriminators"), "DACfO")
        res.metrics.update(discriminator_summary(ctx.out_dir))
        plot_discriminator(ctx.out_dir, f"DACfO {ctx.task} seed {ctx.seed}")
        return res

    def offline(self, ctx):
        from baselines.runs import offline_run

        return offline_run(ctx, *offline_labeller(ctx))
