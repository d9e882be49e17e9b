"""ReLAM's point-based reward (paper section 3.2, Eq. 3-5, appendix A.2 and E).

The reward for following a sequence of keypoint subgoals ``g_1 .. g_S`` is built from three parts:

1. **Keypoint distance** (Eq. 3): the mean Euclidean pixel distance between the current keypoints
   and the keypoints of the current subgoal.
2. **Reward shape**: a monotone map of that distance to ``[-reward_range, 0]`` over the distance
   interval ``[0, d_max]`` (clipped beyond).  The paper's choice is a *piecewise linear* function
   whose slope grows as the distance shrinks (A.2); Fig. 6b compares it with a linear, an
   exponential and a logistic shape spanning the same range over the same interval.
3. **Stage logic** (Eq. 4): when the distance falls below ``theta_s`` the stage succeeds, a stage
   bonus is paid and the next subgoal becomes the target; reaching the last subgoal pays a final
   bonus.

**Why a per-step penalty per unreached subgoal** (not in the paper's text, which lost its
formulas).  Paid alone, a distance penalty to the *current* subgoal punishes progress: reaching
subgoal 1 makes subgoal 2 the target, which is usually far away, so "stop after subgoal 1" returned
less than "hold still" in a first try on drawer-open (see ENVIRONMENT.md).  We therefore add
``-unreached_penalty`` for every subgoal not yet reached, every step.  With
``unreached_penalty >= reward_range`` any step in a later stage pays at least as much as any step in
an earlier stage (a potential that grows by one unit per stage and outweighs the whole distance
term), so the return orders reference behaviours: expert > stop after subgoal k > hold still.  It
is also what the segmented GAE of appendix A.3 needs: every per-step reward inside an unfinished
stage is negative (at most ``-unreached_penalty``), so each low-level segment is a "reach the
subgoal as fast and as straight as you can" problem -- the *time reward* plus *distance reward* of
appendix E -- and ending the segment early is always better than dawdling.  After the last
subgoal is reached the penalty is zero and only the distance term to the last subgoal remains, so
staying at the goal is best.

Everything here is numpy and pure except the small :class:`StageTracker` / :class:`ReLAMReward`
state machines, which are shared by the online wrapper (step by step) and the offline labelling
(:func:`label_trajectory`, a whole keypoint track at once), so both label identically.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "RewardSettings",
    "keypoint_distance",
    "shape_reward",
    "stage_reward",
    "StepOutcome",
    "StageTracker",
    "ReLAMReward",
    "label_trajectory",
    "SHAPES",
    "STAGE_TERMS",
    "REACH_RULES",
]

Shape = Literal["piecewise_linear", "linear", "exponential", "logistic"]
SHAPES: tuple[str, ...] = ("piecewise_linear", "linear", "exponential", "logistic")
#: the values of :attr:`RewardSettings.stage_term`
STAGE_TERMS: tuple[str, ...] = ("unreached", "current")
#: the values of :attr:`RewardSettings.reach`
REACH_RULES: tuple[str, ...] = ("every", "mean")


@dataclass(frozen=True)
class RewardSettings:
    """All knobs of the ReLAM reward; one frozen object per run (hashable for the result store).

    Distances are in pixels of the task image (128 px for the registered tasks).

    Piecewise-linear breakpoints (the paper gives none): the knots sit at ``0``,
    ``piecewise_knots[i] * d_max`` and ``d_max`` with reward values ``0``,
    ``piecewise_values[i] * reward_range`` and ``-reward_range``.  The defaults (knots at 10 % and
    40 % of ``d_max``, values -0.2 and -0.5) give slopes 2.0, 1.0 and 0.83 (in ``reward_range /
    d_max``) from near to far: the last 10 % of the approach, where a policy must be precise to get
    under ``theta_s``, pays twice the average slope, while the far part stays almost linear
    (the paper found plain linear good and continuously varying slopes worse).  Three pieces are
    the fewest that make the slope grow towards the target while keeping each piece constant.
    """

    shape: Shape = "piecewise_linear"
    #: distance (px) at which the shaped term reaches its minimum ``-reward_range``; clipped beyond.
    d_max: float = 64.0
    #: the shaped distance term spans ``[-reward_range, 0]``.
    reward_range: float = 1.0
    piecewise_knots: tuple[float, ...] = (0.1, 0.4)
    piecewise_values: tuple[float, ...] = (-0.2, -0.5)
    #: exponential: ``-(1 - exp(-k x)) / (1 - exp(-k))`` with ``x = d / d_max``.
    exp_rate: float = 3.0
    #: logistic: a sigmoid in ``x = d / d_max`` centred at ``logistic_mid``, rescaled to the range.
    logistic_steepness: float = 10.0
    logistic_mid: float = 0.5
    #: subgoal reached when the mean keypoint distance is below this (px).  6 px is about 5 % of a
    #: 128 px image (the 3 px at 64 px of the first try in ENVIRONMENT.md).  Measured on
    #: drawer-open-v3, points-only PPO, ground-truth subgoals, one seed: with 4 px the policy
    #: reached 0.7 subgoals on average after 20k and 60k steps, with 6 px 1.0 and 1.2.
    theta_s: float = 6.0
    #: the threshold for the *last* subgoal (px; None: ``theta_s``). Where the object's whole motion
    #: is short against ``theta_s``, meeting the last subgoal within ``theta_s`` does not mean the
    #: task is done: button-press-wall's button point travels 8.6-9.0 px, it meets the success
    #: threshold 2.4 px before the final subgoal, and a points-only PPO policy (ground truth, 650k
    #: steps) met every final subgoal with the button 3.5-6.3 px pressed and no success. A tighter
    #: last threshold makes "done" imply success. Not in the paper, which gives one threshold.
    final_theta_s: float | None = None
    #: how ``theta_s`` decides that a subgoal is reached: ``"every"`` -- every keypoint lies within
    #: ``theta_s`` of its target (the paper's wording: "when the distance between a keypoint and the
    #: subgoal is smaller than a predefined threshold"); ``"mean"`` -- the mean distance of Eq. (3)
    #: does.  ``"every"`` is the default because, with the mean, one object point among three arm
    #: points can stay 4*theta_s short of its target: on drawer-open-v3 the handle point moves about
    #: 30 px between the first and last keyframe, so the arm alone "reached" the last subgoal with
    #: the drawer almost shut (points-only PPO with ground-truth subgoals: 3.3 of 4 subgoals reached,
    #: success 0.1-0.2 at 180k steps). Door-open's task entry uses ``"mean"``: its failing policies
    #: passed the turn above the handle with three points within theta_s and one at 6.1-7 px, and
    #: along its expert the last subgoal is still met only after success (README, "Door, session 14").
    reach: Literal["every", "mean"] = "every"
    #: with ``reach: "mean"``, also every keypoint within this many px of its target (None: no such
    #: bound). The mean alone lets one point lag far behind: door-open's failing policies (ground
    #: truth, seed 0, 53%) held the three arm points 0.3-6 px from the subgoal where the door starts
    #: to move while the door point stayed 16-62 px off, and two met every subgoal with the door
    #: shut. A bound of 12 px on door (ground truth, 1M, seeds 0 / 1) scored 77 / 33% against 53 / 73%
    #: without: no gain, so no task entry sets it (README, "Door, session 15"). Not in the paper's text.
    point_theta_s: float | None = None
    #: with ``reach: "mean"``, also the *object* keypoint (the first: farthest-point sampling starts
    #: on the object, :func:`relam.keypoints.select_keypoints`) within this many px of its target
    #: (None: no such bound). Aimed at the lag that ``point_theta_s`` bounds for every point: on
    #: door-open the arm points may still pass a turn 6-7 px off (the reason for the mean), but a
    #: subgoal is not met while the door is not where the plan has it. Not in the paper's text.
    object_theta_s: float | None = None
    #: how many subgoals *past* the current target may be met directly (0: the paper's strict order).
    #: Met subgoal ``j`` (the farthest within reach wins) counts every subgoal up to ``j`` as reached:
    #: their stage bonuses are paid on that step. Keyframes sit where the expert's motion turns, and
    #: some of those turns are transient poses of one path rather than states the task needs: on
    #: door-open-v3 the scripted expert with Gaussian noise of std 0.2 on its actions still opened the
    #: door on 6 of 6 starts, but missed subgoal 3 (the turn above the handle) by 7.5-13.9 px and then
    #: met subgoals 4-7 within 0.3-3.8 px; in strict order those runs end at stage 2 of 7-9.
    #: Not in the paper's text.
    skip_ahead: int = 0
    #: paid once on the step a subgoal (other than the last) is reached.
    stage_bonus: float = 2.0
    #: paid once on the step the last subgoal is reached (in addition to ``stage_bonus``).
    final_bonus: float = 10.0
    #: paid every step for every subgoal not yet reached (see the module docstring for why).
    unreached_penalty: float = 1.0
    #: the per-stage term: ``"unreached"`` -- ``-unreached_penalty`` per subgoal not yet reached,
    #: every step (stage 0 of a door plan with 7-9 subgoals costs 7-9 a step against a distance term
    #: that moves by about 0.01 a step); ``"current"`` -- ``-unreached_penalty`` a step while any
    #: subgoal is unreached, whatever their number. Under the segmented GAE of appendix A.3 (each
    #: subgoal's segment is its own episode for the advantages) both make every step of an
    #: unfinished segment cost at least ``unreached_penalty``, so "reach the subgoal fast" holds;
    #: ``"current"`` gives up the whole-episode ordering of the module docstring (it relies on the
    #: segmented GAE, ``PPOSettings.segment_gae``). A bonus per *reached* subgoal instead (positive
    #: steps after the first subgoal) was tried on door and button and taught the policy to stay short
    #: of the next subgoal: it ends the segment's positive stream. Not in the paper's text.
    stage_term: Literal["unreached", "current"] = "unreached"
    #: also pay ``env_success_bonus`` on every step where the simulator reports success (off in the
    #: paper's setting: ReLAM does not see the task's success signal).
    pay_env_success: bool = False
    env_success_bonus: float = 1.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"RewardSettings.shape={self.shape!r}: choose one of {SHAPES}")
        if not self.d_max > 0:
            raise ValueError(f"RewardSettings.d_max={self.d_max}: must be > 0 (pixels)")
        if not self.reward_range > 0:
            raise ValueError(f"RewardSettings.reward_range={self.reward_range}: must be > 0")
        if not self.theta_s > 0:
            raise ValueError(f"RewardSettings.theta_s={self.theta_s}: must be > 0 (pixels)")
        if self.final_theta_s is not None and not self.final_theta_s > 0:
            raise ValueError(f"RewardSettings.final_theta_s={self.final_theta_s}: must be > 0 (pixels), or None "
                             "for theta_s")
        if not isinstance(self.skip_ahead, int) or isinstance(self.skip_ahead, bool) or self.skip_ahead < 0:
            raise ValueError(f"RewardSettings.skip_ahead={self.skip_ahead!r}: must be an int >= 0 (subgoals past "
                             "the current target that may be met directly; 0: strict order)")
        if self.stage_term not in STAGE_TERMS:
            raise ValueError(f"RewardSettings.stage_term={self.stage_term!r}: choose 'unreached' (a penalty per "
                             "subgoal not yet reached) or 'current' (one penalty a step until all are reached)")
        if self.point_theta_s is not None and not self.point_theta_s > 0:
            raise ValueError(f"RewardSettings.point_theta_s={self.point_theta_s}: must be > 0 (pixels), or None "
                             "for no per-point bound")
        if self.point_theta_s is not None and self.reach != "mean":
            raise ValueError(f"RewardSettings.point_theta_s={self.point_theta_s} bounds the points of reach 'mean'; "
                             f"with reach {self.reach!r} every point is already within theta_s: set reach='mean' "
                             "or leave point_theta_s None")
        if self.object_theta_s is not None and not (self.object_theta_s > 0 and self.reach == "mean"):
            raise ValueError(f"RewardSettings.object_theta_s={self.object_theta_s}: must be > 0 (pixels) and "
                             f"bounds the object point of reach 'mean' (reach is {self.reach!r}); or None")
        if self.reach not in REACH_RULES:
            raise ValueError(f"RewardSettings.reach={self.reach!r}: choose 'every' (each keypoint within "
                             "theta_s) or 'mean' (the mean keypoint distance within theta_s)")
        if self.unreached_penalty < 0 or self.stage_bonus < 0 or self.final_bonus < 0:
            raise ValueError("RewardSettings: unreached_penalty, stage_bonus and final_bonus must be >= 0")
        knots = np.asarray(self.piecewise_knots, float)
        values = np.asarray(self.piecewise_values, float)
        if knots.shape != values.shape:
            raise ValueError(
                "RewardSettings.piecewise_knots and piecewise_values must have the same length, "
                f"got {len(knots)} and {len(values)}"
            )
        xs = np.concatenate([[0.0], knots, [1.0]])
        ys = np.concatenate([[0.0], values, [-1.0]])
        if np.any(np.diff(xs) <= 0):
            raise ValueError(
                f"RewardSettings.piecewise_knots={self.piecewise_knots}: must increase strictly inside (0, 1)"
            )
        slopes = -np.diff(ys) / np.diff(xs)
        if np.any(slopes <= 0) or np.any(np.diff(slopes) > 1e-12):
            raise ValueError(
                "RewardSettings.piecewise_values: the reward must decrease with distance and its slope "
                f"must shrink as the distance grows (A.2); slopes near->far were {slopes.round(3).tolist()}"
            )

    @property
    def orders_stages(self) -> bool:
        """True when a later stage always pays at least as much per step as an earlier one."""
        return self.unreached_penalty >= self.reward_range

    def to_dict(self) -> dict:
        """The settings as plain data (they key labelled datasets): ``skip_ahead``, ``stage_term`` and
        ``point_theta_s`` and ``object_theta_s``, added later, are left out at their defaults so that
        existing keys stay put."""
        d = dataclasses.asdict(self)
        for name, default in (("skip_ahead", 0), ("stage_term", "unreached"), ("point_theta_s", None),
                              ("object_theta_s", None)):
            if d[name] == default:
                del d[name]
        return d


# --------------------------------------------------------------------------- pure functions


def keypoint_distance(current: np.ndarray, target: np.ndarray) -> np.ndarray | float:
    """Eq. (3): mean over keypoints of the Euclidean pixel distance.

    ``current`` and ``target`` are ``(..., N, 2)`` pixel coordinates with broadcastable leading
    dimensions; returns a float for ``(N, 2)`` inputs, else an array of the leading shape.
    """
    current = np.asarray(current, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if current.shape[-1:] != (2,) or target.shape[-1:] != (2,) or current.shape[-2] != target.shape[-2]:
        raise ValueError(
            f"keypoint_distance: expected (..., N, 2) arrays with the same N, got current "
            f"{current.shape} and target {target.shape}"
        )
    d = np.linalg.norm(current - target, axis=-1).mean(axis=-1)
    return float(d) if np.ndim(d) == 0 else d


def _piecewise_table(settings: RewardSettings) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x) and values (y) of the piecewise-linear shape over [0, 1], made once per knot set."""
    try:
        return _piecewise_table_cached(tuple(settings.piecewise_knots), tuple(settings.piecewise_values))
    except TypeError:  # unhashable knots
        return _piecewise_arrays(settings.piecewise_knots, settings.piecewise_values)


