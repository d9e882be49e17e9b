"""Measures of the baselines' rewards before any policy learns from them: random-action reference
videos, expert-vs-random ranking (AUC) of a frame reward model, and the offline reward sanity of
each baseline's labeller on ManiSkill's control sets (``benchmarks/bench_offline_sanity.py``,
``benchmarks/bench_reward_cost.py``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from baselines.common import FrameRewardModel

if TYPE_CHECKING:
    from relam.tasks import TaskSpec

__all__ = ["random_action_videos", "expert_vs_random", "ranking_auc", "OFFLINE_LABELLERS",
           "offline_reward_sanity", "relam_offline_labeller", "sanity_order", "sanity_table"]


def random_action_videos(task: str | TaskSpec, n: int, steps: int, seed: int = 0, cache: bool = True) -> list[np.ndarray]:
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


#: the offline-labelling entry point of each method: name -> ("module[:function]", extra arguments); the
#: function (default ``offline_labeller``) takes a RunContext and returns (labeller, make_eval_env, metrics)
OFFLINE_LABELLERS = {"dacfo": ("baselines.dacfo", {}), "diffusion_reward": ("baselines.diffusion_reward", {}),
                     "image_subgoal": ("baselines.image_subgoal", {}),
                     "oracle": ("baselines.image_subgoal", {"ground_truth": True}),
                     "relam": ("baselines.evaluation:relam_offline_labeller", {"subgoals": "generated"}),
                     "relam_gt": ("baselines.evaluation:relam_offline_labeller", {"subgoals": "ground_truth"})}

#: the labelled-return order a sound reward gives the offline set (issue 17 item 4)
SANITY_ORDER = ("expert", "noisy_success", "noisy_failure")


def relam_offline_labeller(ctx, subgoals: str = "generated") -> tuple:
    """ReLAM's labeller as its offline runs build it (:meth:`relam.relam_method.ReLAM.offline`):
    subgoals from the anticipation model trained on ``budget.n_demos`` expert videos at the
    context's scale (``generated``, cached and shared with the runs) or from the expert's own
    keypoints (``ground_truth``, Fig. 6c), the paper's reward settings. Metrics: the model's
    held-out initial / final keypoint errors (px) when it has them."""
    import json
    from pathlib import Path

    from relam.relam_method import ReLAMLabeller, make_planner, reward_settings

    planner = make_planner(ctx)
    model = getattr(planner, "model", None)
    planner_id = getattr(model, "cache_key", None) or f"{subgoals}-{ctx.settings.n_points}"
    labeller = ReLAMLabeller(planner, settings=reward_settings(ctx), planner_id=planner_id)
    metrics: dict[str, float] = {}
    if model is not None:
        from relam.cache import cache_dir

        f = Path(cache_dir()) / "anticipation" / ctx.task / str(model.cache_key) / "metrics.json"
        if f.exists():
            m = json.loads(f.read_text())
            metrics = {"anticipation_initial_error_px": float(m["initial_error_px"]),
                       "anticipation_final_error_px": float(m["final_error_px"])}
    return labeller, None, metrics


def _context(task: str, method: str, n_demos: int, scale: str, seed: int, progress: bool):
    from relam.cache import cache_dir
    from relam.methods import Budget, RunContext, settings_model

    module, extra = OFFLINE_LABELLERS[method]
    if module.endswith(":relam_offline_labeller"):
        from relam.relam_method import ReLAMSettings

        settings = ReLAMSettings(subgoals=extra["subgoals"])
    else:
        settings = settings_model(method)()
    return RunContext(task=task, method=method, settings=settings, seed=seed,
                      budget=Budget(train_steps=1, eval_every=1, eval_episodes=1, n_demos=n_demos), scale=scale,
                      out_dir=cache_dir() / "baselines" / "offline-sanity" / f"{task}-{method}-{scale}-n{n_demos}-s{seed}",
                      progress=progress)


def offline_reward_sanity(task: str, method: str, n_demos: int = 10, scale: str = "smoke", seed: int = 0,
                          progress: bool = True, n_trajectories: int | None = None) -> dict[str, float]:
    """Label ``n_trajectories`` (default ``n_demos``) expert + as many noisy offline trajectories of
    ``task`` with ``method``'s labeller (its reward model trained on ``n_demos`` expert videos at
    ``scale``) and return :func:`relam.offline.reward_sanity` (mean labelled return of expert, noisy
    that succeed and noisy that fail; Spearman with ManiSkill's dense reward per step and per
    return) plus :func:`sanity_order`'s verdict.  No IQL, no evaluation: is the reward ordered
    before training?"""
    import importlib

    from relam.offline import label_offline_dataset, reward_sanity

    if method not in OFFLINE_LABELLERS:
        raise ValueError(f"method {method!r}: choose one of {sorted(OFFLINE_LABELLERS)}")
    module, extra = OFFLINE_LABELLERS[method]
    mod, _, fn = module.partition(":")
    ctx = _context(task, method, n_demos, scale, seed, progress)
    labeller, _, metrics = getattr(importlib.import_module(mod), fn or "offline_labeller")(ctx, **extra)
    n = int(n_trajectories if n_trajectories is not None else n_demos)
    try:
        ds = label_offline_dataset(task, labeller, n=2 * n, progress=progress)
    finally:
        close = getattr(getattr(labeller, "planner", None), "close", None)
        if callable(close):
            close()
    stats = reward_sanity(ds)
    ok, order = sanity_order(stats)
    return {"task": task, "method": method, "scale": scale, "n_demos": float(n_demos), **metrics, **stats,
            "order_ok": ok, "order": order}


def sanity_order(stats: dict) -> tuple[bool, str]:
    """Whether the mean labelled returns go expert > noisy that succeed > noisy that fail.

    Returns (ok, the observed order written out, e.g. ``"expert > noisy_success < noisy_failure"``).
    A group with no trajectories (NaN mean; PickCube's noisy set may hold no success) drops out of
    the chain and is named as missing; ``ok`` needs at least two groups and every remaining pair in
    order (strictly).
    """
    present = [g for g in SANITY_ORDER if stats.get(f"return_{g}") == stats.get(f"return_{g}")
               and stats.get(f"return_{g}") is not None]
    vals = [float(stats[f"return_{g}"]) for g in present]
    ok = len(present) >= 2 and all(a > b for a, b in zip(vals, vals[1:]))
    text = present[0] if present else ""
    for g, a, b in zip(present[1:], vals, vals[1:]):
        text += (" > " if a > b else " = " if a == b else " < ") + g
    missing = [g for g in SANITY_ORDER if g not in present]
    if missing:
        text += f" (no {', '.join(missing)})"
    return ok, text


def sanity_table(rows: list[dict]) -> str:
    """Markdown table of :func:`offline_reward_sanity` results, one row per task and labeller."""
    def num(r: dict, k: str, fmt: str = "{:.1f}") -> str:
        v = r.get(k)
        return fmt.format(v) if isinstance(v, (int, float)) and v == v else "-"

    out = ["| task | labeller | n expert / noisy ok / noisy fail | return expert | noisy ok | noisy fail | "
           "expert > noisy ok > noisy fail | Spearman per step | Spearman per return |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        counts = "/".join(num(r, f"n_{g}", "{:.0f}") for g in SANITY_ORDER)
        out.append(f"| {r.get('task', '')} | {r.get('method', '')} | {counts} | {num(r, 'return_expert')} | "
                   f"{num(r, 'return_noisy_success')} | {num(r, 'return_noisy_failure')} | "
                   f"{'yes' if r.get('order_ok') else 'NO'}: {r.get('order', '')} | "
                   f"{num(r, 'spearman_step', '{:.2f}')} | {num(r, 'spearman_return', '{:.2f}')} |")
    return "\n".join(out)
