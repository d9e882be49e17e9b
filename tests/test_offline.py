"""relam.offline with ReLAM's labeller (relam.relam_method.ReLAMLabeller): labelling of a hand-made
trajectory, the dataset round trip, sanity stats."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from relam.offline import (
    LabelledTrajectory,
    OfflineDataset,
    label_demos,
    plot_reward_sanity,
    policy_images,
    reward_sanity,
)
from relam.relam_method import ReLAMLabeller
from relam.reward import RewardSettings
from relam.wrappers import normalise_points

SIZE = 16
# one keypoint; subgoal 1 = (4, 0), subgoal 2 = (4, 3)
PLAN = np.array([[[0.0, 0.0]], [[4.0, 0.0]], [[4.0, 3.0]]])
TRACK = np.array([[[0.0, 0.0]], [[2.0, 0.0]], [[4.0, 0.0]], [[4.0, 2.0]], [[4.0, 3.0]], [[4.0, 3.0]]])
SETTINGS = RewardSettings(shape="linear", d_max=10.0, reward_range=1.0, theta_s=1.0, stage_bonus=2.0,
                          final_bonus=10.0, unreached_penalty=1.0)


@dataclass
class FakeDemo:
    frames: np.ndarray
    actions: np.ndarray
    env_reward: np.ndarray
    success: np.ndarray
    task: str = "fake-task"
    seed: int = 7
    noisy: bool = False


def make_demo(T: int = 5, seed: int = 7, noisy: bool = False, size: int = SIZE, ok: bool = True) -> FakeDemo:
    rng = np.random.default_rng(seed)
    succ = np.zeros(T, bool)
    succ[-1] = ok
    return FakeDemo(frames=rng.integers(0, 256, (T + 1, size, size, 3), dtype=np.uint8),
                    actions=rng.normal(size=(T, 8)).astype(np.float32),
                    env_reward=np.linspace(0, 1, T).astype(np.float32), success=succ, seed=seed, noisy=noisy)


class Generator:  # the anticipation model's interface
    def __init__(self):
        self.calls = []

    def generate(self, initial_frame, task):
        self.calls.append((initial_frame.copy(), task))
        return PLAN


class Planner:  # the SubgoalPlanner interface
    def __init__(self):
        self.seeds = []

    def plan(self, initial_frame, task, *, env=None, seed=None):
        self.seeds.append(seed)
        return PLAN


class FakeTracker:
    name = "fake"

    def __init__(self):
        self.queries = []

    def track(self, demo, query_uv):
        self.queries.append(np.asarray(query_uv).copy())
        return TRACK[: len(demo.actions) + 1]


def test_relam_labeller_hand_computed_rewards_and_stages():
    demo = make_demo()
    gen, tracker = Generator(), FakeTracker()
    lab = ReLAMLabeller(gen, tracker=tracker, settings=SETTINGS).label(demo)
    # step by step (linear shape -d/10, -1 per unreached subgoal, +2 stage, +10 final):
    # (2,0): d=2 -> -0.2 - 2 = -2.2 ; (4,0): reach g1 -> 0 - 2 + 2 = 0 ; (4,2): d=1 (not < 1) -> -0.1 - 1
    # (4,3): reach g2 -> 0 - 1 + 2 + 10 = 11 ; (4,3): all reached, d=0 -> 0
    np.testing.assert_allclose(lab.rewards, [-2.2, 0.0, -1.1, 11.0, 0.0], atol=1e-6)
    np.testing.assert_array_equal(lab.info["stages"], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(lab.info["reached"], [False, True, False, True, False])
    # planner saw frame 0 and the task; tracker queried the plan's row 0
    np.testing.assert_array_equal(gen.calls[0][0], demo.frames[0])
    assert gen.calls[0][1] == "fake-task"
    np.testing.assert_array_equal(tracker.queries[0], PLAN[0])
    # observation: current keypoints and the target of the stage at each frame (last once all reached)
    g1, g2 = normalise_points(PLAN[1], SIZE), normalise_points(PLAN[2], SIZE)
    np.testing.assert_allclose(lab.extra_obs["target"], np.stack([g1, g1, g2, g2, g2, g2]))
    np.testing.assert_allclose(lab.extra_obs["keypoints"], np.stack([normalise_points(p, SIZE) for p in TRACK]))
    np.testing.assert_allclose(g1, [(4.5 / 16) * 2 - 1, (0.5 / 16) * 2 - 1])


def test_relam_labeller_accepts_subgoal_planner_with_seed():
    planner = Planner()
    lab = ReLAMLabeller(planner, tracker=FakeTracker(), settings=SETTINGS).label(make_demo(seed=123))
    assert planner.seeds == [123]
    assert lab.rewards.shape == (5,)


def test_relam_labeller_rejects_bad_planner_and_bad_plan():
    with pytest.raises(TypeError, match="generate"):
        ReLAMLabeller(object(), tracker=FakeTracker()).label(make_demo())

    class Bad:
        def generate(self, frame, task):
            return np.zeros((1, 1, 2))  # no subgoal

    with pytest.raises(ValueError, match="S\\+1, N, 2"):
        ReLAMLabeller(Bad(), tracker=FakeTracker()).label(make_demo())


def test_labelled_trajectory_validation_names_the_field():
    with pytest.raises(ValueError, match="rewards"):
        LabelledTrajectory(np.zeros(4)).validate(5)
    with pytest.raises(ValueError, match="extra_obs\\['k'\\]"):
        LabelledTrajectory(np.zeros(5), {"k": np.zeros((5, 2))}).validate(5)


def _dataset() -> OfflineDataset:
    demos = [make_demo(5, seed=1), make_demo(4, seed=2, noisy=True, ok=False), make_demo(5, seed=3, noisy=True)]
    return label_demos(demos, ReLAMLabeller(Generator(), tracker=FakeTracker(), settings=SETTINGS),
                       image_size=8, progress=False)


def test_dataset_layout_and_round_trip(tmp_path):
    ds = _dataset()
    assert ds.n_trajectories == 3 and ds.n_transitions == 14
    assert ds.observations["image"].shape == (17, 8, 8, 3) and ds.observations["image"].dtype == np.uint8
    assert ds.observations["keypoints"].shape == (17, 2) and ds.observations["target"].shape == (17, 2)
    np.testing.assert_array_equal(ds.noisy, [False, True, True])
    np.testing.assert_array_equal(ds.success, [True, False, True])
    np.testing.assert_array_equal(ds.seeds, [1, 2, 3])
    assert not ds.terminals.any()
    np.testing.assert_array_equal(np.flatnonzero(ds.timeouts), [4, 8, 13])
    obs, nxt = ds.transition_indices()
    np.testing.assert_array_equal(obs[:6], [0, 1, 2, 3, 4, 6])
    np.testing.assert_array_equal(nxt - obs, 1)
    np.testing.assert_array_equal(ds.info["stage"][:5], [0, 0, 1, 1, 2])
    # the second trajectory is 4 steps: the hand-made track cut short -> rewards -2.2, 0, -1.1, 11
    np.testing.assert_allclose(ds.returns(), [7.7, 7.7, 7.7], atol=1e-5)

    path = ds.save(tmp_path / "ds.npz")
    back = OfflineDataset.load(path)
    for k, v in ds.observations.items():
        np.testing.assert_array_equal(back.observations[k], v)
    for k in ("actions", "rewards", "terminals", "timeouts", "lengths", "success", "noisy", "seeds", "env_reward"):
        np.testing.assert_array_equal(getattr(back, k), getattr(ds, k))
        assert getattr(back, k).dtype == getattr(ds, k).dtype
    np.testing.assert_array_equal(back.info["stage"], ds.info["stage"])
    assert back.meta == ds.meta and back.meta["labeller"] == "relam"


def test_dataset_rejects_inconsistent_arrays():
    ds = _dataset()
    with pytest.raises(ValueError, match="rewards"):
        OfflineDataset(observations=ds.observations, actions=ds.actions, rewards=ds.rewards[:-1],
                       terminals=ds.terminals, timeouts=ds.timeouts, lengths=ds.lengths, success=ds.success,
                       noisy=ds.noisy, seeds=ds.seeds, env_reward=ds.env_reward)


def test_policy_images_match_online_downsampling():
    """The dataset's images are what PolicyImageSize gives the online policy, bit for bit."""
    import gymnasium as gym

    from relam.wrappers import PolicyImageSize

    class DictEnv(gym.Env):
        observation_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (3, 30, 30), np.uint8)})
        action_space = gym.spaces.Box(-1, 1, (1,))

    online = PolicyImageSize(DictEnv(), 8)
    frames = np.random.default_rng(0).integers(0, 256, (3, 30, 30, 3), dtype=np.uint8)  # not a multiple of 8
    small = policy_images(frames, 8)
    assert small.shape == (3, 8, 8, 3)
    for f, s in zip(frames, small):
        np.testing.assert_array_equal(online.observation({"image": np.transpose(f, (2, 0, 1))})["image"],
                                      np.transpose(s, (2, 0, 1)))
    assert policy_images(frames, None).shape == frames.shape


