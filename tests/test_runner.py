"""The runner and result store: idempotent sweeps, recorded failures, resumption after a kill,
concurrent sweeps without double work, the spawn pool and the Ray backend. All runs use the
``synthetic`` method (no simulator), so the file takes seconds."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from relam.cache import REPO_ROOT
from relam.experiments import ResultStore, execute_run, expand, load_spec, run_spec
from relam.methods import MethodNotImplementedError, RunResult, get_method, list_methods

PY = sys.executable


def make_spec(tmp_path: Path, name: str = "toy", seeds=(0, 1, 2), fail_seed: int | None = None,
              sleep_s: float = 0.0, extra_methods=()) -> Path:
    log = str(tmp_path / "executions.log")
    methods = [{"label": "Synth", "method": "synthetic", "settings": {"log_file": log, "sleep_s": sleep_s}}]
    if fail_seed is not None:
        methods.append({"label": "Broken", "method": "synthetic",
                        "settings": {"log_file": log, "fail": True}})
    methods += list(extra_methods)
    data = {
        "name": name, "title": "toy", "report": "curves", "tasks": ["drawer-open-v3", "door-open-v3"],
        "methods": methods, "seeds": list(seeds),
        "budgets": {"metaworld": {s: {"train_steps": 40, "eval_every": 10, "eval_episodes": 1}
                                  for s in ("smoke", "quick", "paper")}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def ends(tmp_path: Path) -> Counter:
    log = tmp_path / "executions.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line[4:] for line in lines if line.startswith("end "))


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_key_depends_on_settings_not_on_label(tmp_path, cache):
    spec = load_spec(make_spec(tmp_path))
    runs = expand(spec, "smoke")
    assert len({r.key for r in runs}) == len(runs) == 6
    r = runs[0]
    import dataclasses
    assert dataclasses.replace(r, label="other", spec="x").key == r.key
    assert dataclasses.replace(r, seed=99).key != r.key
    assert dataclasses.replace(r, settings={**r.settings, "level": 0.9}).key != r.key
    assert expand(spec, "smoke")[0].key == r.key  # stable


def test_sweep_writes_records_and_rerun_skips(tmp_path, cache):
    spec = load_spec(make_spec(tmp_path))
    s1 = run_spec(spec, "smoke", progress=False)
    assert s1.counts["ran"] == 6 and not s1.failed()
    rec = ResultStore().get(expand(spec, "smoke")[0].key)
    assert rec["status"] == "ok" and 0.0 <= rec["success"] <= 1.0
    assert rec["curve"][0] == [0, 0.0] and rec["curve"][-1][0] == 40
    for k in ("wall_time_s", "versions", "git_commit", "started_at", "settings", "budget", "seed", "task"):
        assert k in rec
    assert rec["versions"]["python"] and rec["attempts"] == 1
    s2 = run_spec(spec, "smoke", progress=False)
    assert s2.counts["ran"] == 0 and s2.counts["skipped"] == 6
    assert set(ends(tmp_path).values()) == {1} and len(ends(tmp_path)) == 6


def test_failures_are_recorded_and_do_not_stop_the_sweep(tmp_path, cache):
    spec = load_spec(make_spec(tmp_path, fail_seed=0))
    s = run_spec(spec, "smoke", progress=False)
    failed = s.failed()
    assert len(failed) == 6 and len(s.runs) == 12  # the 6 good runs all finished
    f = failed[0]
    assert f["status"] == "failed" and "RuntimeError: synthetic failure" in f["error"]
    assert "Traceback" in f["traceback"] and f["not_implemented"] is False
    # failed runs are not redone by default ...
    assert run_spec(spec, "smoke", progress=False).counts["ran"] == 0
    # ... but are with retry_failed, and only they
    s3 = run_spec(spec, "smoke", progress=False, retry_failed=True)
    assert s3.counts["ran"] == 6 and s3.counts["skipped"] == 6
    assert all(r["attempts"] == 2 for r in s3.failed())


def test_malformed_result_is_a_recorded_failure(tmp_path, cache, monkeypatch):
    from relam.methods import Synthetic

    monkeypatch.setattr(Synthetic, "run", lambda self, ctx: RunResult(success=1.7))
    spec = load_spec(make_spec(tmp_path, seeds=(0,)))
    s = run_spec(spec, "smoke", progress=False)
    assert all("success must be a rate in [0, 1]" in r["error"] for r in s.failed())


def test_declared_but_unimplemented_method(tmp_path, cache, monkeypatch):
    from importlib.metadata import EntryPoint

    from relam import methods

    # an installed entry point whose module is not written yet
    eps = {**methods._entry_points(),
           "toy_future": EntryPoint("toy_future", "relam_no_such_module.toy:Toy", methods.ENTRY_POINT_GROUP)}
    monkeypatch.setattr(methods, "_entry_points", lambda: eps)
    assert "toy_future" in list_methods()
    with pytest.raises(MethodNotImplementedError, match="toy_future.*not implemented yet"):
        get_method("toy_future")
    with pytest.raises(ValueError, match="unknown method 'toy_futur'.*random"):
        get_method("toy_futur")
    spec = load_spec(make_spec(tmp_path, seeds=(0,), extra_methods=[{"label": "Future", "method": "toy_future"}]))
    s = run_spec(spec, "smoke", progress=False)
    ni = [r for r in s.failed() if r["not_implemented"]]
    assert len(ni) == 2 and len(s.failed()) == 2 and "not implemented yet" in ni[0]["error"]
    # not-implemented runs are retried on every sweep (so they start once the method exists)
    assert run_spec(spec, "smoke", progress=False).counts["ran"] == 2


def _wait_for(cond, timeout=60.0):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_killed_sweep_resumes_without_double_or_lost_runs(tmp_path, cache):
    spec_path = make_spec(tmp_path, seeds=(0, 1, 2, 3), sleep_s=0.4)
    env = {**os.environ, "RELAM_CACHE": str(cache)}
    proc = subprocess.Popen([PY, "-m", "relam.cli", "run", str(spec_path), "--scale", "smoke", "--no-progress"],
                            env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = ResultStore(cache / "results")
    try:
        _wait_for(lambda: len(store.keys()) >= 3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = len(store.keys())
    assert 3 <= done_before < 8, "the sweep should have been killed mid-way"
    spec = load_spec(spec_path)
    s = run_spec(spec, "smoke", progress=False)
    assert s.counts["ran"] == 8 - done_before and s.counts["skipped"] == done_before
    runs = expand(spec, "smoke")
    assert all(store.get(r.key)["status"] == "ok" for r in runs)  # none lost
    e = ends(tmp_path)
    assert len(e) == 8 and set(e.values()) == {1}  # none done twice


def _terminal_signals() -> None:
    """In the child before exec: SIGINT and SIGTERM as a terminal's shell starts a command (default
    action, not blocked). Signal masks and ignored signals survive exec, and a pytest-xdist worker
    that has run other tests may hand them on: under ``pytest -n 2`` the Ctrl-C case failed with
    the sweep running to its end (exit 0, nothing on stderr), never alone."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _signal_state() -> str:
    """This process's blocked and ignored signal masks (Linux), for a failure message."""
    try:
        return " ".join(line.strip() for line in open("/proc/self/status") if line.startswith(("SigBlk", "SigIgn")))
    except OSError:
        return "?"


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "Ctrl-C"])
def test_stopped_pool_sweep_leaves_no_worker_and_keeps_its_records(tmp_path, cache, how):
    """Kill the parent of a 2-worker pool (SIGKILL), or stop it (SIGTERM to it, SIGINT to its process
    group as a terminal's Ctrl-C does): no worker is left after 10 s, the records are intact, and
    SIGTERM/Ctrl-C end in one line."""
    psutil = pytest.importorskip("psutil")
    spec_path = make_spec(tmp_path, seeds=(0, 1, 2, 3), sleep_s=2.0)  # 8 runs of 2 s on 2 workers
    env = {**os.environ, "RELAM_CACHE": str(cache)}
    proc = subprocess.Popen([PY, "-m", "relam.cli", "run", str(spec_path), "--scale", "smoke", "--no-progress",
                             "--workers", "2"], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_terminal_signals)
    store = ResultStore(cache / "results")
    try:
        _wait_for(lambda: len(store.keys()) >= 2, timeout=120)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 2 and len(store.keys()) < 6, "stop the sweep mid-way"
        {"SIGKILL": proc.kill, "SIGTERM": proc.terminate,
         "Ctrl-C": lambda: os.killpg(proc.pid, signal.SIGINT)}[how]()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"orphaned workers: {[(p.pid, p.cmdline()[-2:]) for p in alive]}"
    keys = store.keys()
    assert len(keys) >= 2 and all(store.get(k)["status"] == "ok" for k in keys) and not store.quarantined()
    if how != "SIGKILL":
        assert proc.returncode == (143 if how == "SIGTERM" else 130), (err, out, _signal_state())
        assert err.strip().splitlines() == [err.strip()] and "Traceback" not in err, err
        assert f"stopped by {how}: {len(keys)} of 8 runs have records" in err, err


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_aborted_pool_leaves_no_wakeup_pipe_for_the_exit_hook():
    """After ``close(abort=True)`` the pool's manager thread has ended and closed its wake-up pipe.
    Otherwise CPython's exit hook (concurrent.futures.process._python_exit) can write to that pipe
    while the thread closes it, and a stopped ``relam run`` prints "OSError: Bad file descriptor"
    after its one line (seen once in CI under load)."""
    from concurrent.futures import process as cf_process

    from relam.experiments.backends import LocalBackend

    backend = LocalBackend(_sleep, workers=2)
    pool = backend._get_pool()
    futures = [pool.submit(_sleep, 30.0) for _ in range(2)]
    _wait_for(lambda: all(f.running() for f in futures), timeout=60)
    manager = pool._executor_manager_thread
    backend.close(abort=True)
    assert not manager.is_alive(), "the manager thread outlives close(abort=True)"
    assert all(w._closed for t, w in list(cf_process._threads_wakeups.items()) if t is manager)


