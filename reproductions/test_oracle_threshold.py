"""Our ablation: the Oracle's stage threshold, calibrated on generated subgoals or fixed at 0.9.

Generated from experiments/oracle_threshold.yaml (see conftest.py for what each scale checks)."""
SPEC = "oracle_threshold"


def test_cell(spec, cell, check_cell):
    """Every (task, method) cell runs and yields well-formed records."""
    check_cell(spec, *cell)


def test_claim(spec, claim, check_claim):
    """The claim (its text is in the spec and in the failure message) holds within its margin."""
    check_claim(spec, claim)
