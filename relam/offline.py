"""Reward labelling of a recorded control dataset for offline RL (paper section 4.1-4.2, app. A.4).

On ManiSkill the paper trains policies *offline*: a fixed set of trajectories with actions (100
expert, 100 noisy, :func:`relam.demos.load_demos` ``kind="offline"``) whose rewards are left blank
and labelled by each compared method, then IQL (:mod:`relam.rl.iql`). Every method must label the
*same* trajectories, so the split is:

- :class:`Labeller` -- the only method-specific part: ``label(demo) -> LabelledTrajectory``
  (per-step rewards and the vector observations the method's policy sees in addition to the image).
  Each method implements it next to its class (ReLAM's is
  :class:`relam.relam_method.ReLAMLabeller`).
- :class:`OfflineDataset` -- the method-independent container: images (downsampled exactly like the
  online policy's :class:`relam.wrappers.PolicyImageSize`), extra observations, actions, rewards,
  terminal/timeout flags, per-trajectory success/noisy flags and seeds, stored as one compressed
  ``.npz`` under ``cache_dir()/offline``.

Terminals: the tasks never terminate (episodes are truncated at the horizon), so ``terminals`` is
all False and ``timeouts`` marks each trajectory's last transition; IQL then bootstraps through
every transition, as it would at a time limit.

:func:`reward_sanity` checks a labelling before any training: expert trajectories should return
more than noisy ones, and the labelled reward should rank steps like ManiSkill's dense reward
(Spearman correlation, per step and per trajectory return).
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from relam.cache import atomic_save_npz, atomic_write_bytes, cache_dir, settings_hash

__all__ = [
    "LabelledTrajectory",
    "Labeller",
    "OfflineDataset",
    "policy_images",
    "label_demos",
    "label_offline_dataset",
    "offline_cache_path",
    "reward_sanity",
    "spearman",
    "plot_reward_sanity",
    "iql_settings",
    "run_offline",
]

_FORMAT_VERSION = 1


# --------------------------------------------------------------------------- labeller interface


@dataclass
class LabelledTrajectory:
    """What a labeller gives for one trajectory of T steps.

    ``rewards`` (T,) float; ``extra_obs``: name -> (T+1, d) float arrays the method's policy sees
    besides the image (may be empty); ``info``: anything for reports (ReLAM: stages, reached, plan).
    """

    rewards: np.ndarray
    extra_obs: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def validate(self, length: int, who: str = "labeller") -> "LabelledTrajectory":
        r = np.asarray(self.rewards, dtype=np.float32)
        if r.shape != (length,) or not np.all(np.isfinite(r)):
            raise ValueError(f"{who}: rewards must be ({length},) finite floats (one per action), got {r.shape}")
        extra = {}
        for k, v in self.extra_obs.items():
            a = np.asarray(v, dtype=np.float32)
            if a.ndim != 2 or a.shape[0] != length + 1:
                raise ValueError(f"{who}: extra_obs[{k!r}] must be ({length + 1}, d) (one row per frame), got {a.shape}")
            if k == "image":
                raise ValueError(f"{who}: extra_obs may not be named 'image' (the dataset's image entry)")
            extra[k] = a
        self.rewards, self.extra_obs = r, extra
        return self


@runtime_checkable
class Labeller(Protocol):
    """A reward method's offline labelling: ``label(demo) -> LabelledTrajectory``.

    ``name`` and ``config()`` (a JSON-able dict) identify the labelling for the cache key.
    Optional: ``prepare(demos)``, called once by :func:`label_demos` with the whole set before any
    ``label`` call, for a labeller whose reward depends on the set itself (Diffusion Reward's RND
    novelty bonus is trained on the labelled frames); ``config()`` must not depend on it.
    """

    name: str

    def label(self, demo: Any) -> LabelledTrajectory: ...

    def config(self) -> dict: ...


# --------------------------------------------------------------------------- the dataset


def policy_images(frames: np.ndarray, size: int | None) -> np.ndarray:
    """(T+1, H, W, 3) frames -> (T+1, size, size, 3), downsampled exactly as the online policy sees them.

    Uses the same area average as :class:`relam.wrappers.PolicyImageSize`
    (:func:`relam.perception.images.resize_images`); ``None`` keeps the size.
    """
    frames = np.asarray(frames, dtype=np.uint8)
    if size is None or frames.shape[1] == size:
        return frames
    from relam.perception.images import resize_images

    return resize_images(frames, int(size), what="frames")


@dataclass
class OfflineDataset:
    """Labelled trajectories, concatenated (trajectory i's frames are ``obs_slice(i)``).

    - ``observations``: ``"image"`` (sum(T_i+1), H, W, 3) uint8 plus the labeller's vector entries
      (sum(T_i+1), d) float32, and ``"proprio"`` (the robot's joint positions) when the trajectories
      recorded it;
    - per transition (sum T_i): ``actions`` (., A) float32, ``rewards``, ``terminals``, ``timeouts``,
      ``env_reward`` (ManiSkill's dense reward: sanity checks only, never trained on);
    - per trajectory: ``lengths`` T_i, ``success`` (at any step), ``noisy``, ``seeds``;
    - ``info``: extra per-transition arrays from the labeller (ReLAM: ``stage``, ``reached``);
    - ``meta``: task, labeller name/config, image size.
    """

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    lengths: np.ndarray
    success: np.ndarray
    noisy: np.ndarray
    seeds: np.ndarray
    env_reward: np.ndarray
    info: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # meta is stored as JSON: normalise it now (tuples -> lists) so a loaded copy compares equal
        self.meta = json.loads(json.dumps(self.meta, sort_keys=True, default=str))
        self.validate()

    # -- shape bookkeeping
    @property
    def n_trajectories(self) -> int:
        return int(len(self.lengths))

    @property
    def n_transitions(self) -> int:
        return int(self.lengths.sum())

    @property
    def obs_offsets(self) -> np.ndarray:
        """Index of each trajectory's first frame in the concatenated observations."""
        return np.concatenate([[0], np.cumsum(self.lengths + 1)[:-1]]).astype(np.int64)

    @property
    def step_offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def obs_slice(self, i: int) -> slice:
        o = int(self.obs_offsets[i])
        return slice(o, o + int(self.lengths[i]) + 1)

    def step_slice(self, i: int) -> slice:
        o = int(self.step_offsets[i])
        return slice(o, o + int(self.lengths[i]))

    def transition_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """(obs index, next-obs index) of every transition, in step order."""
        obs = np.concatenate([o + np.arange(n) for o, n in zip(self.obs_offsets, self.lengths)]).astype(np.int64)
        return obs, obs + 1

    def returns(self) -> np.ndarray:
        """Undiscounted labelled return of each trajectory."""
        return np.array([self.rewards[self.step_slice(i)].sum() for i in range(self.n_trajectories)])

    def vector_keys(self) -> list[str]:
        return [k for k in self.observations if k != "image"]

    def without(self, *keys: str) -> "OfflineDataset":
        """The same dataset minus the observation entries ``keys`` (arrays shared, not copied)."""
        return dataclasses.replace(self, observations={k: v for k, v in self.observations.items() if k not in keys})

    def subset(self, trajectories: Sequence[int] | np.ndarray) -> "OfflineDataset":
        """The trajectories ``trajectories`` (indices, in that order) as a dataset of their own."""
        idx = np.asarray(trajectories, dtype=np.int64)
        if idx.size == 0:
            raise ValueError("OfflineDataset.subset: no trajectories selected")
        frames = np.concatenate([np.arange(self.obs_offsets[i], self.obs_offsets[i] + self.lengths[i] + 1) for i in idx])
        steps = np.concatenate([np.arange(self.step_offsets[i], self.step_offsets[i] + self.lengths[i]) for i in idx])
        return dataclasses.replace(
            self, observations={k: v[frames] for k, v in self.observations.items()},
            info={k: v[steps] for k, v in self.info.items()},
            **{k: getattr(self, k)[steps] for k in ("actions", "rewards", "terminals", "timeouts", "env_reward")},
            **{k: getattr(self, k)[idx] for k in ("lengths", "success", "noisy", "seeds")})

    def with_rewards(self, rewards: np.ndarray, name: str) -> "OfflineDataset":
        """The same transitions relabelled with ``rewards`` (one per transition); ``meta["rewards"]``
        records ``name`` so that a relabelled set is never taken for the labeller's own."""
        rewards = np.asarray(rewards, dtype=np.float32)
        if rewards.shape != self.rewards.shape:
            raise ValueError(f"OfflineDataset.with_rewards: {rewards.shape} rewards for {self.rewards.shape} transitions")
        return dataclasses.replace(self, rewards=rewards, meta={**self.meta, "rewards": name})

    def validate(self) -> None:
        n, steps = len(self.lengths), int(np.sum(self.lengths))
        frames = steps + n
        if "image" not in self.observations:
            raise ValueError("OfflineDataset.observations needs an 'image' entry (N, H, W, 3) uint8")
        for k, v in self.observations.items():
            if len(v) != frames:
                raise ValueError(f"OfflineDataset.observations[{k!r}] has {len(v)} rows; expected sum(T_i+1) = {frames}")
        for k in ("actions", "rewards", "terminals", "timeouts", "env_reward"):
            if len(getattr(self, k)) != steps:
                raise ValueError(f"OfflineDataset.{k} has {len(getattr(self, k))} rows; expected sum(T_i) = {steps}")
        for k in ("success", "noisy", "seeds"):
            if len(getattr(self, k)) != n:
                raise ValueError(f"OfflineDataset.{k} has {len(getattr(self, k))} entries; expected one per trajectory ({n})")

    # -- storage
    def save(self, path: str | Path) -> Path:
        arrays: dict[str, Any] = {f"obs__{k}": v for k, v in self.observations.items()}
        arrays.update({f"info__{k}": v for k, v in self.info.items()})
        for k in ("actions", "rewards", "terminals", "timeouts", "lengths", "success", "noisy", "seeds", "env_reward"):
            arrays[k] = getattr(self, k)
        arrays["meta_json"] = np.array(json.dumps(self.meta, sort_keys=True, default=str))
        arrays["format_version"] = np.array(_FORMAT_VERSION)
        return atomic_save_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "OfflineDataset":
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        ver = int(d.pop("format_version"))
        if ver != _FORMAT_VERSION:
            raise ValueError(f"{path}: offline dataset format {ver}, expected {_FORMAT_VERSION}; delete it and relabel")
        obs = {k[5:]: d.pop(k) for k in list(d) if k.startswith("obs__")}
        info = {k[6:]: d.pop(k) for k in list(d) if k.startswith("info__")}
        meta = json.loads(str(d.pop("meta_json")))
        return cls(observations=obs, info=info, meta=meta, **d)


def label_demos(demos: Sequence[Any], labeller: Labeller, image_size: int | None = 64,
                progress: bool = True) -> OfflineDataset:
    """Label recorded trajectories (``relam.demos.Demo``) into an :class:`OfflineDataset`."""
    from tqdm.auto import tqdm

    if not demos:
        raise ValueError("label_demos: no trajectories given")
    images, extras, info = [], {}, {"stage": [], "reached": [], "n_subgoals": []}
    cols: dict[str, list] = {k: [] for k in ("actions", "rewards", "terminals", "timeouts", "env_reward")}
    lengths, success, noisy, seeds = [], [], [], []
    who = f"labeller {getattr(labeller, 'name', type(labeller).__name__)}"
    keys: list[str] | None = None
    if callable(getattr(labeller, "prepare", None)):
        labeller.prepare(demos)
    for demo in tqdm(demos, desc=f"label {getattr(labeller, 'name', '')}", disable=not progress, leave=False):
        T = len(demo.actions)
        lab = labeller.label(demo).validate(T, who)
        if keys is None:
            keys = sorted(lab.extra_obs)
            extras = {k: [] for k in keys}
        elif sorted(lab.extra_obs) != keys:
            raise ValueError(f"{who}: extra_obs keys changed between trajectories: {keys} vs {sorted(lab.extra_obs)}")
        images.append(policy_images(demo.frames, image_size))
        for k in keys:
            extras[k].append(lab.extra_obs[k])
        cols["actions"].append(np.asarray(demo.actions, np.float32))
        cols["rewards"].append(lab.rewards)
        cols["terminals"].append(np.zeros(T, bool))
        cols["timeouts"].append(np.arange(T) == T - 1)
        cols["env_reward"].append(np.asarray(demo.env_reward, np.float32))
        if "stages" in lab.info:
            info["stage"].append(np.asarray(lab.info["stages"][:-1], np.int64))
            info["reached"].append(np.asarray(lab.info["reached"], bool))
            if "plan" in lab.info:
                info["n_subgoals"].append(np.full(T, len(lab.info["plan"]) - 1, np.int64))
        lengths.append(T)
        success.append(bool(np.any(demo.success)))
        noisy.append(bool(getattr(demo, "noisy", False)))
        seeds.append(int(demo.seed))
    obs = {"image": np.concatenate(images)}
    obs.update({k: np.concatenate(v).astype(np.float32) for k, v in extras.items()})
    if all(getattr(d, "proprio", None) is not None for d in demos):
        # the robot's own state, recorded with the trajectory (offline format 2): a policy input
        # (budget policy_input ...+proprio), the same whatever labels the rewards
        obs["proprio"] = np.concatenate([np.asarray(d.proprio, np.float32) for d in demos])
    info_arrays = {k: np.concatenate(v) for k, v in info.items() if len(v) == len(demos)}
    cfg = labeller.config() if hasattr(labeller, "config") else {}
    return OfflineDataset(
        observations=obs, info=info_arrays,
        lengths=np.asarray(lengths, np.int64), success=np.asarray(success, bool),
        noisy=np.asarray(noisy, bool), seeds=np.asarray(seeds, np.int64),
        meta={"task": str(demos[0].task), "labeller": getattr(labeller, "name", type(labeller).__name__),
              "labeller_config": cfg, "image_size": int(obs["image"].shape[1])},
        **{k: np.concatenate(v) for k, v in cols.items()},
    )


def offline_cache_path(task: str, labeller: Labeller, n: int | None, image_size: int | None) -> Path:
    """Where :func:`label_offline_dataset` keeps a labelled dataset (keyed by everything that shapes it)."""
    from relam.demos import demo_dir
    from relam.tasks import get_task

    cfg = labeller.config() if hasattr(labeller, "config") else {}
    parts = {"format": _FORMAT_VERSION, "demos": str(demo_dir(task, "offline")), "n": n,
             "image_size": image_size, "labeller": getattr(labeller, "name", ""), "config": cfg}
    # ReLAM's labels follow the task's keypoint rule (tasks.yaml keypoint_rule; ground-truth
    # subgoals are picked by it): keyed when it is not the default, so fps-era labels are not reused
    rule = get_task(task).keypoint_rule
    if rule != "fps" and getattr(labeller, "name", "") == "relam":
        parts["keypoint_rule"] = rule
    key = settings_hash(parts)
    return cache_dir() / "offline" / task / f"{getattr(labeller, 'name', 'labeller')}-{key}.npz"


def label_offline_dataset(task: str, labeller: Labeller, n: int | None = None, image_size: int | None = 64,
                          progress: bool = True, rebuild: bool = False) -> OfflineDataset:
    """Label the task's offline control set (first ``n`` trajectories; all 200 by default), cached.

    ``n`` takes the first n//2 expert and n - n//2 noisy trajectories (the order of
    :func:`relam.demos.load_demos`).
    """
    from relam.demos import load_demos

    path = offline_cache_path(task, labeller, n, image_size)
    if path.exists() and not rebuild:
        return OfflineDataset.load(path)
    demos = load_demos(task, kind="offline", n=n, progress=progress)
    ds = label_demos(demos, labeller, image_size, progress)
    ds.save(path)
    return ds


# --------------------------------------------------------------------------- sanity checks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two sequences; NaN when it is undefined (fewer than 3 values, or one constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def reward_sanity(ds: OfflineDataset) -> dict[str, float]:
    """Expert-vs-noisy returns and Spearman correlation with the simulator's dense reward.

    ``spearman_step``: pooled over all transitions; ``spearman_return``: between trajectory returns.
    Expert trajectories are the non-noisy ones; noisy ones are also split by success. Returns
    depend on trajectory length (every step in an unfinished stage costs), so the number of
    subgoals reached by the end (``subgoals_reached_*``, and as a fraction of the plan's
    ``subgoal_fraction_*``) is reported too when the labeller records stages.
    """
    ret = ds.returns()
    env_ret = np.array([ds.env_reward[ds.step_slice(i)].sum() for i in range(ds.n_trajectories)])
    out: dict[str, float] = {"trajectories": float(ds.n_trajectories)}
    groups = {"expert": ~ds.noisy, "noisy": ds.noisy, "noisy_success": ds.noisy & ds.success,
              "noisy_failure": ds.noisy & ~ds.success}
    for name, m in groups.items():
        out[f"n_{name}"] = float(m.sum())
        out[f"return_{name}"] = float(ret[m].mean()) if m.any() else float("nan")
        out[f"env_return_{name}"] = float(env_ret[m].mean()) if m.any() else float("nan")
        out[f"step_reward_{name}"] = float((ret / ds.lengths)[m].mean()) if m.any() else float("nan")
        if "stage" in ds.info and "reached" in ds.info and m.any():
            last = np.array([ds.step_slice(i).stop - 1 for i in np.flatnonzero(m)])
            reached = ds.info["stage"][last] + ds.info["reached"][last]
            out[f"subgoals_reached_{name}"] = float(reached.mean())
            if "n_subgoals" in ds.info:
                out[f"subgoal_fraction_{name}"] = float((reached / ds.info["n_subgoals"][last]).mean())
    out["spearman_step"] = spearman(ds.rewards, ds.env_reward)
    out["spearman_return"] = spearman(ret, env_ret)
    return out


def plot_reward_sanity(ds: OfflineDataset, path: str | Path, title: str = "") -> Path:
    """Two panels: labelled returns (expert / noisy success / noisy failure) and reward vs env reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = reward_sanity(ds)
    ret = ds.returns()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    groups = [("expert", ~ds.noisy), ("noisy, success", ds.noisy & ds.success), ("noisy, failure", ds.noisy & ~ds.success)]
    data = [ret[m] for _, m in groups]
    ax[0].boxplot([d if len(d) else [np.nan] for d in data], showmeans=True)
    ax[0].set_xticks([1, 2, 3], [f"{n}\n(n={int(m.sum())})" for n, m in groups], fontsize=8)
    ax[0].set_ylabel("labelled return")
    ax[0].set_title(f"expert {stats['return_expert']:.1f} vs noisy {stats['return_noisy']:.1f}", fontsize=9)
    ax[1].scatter(ds.env_reward, ds.rewards, s=3, alpha=0.3, c=np.where(np.repeat(ds.noisy, ds.lengths), "tab:red", "tab:blue"))
    ax[1].set_xlabel("ManiSkill dense reward")
    ax[1].set_ylabel("labelled reward")
    ax[1].set_title(f"Spearman: per step {stats['spearman_step']:.2f}, per return {stats['spearman_return']:.2f}", fontsize=9)
    fig.suptitle(title or f"{ds.meta.get('task', '')} - {ds.meta.get('labeller', '')}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(Path(path), buf.getvalue())


def iql_settings(budget: Any, seed: int) -> Any:
    """The :class:`relam.rl.iql.IQLSettings` of an offline run with ``budget`` (a
    :class:`relam.methods.Budget`): ``train_steps`` gradient steps in epochs of ``eval_every``, and
    the budget's ``iql_*`` fields; appendix C's values for the rest."""
    from relam.rl.iql import IQLSettings

    return IQLSettings(steps_per_epoch=budget.eval_every, epochs=max(1, budget.train_steps // budget.eval_every),
                       seed=seed, encoder=budget.iql_encoder, encoder_steps=budget.iql_encoder_steps, actor_lr_schedule=budget.iql_actor_lr,
                       temperature=budget.iql_temperature, expectile=budget.iql_expectile)


def run_offline(ctx: Any, labeller: Any, make_eval_env: Callable[[], Any]) -> Any:
    """One offline run of any reward method: label the control set -> IQL -> live evaluation.

    ReLAM and every baseline take this path on the ManiSkill rows (appendix A.4): the task's
    offline set (``budget.offline_set_size()`` trajectories, half expert, half noisy) labelled by
    ``labeller`` (:func:`relam.offline.label_offline_dataset`, cached per labeller config, under a
    file lock so parallel seeds label once), then :func:`relam.rl.iql.train_iql` with
    ``budget.train_steps`` gradient steps in epochs of ``budget.eval_every`` (image encoder
    ``budget.iql_encoder``; on CUDA when torch sees a GPU), evaluated after every
    epoch on the fixed evaluation seeds in the env ``make_eval_env()`` (built once, on first use;
    it must give the policy the observation the dataset holds: the 64 px image plus the
    labeller's vector entries; with ``budget.policy_input`` ...+proprio it is wrapped in
    :class:`relam.wrappers.RobotProprio` and the recorded ``proprio`` stays in the dataset, else
    that entry is dropped).  The labelled expert/noisy mean returns go into the metrics
    (``label_return_expert`` / ``label_return_noisy``) so a table can show whether the reward
    ranks the expert first.  ``ctx.offline_transform`` (benchmarks only; a spec's runs leave it
    None) replaces the labelled set before training: ``benchmarks/bench_offline_reference.py`` trains the same IQL on
    the simulator's dense reward, or on the experts alone, to measure what the data and the policy
    input allow whatever the reward.
    """
    from filelock import FileLock

    from relam.results import RunResult
    from relam.rl.evaluation import eval_seeds
    from relam.rl.iql import evaluate_policy, train_iql

    spec = ctx.task_spec()
    b = ctx.budget
    n = b.offline_set_size()
    lock = cache_dir() / "offline" / f"{spec.name}-{settings_hash(labeller.config())}-{n}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        dataset = label_offline_dataset(spec.name, labeller, n=n, progress=ctx.progress)
    transform = getattr(ctx, "offline_transform", None)
    if transform is not None:
        dataset = transform(dataset)
    sanity = reward_sanity(dataset)
    holder: dict[str, Any] = {}

    def make(seed: int) -> Any:
        if "env" not in holder:
            from relam.wrappers import RobotProprio

            holder["env"] = RobotProprio(make_eval_env()) if b.sees_proprio else make_eval_env()
        return holder["env"]

    if not b.sees_proprio:
        dataset = dataset.without("proprio")
    elif "proprio" not in dataset.observations:
        raise ValueError(f"budget policy_input {b.policy_input!r}: the offline set of {spec.name} has no recorded "
                         "robot state (recorded before offline format 2); record it again with "
                         f"`relam offline-data {spec.name} --scale <scale>`, or use policy_input 'image+points'")
    seeds = eval_seeds(b.eval_episodes)
    iql = iql_settings(b, ctx.seed)
    try:
        res = train_iql(dataset, iql, Path(ctx.out_dir),
                        eval_fn=lambda policy: evaluate_policy(policy, make, seeds, ctx.horizon()),
                        progress=ctx.progress)
    finally:
        if "env" in holder:
            holder.pop("env").close()
    metrics = {**res.metrics, "offline_trajectories": float(dataset.n_trajectories),
               "label_return_expert": sanity["return_expert"], "label_return_noisy": sanity["return_noisy"]}
    return RunResult(success=float(res.final_success or 0.0), curve=[(int(s), float(v)) for s, v in res.curve],
                     metrics={k: v for k, v in metrics.items() if np.isfinite(v)}).validate()
