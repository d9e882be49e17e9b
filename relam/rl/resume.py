"""Resuming an interrupted PPO run on the path the uninterrupted run takes.

:func:`relam.rl.ppo.train_ppo` checkpoints after each evaluation, and a second call with the same
folder continues from there. Long runs here are resumed across sittings (a 1M-step image run takes
several on 2 cores), so a resumed run should be the run its key names, not another draw. Measured
(drawer-open, points-only, ground truth, 8 environments): interrupted after its 10k evaluation and
resumed with its environments restarted, a run left the uninterrupted one's curve at the next
evaluation (mean return -866 against -914 at 20k). What a resumed run needs to retrace it:

- the model (policy, optimiser, step count, learning-rate schedule): SB3's zip;
- the reward scaling's running statistics (``VecNormalize.ret_rms``) and running returns;
- the global random streams (Python, NumPy, torch: action sampling, minibatch order, gSDE's noise):
  SB3's ``load`` reseeds them with the run's seed, which replays the run's first rollouts' draws;
  :class:`RNGSnapshot` keeps them as they stood after the last update, and they are set back
  just before the first resumed rollout;
- the environments' episodes: every environment with :class:`relam.wrappers.SeededEpisodes` (ReLAM,
  IS, Oracle) saves its current episode's seed and seed stream, and :class:`EpisodeReplay` the
  actions taken since that episode began; the resumed run's first reset replays the episode's start
  and steps through those actions (the simulators are deterministic), so each environment is where
  it was, mid-episode or not (Meta-World's 200-step episodes do not fit the 250-step share of a
  rollout that each of 8 environments collects). SB3 would otherwise reset every environment with
  the run's first seeds again;
- the reward scaling's running returns, the rollout's episode-start flags and the training log's
  unfinished episodes, set back once SB3 has reset the environments.

The checkpoint is taken at the start of the rollout after the evaluation, i.e. after the update
that the evaluated rollout fed. The state says whether the resume will be exact (``exact``); an
environment without ``SeededEpisodes`` (the DACfO and Diffusion Reward envs) starts a new episode
instead and the run goes on along another path. A resumed run checks the replayed observation
against a digest of the saved one and warns when they differ. Not covered: CUDA's random streams,
and reward models that learn during the run (DACfO resumes its discriminator from its own
checkpoints).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import random
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

__all__ = ["RNGSnapshot", "EpisodeReplay", "CheckpointAfterUpdate", "save_checkpoint", "load_checkpoint",
           "restore_envs"]

log = logging.getLogger(__name__)

#: the SB3 logger values of the last update that ``train.csv``'s next row reads (``ppo_*``)
_UPDATE_LOG_PREFIX = "train/"


class RNGSnapshot:
    """The global random streams (Python, NumPy, torch on the CPU) as JSON-ready values."""

    @staticmethod
    def take() -> dict[str, Any]:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        return {"python": [version, list(internal), gauss_next],
                "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
                "torch": base64.b64encode(th.get_rng_state().numpy().tobytes()).decode("ascii")}

    @staticmethod
    def put(state: dict[str, Any]) -> None:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, np.uint32), pos, has_gauss, cached))
        raw = np.frombuffer(base64.b64decode(state["torch"]), np.uint8).copy()
        th.set_rng_state(th.from_numpy(raw))


class EpisodeReplay(gym.Wrapper):
    """Keeps the actions of the current episode, so that a resumed run can put the environment
    back where it was: :meth:`replay_state` is the episode's start (``SeededEpisodes.episode_state``
    of the env inside) and its actions; after :meth:`replay`, the next ``reset`` replays that start,
    steps through the actions and returns the observation after the last (the episode goes on).
    Outside the ``Monitor``, so the episode's return counts the replayed steps."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._actions: list[np.ndarray] = []
        self._pending: dict[str, Any] | None = None

    def replay_state(self) -> dict[str, Any] | None:
        """The current episode's start and actions, or None when the env has no seeded episodes."""
        try:
            episode = self.env.get_wrapper_attr("episode_state")()
        except AttributeError:
            return None
        return {"episode": episode, "actions": [a.tolist() for a in self._actions]}

    def replay(self, state: dict[str, Any]) -> None:
        self.env.get_wrapper_attr("replay_episode")(state["episode"])
        self._pending = state

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._actions = []
        pending, self._pending = self._pending, None
        for action in (pending or {}).get("actions", []):
            obs, _, terminated, truncated, info = self.step(np.asarray(action, np.float32))
            if terminated or truncated:
                raise RuntimeError("EpisodeReplay: the replayed episode ended before its last saved action; "
                                   "the environment is not the one that saved it")
        return obs, info

    def step(self, action):
        self._actions.append(np.array(action, np.float32))  # a copy: converted only when saved
        return self.env.step(action)


