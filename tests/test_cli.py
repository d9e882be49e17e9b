"""The ``relam`` command line: help for every subcommand, run/status/table/plot on a toy spec, spec
names resolved in experiments/, bad specs reported (exit 2) and the subcommand registry."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from relam import cli
from relam.cache import REPO_ROOT


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RELAM_SCALE", raising=False)
    data = {"name": "toycli", "title": "toy", "report": "curves", "tasks": ["drawer-open-v3"],
            "methods": [{"label": "S", "method": "synthetic"},
                        {"label": "F", "method": "synthetic", "settings": {"fail": True}}],
            "seeds": [0, 1],
            "budgets": {"metaworld": {s: {"train_steps": 20, "eval_every": 10, "eval_episodes": 1}
                                      for s in ("smoke", "quick", "paper")}}}
    path = tmp_path / "toycli.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("sub", ["run", "status", "table", "plot"])
def test_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([sub, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "spec" in out and "--scale" in out
    assert "%%" not in out  # argparse does not %-format descriptions: no doubled percent signs


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for sub in ("run", "status", "table", "plot"):
        assert sub in out


def test_run_status_table_plot(toy, tmp_path, capsys):
    assert cli.main(["run", str(toy), "--scale", "smoke", "--no-progress"]) == 1  # F runs failed
    out = capsys.readouterr().out
    assert "4 runs: 2 ok, 2 failed" in out and "synthetic failure" in out
    assert cli.main(["run", str(toy), "--no-progress"]) == 1  # default scale smoke: nothing new
    assert "0 ran now, 4 already done" in capsys.readouterr().out
    assert cli.main(["status", str(toy), "-v"]) == 0
    out = capsys.readouterr().out
    assert "2 failed, 2 ok" in out and "success=" in out
    assert cli.main(["table", str(toy), "--out", str(tmp_path / "rep"), "--reps", "100"]) == 0
    assert "| Task | S | F |" in capsys.readouterr().out
    assert (tmp_path / "rep" / "table.tex").is_file()
    assert cli.main(["plot", str(toy), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "curves.png").is_file()


def test_scale_from_environment(toy, monkeypatch, capsys):
    monkeypatch.setenv("RELAM_SCALE", "quick")
    assert cli.main(["status", str(toy)]) == 0
    assert "[quick]" in capsys.readouterr().out


def test_spec_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "cache"))
    assert cli.main(["status", "fig6a", "--scale", "paper"]) == 0
    assert "fig6a [paper]: 15 runs: 15 missing" in capsys.readouterr().out


def test_bad_spec_exit_code_and_message(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntitel: x\n")
    assert cli.main(["status", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "titel" in err
    assert cli.main(["run", "no-such-spec"]) == 2
    assert "table4" in capsys.readouterr().err


def test_add_subcommand(monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMANDS", dict(cli.SUBCOMMANDS))

    def setup(p):
        p.add_argument("--n", type=int, default=1)

    def run(args):
        """Say hello N times."""
        print("hello" * args.n)
        return 0

    cli.add_subcommand("hello", setup, run)
    assert cli.main(["hello", "--n", "2"]) == 0
    assert capsys.readouterr().out.strip() == "hellohello"
    assert cli.SUBCOMMANDS["hello"].help == "Say hello N times."


def test_console_script():
    exe = REPO_ROOT / ".venv" / "bin" / "relam"
    if not exe.exists():
        exe = shutil.which("relam")
        if exe is None:
            pytest.skip("relam console script not installed")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "status" in out.stdout


def test_tool_subcommands_pass_their_arguments_through(capsys):
    """`relam demos --help` is the demos tool's own help, not a stub."""
    from relam.cli import main

    with pytest.raises(SystemExit) as e:
        main(["demos", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "make" in out and "summary" in out and "view" in out