def test_concurrent_sweeps_share_work(tmp_path, cache):
    """Two sweeps of the same spec at once (as under pytest -n): every run is done exactly once."""
    spec_path = make_spec(tmp_path, seeds=(0, 1, 2), sleep_s=0.3)
    env = {**os.environ, "RELAM_CACHE": str(cache)}
    cmd = [PY, "-m", "relam.cli", "run", str(spec_path), "--scale", "smoke", "--no-progress"]
    procs = [subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    e = ends(tmp_path)
    assert len(e) == 6 and set(e.values()) == {1}, e
    assert sum(int(o.split("(")[1].split(" ran now")[0]) for o in outs) == 6, outs


def test_busy_run_is_reported_without_waiting(tmp_path, cache):
    spec = load_spec(make_spec(tmp_path, seeds=(0,)))
    run = expand(spec, "smoke")[0]
    store = ResultStore()
    with store.lock(run.key):
        # FileLock is reentrant in-process, so probe from another process
        code = ("import sys; from relam.experiments.runner import execute_run, Run; import json;"
                f"print(execute_run(Run.from_dict(json.loads(sys.argv[1])), {str(store.root)!r}, wait=False)[0])")
        import json
        out = subprocess.run([PY, "-c", code, json.dumps(run.to_dict())], capture_output=True, text=True,
                             env={**os.environ}, cwd=REPO_ROOT, timeout=60)
        assert out.stdout.strip() == "busy", out.stderr
    assert execute_run(run, store.root)[0] == "ran"
    assert execute_run(run, store.root)[0] == "skipped"


def test_spawn_pool_matches_in_process(tmp_path, cache):
    spec = load_spec(make_spec(tmp_path, seeds=(0, 1), fail_seed=0))
    s = run_spec(spec, "smoke", workers=2, progress=False)
    assert s.counts["ran"] == 8 and len(s.failed()) == 4
    pooled = {k: (r["status"], r["success"], r["curve"]) for k, r in s.records.items()}
    other = ResultStore(tmp_path / "inproc")
    s2 = run_spec(spec, "smoke", workers=1, progress=False, store=other)
    assert {k: (r["status"], r["success"], r["curve"]) for k, r in s2.records.items()} == pooled


def test_ray_backend_gives_the_same_records(tmp_path, cache):
    pytest.importorskip("ray")
    spec = load_spec(make_spec(tmp_path, seeds=(0, 1), fail_seed=0))
    local = run_spec(spec, "smoke", progress=False, store=ResultStore(tmp_path / "local"))
    ray_s = run_spec(spec, "smoke", backend="ray", workers=1, progress=False, store=ResultStore(tmp_path / "ray"))
    assert ray_s.counts["ran"] == 8

    def essence(records):
        return {k: (r["status"], r["success"], r["curve"], r["metrics"], r["error"]) for k, r in records.items()}

    assert essence(ray_s.records) == essence(local.records)
    import ray
    assert not ray.is_initialized()  # the backend shut down the instance it started


@pytest.mark.slow
def test_reference_methods_in_the_real_environment(tmp_path, cache):
    """random (short episodes) and scripted (the Meta-World expert) on Drawer Open, one episode."""
    data = {"name": "ref", "title": "references", "report": "table", "tasks": ["drawer-open-v3"],
            "methods": [{"label": "Random", "method": "random"}, {"label": "Expert", "method": "scripted"}],
            "seeds": [0],
            "budgets": {"metaworld": {s: {"train_steps": 10, "eval_every": 10, "eval_episodes": 1, "horizon": 30}
                                      for s in ("smoke", "quick", "paper")}}}
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump(data))
    s = run_spec(load_spec(tmp_path / "ref.yaml"), "smoke", progress=False)
    assert not s.failed(), [r["traceback"] for r in s.failed()]
    by_method = {r["method"]: r for r in s.records.values()}
    assert by_method["random"]["success"] == 0.0 and by_method["random"]["curve"] == [[0, 0.0], [10, 0.0]]
    assert by_method["scripted"]["success"] == 1.0 and by_method["scripted"]["metrics"]["episode_length"] > 10


