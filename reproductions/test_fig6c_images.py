"""Reproduction of Figure 6(c), image half: generated (IS) versus ground-truth (Oracle) image subgoals.

Generated from experiments/fig6c_images.yaml (see conftest.py for what each scale checks)."""
SPEC = "fig6c_images"


def test_cell(spec, cell, check_cell):
    """Every (task, method) cell runs and yields well-formed records; where the paper gives a number,
    at quick/paper scale our mean success lies within the spec's tolerance of it."""
    check_cell(spec, *cell)


def test_claim(spec, claim, check_claim):
    """The paper's claim (its text is in the spec and in the failure message) holds within its margin."""
    check_claim(spec, claim)
