"""VLM-style reward for online refinement of an imitation policy ("Large Reward Models", arXiv 2603.16065).

The related paper rewards a manipulation policy with a reward model that looks only at the
*current* observation and answers three questions; the reward is the mean of the answers:

* **temporal contrastive** ``c in {-1, 0, +1}``: did the scene move toward (+1), away from (-1) the
  goal, or not at all (0), relative to the frame of the previous query;
* **progress** ``p in [0, 1]``: how much of the task is done, from the current frame (and, here
  always, the episode's initial frame);
* **completion** ``d in {0, 1}``: is the task done.

``r = (c + p + d) / 3`` (:func:`combine_terms`), queried every ``query_every`` = 10 env steps and
held constant in between (:class:`HeldModelReward`); the simulator's reward is ignored. The policy
starts from behaviour cloning on the expert demos' recorded actions (:func:`behaviour_cloning`) and
is refined by PPO for about 30 iterations (:class:`VLMReward`, registered as ``vlm_reward``): a
rate of 5e-5, an approximate-KL stop per update, raw advantages, and the first two iterations
train the critic only, because the paper's refinement must correct a base policy without first wrecking it.

**Two reward backends** behind one interface (:class:`RewardModel`, ``terms(current, previous,
initial) -> RewardTerms``):

* ``vlm`` (:class:`VLMRewardModel`): a vision-language model through ``transformers``
  (``AutoModelForImageTextToText``) from a local folder, asked the three questions of
  :data:`PROMPTS`; the answers are parsed by :func:`parse_direction`, :func:`parse_progress`,
  :func:`parse_completion`. No weights can be downloaded here, so it fails early with a message
  naming the ``model_path`` setting and the fix (:class:`VLMWeightsMissing`).
* ``learned`` (default, :class:`LearnedRewardModel`): a small CNN encoder with three heads, trained
  here on the expert videos (positives) and on reversed / static expert pairs and random-action
  videos (negatives). Targets: progress = normalised time ``t / T`` in an expert video and 0 on
  random-action frames (they never leave the start region of the task); completion = 1 on the last
  ``completion_frames`` frames of successful demos, 0 elsewhere; direction = the sign of the
  progress difference of a pair (expert forward +1, expert reversed -1, same frame or two
  random-action frames 0). It stands in for the zero-shot VLM: it sees pixels only and is trained
  on nothing the other baselines do not get (the expert videos plus random play).

Why the held reward, not a per-step one: the paper queries a large model, which is far too slow per
step; holding keeps the cost of a query per 10 steps and the reward piecewise constant. A query
compares the current frame with the *previous queried* frame (10 steps back), which is the gap the
temporal head is trained on (``min_gap``..``max_gap``).

**Policy.** The PPO actor is the ReLAM policy of :func:`relam.rl.ppo.make_ppo` on the image-only
observation (``{"image": (3, 64, 64) uint8}``, :class:`PolicyImage`), so behaviour cloning trains
exactly the network PPO then refines: the mean of the Gaussian actor regresses the expert's
actions (MSE, random-shift augmentation), then the action std is set to ``exploration_std``
(learning it by maximum likelihood would make it as small as the training error and leave PPO
nothing to explore with). The BC weights are cached, so the base column (``refine_iterations: 0``)
and the refined one of ``experiments/refine.yaml`` start from the same policy.

**Cost** (measured on this shared 2-core machine, 1 torch thread; ``query_seconds`` and
``python benchmarks/bench_vlm_reward.py --train 8 --test 4``): the learned backend costs about 2.5 ms of CPU
a query (three 128 px frames resized and encoded), i.e. **about 0.25 s of reward per 1k env steps**
(100 queries; 1.1 s wall under a load of 8 processes), small next to rendering the 1k steps (about
9 s). Training it: quick scale (1500 steps, batch 64, 32 px) about 4 min wall under that load;
behaviour cloning 3000 steps at 64 px a few minutes more. A 2-7B VLM on CPU would take seconds per
question, three questions a query: several minutes of reward per 1k steps even with the hold.

Only the online Meta-World setting is wired; ManiSkill tasks raise
:class:`relam.methods.MethodNotImplementedError` (BC there would need the offline control set's
joint targets and an IQL/PPO path of its own).
"""
from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field

from baselines.common import POLICY_IMAGE_SIZE, to_policy_images
from baselines.vlm_models import LearnedRewardModel, RewardModel, _frames, pair_directions, query_seconds
from baselines.vlm_training import (CRITIC_WARMUP_ITERATIONS, _bc_policy_state, _freeze_actor, _make_refine_ppo,
                                    _ppo_settings, _refine_updates, make_reward_model)
from relam.methods import Budget, MethodSettings, RewardMethod, RunContext, RunResult, register_method

__all__ = ["VLMRewardSettings", "bc_demos", "HeldModelReward", "PolicyImage", "StopOnSuccess", "VLMReward"]


