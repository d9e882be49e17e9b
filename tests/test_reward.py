"""Known-answer tests for relam.reward (Eq. 3-5, A.2) on hand-made keypoint paths."""

from __future__ import annotations

import numpy as np
import pytest

from relam.reward import (
    SHAPES,
    ReLAMReward,
    RewardSettings,
    keypoint_distance,
    label_trajectory,
    shape_reward,
    stage_reward,
)

# two keypoints; subgoal 1 = +30 px in x, subgoal 2 = subgoal 1 + 45 px in y (a turn)
START = np.array([[10.0, 10.0], [20.0, 10.0]])
SG = np.stack([START + [30.0, 0.0], START + [30.0, 45.0]])


def _line(a: np.ndarray, b: np.ndarray, speed: float) -> list[np.ndarray]:
    """Rigid straight move from a to b at `speed` px/step, excluding a, including b."""
    n = int(np.ceil(np.linalg.norm((b - a)[0]) / speed))
    return [a + (b - a) * (i / n) for i in range(1, n + 1)]


def _pad(frames: list[np.ndarray], T: int) -> np.ndarray:
    frames = frames[: T + 1]
    return np.stack(frames + [frames[-1]] * (T + 1 - len(frames)))


T = 80


def expert_path() -> np.ndarray:
    return _pad([START] + _line(START, SG[0], 3.0) + _line(SG[0], SG[1], 3.0), T)


def stop_after_first() -> np.ndarray:
    return _pad([START] + _line(START, SG[0], 3.0), T)


def hold_still() -> np.ndarray:
    return _pad([START], T)


def random_walk(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 3.0, size=(T, 1, 2))
    return np.concatenate([START[None], START[None] + np.cumsum(steps, axis=0)])


def test_distance_eq3_known_answer():
    cur = np.array([[0.0, 0.0], [0.0, 0.0]])
    tgt = np.array([[3.0, 4.0], [0.0, 1.0]])
    assert keypoint_distance(cur, tgt) == pytest.approx(3.0)  # (5 + 1) / 2
    batch = keypoint_distance(np.stack([cur, tgt]), tgt)
    np.testing.assert_allclose(batch, [3.0, 0.0])
    with pytest.raises(ValueError, match="N, 2"):
        keypoint_distance(np.zeros((2, 3)), np.zeros((2, 3)))


def test_piecewise_values_and_slopes():
    s = RewardSettings(d_max=100.0)
    # knots at 10 and 40 px, values -0.2, -0.5, -1.0 at 100 px
    assert shape_reward(0.0, s) == pytest.approx(0.0)
    assert shape_reward(10.0, s) == pytest.approx(-0.2)
    assert shape_reward(5.0, s) == pytest.approx(-0.1)
    assert shape_reward(40.0, s) == pytest.approx(-0.5)
    assert shape_reward(70.0, s) == pytest.approx(-0.75)
    assert shape_reward(100.0, s) == pytest.approx(-1.0)
    assert shape_reward(500.0, s) == pytest.approx(-1.0)  # clipped beyond d_max
    d = np.array([1.0, 20.0, 60.0])
    slopes = -(shape_reward(d + 0.5, s) - shape_reward(d - 0.5, s))
    np.testing.assert_allclose(slopes, [0.02, 0.01, 0.5 / 60.0])
    assert slopes[0] > slopes[1] > slopes[2]  # slope grows as distance shrinks


@pytest.mark.parametrize("shape", SHAPES)
def test_all_shapes_same_range_and_monotone(shape):
    s = RewardSettings(shape=shape, d_max=50.0, reward_range=2.0)
    d = np.linspace(0.0, 50.0, 201)
    r = shape_reward(d, s)
    assert r[0] == pytest.approx(0.0, abs=1e-12)
    assert r[-1] == pytest.approx(-2.0)
    assert np.all(np.diff(r) < 0)


