"""One sweep survives a corrupt run record, a damaged demo and a damaged checkpoint (issue 19).

A real ReLAM cell at smoke scale (drawer-open-v3, points-only, 3 demos): run it, damage the three
kinds of state a sweep leaves on disk, add a cell that must read the demos again, and run the sweep
once more. Every damaged file ends up in a ``quarantine/`` folder with a warning, and every run
finishes.
"""
from __future__ import annotations

import pytest
import yaml

from relam import cli
from relam.cache import cache_dir
from relam.experiments import expand, load_spec
from relam.experiments.store import ResultStore

pytestmark = pytest.mark.slow


def _spec(path, n_points: list[int]):
    budget = {"train_steps": 128, "eval_every": 64, "eval_episodes": 1, "n_demos": 3, "horizon": 30,
              "policy_input": "points"}
    data = {"name": "healing", "title": "self-healing sweep", "report": "table", "tasks": ["drawer-open-v3"],
            "methods": [{"label": f"ReLAM {n}", "method": "relam", "settings": {"n_points": n}} for n in n_points],
            "seeds": [0], "budgets": {"metaworld": {s: budget for s in ("smoke", "quick", "paper")}}}
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_sweep_finishes_over_a_corrupt_record_demo_and_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RELAM_SCALE", raising=False)
    spec = _spec(tmp_path / "healing.yaml", [4])
    assert cli.main(["run", str(spec), "--no-progress"]) == 0
    capsys.readouterr()
    store = ResultStore()
    key = expand(load_spec(spec), "smoke")[0].key

    store.record_path(key).write_text('{"status": "ok", "succ')  # a record cut short
    work = store.work_dir(key)
    (work / "checkpoint.zip").write_bytes(b"PK\x03\x04 not a whole zip")  # a checkpoint cut short
    (work / "state.json").write_text('{"num_timesteps": 64, "curve": [], "train_rows": [], "eval_rows": []}')
    demo = sorted((cache_dir() / "demos" / "drawer-open-v3").glob("expert-*/*.npz"))[0]
    demo.write_bytes(demo.read_bytes()[:1000])  # a demo cut short

    spec = _spec(tmp_path / "healing.yaml", [4, 8])  # the 8-point cell reads the demos again
    assert cli.main(["run", str(spec), "--no-progress"]) == 0
    assert "2 ok, 0 failed" in capsys.readouterr().out
    assert len(store.quarantined({key})) == 1
    assert sorted(p.name.split(".")[0] for p in (work / "quarantine").iterdir()) == ["checkpoint", "state"]
    assert len(list(demo.parent.glob("quarantine/*"))) == 1 and demo.exists()
    assert cli.main(["status", str(spec)]) == 0
    assert "2 runs: 2 ok" in capsys.readouterr().out