def obs_digest(obs: Any) -> str:
    """A digest of a (dict) batch of observations: equal observations, equal digests."""
    h = hashlib.sha256()
    items = sorted(obs.items()) if isinstance(obs, dict) else [("", obs)]
    for key, value in items:
        h.update(key.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def _replay_states(venv: VecEnv) -> list[dict[str, Any]] | None:
    """Each environment's :meth:`EpisodeReplay.replay_state`, or None when one cannot replay."""
    try:
        states = list(venv.env_method("replay_state"))
    except AttributeError:
        return None
    return None if any(s is None for s in states) else states


def save_checkpoint(model: Any, venv: VecEnv, out_dir: Path, progress: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> None:
    """Write ``checkpoint.zip`` (the model) and ``state.json`` (``progress``: step count, curve and
    CSV rows; plus what a resumed run sets back), each atomically. ``extra`` joins the resume
    state (the training log's unfinished episodes)."""
    from relam.cache import atomic_write_bytes, atomic_write_json

    buf = io.BytesIO()
    model.save(buf)
    atomic_write_bytes(out_dir / "checkpoint.zip", buf.getvalue())
    state: dict[str, Any] = {"num_timesteps": int(model.num_timesteps), **progress}
    if isinstance(venv, VecNormalize):
        rms = venv.ret_rms
        state["ret_rms"] = {"mean": float(np.asarray(rms.mean)), "var": float(np.asarray(rms.var)),
                            "count": float(rms.count)}
    rng = getattr(model, "rng_after_update", None)
    last_obs = getattr(model, "_last_obs", None)
    # before the first rollout (the evaluation at step 0) no environment has been reset: nothing to
    # replay, and resuming from there is starting afresh
    started = last_obs is not None
    envs = _replay_states(venv) if started else None
    state["resume"] = {
        "rng": rng,
        "envs": envs,
        "obs_digest": obs_digest(last_obs) if started else None,
        "returns": ([float(r) for r in np.asarray(venv.returns).ravel()]
                    if isinstance(venv, VecNormalize) else None),
        "update_log": {k: float(v) for k, v in model.logger.name_to_value.items()
                       if k.startswith(_UPDATE_LOG_PREFIX)} if rng is not None else {},
        **(extra or {}),
    }
    state["exact"] = not started or (envs is not None and rng is not None)
    atomic_write_json(out_dir / "state.json", state)


def load_checkpoint(out: Path, load_model: Callable[[Path], Any]) -> tuple[dict | None, Any]:
    """The saved state and model of an interrupted run in ``out``, or (None, None) to start afresh.

    A damaged checkpoint (cut short, not a zip, unreadable state, or a model and a state from two
    different checkpoints) costs the run its progress, never the sweep: both files are moved to
    ``out/quarantine/`` with a warning and training starts over.
    """
    from relam.cache import quarantine, read_json

    ckpt, state_file = out / "checkpoint.zip", out / "state.json"
    if not (ckpt.exists() and state_file.exists()):
        return None, None
    try:
        state = read_json(state_file)
        for key in ("num_timesteps", "curve", "train_rows", "eval_rows"):
            state[key]  # noqa: B018 - a state without them cannot resume
        model = load_model(ckpt)
        if int(model.num_timesteps) != int(state["num_timesteps"]):
            raise ValueError(f"the model is at step {model.num_timesteps}, state.json at "
                             f"{state['num_timesteps']} (interrupted between the two writes)")
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint means the same: start over
        problem = f"{type(e).__name__}: {e}"
        for f in (ckpt, state_file):
            quarantine(f, problem, then="the run starts over")
        return None, None
    return state, model


def restore_envs(state: dict[str, Any], venv: VecEnv) -> None:
    """Set the reward scaling's statistics back and, where the checkpoint can be replayed, make
    every environment's next reset put it back where it was."""
    if isinstance(venv, VecNormalize) and "ret_rms" in state:
        venv.ret_rms.mean = np.float64(state["ret_rms"]["mean"])
        venv.ret_rms.var = np.float64(state["ret_rms"]["var"])
        venv.ret_rms.count = state["ret_rms"]["count"]
    envs = (state.get("resume") or {}).get("envs")
    if envs is not None and len(envs) == venv.num_envs:
        for i, env_state in enumerate(envs):
            venv.env_method("replay", env_state, indices=[i])


class CheckpointAfterUpdate(BaseCallback):
    """Saves a due checkpoint at the start of the next rollout (after the update), and on a
    resumed run sets the random streams and the last update's log values back before it starts.

    ``due`` is set by whoever decides a checkpoint is wanted (the evaluation); ``save`` writes it.
    """

    def __init__(self, save: Callable[[], None], resume: dict[str, Any] | None = None):
        super().__init__(verbose=0)
        self.save = save
        self.due = False
        self._resume = resume or {}
        #: whether the replayed environments showed another observation than the checkpoint saved
        self.replay_differed = False

    def _on_training_start(self) -> None:
        # SB3 has just reset the environments (replaying their episodes) and set its flags
        r = self._resume
        if not r:
            return
        if r.get("rng") is not None:
            RNGSnapshot.put(r["rng"])
        for key, value in (r.get("update_log") or {}).items():
            self.model.logger.record(key, value)
        if r.get("envs") is not None:
            # SB3 flags every environment as at an episode start after its reset; a replayed one
            # that took actions is not
            self.model._last_episode_starts = np.array([not e["actions"] for e in r["envs"]])
        venv = self.model.get_env()
        if r.get("returns") is not None and isinstance(venv, VecNormalize):
            venv.returns = np.asarray(r["returns"], np.float64)
        if r.get("envs") is not None and r.get("obs_digest") != obs_digest(self.model._last_obs):
            self.replay_differed = True
            log.warning("resumed run: the replayed environments do not show the observation the checkpoint "
                        "saved, so this run leaves the uninterrupted one's path")

    def _on_rollout_start(self) -> None:
        if self.due:
            self.due = False
            self.save()

    def _on_step(self) -> bool:
        return True
