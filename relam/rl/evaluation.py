"""Success-rate evaluation and learning curves (the y-axis of Fig. 4-6).

The paper reports the success rate of the policy over training.  Here:

- an evaluation runs a *fixed* list of seeded episodes (:func:`eval_seeds`; the same seeds for
  every method, run and evaluation point, so curves differ only by the policy);
- an episode counts as a success if the simulator's ``info["success"]`` is true at *any* step
  (Meta-World never terminates on success);
- :class:`SuccessEvalCallback` evaluates every ``eval_every`` environment steps during SB3
  training and keeps the curve ``[(step, success_rate), ...]``; the last point is the run's final
  number.

The policy acts deterministically (the mean action) in evaluation, as is usual for PPO.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

#: evaluation episodes use seeds EVAL_SEED_BASE + i, far from training and offline seeds; the seed
#: ranges are laid out in relam.demos
from relam.demos import EVAL_SEED_BASE

__all__ = [
    "EVAL_SEED_BASE",
    "eval_seeds",
    "EvalResult",
    "Observer",
    "eval_env_count",
    "run_episode",
    "evaluate_success",
    "curve_to_csv",
    "plot_curve",
    "SuccessEvalCallback",
]


def eval_seeds(n: int, base: int = EVAL_SEED_BASE) -> list[int]:
    """The fixed evaluation seeds: ``base, base+1, ..., base+n-1``."""
    if int(n) < 1:
        raise ValueError(f"eval_seeds: n={n} must be >= 1 (episodes per evaluation)")
    return [int(base) + i for i in range(int(n))]


#: ``observe(env, seed, steps, info, done)``: called on the env that plays an episode after its reset
#: (``steps`` 0, the reset's ``info``) and after each of its steps (``done`` on the last). It is how
#: ``relam failures`` reads its verdicts from the very episodes an evaluation plays: the batch an
#: observation is predicted in is part of the episode (float rounding of the CNN's batched forward pass
#: decided one of 10 button-press-wall episodes, session 36), so a replay on its own env may differ.
Observer = Callable[[Any, int, int, dict, bool], None]


def eval_env_count(n_envs: int, episodes: int) -> int:
    """How many envs an evaluation of ``episodes`` episodes plays on at once during training."""
    return max(1, min(int(n_envs), int(episodes)))


@dataclass
class EvalResult:
    """One evaluation: per-episode outcomes and the success rate."""

    seeds: list[int]
    successes: list[bool]
    returns: list[float]
    lengths: list[int]
    stages: list[int] = field(default_factory=list)  #: subgoals reached per episode (ReLAM envs)

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.successes)) if self.successes else 0.0

    @property
    def mean_stage(self) -> float:
        return float(np.mean(self.stages)) if self.stages else 0.0

    def add(self, seed: int, outcome: tuple[bool, float, int, int]) -> None:
        """Append one episode's :func:`run_episode` outcome."""
        ok, ret, n, stage = outcome
        self.seeds.append(int(seed))
        self.successes.append(bool(ok))
        self.returns.append(float(ret))
        self.lengths.append(int(n))
        self.stages.append(int(stage))


def _actor(policy: Any, deterministic: bool) -> Callable[[Any], np.ndarray]:
    if hasattr(policy, "predict"):
        return lambda obs: policy.predict(obs, deterministic=deterministic)[0]
    if callable(policy):
        return policy
    raise TypeError("evaluate_success: policy must have predict(obs, deterministic=) or be callable obs -> action")


def run_episode(act: Callable[[Any], np.ndarray], env: Any, seed: int, max_steps: int | None = None,
                observe: Observer | None = None) -> tuple[bool, float, int, int]:
    """Run one episode from ``reset(seed=seed)``; returns (success at any step, return, length, max stage)."""
    obs, info = env.reset(seed=int(seed))
    if observe is not None:
        observe(env, int(seed), 0, info, False)
    success = bool(info.get("success", False))
    ret, n, stage = 0.0, 0, int(info.get("stage", 0))
    while True:
        obs, r, terminated, truncated, info = env.step(act(obs))
        ret += float(r)
        n += 1
        success = success or bool(info.get("success", False))
        stage = max(stage, int(info.get("stage", 0)))
        done = bool(terminated or truncated or (max_steps is not None and n >= max_steps))
        if observe is not None:
            observe(env, int(seed), n, info, done)
        if done:
            return success, ret, n, stage