def _piecewise_arrays(knots, values) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([[0.0], knots, [1.0]]), np.concatenate([[0.0], values, [-1.0]])


@functools.lru_cache(maxsize=64)
def _piecewise_table_cached(knots: tuple, values: tuple) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = _piecewise_arrays(knots, values)
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def shape_reward(distance: np.ndarray | float, settings: RewardSettings = RewardSettings()) -> np.ndarray | float:
    """Monotone map of a keypoint distance (px) to ``[-reward_range, 0]`` (0 at distance 0).

    All four shapes take the value 0 at ``d = 0`` and ``-reward_range`` at ``d >= d_max``
    (the same range over the same interval, as in Fig. 6b).
    """
    if isinstance(distance, float) and settings.shape in ("piecewise_linear", "linear"):
        # one step of the online reward: the same arithmetic on a Python float, without the array
        # round trip (issue 21; bit-identical, tests/test_reward.py)
        if not 0.0 <= distance < np.inf:
            raise ValueError("shape_reward: distance must be finite and >= 0")
        x = min(max(distance / settings.d_max, 0.0), 1.0)
        unit = np.interp(x, *_piecewise_table(settings)) if settings.shape == "piecewise_linear" else -x
        return float(settings.reward_range * unit)
    d = np.asarray(distance, dtype=np.float64)
    if np.any(d < 0) or np.any(~np.isfinite(d)):
        raise ValueError("shape_reward: distance must be finite and >= 0")
    x = np.clip(d / settings.d_max, 0.0, 1.0)
    if settings.shape == "piecewise_linear":
        unit = np.interp(x, *_piecewise_table(settings))
    elif settings.shape == "linear":
        unit = -x
    elif settings.shape == "exponential":
        k = settings.exp_rate
        unit = -(1.0 - np.exp(-k * x)) / (1.0 - np.exp(-k))
    else:  # logistic
        k, m = settings.logistic_steepness, settings.logistic_mid
        sig = lambda z: 1.0 / (1.0 + np.exp(-k * (z - m)))  # noqa: E731
        unit = -(sig(x) - sig(0.0)) / (sig(1.0) - sig(0.0))
    r = settings.reward_range * unit
    return float(r) if np.ndim(r) == 0 else r


