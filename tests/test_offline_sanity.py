"""The labelled-reward sanity (issue 17 item 4): the order expert > noisy that succeed > noisy that
fail, Spearman with the dense reward per step and per return, the table and the bench's exit status.

Known answers on a hand-made labelled set; no simulator, no training."""
import numpy as np
import pytest

import baselines.evaluation as ev
from baselines.evaluation import OFFLINE_LABELLERS, sanity_order, sanity_table
from relam.offline import OfflineDataset


def _dataset(rewards_per_traj, env_per_traj, noisy, success) -> OfflineDataset:
    lengths = [len(r) for r in rewards_per_traj]
    T, F = sum(lengths), sum(lengths) + len(lengths)
    return OfflineDataset(
        observations={"image": np.zeros((F, 8, 8, 3), np.uint8)}, actions=np.zeros((T, 2), np.float32),
        rewards=np.concatenate(rewards_per_traj).astype(np.float32), terminals=np.zeros(T, bool),
        timeouts=np.zeros(T, bool), lengths=np.asarray(lengths), success=np.asarray(success),
        noisy=np.asarray(noisy), seeds=np.arange(len(lengths)),
        env_reward=np.concatenate(env_per_traj).astype(np.float32), meta={"task": "toy"})


def test_order_known_answers():
    ok, text = sanity_order({"return_expert": -10.0, "return_noisy_success": -20.0, "return_noisy_failure": -30.0})
    assert ok and text == "expert > noisy_success > noisy_failure"
    ok, text = sanity_order({"return_expert": -10.0, "return_noisy_success": -40.0, "return_noisy_failure": -30.0})
    assert not ok and text == "expert > noisy_success < noisy_failure"
    ok, text = sanity_order({"return_expert": -10.0, "return_noisy_success": -10.0, "return_noisy_failure": -30.0})
    assert not ok and text == "expert = noisy_success > noisy_failure"  # ties are not an order
    # PickCube's noisy set may have no success: that group drops out and is named
    ok, text = sanity_order({"return_expert": -10.0, "return_noisy_success": float("nan"),
                             "return_noisy_failure": -30.0})
    assert ok and text == "expert > noisy_failure (no noisy_success)"
    ok, _ = sanity_order({"return_expert": -10.0, "return_noisy_success": float("nan"),
                          "return_noisy_failure": float("nan")})
    assert not ok  # one group orders nothing


def test_reward_sanity_splits_noisy_and_ranks_per_step_and_per_return():
    from relam.offline import reward_sanity

    # expert best, noisy success middle, noisy failure worst; the labels follow the dense reward
    # step by step (Spearman 1 per step) and in return (1 per return)
    env = [np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.5, 2.5]), np.array([0.1, 0.2, 0.3])]
    good = _dataset([e * 10 for e in env], env, noisy=[False, True, True], success=[True, True, False])
    st = reward_sanity(good)
    assert st["n_expert"] == st["n_noisy_success"] == st["n_noisy_failure"] == 1
    assert st["return_expert"] == pytest.approx(60) and st["return_noisy_failure"] == pytest.approx(6)
    assert st["spearman_step"] == pytest.approx(1.0) and st["spearman_return"] == pytest.approx(1.0)
    assert sanity_order(st)[0]
    # a labeller that reverses the dense reward: the order fails and both Spearman are -1
    bad = _dataset([-e for e in env], env, noisy=[False, True, True], success=[True, True, False])
    st = reward_sanity(bad)
    assert st["spearman_step"] == pytest.approx(-1.0) and st["spearman_return"] == pytest.approx(-1.0)
    assert sanity_order(st) == (False, "expert < noisy_success < noisy_failure")