def evaluate_success(
    policy: Any,
    env: Any,
    seeds: Sequence[int],
    deterministic: bool = True,
    max_steps: int | None = None,
    observe: Observer | None = None,
) -> EvalResult:
    """Success rate of ``policy`` on the seeded episodes ``seeds`` of ``env``.

    ``policy`` is an SB3 model (``predict``) or a callable ``obs -> action``.  ``env`` must honour
    ``reset(seed=s)`` (TaskEnv and ReLAMWrapper do) so that an episode is a function of its seed.
    ``env`` may be a list of such envs: an SB3 model then plays the episodes on all of them at once
    with batched predictions (:func:`_evaluate_batched`). ``observe`` (:data:`Observer`) sees every
    reset and step.
    """
    envs = list(env) if isinstance(env, (list, tuple)) else [env]
    if len(envs) > 1 and hasattr(policy, "predict"):
        return _evaluate_batched(policy, envs, seeds, deterministic, max_steps, observe)
    act = _actor(policy, deterministic)
    res = EvalResult([], [], [], [], [])
    for s in seeds:
        res.add(s, run_episode(act, envs[0], int(s), max_steps, observe))
    return res


def _evaluate_batched(policy: Any, envs: Sequence[Any], seeds: Sequence[int], deterministic: bool,
                      max_steps: int | None, observe: Observer | None = None) -> EvalResult:
    """The episodes of :func:`evaluate_success` spread over several envs stepped in lockstep, one
    batched ``policy.predict`` a step: an evaluation costs about one policy call per step of its
    longest episodes instead of one per step of every episode. Each episode is still a function of
    its seed alone, so the outcomes are those of the sequential loop (up to float rounding of a
    batched forward pass)."""
    pending = [int(s) for s in seeds][::-1]
    outcomes: dict[int, tuple[bool, float, int, int]] = {}
    slots: list[dict[str, Any] | None] = [None] * len(envs)

    def start(i: int) -> None:
        if not pending:
            slots[i] = None
            return
        seed = pending.pop()
        obs, info = envs[i].reset(seed=seed)
        if observe is not None:
            observe(envs[i], seed, 0, info, False)
        slots[i] = {"seed": seed, "obs": obs, "ok": bool(info.get("success", False)), "ret": 0.0, "n": 0,
                    "stage": int(info.get("stage", 0))}

    for i in range(len(envs)):
        start(i)
    while any(slot is not None for slot in slots):
        live = [i for i, slot in enumerate(slots) if slot is not None]
        first = slots[live[0]]["obs"]
        if isinstance(first, dict):
            batch: Any = {k: np.stack([slots[i]["obs"][k] for i in live]) for k in first}
        else:
            batch = np.stack([slots[i]["obs"] for i in live])
        actions = policy.predict(batch, deterministic=deterministic)[0]
        for j, i in enumerate(live):
            slot = slots[i]
            obs, r, terminated, truncated, info = envs[i].step(actions[j])
            slot["obs"], slot["ret"], slot["n"] = obs, slot["ret"] + float(r), slot["n"] + 1
            slot["ok"] = slot["ok"] or bool(info.get("success", False))
            slot["stage"] = max(slot["stage"], int(info.get("stage", 0)))
            done = bool(terminated or truncated or (max_steps is not None and slot["n"] >= max_steps))
            if observe is not None:
                observe(envs[i], slot["seed"], slot["n"], info, done)
            if done:
                outcomes[slot["seed"]] = (slot["ok"], slot["ret"], slot["n"], slot["stage"])
                start(i)
    res = EvalResult([], [], [], [], [])
    for s in seeds:
        res.add(s, outcomes[int(s)])
    return res


