"""ReLAM's points-only loop: ground-truth vs anticipated keypoint subgoals on Meta-World.

Generated from experiments/online_points.yaml (see conftest.py for what each scale checks). Not a paper
figure: the harness's learning check on the loop that fits one machine."""
SPEC = "online_points"


def test_cell(spec, cell, check_cell):
    """Every (task, method) cell runs and yields well-formed records; at quick/paper scale the mean
    success lies within the spec's tolerance of the paper's (image-based) ReLAM number."""
    check_cell(spec, *cell)


def test_claim(spec, claim, check_claim):
    """The claim (its text is in the spec and in the failure message) holds within its margin."""
    check_claim(spec, claim)
