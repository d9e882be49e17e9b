"""The per-scale budgets of the learned components: one table shape, one error for an unknown scale."""
import dataclasses

import pytest

from relam.scales import SCALES, ScaleTable, UnknownScaleError, check_scale


def _tables():
    from baselines.dacfo import ONLINE_PHASE
    from baselines.diffusion_reward import FIT_STEPS
    from baselines.image_subgoal import SCALE_STEPS as IS_STEPS
    from baselines.vlm_training import SCALE_STEPS as VLM_STEPS
    from relam.anticipation import BUDGETS

    return [BUDGETS, ONLINE_PHASE, FIT_STEPS, IS_STEPS, VLM_STEPS]


def test_every_component_has_a_budget_at_every_scale_and_no_other():
    for table in _tables():
        assert isinstance(table, ScaleTable)
        assert [s for s, _ in table.items()] == list(SCALES)
        assert all(dataclasses.is_dataclass(v) for v in table.values())
        for bad in ("small", "Quick", ""):
            with pytest.raises(UnknownScaleError, match=f"{table.component}: unknown scale .*smoke, quick, paper"):
                table[bad]


def test_spec_scales_are_the_component_scales():
    from relam.experiments.spec import SCALES as SPEC_SCALES

    assert SPEC_SCALES == SCALES
    assert check_scale("quick") == "quick"
    with pytest.raises(ValueError, match="expected one of smoke, quick, paper"):
        check_scale("small")


def test_a_table_holds_one_dataclass_type():
    @dataclasses.dataclass(frozen=True)
    class A:
        n: int

    @dataclasses.dataclass(frozen=True)
    class B:
        n: int

    with pytest.raises(TypeError, match="same dataclass type"):
        ScaleTable("toy", smoke=A(1), quick=A(2), paper=B(3))
    with pytest.raises(TypeError, match="same dataclass type"):
        ScaleTable("toy", smoke=1, quick=2, paper=3)


def test_anticipation_presets_are_unchanged_by_the_table():
    from relam.anticipation import AnticipationConfig

    cfg = AnticipationConfig.for_scale("quick", num_points=5)
    assert (cfg.layers, cfg.width, cfg.heads, cfg.steps, cfg.encoder_steps, cfg.task_grid, cfg.num_points) == \
        (4, 128, 4, 4000, 300, 2, 5)
    assert AnticipationConfig.for_scale("smoke").ckpt_every == 100
