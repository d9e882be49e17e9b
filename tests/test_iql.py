"""relam.rl.iql: the loss pieces, one update, training with checkpoints/resume, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from relam.offline import OfflineDataset
from relam.rl.iql import (
    IQL,
    IQLPolicy,
    IQLSettings,
    awr_weights,
    evaluate_policy,
    expectile_loss,
    load_policy,
    resolve_device,
    reward_scale,
    train_iql,
)

IMG = 36  # the smallest side the (8,4,3)/(4,2,1) CNN accepts with a 1x1 map left


def tiny_dataset(seed: int = 0, image: bool = True, lengths=(6, 5), keys=("keypoints", "target")) -> OfflineDataset:
    rng = np.random.default_rng(seed)
    T, F = sum(lengths), sum(lengths) + len(lengths)
    obs = {"image": rng.integers(0, 256, (F, IMG, IMG, 3), dtype=np.uint8)}
    obs.update({k: rng.normal(size=(F, 4)).astype(np.float32) for k in keys})
    return OfflineDataset(
        observations=obs, actions=rng.normal(size=(T, 3)).astype(np.float32),
        rewards=rng.normal(size=T).astype(np.float32), terminals=np.zeros(T, bool), timeouts=np.zeros(T, bool),
        lengths=np.asarray(lengths), success=np.zeros(len(lengths), bool), noisy=np.zeros(len(lengths), bool),
        seeds=np.arange(len(lengths)), env_reward=np.zeros(T, np.float32), meta={"task": "tiny"})


SMALL = dict(batch_size=8, steps_per_epoch=3, hidden=(32,), image_dim=32, point_hidden=(16,))


def test_expectile_loss_known_answers():
    d = th.tensor([1.0, -1.0])
    assert expectile_loss(d, 0.7).item() == pytest.approx((0.7 + 0.3) / 2)
    assert expectile_loss(th.tensor([2.0]), 0.9).item() == pytest.approx(0.9 * 4)
    assert expectile_loss(th.tensor([-2.0]), 0.9).item() == pytest.approx(0.1 * 4)
    # the minimiser over a constant v of E|tau - 1(x - v < 0)|(x - v)^2 on {0, 1} is tau (expectile)
    v = th.zeros((), requires_grad=True)
    opt = th.optim.SGD([v], lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        expectile_loss(th.tensor([0.0, 1.0]) - v, 0.7).backward()
        opt.step()
    assert v.item() == pytest.approx(0.7, abs=1e-4)


def test_awr_weights_and_reward_scale():
    w = awr_weights(th.tensor([0.0, 1.0, 10.0]), 3.0, 100.0)
    np.testing.assert_allclose(w.numpy(), [1.0, np.exp(3.0), 100.0], rtol=1e-6)
    # returns 3 and -1 over lengths 2 and 2: spread 4, mean length 2 -> 0.5
    assert reward_scale(np.array([1.0, 2.0, -1.0, 0.0]), np.array([2, 2])) == pytest.approx(0.5)
    assert reward_scale(np.zeros(4), np.array([2, 2])) == 1.0
    assert reward_scale(np.ones(4), np.array([2, 2]), 2.5) == 2.5


def test_settings_validation_names_the_field():
    with pytest.raises(ValueError, match="expectile"):
        IQLSettings(expectile=1.0)
    with pytest.raises(ValueError, match="reward_scale"):
        IQLSettings(reward_scale="big")


def _batch(ds: OfflineDataset, n: int = 8):
    obs_i, nxt_i = ds.transition_indices()
    b = np.arange(n) % ds.n_transitions
    obs = {k: th.as_tensor(v[obs_i[b]]) for k, v in ds.observations.items()}
    nxt = {k: th.as_tensor(v[nxt_i[b]]) for k, v in ds.observations.items()}
    return obs, th.as_tensor(ds.actions[b]), th.as_tensor(ds.rewards[b]), nxt, th.zeros(n)


def test_update_runs_and_changes_policy_value_and_target():
    th.manual_seed(0)
    ds = tiny_dataset()
    s = IQLSettings(**SMALL)
    agent = IQL({"keypoints": 4, "target": 4}, (3, IMG, IMG), 3, s)
    obs, a, r, nxt, d = _batch(ds)
    before_act = agent.act(obs).clone()
    before_v = agent.v(agent.features_in(obs)).detach().clone()
    before_t = [p.clone() for p in agent.critic_target.parameters()]
    stats = agent.update(obs, a, r, nxt, d)
    assert all(np.isfinite(v) for v in stats.values())
    assert not th.allclose(agent.act(obs), before_act)
    assert not th.allclose(agent.v(agent.features_in(obs)).detach(), before_v)
    # target critics moved by tau towards the online ones, not onto them
    moved = [not th.equal(p, q) for p, q in zip(agent.critic_target.parameters(), before_t)]
    assert any(moved)
    for pt, p, q in zip(agent.critic_target.parameters(), agent.critic.parameters(), before_t):
        th.testing.assert_close(pt, (1 - s.tau) * q + s.tau * p)


def test_policy_prefers_the_better_action():
    """One state, two logged actions; the one followed by reward 1 must win the policy's mean."""
    th.manual_seed(0)
    n = 20
    F = 2 * n
    obs = {"image": np.zeros((F, IMG, IMG, 3), np.uint8), "keypoints": np.zeros((F, 2), np.float32),
           "target": np.zeros((F, 2), np.float32)}
    acts = np.tile([[1.0], [-1.0]], (n // 2, 1)).astype(np.float32)
    rew = (acts[:, 0] > 0).astype(np.float32)
    ds = OfflineDataset(observations=obs, actions=acts, rewards=rew, terminals=np.ones(n, bool),
                        timeouts=np.zeros(n, bool), lengths=np.ones(n, int), success=np.zeros(n, bool),
                        noisy=np.zeros(n, bool), seeds=np.arange(n), env_reward=np.zeros(n, np.float32))
    s = IQLSettings(**{**SMALL, "steps_per_epoch": 150, "batch_size": 16}, epochs=1, lr=3e-3, reward_scale=1.0)
    res = train_iql(ds, s, None, progress=False)
    a = res.policy({"image": np.zeros((3, IMG, IMG), np.uint8), "keypoints": np.zeros(2, np.float32),
                    "target": np.zeros(2, np.float32)})
    assert a.shape == (1,) and a[0] > 0.5


def test_train_writes_checkpoint_log_curve_and_resumes_bit_identically(tmp_path):
    ds = tiny_dataset()
    calls = []

    def eval_fn(policy):
        calls.append(1)
        return 0.25 * len(calls)

    s2 = IQLSettings(**SMALL, epochs=2)
    r2 = train_iql(ds, s2, tmp_path / "a", eval_fn=eval_fn, progress=False)
    assert [c[0] for c in r2.curve] == [3, 6] and r2.final_success == 0.5
    for f in ("checkpoint.pt", "log.csv", "curve.png", "result.json"):
        assert (tmp_path / "a" / f).exists()
    # "resume" to 3 epochs: only the third epoch runs, one more evaluation
    r3 = train_iql(ds, IQLSettings(**SMALL, epochs=3), tmp_path / "a", eval_fn=eval_fn, progress=False)
    assert len(calls) == 3 and len(r3.log) == 3 and r3.curve[-1] == (9, 0.75)
    # ... and equals a run that was never interrupted
    straight = train_iql(ds, IQLSettings(**SMALL, epochs=3), tmp_path / "b", progress=False)
    for p, q in zip(r3.policy.agent.state_dict().values(), straight.policy.agent.state_dict().values()):
        th.testing.assert_close(p, q, rtol=0, atol=0)
    # a checkpoint from other settings is refused
    with pytest.raises(ValueError, match="other settings"):
        train_iql(ds, IQLSettings(**{**SMALL, "batch_size": 4}, epochs=3), tmp_path / "a", progress=False)
    # the saved policy reloads
    pol = load_policy(tmp_path / "a" / "checkpoint.pt", ds)
    o = {k: v[0] for k, v in ds.observations.items()}
    np.testing.assert_allclose(pol(o), r3.policy(o), atol=1e-6)


def test_generic_observations_image_only_and_other_keys():
    for keys in ((), ("embedding",)):
        ds = tiny_dataset(keys=keys)
        res = train_iql(ds, IQLSettings(**SMALL, epochs=1), None, progress=False)
        o = {k: v[0] for k, v in ds.observations.items()}
        assert res.policy(o).shape == (3,)


def test_policy_checks_its_inputs():
    ds = tiny_dataset()
    pol = train_iql(ds, IQLSettings(**SMALL, epochs=1), None, progress=False).policy
    with pytest.raises(KeyError, match="target"):
        pol({"image": ds.observations["image"][0], "keypoints": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match="PolicyImageSize"):
        pol({"image": np.zeros((3, 64, 64), np.uint8), "keypoints": np.zeros(4, np.float32),
             "target": np.zeros(4, np.float32)})


class CountingEnv:
    """Succeeds when the action's first entry is positive for 3 steps; horizon 5."""

    def __init__(self):
        self.resets = []

    def reset(self, seed=None):
        self.resets.append(seed)
        self.t, self.good = 0, 0
        return {"x": np.zeros(1)}, {"success": False}

    def step(self, a):
        self.t += 1
        self.good += int(a[0] > 0)
        return {"x": np.zeros(1)}, 1.0, False, self.t >= 5, {"success": self.good >= 3, "stage": self.good}


def test_evaluate_policy_over_seeded_episodes():
    env = CountingEnv()
    made = []

    def make(seed):
        made.append(seed)
        return env

    res = evaluate_policy(lambda obs: np.array([1.0]), make, [10, 11])
    assert made == [10, 11] and env.resets == [10, 11]
    assert res.success_rate == 1.0 and res.lengths == [5, 5] and res.returns == [5.0, 5.0]
    res = evaluate_policy(lambda obs: np.array([-1.0]), make, [12])
    assert res.success_rate == 0.0


def test_policy_accepts_wrapper_observation_layout():
    ds = tiny_dataset()
    pol = IQLPolicy(IQL({"keypoints": 4, "target": 4}, (3, IMG, IMG), 3, IQLSettings(**SMALL)))
    o = {k: v[0] for k, v in ds.observations.items()}
    chw = dict(o, image=np.transpose(o["image"], (2, 0, 1)))
    np.testing.assert_allclose(pol(o), pol(chw), atol=1e-6)


def test_relam_eval_fn_drives_the_live_wrapper():
    """The evaluation path end to end on a fast Meta-World task: Dict obs in, seeded episodes."""
    from relam.demos import EVAL_SEED_BASE
    from relam.relam_method import make_relam_eval_fn
    from relam.wrappers import FixedSubgoals

    plan = np.array([[[60.0, 60.0], [70.0, 70.0]], [[62.0, 60.0], [72.0, 70.0]]])
    seen = []

    def policy(obs):
        seen.append({k: v.shape for k, v in obs.items()})
        return np.zeros(4, np.float32)

    eval_fn = make_relam_eval_fn("drawer-open-v3", FixedSubgoals(plan), n_episodes=2, n_points=2,
                                 policy_image_size=32, max_steps=3)
    try:
        res = eval_fn(policy)
    finally:
        eval_fn.close()
    assert res.seeds == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1]
    assert res.lengths == [3, 3] and res.success_rate == 0.0
    assert seen[0] == {"image": (3, 32, 32), "keypoints": (4,), "target": (4,)}


def test_encoder_settings_are_checked():
    with pytest.raises(ValueError, match="encoder="):
        IQLSettings(encoder="pretrained")
    with pytest.raises(ValueError, match="encoder_steps"):
        IQLSettings(encoder="shared", encoder_steps=5)
    with pytest.raises(ValueError, match="encoder_steps"):
        IQLSettings(encoder="frozen", encoder_steps=-1)
    assert str(resolve_device("cpu")) == "cpu"
    assert resolve_device("auto").type == ("cuda" if th.cuda.is_available() else "cpu")


@pytest.mark.parametrize("encoder", ["shared", "frozen"])
def test_shared_and_frozen_encoders_train_and_act(encoder):
    ds = tiny_dataset()
    s = IQLSettings(**SMALL, epochs=1, encoder=encoder)
    res = train_iql(ds, s, None, progress=False)
    agent = res.policy.agent
    # one CNN, and per network a keypoint MLP only
    assert agent.encoder.cnn is not None and agent.encoder.point_mlp is None
    assert all(n.enc.cnn is None and n.enc.point_mlp is not None for n in (agent.actor, agent.critic, agent.value))
    o = {k: v[0] for k, v in ds.observations.items()}
    assert res.policy(o).shape == (3,) and np.all(np.isfinite(res.policy(o)))
    # the value and actor losses do not reach the CNN: its gradient is the critic loss's alone
    x = agent.features_in(_batch(ds)[0])
    xd = {**x, "image_features": agent.encoder.cnn(x["image"]).detach()}
    agent.zero_grad(set_to_none=True)
    (agent.v(xd).sum() + agent.dist(xd).mean.sum()).backward()
    assert all(p.grad is None for p in agent.encoder.parameters())
    obs, a, r, nxt, d = _batch(ds)
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    agent.update(obs, a, r, nxt, d)
    after = agent.state_dict()
    moved = {k.split(".")[0] for k in before if not th.equal(before[k], after[k])}
    assert {"actor", "critic", "value", "critic_target"} <= moved
    assert ("encoder" in moved) == (encoder == "shared" or not agent.image_frozen)


def test_frozen_encoder_stops_the_cnn_after_encoder_steps_and_resumes_bit_identically(tmp_path):
    ds = tiny_dataset()
    s = lambda epochs: IQLSettings(**SMALL, epochs=epochs, encoder="frozen", encoder_steps=3)  # noqa: E731
    cnn = lambda r: [p.clone() for p in r.policy.agent.encoder.cnn.parameters()]  # noqa: E731
    th.manual_seed(0)
    r1 = train_iql(ds, s(1), tmp_path / "a", progress=False)   # 3 steps: the CNN trains
    r0 = train_iql(ds, IQLSettings(**SMALL, epochs=1, encoder="frozen"), None, progress=False)  # frozen at step 0
    th.manual_seed(0)
    fresh = IQL({"keypoints": 4, "target": 4}, (3, IMG, IMG), 3, IQLSettings(**SMALL, encoder="frozen"))
    for p, q in zip(cnn(r0), fresh.encoder.cnn.parameters()):
        th.testing.assert_close(p, q, rtol=0, atol=0)  # encoder_steps=0: the initial CNN, untouched
    assert any(not th.equal(p, q) for p, q in zip(cnn(r1), fresh.encoder.cnn.parameters()))
    r3 = train_iql(ds, s(3), tmp_path / "a", progress=False)   # resumed past the freeze
    for p, q in zip(cnn(r1), cnn(r3)):
        th.testing.assert_close(p, q, rtol=0, atol=0)  # frozen after step 3
    straight = train_iql(ds, s(3), tmp_path / "b", progress=False)
    for p, q in zip(r3.policy.agent.state_dict().values(), straight.policy.agent.state_dict().values()):
        th.testing.assert_close(p, q, rtol=0, atol=0)
    pol = load_policy(tmp_path / "a" / "checkpoint.pt", ds, device="cpu")
    o = {k: v[0] for k, v in ds.observations.items()}
    np.testing.assert_allclose(pol(o), r3.policy(o), atol=1e-6)


def test_checkpoint_from_before_the_encoder_settings_resumes(tmp_path):
    """A checkpoint whose settings predate encoder/encoder_steps/device counts them as defaults."""
    ds = tiny_dataset()
    train_iql(ds, IQLSettings(**SMALL, epochs=1), tmp_path, progress=False)
    st = th.load(tmp_path / "checkpoint.pt", weights_only=False)
    for k in ("encoder", "encoder_steps", "device"):
        st["settings"].pop(k)
    th.save(st, tmp_path / "checkpoint.pt")
    res = train_iql(ds, IQLSettings(**SMALL, epochs=2, device="cpu"), tmp_path, progress=False)
    assert len(res.log) == 2
    with pytest.raises(ValueError, match="other settings"):
        train_iql(ds, IQLSettings(**SMALL, epochs=3, encoder="shared"), tmp_path, progress=False)


def test_cosine_actor_learning_rate_anneals_to_zero_and_resumes_bit_identically(tmp_path):
    """``actor_lr_schedule="cosine"`` (budget ``iql_actor_lr``) anneals the actor's rate from lr to 0
    over the run, leaves the critics' alone, and, being a function of the step, resumes exactly."""
    from relam.methods import Budget
    from relam.rl.iql import actor_lr

    s = IQLSettings(**SMALL, epochs=2, lr=1e-3, actor_lr_schedule="cosine")
    assert actor_lr(s, 0) == pytest.approx(1e-3) and actor_lr(s, 3) == pytest.approx(5e-4)
    assert actor_lr(s, 6) == pytest.approx(0.0, abs=1e-12)
    assert actor_lr(IQLSettings(**SMALL, lr=1e-3), 5) == 1e-3
    with pytest.raises(ValueError, match="actor_lr_schedule"):
        IQLSettings(actor_lr_schedule="linear")
    ds = tiny_dataset()
    straight = train_iql(ds, s, tmp_path / "straight", progress=False)
    agent = straight.policy.agent
    assert agent.opt_actor.param_groups[0]["lr"] == pytest.approx(actor_lr(s, 5))  # the last step's
    assert agent.opt_critic.param_groups[0]["lr"] == 1e-3
    constant = train_iql(ds, IQLSettings(**SMALL, epochs=2, lr=1e-3), tmp_path / "constant", progress=False)
    assert any(not th.equal(p, q) for p, q in zip(constant.policy.agent.actor.state_dict().values(),
                                                  agent.actor.state_dict().values()))

    def stop_after_first_epoch(policy, calls=[]):  # noqa: B006 (a counter across calls)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return 0.0

    with pytest.raises(KeyboardInterrupt):  # checkpoint of epoch 1 written, epoch 2 lost
        train_iql(ds, s, tmp_path / "cut", eval_fn=stop_after_first_epoch, progress=False)
    resumed = train_iql(ds, s, tmp_path / "cut", progress=False)
    for p, q in zip(resumed.policy.agent.state_dict().values(), agent.state_dict().values()):
        th.testing.assert_close(p, q, rtol=0, atol=0)
    b = Budget(train_steps=10, eval_every=5, eval_episodes=1, iql_actor_lr="cosine")
    assert b.key_dict()["iql_actor_lr"] == "cosine"
    assert "iql_actor_lr" not in Budget(train_steps=10, eval_every=5, eval_episodes=1).key_dict()


def test_a_budget_sets_the_iql_temperature_and_expectile():
    """``iql_temperature`` / ``iql_expectile`` (budget) reach the offline run's IQLSettings; at their
    defaults, appendix C's IQLSettings values, they stay out of the run key (old records keep theirs)."""
    from relam.methods import Budget
    from relam.offline import iql_settings

    base = dict(train_steps=60, eval_every=20, eval_episodes=1)
    plain = iql_settings(Budget(**base), seed=3)
    assert (plain.temperature, plain.expectile) == (IQLSettings().temperature, IQLSettings().expectile)
    assert (plain.epochs, plain.steps_per_epoch, plain.seed) == (3, 20, 3)
    assert not {"iql_temperature", "iql_expectile"} & set(Budget(**base).key_dict())
    tuned = Budget(**base, iql_temperature=10, iql_expectile=0.9)
    s = iql_settings(tuned, seed=0)
    assert (s.temperature, s.expectile) == (10.0, 0.9)
    assert tuned.key_dict()["iql_temperature"] == 10.0 and tuned.key_dict()["iql_expectile"] == 0.9
    with pytest.raises(ValueError, match="iql_expectile"):
        Budget(**base, iql_expectile=1.0)


def test_a_budget_sets_the_frozen_encoders_warm_up():
    """``iql_encoder_steps`` (budget) reaches IQLSettings.encoder_steps; at 0 it stays out of the run
    key; it needs ``iql_encoder: frozen`` and says so."""
    from relam.methods import Budget
    from relam.offline import iql_settings

    base = dict(train_steps=60, eval_every=20, eval_episodes=1, iql_encoder="frozen")
    assert iql_settings(Budget(**base), seed=0).encoder_steps == 0
    assert "iql_encoder_steps" not in Budget(**base).key_dict()
    warm = Budget(**base, iql_encoder_steps=40)
    assert iql_settings(warm, seed=0).encoder_steps == 40 and warm.key_dict()["iql_encoder_steps"] == 40
    with pytest.raises(ValueError, match="iql_encoder_steps(.|\\n)*iql_encoder: frozen"):
        Budget(train_steps=60, eval_every=20, eval_episodes=1, iql_encoder="shared", iql_encoder_steps=40)
