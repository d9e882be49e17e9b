"""benchmarks/bench_anticipation.py's training-free reference (nearest-demo copy) and its table."""
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_anticipation.py"
    spec = importlib.util.spec_from_file_location("bench_anticipation", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _item(seed, obj_uv, arm_uv, final_shift):
    kp0 = np.array([obj_uv, *arm_uv], np.float32)
    return SimpleNamespace(task="t", seed=seed, on_object=np.array([True] + [False] * len(arm_uv)),
                           keypoints=np.stack([kp0, kp0 + np.float32(final_shift)]))


def test_nn_copy_known_answer(bench):
    # training demos (seeds 0-2) and one held-out demo (the largest seed); its object lies nearest
    # demo 1's, whose arm points are 3 px off in u and whose final row moved 4 px more in v
    items = [_item(0, (10, 10), [(50, 50)], (0, 0)),
             _item(1, (30, 30), [(53, 50)], (0, 4)),
             _item(2, (90, 90), [(50, 50)], (0, 0)),
             _item(3, (31, 30), [(50, 50)], (0, 0))]
    out = bench.nn_copy_error(items, holdout=1)
    assert out["nn_initial_error_px"] == pytest.approx((1 + 3) / 2)
    assert out["nn_final_error_px"] == pytest.approx((np.hypot(1, 4) + np.hypot(3, 4)) / 2)


def test_error_table(bench):
    table = bench.error_table([("PushCube-v1", "first_frame", {"initial_error_px": 1.234, "final_error_px": 2.0,
                                                               "final_error_px_median": 1.5,
                                                               "nn_initial_error_px": 3.0,
                                                               "nn_final_error_px": float("nan")}),
                               ("PickCube-v1", "fps", {"nn_initial_error_px": 4.0, "nn_final_error_px": 5.0})])
    lines = table.splitlines()
    assert lines[2] == "| PushCube-v1 | first_frame | 1.23 | 2.00 | 1.50 | 3.00 | - |"
    assert lines[3] == "| PickCube-v1 | fps | - | - | - | 4.00 | 5.00 |"
