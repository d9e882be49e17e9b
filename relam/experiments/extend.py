"""Extending a finished run to a longer budget: a missing run continues a shorter one's checkpoint.

On 2 cores a 500k-step image run takes about 2 h; when it has not learned yet, the question is
what it does at 1M, and re-running the first 500k would spend 2 h on steps already taken. A run
whose resolved settings equal a finished run's except for a larger ``train_steps`` can start from
that run's work folder (its checkpoint) when its method says the longer run passes through the
shorter one's state: :meth:`relam.methods.RewardMethod.extension_refused` returns None. For PPO
with a constant learning rate it does (nothing before the last step depends on the total):
measured on the toy env, an extended run ends with the parameters and training log of the
uninterrupted longer run (``tests/test_ppo.py``); only the shorter run's last evaluation was
taken one update later than the longer run takes it (it was the shorter run's final one, which
scores the saved policy). With a learning rate annealed over ``train_steps`` it does not, nor
when the shorter run was under one 2000-step rollout (smoke budgets: its updates came after fewer
steps). IS and Oracle say it does too (their reward is fixed before PPO starts): an Oracle and an
IS smoke run of 2000 steps continued to 4000 ended with the training log and the evaluations
after 2000 of the uninterrupted 4000-step runs. DACfO and Diffusion Reward do not: their
discriminator and RND learn online from state the PPO checkpoint does not hold.

:func:`extend_runs` copies the donor's work folder into the empty work folder of each missing run
(atomically, under the run's lock) and leaves a marker there
(:data:`relam.experiments.store.EXTENDED_FROM`); ``relam run`` then resumes from
the copy as from its own checkpoint, and the record names the donor (``extended_from``).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any, Iterable

from filelock import Timeout

from relam.cache import atomic_write_json, settings_hash
from relam.experiments.runner import Run
from relam.experiments.store import EXTENDED_FROM, ResultStore

__all__ = ["Extension", "extend_runs", "find_donor"]


@dataclass(frozen=True)
class Extension:
    """What :func:`extend_runs` did for one run: ``donor`` is the key it now continues, or None
    with ``why`` saying why not."""

    run: Run
    donor: str | None
    donor_steps: int | None
    why: str


def _candidates(run: Run, store: ResultStore) -> list[dict[str, Any]]:
    """The finished records that are ``run`` with fewer ``train_steps`` (and nothing else changed:
    the record's own key must be the hash of the run's resolved settings with its budget)."""
    mine = run.resolved()
    steps = int(run.budget["train_steps"])
    out = []
    for rec in store:
        # the learned components (anticipation model, ...) take their budgets from the scale
        if rec.get("status") != "ok" or not isinstance(rec.get("budget"), dict) or rec.get("scale") != run.scale:
            continue
        budget = rec["budget"]
        if int(budget.get("train_steps", 0)) >= steps:
            continue
        if {k: v for k, v in budget.items() if k != "train_steps"} != \
                {k: v for k, v in run.budget.items() if k != "train_steps"}:
            continue
        theirs = {**mine, "budget": budget}
        if settings_hash(theirs) == rec.get("key"):
            out.append(rec)
    return out


def find_donor(run: Run, store: ResultStore) -> tuple[dict[str, Any] | None, str]:
    """The longest finished run that ``run`` may continue, or None and why not."""
    from relam.methods import Budget, method_class

    cls = method_class(run.method)
    if cls is None:
        return None, f"method {run.method!r} is not registered"
    found = sorted(_candidates(run, store), key=lambda r: int(r["budget"]["train_steps"]))
    if not found:
        return None, ("no finished run in the store has the same settings with fewer train_steps "
                      "(only train_steps may differ)")
    donor = found[-1]
    refused = cls.extension_refused(run.task, Budget(**donor["budget"]), Budget(**run.budget))
    if refused:
        return None, refused
    folder = store.work_path(donor["key"])
    if not folder.is_dir() or not any(folder.iterdir()):
        return None, f"the run {donor['key']} it would continue has no work folder left (no checkpoint)"
    return donor, "ok"


def extend_runs(runs: Iterable[Run], store: ResultStore | None = None) -> list[Extension]:
    """Seed every missing run of ``runs`` that can continue a shorter finished run with a copy of
    that run's work folder; runs with a record, or with a work folder of their own, are left alone."""
    store = store or ResultStore()
    done = []
    for run in runs:
        key = run.key
        lock = store.lock(key)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            done.append(Extension(run, None, None, "is running now (another process holds it)"))
            continue
        try:
            if store.get(key, locked=True) is not None:
                done.append(Extension(run, None, None, "has a record already"))
                continue
            work = store.work_dir(key)
            if any(work.iterdir()):
                done.append(Extension(run, None, None, "has a work folder of its own (`relam run` resumes it)"))
                continue
            donor, why = find_donor(run, store)
            if donor is None:
                done.append(Extension(run, None, None, why))
                continue
            steps = int(donor["budget"]["train_steps"])
            tmp = work.parent / f".{key}.extending-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                shutil.copytree(store.work_path(donor["key"]), tmp)
                atomic_write_json(tmp / EXTENDED_FROM, {"key": donor["key"], "train_steps": steps})
                os.replace(tmp, work)  # onto the empty folder: the run sees all of the copy or none of it
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # left only when the copy failed
            done.append(Extension(run, donor["key"], steps, f"continues {donor['key']} from step {steps}"))
        finally:
            lock.release()
    return done

