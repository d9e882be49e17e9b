"""Results outlive a machine: `relam export` / `relam import` carry the run records (never the
checkpoints) between two caches, and the table made from the imported copy is the same; a corrupt
or foreign archive is refused whole, with the store left as it was."""
from __future__ import annotations

import io
import json
import tarfile

import pytest
import yaml

from relam import cli
from relam.experiments import ResultStore, expand, load_spec
from relam.experiments.archive import ArchiveError, export_records, import_records, read_archive


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    """A spec of real (synthetic, simulator-free) runs: two finished columns and a failing one."""
    monkeypatch.delenv("RELAM_SCALE", raising=False)
    data = {"name": "toyarch", "title": "toy", "report": "table", "tasks": ["drawer-open-v3", "PushCube-v1"],
            "methods": [{"label": "High", "method": "synthetic", "settings": {"level": 0.8}},
                        {"label": "Low", "method": "synthetic", "settings": {"level": 0.3}},
                        {"label": "Broken", "method": "synthetic", "settings": {"fail": True}}],
            "seeds": [0, 1, 2],
            "budgets": {suite: {s: {"train_steps": 20, "eval_every": 10, "eval_episodes": 1}
                                for s in ("smoke", "quick", "paper")} for suite in ("metaworld", "maniskill")},
            "paper": {"drawer-open-v3": {"High": 90.0}}}
    path = tmp_path / "toyarch.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _use_cache(monkeypatch, path):
    monkeypatch.setenv("RELAM_CACHE", str(path))
    return ResultStore()


def _table(toy, out, capsys) -> str:
    assert cli.main(["table", str(toy), "--out", str(out), "--reps", "300"]) == 0
    return capsys.readouterr().out


def test_round_trip_between_two_caches_gives_the_same_table(toy, tmp_path, monkeypatch, capsys):
    a = _use_cache(monkeypatch, tmp_path / "A")
    assert cli.main(["run", str(toy), "--no-progress"]) == 1  # the Broken column fails (recorded)
    capsys.readouterr()
    (a.work_dir(expand(load_spec(toy), "smoke")[0].key) / "checkpoint.zip").write_bytes(b"weights")
    table_a = _table(toy, tmp_path / "out", capsys)
    assert "— (3 failed)" in table_a and "[paper 90.0" in table_a
    archive = tmp_path / "records.tar.gz"
    assert cli.main(["export", str(archive)]) == 0
    assert f"exported 18 records from {a.root}" in capsys.readouterr().out
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert len(names) == 19 and not any("work" in n or "checkpoint" in n for n in names)

    b = _use_cache(monkeypatch, tmp_path / "B")
    assert _table(toy, tmp_path / "out", capsys) != table_a  # an empty store: a different table
    assert cli.main(["import", str(archive)]) == 0
    assert capsys.readouterr().out.startswith("18 records imported (0 of them replacing failed runs), "
                                              "0 already present")
    assert _table(toy, tmp_path / "out", capsys) == table_a
    assert b.keys() == a.keys()
    for key in a.keys():  # byte for byte, provenance included
        assert b.record_path(key).read_bytes() == a.record_path(key).read_bytes()
    assert not (b.root / "work").exists()

    # importing again adds nothing
    assert cli.main(["import", str(archive)]) == 0
    assert capsys.readouterr().out.startswith("0 records imported (0 of them replacing failed runs), "
                                              "18 already present")


def test_a_finished_record_replaces_a_failed_one_and_present_ones_are_kept(toy, tmp_path, monkeypatch):
    a = _use_cache(monkeypatch, tmp_path / "A")
    cli.main(["run", str(toy), "--no-progress", "--methods", "High"])
    archive = tmp_path / "high.tar.gz"
    exported = export_records(archive)
    assert len(exported) == 6

    b = _use_cache(monkeypatch, tmp_path / "B")
    failed, kept = exported[0], exported[1]
    b.put({"key": failed, "status": "failed", "error": "RuntimeError: died here", "schema": 1})
    b.put({"key": kept, "status": "ok", "success": 0.123, "schema": 1})
    summary = import_records(archive)
    assert summary.replaced == [failed] and summary.skipped == [kept] and len(summary.imported) == 4
    assert b.get(failed) == a.get(failed)
    assert b.get(kept)["success"] == 0.123


