"""The common runner: expand a spec into runs, execute the missing ones, store one record each.

A spec at a scale expands into runs ``task x method entry x seed`` (an ablation variant is just
another method entry with other settings). Each run is identified by :func:`relam.cache.settings_hash`
of its *resolved* settings -- task, method (and its version), the method settings with defaults
filled in, seed, budget -- so the same settings named by two specs (Table 4 and Fig. 4 share their
Meta-World runs) are run once, and changing any setting makes a new run.

The scale also shapes a result: the learned components (anticipation model, DACfO's online phase,
the baselines' reward models) take their budgets from it (:mod:`relam.scales`). It enters the key
only where the budget does not already tell the scales apart, i.e. when a spec gives a task the
same budget at two scales (:attr:`Run.scale_in_key`): every spec's budgets differ per scale, so
the keys of the records made before stay as they were, and two scales with equal budgets still
get two records.

Execution is idempotent: a worker takes the run's file lock, returns the stored record if there is
one, else runs the method and writes the record atomically. Failures are recorded with their error
and traceback and do not stop the sweep; ``retry_failed`` runs them again. Runs of a method that is
declared (an entry point, :mod:`relam.methods`) but not written yet, or that lacks the online or
offline half a task needs, are recorded as failed (``not_implemented``) and are always retried, so
they start working as soon as the method is.
"""
from __future__ import annotations

import socket
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from filelock import Timeout
from tqdm import tqdm

from relam.cache import settings_hash
from relam.experiments.backends import get_backend
from relam.experiments.spec import Spec
from relam.scales import SCALES
from relam.experiments.store import RECORD_SCHEMA, ResultStore, git_commit, package_versions
from relam.methods import (Budget, MethodNotImplementedError, RunContext, get_method, settings_model)

__all__ = ["Run", "SweepSummary", "execute_run", "expand", "needs_rerun", "run_spec", "spec_status"]


@dataclass(frozen=True)
class Run:
    """One resolved run: everything that determines its result, plus where it is shown."""

    task: str
    method: str
    settings: dict[str, Any]
    seed: int
    budget: dict[str, Any]
    scale: str
    method_version: str = "1"
    #: the scale is part of the key (set by :func:`expand` when the budget is the same at another scale)
    scale_in_key: bool = False
    # presentation only (not part of the key): which spec and column asked for it
    spec: str = field(default="", compare=False)
    label: str = field(default="", compare=False)

    def resolved(self) -> dict[str, Any]:
        """The settings that define the run (hashed into its key)."""
        from relam.tasks import SIM_REVISION, get_task, run_only_fields

        out = {"task": self.task, "method": self.method, "method_version": self.method_version,
               "settings": self.settings, "seed": self.seed, "budget": self.budget}
        if self.scale_in_key:  # the budget alone does not tell this run's scale (see the module docstring)
            out["scale"] = self.scale
        # a simulator fix changes what every run on that suite measured (absent: never revised)
        spec = get_task(self.task)
        revision = SIM_REVISION.get(spec.suite)
        if revision:
            out["sim_revision"] = revision
        # the task entry (camera, prompts, horizon, the expert's post-success steps) shapes the demos
        # and the environment every method trains in: a changed entry is a different run
        out["task_entry"] = settings_hash(spec.to_dict())
        # the keypoint rule and the last subgoal's threshold are not part of the entry's dict (they
        # do not shape the demos) but they shape the subgoals, rewards and labels of the runs: keyed
        # when they are not the default
        out.update(run_only_fields(spec))
        return out

    @property
    def key(self) -> str:
        return settings_hash(self.resolved())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Run":
        return cls(**d)


def _method_version(name: str, task: str, budget: dict[str, Any]) -> str:
    """The method's version in a run key: its ``version``, or what its optional classmethod
    ``key_version(task, budget)`` returns (a change that makes only some of its runs stale)."""
    from relam.methods import method_class

    cls = method_class(name)
    if cls is None:
        return "1"
    hook = getattr(cls, "key_version", None)
    return str(hook(task, budget)) if hook is not None else cls.version


def expand(spec: Spec, scale: str) -> list[Run]:
    """All runs of ``spec`` at ``scale``, in a stable order (task, method entry, seed)."""
    runs = []
    for task in spec.tasks:
        budget = spec.budget(task, scale).key_dict()
        # the learned components' budgets follow the scale: when the run budget is the same at
        # another scale, only the scale tells the two runs apart
        scale_in_key = any(spec.budget(task, other).key_dict() == budget for other in SCALES if other != scale)
        versions: dict[str, str] = {}
        for entry in spec.methods:
            if entry.method not in versions:
                versions[entry.method] = _method_version(entry.method, task, budget)
            settings = settings_model(entry.method)(**entry.settings).model_dump(mode="json")
            for seed in spec.seeds_at(scale):
                runs.append(Run(task=task, method=entry.method, settings=settings, seed=int(seed),
                                budget=budget, scale=scale, method_version=versions[entry.method],
                                scale_in_key=scale_in_key, spec=spec.name, label=entry.label))
    return runs


