"""Reproduction of the related paper's claim ("Large Reward Models", arXiv 2603.16065): online PPO
refinement with a VLM-style three-term reward improves a behaviour-cloning base policy.

Generated from experiments/refine.yaml (see conftest.py for what each scale checks): at smoke scale
every (task, column) cell runs with the spec's weak base (behaviour cloning cut to ``bc_steps``
gradient steps, both columns from the same cached policy) and yields well-formed records; at
quick/paper scale the refined policy's mean success must beat the base's by the claim's gap (10
points), and the base must be weak (mean success below 60%): a base at 100% leaves a refinement
nothing to show, and the claim nothing to fail on."""
import pytest

from baselines.vlm_reward import bc_demos
from baselines.vlm_training import SCALE_STEPS
from relam.experiments import load_spec
from relam.experiments.reports import collect, table_frame

SPEC = "refine"
BASE = "BC (base)"
#: the base's mean success (percent) must stay below this for the claim to be able to fail
WEAK_BASE_BELOW = 60.0


def test_cell(spec, cell, check_cell):
    """Every (task, method) cell -- the BC base policy and its PPO refinement -- runs and yields
    well-formed records (success in [0, 1], an increasing curve)."""
    check_cell(spec, *cell)


def test_claim(spec, claim, check_claim):
    """The claim (its text is in the spec and in the failure message) holds within its margin."""
    check_claim(spec, claim)


@pytest.mark.parametrize("task", load_spec(SPEC).tasks)
def test_base_is_weak(spec, scale, check_cell, task):
    """The claim's precondition: the base's runs run with the spec's weak-base settings, and at
    quick/paper its behaviour cloning is cut short of the scale's (fewer steps or demos) and its
    measured mean success is below 60%, so the claim can fail."""
    settings, budget = spec.resolved_settings(BASE), spec.budget(task, scale)
    check_cell(spec, task, BASE)  # its runs run (or are found)
    if scale == "smoke":
        return  # smoke budgets learn nothing (50-step episodes): the runs are checked, not the numbers
    steps = SCALE_STEPS[scale].bc_steps if settings.bc_steps is None else settings.bc_steps
    assert steps < SCALE_STEPS[scale].bc_steps or bc_demos(settings, budget) < budget.n_demos, (
        f"the spec's base is not weakened at {scale} (bc_steps, bc_demos)")
    cells = table_frame(spec, collect(spec, scale)).set_index(["task", "label"])
    mean = float(cells.loc[(task, BASE), "mean"])
    assert mean < WEAK_BASE_BELOW, (f"{task}: the base reaches {mean:.1f}% at {scale} (>= {WEAK_BASE_BELOW:g}%): "
                                    "weaken it further (bc_demos, bc_steps) or the claim cannot fail")