def curve_to_csv(rows: Sequence[dict[str, Any]], fieldnames: Sequence[str] | None = None) -> bytes:
    """CSV bytes of a list of dict rows (header ``fieldnames``, default the first row's keys)."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(fieldnames or rows[0].keys()))
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return buf.getvalue().encode()


def plot_curve(curve: Sequence[tuple[int, float]], path: str | Path, title: str = "",
               train_rows: Sequence[dict[str, Any]] | None = None) -> None:
    """Learning-curve PNG, written atomically.

    Left: evaluation success rate vs environment steps.  Right (with ``train_rows``, the rows of
    ``train.csv``): the training signal per rollout, which moves long before success does -- the
    mean episode return of the method's own reward, or, for batched reward models whose episodes
    return a placeholder 0, the model's mean per-step reward (``model_reward_mean``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relam.cache import atomic_write_bytes

    signal = _training_signal(train_rows or [])
    fig, axes = plt.subplots(1, 2 if signal else 1, figsize=(9.5 if signal else 5, 3.2), dpi=100,
                             squeeze=False)
    ax = axes[0, 0]
    if curve:
        steps, vals = zip(*curve)
        ax.plot(steps, vals, marker="o", ms=3)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate (evaluation)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if signal:
        label, steps, vals = signal
        ax2 = axes[0, 1]
        ax2.plot(steps, vals, color="tab:green", lw=1)
        ax2.set_xlabel("environment steps")
        ax2.set_ylabel(label)
        ax2.set_title("training signal per rollout", fontsize=9)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def _training_signal(rows: Sequence[dict[str, Any]]) -> tuple[str, list[int], list[float]] | None:
    """(label, steps, values) of the best training signal in ``train.csv`` rows, or None."""
    for key, label in (("model_reward_mean", "reward model: mean reward per step"),
                       ("ep_return_mean", "training episode return")):
        pts = [(int(r["step"]), float(r[key])) for r in rows
               if r.get(key) not in (None, "") and np.isfinite(float(r[key]))]
        if pts and (key != "ep_return_mean" or any(v != 0.0 for _, v in pts)):
            return label, [s for s, _ in pts], [v for _, v in pts]
    return None


class SuccessEvalCallback(BaseCallback):
    """Evaluate every ``eval_every`` env steps; keeps ``curve`` and calls ``on_eval(step, result)``.

    An evaluation is due when ``num_timesteps`` has passed the next multiple of ``eval_every``
    (with one env that is exact).  The caller decides about the start and end points.
    ``eval_env`` is one env or a list of them (see :func:`evaluate_success`).

    ``final_step``: no evaluation from this step on. SB3 calls ``_on_step`` during a rollout, before
    the update that the rollout feeds; at the last step of training that update still follows, so
    an evaluation there would score the policy one update before the one the run keeps (measured on
    drawer-open with a constant learning rate: 60% there, 83% for the saved policy). The caller
    evaluates the final policy after ``learn`` instead.
    """

    def __init__(
        self,
        eval_env: Any,
        seeds: Sequence[int],
        eval_every: int,
        on_eval: Callable[[int, EvalResult], None] | None = None,
        deterministic: bool = True,
        final_step: int | None = None,
    ):
        super().__init__(verbose=0)
        if int(eval_every) < 1:
            raise ValueError(f"SuccessEvalCallback: eval_every={eval_every} must be >= 1 env steps")
        self.eval_env = eval_env
        self.seeds = list(seeds)
        self.eval_every = int(eval_every)
        self.on_eval = on_eval
        self.deterministic = deterministic
        self.curve: list[tuple[int, float]] = []
        self.next_eval = self.eval_every
        self.final_step = None if final_step is None else int(final_step)

    def evaluate_now(self, step: int) -> EvalResult:
        res = evaluate_success(self.model, self.eval_env, self.seeds, self.deterministic)
        self.curve.append((int(step), res.success_rate))
        if self.on_eval is not None:
            self.on_eval(int(step), res)
        return res

    def _on_step(self) -> bool:
        if self.final_step is not None and self.num_timesteps >= self.final_step:
            return True
        if self.num_timesteps >= self.next_eval:
            self.evaluate_now(self.num_timesteps)
            while self.next_eval <= self.num_timesteps:
                self.next_eval += self.eval_every
        return True
