"""experiments/refine.yaml: the refinement claim of the related paper ("Large Reward Models") is
judged on a *weak* behaviour-cloning base, so it can fail. Both columns start from one base (the
same BC settings), the weak-base setting enters the run keys, and the claim's judge fails a refined
policy that does not beat the base by the claim's gap."""
from __future__ import annotations

import pandas as pd
import pytest

from baselines.vlm_reward import VLMRewardSettings, bc_demos
from baselines.vlm_training import SCALE_STEPS
from relam.experiments import expand, load_spec
from relam.experiments.reports import judge_claim
from relam.experiments.runner import Run
from relam.methods import Budget

BASE, REFINED = "BC (base)", "BC + PPO (VLM-style reward)"


@pytest.fixture(scope="module")
def spec():
    return load_spec("refine")


def test_both_columns_start_from_the_same_weak_base(spec):
    base, refined = spec.resolved_settings(BASE), spec.resolved_settings(REFINED)
    assert base.refine_iterations == 0 and refined.refine_iterations is None
    same = ("backend", "model_path", "bc_demos", "bc_steps")  # what the cached BC policy depends on
    assert {k: getattr(base, k) for k in same} == {k: getattr(refined, k) for k in same}
    for scale in ("quick", "paper"):  # smoke's base learns nothing either way (50-step episodes)
        for task in spec.tasks:
            assert weakened(base, spec.budget(task, scale), scale), (task, scale)


def weakened(settings: VLMRewardSettings, budget: Budget, scale: str) -> bool:
    """BC with fewer steps than the scale's, or on fewer demos than the reward model learns from."""
    steps = SCALE_STEPS[scale].bc_steps if settings.bc_steps is None else settings.bc_steps
    return steps < SCALE_STEPS[scale].bc_steps or bc_demos(settings, budget) < budget.n_demos


def test_the_weak_base_setting_enters_the_run_keys(spec):
    for scale in ("smoke", "quick"):
        for run in expand(spec, scale):
            assert run.settings["bc_steps"] == spec.resolved_settings(run.label).bc_steps is not None
            strong = Run(**{**run.to_dict(), "settings": {**run.settings, "bc_steps": None}})
            assert strong.key != run.key


def test_bc_demos_cannot_exceed_the_budget():
    budget = Budget(train_steps=10, eval_every=5, eval_episodes=1, n_demos=3)
    assert bc_demos(VLMRewardSettings(), budget) == 3
    assert bc_demos(VLMRewardSettings(bc_demos=2), budget) == 2
    with pytest.raises(ValueError, match="bc_demos=4.*n_demos=3"):
        bc_demos(VLMRewardSettings(bc_demos=4), budget)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="bc_demos"):
        VLMRewardSettings(bc_demos=0)
    with pytest.raises(ValidationError, match="bc_steps"):
        VLMRewardSettings(bc_steps=0)


def _cells(spec, base: float, refined: float) -> pd.DataFrame:
    """table_frame-shaped cells: every task at these means (percent), every run there."""
    n = len(spec.seeds_at("quick"))
    return pd.DataFrame([{"task": t, "label": lab, "mean": m, "n_ok": n, "n_expected": n}
                         for t in spec.tasks for lab, m in ((BASE, base), (REFINED, refined))])


@pytest.mark.parametrize("base, refined, verdict", [
    (40.0, 30.0, "fail"),  # refinement made the base worse
    (40.0, 40.0, "fail"),  # no improvement: "improves" needs the gap
    (40.0, 49.9, "fail"),  # short of the gap
    (40.0, 50.0, "pass"),
    (40.0, 90.0, "pass"),
])
def test_the_claim_can_fail(spec, base, refined, verdict):
    [claim] = [c for c in spec.claims if c.id == "refinement-improves-base"]
    gap = claim.gap.at("quick")
    assert gap is not None and gap > 0 and claim.margin.at("quick") == 0.0
    for scale in ("quick", "paper"):
        v = judge_claim(spec, scale, claim, _cells(spec, base, refined))
        assert v.verdict == verdict, v.detail
    if verdict == "fail":
        assert f"{REFINED} {refined:.1f} < {BASE} {base:.1f} + {gap:g}" in v.detail
    # smoke judges nothing (its budgets learn nothing) but says what a plain ordering would find
    smoke = judge_claim(spec, "smoke", claim, _cells(spec, base, refined))
    assert smoke.verdict == "not checked"
    assert ("would fail" if refined < base else "would hold") in smoke.detail