def stage_reward(
    distance: float,
    stage: int,
    n_subgoals: int,
    reached: bool,
    settings: RewardSettings = RewardSettings(),
    env_success: bool = False,
) -> float:
    """Eq. (4) for one step.

    ``stage`` is the number of subgoals reached *before* this step (the target is subgoal
    ``stage``; ``stage == n_subgoals`` once all are reached and the target stays the last one).
    ``distance`` is measured after the step to that target; ``reached`` says whether it crossed
    ``theta_s`` on this step (only possible while ``stage < n_subgoals``), or, as an int, how many
    subgoals this step counted as reached (more than one only under ``settings.skip_ahead``): each
    pays ``stage_bonus``, and the step that completes the plan also pays ``final_bonus``.
    """
    if not 0 <= stage <= n_subgoals:
        raise ValueError(f"stage_reward: stage={stage} outside [0, n_subgoals={n_subgoals}]")
    r = float(shape_reward(distance, settings))
    unreached = n_subgoals - stage
    if settings.stage_term == "current":
        unreached = min(unreached, 1)
    r -= settings.unreached_penalty * unreached
    n_reached = int(reached)
    if n_reached:
        if stage + n_reached > n_subgoals:
            raise ValueError(f"stage_reward: {n_reached} subgoal(s) reached at stage {stage} of {n_subgoals}")
        r += settings.stage_bonus * n_reached
        if stage + n_reached == n_subgoals:
            r += settings.final_bonus
    if settings.pay_env_success and env_success:
        r += settings.env_success_bonus
    return r


