"""Reproduction tests: one test per paper claim, generated from the experiment specs.

Each test module sets ``SPEC = "<name of a spec in experiments/>"``; a test function that takes
``cell`` is run once per (task, method) cell of that spec, and one that takes ``claim`` once per
claim in the spec's ``claims:`` list. What is checked depends on the scale (``$RELAM_SCALE``,
default ``smoke``):

- ``smoke``: every cell's runs execute and yield well-formed records (success in [0, 1], an
  increasing curve); the numbers are not compared (smoke budgets learn nothing).
- ``quick`` / ``paper``: cells with a paper number must lie within the spec's ``tolerance`` of it,
  and claims (orderings, best setting, closeness) must hold within their ``margin``.

Runs a method that is declared but not implemented yet are skipped with the reason. The runs go to
the shared result store under file locks, so ``pytest reproductions/ -n 8`` runs each one once
(tests sharing a cell wait for it) and ``relam table`` later shows the same records.
"""
from __future__ import annotations

import os
from typing import Any

import pytest

from relam.experiments import load_spec, run_spec
from relam.experiments.reports import claim_cells, collect, judge_claim, table_frame
from relam.experiments.runner import Run, expand
from relam.experiments.spec import SCALES, BestClaim, CellClaim, CloseClaim, OrderingClaim, Spec

SCALE = os.environ.get("RELAM_SCALE", "smoke")
if SCALE not in SCALES:
    raise pytest.UsageError(f"RELAM_SCALE={SCALE!r}: expected one of {', '.join(SCALES)}")


def _cells(spec: Spec) -> list[tuple[str, str]]:
    return [(t, lab) for t in spec.tasks for lab in spec.labels()]


def _cell_id(spec: Spec, task: str, label: str) -> str:
    v = spec.paper_value(task, label)
    return f"{task}/{label.replace(' ', '_')}" + (f"={v:.1f}" if v is not None else "")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    name = getattr(metafunc.module, "SPEC", None)
    if name is None:
        return
    spec = load_spec(name)
    if "cell" in metafunc.fixturenames:
        cells = _cells(spec)
        metafunc.parametrize("cell", cells, ids=[_cell_id(spec, *c) for c in cells])
    if "claim" in metafunc.fixturenames:
        metafunc.parametrize("claim", spec.claims, ids=[c.id for c in spec.claims])


@pytest.fixture(scope="module")
def spec(request: pytest.FixtureRequest) -> Spec:
    return load_spec(request.module.SPEC)


@pytest.fixture(scope="session")
def scale() -> str:
    return SCALE


def cell_records(spec: Spec, task: str, label: str) -> list[dict[str, Any]]:
    """Run (or find) the runs of one cell; skip if its method is not implemented; fail on errors."""
    runs: list[Run] = [r for r in expand(spec, SCALE) if r.task == task and r.label == label]
    summary = run_spec(spec, SCALE, runs=runs, progress=False)
    recs = [summary.records[r.key] for r in runs]
    assert all(r is not None for r in recs), f"{task}/{label}: runs left without a record"
    ni = [r for r in recs if r.get("not_implemented")]
    if ni:
        pytest.skip(f"{label}: {ni[0]['error']}")
    failed = [r for r in recs if r["status"] != "ok"]
    assert not failed, (f"{task}/{label}: {len(failed)} of {len(recs)} runs failed; first error: "
                        f"{failed[0]['error']}\n{failed[0]['traceback']}")
    for r in recs:
        assert 0.0 <= r["success"] <= 1.0, r
        steps = [p[0] for p in r["curve"]]
        assert steps == sorted(steps) and all(0.0 <= p[1] <= 1.0 for p in r["curve"]), r["curve"]
    return recs


def _judged(spec: Spec, claim: CellClaim | OrderingClaim | BestClaim | CloseClaim) -> None:
    """Run (or find) the cells of one claim, then judge it with the reports' judge
    (:func:`relam.experiments.reports.judge_claim`, the one the report page uses): it must pass, or
    not be checked at this scale (smoke sets no margins: there only the runs are checked)."""
    for task, label in claim_cells(spec, claim):
        cell_records(spec, task, label)
    verdict = judge_claim(spec, SCALE, claim, table_frame(spec, collect(spec, SCALE)))
    assert verdict.verdict in ("pass", "not checked"), (
        f"claim {claim.id!r} ({claim.text}): {verdict.verdict} at scale {SCALE}: {verdict.detail}")


def _check_cell(spec: Spec, task: str, label: str) -> None:
    cell_records(spec, task, label)
    for claim in spec.cell_claims():
        if (claim.task, claim.label) == (task, label):
            _judged(spec, claim)  # within the spec's tolerance of the paper's number


def _check_claim(spec: Spec, claim: OrderingClaim | BestClaim | CloseClaim) -> None:
    """Check one ordering / best / close claim on every task it covers."""
    _judged(spec, claim)


@pytest.fixture()
def check_cell():
    """``check_cell(spec, task, label)``: the cell runs; at quick/paper it matches the paper."""
    return _check_cell


@pytest.fixture()
def check_claim():
    """``check_claim(spec, claim)``: the claim's cells run; at quick/paper the claim holds."""
    return _check_claim