def _archive_with(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _good_members(tmp_path, monkeypatch, toy) -> dict[str, bytes]:
    _use_cache(monkeypatch, tmp_path / "A")
    cli.main(["run", str(toy), "--no-progress", "--methods", "High", "--tasks", "drawer-open-v3"])
    good = export_records(tmp_path / "good.tar.gz")
    assert len(good) == 3
    with tarfile.open(tmp_path / "good.tar.gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


@pytest.mark.parametrize("damage, message", [
    ("truncated", "is corrupt or not a .tar.gz archive"),
    ("not-gzip", "is corrupt or not a .tar.gz archive"),
    ("record-edited", "does not match its sha256 in the manifest"),
    ("record-dropped", "the manifest and the records disagree"),
    ("no-manifest", "has no relam-records/manifest.json"),
    ("foreign-member", "unexpected member '../../etc/passwd'"),
    ("other-format", "archive format 'relam-records/99'"),
])
def test_a_corrupt_archive_is_refused_and_nothing_is_imported(toy, tmp_path, monkeypatch, capsys, damage, message):
    members = _good_members(tmp_path, monkeypatch, toy)
    bad = tmp_path / "bad.tar.gz"
    runs = sorted(n for n in members if "/runs/" in n)
    if damage == "truncated":
        data = (tmp_path / "good.tar.gz").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "not-gzip":
        bad.write_bytes(b"these are not the records you are looking for")
    else:
        if damage == "record-edited":
            rec = json.loads(members[runs[1]])
            rec["success"] = 1.0
            members[runs[1]] = json.dumps(rec).encode()
        elif damage == "record-dropped":
            del members[runs[2]]
        elif damage == "no-manifest":
            del members["relam-records/manifest.json"]
        elif damage == "foreign-member":
            members["../../etc/passwd"] = b"root:x:0:0"
        elif damage == "other-format":
            man = json.loads(members["relam-records/manifest.json"])
            man["format"] = "relam-records/99"
            members["relam-records/manifest.json"] = json.dumps(man).encode()
        _archive_with(bad, members)
    with pytest.raises(ArchiveError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_archive(bad)

    b = _use_cache(monkeypatch, tmp_path / "B")
    assert cli.main(["import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"relam import: error: refused: {bad}") and message in err
    assert "nothing was imported" in err and "relam export" in err
    assert b.keys() == []


def test_import_of_a_missing_file_and_export_name_are_usage_errors(tmp_path, monkeypatch, capsys):
    _use_cache(monkeypatch, tmp_path / "A")
    assert cli.main(["import", str(tmp_path / "nope.tar.gz")]) == 2
    assert "nope.tar.gz" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path / "out.zip")]) == 2
    assert "name it OUT.tar.gz" in capsys.readouterr().err


def test_a_failed_write_rolls_the_import_back(toy, tmp_path, monkeypatch):
    """All or nothing: when writing the third record fails, the two written before are removed
    and a local record that was replaced is put back."""
    members = _good_members(tmp_path, monkeypatch, toy)
    archive = _archive_with(tmp_path / "all.tar.gz", members)
    b = _use_cache(monkeypatch, tmp_path / "B")
    keys = sorted(n.rsplit("/", 1)[1][:-5] for n in members if "/runs/" in n)
    b.put({"key": keys[0], "status": "failed", "error": "x", "schema": 1})
    before = b.record_path(keys[0]).read_bytes()
    b.record_path(keys[2]).parent.mkdir(parents=True, exist_ok=True)
    b.record_path(keys[2]).mkdir()  # a folder where the third record goes: its write fails
    with pytest.raises(OSError):
        import_records(archive)
    assert b.record_path(keys[0]).read_bytes() == before
    assert not b.record_path(keys[1]).exists()


def test_export_of_one_spec_at_one_scale(toy, tmp_path, monkeypatch, capsys):
    """``relam export OUT SPEC --scale S`` carries that sweep's records only."""
    _use_cache(monkeypatch, tmp_path / "A")
    cli.main(["run", str(toy), "--no-progress", "--methods", "High"])
    cli.main(["run", str(toy), "--no-progress", "--methods", "Low", "--scale", "quick"])
    capsys.readouterr()
    assert cli.main(["export", str(tmp_path / "q.tar.gz"), str(toy), "--scale", "quick"]) == 0
    assert "exported 6 records of toyarch [quick]" in capsys.readouterr().out
    _, records = read_archive(tmp_path / "q.tar.gz")
    quick = {r.key for r in expand(load_spec(toy), "quick") if r.label == "Low"}
    assert set(records) == quick
    assert cli.main(["export", str(tmp_path / "all.tar.gz")]) == 0
    assert len(read_archive(tmp_path / "all.tar.gz")[1]) == 12