# --------------------------------------------------------------------------- stage machines


@dataclass(frozen=True)
class StepOutcome:
    """What one step of the stage logic produced."""

    reward: float
    distance: float  #: to the target that was current during the step (px)
    stage: int  #: subgoals reached before the step
    reached: bool  #: a subgoal was reached on this step
    next_stage: int  #: subgoals reached after the step
    all_reached: bool  #: every subgoal has been reached (now or earlier)


@dataclass
class StageTracker:
    """Which subgoal is the current target; advances when it is met, by one stage, or past up to
    ``skip_ahead`` later subgoals when one of those is met first (the farthest met wins)."""

    subgoals: np.ndarray  #: (S, N, 2) pixel keypoints, in order
    #: the reward's settings; the tracker reads the ones that say when a subgoal is met:
    #: ``theta_s``, ``final_theta_s``, ``reach``, ``point_theta_s``, ``object_theta_s``, ``skip_ahead``
    settings: RewardSettings
    stage: int = 0
    #: how many subgoals the last :meth:`advance` counted as reached (0, 1, or more with skip_ahead)
    last_advance: int = 0

    def __post_init__(self) -> None:
        self.subgoals = np.asarray(self.subgoals, dtype=np.float64)
        if self.subgoals.ndim != 3 or self.subgoals.shape[-1] != 2 or self.subgoals.shape[0] < 1:
            raise ValueError(
                f"StageTracker.subgoals: expected (S>=1, N, 2) pixel keypoints, got {self.subgoals.shape}"
            )

    @property
    def n_subgoals(self) -> int:
        return int(self.subgoals.shape[0])

    @property
    def done(self) -> bool:
        return self.stage >= self.n_subgoals

    @property
    def target(self) -> np.ndarray:
        """The current target keypoints (the last subgoal once all are reached)."""
        return self.subgoals[min(self.stage, self.n_subgoals - 1)]

    def threshold(self, index: int) -> float:
        """The threshold (px) of subgoal ``index``: ``final_theta_s`` for the last one where set,
        else ``theta_s``."""
        st = self.settings
        if st.final_theta_s is not None and index >= self.n_subgoals - 1:
            return float(st.final_theta_s)
        return float(st.theta_s)

    def _meets(self, per_point: np.ndarray, d: float, index: int) -> bool:
        """Whether keypoints at ``per_point`` distances (mean ``d``) meet subgoal ``index``."""
        st = self.settings
        theta = self.threshold(index)
        if st.reach == "every":
            return bool(np.all(per_point < theta))
        return (d < theta and (st.point_theta_s is None or bool(np.all(per_point < st.point_theta_s)))
                and (st.object_theta_s is None or bool(per_point[0] < st.object_theta_s)))

    def advance(self, keypoints: np.ndarray) -> tuple[float, bool]:
        """Distance of ``keypoints`` to the current target, and whether a subgoal is reached (then
        advance; :attr:`last_advance` says by how many)."""
        kp, target = np.asarray(keypoints, dtype=np.float64), self.target
        if kp.shape != target.shape:
            d = keypoint_distance(kp, target)  # the general form (it raises on a wrong shape)
            per_point = np.linalg.norm(kp - target, axis=-1)
        else:  # the per-point distances once, for Eq. (3) and for the "every" test
            per_point = np.linalg.norm(kp - target, axis=-1)
            d = float(per_point.mean(axis=-1))
        self.last_advance = 0
        if self.done:
            return d, False
        for j in range(min(self.n_subgoals - 1, self.stage + self.settings.skip_ahead), self.stage, -1):
            later = np.linalg.norm(kp - self.subgoals[j], axis=-1)
            if self._meets(later, float(later.mean()), j):
                self.last_advance = j + 1 - self.stage
                break
        else:
            self.last_advance = int(self._meets(per_point, d, self.stage))
        self.stage += self.last_advance
        return d, self.last_advance > 0