class VLMRewardSettings(MethodSettings):
    """VLM-style reward (Large Reward Models): BC base policy refined by PPO on a three-term reward.

    One refinement iteration is one PPO rollout of ``budget.eval_every`` env steps, followed by an
    evaluation (:class:`VLMReward`).
    """

    backend: Literal["learned", "vlm"] = Field(
        default="learned", description="learned: small CNN heads trained here on the demos (no weights); "
                                       "vlm: a vision-language model from model_path")
    model_path: str | None = Field(default=None, description="local folder with the VLM weights (backend: vlm)")
    query_every: int = Field(default=10, gt=0, description="env steps between reward queries (held in between)")
    refine_iterations: int | None = Field(
        default=None, ge=0, description="PPO iterations; None: budget.train_steps // budget.eval_every; "
                                        "0: evaluate the behaviour-cloning base policy only")
    exploration_std: float = Field(default=0.1, gt=0.0, description="PPO action std set after behaviour cloning")
    bc_demos: int | None = Field(
        default=None, gt=0, description="expert demos behaviour cloning learns from (the first bc_demos of the "
                                        "budget's n_demos; the reward model still learns from all n_demos); "
                                        "None: all n_demos. Fewer give the refinement a weak base to improve")
    bc_steps: int | None = Field(
        default=None, gt=0, description="behaviour-cloning gradient steps; None: the scale's "
                                        "(baselines.vlm_training.SCALE_STEPS)")


def bc_demos(settings: VLMRewardSettings, budget: Budget) -> int:
    """Expert demos behaviour cloning learns from: ``settings.bc_demos``, at most the budget's
    ``n_demos`` (the videos there are), or all of them."""
    if settings.bc_demos is None:
        return int(budget.n_demos)
    if settings.bc_demos > budget.n_demos:
        raise ValueError(f"vlm_reward bc_demos={settings.bc_demos}: more than the budget's n_demos="
                         f"{budget.n_demos} expert demos; lower bc_demos or raise n_demos")
    return int(settings.bc_demos)


# =============================================================================== wrappers


class HeldModelReward(gym.Wrapper):
    """Replaces the env reward by the model reward, queried every ``query_every`` steps and held.

    Queries happen on steps 1, 1 + q, 1 + 2q, ... of an episode; a query compares the current frame
    with the frame of the previous query (the initial frame for the first) and the initial frame.
    The env's observation must be the (H,W,3) uint8 frame (a :class:`relam.tasks.TaskEnv`). ``info``
    gains ``model_reward``, ``reward_queried`` and the last ``reward_terms``; ``env_reward`` is kept.
    """

    def __init__(self, env: gym.Env, model: RewardModel, query_every: int = 10):
        super().__init__(env)
        if int(query_every) < 1:
            raise ValueError(f"HeldModelReward.query_every={query_every}: must be >= 1 env steps")
        self.model, self.query_every = model, int(query_every)
        self._t, self._held, self._terms = 0, 0.0, {}
        self._initial: np.ndarray | None = None
        self._last_query: np.ndarray | None = None
        self.n_queries = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        frame = _frames(obs, "HeldModelReward observation")[0]
        self._initial = self._last_query = frame
        self._t, self._held, self._terms = 0, 0.0, {}
        return obs, info

    def step(self, action):
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        queried = (self._t - 1) % self.query_every == 0
        if queried:
            frame = _frames(obs, "HeldModelReward observation")[0]
            t = self.model.terms(frame[None], self._last_query[None], self._initial[None])
            self._held, self._terms = float(t.reward[0]), t.row(0)
            self._last_query = frame
            self.n_queries += 1
        info = dict(info)
        info.setdefault("env_reward", float(env_reward))
        info.update(model_reward=self._held, reward_queried=queried, reward_terms=dict(self._terms))
        return obs, self._held, terminated, truncated, info


class PolicyImage(gym.ObservationWrapper):
    """(H,W,3) uint8 frame -> ``{"image": (3, size, size) uint8}``, the policy's observation (area resize)."""

    def __init__(self, env: gym.Env, size: int = POLICY_IMAGE_SIZE):
        super().__init__(env)
        self.size = int(size)
        self.observation_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (3, self.size, self.size), np.uint8)})

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        return {"image": to_policy_images(observation, self.size)[0]}


class StopOnSuccess(gym.Wrapper):
    """Ends an episode at its first successful step (evaluation only: success 'at any step' is then
    known, and the remaining steps of a 200-step episode need not be simulated and rendered)."""

    def step(self, action):
        obs, r, terminated, truncated, info = self.env.step(action)
        return obs, r, terminated or bool(info.get("success", False)), truncated, info


# =============================================================================== the method