def test_run_context_task_spec_applies_the_budget_horizon(tmp_path):
    from relam.methods import Budget, RunContext
    from relam.tasks import get_task

    settings = get_method("random").Settings()
    short = RunContext(task="drawer-open-v3", method="random", settings=settings, seed=0,
                       budget=Budget(train_steps=10, eval_every=5, eval_episodes=1, horizon=37),
                       scale="smoke", out_dir=tmp_path)
    assert short.horizon() == 37 and short.task_spec().horizon == 37
    assert short.task_spec().name == "drawer-open-v3"
    full = RunContext(task="drawer-open-v3", method="random", settings=settings, seed=0,
                      budget=Budget(train_steps=10, eval_every=5, eval_episodes=1),
                      scale="smoke", out_dir=tmp_path)
    assert full.task_spec().horizon == get_task("drawer-open-v3").horizon
    assert get_task("drawer-open-v3").horizon != 37  # the registry entry itself is untouched


def test_offline_set_size_defaults_to_the_papers_100_plus_100_and_leaves_old_keys_alone(tmp_path):
    from relam.methods import Budget

    assert Budget(train_steps=1, eval_every=1, eval_episodes=1).offline_set_size() == 200
    assert Budget(train_steps=1, eval_every=1, eval_episodes=1, n_demos=3).offline_set_size() == 6
    assert Budget(train_steps=1, eval_every=1, eval_episodes=1, offline_trajectories=40).offline_set_size() == 40
    spec = make_spec(tmp_path)
    before = {r.key for r in expand(load_spec(spec), "smoke")}
    assert all("offline_trajectories" not in r.budget for r in expand(load_spec(spec), "smoke"))
    data = yaml.safe_load(spec.read_text())
    data["budgets"]["metaworld"]["smoke"]["offline_trajectories"] = 40
    spec.write_text(yaml.safe_dump(data))
    after = {r.key for r in expand(load_spec(spec), "smoke")}
    assert before.isdisjoint(after)  # setting it is a different run


