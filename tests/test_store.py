"""The result store heals itself: an unreadable record is moved aside (quarantined), named in a
warning, and its run counts as not done, so run, status and table go on and the next run redoes it."""
from __future__ import annotations

import logging

import pytest
import yaml

from relam import cli
from relam.experiments import ResultStore, expand, load_spec
from relam.experiments.store import machine_info

GOOD = {"key": "k1", "status": "ok", "success": 1.0}


@pytest.fixture()
def store(tmp_path):
    s = ResultStore(tmp_path / "results")
    s.put(dict(GOOD))
    return s


@pytest.mark.parametrize("text, problem", [
    ('{"key": "k1", "status": "o', "not valid JSON"),  # cut short
    ("\x00\x00\x00", "not valid JSON"),                   # zeroed by a crash
    ("[]", "not a run record"),                           # JSON, but not a record
])
def test_corrupt_record_is_quarantined(store, caplog, text, problem):
    path = store.record_path("k1")
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="relam.experiments.store"):
        assert store.get("k1") is None
    assert not path.exists()
    [moved] = store.quarantined()
    assert moved.read_text() == text and moved.name.startswith("k1.")
    assert str(path) in caplog.text and problem in caplog.text and str(moved) in caplog.text
    assert store.get("k1") is None and len(store.quarantined()) == 1  # missing now, warned once
    assert store.quarantined({"other"}) == []


def test_good_and_missing_records_are_left_alone(store, caplog):
    with caplog.at_level(logging.WARNING):
        assert store.get("k1") == {**GOOD, "machine": machine_info()}
        assert store.get("nope") is None
    assert store.quarantined() == [] and caplog.text == ""


def test_a_record_being_rewritten_is_not_moved(store):
    """While another process holds the run's lock (it is producing that run), the bad file is left
    for that process to replace, and the run reads as missing."""
    store.record_path("k1").write_text("{")
    with store.lock("k1"):
        assert store.get("k1") is None
    assert store.record_path("k1").exists() and store.quarantined() == []


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RELAM_SCALE", raising=False)
    data = {"name": "toystore", "title": "toy", "report": "table", "tasks": ["drawer-open-v3"],
            "methods": [{"label": "S", "method": "synthetic"}], "seeds": [0, 1, 2],
            "budgets": {"metaworld": {s: {"train_steps": 20, "eval_every": 10, "eval_episodes": 1}
                                      for s in ("smoke", "quick", "paper")}}}
    path = tmp_path / "toystore.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_sweep_status_and_table_survive_a_corrupt_record(toy, tmp_path, capsys, caplog):
    assert cli.main(["run", str(toy), "--no-progress"]) == 0
    assert "3 ran now" in capsys.readouterr().out
    key = expand(load_spec(toy), "smoke")[1].key
    bad = ResultStore().record_path(key)
    bad.write_text(bad.read_text()[:40])  # a record cut short

    with caplog.at_level(logging.WARNING, logger="relam.experiments.store"):
        assert cli.main(["status", str(toy)]) == 0
    out = capsys.readouterr().out
    assert "3 runs: 1 missing, 2 ok" in out
    assert "quarantined: 1 corrupt record(s)" in out
    assert str(bad) in caplog.text  # the warning names the file

    assert cli.main(["table", str(toy), "--out", str(tmp_path / "rep"), "--reps", "50"]) == 0
    assert "| Task | S |" in capsys.readouterr().out

    assert cli.main(["run", str(toy), "--no-progress"]) == 0  # redoes the run, and only it
    assert "1 ran now, 2 already done" in capsys.readouterr().out
    assert cli.main(["status", str(toy)]) == 0
    assert "3 runs: 3 ok" in capsys.readouterr().out


def test_run_quarantines_while_holding_the_lock(toy, capsys):
    """The runner reads a record under the run's lock; a corrupt one is moved aside there too."""
    assert cli.main(["run", str(toy), "--no-progress"]) == 0
    capsys.readouterr()
    key = expand(load_spec(toy), "smoke")[0].key
    store = ResultStore()
    store.record_path(key).write_text("not json")
    from relam.experiments.runner import execute_run

    outcome, rec = execute_run(expand(load_spec(toy), "smoke")[0], store_root=store.root)
    assert outcome == "ran" and rec["status"] == "ok"
    assert len(store.quarantined({key})) == 1


def test_quarantine_moves_only_the_file_found_damaged(tmp_path, caplog):
    """Another process may have moved the bad file and written a good one meanwhile: that one stays."""
    import numpy as np

    from relam.cache import atomic_save_npz, npz_problem, quarantine

    path = atomic_save_npz(tmp_path / "d" / "x.npz", a=np.arange(3))
    assert npz_problem(path, ["a"]) is None
    assert "arrays missing: b" in npz_problem(path, ["a", "b"])
    path.write_bytes(path.read_bytes()[:20])
    assert "BadZipFile" in npz_problem(path)
    seen = path.stat()
    atomic_save_npz(path, a=np.arange(3))  # replaced by a good file after it was found bad
    assert quarantine(path, "cut short", seen) is None and path.exists()
    with caplog.at_level(logging.WARNING, logger="relam.cache"):
        moved = quarantine(path, "cut short", path.stat())
    assert moved == tmp_path / "d" / "quarantine" / moved.name and not path.exists()
    assert str(path) in caplog.text and str(moved) in caplog.text


def test_status_reports_quarantined_cache_files(toy, capsys, tmp_path):
    assert cli.main(["status", str(toy)]) == 0
    assert "damaged cache file" not in capsys.readouterr().out
    moved = tmp_path / "cache" / "demos" / "drawer-open-v3" / "expert-0" / "quarantine" / "expert_001.1-2.npz"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(b"PK")
    assert cli.main(["status", str(toy)]) == 0
    out = capsys.readouterr().out
    assert "quarantined: 1 damaged cache file(s)" in out and str(moved) in out