@register_method("vlm_reward")
class VLMReward(RewardMethod):
    """BC base policy refined by PPO on the held three-term reward (see the module docstring).

    The curve is the evaluation success after BC (step 0) and after each PPO iteration (x = env
    steps); ``metrics`` hold ``base_success``, ``refined_success`` (last iteration), ``best_success``,
    the reward model's sanity numbers and the reward cost. ``out_dir`` keeps a checkpoint after each
    iteration, so a killed run resumes there (the env RNG is not restored).
    """

    Settings = VLMRewardSettings
    policy_inputs = ("image+points",)  # learns from images alone
    version = "3"

    def online(self, ctx: RunContext) -> RunResult:
        from stable_baselines3.common.vec_env import VecNormalize

        from relam.cache import atomic_write_bytes, atomic_write_json, read_json
        from relam.rl.evaluation import eval_seeds, evaluate_success
        from relam.rl.ppo import HierarchicalPPO, make_vec_env
        from relam.tasks import make_env

        s: VLMRewardSettings = ctx.settings  # type: ignore[assignment]
        b = ctx.budget
        spec = ctx.task_spec()
        torch.set_num_threads(1)
        bc_demos(s, b)  # a bc_demos above the budget's n_demos fails before the reward model trains
        reward_model = make_reward_model(s, spec.name, b.n_demos, ctx.scale, ctx.progress)
        iterations = b.train_steps // b.eval_every if s.refine_iterations is None else s.refine_iterations
        ppo = _ppo_settings(b)

        def env_fn(seed: int) -> gym.Env:
            return PolicyImage(HeldModelReward(make_env(spec), reward_model, s.query_every))

        out = Path(ctx.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        venv = make_vec_env(env_fn, ctx.seed, ppo)
        eval_env = PolicyImage(StopOnSuccess(HeldModelReward(make_env(spec), reward_model, s.query_every)))
        seeds = eval_seeds(b.eval_episodes)
        t0 = time.time()
        try:
            state = read_json(out / "state.json") if (out / "state.json").exists() else None
            if state is not None and (out / "checkpoint.zip").exists():
                model = HierarchicalPPO.load(out / "checkpoint.zip", env=venv, device=ppo.device)
                _refine_updates(model)
                if isinstance(venv, VecNormalize) and "ret_rms" in state:
                    venv.ret_rms.mean, venv.ret_rms.var = np.float64(state["ret_rms"][0]), np.float64(state["ret_rms"][1])
                    venv.ret_rms.count = state["ret_rms"][2]
            else:
                model = _make_refine_ppo(venv, ppo, ctx.seed)
                weights, bc_stats = _bc_policy_state(spec.name, bc_demos(s, b), ctx.scale, ctx.seed, ppo, venv,
                                                     ctx.progress, steps=s.bc_steps)
                model.policy.load_state_dict(weights)
                with torch.no_grad():
                    model.policy.log_std.fill_(float(np.log(s.exploration_std)))
                base = evaluate_success(model, eval_env, seeds)
                state = {"curve": [[0, base.success_rate]], "metrics": {**bc_stats, **self._sanity(reward_model, ctx)}}
            from tqdm import tqdm

            done = len(state["curve"]) - 1
            for it in tqdm(range(done, iterations), desc=f"refine {spec.name}", disable=not ctx.progress):
                _freeze_actor(model.policy, it < CRITIC_WARMUP_ITERATIONS)
                model.learn(ppo.n_steps, reset_num_timesteps=False, progress_bar=False)
                res = evaluate_success(model, eval_env, seeds)
                state["curve"].append([int(model.num_timesteps), res.success_rate])
                buf = io.BytesIO()
                model.save(buf)
                atomic_write_bytes(out / "checkpoint.zip", buf.getvalue())
                if isinstance(venv, VecNormalize):
                    r = venv.ret_rms
                    state["ret_rms"] = [float(np.asarray(r.mean)), float(np.asarray(r.var)), float(r.count)]
                atomic_write_json(out / "state.json", state)
        finally:
            venv.close()
            eval_env.close()
        curve = [(int(x), float(y)) for x, y in state["curve"]]
        succ = [y for _, y in curve]
        metrics = {**state["metrics"], "base_success": succ[0], "refined_success": succ[-1],
                   "best_success": max(succ), "iterations": float(len(curve) - 1),
                   "env_steps": float(curve[-1][0]), "wall_s": time.time() - t0,
                   "critic_warmup_iterations": float(min(CRITIC_WARMUP_ITERATIONS, iterations))}
        return RunResult(success=succ[-1], curve=curve, metrics=metrics).validate()

    @staticmethod
    def _sanity(reward_model: RewardModel, ctx: RunContext) -> dict[str, float]:
        """Mean temporal term on forward / reversed pairs of one training demo, and the reward cost."""
        if not isinstance(reward_model, LearnedRewardModel):
            return {}
        from relam.demos import load_demos

        demo = load_demos(ctx.task, n=1)[0]
        gap = min(10, len(demo.frames) - 1)
        d = pair_directions(reward_model, demo.frames, gap)
        return {"reward_forward_mean": float(d["forward"].mean()), "reward_reversed_mean": float(d["reversed"].mean()),
                "reward_s_per_1k_steps": query_seconds(reward_model, demo.frames) * 100.0}
