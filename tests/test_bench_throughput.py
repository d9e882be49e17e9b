"""The throughput benchmark runs end to end on its cheapest parts and ends with its JSON figures;
its Table 4 projection adds up what it is given. No timing is asserted."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_smoke_raw_and_points_end_with_json(bench, capsys):
    assert bench.main(["--smoke", "--only", "raw,points"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "PROJECTION" in "\n".join(lines)
    fig = json.loads(lines[-1])
    for key in ("points_ppo_over_raw", "image_ppo_steps_per_s", "metaworld_norender_steps_per_s",
                "metaworld_render128_steps_per_s", "metaworld_render64_steps_per_s", "points_ppo_steps_per_s",
                "torch_cuda_available", "ppo_device", "projection"):
        assert key in fig
    assert fig["points_ppo_over_raw"] > 0 and fig["image_ppo_steps_per_s"] is None  # image not run
    assert fig["points_ppo"]["steps"] == fig["counts"]["points_steps"]
    assert fig["projection"]["complete"] is False and fig["projection"]["one_box_h"] is None


def test_bad_part_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.main(["--smoke", "--only", "raw,nope"])


@pytest.mark.parametrize("modes", ["nearest", "auto,auto", ","])
def test_bad_image_render_is_refused(bench, modes):
    with pytest.raises(SystemExit):
        bench.main(["--smoke", "--only", "image", "--image-render", modes])


def test_schedule_longest_first(bench):
    assert bench._schedule([1.0] * 10, 4) == 3.0
    assert bench._schedule([3, 3, 2, 2, 2], 2) == 7
    assert bench._schedule([5.0, 1.0], 8) == 5.0


def test_projection_adds_training_evaluation_and_relabelling(bench):
    plan = {
        "metaworld": {"tasks": ["a"], "horizon": {"a": 200}, "methods": ["relam", "dacfo"], "seeds": 2,
                      "train_steps": 1000, "eval_every": 500, "eval_episodes": 2},
        "maniskill": {"tasks": ["b"], "horizon": {"b": 100}, "methods": ["relam"], "seeds": 1,
                      "train_steps": 100, "eval_every": 50, "eval_episodes": 1},
    }
    fig = {"image_ppo_steps_per_s": 100.0, "image_eval_s_per_episode": 2.0, "image_eval_horizon": 200,
           "dacfo_s_per_1k": 1.0, "diffusion_s_per_1k": 10.0, "iql_steps_per_s": 10.0,
           "maniskill_render_steps_per_s": 20.0}
    p = bench.project_table4(fig, plan, cores=2, boxes=3)
    # metaworld: 1000/100 s training + 3 evaluations x 2 episodes x 2 s; dacfo + 1 s relabelling
    # maniskill: 100/10 s of IQL + 3 evaluations x 1 episode x 100/20 s
    runs = {"a/relam": 22.0, "a/dacfo": 23.0, "b/relam": 25.0}
    assert p["complete"] and p["runs"] == 5
    got = {k: v * 3600 for s in p["per_suite"].values() for k, v in s["run_h"].items()}
    assert got == pytest.approx(runs)
    assert p["cpu_h"] * 3600 == pytest.approx(2 * 22 + 2 * 23 + 25)
    assert p["one_box_h"] * 3600 == pytest.approx(bench._schedule([25, 23, 23, 22, 22], 2))
    assert p["cluster_h"] * 3600 == pytest.approx(25)
    del fig["iql_steps_per_s"]
    q = bench.project_table4(fig, plan, cores=2, boxes=3)
    assert not q["complete"] and q["cluster_h"] is None and q["missing"]
    assert not math.isnan(q["per_suite"]["metaworld"]["run_h"]["a/relam"])


def test_projection_takes_the_image_loop_in_cpu_time_when_measured(bench):
    """On a shared machine the wall rate moves with the load; the CPU-time rate is one idle core's."""
    plan = {"metaworld": {"tasks": ["a"], "horizon": {"a": 200}, "methods": ["relam"], "seeds": 1,
                          "train_steps": 1000, "eval_every": 500, "eval_episodes": 2}}
    fig = {"image_ppo_steps_per_s": 10.0, "image_eval_s_per_episode": 20.0, "image_eval_horizon": 200,
           "image_ppo_steps_per_cpu_s": 100.0, "image_eval_cpu_s_per_episode": 2.0}
    p = bench.project_table4(fig, plan, cores=1, boxes=1)
    assert p["per_suite"]["metaworld"]["run_h"]["a/relam"] * 3600 == pytest.approx(1000 / 100 + 3 * 2 * 2.0)


def test_projection_counts_the_video_baselines_offline_labelling_and_dacfo_online_phase(bench):
    plan = {"maniskill": {"tasks": ["b"], "horizon": {"b": 100}, "methods": ["relam", "dacfo", "diffusion_reward"],
                          "seeds": 1, "train_steps": 100, "eval_every": 50, "eval_episodes": 1,
                          "offline_trajectories": 20, "dacfo_online_steps": 1000}}
    fig = {"iql_steps_per_s": 10.0, "maniskill_render_steps_per_s": 20.0, "dacfo_s_per_1k": 1.0,
           "diffusion_s_per_1k": 10.0, "image_update_cpu_s_per_1k": 3.0}
    got = {k: v * 3600 for k, v in bench.project_table4(fig, plan, 1, 1)["per_suite"]["maniskill"]["run_h"].items()}
    base = 100 / 10 + 3 * 1 * 100 / 20  # IQL + 3 evaluation episodes
    # 20 x 100 = 2000 transitions labelled: 10 discriminators at 1 s/1k, or the video model at 10 s/1k;
    # DACfO's online phase: 1000 steps at 20 st/s, update 3 s/1k and relabelling 1 s/1k
    assert got == pytest.approx({"b/relam": base, "b/dacfo": base + 2 * 1.0 * 10 + 1000 / 20 + 1 * (3 + 1),
                                 "b/diffusion_reward": base + 2 * 10.0})
    plan_from_spec = bench.table4_plan()
    assert plan_from_spec["maniskill"]["offline_trajectories"] == 200
    assert plan_from_spec["maniskill"]["dacfo_online_steps"] == 100_000
