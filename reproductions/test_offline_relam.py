"""ReLAM + IQL offline on ManiSkill: ground-truth vs anticipated keypoint subgoals (issue 17), and the
baselines (Diffusion Reward, DACfO, IS, Oracle) on the same budget and policy input (issue 18).

Generated from experiments/offline_relam.yaml (see conftest.py for what each scale checks). Not a paper
figure: its policy input adds the robot's joint positions to the paper's (the spec's header says why)."""
SPEC = "offline_relam"


def test_cell(spec, cell, check_cell):
    """Every (task, method) cell runs and yields well-formed records; at quick/paper scale the mean
    success lies within the spec's tolerance of the paper's (image-based) ReLAM number."""
    check_cell(spec, *cell)


def test_claim(spec, claim, check_claim):
    """The claim (its text is in the spec and in the failure message) holds within its margin."""
    check_claim(spec, claim)