def test_offline_reward_sanity_resolves_the_labeller_and_judges(monkeypatch):
    """The registry's module:function entry is called with the run context and its extra
    arguments, n_trajectories sets how many are labelled, and the verdict comes back."""
    import types

    import relam.offline

    env = [np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.5, 2.5]), np.array([0.1, 0.2, 0.3])]
    calls = {}

    def fake_labeller(ctx, flavour):
        calls["ctx"], calls["flavour"] = ctx, flavour
        return types.SimpleNamespace(name="fake"), None, {"extra_metric": 1.5}

    def fake_label(task, labeller, n, progress):
        calls["n"] = n
        return _dataset([e * 10 for e in env], env, noisy=[False, True, True], success=[True, True, False])

    monkeypatch.setattr(ev, "_fake_labeller", fake_labeller, raising=False)
    monkeypatch.setitem(OFFLINE_LABELLERS, "fake", ("baselines.evaluation:_fake_labeller", {"flavour": "x"}))
    monkeypatch.setattr(ev, "_context", lambda *a: types.SimpleNamespace(args=a))
    monkeypatch.setattr(relam.offline, "label_offline_dataset", fake_label)
    st = ev.offline_reward_sanity("PushCube-v1", "fake", n_demos=30, scale="smoke", progress=False, n_trajectories=4)
    assert calls["flavour"] == "x" and calls["n"] == 8 and calls["ctx"].args[:4] == ("PushCube-v1", "fake", 30, "smoke")
    assert st["order_ok"] and st["extra_metric"] == 1.5 and st["spearman_step"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="choose one of"):
        ev.offline_reward_sanity("PushCube-v1", "nope")


def test_relam_labellers_are_registered():
    assert OFFLINE_LABELLERS["relam"] == ("baselines.evaluation:relam_offline_labeller", {"subgoals": "generated"})
    assert OFFLINE_LABELLERS["relam_gt"][1] == {"subgoals": "ground_truth"}
    ctx = ev._context("PushCube-v1", "relam_gt", 5, "smoke", 0, False)
    assert ctx.settings.subgoals == "ground_truth" and ctx.budget.n_demos == 5


def test_table_and_bench_exit_status(monkeypatch, capsys):
    import importlib.util
    from pathlib import Path

    rows = {"good": {"task": "PushCube-v1", "method": "good", "n_expert": 10.0, "n_noisy_success": 4.0,
                     "n_noisy_failure": 6.0, "return_expert": -100.0, "return_noisy_success": -120.0,
                     "return_noisy_failure": -150.0, "spearman_step": 0.7, "spearman_return": 0.8},
            "bad": {"task": "PushCube-v1", "method": "bad", "n_expert": 10.0, "n_noisy_success": 0.0,
                    "n_noisy_failure": 10.0, "return_expert": -100.0, "return_noisy_success": float("nan"),
                    "return_noisy_failure": -90.0, "spearman_step": -0.1, "spearman_return": float("nan")}}
    for r in rows.values():
        r["order_ok"], r["order"] = sanity_order(r)
    table = sanity_table(list(rows.values()))
    lines = table.splitlines()
    assert len(lines) == 4
    assert "| PushCube-v1 | good | 10/4/6 | -100.0 | -120.0 | -150.0 | yes: expert > noisy_success > noisy_failure | 0.70 | 0.80 |" in lines
    assert "| PushCube-v1 | bad | 10/0/10 | -100.0 | - | -90.0 | NO: expert < noisy_failure (no noisy_success) | -0.10 | - |" in lines

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_offline_sanity.py"
    spec = importlib.util.spec_from_file_location("bench_offline_sanity", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    seen = []

    def fake(task, method, n_demos, scale, seed, progress, n_trajectories):
        seen.append((task, method, n_demos, n_trajectories))
        return rows[method]

    monkeypatch.setitem(OFFLINE_LABELLERS, "good", ("x", {}))
    monkeypatch.setitem(OFFLINE_LABELLERS, "bad", ("x", {}))
    monkeypatch.setattr(bench, "offline_reward_sanity", fake)
    assert bench.main(["PushCube-v1", "--methods", "good", "-n", "3", "--quiet"]) == 0
    assert seen == [("PushCube-v1", "good", 3, 3)]
    assert bench.main(["PushCube-v1", "--methods", "good", "bad", "-n", "3", "--n-demos", "50", "--quiet"]) == 1
    assert seen[-1] == ("PushCube-v1", "bad", 50, 3)
    assert "NO: expert < noisy_failure" in capsys.readouterr().out
