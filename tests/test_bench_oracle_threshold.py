"""The Oracle-threshold benchmark counts stages with the reward's own stage machine: in order, one
target at a time, each passed when the similarity reaches the threshold (a frame near a later
subgoal does not count before the earlier ones are passed)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_oracle_threshold.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_oracle_threshold", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _unit(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([np.cos(a), np.sin(a)])


def test_stages_are_passed_in_order_at_the_threshold(bench):
    targets = np.stack([_unit(30), _unit(60)])
    near_both = np.stack([_unit(29), _unit(61)])  # cos 1 deg = 0.99985 to each, in order
    assert bench.stages_passed(near_both, targets, 0.999) == 2
    assert bench.stages_passed(near_both[::-1], targets, 0.999) == 1  # the second first: no credit
    off = np.stack([_unit(40), _unit(70)])  # 10 deg from each: cos = 0.985
    assert bench.stages_passed(off, targets, 0.99) == 0
    assert bench.stages_passed(off, targets, 0.98) == 2
