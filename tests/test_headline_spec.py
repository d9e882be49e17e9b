"""experiments/headline.yaml, the README's main job: ReLAM on Drawer Open (points-only loop) next to
Random, sized for about an hour on 2 cores at the quick scale."""
from relam.experiments import expand, load_spec
from relam.experiments.spec import OrderingClaim


def test_headline_relam_runs_are_online_points_drawer_runs():
    """The same budgets at every scale: one `relam run` of either spec makes the runs of both."""
    head, online = load_spec("headline"), load_spec("online_points")
    for scale in ("smoke", "quick", "paper"):
        relam = {r.key for r in expand(head, scale) if r.method == "relam"}
        assert relam and relam <= {r.key for r in expand(online, scale) if r.task == "drawer-open-v3"}, scale


def test_headline_quick_fits_the_main_job():
    spec = load_spec("headline")
    assert spec.tasks == ["drawer-open-v3"] and spec.seeds_at("quick") == [0]
    b = spec.budget("drawer-open-v3", "quick")
    assert (b.train_steps, b.eval_every, b.eval_episodes, b.n_demos, b.policy_input, b.n_envs, b.lr_schedule) == \
        (1_000_000, 50_000, 30, 100, "points", 8, "linear")
    assert [m.method for m in spec.methods] == ["relam", "relam", "random"] and spec.entry("Random").reference
    assert spec.paper_value("drawer-open-v3", "ReLAM (anticipated)") == 100.0
    [claim] = spec.claims
    assert isinstance(claim, OrderingClaim) and claim.better == "ReLAM (anticipated)" and claim.than == ["Random"]
    assert claim.margin.at("quick") == 0.0 and claim.margin.at("smoke") is None
