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


@pytest.mark.parametrize("sub", ["run", "status", "table", "plot", "report"])
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
    for sub in ("run", "status", "table", "plot", "report", "export", "import"):
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


@pytest.mark.parametrize("sub, words", [
    ("demos", ("make", "summary", "view")),
    ("subgoals", ("task", "--n-demos", "--num-points", "--segmenter", "--tracker", "--rebuild")),
    ("overlay", ("task", "--demo", "--out", "--kind", "--num-points", "--cotracker-path")),
    ("regression", ("--regenerate", "--checks", "reward_hand_track", "--expected")),
])
def test_moved_tool_subcommands_help(sub, words, capsys):
    """The tools' command lines live in relam.cli: each one's --help through relam.cli.main."""
    with pytest.raises(SystemExit) as e:
        cli.main([sub, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: relam {sub}" in out
    assert all(w in out for w in words), out


@pytest.mark.parametrize("sub", ["make", "summary", "view"])
def test_demos_subcommand_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demos", sub, "--help"])
    assert e.value.code == 0
    assert f"usage: relam demos {sub}" in capsys.readouterr().out


def test_library_modules_have_no_command_line():
    """demos, subgoals, overlay and regression are libraries: no argparse and no main(); their
    ``python -m`` shims hand the arguments to relam.cli."""
    import importlib

    for name in ("demos", "subgoals", "overlay", "regression"):
        text = (REPO_ROOT / "relam" / f"{name}.py").read_text()
        assert "argparse" not in text and "toolargs" not in text, name
        assert not hasattr(importlib.import_module(f"relam.{name}"), "main"), name
        assert f'main(["{name}", *sys.argv[1:]])' in text, name


def test_python_m_shim_runs_the_cli(tmp_path):
    import os
    import sys

    env = {**os.environ, "RELAM_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "relam.demos", "--help"], capture_output=True, text=True,
                         timeout=120, env=env, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert "usage: relam demos" in out.stdout and "summary" in out.stdout


def test_demos_make_and_summary_dispatch(monkeypatch, capsys):
    """`demos make/summary all`: every task; `make --kind offline` skips the tasks without offline data."""
    import relam.demos
    from relam.tasks import get_task, list_tasks

    made = []
    monkeypatch.setattr(relam.demos, "make_demos", lambda t, n=None, kind="expert": made.append((t, n, kind)))
    monkeypatch.setattr(relam.demos, "summarize", lambda t, kind="expert": {"task": t, "kind": kind})
    assert cli.main(["demos", "summary", "all"]) == 0
    assert capsys.readouterr().out.splitlines() == [str({"task": t, "kind": "expert"}) for t in list_tasks()]
    assert cli.main(["demos", "make", "all", "--kind", "offline", "-n", "3"]) == 0
    offline = [t for t in list_tasks() if get_task(t).offline]
    assert made == [(t, 3, "offline") for t in offline] and 0 < len(offline) < len(list_tasks())
    assert capsys.readouterr().out.splitlines() == [str({"task": t, "kind": "offline"}) for t in offline]


# --- errors: one or two clean lines, exit status 2 (1 for the unexpected), traceback only with --debug
def clean_error(capsys, max_lines: int = 2) -> str:
    """stderr of the last command: no traceback, at most ``max_lines`` lines."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert 0 < len(err.strip().splitlines()) <= max_lines, err
    return err


@pytest.mark.parametrize("argv", [
    ["demos", "make", "drawer-opne-v3"],
    ["demos", "summary", "drawer-opne-v3"],
    ["subgoals", "drawer-opne-v3"],
    ["anticipation", "train", "drawer-opne-v3", "--out", "{tmp}"],
], ids=lambda a: " ".join(a[:2]))
def test_unknown_task_for_a_tool(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "cache"))
    assert cli.main([a.replace("{tmp}", str(tmp_path / "out")) for a in argv]) == 2
    err = clean_error(capsys)
    assert "unknown task 'drawer-opne-v3'" in err
    assert "door-open-v3" in err and "PickCube-v1" in err  # the known tasks
    assert "did you mean 'drawer-open-v3'?" in err
    assert not (tmp_path / "out").exists()  # failed before any work


def test_bad_scale_in_the_environment(toy, monkeypatch, capsys):
    monkeypatch.setenv("RELAM_SCALE", "tiny")
    assert cli.main(["status", str(toy)]) == 2
    err = clean_error(capsys)
    assert "RELAM_SCALE='tiny'" in err and "smoke, quick, paper" in err
    assert cli.main(["status", str(toy), "--scale", "smoke"]) == 0  # an explicit --scale wins


@pytest.mark.parametrize("value, expected", [("0", "must be >= 1, got 0"), ("two", "expected a whole number")])
def test_workers_must_be_positive(toy, capsys, value, expected):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", str(toy), "--workers", value])
    assert e.value.code == 2
    err = clean_error(capsys)
    assert f"--workers: {expected}" in err and "relam run --help" in err


def test_run_filter_names_nothing(toy, capsys):
    assert cli.main(["run", str(toy), "--tasks", "drawer-opne-v3", "--no-progress"]) == 2
    err = clean_error(capsys)
    assert "--tasks: 'drawer-opne-v3' is not in spec toycli (did you mean 'drawer-open-v3'?)" in err
    assert "its tasks: drawer-open-v3" in err
    assert cli.main(["run", str(toy), "--methods", "Z", "--no-progress"]) == 2
    assert "its methods (labels or names): S, F, synthetic" in clean_error(capsys)
    assert cli.main(["run", str(toy), "--seeds", "9", "--no-progress"]) == 2
    assert "its seeds at scale smoke: 0, 1" in clean_error(capsys)
    assert cli.main(["status", str(toy)]) == 0  # nothing ran
    assert "4 missing" in capsys.readouterr().out


def test_address_needs_the_ray_backend(toy, capsys):
    assert cli.main(["run", str(toy), "--address", "10.0.0.1:6379"]) == 2
    assert "add --backend ray, or drop --address" in clean_error(capsys)


def test_spec_error_names_file_and_field_without_traceback(tmp_path, capsys):
    bad = tmp_path / "dup.yaml"
    bad.write_text("name: dup\nname: dup\n")
    assert cli.main(["status", str(bad)]) == 2
    err = clean_error(capsys)
    assert str(bad) in err and "name: duplicate key 'name'" in err
    assert cli.main(["status", "tabel4"]) == 2
    assert "did you mean 'table4'?" in clean_error(capsys)


def test_debug_shows_the_traceback(capsys):
    from relam.tasks import TaskError

    with pytest.raises(TaskError):
        cli.main(["--debug", "demos", "summary", "drawer-opne-v3"])
    with pytest.raises(TaskError):  # anywhere on the line, and not passed on to the tool's parser
        cli.main(["demos", "summary", "drawer-opne-v3", "--debug"])


def test_unexpected_error_and_interrupt(monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMANDS", dict(cli.SUBCOMMANDS))

    def boom(args):
        raise RuntimeError("boom")

    def interrupted(args):
        raise KeyboardInterrupt

    cli.add_subcommand("boom", lambda p: None, boom, help="fails")
    cli.add_subcommand("stop", lambda p: None, interrupted, help="interrupted")
    assert cli.main(["boom"]) == 1
    err = clean_error(capsys)
    assert "relam boom: error: RuntimeError: boom" in err and "--debug" in err
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["boom", "--debug"])
    assert cli.main(["stop"]) == 130
    assert "relam stop: interrupted" in clean_error(capsys, max_lines=1)


# --- a read-only cache: `run` stops before any work with one clear error; status and table --out work
def test_run_on_a_read_only_cache_fails_before_any_work(toy, tmp_path, monkeypatch, capsys):
    """Simulated with os.access (tests may run as root, where chmod does not stop writes)."""
    import os

    import relam.cache

    cache = tmp_path / "cache"
    real_access = os.access
    monkeypatch.setattr(relam.cache.os, "access", lambda p, mode: not str(p).startswith(str(cache))
                        and real_access(p, mode))
    assert cli.main(["run", str(toy), "--no-progress"]) == 2
    err = clean_error(capsys)
    assert f"the cache {cache} is read-only" in err and "RELAM_CACHE" in err
    assert not (cache / "results").exists()  # no lock, record or scratch folder was made
    assert cli.main(["table", str(toy), "--reps", "20"]) == 2
    assert "pass --out DIR" in clean_error(capsys)
    assert cli.main(["table", str(toy), "--reps", "20", "--out", str(tmp_path / "rep")]) == 0
    assert cli.main(["status", str(toy)]) == 0


def _without_root_powers() -> list[str] | None:
    """A command prefix under which chmod'ed files cannot be written: none for a normal user; for
    root, setpriv dropping the capabilities that bypass file modes; None when neither works."""
    import os
    import tempfile

    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
    if shutil.which("setpriv") is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o555)
        probe = subprocess.run(prefix + ["touch", os.path.join(d, "probe")], capture_output=True)
        os.chmod(d, 0o755)
    return prefix if probe.returncode != 0 else None


def test_read_only_cache_for_real(toy, tmp_path, capsys):
    import os
    import sys

    from relam.experiments import ResultStore, expand, load_spec

    prefix = _without_root_powers()
    if prefix is None:
        pytest.skip("running as root without setpriv: chmod cannot make the cache read-only here")
    assert cli.main(["run", str(toy), "--no-progress"]) == 1  # the F runs fail by design
    capsys.readouterr()
    bad = ResultStore().record_path(expand(load_spec(toy), "smoke")[0].key)
    bad.write_text("{")  # and one record is damaged (it cannot be moved aside here)
    cache = tmp_path / "cache"
    before = sorted(p for p in cache.rglob("*"))
    subprocess.run(["chmod", "-R", "a-w", str(cache)], check=True)
    try:
        def relam(*argv):
            return subprocess.run(prefix + [sys.executable, "-m", "relam.cli", *argv], capture_output=True,
                                  text=True, cwd=REPO_ROOT, env={**os.environ, "RELAM_CACHE": str(cache)},
                                  timeout=300)

        st = relam("status", str(toy))
        assert st.returncode == 0 and "4 runs: 2 failed, 1 missing, 1 ok" in st.stdout, st.stdout + st.stderr
        assert "cannot be moved aside" in st.stderr and str(bad) in st.stderr
        tb = relam("table", str(toy), "--reps", "20", "--out", str(tmp_path / "rep"))
        assert tb.returncode == 0 and (tmp_path / "rep" / "table.md").is_file(), tb.stderr
        run = relam("run", str(toy), "--no-progress")
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 2 and "is read-only" in lines[0] and "RELAM_CACHE" in lines[1], run.stderr
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(cache)], check=True)
    assert sorted(p for p in cache.rglob("*")) == before  # nothing was written


# --- completeness: status filters, environment variables and defaults in the help, weights paths, prog
def test_status_takes_the_run_filters(toy, capsys):
    assert cli.main(["run", str(toy), "--methods", "S", "--seeds", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["status", str(toy), "--methods", "S", "-v"]) == 0
    out = capsys.readouterr().out
    assert "toycli [smoke]: 2 runs: 1 missing, 1 ok" in out and " F " not in out
    assert cli.main(["status", str(toy), "--seeds", "1"]) == 0
    assert "2 runs: 2 missing" in capsys.readouterr().out
    assert cli.main(["status", str(toy), "--tasks", "drawer-open-v3", "--methods", "F", "--seeds", "0"]) == 0
    assert "1 runs: 1 missing" in capsys.readouterr().out
    # the same checks as `relam run`: a name not in the spec is one clean error (exit 2)
    assert cli.main(["status", str(toy), "--tasks", "drawer-opne-v3"]) == 2
    err = clean_error(capsys)
    assert "--tasks: 'drawer-opne-v3' is not in spec toycli (did you mean 'drawer-open-v3'?)" in err
    assert cli.main(["status", str(toy), "--seeds", "9"]) == 2
    assert "its seeds at scale smoke: 0, 1" in clean_error(capsys)
    assert cli.main(["status", str(toy), "--methods", "Z"]) == 2
    assert "its methods (labels or names): S, F, synthetic" in clean_error(capsys)


ENV_VARS = ("RELAM_CACHE", "RELAM_SCALE", "MUJOCO_GL", "RELAM_METHOD_MODULES", "RELAM_DINOV2_PATH",
            "RELAM_COTRACKER_PATH", "RELAM_EVF_SAM_PATH", "RELAM_TENSORBOARD", "RELAM_ALLOW_GYM")


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv + ["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["run"], ["status"], ["table"], ["plot"], ["report"], ["export"], ["import"],
                                  ["demos"], ["demos", "make"],
                                  ["subgoals"], ["overlay"], ["anticipation"], ["anticipation", "train"],
                                  ["anticipation", "evaluate"]], ids=lambda a: " ".join(a) or "relam")
def test_help_names_the_environment_variables(argv, capsys):
    out = _help(argv, capsys)
    for var in ENV_VARS:
        assert var in out, (argv, var)
    assert "%%" not in out and "%(" not in out


def test_help_shows_the_defaults(monkeypatch, capsys):
    monkeypatch.delenv("RELAM_SCALE", raising=False)
    out = " ".join(_help(["run"], capsys).split())  # joined: the formatter wraps lines
    assert "(default: local)" in out and "(default: 1)" in out and "or smoke (now: smoke)" in out
    assert "(default: all of the spec)" in out
    assert "(default: 2000)" in " ".join(_help(["table"], capsys).split())
    out = " ".join(_help(["subgoals"], capsys).split())
    assert "(default: 4)" in out and "(default: sim)" in out and "(default $RELAM_COTRACKER_PATH)" in out
    out = " ".join(_help(["anticipation", "train"], capsys).split())
    assert "(default: quick)" in out and "(default: 100)" in out and "(default $RELAM_DINOV2_PATH)" in out
    assert "(default: expert)" in " ".join(_help(["demos", "make"], capsys).split())


@pytest.mark.parametrize("tool", ["demos", "subgoals", "overlay", "anticipation"])
def test_tool_prog_names(tool, capsys):
    out = _help([tool], capsys)
    assert out.startswith(f"usage: relam {tool} ") and "python -m" not in out
    with pytest.raises(SystemExit) as e:
        cli.main([tool, "--no-such-option"])
    assert e.value.code == 2
    err = clean_error(capsys)
    assert err.startswith(f"relam {tool}: error:") and f"see 'relam {tool} --help'" in err


def test_anticipation_subcommand_prog_name(capsys):
    assert _help(["anticipation", "train"], capsys).startswith("usage: relam anticipation train ")


@pytest.mark.parametrize("argv, named", [
    (["subgoals", "drawer-open-v3", "--tracker", "cotracker", "--cotracker-path", "{tmp}/ck.pth"],
     "CoTrackerTracker: checkpoint '{tmp}/ck.pth' does not exist"),
    (["subgoals", "drawer-open-v3", "--segmenter", "evf-sam", "--evf-sam-path", "{tmp}/evf"],
     "EvfSamSegmenter: weights_path '{tmp}/evf' does not exist"),
    (["overlay", "drawer-open-v3", "--out", "{tmp}/o.png", "--tracker", "cotracker",
      "--cotracker-path", "{tmp}/ck.pth"], "CoTrackerTracker: checkpoint '{tmp}/ck.pth' does not exist"),
    (["anticipation", "train", "synth-push", "--synthetic", "--n-demos", "2", "--holdout", "1",
      "--encoder", "dinov2", "--dinov2-path", "{tmp}/dino", "--out", "{tmp}/model"],
     "DINOv2 weights not found at '{tmp}/dino'"),
], ids=["subgoals-cotracker", "subgoals-evf-sam", "overlay-cotracker", "anticipation-dinov2"])
def test_weights_path_reaches_the_backend(argv, named, tmp_path, monkeypatch, capsys):
    """A missing weights path given on the command line ends in the backend's own error, naming
    the path, before any work (no demo made, nothing written)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RELAM_CACHE", str(cache))
    tmp = str(tmp_path / "w")
    assert cli.main([a.replace("{tmp}", tmp) for a in argv]) == 2
    err = clean_error(capsys, max_lines=1)
    assert named.replace("{tmp}", tmp) in err
    assert not (cache / "demos").exists() or not any((cache / "demos").iterdir())


@pytest.mark.parametrize("var, argv, fix", [
    ("RELAM_COTRACKER_PATH", ["subgoals", "drawer-open-v3", "--tracker", "cotracker"], "--cotracker-path FILE"),
    ("RELAM_EVF_SAM_PATH", ["overlay", "drawer-open-v3", "--out", "x.png", "--segmenter", "evf-sam"],
     "--evf-sam-path DIR"),
])
def test_weights_path_from_the_environment(var, argv, fix, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(var, raising=False)
    assert cli.main(argv) == 2
    assert fix in clean_error(capsys)
    monkeypatch.setenv(var, str(tmp_path / "from-env"))
    assert cli.main(argv) == 2
    assert f"'{tmp_path / 'from-env'}' does not exist" in clean_error(capsys, max_lines=1)


def test_status_says_how_often_a_run_was_resumed():
    """``relam status -v`` names a run's resumes from its record (train_ppo's metrics)."""
    assert cli._resumes_note({"metrics": {"env_steps": 1.0}}) == "" == cli._resumes_note(None)
    assert cli._resumes_note({"metrics": {"resumes": 2.0, "inexact_resumes": 0.0}}) == "  resumed 2x (exactly)"
    assert cli._resumes_note({"metrics": {"resumes": 2.0, "inexact_resumes": 1.0}}) == \
        "  resumed 2x (1 off the uninterrupted path)"