def test_shape_slope_profiles():
    d = np.array([2.0, 25.0, 48.0])

    def slope(shape):
        s = RewardSettings(shape=shape, d_max=50.0)
        return -(shape_reward(d + 0.1, s) - shape_reward(d - 0.1, s)) / 0.2

    np.testing.assert_allclose(slope("linear"), 1 / 50.0)  # constant
    e = slope("exponential")
    assert e[0] > e[1] > e[2]
    lg = slope("logistic")
    assert lg[1] > lg[0] and lg[1] > lg[2]  # steepest in the middle


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="shape"):
        RewardSettings(shape="cubic")
    with pytest.raises(ValueError, match="piecewise_values"):
        RewardSettings(piecewise_values=(-0.6, -0.5))  # slope would grow with distance
    with pytest.raises(ValueError, match="d_max"):
        RewardSettings(d_max=0.0)


def test_stage_reward_bonuses_and_penalty():
    s = RewardSettings(d_max=100.0, stage_bonus=2.0, final_bonus=10.0, unreached_penalty=1.0)
    # stage 0 of 2, not reached, at distance 10: -0.2 - 2
    assert stage_reward(10.0, 0, 2, False, s) == pytest.approx(-2.2)
    # reaches subgoal 1 of 2: -1 (one unreached before the step) ... plus stage bonus
    assert stage_reward(1.0, 1, 2, True, s) == pytest.approx(-0.02 - 1.0 + 2.0 + 10.0)
    assert stage_reward(1.0, 0, 2, True, s) == pytest.approx(-0.02 - 2.0 + 2.0)
    # after the end: only the distance term
    assert stage_reward(10.0, 2, 2, False, s) == pytest.approx(-0.2)
    # env success pays only when switched on
    assert stage_reward(10.0, 2, 2, False, s, env_success=True) == pytest.approx(-0.2)
    s2 = RewardSettings(d_max=100.0, pay_env_success=True, env_success_bonus=3.0)
    assert stage_reward(10.0, 2, 2, False, s2, env_success=True) == pytest.approx(2.8)


def test_stage_switching_on_expert_path():
    s = RewardSettings(theta_s=1.0)
    rewards, stages, reached = label_trajectory(expert_path(), SG, s)
    assert rewards.shape == (T,) and stages.shape == (T + 1,) and reached.shape == (T,)
    # 10 steps of 3 px reach subgoal 1 on transition 9, 15 more reach subgoal 2 on transition 24
    np.testing.assert_array_equal(np.flatnonzero(reached), [9, 24])
    assert stages[0] == 0 and stages[10] == 1 and stages[25] == 2 and stages[-1] == 2
    assert np.all(np.diff(stages) >= 0)
    # on transition 10 the target is subgoal 2, 42 px away
    assert rewards[10] == pytest.approx(shape_reward(42.0, s) - 1.0)
    assert rewards[9] == pytest.approx(0.0 - 2.0 + s.stage_bonus)  # 2 unreached before the step
    assert rewards[24] == pytest.approx(0.0 - 1.0 + s.stage_bonus + s.final_bonus)
    # online stepping gives the same labels
    rew = ReLAMReward(s)
    rew.reset(SG)
    online = [rew.step(k) for k in expert_path()[1:]]
    np.testing.assert_allclose([o.reward for o in online], rewards, rtol=1e-6)
    assert online[-1].all_reached and rew.stage == 2


@pytest.mark.parametrize("shape", SHAPES)
def test_return_orders_reference_behaviours(shape):
    s = RewardSettings(shape=shape)

    def ret(track, gamma=1.0):
        r, _, _ = label_trajectory(track, SG, s)
        return float(np.sum(r * gamma ** np.arange(len(r))))

    for gamma in (1.0, 0.99):
        expert, stop1, hold = ret(expert_path(), gamma), ret(stop_after_first(), gamma), ret(hold_still(), gamma)
        assert expert > stop1 > hold, (shape, gamma, expert, stop1, hold)
        # a random walk is undirected: on average it drifts away from any fixed target.  With a
        # strongly convex shape (exponential) the rare passes near the target outweigh that, so
        # "hold still > random" is a property of the paper's piecewise / linear shapes only.
        random = float(np.mean([ret(random_walk(seed), gamma) for seed in range(32)]))
        if shape in ("piecewise_linear", "linear", "logistic"):
            assert hold > random, (shape, gamma, hold, random)


