"""ReLAM with the paper's policy input (image + keypoints) on Meta-World, anticipated subgoals.

Generated from experiments/online_image.yaml (see conftest.py for what each scale checks)."""
SPEC = "online_image"


def test_cell(spec, cell, check_cell):
    """Every task's run executes and yields well-formed records; at quick/paper scale its success
    lies within the spec's tolerance of the paper's Table 4 ReLAM number."""
    check_cell(spec, *cell)
