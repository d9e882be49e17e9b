"""Experiment specs: the shipped ones validate; each kind of malformed spec fails before anything
runs, with a message naming the file, the field path and what was expected."""
from __future__ import annotations

import copy

import pytest
import yaml

from relam.experiments import SpecError, expand, list_specs, load_spec
from relam.experiments.spec import CloseClaim, OrderingClaim, SpecLoader

BASE = {
    "name": "mini",
    "title": "a minimal spec",
    "report": "table",
    "tasks": ["drawer-open-v3"],
    "methods": [{"label": "ReLAM", "method": "relam", "settings": {"n_points": 8}},
                {"label": "Synthetic", "method": "synthetic"}],
    "seeds": [0, 1],
    "budgets": {"metaworld": {s: {"train_steps": 10, "eval_every": 5, "eval_episodes": 1}
                              for s in ("smoke", "quick", "paper")}},
    "paper": {"drawer-open-v3": {"ReLAM": 100.0}},
    "claims": [{"id": "c1", "kind": "ordering", "text": "ReLAM beats Synthetic", "better": "ReLAM",
                "than": ["Synthetic"]}],
}


def write(tmp_path, data, name="mini"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def broken(tmp_path, mutate):
    data = copy.deepcopy(BASE)
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    msg = str(e.value)
    assert str(path) in msg, msg  # names the file
    return msg


def test_base_spec_is_valid(tmp_path):
    spec = load_spec(write(tmp_path, BASE))
    assert spec.labels() == ["ReLAM", "Synthetic"]
    assert spec.resolved_settings("ReLAM").n_points == 8
    assert spec.resolved_settings("ReLAM").reward_shape == "piecewise_linear"  # default filled in
    assert len(expand(spec, "smoke")) == 1 * 2 * 2
    assert [c.id for c in spec.cell_claims()] == ["drawer-open-v3/ReLAM"]


def test_unknown_top_level_key(tmp_path):
    msg = broken(tmp_path, lambda d: d.update(sedes=[0]))
    assert "sedes: unknown key (did you mean 'seeds'?)" in msg
    assert "valid keys: name, title, description, report, tasks" in msg  # lists the valid keys


def test_unknown_nested_key(tmp_path):
    msg = broken(tmp_path, lambda d: d["budgets"]["metaworld"]["smoke"].update(train_step=3))
    assert "budgets.metaworld.smoke.train_step: unknown key (did you mean 'train_steps'?)" in msg
    assert "eval_every" in msg and "n_demos" in msg  # the Budget's keys


def test_unknown_key_in_a_claim_and_in_settings(tmp_path):
    """Keys below a union (claims are tagged by their kind) still get their model's valid keys."""
    msg = broken(tmp_path, lambda d: d["claims"][0].update(marginn={"quick": 1.0}))
    assert "claims[0].marginn: unknown key (did you mean 'margin'?)" in msg and "better" in msg
    assert "ordering" not in msg.split("\n")[1]  # the union tag is not part of the path
    msg = broken(tmp_path, lambda d: d["methods"][0]["settings"].update(n_point=4))
    assert "did you mean 'n_points'?" in msg and "reward_shape" in msg


def test_duplicate_keys_are_rejected(tmp_path):
    text = yaml.safe_dump(BASE, sort_keys=False)
    path = write(tmp_path, text + "seeds: [5]\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(path) in str(e.value) and "seeds: duplicate key 'seeds'" in str(e.value)
    path = write(tmp_path, text.replace("  method: synthetic\n", "  method: synthetic\n  method: random\n"))
    with pytest.raises(SpecError, match=r"methods\[1\]\.method: duplicate key 'method' at line \d+"):
        load_spec(path)
    path = write(tmp_path, "a: {x: 1, x: 2}\n")
    with pytest.raises(SpecError, match="a.x: duplicate key 'x' at line 1, column 11 .first at line 1, column 5"):
        load_spec(path)


@pytest.mark.parametrize("seeds, expected", [
    ([-1], "seeds[0]: Input should be greater than or equal to 0"),
    ([True], "seeds[0]: Input should be a valid integer (got True)"),
    (["0"], "seeds[0]: Input should be a valid integer (got '0')"),
    ([0.5], "seeds[0]: Input should be a valid integer"),
    ({"smoke": [0], "quick": [False], "paper": [0]}, "seeds.quick[0]: Input should be a valid integer"),
    (3, "seeds: Input should be a list of seeds"),
])
def test_seeds_are_non_negative_integers(tmp_path, seeds, expected):
    msg = broken(tmp_path, lambda d: d.update(seeds=seeds))
    assert expected in msg
    assert "SeedsPerScale" not in msg and "list[" not in msg  # no union noise


def test_budget_numbers_are_strict(tmp_path):
    msg = broken(tmp_path, lambda d: d["budgets"]["metaworld"]["smoke"].update(train_steps="10"))
    assert "budgets.metaworld.smoke.train_steps: Input should be a valid integer (got '10')" in msg
    msg = broken(tmp_path, lambda d: d["budgets"]["metaworld"]["smoke"].update(eval_episodes=True))
    assert "budgets.metaworld.smoke.eval_episodes: Input should be a valid integer (got True)" in msg
    msg = broken(tmp_path, lambda d: d["methods"][0]["settings"].update(n_points="8"))
    assert "methods[0].settings.n_points: Input should be a valid integer (got '8')" in msg


def test_a_task_budget_replaces_its_suites_fields_for_that_row_only(tmp_path):
    data = copy.deepcopy(BASE)
    data["tasks"] = ["drawer-open-v3", "door-open-v3"]
    data["task_budgets"] = {"door-open-v3": {"quick": {"train_steps": 8, "ppo_batch_size": 256,
                                                       "ppo_segment_bootstrap": 0.5}}}
    spec = load_spec(write(tmp_path, data))
    door, drawer = spec.budget("door-open-v3", "quick"), spec.budget("drawer-open-v3", "quick")
    assert (door.train_steps, door.ppo_batch_size, door.eval_every) == (8, 256, 5)  # the rest: the suite's
    assert (drawer.train_steps, drawer.ppo_batch_size) == (10, 64)
    assert spec.budget("door-open-v3", "smoke") == spec.budget("drawer-open-v3", "smoke")
    # the override enters the run keys of the door's quick row, and no other
    def keys(d):
        sp = load_spec(write(tmp_path, d))
        return {(r.task, r.scale, r.label, r.seed): r.key for sc in ("smoke", "quick") for r in expand(sp, sc)}
    with_override = keys(data)
    data["task_budgets"] = {}
    plain = keys(data)
    moved = {cell[:2] for cell, k in with_override.items() if plain[cell] != k}
    assert moved == {("door-open-v3", "quick")}


def test_a_bad_task_budget_names_the_field(tmp_path):
    def over(fields, task="drawer-open-v3"):
        return lambda d: d.update(task_budgets={task: {"quick": fields}})
    msg = broken(tmp_path, over({"train_steps": 3}))  # eval_every (5) of the suite's budget is now too late
    assert "task_budgets.drawer-open-v3.quick.eval_every: must be at most train_steps (3)" in msg
    msg = broken(tmp_path, over({"ppo_batch_sise": 128}))
    assert "task_budgets.drawer-open-v3.quick.ppo_batch_sise: unknown key (did you mean 'ppo_batch_size'?)" in msg
    msg = broken(tmp_path, over({"policy_input": "points"}))
    assert "task_budgets.drawer-open-v3.quick.policy_input: a row's policy input is its suite's" in msg
    msg = broken(tmp_path, over({"train_steps": 8}, task="door-open-v3"))
    assert "task_budgets.door-open-v3: not one of the spec's tasks (drawer-open-v3)" in msg


def test_eval_every_at_most_train_steps(tmp_path):
    msg = broken(tmp_path, lambda d: d["budgets"]["metaworld"]["quick"].update(eval_every=11))
    assert "budgets.metaworld.quick.eval_every: must be at most train_steps (10)" in msg
    data = copy.deepcopy(BASE)  # a scale that trains nothing (evaluates only) may say anything
    data["budgets"]["metaworld"]["paper"].update(train_steps=0, eval_every=50)
    load_spec(write(tmp_path, data))


def test_percentages_tolerances_and_margins(tmp_path):
    msg = broken(tmp_path, lambda d: d["paper"]["drawer-open-v3"].update(ReLAM=150.0))
    assert "paper.drawer-open-v3.ReLAM: Input should be less than or equal to 100 (got 150.0)" in msg
    msg = broken(tmp_path, lambda d: d["paper"]["drawer-open-v3"].update(ReLAM=-0.5))
    assert "paper.drawer-open-v3.ReLAM: Input should be greater than or equal to 0" in msg
    msg = broken(tmp_path, lambda d: d.update(tolerance={"quick": -1.0}))
    assert "tolerance.quick: Input should be greater than or equal to 0" in msg
    msg = broken(tmp_path, lambda d: d["claims"][0].update(margin={"paper": -5}))
    assert "claims[0].margin.paper: Input should be greater than or equal to 0" in msg
    msg = broken(tmp_path, lambda d: d["claims"][0].update(margin={"paper": "5"}))
    assert "claims[0].margin.paper: Input should be a valid number (got '5')" in msg


def test_exponent_without_a_dot_is_a_float(tmp_path):
    """YAML 1.1 reads 3e-4 as a string; the spec loader reads it as the number the author meant."""
    data = copy.deepcopy(BASE)
    data["budgets"]["metaworld"]["smoke"]["learning_rate"] = "LR"
    text = yaml.safe_dump(data).replace("learning_rate: LR", "learning_rate: 3e-4")
    spec = load_spec(write(tmp_path, text))
    assert spec.budget("drawer-open-v3", "smoke").learning_rate == 3e-4
    assert yaml.load("a: 1e5\nb: '3e-4'\nc: 12\n", Loader=SpecLoader) == {"a": 1e5, "b": "3e-4", "c": 12}


def test_wrong_type(tmp_path):
    msg = broken(tmp_path, lambda d: d["budgets"]["metaworld"]["quick"].update(train_steps="lots"))
    assert "budgets.metaworld.quick.train_steps" in msg and "integer" in msg and "'lots'" in msg


def test_missing_field(tmp_path):
    msg = broken(tmp_path, lambda d: d.pop("report"))
    assert "report" in msg and "Field required" in msg


def test_bad_literal(tmp_path):
    msg = broken(tmp_path, lambda d: d.update(report="chart"))
    assert "report" in msg and "'table' or 'curves'" in msg


def test_unknown_scale_in_budgets(tmp_path):
    def mutate(d):
        d["budgets"]["metaworld"]["smoek"] = d["budgets"]["metaworld"].pop("smoke")
    msg = broken(tmp_path, mutate)
    assert "budgets.metaworld.smoek" in msg and "budgets.metaworld.smoke" in msg


def test_unknown_task(tmp_path):
    msg = broken(tmp_path, lambda d: d.update(tasks=["drawer-open-v3", "drawer-opn-v3"]))
    assert "tasks[1]" in msg and "drawer-opn-v3" in msg and "door-open-v3" in msg  # lists known tasks


def test_missing_budget_for_suite(tmp_path):
    msg = broken(tmp_path, lambda d: d.update(tasks=["drawer-open-v3", "PushCube-v1"]))
    assert "budgets" in msg and "maniskill" in msg


def test_unknown_method(tmp_path):
    msg = broken(tmp_path, lambda d: d["methods"][1].update(method="relamm"))
    assert "methods[1].method" in msg and "relamm" in msg and "dacfo" in msg and "random" in msg


def test_unknown_method_setting(tmp_path):
    msg = broken(tmp_path, lambda d: d["methods"][0]["settings"].update(n_point=4))
    assert "methods[0].settings.n_point" in msg and "relam" in msg


def test_bad_method_setting_value(tmp_path):
    msg = broken(tmp_path, lambda d: d["methods"][0]["settings"].update(reward_shape="quadratic"))
    assert "methods[0].settings.reward_shape" in msg and "piecewise_linear" in msg


def test_duplicate_labels(tmp_path):
    msg = broken(tmp_path, lambda d: d["methods"][1].update(label="ReLAM"))
    assert "duplicate labels" in msg


def test_paper_numbers_must_name_known_cells(tmp_path):
    msg = broken(tmp_path, lambda d: d["paper"]["drawer-open-v3"].update(ReLAMM=3.0))
    assert "paper.drawer-open-v3.ReLAMM" in msg


def test_claim_with_unknown_label(tmp_path):
    msg = broken(tmp_path, lambda d: d["claims"][0].update(than=["Synthetc"]))
    assert "claims[0].than[0]" in msg and "Synthetc" in msg


def test_claim_with_unknown_kind(tmp_path):
    msg = broken(tmp_path, lambda d: d["claims"][0].update(kind="sorted"))
    assert "claims[0]" in msg and "ordering" in msg


def test_bad_seeds(tmp_path):
    assert "duplicate seeds" in broken(tmp_path, lambda d: d.update(seeds=[1, 1]))


def test_invalid_yaml_and_non_mapping(tmp_path):
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(SpecError, match="mapping at the top level"):
        load_spec(write(tmp_path, "- a\n- b\n"))


def test_name_must_match_file(tmp_path):
    with pytest.raises(SpecError, match="must match the file name"):
        load_spec(write(tmp_path, BASE, name="other"))


def test_unknown_spec_name():
    with pytest.raises(SpecError, match="table4"):  # lists the known specs
        load_spec("tabel4")


def test_shipped_specs_validate_and_expand():
    names = list_specs()
    assert {"table4", "fig4", "fig5", "fig6a", "fig6b", "fig6c", "fig6c_images"} <= set(names)
    for n in names:
        spec = load_spec(n)
        for scale in ("smoke", "quick", "paper"):
            runs = expand(spec, scale)
            assert len(runs) == len(spec.tasks) * len(spec.methods) * len(spec.seeds_at(scale))
            assert len({r.key for r in runs}) == len(runs), f"{n}: two runs share a key"


def test_table4_carries_the_papers_numbers():
    spec = load_spec("table4")
    assert spec.paper_value("drawer-open-v3", "ReLAM") == 100.0
    assert spec.paper_value("button-press-wall-v3", "DACfO") == 47.8
    assert spec.paper_value("PushCube-v1", "IS") == 46.7
    assert spec.paper_value("PickCube-v1", "ReLAM") == 88.0  # appendix F, Table 4
    assert len(spec.cell_claims()) == 25
    kinds = {type(c) for c in spec.claims}
    assert OrderingClaim in kinds and CloseClaim in kinds


@pytest.mark.parametrize("scale", ["smoke", "quick", "paper"])
@pytest.mark.parametrize("name", ["fig4", "fig6c_images", "online_image"])
def test_figure_runs_are_shared_with_table4(name, scale):
    """Fig. 4, Fig. 6c's image rows and online_image repeat Table 4's Meta-World budget row by value
    (four YAML files): every run of theirs is one of Table 4's (the same run key), so one `relam run`
    makes it for all, and a row edited in one file but not the others fails here."""
    t4 = {r.key for r in expand(load_spec("table4"), scale)}
    runs = expand(load_spec(name), scale)
    assert runs and [(r.label, r.task, r.seed) for r in runs if r.key not in t4] == []


def test_table4_and_fig5_maniskill_quick_runs_are_offline_relam_runs():
    """Table 4's and Fig. 5's ManiSkill cells at the quick scale use offline_relam's measured IQL
    budget (the one that learns there), so one `relam run` of any of the three makes them all."""
    offline = {r.key for r in expand(load_spec("offline_relam"), "quick")}
    for name in ("table4", "fig5"):
        cells = [r for r in expand(load_spec(name), "quick")
                 if r.task in ("PushCube-v1", "PickCube-v1") and r.method != "random"]
        assert len(cells) == 2 * 5 * 3 and {r.key for r in cells} <= offline, name
    # the paper scale keeps the paper's policy input (no joint positions) in Table 4
    assert load_spec("table4").budget("PushCube-v1", "paper").policy_input != "image+points+proprio"


def test_ablation_variants_differ_only_in_settings():
    runs = expand(load_spec("fig6a"), "paper")
    assert sorted({r.settings["n_points"] for r in runs}) == [4, 8, 12]
    shapes = {r.settings["reward_shape"] for r in expand(load_spec("fig6b"), "smoke")}
    assert shapes == {"piecewise_linear", "linear", "exponential", "logistic"}