def test_reward_sanity_stats_and_figure(tmp_path):
    ds = _dataset()
    st = reward_sanity(ds)
    assert st["n_expert"] == 1 and st["n_noisy"] == 2 and st["n_noisy_failure"] == 1
    assert st["return_expert"] == pytest.approx(7.7, abs=1e-5)
    # rewards per step vs env reward (linspace) -- a known rank correlation on the pooled steps
    from scipy.stats import spearmanr

    assert st["spearman_step"] == pytest.approx(spearmanr(ds.rewards, ds.env_reward).statistic)
    out = plot_reward_sanity(ds, tmp_path / "fig.png")
    assert out.stat().st_size > 1000


def test_reward_sanity_counts_subgoals_reached():
    st = reward_sanity(_dataset())
    # trajectories 1 and 3 (5 steps) reach both subgoals; trajectory 2 (4 steps) reaches both too
    assert st["subgoals_reached_expert"] == 2.0 and st["subgoal_fraction_noisy"] == 1.0


def test_budget_iql_encoder_reaches_iql_and_stays_out_of_old_keys(monkeypatch, tmp_path):
    """``iql_encoder`` (a late budget field: absent from run keys at its default) is what
    run_offline gives train_iql."""
    from types import SimpleNamespace

    import relam.offline as offline
    import relam.rl.iql as iql
    from relam.methods import Budget

    plain = Budget(train_steps=10, eval_every=5, eval_episodes=1)
    assert plain.iql_encoder == "separate" and "iql_encoder" not in plain.key_dict()
    frozen = Budget(train_steps=10, eval_every=5, eval_episodes=1, iql_encoder="frozen")
    assert frozen.key_dict()["iql_encoder"] == "frozen"
    with pytest.raises(ValueError, match="iql_encoder"):
        Budget(train_steps=10, eval_every=5, eval_episodes=1, iql_encoder="pretrained")

    seen = {}

    def fake_train(dataset, settings, out_dir, eval_fn=None, progress=True):
        seen["settings"] = settings
        return iql.IQLResult(0.5, [(10, 0.5)], [], None, tmp_path, 10)

    monkeypatch.setattr(offline, "label_offline_dataset", lambda *a, **k: _dataset())
    monkeypatch.setattr(offline, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(iql, "train_iql", fake_train)
    ctx = SimpleNamespace(task_spec=lambda: SimpleNamespace(name="PushCube-v1"), budget=frozen, seed=3,
                          progress=False, out_dir=str(tmp_path / "run"), horizon=lambda: 5)
    res = offline.run_offline(ctx, ReLAMLabeller(Planner(), tracker=FakeTracker()), lambda: None)
    s = seen["settings"]
    assert (s.encoder, s.steps_per_epoch, s.epochs, s.seed) == ("frozen", 5, 2, 3) and res.success == 0.5


def test_recorded_robot_state_is_a_policy_input_only_when_the_budget_asks(monkeypatch, tmp_path):
    """Trajectories that recorded the robot's joint state (offline format 2) carry it as the
    ``proprio`` observation; run_offline trains on it (and wraps the evaluation env in RobotProprio)
    only with ``policy_input: image+points+proprio``, drops it otherwise, and refuses the input,
    naming the fix, when the set never recorded it."""
    from types import SimpleNamespace

    import relam.offline as offline
    import relam.rl.iql as iql
    from relam.methods import Budget

    demos = [make_demo(5, seed=1), make_demo(4, seed=2, noisy=True, ok=False)]
    for d in demos:
        d.proprio = np.arange((len(d.actions) + 1) * 3, dtype=np.float32).reshape(-1, 3) + d.seed
    labeller = ReLAMLabeller(Generator(), tracker=FakeTracker(), settings=SETTINGS)
    with_state = label_demos(demos, labeller, image_size=8, progress=False)
    assert with_state.observations["proprio"].shape == (11, 3)
    np.testing.assert_array_equal(with_state.observations["proprio"][6], demos[1].proprio[0])
    assert "proprio" not in _dataset().observations  # demos without it (format 1)
    assert sorted(with_state.without("proprio").observations) == ["image", "keypoints", "target"]

    seen = {}

    def fake_train(dataset, settings, out_dir, eval_fn=None, progress=True):
        seen["keys"] = sorted(dataset.observations)
        return iql.IQLResult(0.5, [(10, 0.5)], [], None, tmp_path, 10)

    monkeypatch.setattr(offline, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(iql, "train_iql", fake_train)

    def run(policy_input: str, data: OfflineDataset) -> None:
        monkeypatch.setattr(offline, "label_offline_dataset", lambda *a, **k: data)
        budget = Budget(train_steps=10, eval_every=5, eval_episodes=1, policy_input=policy_input)
        ctx = SimpleNamespace(task_spec=lambda: SimpleNamespace(name="PushCube-v1"), budget=budget, seed=0,
                              progress=False, out_dir=str(tmp_path / policy_input), horizon=lambda: 5)
        offline.run_offline(ctx, labeller, lambda: None)

    run("image+points", with_state)
    assert seen["keys"] == ["image", "keypoints", "target"]
    run("image+points+proprio", with_state)
    assert seen["keys"] == ["image", "keypoints", "proprio", "target"]
    with pytest.raises(ValueError, match=r"no recorded robot state.*relam offline-data PushCube-v1"):
        run("image+points+proprio", _dataset())


def test_subset_and_relabelled_sets_keep_their_trajectories_whole():
    """``subset`` keeps whole trajectories (frames, steps, per-trajectory fields, info) in the
    order asked; ``with_rewards`` replaces the rewards alone and says so in the meta."""
    ds = _dataset()
    sub = ds.subset([2, 0])
    assert sub.n_trajectories == 2 and sub.n_transitions == 10
    np.testing.assert_array_equal(sub.seeds, [3, 1])
    np.testing.assert_array_equal(sub.observations["image"][:6], ds.observations["image"][ds.obs_slice(2)])
    np.testing.assert_array_equal(sub.observations["keypoints"][6:], ds.observations["keypoints"][ds.obs_slice(0)])
    np.testing.assert_array_equal(sub.rewards[:5], ds.rewards[ds.step_slice(2)])
    np.testing.assert_array_equal(sub.info["stage"][5:], ds.info["stage"][ds.step_slice(0)])
    np.testing.assert_array_equal(np.flatnonzero(sub.timeouts), [4, 9])
    with pytest.raises(ValueError, match="no trajectories"):
        ds.subset([])

    dense = ds.with_rewards(ds.env_reward, "env_dense")
    np.testing.assert_array_equal(dense.rewards, ds.env_reward.astype(np.float32))
    np.testing.assert_array_equal(dense.actions, ds.actions)
    assert dense.meta["rewards"] == "env_dense" and "rewards" not in ds.meta
    with pytest.raises(ValueError, match="with_rewards"):
        ds.with_rewards(ds.rewards[:-1], "short")


def test_a_benchmark_transform_reaches_iql_and_a_spec_run_has_none(monkeypatch, tmp_path):
    """``RunContext.offline_transform`` (bench_offline_reference.py) replaces the labelled set that
    IQL trains on; the runner's contexts leave it None."""
    import dataclasses
    from types import SimpleNamespace

    import relam.offline as offline
    import relam.rl.iql as iql
    from relam.methods import Budget, RunContext

    assert {f.name: f.default for f in dataclasses.fields(RunContext)}["offline_transform"] is None
    seen = {}

    def fake_train(dataset, settings, out_dir, eval_fn=None, progress=True):
        seen["rewards"], seen["n"] = dataset.rewards.copy(), dataset.n_trajectories
        return iql.IQLResult(0.5, [(10, 0.5)], [], None, tmp_path, 10)

    monkeypatch.setattr(offline, "label_offline_dataset", lambda *a, **k: _dataset())
    monkeypatch.setattr(offline, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(iql, "train_iql", fake_train)
    budget = Budget(train_steps=10, eval_every=5, eval_episodes=1)
    labeller = ReLAMLabeller(Planner(), tracker=FakeTracker())

    def run(transform):
        ctx = SimpleNamespace(task_spec=lambda: SimpleNamespace(name="PushCube-v1"), budget=budget, seed=0,
                              progress=False, out_dir=str(tmp_path / "run"), horizon=lambda: 5,
                              offline_transform=transform)
        return offline.run_offline(ctx, labeller, lambda: None)

    run(None)
    np.testing.assert_array_equal(seen["rewards"], _dataset().rewards)
    res = run(lambda ds: ds.subset(np.flatnonzero(~ds.noisy)).with_rewards(np.zeros(5), "zero"))
    assert seen["n"] == 1 and not seen["rewards"].any()
    assert res.metrics["label_return_expert"] == 0.0 and "label_return_noisy" not in res.metrics


def test_reference_benchmark_variants_relabel_as_they_say():
    """bench_offline_reference.py: ``dense`` trains on the simulator's reward, ``bc`` on the experts
    alone at a zero reward, ``labels`` on the method's own; an unknown name is refused up front."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_offline_reference.py"
    spec = importlib.util.spec_from_file_location("bench_offline_reference", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ds = _dataset()
    assert bench.reference_transform("labels") is None
    dense = bench.reference_transform("dense")(ds)
    np.testing.assert_array_equal(dense.rewards, ds.env_reward)
    bc = bench.reference_transform("bc")(ds)
    assert bc.n_trajectories == int((~ds.noisy).sum()) and not bc.noisy.any() and not bc.rewards.any()
    with pytest.raises(ValueError, match="--variants: unknown variant 'dnese'"):
        bench.main(["--variants", "dense,dnese"])
    assert bench.budget_fields(["iql_encoder=shared", "train_steps=20000"]) == {"iql_encoder": "shared",
                                                                                 "train_steps": 20000}
    with pytest.raises(ValueError, match="--budget 'iql_encodr=shared'"):
        bench.budget_fields(["iql_encodr=shared"])