def test_stage_term_current_pays_one_penalty_until_done():
    """stage_term "current" costs unreached_penalty a step while any subgoal is unreached (not one
    per unreached subgoal), and nothing once all are reached; the stages are the same."""
    plain, current = RewardSettings(), RewardSettings(stage_term="current")
    for track in (expert_path(), stop_after_first(), hold_still(), random_walk(0)):
        a, sa, _ = label_trajectory(track, SG, plain)
        b, sb, _ = label_trajectory(track, SG, current)
        assert sa.tolist() == sb.tolist()
        left = len(SG) - sa[:-1]  # unreached subgoals during each step
        np.testing.assert_allclose(b - a, (left - np.minimum(left, 1)) * plain.unreached_penalty, atol=1e-5)
    # within a segment every step still costs at least the penalty: "reach it fast" holds
    r, stages, _ = label_trajectory(hold_still(), SG, current)
    assert np.all(r <= -current.unreached_penalty) and stages.max() == 0
    assert "stage_term" not in plain.to_dict() and current.to_dict()["stage_term"] == "current"
    with pytest.raises(ValueError, match="stage_term"):
        RewardSettings(stage_term="reached")


def test_without_unreached_penalty_order_breaks():
    """The reason for the penalty: a plain distance-to-current-subgoal reward punishes progress."""
    s = RewardSettings(unreached_penalty=0.0, stage_bonus=0.0, final_bonus=0.0)
    ret = lambda tr: float(label_trajectory(tr, SG, s)[0].sum())  # noqa: E731
    assert ret(stop_after_first()) < ret(hold_still())
    assert not s.orders_stages and RewardSettings().orders_stages


def test_label_trajectory_validates_shapes():
    with pytest.raises(ValueError, match="keypoint_track"):
        label_trajectory(np.zeros((5, 2)), SG)
    with pytest.raises(ValueError, match="subgoals"):
        label_trajectory(expert_path(), np.zeros((2, 3, 2)))
    with pytest.raises(RuntimeError, match="reset"):
        ReLAMReward().step(START)