def needs_rerun(record: dict[str, Any] | None, retry_failed: bool) -> bool:
    """A run is (re)done when it has no record, or failed and a retry is asked for (or was only
    missing its implementation)."""
    if record is None:
        return True
    if record.get("status") == "ok":
        return False
    return retry_failed or bool(record.get("not_implemented"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _produce(run: Run, store: ResultStore, previous: dict[str, Any] | None, progress: bool) -> dict[str, Any]:
    """Run the method once and build its record (never raises for a method's own error)."""
    key = run.key
    rec: dict[str, Any] = {
        "schema": RECORD_SCHEMA, "key": key, "status": "failed", **run.resolved(), "scale": run.scale,
        "spec": run.spec, "label": run.label, "success": None, "curve": [], "metrics": {},
        "error": None, "error_type": None, "traceback": None, "not_implemented": False,
        "started_at": _now(), "finished_at": None, "wall_time_s": None,
        "attempts": int((previous or {}).get("attempts", 0)) + 1,
        "versions": package_versions(), "git_commit": git_commit(), "host": socket.gethostname(),
    }
    seeded = store.extended_from(key)  # `relam extend` started it from a shorter run's checkpoint
    if seeded is not None:
        rec["extended_from"] = seeded
    t0 = time.perf_counter()
    try:
        method = get_method(run.method)
        ctx = RunContext(task=run.task, method=run.method, settings=method.Settings(**run.settings),
                         seed=run.seed, budget=Budget(**run.budget), scale=run.scale,
                         out_dir=store.work_dir(key), progress=progress)
        result = method.run(ctx)
        if result is None or not hasattr(result, "validate"):
            raise TypeError(f"{type(method).__name__}.run() must return a RunResult, got {result!r}")
        result.validate()
        rec.update(status="ok", success=result.success, curve=[list(p) for p in result.curve],
                   metrics=result.metrics)
    except Exception as e:  # a method's failure is data, not a crash of the sweep
        rec.update(error=f"{type(e).__name__}: {e}", error_type=type(e).__name__,
                   traceback=traceback.format_exc(), not_implemented=isinstance(e, MethodNotImplementedError))
    rec["wall_time_s"] = round(time.perf_counter() - t0, 3)
    rec["finished_at"] = _now()
    return rec


def execute_run(run: Run | dict[str, Any], store_root: str | Path | None = None, retry_failed: bool = False,
                wait: bool = True, progress: bool = False) -> tuple[str, dict[str, Any] | None]:
    """Produce the record of one run unless it exists; safe to call from many processes at once.

    Returns ``(outcome, record)`` with outcome ``"ran"`` (ran now; see record["status"]),
    ``"skipped"`` (a record already existed), or ``"busy"`` (another process holds the run and
    ``wait`` is False; record None).
    """
    if isinstance(run, dict):
        run = Run.from_dict(run)
    store = ResultStore(store_root)
    lock = store.lock(run.key)
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return "busy", None
    try:
        previous = store.get(run.key, locked=True)
        if not needs_rerun(previous, retry_failed):
            return "skipped", previous
        rec = _produce(run, store, previous, progress)
        store.put(rec)
        return "ran", rec
    finally:
        lock.release()


@dataclass
class SweepSummary:
    """What a sweep did: outcome counts and the final record of every run (None if missing)."""

    runs: list[Run]
    records: dict[str, dict[str, Any] | None]
    counts: Counter = field(default_factory=Counter)

    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records.values() if r is not None and r.get("status") != "ok"]

    def line(self) -> str:
        ok = sum(1 for r in self.records.values() if r is not None and r.get("status") == "ok")
        ni = sum(1 for r in self.failed() if r.get("not_implemented"))
        return (f"{len(self.runs)} runs: {ok} ok, {len(self.failed()) - ni} failed, {ni} not implemented "
                f"({self.counts['ran']} ran now, {self.counts['skipped']} already done)")


def run_spec(spec: Spec, scale: str, backend: str = "local", workers: int = 1, retry_failed: bool = False,
             address: str | None = None, store: ResultStore | None = None, runs: Iterable[Run] | None = None,
             progress: bool = True) -> SweepSummary:
    """Execute every run of ``spec`` at ``scale`` (or the given subset) that has no good record.

    Two passes: the first skips runs another process is busy with, the second waits for them (and
    finds their records), so concurrent sweeps share the work instead of queueing behind one run.
    """
    store = store or ResultStore()
    all_runs = list(runs) if runs is not None else expand(spec, scale)
    todo = [r for r in all_runs if needs_rerun(store.get(r.key), retry_failed)]
    summary = SweepSummary(runs=all_runs, records={r.key: store.get(r.key) for r in all_runs})
    summary.counts["skipped"] = len(all_runs) - len(todo)
    if todo:
        be = get_backend(backend, execute_run, workers=workers, address=address, progress=progress)
        bar = tqdm(total=len(todo), desc=f"{spec.name} [{scale}]", unit="run", disable=not progress)
        aborted = True  # until the loop ends normally: an interrupt or error stops the workers now
        try:
            pending = todo
            for wait in (False, True):
                busy = []
                for run, outcome, rec in be.execute(pending, store_root=str(store.root),
                                                    retry_failed=retry_failed, wait=wait):
                    if outcome == "busy":
                        busy.append(run)
                        continue
                    summary.counts[outcome] += 1
                    summary.records[run.key] = rec
                    bar.update(1)
                    if rec is not None and rec.get("status") != "ok" and not rec.get("not_implemented"):
                        bar.set_postfix_str(f"last failure: {run.task}/{run.label}/seed {run.seed}")
                pending = busy
                if not pending:
                    break
            aborted = False
        finally:
            bar.close()
            be.close(abort=aborted)
    return summary


def spec_status(spec: Spec, scale: str, store: ResultStore | None = None) -> list[tuple[Run, dict[str, Any] | None]]:
    """Every run of the spec with its record (None when not run yet)."""
    store = store or ResultStore()
    return [(r, store.get(r.key)) for r in expand(spec, scale)]


def iter_records(spec: Spec, scale: str, store: ResultStore | None = None) -> Iterator[tuple[Run, dict[str, Any] | None]]:
    yield from spec_status(spec, scale, store)
