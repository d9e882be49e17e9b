"""Fixed-seed regression checks (relam.regression) against tests/regression/expected.json.

A failure names the value that drifted and the command that regenerates the file when the change
is intended: ``python -m relam.regression --regenerate``.
"""
from __future__ import annotations

import json

import pytest

from relam import regression as reg


@pytest.fixture(scope="module")
def expected_file() -> dict:
    return reg.load_expected()


@pytest.mark.parametrize("name", list(reg.CHECKS))
def test_fixed_seed_results_have_not_drifted(name, expected_file):
    assert name in expected_file["checks"], (
        f"no expected values for check '{name}'; run `{reg.REGENERATE_COMMAND} --checks {name}`")
    result = json.loads(json.dumps(reg.run_checks([name])[name]))  # exactly what the file would hold
    drifts = reg.compare(result, expected_file["checks"][name])
    assert not drifts, reg.drift_report(name, drifts, expected_file)


def test_the_hand_track_exercises_what_it_is_meant_to(expected_file):
    """The fixed track must keep covering stage switching and the every/mean difference, or it
    pins nothing useful (this guards the fixture itself, not the code under test)."""
    hand = expected_file["checks"]["reward_hand_track"]
    every, mean = hand["piecewise_linear"], hand["piecewise_linear_mean_reach"]
    assert len(every["reached_steps"]) == 3 and every["stages"][-1] == 3
    assert mean["reached_steps"][1] < every["reached_steps"][1]


def test_compare_names_every_kind_of_drift():
    exp = {"a": 1, "b": [1.0, 2.0], "c": {"d": True}, "s": "x", "z": 0.0}
    assert reg.compare(json.loads(json.dumps(exp)), exp) == []
    ok = {"a": 1, "b": [1.0 * (1 + 5e-5), 2.0], "c": {"d": True}, "s": "x", "z": 1e-9}
    assert reg.compare(ok, exp) == []  # within 1e-4 relative; ~0 within the absolute floor
    bad = {"a": 2, "b": [1.001, 2.0, 3.0], "c": {"d": False, "e": 1}, "s": "y"}
    msgs = reg.compare(bad, exp)
    text = "\n".join(msgs)
    for needle in ("a: expected 1, got 2", "b: expected 2 entries, got 3", "c.d: expected True",
                   "c.e: new value", "s: expected 'x'", "z: missing"):
        assert needle in text, text
    assert reg.compare({"v": [1.0, 2.5]}, {"v": [1.0, 2.0]}) == [
        "v[1]: expected 2.0, got 2.5 (rel. tolerance 0.0001)"]
    assert reg.compare({"n": 3.0}, {"n": 3}), "an int must not match a float"


def test_drift_report_says_which_value_and_how_to_regenerate(expected_file):
    msg = reg.drift_report("reward_demo", ["rewards[3]: expected 1.0, got 2.0"], expected_file)
    assert "rewards[3]" in msg and reg.REGENERATE_COMMAND in msg and "expected.json" in msg


def test_command_line_compares_regenerates_and_fails_on_drift(tmp_path, capsys):
    """`relam regression` (and its shim `python -m relam.regression`)."""
    from relam.cli import main

    with pytest.raises(SystemExit) as e:
        main(["regression", "--help"])
    assert e.value.code == 0
    path = tmp_path / "expected.json"
    assert main(["regression", "--regenerate", "--checks", "reward_hand_track", "--expected", str(path)]) == 0
    assert main(["regression", "--checks", "reward_hand_track", "--expected", str(path)]) == 0
    data = json.loads(path.read_text())
    data["checks"]["reward_hand_track"]["linear"]["rewards"][5] += 0.5
    path.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["regression", "--checks", "reward_hand_track", "--expected", str(path)]) == 1
    out = capsys.readouterr().out
    assert "linear.rewards[5]" in out and reg.REGENERATE_COMMAND in out
