"""The reward-method registry: one interface that every compared method implements.

Every column of the paper's tables (ReLAM and the baselines DACfO, Diffusion Reward, Image Subgoal,
Oracle, ...) is a :class:`RewardMethod` registered under a short name, so that an experiment spec
can name it and the runner can call it without knowing what it does. The runner's contract is one
call, :meth:`RewardMethod.run`: given the resolved settings of one run (task, method settings,
seed, budget, a scratch folder) train and evaluate, and return a :class:`RunResult` (final success
rate, learning curve, extra metrics). Everything that makes the run reproducible lives in the
:class:`RunContext`, so a run is a pure function of its settings (plus the seed).

Adding a method is one module (its settings and class), an entry point naming it, and a spec entry::

    from relam.methods import RewardMethod, MethodSettings, register_method

    class MySettings(MethodSettings):      # extra="forbid": a typo in a spec fails validation
        lr: float = 3e-4

    @register_method("mine")
    class Mine(RewardMethod):
        Settings = MySettings
        def online(self, ctx): ...         # Meta-World rows; offline(ctx) for ManiSkill rows

A method is found by name through the installed package's entry points (group ``relam.methods``
in pyproject.toml, ``name = "module:Class"``): the first lookup of a name imports the module,
whose ``@register_method`` makes it known. So this module names no implementation, and another
installed package can add methods. An entry point whose module does not exist yet is a method a
spec may already name: its runs are recorded as failed with :class:`MethodNotImplementedError`
instead of crashing; a name that is neither registered nor an entry point (a typo) is rejected
with the list of known names. Extra plug-in modules can be named, comma-separated, in
``$RELAM_METHOD_MODULES``; they are imported before lookups. (After changing the entry points,
re-install: ``bash scripts/setup.sh`` notices the changed pyproject.toml.)

Reference methods defined here: ``random`` (uniform random actions in the real environment; the
floor of every table), ``scripted`` (the task's own expert: the ceiling) and ``synthetic`` (no simulator; a deterministic fake learning curve with
optional sleep/failure, used to test the harness itself in seconds).
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from relam.results import RunResult  # re-exported: the type every method's run returns

__all__ = [
    "Budget",
    "ENTRY_POINT_GROUP",
    "MethodNotImplementedError",
    "MethodSettings",
    "RewardMethod",
    "RunContext",
    "RunResult",
    "get_method",
    "is_implemented",
    "list_methods",
    "policy_inputs",
    "input_sees_image",
    "register_method",
    "settings_model",
]


class MethodNotImplementedError(NotImplementedError):
    """A spec names a declared method whose implementation is not registered yet."""


class Budget(BaseModel):
    """How much work one run may do; set per suite and per scale in a spec.

    ``train_steps`` counts environment steps for online methods (Meta-World, PPO) and gradient
    steps for offline ones (ManiSkill, IQL): each method reads it for its own setting.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # strict numbers: a spec's quoted "200" or a YAML boolean is a mistake, not a number
    train_steps: int = Field(ge=0, strict=True, description="env steps (online) or gradient steps (offline)")
    eval_every: int = Field(gt=0, strict=True, description="steps between evaluations (learning-curve points)")
    eval_episodes: int = Field(gt=0, strict=True, description="episodes per evaluation")
    n_demos: int = Field(default=100, gt=0, strict=True, description="video demos to learn the reward from")
    horizon: int | None = Field(default=None, gt=0, strict=True,
                                description="episode length override (None: the task's)")
    offline_trajectories: int | None = Field(
        default=None, ge=2, strict=True,
        description="offline control-set size, half expert, half noisy (None: 2 x n_demos, the paper's 100 + 100)")
    policy_input: Literal["image+points", "points", "points+proprio", "image+points+proprio"] = Field(
        default="image+points",
        description="what a keypoint method's policy sees: the paper's 64 px image + current and "
                    "target keypoints, the keypoints alone (the fast loop: nothing rendered after reset), "
                    "the keypoints and the gripper's position and opening (the fast loop, with the depth a "
                    "single view's 2-D points lose; not the paper's input), or the paper's input and the "
                    "robot's own state (ManiSkill: joint positions, which its absolute joint-target "
                    "actions are relative to; not the paper's input). Image-only methods need "
                    "'image+points'")
    n_envs: int = Field(default=1, ge=1, strict=True, description="parallel environments of online PPO (the "
                                                                  "rollout stays 2000 steps, split between them)")
    log_std_init: float = Field(default=0.0, strict=True,
                                description="initial log std of the PPO policy (SB3's default 0)")
    learning_rate: float = Field(default=3e-4, gt=0, strict=True, description="PPO learning rate")
    ppo_batch_size: int = Field(default=64, gt=0, strict=True,
                                description="PPO minibatch size (appendix C: 64; ppo_n_epochs epochs over the rollout "
                                            "either way, so a larger one makes fewer, less noisy steps)")
    ppo_segment_bootstrap: float = Field(
        default=0.0, ge=0.0, le=1.0, strict=True,
        description="the share of the next subgoal segment's value that PPO's advantage keeps at a subgoal end "
                    "(relam.rl.ppo.PPOSettings.segment_bootstrap; 0: appendix A.3's 'done' at every subgoal, "
                    "which leaves each segment blind to the state it ends in)")
    ppo_share_encoder: bool = Field(
        default=True, strict=True,
        description="whether PPO's actor and critic share one features extractor (SB3's default) or each has "
                    "its own (relam.rl.ppo.PPOSettings.share_features_extractor): shared, the critic's loss "
                    "also trains the image CNN the actor reads")
    ppo_target_kl: float | None = Field(
        default=None, gt=0, strict=True,
        description="SB3's target_kl for PPO (relam.rl.ppo.PPOSettings.target_kl): stop an update's epochs once "
                    "the approximate KL passes 1.5x this; None (appendix C gives none) runs all ppo_n_epochs")
    ppo_n_epochs: int = Field(
        default=10, ge=1, strict=True,
        description="PPO epochs over each rollout (appendix C gives none; SB3's default 10; relam.rl.ppo."
                    "PPOSettings.n_epochs): fewer epochs move the policy less per update (Atari's PPO: 4)")
    ppo_ent_coef: float = Field(
        default=0.0, ge=0.0, strict=True,
        description="PPO's entropy bonus (SB3's ent_coef; relam.rl.ppo.PPOSettings.ent_coef; appendix C gives "
                    "none, SB3's default 0): a positive one pushes the policy's action std up against the "
                    "policy gradient's pull down")
    lr_schedule: Literal["constant", "linear"] = Field(
        default="constant", description="PPO learning rate over the run: constant, or linear to 0 at train_steps")
    iql_encoder: Literal["separate", "shared", "frozen"] = Field(
        default="separate",
        description="offline IQL's image encoder (relam.rl.iql.IQLSettings.encoder): a CNN per network, one "
                    "CNN shared (trained by the critic), or the shared CNN frozen at initialisation with "
                    "every frame's features computed once (about 8x the gradient steps/s on a CPU)")

    iql_encoder_steps: int = Field(
        default=0, ge=0, strict=True,
        description="with iql_encoder 'frozen': gradient steps that train the shared CNN (by the critic loss) "
                    "before it is frozen (relam.rl.iql.IQLSettings.encoder_steps; 0: frozen at initialisation)")

    iql_actor_lr: Literal["constant", "cosine"] = Field(
        default="constant",
        description="offline IQL's actor learning rate over the run (relam.rl.iql.IQLSettings.actor_lr_schedule): "
                    "constant, or cosine-annealed to 0 at train_steps as in the original IQL and OfflineRL-Kit")

    iql_temperature: float = Field(
        default=3.0, gt=0, strict=True,
        description="offline IQL's inverse temperature beta of the advantage weights exp(beta A) "
                    "(relam.rl.iql.IQLSettings.temperature; appendix C / the original IQL on locomotion: 3, "
                    "on AntMaze: 10)")
    iql_expectile: float = Field(
        default=0.7, gt=0, lt=1, strict=True,
        description="offline IQL's expectile tau of the value loss (relam.rl.iql.IQLSettings.expectile; "
                    "the original IQL: 0.7 on locomotion, 0.9 on AntMaze)")

    @field_validator("iql_encoder_steps")
    @classmethod
    def _warm_up_needs_the_frozen_encoder(cls, steps: int, info: ValidationInfo) -> int:
        """A warm-up only means something for the encoder that is frozen after it."""
        encoder = info.data.get("iql_encoder", "separate")
        if steps and encoder != "frozen":
            raise ValueError(f"trains the shared CNN before freezing it, so it needs iql_encoder: frozen (got "
                             f"{encoder!r}); set iql_encoder: frozen or drop iql_encoder_steps")
        return steps

    @field_validator("eval_every")
    @classmethod
    def _evaluates_within_training(cls, eval_every: int, info: ValidationInfo) -> int:
        """A run that trains must evaluate while it trains, or its learning curve has no point
        between its start and its end (a budget typo, such as a zero too many)."""
        train_steps = info.data.get("train_steps")
        if train_steps and eval_every > train_steps:
            raise ValueError(f"must be at most train_steps ({train_steps}), or the learning curve has no "
                             "point while it trains; lower eval_every or raise train_steps")
        return eval_every

    #: fields added after records existed: left out of :meth:`key_dict` while at their field defaults
    _LATE_FIELDS: ClassVar[tuple[str, ...]] = (
        "offline_trajectories", "policy_input", "n_envs", "log_std_init", "learning_rate", "ppo_batch_size",
        "ppo_segment_bootstrap", "ppo_share_encoder", "ppo_target_kl", "ppo_ent_coef", "ppo_n_epochs",
        "lr_schedule", "iql_encoder", "iql_encoder_steps", "iql_actor_lr", "iql_temperature", "iql_expectile")

    @property
    def sees_image(self) -> bool:
        """Whether the policy gets the 64 px image (``policy_input`` image+points[+proprio])."""
        return input_sees_image(self.policy_input)

    @property
    def sees_proprio(self) -> bool:
        """Whether the policy gets the robot's own state (``policy_input`` ...+proprio;
        :class:`relam.wrappers.RobotProprio`)."""
        return self.policy_input.endswith("+proprio")

    def key_dict(self) -> dict[str, Any]:
        """The budget as it enters run keys: late fields at their default are absent, so records
        made before those fields existed keep their keys."""
        d = self.model_dump()
        fields = type(self).model_fields
        return {k: v for k, v in d.items() if not (k in self._LATE_FIELDS and v == fields[k].default)}

    def offline_set_size(self) -> int:
        """Trajectories in the offline control set an offline run labels (ManiSkill rows)."""
        return int(self.offline_trajectories or 2 * self.n_demos)


