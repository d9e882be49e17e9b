"""`relam extend`: a missing run starts from a shorter finished run's work folder only when nothing
but ``train_steps`` differs and its method says the longer run passes through that state."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from relam.experiments import ResultStore, expand, load_spec, run_spec
from relam.experiments.extend import extend_runs
from relam.methods import Budget, MethodSettings, RewardMethod, ppo_extension_refused, register_method
from relam.results import RunResult


class CountingSettings(MethodSettings):
    pass


@register_method("counting_for_extend_tests")
class Counting(RewardMethod):
    """Trains from the step its work folder says it reached (as a PPO checkpoint does), to train_steps."""

    Settings = CountingSettings
    extension_refused = staticmethod(ppo_extension_refused)

    def run(self, ctx):
        done = Path(ctx.out_dir) / "steps.txt"
        start = int(done.read_text()) if done.exists() else 0
        done.write_text(str(ctx.budget.train_steps))
        return RunResult(success=0.5, curve=[(start, 0.0), (ctx.budget.train_steps, 0.5)],
                         metrics={"started_at": float(start)})


def make_spec(tmp_path: Path, steps: int, method: str = "counting_for_extend_tests", name: str = "ext",
              **budget) -> Path:
    data = {"name": f"{name}{steps}", "title": "t", "report": "curves", "tasks": ["drawer-open-v3"],
            "methods": [{"label": "M", "method": method}], "seeds": [0, 1],
            "budgets": {"metaworld": {s: {"train_steps": steps * (i + 1), "eval_every": 1000, "eval_episodes": 1,
                                          **budget}
                                      for i, s in enumerate(("smoke", "quick", "paper"))}}}
    path = tmp_path / f"{name}{steps}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "cache"))
    return ResultStore()


def test_a_longer_run_continues_the_shorter_one_and_its_record_says_so(tmp_path, store):
    short = load_spec(make_spec(tmp_path, 2000))
    run_spec(short, "smoke", progress=False)
    long = load_spec(make_spec(tmp_path, 5000))
    runs = expand(long, "smoke")
    done = extend_runs(runs, store)
    donors = {r.key for r in expand(short, "smoke")}
    assert [e.donor in donors and e.donor_steps == 2000 for e in done] == [True, True]
    run_spec(long, "smoke", progress=False)
    for run, e in zip(runs, done):
        rec = store.get(run.key)
        assert rec["metrics"]["started_at"] == 2000 and rec["extended_from"] == {"key": e.donor, "train_steps": 2000}
    # the donors' records and folders are untouched, and a second extend leaves finished runs alone
    assert all(store.get(k)["metrics"]["started_at"] == 0 for k in donors)
    assert [e.why for e in extend_runs(runs, store)] == ["has a record already"] * 2
    # the longest shorter run is the one continued
    longer = load_spec(make_spec(tmp_path, 8000))
    e = extend_runs(expand(longer, "smoke")[:1], store)[0]
    assert e.donor == runs[0].key and e.donor_steps == 5000


def test_what_is_not_extended_and_why(tmp_path, store):
    run_spec(load_spec(make_spec(tmp_path, 2000)), "smoke", progress=False)
    # another setting besides train_steps differs
    other = expand(load_spec(make_spec(tmp_path, 5000, name="other", eval_episodes=2)), "smoke")
    assert "no finished run" in extend_runs(other[:1], store)[0].why
    # the same budget at another scale: the learned components' budgets differ
    quick = expand(load_spec(make_spec(tmp_path, 2000, name="q")), "quick")  # quick: 4000 steps
    assert "no finished run" in extend_runs(quick[:1], store)[0].why
    # a learning rate annealed over train_steps
    run_spec(load_spec(make_spec(tmp_path, 2000, name="lin", lr_schedule="linear")), "smoke", progress=False)
    lin = expand(load_spec(make_spec(tmp_path, 5000, name="lin", lr_schedule="linear")), "smoke")
    assert "lr_schedule" in extend_runs(lin[:1], store)[0].why
    # a method that does not say it can (the default)
    run_spec(load_spec(make_spec(tmp_path, 2000, method="synthetic", name="syn")), "smoke", progress=False)
    syn = expand(load_spec(make_spec(tmp_path, 5000, method="synthetic", name="syn")), "smoke")
    assert "does not say" in extend_runs(syn[:1], store)[0].why
    # a run with a work folder of its own resumes from it; a run being made now is left to its process
    mine = expand(load_spec(make_spec(tmp_path, 5000)), "smoke")
    (store.work_dir(mine[0].key) / "steps.txt").write_text("3000")
    assert "of its own" in extend_runs(mine[:1], store)[0].why
    with store.lock(mine[1].key):
        assert "running now" in extend_runs(mine[1:], store)[0].why
    assert not any(store.work_dir(r.key).joinpath("extended_from.json").exists() for r in mine + other + lin + syn)


def test_ppo_extension_rule():
    b = dict(train_steps=2000, eval_every=10, eval_episodes=1)
    assert ppo_extension_refused("drawer-open-v3", Budget(**b), Budget(**{**b, "train_steps": 5000})) is None
    # a run shorter than one rollout updated after fewer steps (measured: an Oracle smoke run of 200
    # steps continued to 400 left the path of a 400-step run from its first update)
    short = ppo_extension_refused("drawer-open-v3", Budget(**{**b, "train_steps": 200}), Budget(**b))
    assert "rollout" in short and "200" in short
    assert "lr_schedule" in ppo_extension_refused("drawer-open-v3", Budget(**b, lr_schedule="linear"), Budget(**b))
    assert "offline" in ppo_extension_refused("PushCube-v1", Budget(**b), Budget(**b))


@pytest.mark.parametrize("method, continues", [("relam", True), ("image_subgoal", True), ("oracle", True),
                                               ("dacfo", False), ("diffusion_reward", False)])
def test_which_methods_continue_a_shorter_run(method, continues):
    """Methods whose reward is fixed before PPO starts continue a shorter run's checkpoint; those whose
    reward model learns online (DACfO's discriminator and replay, Diffusion Reward's RND) keep state
    the PPO checkpoint does not hold, so they do not say they can."""
    from relam.methods import method_class

    b = dict(train_steps=2000, eval_every=1000, eval_episodes=1)
    why = method_class(method).extension_refused("drawer-open-v3", Budget(**b), Budget(**{**b, "train_steps": 4000}))
    assert (why is None) == continues, why