def test_in_process_runs_may_draw_their_own_progress_bars(monkeypatch, tmp_path):
    """`relam run` with one worker hands its progress flag to the method (PPO / fitting bars);
    pool workers never get it (their bars would interleave)."""
    from relam.experiments.backends import get_backend

    seen = []

    def fake_execute_run(run, store_root=None, retry_failed=False, wait=True, progress=False):
        seen.append(progress)
        return "ran", None

    runs = expand(load_spec(make_spec(tmp_path, seeds=(0,))), "smoke")[:1]
    for flag in (True, False):
        be = get_backend("local", fake_execute_run, workers=1, progress=flag)
        list(be.execute(runs, store_root=str(tmp_path), retry_failed=False, wait=True))
        be.close()
    assert seen == [True, False]


def test_scale_enters_the_key_only_where_the_budget_does_not_tell_scales_apart(tmp_path):
    """The learned components' budgets follow the scale, so two scales with the same run budget are
    two runs; where the budgets differ (every shipped spec) the key is as before, without the scale."""
    path = make_spec(tmp_path, seeds=(0,))  # the same budget at every scale
    smoke, quick = expand(load_spec(path), "smoke"), expand(load_spec(path), "quick")
    assert all(r.scale_in_key and r.resolved()["scale"] == "smoke" for r in smoke)
    assert {r.key for r in smoke}.isdisjoint(r.key for r in quick)
    data = yaml.safe_load(path.read_text())
    for scale, steps in (("quick", 80), ("paper", 120)):
        data["budgets"]["metaworld"][scale]["train_steps"] = steps
    path.write_text(yaml.safe_dump(data))
    for run in expand(load_spec(path), "smoke"):
        assert not run.scale_in_key and "scale" not in run.resolved()
    # the specs whose records predate the scale's place in the key: their keys must not have moved
    for name in ("fig4", "fig5", "fig6a", "fig6b", "fig6c", "online_points", "refine", "table4"):
        assert not any(r.scale_in_key for s in ("smoke", "quick", "paper") for r in expand(load_spec(name), s)), name


def test_no_record_of_the_shipped_specs_is_shared_between_two_scales():
    """The scale enters a key only where one spec's budgets do not tell its scales apart, but keys
    are shared between specs (Table 4 and Fig. 4, headline and online_points): a spec whose budget
    at one scale equals another spec's budget at another scale would reuse a record whose learned
    components had the other scale's budgets. No shipped spec does."""
    from collections import defaultdict

    from relam.experiments.spec import list_specs

    scales_of_key: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for name in list_specs():
        spec = load_spec(name)
        for scale in ("smoke", "quick", "paper"):
            for run in expand(spec, scale):
                scales_of_key[run.key].add((scale, name))
    shared = {k: sorted(v) for k, v in scales_of_key.items() if len({s for s, _ in v}) > 1}
    assert not shared, f"run keys shared between scales (give the budgets a difference): {shared}"
