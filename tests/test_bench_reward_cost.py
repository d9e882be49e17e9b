"""The reward benchmark's video export: what ``videos`` writes, ``ranking --videos`` reads back.

The export exists so the quick-scale Diffusion Reward ranking can run on a GPU box that has no
simulators; a mismatch between writer and reader would silently rank the wrong videos.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_reward_cost.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_reward_cost", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _video(level: int, t: int = 6) -> np.ndarray:
    v = np.full((t + 1, 128, 128, 3), level, np.uint8)
    v[:, :, :, 0] = np.arange(t + 1, dtype=np.uint8)[:, None, None] * 10  # frames differ
    return v


def test_exported_videos_read_back_in_their_roles(bench, tmp_path, monkeypatch):
    parts = ([_video(10), _video(20)], [_video(30)], [_video(200)], [_video(220), _video(240)])
    monkeypatch.setattr(bench, "_ranking_videos", lambda task, n_train, n_test, n_random_train=None: parts)
    out = tmp_path / "v.npz"
    args = type("A", (), {"tasks": ["drawer-open-v3"], "n_train": 2, "n_test": 1,
                          "n_random_train": 1, "out": str(out)})()
    assert bench.export_videos(args) == {"drawer-open-v3": [2, 1, 1, 2]}
    back = bench._videos_from_file(str(out), "drawer-open-v3")
    assert [len(p) for p in back] == [2, 1, 1, 2]
    # 64 px policy images in (T+1,H,W,3) layout, each in its role and order
    assert back[0][1].shape == (7, 64, 64, 3)
    assert [int(v[0, 0, 0, 1]) for p in back for v in p] == [10, 20, 30, 200, 220, 240]
    with pytest.raises(SystemExit, match="bench_reward_cost.py videos door-open-v3"):
        bench._videos_from_file(str(out), "door-open-v3")