class ReLAMReward:
    """The ReLAM reward as a small state machine: ``reset(subgoals)``, then ``step(keypoints)``.

    Used by :class:`relam.wrappers.ReLAMWrapper` online and by :func:`label_trajectory` offline.
    """

    def __init__(self, settings: RewardSettings = RewardSettings()):
        self.settings = settings
        self._tracker: StageTracker | None = None

    def reset(self, subgoals: np.ndarray) -> None:
        self._tracker = StageTracker(subgoals, self.settings)

    @property
    def tracker(self) -> StageTracker:
        if self._tracker is None:
            raise RuntimeError("ReLAMReward: call reset(subgoals) before step()")
        return self._tracker

    @property
    def stage(self) -> int:
        return self.tracker.stage

    @property
    def target(self) -> np.ndarray:
        return self.tracker.target

    @property
    def n_subgoals(self) -> int:
        return self.tracker.n_subgoals

    def step(self, keypoints: np.ndarray, env_success: bool = False) -> StepOutcome:
        """Reward for arriving at ``keypoints`` (N, 2) px; switches the target on success."""
        tr = self.tracker
        stage = tr.stage
        d, reached = tr.advance(keypoints)
        r = stage_reward(d, stage, tr.n_subgoals, tr.last_advance, self.settings, env_success)
        return StepOutcome(r, d, stage, reached, tr.stage, tr.done)