def input_sees_image(policy_input: str) -> bool:
    """Whether a budget's ``policy_input`` gives the policy the 64 px image (image+points[+proprio])."""
    return policy_input.startswith("image+")


class MethodSettings(BaseModel):
    """Base of every method's settings model; unknown keys are errors (catches spec typos)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class RunContext:
    """Everything one run needs; the runner builds it from a spec entry.

    ``out_dir`` is a private scratch folder under the cache for checkpoints and logs (it is keyed
    like the run record, so a resumed run finds what it left). ``progress`` says whether the
    method may draw its own tqdm bar (False in pool workers).
    """

    task: str
    method: str
    settings: MethodSettings
    seed: int
    budget: Budget
    scale: str
    out_dir: Path
    progress: bool = False
    #: offline rows only, benchmarks only (``benchmarks/bench_offline_reference.py``): a function
    #: applied to the labelled offline set before IQL (:func:`relam.offline.run_offline`); the
    #: runner leaves it None, so no run of a spec is ever trained on anything but its labels
    offline_transform: Callable[[Any], Any] | None = None

    def horizon(self) -> int:
        """Episode length: the budget's override or the task's own horizon."""
        if self.budget.horizon is not None:
            return self.budget.horizon
        from relam.tasks import get_task

        return int(get_task(self.task).horizon)

    def task_spec(self) -> Any:
        """The run's task entry (:class:`relam.tasks.TaskSpec`) with the budget's horizon applied.

        Every method builds its envs from this, so a budget's horizon override (smoke runs use
        short episodes) reaches the training env, the evaluation env and the offline labelling alike.
        """
        import dataclasses

        from relam.tasks import get_task

        return dataclasses.replace(get_task(self.task), horizon=self.horizon())

    def ppo_settings(self, rollout: int | None = None, **overrides: Any) -> Any:
        """The online PPO settings every method of a run shares (equal terms): a rollout of
        ``rollout`` steps (default appendix C's 2000, fewer when the budget is smaller: smoke),
        rounded down to a multiple of the budget's ``n_envs`` and split between them, minibatches of
        the budget's ``ppo_batch_size`` (at most the rollout), its exploration std and learning rate
        (and its schedule), its ``ppo_segment_bootstrap``, ``ppo_share_encoder``, ``ppo_target_kl``, ``ppo_ent_coef`` and
        ``ppo_n_epochs``."""
        from relam.rl.ppo import PPOSettings

        b = self.budget
        n = int(rollout) if rollout is not None else ppo_rollout(b.train_steps)
        n = max(b.n_envs, n - n % b.n_envs)
        kw: dict[str, Any] = dict(n_steps=n, batch_size=min(b.ppo_batch_size, n), n_envs=b.n_envs,
                                  log_std_init=b.log_std_init, learning_rate=b.learning_rate,
                                  lr_schedule=b.lr_schedule, segment_bootstrap=b.ppo_segment_bootstrap,
                                  share_features_extractor=b.ppo_share_encoder, target_kl=b.ppo_target_kl,
                                  ent_coef=b.ppo_ent_coef, n_epochs=b.ppo_n_epochs)
        kw.update(overrides)
        return PPOSettings(**kw)


#: the suite whose rows train online (PPO in the live env); every other suite's rows train offline
#: (IQL on the task's labelled control set): the paper's split (Meta-World online, ManiSkill offline)
ONLINE_SUITE = "metaworld"


class RewardMethod:
    """Base class: a way of rewarding a visual manipulation policy, trained and evaluated.

    Subclasses set ``Settings`` (a :class:`MethodSettings` model) and implement :meth:`online`
    (Meta-World rows: PPO in the live env) and/or :meth:`offline` (ManiSkill rows: label the
    offline control set, IQL, live evaluation). :meth:`run`, what the runner calls, picks one by
    the task's suite, so the online/offline split is written once; a method that trains the same
    way everywhere (``random``, ``scripted``, ``synthetic``) overrides :meth:`run` itself.
    ``version`` is part of every run key: bump it when a change makes old records stale.
    The building blocks of DESIGN.md (``fit(demos)``, ``wrap(env)``, ``label(dataset)``) are
    optional hooks a method may use inside ``online``/``offline``; the runner only calls ``run``.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    #: the budget ``policy_input`` values the method can train with (image-only reward models
    #: have no keypoints to give a points-only policy); spec validation checks it.
    policy_inputs: ClassVar[tuple[str, ...]] = ("image+points", "points", "points+proprio", "image+points+proprio")

    def run(self, ctx: RunContext) -> RunResult:
        """Train and evaluate one run: :meth:`online` on a Meta-World task, :meth:`offline` elsewhere."""
        if ctx.task_spec().suite == ONLINE_SUITE:
            return self.online(ctx)
        return self.offline(ctx)

    def online(self, ctx: RunContext) -> RunResult:
        """PPO in the live env with this method's reward (the Meta-World rows)."""
        raise self._missing("online", ctx)

    def offline(self, ctx: RunContext) -> RunResult:
        """IQL on the offline control set labelled by this method (the ManiSkill rows)."""
        raise self._missing("offline", ctx)

    def _missing(self, setting: str, ctx: RunContext) -> MethodNotImplementedError:
        # a MethodNotImplementedError: the runner records the run as not implemented (retried on
        # every sweep) rather than as a crash of the method
        suite = ctx.task_spec().suite
        return MethodNotImplementedError(
            f"method {self.name or type(self).__name__!r} has no {setting} setting, which {ctx.task} "
            f"(suite {suite!r}) needs: it implements only {self._settings_written()} "
            f"(Meta-World rows train online, the other suites' rows offline)")

    def _settings_written(self) -> str:
        own = [m for m in ("online", "offline") if getattr(type(self), m) is not getattr(RewardMethod, m)]
        return " and ".join(f"{m}()" for m in own) or "neither online() nor offline()"

    @classmethod
    def extension_refused(cls, task: str, shorter: "Budget", longer: "Budget") -> str | None:
        """Why a run of ``longer`` may not start from the checkpoint of a finished run of ``shorter``
        (the same run but for fewer ``train_steps``: :mod:`relam.experiments.extend`), or None when it
        may: only when the longer run passes through the shorter one's final state. By default it
        may not; a method that trains through :func:`relam.rl.ppo.train_ppo` says it may when the
        learning rate does not depend on the total (:func:`ppo_extension_refused`)."""
        return (f"method {cls.name or cls.__name__!r} does not say that a longer run continues a shorter "
                "one's checkpoint; run it from the start")

    def fit(self, demos: list[Any]) -> None:  # pragma: no cover - optional hook
        raise NotImplementedError(f"{type(self).__name__} has no fit()")

    def wrap(self, env: Any) -> Any:  # pragma: no cover - optional hook
        raise NotImplementedError(f"{type(self).__name__} has no wrap()")

    def label(self, dataset: Any) -> Any:  # pragma: no cover - optional hook
        raise NotImplementedError(f"{type(self).__name__} has no label()")


#: appendix C's PPO rollout: environment steps between updates
PPO_ROLLOUT = 2000


def ppo_rollout(train_steps: int) -> int:
    """The rollout of an online run of ``train_steps``: appendix C's 2000 steps, or the whole run when
    it is shorter (smoke budgets), at least 64 (before rounding to ``n_envs``)."""
    return max(64, min(PPO_ROLLOUT, train_steps))


def ppo_extension_refused(task: str, shorter: "Budget", longer: "Budget") -> str | None:
    """:meth:`RewardMethod.extension_refused` for an online PPO run (:func:`relam.rl.ppo.train_ppo`):
    its checkpoint keeps the model, the reward scaling, the random streams and the environments'
    episodes, so the longer run passes through the shorter one's final state when nothing before
    it depends on the total: with ``lr_schedule: constant``, and with the same rollout length
    (:func:`ppo_rollout`: a run shorter than one rollout collects fewer steps between updates)."""
    from relam.tasks import get_task

    if get_task(task).suite != ONLINE_SUITE:
        return f"{task} trains offline (IQL); only online PPO runs are extended"
    for name, b in (("the finished run", shorter), ("this run", longer)):
        if b.lr_schedule != "constant":
            return (f"budget.lr_schedule of {name} is {b.lr_schedule!r}: the learning rate anneals to 0 over "
                    "train_steps, so a longer run differs from the first update on; extend only runs with "
                    "lr_schedule: constant, or run this one from the start")
    if ppo_rollout(shorter.train_steps) != ppo_rollout(longer.train_steps):
        return (f"the finished run's train_steps ({shorter.train_steps}) is under one {PPO_ROLLOUT}-step rollout, "
                f"so its rollouts were {ppo_rollout(shorter.train_steps)} steps and this run's are "
                f"{ppo_rollout(longer.train_steps)}: run this one from the start")
    return None


_REGISTRY: dict[str, type[RewardMethod]] = {}


def register_method(name: str) -> Callable[[type[RewardMethod]], type[RewardMethod]]:
    """Class decorator: make a :class:`RewardMethod` available to specs under ``name``."""

    def deco(cls: type[RewardMethod]) -> type[RewardMethod]:
        if not (isinstance(cls, type) and issubclass(cls, RewardMethod)):
            raise TypeError(f"@register_method({name!r}) needs a RewardMethod subclass, got {cls!r}")
        old = _REGISTRY.get(name)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise ValueError(f"method name {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


# ---------------------------------------------------------------------------------------------
# Plug-in methods: found through the package's entry points, registered when imported.

#: the entry-point group naming the modules that register methods (pyproject.toml,
#: ``[project.entry-points."relam.methods"]``: ``name = "module:Class"``); any installed package
#: can add methods to it, and the core names none of them
ENTRY_POINT_GROUP = "relam.methods"


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """name -> entry point of every installed method (read once: the installed packages do not change
    while a process runs)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


_imported_plugins: set[str] = set()


def _import_quietly(module: str) -> None:
    """Import ``module`` if it exists; a missing module means 'not implemented yet'."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        # Only swallow the module itself (or its package) being absent, not a broken import inside.
        if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
            raise


def _load_plugins() -> None:
    for mod in filter(None, (m.strip() for m in os.environ.get("RELAM_METHOD_MODULES", "").split(","))):
        if mod not in _imported_plugins:
            importlib.import_module(mod)
            _imported_plugins.add(mod)


def list_methods() -> list[str]:
    """All names a spec may use: registered methods plus those the installed entry points name."""
    _load_plugins()
    return sorted(set(_REGISTRY) | set(_entry_points()))


def method_class(name: str) -> type[RewardMethod] | None:
    """The class registered as ``name``, importing the module its entry point names if needed;
    None when that module does not exist (declared, not written yet). Raises ValueError (listing
    the known names) for a name nothing declares."""
    _load_plugins()
    if name not in _REGISTRY:
        ep = _entry_points().get(name)
        if ep is None:
            raise ValueError(f"unknown method {name!r}; known methods: {', '.join(list_methods())}")
        _import_quietly(ep.module)
    return _REGISTRY.get(name)


def settings_model(name: str) -> type[MethodSettings]:
    """The settings model a spec entry of method ``name`` is validated with (the bare
    :class:`MethodSettings`, no keys, for a declared method that is not written yet)."""
    cls = method_class(name)
    return cls.Settings if cls is not None else MethodSettings


def policy_inputs(name: str) -> tuple[str, ...]:
    """The budget ``policy_input`` values method ``name`` can train with."""
    cls = method_class(name)
    return tuple(cls.policy_inputs if cls is not None else RewardMethod.policy_inputs)


def is_implemented(name: str) -> bool:
    """True when ``name`` is registered (importing the module its entry point names if needed)."""
    return method_class(name) is not None


def get_method(name: str) -> RewardMethod:
    """An instance of the method registered as ``name``.

    Raises ValueError (listing the known names) for an unknown name and
    :class:`MethodNotImplementedError` for an entry point whose module does not exist (yet).
    """
    cls = method_class(name)
    if cls is None:
        raise MethodNotImplementedError(f"method {name!r} not implemented yet (expected "
                                        f"@register_method({name!r}) in module {_entry_points()[name].module})")
    return cls()


# ---------------------------------------------------------------------------------------------
# Reference methods.


class RandomSettings(MethodSettings):
    pass


@register_method("random")
class RandomPolicy(RewardMethod):
    """Uniform random actions in the real task environment: the floor every method must beat.

    No learning, so the curve is flat: one evaluation of ``budget.eval_episodes`` episodes, reported
    at step 0 and at ``budget.train_steps``. Rendering is off (success comes from the simulator),
    which keeps it cheap enough for smoke runs. An episode counts as a success if ``info['success']``
    is true at any step (the Meta-World convention).
    """

    Settings = RandomSettings

    def run(self, ctx: RunContext) -> RunResult:
        from relam.tasks import make_env

        rng = np.random.default_rng(ctx.seed)
        horizon = ctx.horizon()
        env = make_env(ctx.task, seed=ctx.seed, render=False)
        successes, returns = [], []
        try:
            for ep in range(ctx.budget.eval_episodes):
                env.reset(seed=ctx.seed * 10_007 + ep)
                low, high = env.action_space.low, env.action_space.high
                ok, ret = False, 0.0
                for _ in range(horizon):
                    a = rng.uniform(low, high).astype(env.action_space.dtype)
                    _, r, terminated, truncated, info = env.step(a)
                    ret += float(r)
                    ok = ok or bool(info.get("success", False))
                    if terminated or truncated:
                        break
                successes.append(float(ok))
                returns.append(ret)
        finally:
            env.close()
        rate = float(np.mean(successes))
        return RunResult(success=rate, curve=[(0, rate), (ctx.budget.train_steps, rate)],
                         metrics={"env_return": float(np.mean(returns)), "episodes": len(successes)})


@register_method("scripted")
class ScriptedExpert(RewardMethod):
    """The task's own expert (Meta-World scripted policy, ManiSkill motion planner): the ceiling.

    Uses :func:`relam.demos.rollout_expert`, i.e. the same expert that records the video demos, on
    ``budget.eval_episodes`` evaluation seeds disjoint from the demo seeds (offset 10^6). A failed
    ManiSkill plan counts as a failed episode. Flat curve, as for ``random``.
    """

    Settings = RandomSettings

    def run(self, ctx: RunContext) -> RunResult:
        from relam.demos import rollout_expert
        from relam.tasks import make_env

        env = make_env(ctx.task, seed=ctx.seed)
        successes, lengths = [], []
        try:
            for ep in range(ctx.budget.eval_episodes):
                demo = rollout_expert(env, seed=1_000_000 + ctx.seed * 10_007 + ep)
                ok = demo is not None and bool(np.asarray(demo.success).any())
                successes.append(float(ok))
                if demo is not None:
                    lengths.append(len(demo.actions))
        finally:
            env.close()
        rate = float(np.mean(successes))
        return RunResult(success=rate, curve=[(0, rate), (ctx.budget.train_steps, rate)],
                         metrics={"episode_length": float(np.mean(lengths)) if lengths else 0.0,
                                  "episodes": len(successes)})


class SyntheticSettings(MethodSettings):
    """Knobs of the harness-testing method (none of them touches a simulator)."""

    level: float = Field(default=0.5, ge=0.0, le=1.0, description="mean final success")
    sleep_s: float = Field(default=0.0, ge=0.0, description="seconds to sleep (to test kills)")
    fail: bool = Field(default=False, description="raise instead of returning (to test failures)")
    log_file: str | None = Field(default=None, description="append 'start/end <task> <seed>' lines here")


@register_method("synthetic")
class Synthetic(RewardMethod):
    """A deterministic fake learner for testing the runner, store and reports in seconds.

    Its success is ``level`` plus a seed-dependent offset and its curve rises linearly; the
    optional log file lets tests count how often each run really executed.
    """

    Settings = SyntheticSettings

    def run(self, ctx: RunContext) -> RunResult:
        s: SyntheticSettings = ctx.settings  # type: ignore[assignment]
        tag = f"{ctx.task} {ctx.seed}"
        if s.log_file:
            with open(s.log_file, "a") as f:
                f.write(f"start {tag}\n")
        if s.sleep_s:
            time.sleep(s.sleep_s)
        if s.fail:
            raise RuntimeError(f"synthetic failure for {tag}")
        rng = np.random.default_rng([ctx.seed, zlib.crc32(ctx.task.encode())])
        final = float(np.clip(s.level + rng.uniform(-0.1, 0.1), 0.0, 1.0))
        n = max(1, ctx.budget.train_steps // ctx.budget.eval_every)
        steps = [i * ctx.budget.eval_every for i in range(n + 1)]
        curve = [(st, final * i / n) for i, st in enumerate(steps)]
        if s.log_file:
            with open(s.log_file, "a") as f:
                f.write(f"end {tag}\n")
        return RunResult(success=final, curve=curve, metrics={"level": s.level})
