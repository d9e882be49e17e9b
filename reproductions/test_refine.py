"""Reproduction of the related paper's claim ("Large Reward Models", arXiv 2603.16065): online PPO
refinement with a VLM-style three-term reward improves a behaviour-cloning base policy.

Generated from experiments/refine.yaml (see conftest.py for what each scale checks): at smoke scale
every (task, column) cell runs and yields well-formed records; at quick/paper scale the refined
policy's mean success must not fall below the base policy's."""
SPEC = "refine"


def test_cell(spec, cell, check_cell):
    """Every (task, method) cell -- the BC base policy and its PPO refinement -- runs and yields
    well-formed records (success in [0, 1], an increasing curve)."""
    check_cell(spec, *cell)


def test_claim(spec, claim, check_claim):
    """The claim (its text is in the spec and in the failure message) holds within its margin."""
    check_claim(spec, claim)