def label_trajectory(
    keypoint_track: np.ndarray,
    subgoals: np.ndarray,
    settings: RewardSettings = RewardSettings(),
    env_success: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offline labelling of a whole keypoint trajectory with the same logic as online.

    Args:
        keypoint_track: ``(T+1, N, 2)`` pixel keypoints, frame 0 = the initial frame.
        subgoals: ``(S, N, 2)`` pixel subgoals (without the initial keypoints).
        env_success: optional ``(T,)`` bool, only used when ``settings.pay_env_success``.

    Returns:
        ``rewards (T,) float32``, ``stages (T+1,) int64`` (subgoals reached before frame t, so
        ``stages[t]`` indexes the target during transition t), ``reached (T,) bool``.
    """
    track = np.asarray(keypoint_track, dtype=np.float64)
    sg = np.asarray(subgoals, dtype=np.float64)
    if track.ndim != 3 or track.shape[-1] != 2 or track.shape[0] < 1:
        raise ValueError(f"label_trajectory: keypoint_track must be (T+1, N, 2), got {track.shape}")
    if sg.ndim != 3 or sg.shape[1:] != track.shape[1:]:
        raise ValueError(
            f"label_trajectory: subgoals must be (S, N, 2) with the track's N={track.shape[1]}, got {sg.shape}"
        )
    T = track.shape[0] - 1
    if env_success is not None and np.shape(env_success) != (T,):
        raise ValueError(f"label_trajectory: env_success must be ({T},), got {np.shape(env_success)}")
    rew = ReLAMReward(settings)
    rew.reset(sg)
    rewards = np.zeros(T, np.float32)
    stages = np.zeros(T + 1, np.int64)
    reached = np.zeros(T, bool)
    for t in range(T):
        out = rew.step(track[t + 1], bool(env_success[t]) if env_success is not None else False)
        rewards[t], reached[t], stages[t + 1] = out.reward, out.reached, out.next_stage
    return rewards, stages, reached
