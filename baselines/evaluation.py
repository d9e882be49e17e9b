"""Measures of the baselines' rewards before any policy learns from them: random-action reference
videos, expert-vs-random ranking (AUC) of a frame reward model, and the offline reward sanity of
each baseline's labeller on ManiSkill's control sets (``benchmarks/bench_offline_sanity.py``,
``benchmarks/bench_reward_cost.py``).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from baselines.common import FrameRewardModel

__all__ = ["random_action_videos", "expert_vs_random", "ranking_auc", "OFFLINE_LABELLERS",
           "offline_reward_sanity"]


def random_action_videos(task: str, n: int, steps: int, seed: int = 0, cache: bool = True) -> list[np.ndarray]:
    """``n`` videos (steps+1,H,W,3) of uniform random actions from seeded resets (the 'random' reference).

    Env seeds ``seed*1000 + i``, action noise from ``default_rng(seed)``.  Rendering is
    deterministic, so with ``cache`` the videos are kept under ``cache_dir()/baselines/`` and reused.
    """
    from relam.cache import atomic_save_npz, cache_dir, settings_hash
    from relam.tasks import get_task

    key = settings_hash({"task": get_task(task).to_dict(), "n": n, "steps": steps, "seed": seed, "v": 1})
    path = cache_dir() / "baselines" / f"random-{get_task(task).name}-{key}.npz"
    if cache and path.exists():
        with np.load(path) as z:
            return [z[f"v{i}"] for i in range(n)]
    out = _random_action_videos(task, n, steps, seed)
    if cache:
        atomic_save_npz(path, **{f"v{i}": v for i, v in enumerate(out)})
    return out


def _random_action_videos(task: str, n: int, steps: int, seed: int) -> list[np.ndarray]:
    from relam.tasks import make_env

    env = make_env(task)
    rng = np.random.default_rng(seed)
    out = []
    try:
        for i in range(n):
            obs, _ = env.reset(seed=seed * 1000 + i)
            frames = [obs]
            for _ in range(steps):
                obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
                frames.append(obs)
            out.append(np.stack(frames))
    finally:
        env.close()
    return out


def expert_vs_random(model: FrameRewardModel, expert: Iterable[np.ndarray],
                     random: Iterable[np.ndarray]) -> dict[str, float]:
    """Per-step rewards of expert vs random videos (success reward not paid: pixels only).

    ``auc`` is the probability that a random expert step out-scores a random random-action step
    (ties count half): 0.5 = no order, 1 = every expert step above every random one.  Unlike a
    mean gap it does not depend on the reward's scale, so trained and untrained models compare.
    """
    e = np.concatenate([model.reward(v) for v in expert])
    r = np.concatenate([model.reward(v) for v in random])
    return {"expert_mean": float(e.mean()), "random_mean": float(r.mean()),
            "expert_std": float(e.std()), "random_std": float(r.std()), "auc": ranking_auc(e, r)}


def ranking_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + P(pos == neg)/2 over all pairs: the Mann-Whitney U of ``pos`` over its maximum."""
    from scipy.stats import mannwhitneyu

    pos, neg = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    return float(mannwhitneyu(pos, neg, alternative="two-sided").statistic / (len(pos) * len(neg)))


#: the offline-labelling entry point of each baseline: method name -> (module, extra arguments)
OFFLINE_LABELLERS = {"dacfo": ("baselines.dacfo", {}), "diffusion_reward": ("baselines.diffusion_reward", {}),
                     "image_subgoal": ("baselines.image_subgoal", {}),
                     "oracle": ("baselines.image_subgoal", {"ground_truth": True})}


def offline_reward_sanity(task: str, method: str, n_demos: int = 10, scale: str = "smoke", seed: int = 0,
                          progress: bool = True) -> dict[str, float]:
    """Label ``n_demos`` expert + ``n_demos`` noisy offline trajectories of ``task`` with ``method``'s
    labeller (its reward model trained on ``n_demos`` expert videos at ``scale``) and return
    :func:`relam.offline.reward_sanity` (mean labelled return of expert vs noisy, Spearman with
    ManiSkill's dense reward, ...).  No IQL, no evaluation: is the reward ordered before training?"""
    import importlib

    from relam.cache import cache_dir
    from relam.methods import Budget, RunContext, settings_model
    from relam.offline import label_offline_dataset, reward_sanity

    if method not in OFFLINE_LABELLERS:
        raise ValueError(f"method {method!r}: choose one of {sorted(OFFLINE_LABELLERS)}")
    module, extra = OFFLINE_LABELLERS[method]
    ctx = RunContext(task=task, method=method, settings=settings_model(method)(), seed=seed,
                     budget=Budget(train_steps=1, eval_every=1, eval_episodes=1, n_demos=n_demos), scale=scale,
                     out_dir=cache_dir() / "baselines" / "offline-sanity" / f"{task}-{method}-{scale}-n{n_demos}-s{seed}",
                     progress=progress)
    labeller, _, metrics = importlib.import_module(module).offline_labeller(ctx, **extra)
    try:
        ds = label_offline_dataset(task, labeller, n=2 * n_demos, progress=progress)
    finally:
        close = getattr(getattr(labeller, "planner", None), "close", None)
        if callable(close):
            close()
    return {"task": task, "method": method, "scale": scale, **metrics, **reward_sanity(ds)}