def test_reach_every_needs_each_keypoint_mean_does_not():
    """One point 8 px off and three on target: mean distance 2 px < theta_s, but not every point."""
    target = np.array([[[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [30.0, 0.0]]])
    kp = target[0].copy()
    kp[0, 0] += 8.0
    every = ReLAMReward(RewardSettings(theta_s=6.0))
    every.reset(target)
    assert RewardSettings().reach == "every"
    out = every.step(kp)
    assert out.distance == pytest.approx(2.0) and not out.reached and out.next_stage == 0
    mean = ReLAMReward(RewardSettings(theta_s=6.0, reach="mean"))
    mean.reset(target)
    assert mean.step(kp).reached
    kp[0, 0] = 5.9  # now every point is within 6 px
    assert every.step(kp).reached
    with pytest.raises(ValueError, match="reach"):
        RewardSettings(reach="any")


def test_point_theta_s_bounds_the_point_the_mean_leaves_behind():
    """Door's failure under the mean: three arm points on target, the door point 20 px off (mean
    5 px < theta_s). A per-point bound of 12 px refuses it, and accepts the point at 10 px."""
    target = np.array([[[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [30.0, 0.0]]])
    kp = target[0].copy()
    kp[0, 0] += 20.0
    loose = ReLAMReward(RewardSettings(theta_s=6.0, reach="mean"))
    loose.reset(target)
    assert loose.step(kp).reached
    bounded = ReLAMReward(RewardSettings(theta_s=6.0, reach="mean", point_theta_s=12.0))
    bounded.reset(target)
    assert not bounded.step(kp).reached
    kp[0, 0] = 10.0
    assert bounded.step(kp).reached
    # left out of the settings' key at its default, so no labelled dataset's key moves
    assert "point_theta_s" not in RewardSettings().to_dict()
    assert RewardSettings(reach="mean", point_theta_s=12.0).to_dict()["point_theta_s"] == 12.0
    with pytest.raises(ValueError, match="point_theta_s"):
        RewardSettings(point_theta_s=0.0)
    with pytest.raises(ValueError, match="must be > 0"):
        RewardSettings(reach="mean", point_theta_s=0.0)
    with pytest.raises(ValueError, match="reach='mean'"):  # meaningless with "every": refused, not ignored
        RewardSettings(point_theta_s=12.0)



def test_final_theta_s_tightens_the_last_subgoal_only():
    """The button case: every point 4 px off the last subgoal meets theta_s = 6 but not a last
    threshold of 2; earlier subgoals keep theta_s."""
    s = RewardSettings(theta_s=6.0, final_theta_s=2.0)
    rew = ReLAMReward(s)
    rew.reset(SG)
    assert rew.step(SG[0] + 4.0).reached  # subgoal 1 of 2: theta_s applies
    assert not rew.step(SG[1] + 4.0).reached  # the last: 4 px is not within 2
    out = rew.step(SG[1] + 1.0)  # 1.4 px
    assert out.reached and out.all_reached
    plain = ReLAMReward(RewardSettings(theta_s=6.0))
    plain.reset(SG)
    assert plain.step(SG[0] + 4.0).reached and plain.step(SG[1] + 4.0).all_reached
    # labelling offline follows the same rule
    track = np.stack([START, SG[0] + 4.0, SG[1] + 4.0])
    assert label_trajectory(track, SG, s)[1].tolist() == [0, 1, 1]
    assert label_trajectory(track, SG, RewardSettings(theta_s=6.0))[1].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="final_theta_s"):
        RewardSettings(final_theta_s=0.0)


def test_skip_ahead_meets_a_later_subgoal_directly():
    """A policy that cuts the corner of a turn (never within theta_s of subgoal 1) but meets
    subgoal 2: strict order keeps it at stage 0; skip_ahead = 1 counts both as reached on that
    step and pays both stage bonuses and the final bonus."""
    corner = SG[0] + [0.0, 20.0]  # 20 px off subgoal 1, on the way to subgoal 2
    track = np.stack([START, corner, SG[1] + 1.0])
    strict = RewardSettings(theta_s=6.0)
    skip = RewardSettings(theta_s=6.0, skip_ahead=1)
    assert label_trajectory(track, SG, strict)[1].tolist() == [0, 0, 0]
    rewards, stages, reached = label_trajectory(track, SG, skip)
    assert stages.tolist() == [0, 0, 2] and reached.tolist() == [False, True]
    d = keypoint_distance(SG[1] + 1.0, SG[0])  # the distance term is still to the target of the step
    assert rewards[1] == pytest.approx(float(shape_reward(d, skip)) - 2 * skip.unreached_penalty
                                       + 2 * skip.stage_bonus + skip.final_bonus)
    # the farthest subgoal within reach wins; one beyond reach does not count
    sg3 = np.stack([SG[0], SG[1], SG[1] + [40.0, 0.0]])
    rew = ReLAMReward(RewardSettings(theta_s=6.0, skip_ahead=1))
    rew.reset(sg3)
    assert not rew.step(sg3[2]).reached  # subgoal 3 is two past the target
    out = rew.step(sg3[1])
    assert out.reached and out.next_stage == 2 and rew.tracker.last_advance == 2
    # the last subgoal keeps its own threshold when it is skipped into
    tight = ReLAMReward(RewardSettings(theta_s=6.0, final_theta_s=2.0, skip_ahead=1))
    tight.reset(SG)
    assert not tight.step(SG[1] + 4.0).reached and tight.step(SG[1] + 1.0).all_reached


def test_skip_ahead_validates_and_keeps_old_keys():
    assert "skip_ahead" not in RewardSettings().to_dict()  # labelled datasets keep their keys
    assert RewardSettings(skip_ahead=2).to_dict()["skip_ahead"] == 2
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="skip_ahead"):
            RewardSettings(skip_ahead=bad)


