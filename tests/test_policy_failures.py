"""`relam failures`: a trained ReLAM policy's evaluation episodes replayed, each with a verdict on
where it stopped (relam/policy_failures.py)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml

from relam import cli
from relam.experiments import load_spec, run_spec
from relam.policy_failures import VERDICTS, EpisodeVerdict, default_failures_path, verdict_counts
from relam.policy_gif import find_policy_run, load_policy, run_context
from relam.reward import RewardSettings, StageTracker


def _ep(**kw) -> EpisodeVerdict:
    base = dict(seed=1, success=False, success_step=None, met=1, n_subgoals=3, expert_missed=None,
                closest_last_px=9.0, theta_px=6.0, end_px=[1.0, 2.0, 3.0], points=["button", "hand", "l5"],
                object_points=[0])
    base.update(kw)
    return EpisodeVerdict(**base)


def test_verdicts_say_where_an_episode_ended():
    assert _ep(success=True, success_step=40).verdict == "success"
    assert _ep(met=3).verdict == "plan met, no success"  # every subgoal met, the task not done
    assert _ep(end_px=[10.6, 4.8, 3.0]).verdict == "stopped, object behind"  # only the object's point off
    assert _ep(end_px=[10.6, 6.6, 3.0]).verdict == "stopped, arm off"  # an arm point at or past theta
    assert _ep(end_px=[1.0, 6.0, 3.0]).verdict == "stopped, arm off"
    assert _ep(end_px=[6.1, 1.0, 1.0], object_points=[0, 1]).verdict == "stopped, object behind"
    counts = verdict_counts([_ep(success=True, success_step=3), _ep(met=3), _ep(met=3)])
    assert list(counts) == list(VERDICTS) and counts == {"success": 1, "plan met, no success": 2,
                                                         "stopped, object behind": 0, "stopped, arm off": 0}


def test_the_last_subgoal_has_its_own_threshold():
    plan = np.zeros((3, 2, 2))
    t = StageTracker(plan, RewardSettings(final_theta_s=3.0))
    assert [t.threshold(i) for i in range(3)] == [6.0, 6.0, 3.0]
    assert StageTracker(plan, RewardSettings()).threshold(2) == 6.0


def test_ground_truth_plans_know_where_the_expert_failed():
    """Button-press-wall start 1000017 is one of the 2 of 30 evaluation starts where Meta-World's
    scripted expert does not press the button (the plan it gives leads to no success)."""
    from relam.keypoints import KeypointSettings
    from relam.wrappers import GroundTruthSubgoals

    gt = GroundTruthSubgoals(keypoint_settings=KeypointSettings(num_points=4))
    task = "button-press-wall-v3"
    assert not gt.expert_missed(task, 1000017)  # not replayed yet
    gt.plan(None, task, seed=1000017)
    gt.plan(None, task, seed=1000000)
    assert gt.expert_missed(task, 1000017) and not gt.expert_missed(task, 1000000)
    assert gt.expert_failures == 1


@pytest.fixture()
def spec(tmp_path, monkeypatch):
    """A points-only spec with one ReLAM (ground truth) cell on drawer-open, 30-step episodes."""
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RELAM_SCALE", raising=False)
    budget = {"train_steps": 128, "eval_every": 64, "eval_episodes": 1, "n_demos": 3, "horizon": 30,
              "policy_input": "points", "n_envs": 2, "log_std_init": -0.5}
    data = {"name": "failspec", "title": "failures", "report": "table", "tasks": ["drawer-open-v3"],
            "methods": [{"label": "ReLAM (gt)", "method": "relam", "settings": {"subgoals": "ground_truth"}}],
            "seeds": [0], "budgets": {"metaworld": {s: budget for s in ("smoke", "quick", "paper")}}}
    path = tmp_path / "failspec.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def test_failures_of_a_trained_run_replay_its_evaluation_and_name_the_points(spec, capsys):
    from relam.relam_method import make_planner, online_env
    from relam.rl.evaluation import eval_env_count, eval_seeds, evaluate_success

    assert cli.main(["failures", str(spec.path), "--episodes", "2"]) == 2  # no run yet: a usage error
    assert "relam run failspec" in capsys.readouterr().err
    summary = run_spec(spec, "smoke", progress=False)
    assert all(r["status"] == "ok" for r in summary.records.values()), summary.failed()
    assert cli.main(["failures", str(spec.path), "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    run, record, ckpt = find_policy_run(spec, "smoke")
    path = default_failures_path(spec, "smoke", run.task, run.label, run.seed)
    assert f"written: {path}" in out and path.name.endswith(".failures.csv")
    rows = list(csv.DictReader(path.open()))
    assert [int(r["seed"]) for r in rows] == eval_seeds(3)
    assert sum(int(line.rsplit(": ", 1)[1]) for line in out.splitlines() if line.startswith("  ")
               and line.strip().split(":")[0] in VERDICTS) == 3
    # the episodes are those of the run's evaluations: played as they were, batched over n_envs = 2
    # envs (the batch is part of an episode: float rounding), success, length and stage agree
    model = load_policy(ckpt)
    ctx = run_context(run, ckpt.parent)
    envs = [online_env(ctx, make_planner(ctx)) for _ in range(eval_env_count(2, 3))]
    try:
        res = evaluate_success(model, envs, eval_seeds(3))
        assert len(envs) == 2
        assert [(r["success"] == "True", int(r["length"]), int(r["met"])) for r in rows] == list(
            zip(res.successes, res.lengths, res.stages))
    finally:
        for env in envs:
            env.close()
    # with the run's eval_episodes, the episodes of its final evaluation
    assert cli.main(["failures", str(spec.path), "--episodes", "1"]) == 0
    capsys.readouterr()
    one = list(csv.DictReader(path.open()))
    assert float(one[0]["success"] == "True") == record["success"]
    for r in rows:
        points = r["points"].split()
        assert len(points) == 4 and points[0] == "drawer_link"  # the object's point first, then the arm's
        assert len(r["end_px"].split()) == 4 and r["expert_missed"] == "False"
        assert float(r["theta_px"]) == 6.0 and float(r["closest_last_px"]) >= 0.0
    with pytest.raises(SystemExit):
        cli.main(["failures", str(spec.path), "--episodes", "0"])
    assert cli.main(["failures", str(spec.path), "--out", "x.txt"]) == 2
