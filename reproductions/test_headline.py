"""The README's main job: ReLAM learning Drawer Open on the points-only loop, next to Random.

Generated from experiments/headline.yaml (see conftest.py for what each scale checks). Not a paper
figure: the harness's headline, the first result a newcomer sees."""
SPEC = "headline"


def test_cell(spec, cell, check_cell):
    """Every (task, method) cell runs and yields well-formed records; at quick/paper scale the mean
    success lies within the spec's tolerance of the paper's (image-based) ReLAM number."""
    check_cell(spec, *cell)


def test_claim(spec, claim, check_claim):
    """The claim (its text is in the spec and in the failure message) holds within its margin."""
    check_claim(spec, claim)