def _reference_rewards(track, subgoals, s):
    """The online reward as written before issue 21's fast path (array round trips, distances
    computed twice): keypoint_distance + the array form of shape_reward + the per-point test."""
    stage, out = 0, []
    n = len(subgoals)
    for kp in np.asarray(track, np.float64)[1:]:
        target = subgoals[min(stage, n - 1)]
        d = keypoint_distance(kp, target)
        per_point = np.linalg.norm(kp - target, axis=-1)
        close = d < s.theta_s if s.reach == "mean" else bool(np.all(per_point < s.theta_s))
        reached = stage < n and close
        r = float(shape_reward(np.asarray(d), s)) - s.unreached_penalty * (n - stage)
        if reached:
            r += s.stage_bonus + (s.final_bonus if stage + 1 == n else 0.0)
            stage += 1
        out.append((r, d, stage))
    return out


@pytest.mark.parametrize("shape", ["piecewise_linear", "linear", "exponential", "logistic"])
@pytest.mark.parametrize("reach", ["every", "mean"])
def test_scalar_fast_path_is_bit_identical_to_the_array_form(shape, reach):
    """Issue 21: the per-step reward takes a float fast path; it must equal the array arithmetic
    bit for bit (distances, rewards, stage switches)."""
    s = RewardSettings(shape=shape, reach=reach)
    d = np.concatenate([[0.0, 1e-12, 6.4, 64.0, 64.0 + 1e-9, 500.0], np.random.default_rng(0).uniform(0, 90, 500)])
    for x in d:
        assert shape_reward(float(x), s) == float(shape_reward(np.asarray(x), s))
    rng = np.random.default_rng(1)
    subgoals = rng.uniform(10, 110, (4, 4, 2))
    # a track that walks through the subgoals with noise, so every stage is reached on the way
    way = np.concatenate([np.linspace(a, b, 15) for a, b in zip(np.concatenate([subgoals[:1] + 30, subgoals[:-1]]), subgoals)])
    track = (way + rng.normal(0, 1.5, way.shape)).astype(np.float32)
    rew = ReLAMReward(s)
    rew.reset(subgoals)
    got = [(o.reward, o.distance, o.next_stage) for o in (rew.step(kp) for kp in np.asarray(track, np.float64)[1:])]
    assert got == _reference_rewards(track, subgoals, s)
    assert got[-1][2] >= 2  # the walk reached subgoals (stage switches were compared too)
    with pytest.raises(ValueError, match="finite"):
        shape_reward(float("nan"), s)
    with pytest.raises(ValueError, match="finite"):
        shape_reward(-1.0, s)


def test_object_theta_s_bounds_the_object_point_alone():
    """The object point (the first keypoint) must be within object_theta_s, while an arm point may
    still lag as far as the mean allows: the door's failure (door point 16-62 px behind, arm on
    target) is refused, a turn passed with one arm point 9 px off is not."""
    target = np.array([[[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [30.0, 0.0]]])
    settings = RewardSettings(theta_s=6.0, reach="mean", object_theta_s=6.0)
    door_behind = target[0].copy()
    door_behind[0, 0] += 20.0  # mean 5 px: met under the mean alone
    reward = ReLAMReward(settings)
    reward.reset(target)
    assert not reward.step(door_behind).reached
    arm_off = target[0].copy()
    arm_off[1, 1] += 9.0  # an arm point 9 px off, the object point on target: mean 2.25 px
    assert reward.step(arm_off).reached
    assert "object_theta_s" not in RewardSettings().to_dict()
    assert settings.to_dict()["object_theta_s"] == 6.0
    with pytest.raises(ValueError, match="object_theta_s"):
        RewardSettings(object_theta_s=6.0)  # reach "every" already bounds every point
    with pytest.raises(ValueError, match="object_theta_s"):
        RewardSettings(reach="mean", object_theta_s=-1.0)
