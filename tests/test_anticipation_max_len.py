"""The run path's anticipation model can emit the longest plan of its data (door-open-v3's demos
give up to 13 rows from its camera, more than the presets' max_len of 12)."""

from __future__ import annotations

import types

import numpy as np


def _trained_config(monkeypatch, tmp_path, rows: list[int]):
    import relam.anticipation as anticipation
    import relam.relam_method as rm

    class DS:
        settings = {"fake": True}

        def __iter__(self):
            return iter(types.SimpleNamespace(keypoints=np.zeros((r, 4, 2), np.float32)) for r in rows)

    seen = {}

    def train(dataset, config, out, holdout=0, progress=False):
        seen["config"] = config
        return types.SimpleNamespace()

    monkeypatch.setenv("RELAM_CACHE", str(tmp_path))
    monkeypatch.setattr(rm, "subgoal_dataset", lambda *a, **k: DS())
    monkeypatch.setattr(anticipation, "train_anticipation", train)
    rm.anticipation_model("drawer-open-v3", 4, 20, "smoke")
    return seen["config"]


def test_max_len_grows_to_the_longest_plan(monkeypatch, tmp_path):
    from relam.anticipation import AnticipationConfig

    preset = AnticipationConfig.for_scale("smoke").max_len
    assert _trained_config(monkeypatch, tmp_path, [5, preset + 1, 7]).max_len == preset + 1


def test_max_len_kept_when_plans_fit(monkeypatch, tmp_path):
    from relam.anticipation import AnticipationConfig

    preset = AnticipationConfig.for_scale("smoke").max_len
    assert _trained_config(monkeypatch, tmp_path, [3, preset]).max_len == preset
