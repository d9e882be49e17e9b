"""The refine diagnostic's summary (benchmarks/bench_refine_reward.py): what it says about a policy's
episodes is what the README's reading of the refinement rests on ("the reward ranks success, PPO
did not climb it"), so its ranking and its empty cases are checked here."""
import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_refine_reward.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_refine_reward", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _eps(rows):
    return [{"seed": i, "success": bool(ok), "model_return": m, "env_return": e} for i, (ok, m, e) in enumerate(rows)]


def test_summary_ranks_successes_by_model_return(bench):
    s = bench.summarise(_eps([(1, 110.0, 1200.0), (0, 12.0, 180.0), (1, 100.0, 1100.0), (0, 20.0, 300.0)]))
    assert s["success"] == 0.5
    assert s["model_return_success"] == 105.0 and s["model_return_failure"] == 16.0
    assert s["auc_success"] == 1.0  # every success out-earns every failure
    assert s["spearman_env"] == 1.0


def test_summary_reverse_order_reads_below_half(bench):
    s = bench.summarise(_eps([(1, 5.0, 1200.0), (0, 50.0, 180.0), (1, 8.0, 1100.0), (0, 40.0, 300.0)]))
    assert s["auc_success"] == 0.0
    assert s["spearman_env"] == -1.0


def test_summary_without_successes_is_valid_json(bench):
    """No success: no AUC and no success mean; a constant return: no Spearman (None, not NaN)."""
    s = bench.summarise(_eps([(0, 10.0, 100.0), (0, 10.0, 200.0), (0, 10.0, 300.0)]))
    assert s["success"] == 0.0 and s["auc_success"] is None and s["model_return_success"] is None
    assert s["spearman_env"] is None
    json.loads(json.dumps(s, allow_nan=False))
