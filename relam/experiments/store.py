"""The result store: one JSON record per run, keyed by the hash of the run's resolved settings.

Records live in ``<cache>/results/runs/<key>.json`` and are written atomically, so a killed sweep
leaves each record either absent or complete. Each key also has a lock file
(``<cache>/results/locks/<key>.lock``, an OS-level ``flock`` released when its holder dies) that a
worker holds while it checks for and produces the record: concurrent sweeps, pool workers and
``pytest -n 8`` reproductions never run the same settings twice. A run's scratch folder (for
checkpoints a resumed method may reuse) is ``<cache>/results/work/<key>/``.

A record that cannot be read (not JSON, cut short by a full disk, not a record at all) must not
stop a sweep, a status or a table: it is moved aside to ``<cache>/results/quarantine/`` (kept for
a post-mortem, named in a warning) and its run counts as not done, so the next ``relam run``
redoes it. ``relam status`` says how many records were moved aside.
"""
from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from relam.cache import REPO_ROOT, atomic_write_json, cache_dir, read_json

__all__ = ["RECORD_SCHEMA", "ResultStore", "git_commit", "machine_info", "package_versions"]

log = logging.getLogger(__name__)

RECORD_SCHEMA = 1

#: packages whose versions go into every record (read from metadata; nothing is imported)
_PACKAGES = ("relam", "numpy", "torch", "gymnasium", "metaworld", "mujoco", "mani-skill", "sapien",
             "stable-baselines3", "transformers", "diffusers")


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Python and key package versions of this process (for provenance in each record)."""
    from relam.versions import package_versions as installed

    return {"python": platform.python_version(), **installed(_PACKAGES)}


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """``HEAD`` of the repository (suffixed ``+dirty`` when tracked files changed); None if unknown."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _first_line_with(path: str, prefix: str) -> str | None:
    try:
        with open(path) as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(prefix)), None)
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def machine_info() -> dict[str, Any]:
    """The machine of this process, for provenance: OS, CPU model and count, memory, and the GPU
    when torch (already imported, never imported here) sees one. Read once, from /proc on Linux."""
    out: dict[str, Any] = {"platform": platform.platform(), "arch": platform.machine(),
                           "cpus": os.cpu_count()}
    model = _first_line_with("/proc/cpuinfo", "model name")
    if model:
        out["cpu"] = model
    mem = _first_line_with("/proc/meminfo", "MemTotal")
    if mem and mem.split()[0].isdigit():
        out["memory_gib"] = round(int(mem.split()[0]) / 2**20, 1)
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 -- provenance must never fail a run
        pass
    return out


#: the file in a run's work folder that names the shorter run it continues (relam.experiments.extend)
EXTENDED_FROM = "extended_from.json"


class ResultStore:
    """Run records on disk under ``root`` (default ``cache_dir()/results``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "results"

    def record_path(self, key: str) -> Path:
        return self.root / "runs" / f"{key}.json"

    def lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

    def work_path(self, key: str) -> Path:
        """Where run ``key``'s work folder lives (not created: for reading another run's folder)."""
        return self.root / "work" / key

    def work_dir(self, key: str) -> Path:
        d = self.work_path(key)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def extended_from(self, key: str) -> dict[str, Any] | None:
        """``{"key", "train_steps"}`` of the run whose work folder ``key``'s was seeded from (by
        ``relam extend``), or None."""
        path = self.work_path(key) / EXTENDED_FROM
        return read_json(path) if path.exists() else None

    def lock(self, key: str) -> FileLock:
        """The per-run lock; hold it while checking for and producing the record."""
        path = self.lock_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path), thread_local=False)

    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def quarantined(self, keys: set[str] | None = None) -> list[Path]:
        """Records moved aside as unreadable (those of ``keys`` only, when given), oldest first."""
        d = self.quarantine_dir()
        paths = sorted(d.glob("*.json")) if d.is_dir() else []
        return [p for p in paths if keys is None or p.name.split(".", 1)[0] in keys]

    def get(self, key: str, *, locked: bool = False) -> dict[str, Any] | None:
        """The record of ``key``, or None when there is none or it was unreadable (and is now in
        quarantine). ``locked``: the caller holds the run's lock (see :meth:`lock`)."""
        rec, problem = self._read(key)
        if problem is None:
            return rec
        if locked:
            return self._quarantine(key, problem)
        return self._quarantine_under_lock(key)

    def _read(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        """(record, None), (None, None) when absent, or (None, what is wrong with the file)."""
        try:
            rec = read_json(self.record_path(key))
        except FileNotFoundError:
            return None, None
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            return None, f"not valid JSON: {e}"
        if not isinstance(rec, dict) or "status" not in rec:
            return None, f"not a run record (a JSON {type(rec).__name__} without a 'status')"
        return rec, None

    def _quarantine_under_lock(self, key: str) -> dict[str, Any] | None:
        """Move a bad record aside only while holding its run's lock: a process running that run
        right now will replace the file anyway, and must not see its new record moved away."""
        try:
            lock = self.lock(key)
            lock.acquire(timeout=0)
        except Timeout:
            return None  # being re-run now; its new record replaces the bad one
        except OSError as e:  # a read-only cache: leave the file, count the run as missing
            log.warning("relam: warning: run record %s is unreadable and cannot be moved aside (%s); "
                        "it counts as not done", self.record_path(key), e)
            return None
        try:
            rec, problem = self._read(key)  # again, under the lock: it may have been rewritten
            return rec if problem is None else self._quarantine(key, problem)
        finally:
            lock.release()

    def _quarantine(self, key: str, problem: str) -> None:
        """Move the record of ``key`` to the quarantine folder and say so; the run is not done."""
        src = self.record_path(key)
        dst = self.quarantine_dir() / f"{key}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.json"
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        except FileNotFoundError:
            return None  # another process moved it first (and warned)
        except OSError as e:
            log.warning("relam: warning: run record %s is corrupt (%s) and cannot be moved aside (%s); "
                        "it counts as not done", src, problem, e)
            return None
        log.warning("relam: warning: run record %s is corrupt (%s); moved to %s, and the run counts as "
                    "not done (the next `relam run` redoes it)", src, problem, dst)
        return None

    def put(self, record: dict[str, Any]) -> Path:
        """Write a record atomically; one without ``machine`` gets :func:`machine_info` (the record
        was made in this process). Imported records are written as they are (not through here)."""
        if "key" not in record:
            raise ValueError("a run record needs its 'key'")
        if "machine" not in record:
            record = {**record, "machine": machine_info()}
        return atomic_write_json(self.record_path(record["key"]), record)

    def keys(self) -> list[str]:
        d = self.root / "runs"
        return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for k in self.keys():
            rec = self.get(k)
            if rec is not None:
                yield rec
