"""relam.methods: the template ``RewardMethod.run`` (online on Meta-World, offline elsewhere) and the
rollout sizing every online method shares."""
from __future__ import annotations

from pathlib import Path

import pytest

from relam.methods import Budget, MethodNotImplementedError, MethodSettings, RewardMethod, RunContext


class _OnlineOnly(RewardMethod):
    name = "toy_online"

    def online(self, ctx):
        return "online"


class _OfflineOnly(RewardMethod):
    name = "toy_offline"

    def offline(self, ctx):
        return "offline"


def _ctx(task: str, train_steps: int = 10_000) -> RunContext:
    return RunContext(task=task, method="toy", settings=MethodSettings(), seed=0,
                      budget=Budget(train_steps=train_steps, eval_every=5, eval_episodes=1), scale="smoke",
                      out_dir=Path("."))


def test_run_dispatches_on_the_suite():
    assert _OnlineOnly().run(_ctx("drawer-open-v3")) == "online"
    assert _OfflineOnly().run(_ctx("PushCube-v1")) == "offline"


def test_a_missing_setting_names_the_method_and_the_suite():
    with pytest.raises(MethodNotImplementedError, match=r"'toy_online' has no offline.*PushCube-v1.*'maniskill'"
                                                        r".*only online\(\)"):
        _OnlineOnly().run(_ctx("PushCube-v1"))
    with pytest.raises(MethodNotImplementedError, match=r"'toy_offline' has no online.*'metaworld'"):
        _OfflineOnly().run(_ctx("drawer-open-v3"))


@pytest.mark.parametrize("train_steps, rollout", [(10, 64), (300, 300), (400_000, 2000)])
def test_the_rollout_is_appendix_c_2000_steps_or_the_whole_budget(train_steps, rollout):
    assert _ctx("drawer-open-v3", train_steps).ppo_settings().n_steps == rollout
