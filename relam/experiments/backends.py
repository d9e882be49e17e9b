"""Where runs execute: in this process, in a local process pool, or on Ray.

Each backend only maps a *job* over runs and yields the outcomes as they finish. The runner hands
its :func:`relam.experiments.runner.execute_run` in as the job (this module imports nothing of the
runner's: imports go one way, harness runner -> backends); the locking, skipping and recording
live in ``execute_run``, so every backend gives the same records. The job must be a module-level
function (process pools and Ray pickle it by reference). No scheduler of our own: the pool is ``concurrent.futures`` and the
cluster is Ray.

- ``local`` with 1 worker runs in this process (no start-up cost; what tests and CI use).
- ``local`` with N > 1 workers uses a process pool with the *spawn* start method (forking after a
  GL context exists deadlocks MuJoCo) and one torch/BLAS thread per worker (on 2 cores, 2 threads
  under contention were 5-10x slower than 1). Workers leave no orphans: each exits within a
  second of its parent's death (a watchdog thread sees ``os.getppid()`` change, even after a
  SIGKILL of the parent), ignores Ctrl-C (the parent stops the pool), and an interrupted sweep
  (Ctrl-C, SIGTERM, an error) terminates the pool instead of waiting for its running runs; a run
  cut short leaves no record, so the next sweep redoes it and the finished records stay as they are.
- ``ray`` starts a local Ray instance (``num_cpus=workers``, temporary files under the cache) or
  joins ``address``; each run is a Ray task with ``num_cpus=1``. The result store must be on a
  file system that every node sees.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait as wait_futures
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from relam.cache import cache_dir
from relam.versions import import_extra

__all__ = ["Backend", "Job", "LocalBackend", "RayBackend", "get_backend"]


class _Run(Protocol):
    """What a backend needs of a run: a plain dict to send to a worker."""

    def to_dict(self) -> dict[str, Any]: ...


#: ``job(run_dict, store_root, retry_failed, wait, progress) -> (outcome, record)``, e.g.
#: :func:`relam.experiments.runner.execute_run`
Job = Callable[[dict[str, Any], str, bool, bool, bool], "tuple[str, dict[str, Any] | None]"]

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _single_thread() -> None:
    """Pool-worker initializer: one BLAS/torch thread (set before torch is imported)."""
    for v in _THREAD_VARS:
        os.environ[v] = "1"
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _watch_parent(parent: int, interval: float = 0.5) -> None:
    """Exit this process as soon as its parent is gone (re-parented: ``os.getppid()`` changed)."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)  # a run cut short writes no record (atomic writes); its lock dies with the process


def _pool_worker_init(parent: int) -> None:
    """Pool-worker initializer: one BLAS/torch thread; Ctrl-C is the parent's to handle (it stops
    the pool; a terminal sends SIGINT to the whole process group); exit when the parent dies."""
    _single_thread()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), name="relam-parent-watch", daemon=True).start()


class Backend:
    """Maps its ``job`` over runs; yields ``(run, outcome, record)`` as runs finish."""

    job: Job

    def execute(self, runs: list[_Run], *, store_root: str, retry_failed: bool,
                wait: bool) -> Iterator[tuple[_Run, str, dict[str, Any] | None]]:  # pragma: no cover
        raise NotImplementedError

    def close(self, abort: bool = False) -> None:
        """Release the workers; ``abort``: the sweep was interrupted, stop running runs now."""


class LocalBackend(Backend):
    """Runs in this process (``workers=1``) or in a spawn process pool.

    In this process the methods may draw their own progress bars (``progress``: PPO steps, model
    fitting), so a run that takes an hour is not a silent hour; pool workers never do, their bars
    would interleave.
    """

    def __init__(self, job: Job, workers: int = 1, progress: bool = False):
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.job = job
        self.workers = workers
        self.progress = progress
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_pool_worker_init, initargs=(os.getpid(),))
        return self._pool

    def execute(self, runs, *, store_root, retry_failed, wait):
        if self.workers == 1:
            for run in runs:
                outcome, rec = self.job(run.to_dict(), store_root, retry_failed, wait, self.progress)
                yield run, outcome, rec
            return
        pool = self._get_pool()
        futures = {pool.submit(self.job, r.to_dict(), store_root, retry_failed, wait, False): r for r in runs}
        while futures:
            # a bounded wait: the main thread comes back to Python code at least twice a second, so
            # a Ctrl-C or SIGTERM that the OS handed to another thread (the pool's manager thread)
            # is acted on at once, not only when a run ends
            done, _ = wait_futures(list(futures), timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in done:
                run = futures.pop(fut)
                outcome, rec = fut.result()
                yield run, outcome, rec

    def close(self, abort: bool = False) -> None:
        """Shut the pool down after its running runs, or (``abort``) terminate its workers now."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if not abort:
            pool.shutdown(wait=True, cancel_futures=True)
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        manager = getattr(pool, "_executor_manager_thread", None)
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        # let the pool's manager thread see its dead workers and close its wake-up pipe before the
        # interpreter exits: otherwise CPython's exit hook may write to that pipe while the thread
        # closes it (3.11: "Exception ignored ... OSError: [Errno 9] Bad file descriptor")
        if manager is not None:
            manager.join(timeout=10)


def ray_temp_dir() -> str:
    """Ray's session folder: under the cache, unless that path is too long for Ray's Unix sockets
    (about 107 bytes including ``session_<date>_<pid>/sockets/plasma_store``), then a short one."""
    d = cache_dir() / "ray"
    if len(str(d)) > 40:  # one shared fallback (Ray keeps each session in its own subfolder)
        d = Path(tempfile.gettempdir()) / f"relam-ray-{os.getuid()}"
    d.mkdir(parents=True, exist_ok=True)
    return str(d)


class RayBackend(Backend):
    def __init__(self, job: Job, workers: int = 1, address: str | None = None):
        ray = import_extra("ray", "ray", "--backend ray (else use --backend local)")

        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            if address:
                # a cluster's workers do not inherit this shell: pass what relam reads from the env
                env = {k: os.environ[k] for k in ("RELAM_CACHE", "RELAM_METHOD_MODULES", "MUJOCO_GL")
                       if k in os.environ}
                ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
            else:
                # a local instance's workers inherit this process's environment (a runtime_env
                # would only add seconds of start-up per worker)
                ray.init(num_cpus=workers, _temp_dir=ray_temp_dir(), include_dashboard=False,
                         log_to_driver=False)
            self._started = True
        self.job = job
        self._remote = ray.remote(num_cpus=1, max_retries=0)(job)

    def execute(self, runs, *, store_root, retry_failed, wait):
        ray = self._ray
        refs = {self._remote.remote(r.to_dict(), store_root, retry_failed, wait, False): r for r in runs}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                run = refs.pop(ref)
                outcome, rec = ray.get(ref)
                yield run, outcome, rec

    def close(self, abort: bool = False) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def get_backend(name: str, job: Job, workers: int = 1, address: str | None = None,
                progress: bool = False) -> Backend:
    """``local`` or ``ray`` (``address`` only for ray) mapping ``job`` over runs; ``progress``:
    inner bars of in-process runs."""
    if name == "local":
        if address:
            raise ValueError("--address is only for --backend ray")
        return LocalBackend(job, workers, progress=progress)
    if name == "ray":
        return RayBackend(job, workers, address)
    raise ValueError(f"unknown backend {name!r}; expected 'local' or 'ray'")
