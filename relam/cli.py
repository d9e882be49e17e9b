"""The ``relam`` command line: one function pair per subcommand, kept in a registry.

    relam run SPEC --scale smoke [--backend local|ray] [--workers N] [--retry-failed] [--address A]
    relam extend SPEC [--scale S] [--tasks ...] [--methods ...] [--seeds ...]
    relam status SPEC [--scale S] [--tasks ...] [--methods ...] [--seeds ...]
    relam table SPEC [--scale S] [--out DIR]
    relam plot SPEC [--scale S] [--out DIR]
    relam report SPEC [--scale S] [--out DIR]
    relam gif SPEC [--scale S] [--task T] [--method M] [--seed N] [--episodes K] [--out F.gif]
    relam export OUT.tar.gz [SPEC --scale S]
    relam import IN.tar.gz
    relam demos make|summary|view TASK ... [--kind expert|offline]
    relam offline-data TASK ... [--scale S] [--spec SPEC] [-n N] [--max K]
    relam subgoals TASK [--n-demos N] [--num-points K] [--segmenter S] [--tracker T] [--rebuild]
    relam overlay TASK --out F.png|F.gif [--demo I] [--kind K] [--num-points K] [...]
    relam regression [--regenerate] [--checks NAME ...] [--expected F.json]
    relam anticipation train|evaluate ...   (parsed by relam.anticipation.cli)

``python -m relam`` is the same command. Every subcommand's arguments are parsed here; the library
modules it calls (relam.demos, relam.subgoals, relam.overlay, relam.regression, ...) have no
command line of their own (their ``python -m relam.X`` is a shim that calls :func:`main`).

SPEC is a path or a name in experiments/ (``table4``). The scale defaults to ``$RELAM_SCALE`` or
``smoke``. Other modules add subcommands with :func:`add_subcommand` (a ``setup(parser)`` that adds
arguments and a ``run(args) -> int`` that does the work), e.g.::

    from relam.cli import add_subcommand
    add_subcommand("demos", setup_demos, run_demos, help="record expert demos")

Modules listed in :data:`PLUGIN_MODULES` are imported (if present) before parsing, so their
``add_subcommand`` calls take effect.

Errors: a mistake in the input (a spec, a task name, an option, ``$RELAM_SCALE``) ends in one or
two lines on stderr -- what is wrong and how to fix it -- and exit status 2; an unexpected error
ends in a line naming it, a pointer to ``--debug`` and exit status 1. A traceback is printed only
with ``--debug`` (anywhere on the command line), because for a user a traceback hides the one line
that matters. Ctrl-C or SIGTERM stops ``relam run`` and its pool's workers with one line (exit 130 or
143); the finished runs' records are kept and the same command finishes the rest. On a read-only
cache ``run`` stops before any work with one error, ``table``/``plot`` ask for ``--out``, and
``status`` works as usual.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from relam.toolargs import (  # noqa: F401 - re-exported: the command line's shared parts
    ENVIRONMENT_HELP,
    TOOL_HELP,
    HelpFormatter,
    UsageError,
    _Parser,
    add_weights_args,
    tool_parser,
    weights_kwargs,
)

__all__ = ["SUBCOMMANDS", "PLUGIN_MODULES", "Subcommand", "UsageError", "add_subcommand", "build_parser",
           "main"]

#: relam.experiments.spec.SCALES, repeated so that `relam --help` does not import the harness
SCALES = ("smoke", "quick", "paper")


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--workers 0`` is a usage error, not a crash later)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _closest(word: str, known: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(known), n=1)
    return close[0] if close else None


def _did_you_mean(word: str, known: Iterable[str]) -> str:
    close = _closest(word, known)
    return f" (did you mean {close!r}?)" if close else ""


@dataclass(frozen=True)
class Subcommand:
    name: str
    setup: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    help: str
    description: str = ""


SUBCOMMANDS: dict[str, Subcommand] = {}

#: modules that register more subcommands when imported (missing ones are ignored)
PLUGIN_MODULES: list[str] = []


def add_subcommand(name: str, setup_fn: Callable[[argparse.ArgumentParser], None],
                   run_fn: Callable[[argparse.Namespace], int], help: str = "", description: str = "") -> None:
    """Register ``relam NAME``: ``setup_fn(parser)`` adds its arguments, ``run_fn(args)`` runs it.
    ``help`` is its line in ``relam --help`` (default: the first line of ``run_fn``'s docstring),
    ``description`` the top of ``relam NAME --help`` (default: ``help``)."""
    SUBCOMMANDS[name] = Subcommand(name, setup_fn, run_fn, help or (run_fn.__doc__ or "").strip().split("\n")[0],
                                   description)


def _default_scale() -> str:
    return os.environ.get("RELAM_SCALE", "smoke")


def _spec_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="spec file path, or a name in experiments/ (e.g. table4, fig6a)")


def _scale_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", choices=SCALES, default=_default_scale(),
                   help="budget scale: smoke (CI minutes), quick (hours on 2 cores), paper "
                        "(the paper's budgets); default $RELAM_SCALE or smoke (now: %(default)s)")


def _check_scale(args: argparse.Namespace) -> None:
    """argparse does not check a default against ``choices``: a bad ``$RELAM_SCALE`` lands here."""
    scale = getattr(args, "scale", None)
    if scale is not None and scale not in SCALES:
        raise UsageError(f"RELAM_SCALE={scale!r} is not a scale; the scales are {', '.join(SCALES)}",
                         fix=f"set RELAM_SCALE to one of {', '.join(SCALES)} (or unset it), or pass --scale")


# --- run --------------------------------------------------------------------------------------
def setup_run(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    _scale_arg(p)
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: this process (1 worker) or a spawn process pool; ray: Ray tasks")
    p.add_argument("--workers", type=_positive_int, default=1, help="parallel runs (pool size / Ray num_cpus)")
    p.add_argument("--address", default=None, help="address of an existing Ray cluster (--backend ray)")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", action="store_true",
                   help="TensorBoard logs of every PPO / IQL run, in <cache>/results/work/<key>/.../tensorboard "
                        "(sets RELAM_TENSORBOARD=1; needs the tensorboard extra)")
    _filter_args(p)


def _filter_args(p: argparse.ArgumentParser) -> None:
    """--tasks/--methods/--seeds, shared by ``run`` and ``status`` (checked by :func:`_select`)."""
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks (default: all of the spec)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="only these columns, by label or method name (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="only these seeds (default: all of the scale)")


def _select(spec, args: argparse.Namespace, runs: list) -> list:
    """The runs (or ``(run, record)`` rows) that pass --tasks/--methods/--seeds; each name given
    must be in the spec, and together they must select at least one run."""
    _check_filters(spec, args)

    def keep(r) -> bool:
        r = r[0] if isinstance(r, tuple) else r
        return ((args.tasks is None or r.task in args.tasks)
                and (args.methods is None or r.label in args.methods or r.method in args.methods)
                and (args.seeds is None or r.seed in args.seeds))

    kept = [r for r in runs if keep(r)]
    if not kept and runs:  # every filter names something, but not together (e.g. a seed of another scale)
        raise UsageError(f"no run of {spec.name} [{args.scale}] matches --tasks/--methods/--seeds",
                         fix=f"its tasks: {', '.join(spec.tasks)}; methods: {', '.join(spec.labels())}; "
                             f"seeds: {', '.join(map(str, spec.seeds_at(args.scale)))}")
    return kept


def cmd_run(args: argparse.Namespace) -> int:
    """Run every missing run of a spec (idempotent; finished runs are skipped)."""
    from relam.experiments import load_spec, run_spec
    from relam.experiments.runner import expand

    if args.address and args.backend != "ray":
        raise UsageError("--address is the address of a Ray cluster, but the backend is local",
                         fix="add --backend ray, or drop --address")
    spec = load_spec(args.spec)
    runs = _select(spec, args, expand(spec, args.scale))
    _check_cache_writable()
    _check_tensorboard(args)
    try:
        with _sigterm_interrupts(), _tensorboard_env(args.tensorboard):
            summary = run_spec(spec, args.scale, backend=args.backend, workers=args.workers, runs=runs,
                               retry_failed=args.retry_failed, address=args.address,
                               progress=not args.no_progress)
    except KeyboardInterrupt as e:  # the pool is stopped by now (run_spec); say what is kept
        from relam.experiments import ResultStore

        store = ResultStore()
        done = sum(1 for r in runs if store.get(r.key) is not None)
        why = "SIGTERM" if isinstance(e, _Terminated) else "Ctrl-C"
        print(f"relam run: stopped by {why}: {done} of {len(runs)} runs have records (kept), the workers "
              f"are stopped; the same command finishes the rest", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    print(summary.line())
    real = [r for r in summary.failed() if not r.get("not_implemented")]
    for r in real[:10]:
        print(f"  failed: {r['task']} / {r.get('label') or r['method']} / seed {r['seed']}: {r['error']}")
    return 1 if real else 0


# --- extend -----------------------------------------------------------------------------------
def setup_extend(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    _scale_arg(p)
    _filter_args(p)


def cmd_extend(args: argparse.Namespace) -> int:
    """Seed missing runs from shorter finished ones (then `relam run` continues them)."""
    from relam.experiments import load_spec
    from relam.experiments.extend import extend_runs
    from relam.experiments.runner import expand

    spec = load_spec(args.spec)
    runs = _select(spec, args, expand(spec, args.scale))
    _check_cache_writable()
    done = extend_runs(runs)
    for e in done:
        why = e.why if e.donor else f"not extended: {e.why}"
        print(f"{e.run.key}  {e.run.task:<22} {e.run.label:<20} seed {e.run.seed}: {why}")
    n = sum(e.donor is not None for e in done)
    print(f"{n} of {len(done)} runs start from a shorter run's checkpoint"
          + (f"; continue them with `relam run {args.spec} --scale {args.scale}`" if n else ""))
    return 0


def _check_cache_writable() -> None:
    """A run writes its lock, record, scratch files, demos and datasets in the cache: a read-only
    cache is one clear error before any work starts, not a PermissionError from the first lock."""
    from relam.cache import cache_dir, unwritable
    from relam.experiments import ResultStore

    root, results = cache_dir(), ResultStore().root
    bad = unwritable([root, results, results / "runs", results / "locks", results / "work"])
    if bad is not None:
        raise UsageError(f"the cache {root} is read-only ({bad} is not writable); a run writes its locks, "
                         "records and data there",
                         fix="make it writable, or set RELAM_CACHE to a writable folder (`relam status` "
                             "and `relam table --out DIR` work on a read-only cache)")


def _check_report_dir(spec, args: argparse.Namespace) -> None:
    """``table``/``plot`` write to ``--out``, by default in the cache: say so before the work."""
    from relam.cache import unwritable
    from relam.experiments.reports import report_dir

    out = args.out if args.out is not None else report_dir(spec, args.scale)
    bad = unwritable([out])
    if bad is not None:
        where = "--out" if args.out is not None else "the cache's reports folder"
        raise UsageError(f"{where} {out} is not writable ({bad} is read-only)",
                         fix="pass --out DIR with a folder you can write to")


def _check_tensorboard(args: argparse.Namespace) -> None:
    """``--tensorboard`` (or ``RELAM_TENSORBOARD=1``) needs the tensorboard extra: say so before any
    work, not in every run's failure record."""
    from relam.tblog import ENV_VAR, EXTRA, TensorBoardMissing, require_tensorboard, tensorboard_requested

    try:
        wanted = args.tensorboard or tensorboard_requested()
    except ValueError as e:
        raise UsageError(str(e)) from None
    if wanted:
        try:
            require_tensorboard("relam run --tensorboard" if args.tensorboard else f"{ENV_VAR}=1")
        except TensorBoardMissing as e:
            raise UsageError(str(e), fix=f"or run without --tensorboard (and with {ENV_VAR} unset); "
                                         f"the extra is named '{EXTRA}' in pyproject.toml") from None


@contextlib.contextmanager
def _tensorboard_env(on: bool):
    """With ``--tensorboard``: ``RELAM_TENSORBOARD=1`` while the sweep runs (in this process and in
    the pool or Ray workers it starts, which inherit the environment), as before afterwards."""
    from relam.tblog import ENV_VAR

    before = os.environ.get(ENV_VAR)
    if on:
        os.environ[ENV_VAR] = "1"
    try:
        yield
    finally:
        if on and before is None:
            os.environ.pop(ENV_VAR, None)
        elif on:
            os.environ[ENV_VAR] = before


class _Terminated(KeyboardInterrupt):
    """SIGTERM as an exception, so that a sweep stops its pool on the way out, as for Ctrl-C."""


@contextlib.contextmanager
def _sigterm_interrupts():
    """While active (in the main thread), SIGTERM raises :class:`_Terminated`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise _Terminated()

    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _check_filters(spec, args: argparse.Namespace) -> None:
    """Each name given to --tasks/--methods/--seeds must be in the spec: a typo would otherwise
    select nothing (or, worse, a part of the sweep without a word)."""
    methods = list(dict.fromkeys(spec.labels() + [m.method for m in spec.methods]))
    seeds = [str(s) for s in spec.seeds_at(args.scale)]
    for flag, given, known, what in (("--tasks", args.tasks, spec.tasks, "tasks"),
                                     ("--methods", args.methods, methods, "methods (labels or names)"),
                                     ("--seeds", [str(x) for x in args.seeds or []] or None, seeds,
                                      f"seeds at scale {args.scale}")):
        for name in given or []:
            if name not in known:
                raise UsageError(f"{flag}: {name!r} is not in spec {spec.name}{_did_you_mean(name, known)}",
                                 fix=f"its {what}: {', '.join(known)}")


# --- status -----------------------------------------------------------------------------------
def setup_status(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    _scale_arg(p)
    _filter_args(p)
    p.add_argument("-v", "--verbose", action="store_true", help="list every run")


def cmd_status(args: argparse.Namespace) -> int:
    """Show which runs of a spec are done, failed, not implemented or missing.

    ``--tasks/--methods/--seeds`` select runs as for ``relam run`` (the same checks)."""
    from collections import Counter

    from relam.experiments import load_spec, spec_status

    spec = load_spec(args.spec)
    rows = _select(spec, args, spec_status(spec, args.scale))
    counts: Counter = Counter()
    for run, rec in rows:
        st = "missing" if rec is None else rec["status"] if rec["status"] == "ok" else (
            "not implemented" if rec.get("not_implemented") else "failed")
        counts[st] += 1
        if args.verbose or st == "failed":
            extra = f"success={rec['success']:.3f}" if st == "ok" else (rec or {}).get("error") or ""
            extra += _resumes_note(rec)
            print(f"{run.key}  {st:15s} {run.task:22s} {run.label:20s} seed {run.seed}  {extra}")
    print(f"{spec.name} [{args.scale}]: {len(rows)} runs: " +
          ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    _print_quarantined({run.key for run, _ in rows})
    return 0


def _resumes_note(rec: dict | None) -> str:
    """How often a finished PPO run was resumed, and how often that left its uninterrupted path
    (``train_ppo``'s ``resumes`` / ``inexact_resumes`` metrics; runs recorded before they existed say
    nothing)."""
    metrics = (rec or {}).get("metrics") or {}
    n = int(metrics.get("resumes", 0))
    if not n:
        return ""
    inexact = int(metrics.get("inexact_resumes", 0))
    seeded = (rec or {}).get("extended_from")
    return (f"  resumed {n}x" + (f" ({inexact} off the uninterrupted path)" if inexact else " (exactly)")
            + (f", extended from {seeded['key']} at step {seeded['train_steps']}" if seeded else ""))


def _print_quarantined(keys: set[str]) -> None:
    """Say how many records of these runs, and how many cached demos and subgoal datasets, were
    unreadable and moved aside (see ResultStore.get and relam.cache.quarantine)."""
    from relam.cache import quarantined_files
    from relam.experiments import ResultStore

    store = ResultStore()
    moved = store.quarantined(keys)
    if moved:
        print(f"quarantined: {len(moved)} corrupt record(s) of these runs moved to {store.quarantine_dir()} "
              "(their runs count as missing; `relam run` redoes them)")
    files = quarantined_files()
    if files:
        print(f"quarantined: {len(files)} damaged cache file(s) (demos, subgoal datasets) moved aside, "
              f"latest {max(files, key=lambda p: p.stat().st_mtime)} (each was made again when next needed)")


# --- table / plot -----------------------------------------------------------------------------
def setup_table(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    _scale_arg(p)
    p.add_argument("--out", default=None, help="output folder (default <cache>/reports/<spec>/<scale>)")
    p.add_argument("--reps", type=_positive_int, default=2000, help="bootstrap resamples for the IQM intervals")


def cmd_table(args: argparse.Namespace) -> int:
    """Render the spec's table (Markdown, CSV, LaTeX) from the stored records."""
    from relam.experiments import load_spec
    from relam.experiments.reports import render_table

    spec = load_spec(args.spec)
    _check_report_dir(spec, args)
    rep = render_table(spec, args.scale, out_dir=args.out, reps=args.reps)
    print(rep.markdown)
    print("written: " + ", ".join(str(p) for p in rep.paths.values()))
    return 0


def setup_plot(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    _scale_arg(p)
    p.add_argument("--out", default=None, help="output folder (default <cache>/reports/<spec>/<scale>)")


def cmd_plot(args: argparse.Namespace) -> int:
    """Plot the spec's learning curves (mean and 95% interval over seeds) to a PNG."""
    from relam.experiments import load_spec
    from relam.experiments.reports import render_curves

    spec = load_spec(args.spec)
    _check_report_dir(spec, args)
    print(f"written: {render_curves(spec, args.scale, out_dir=args.out)}")
    return 0


# --- report / export / import ---------------------------------------------------------------
def setup_report(p: argparse.ArgumentParser) -> None:
    setup_table(p)


def cmd_report(args: argparse.Namespace) -> int:
    """Write one self-contained HTML page: table beside the paper, curves, claims, provenance."""
    from relam.experiments import load_spec
    from relam.experiments.report_page import render_page

    spec = load_spec(args.spec)
    _check_report_dir(spec, args)
    page = render_page(spec, args.scale, out_dir=args.out, reps=args.reps)
    verdicts = ", ".join(f"{sum(c.verdict == v for c in page.claims)} {v}"
                         for v in ("pass", "fail", "not checked", "incomplete")
                         if any(c.verdict == v for c in page.claims))
    print(f"{spec.name} [{args.scale}]: {page.n_records} records; claims: {verdicts or 'none'}")
    print(f"written: {page.path}")
    return 0


def _policy_cell_args(p: argparse.ArgumentParser) -> None:
    """SPEC, --scale and the cell of a trained ReLAM policy (relam gif, relam failures)."""
    _spec_arg(p)
    _scale_arg(p)
    p.add_argument("--task", default=None, help="a Meta-World task of the spec (default: its first)")
    p.add_argument("--method", default=None, help="a ReLAM column of the spec, by label (default: its first)")
    p.add_argument("--seed", type=int, default=None, help="the run's seed (default: the scale's first)")


def setup_gif(p: argparse.ArgumentParser) -> None:
    _policy_cell_args(p)
    p.add_argument("--episodes", type=_positive_int, default=1,
                   help="evaluation episodes to play (the run's own evaluation seeds, in order)")
    p.add_argument("--px", type=_positive_int, default=3, help="enlargement of the 128 px frames")
    p.add_argument("--fps", type=_positive_int, default=20, help="frames a second")
    p.add_argument("--out", default=None,
                   help="the GIF (default <cache>/reports/<spec>/<scale>/policy/<task>__<method>__seed<N>.gif, "
                        "where `relam report` finds it)")


def cmd_gif(args: argparse.Namespace) -> int:
    """GIF of a trained ReLAM policy: evaluation episodes with its keypoints, subgoals and stage drawn."""
    from pathlib import Path

    from relam.cache import unwritable
    from relam.experiments import load_spec
    from relam.experiments.reports import report_dir
    from relam.policy_gif import PolicyGifError, policy_gif

    spec = load_spec(args.spec)
    out_dir = Path(args.out).parent if args.out is not None else report_dir(spec, args.scale)
    bad = unwritable([out_dir])
    if bad is not None:
        raise UsageError(f"{out_dir} is not writable ({bad} is read-only)",
                         fix="pass --out F.gif in a folder you can write to")
    try:
        path, eps, run = policy_gif(spec, args.scale, task=args.task, label=args.method, seed=args.seed,
                                    out=args.out, episodes=args.episodes, scale_px=args.px, fps=args.fps)
    except PolicyGifError as e:
        raise UsageError(str(e), fix=e.fix) from None
    for ep in eps:
        print(f"  episode seed {ep.seed}: {'success' if ep.success else 'no success'}, stage {ep.stage}/"
              f"{ep.n_subgoals}, {ep.length} steps, return {ep.ret:.1f}")
    print(f"{spec.name} [{args.scale}] {run.task} / {run.label} / seed {run.seed} (run {run.key})")
    print(f"written: {path}")
    return 0


def setup_failures(p: argparse.ArgumentParser) -> None:
    _policy_cell_args(p)
    p.add_argument("--episodes", type=_positive_int, default=30,
                   help="evaluation episodes to replay (the run's own evaluation seeds, in order; default 30)")
    p.add_argument("--out", default=None,
                   help="the CSV (default <cache>/reports/<spec>/<scale>/policy/<task>__<method>__seed<N>"
                        ".failures.csv, beside the cell's GIF)")


def cmd_failures(args: argparse.Namespace) -> int:
    """Where a trained ReLAM policy stops: its evaluation episodes replayed, a verdict for each."""
    from relam.experiments import load_spec
    from relam.policy_failures import policy_failures, verdict_counts
    from relam.policy_gif import PolicyGifError

    spec = load_spec(args.spec)
    if args.out is not None and not str(args.out).lower().endswith(".csv"):
        raise UsageError(f"--out {args.out}: the table is a CSV file", fix="pass --out F.csv")
    try:
        path, eps, run = policy_failures(spec, args.scale, task=args.task, label=args.method, seed=args.seed,
                                         episodes=args.episodes, out=args.out)
    except PolicyGifError as e:
        raise UsageError(str(e), fix=e.fix) from None
    for ep in eps:
        print(ep.line())
    print(f"{spec.name} [{args.scale}] {run.task} / {run.label} / seed {run.seed} (run {run.key}), "
          f"{len(eps)} episodes:")
    for verdict, n in verdict_counts(eps).items():
        print(f"  {verdict}: {n}")
    print(f"written: {path}")
    return 0


def setup_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="OUT.tar.gz", help="the archive to write")
    p.add_argument("spec", nargs="?", default=None,
                   help="export only the runs of this spec at --scale (default: every record)")
    _scale_arg(p)


def cmd_export(args: argparse.Namespace) -> int:
    """Write the store's run records (no checkpoints) to a .tar.gz for `relam import`."""
    from relam.experiments import ResultStore, expand, load_spec
    from relam.experiments.archive import export_records

    if not str(args.out).endswith((".tar.gz", ".tgz")):
        raise UsageError(f"{args.out}: the archive is a gzipped tarball", fix="name it OUT.tar.gz")
    keys, what = None, ""
    if args.spec is not None:
        spec = load_spec(args.spec)
        keys, what = [r.key for r in expand(spec, args.scale)], f"of {spec.name} [{args.scale}] "
    exported = export_records(args.out, keys=keys)
    print(f"exported {len(exported)} records {what}from {ResultStore().root} to {args.out}")
    return 0


def setup_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", metavar="IN.tar.gz", help="an archive written by `relam export`")


def cmd_import(args: argparse.Namespace) -> int:
    """Add the records of a `relam export` archive to the store (all or nothing; present ones kept)."""
    from relam.experiments import ResultStore
    from relam.experiments.archive import ArchiveError, import_records

    _check_cache_writable()
    try:
        summary = import_records(args.archive)
    except ArchiveError as e:
        raise UsageError(f"refused: {e}; nothing was imported",
                         fix="export it again with `relam export OUT.tar.gz` and copy it whole") from None
    print(f"{summary.line()}; store: {ResultStore().root}")
    return 0


add_subcommand("run", setup_run, cmd_run)
add_subcommand("extend", setup_extend, cmd_extend, description=(
    "Start each missing run of a spec from the checkpoint of a finished run that differs only in having "
    "fewer train_steps, where the method says the longer run passes through that state (online PPO with "
    "lr_schedule: constant); `relam run` then continues them, and their records name the run they "
    "continued (extended_from). Nothing is trained here."))
add_subcommand("status", setup_status, cmd_status)
add_subcommand("table", setup_table, cmd_table)
add_subcommand("plot", setup_plot, cmd_plot)
add_subcommand("report", setup_report, cmd_report)
add_subcommand("gif", setup_gif, cmd_gif)
add_subcommand("failures", setup_failures, cmd_failures)
add_subcommand("export", setup_export, cmd_export)
add_subcommand("import", setup_import, cmd_import)


# --- demos / subgoals / overlay: the perception tools ------------------------------------------
def setup_demos(p: argparse.ArgumentParser) -> None:
    from relam.demos import KINDS

    sub = p.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="make (or resume making) the demos of tasks",
                        description="Make (or resume making) the demos of tasks.", **TOOL_HELP)
    mk.add_argument("tasks", nargs="+", help="task names (see relam/tasks.yaml) or 'all'")
    mk.add_argument("--kind", choices=KINDS, default="expert", help="demo kind")
    mk.add_argument("-n", type=int, default=None, help="number of trajectories (default 100 expert / 200 offline)")
    sm = sub.add_parser("summary", help="print a summary of stored demos",
                        description="Print a summary of stored demos.", **TOOL_HELP)
    sm.add_argument("tasks", nargs="+")
    sm.add_argument("--kind", choices=KINDS, default="expert", help="demo kind")
    vw = sub.add_parser("view", help="write a PNG strip or GIF of one demo",
                        description="Write a PNG strip or GIF of one demo.", **TOOL_HELP)
    vw.add_argument("task")
    vw.add_argument("--index", type=int, default=0, help="which stored demo")
    vw.add_argument("--kind", choices=KINDS, default="expert", help="demo kind")
    vw.add_argument("--out", default=None, help="output .png or .gif (default: cache/views/...)")


def cmd_demos(args: argparse.Namespace) -> int:
    """make, summarise and view expert demos (relam demos --help)"""
    from relam.cache import cache_dir
    from relam.demos import load_demos, make_demos, save_view, summarize
    from relam.tasks import get_task, list_tasks

    if args.cmd == "view":
        demos = load_demos(args.task, args.kind, n=args.index + 1)
        out = args.out or cache_dir() / "views" / f"{args.task}-{args.kind}-{args.index}.png"
        print(save_view(demos[args.index], out))
        return 0
    tasks = list_tasks() if args.tasks == ["all"] else args.tasks
    for t in tasks:
        if args.cmd == "make":
            if args.kind == "offline" and not get_task(t).offline:
                continue
            make_demos(t, n=args.n, kind=args.kind)
        print(summarize(t, args.kind))
    return 0


def setup_offline_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("tasks", nargs="+", help="ManiSkill task names, or 'all' (every task with an offline set)")
    _scale_arg(p)
    p.add_argument("--spec", default="table4",
                   help="the spec whose ManiSkill budget at --scale sets the set size (default table4)")
    p.add_argument("-n", type=_positive_int, default=None,
                   help="set size instead of the spec's (half expert, half noisy)")
    p.add_argument("--max", type=_positive_int, default=None,
                   help="record at most this many trajectories now (one sitting); run again for the rest")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_offline_data(args: argparse.Namespace) -> int:
    """record or top up the offline control sets (expert + noisy trajectories), resumably"""
    from relam.demos import demos_missing, make_demos, summarize
    from relam.tasks import get_task, list_tasks

    tasks = [t for t in list_tasks() if get_task(t).offline] if args.tasks == ["all"] else args.tasks
    spec = None
    for t in tasks:
        if not get_task(t).offline:
            raise UsageError(f"task '{t}' has no offline control set (only ManiSkill tasks do)",
                             fix="name a ManiSkill task, e.g. PushCube-v1, or 'all'")
    if args.n is None:
        from relam.experiments import load_spec

        spec = load_spec(args.spec)
        outside = [t for t in tasks if t not in spec.tasks]
        if outside:
            raise UsageError(f"spec {args.spec} has no task {', '.join(outside)}",
                             fix="pass -n N, or a --spec that lists the task")
    for t in tasks:
        n = args.n if spec is None else spec.budget(t, args.scale).offline_set_size()
        make_demos(t, n=n, kind="offline", progress=not args.no_progress, max_new=args.max)
        missing = demos_missing(t, n, kind="offline")
        s = summarize(t, "offline")
        rate = s["noisy_success_rate"]
        print(f"{t}: {n - missing}/{n} trajectories of the {'-n' if spec is None else args.scale} set "
              f"({s['count']} stored, {s['noisy_count']} noisy"
              + (f", {100 * rate:.0f}% of them succeed" if rate is not None else "")
              + f"; {s['seconds_per_trajectory']} s a trajectory) in {s['folder']}"
              + (f"; {missing} to go: run the same command again" if missing else ""))
    return 0


def _num_points_arg(p: argparse.ArgumentParser) -> None:
    from relam.keypoints import KeypointSettings

    p.add_argument("--num-points", type=int, default=KeypointSettings.num_points, help="keypoints per demo")


def _keypoint_settings(args: argparse.Namespace):
    """The ``KeypointSettings`` of ``--num-points`` and the weights options (weights checked first)."""
    from relam.keypoints import KeypointSettings

    return KeypointSettings(num_points=args.num_points, **weights_kwargs(args))


def setup_subgoals(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help="task name, e.g. drawer-open-v3 or PushCube-v1")
    p.add_argument("--n-demos", type=int, default=None, help="use the first N stored demos (default: all)")
    _num_points_arg(p)
    add_weights_args(p, segmenter=True, tracker=True)
    p.add_argument("--rebuild", action="store_true", help="ignore an existing cached file")


def cmd_subgoals(args: argparse.Namespace) -> int:
    """build the subgoal dataset of a task (keypoints + keyframes)"""
    import json

    from relam.subgoals import build_subgoal_dataset, subgoal_cache_path

    s = _keypoint_settings(args)
    ds = build_subgoal_dataset(args.task, s, n_demos=args.n_demos, rebuild=args.rebuild)
    print(json.dumps(ds.summary(), indent=2))
    print(subgoal_cache_path(args.task, s, args.n_demos))
    return 0


def setup_overlay(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help="task name, e.g. drawer-open-v3 or PushCube-v1")
    p.add_argument("--demo", type=int, default=0, help="index of the stored demo")
    p.add_argument("--out", required=True, help="output file, .png or .gif")
    p.add_argument("--kind", default="expert", help="demo kind (expert | offline)")
    _num_points_arg(p)
    add_weights_args(p, segmenter=True, tracker=True)


def cmd_overlay(args: argparse.Namespace) -> int:
    """draw keypoints, tracks and keyframes over a demo (PNG/GIF)"""
    from pathlib import Path

    import numpy as np

    from relam.demos import load_demos
    from relam.overlay import overlay_gif, overlay_png
    from relam.subgoals import subgoal_sequence

    settings = _keypoint_settings(args)
    demos = load_demos(args.task, kind=args.kind, n=args.demo + 1)
    if len(demos) <= args.demo:
        raise SystemExit(f"--demo {args.demo}: only {len(demos)} {args.kind} demos of {args.task} are stored; "
                         f"run relam.demos.make_demos({args.task!r}, n={args.demo + 1})")
    demo = demos[args.demo]
    seq, _ = subgoal_sequence(demo, settings)
    suffix = Path(args.out).suffix.lower()
    if suffix == ".gif":
        path = overlay_gif(demo, seq, args.out)
    elif suffix == ".png":
        path = overlay_png(demo, seq, args.out, settings)
    else:
        raise SystemExit(f"--out must end in .png or .gif, got {args.out!r}")
    print(f"{path}: keypoints at t=0 {np.round(seq.keypoints[0], 1).tolist()}, "
          f"keyframes {seq.keyframe_steps.tolist()}")
    return 0


# --- regression -------------------------------------------------------------------------------
def setup_regression(p: argparse.ArgumentParser) -> None:
    from pathlib import Path

    from relam.cache import REPO_ROOT
    from relam.regression import CHECKS, EXPECTED_PATH

    p.add_argument("--regenerate", action="store_true",
                   help=f"recompute and rewrite the expected values ({EXPECTED_PATH.relative_to(REPO_ROOT)})")
    p.add_argument("--checks", nargs="+", choices=list(CHECKS), default=None, help="only these checks (default: all)")
    p.add_argument("--expected", type=Path, default=EXPECTED_PATH,
                   help=f"expected-values file (default: {EXPECTED_PATH.relative_to(REPO_ROOT)})")


def cmd_regression(args: argparse.Namespace) -> int:
    """Compare fixed-seed results with the stored expected values (exit 1 on a drift), or rewrite them."""
    from relam.regression import REGENERATE_COMMAND, compare, drift_report, load_expected, run_checks, write_expected

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    timings: dict[str, float] = {}
    results = run_checks(args.checks, timings)
    for n, s in timings.items():
        print(f"{n:20s} {s:6.1f} s")
    if args.regenerate:
        print(f"wrote {write_expected(results, args.expected)}")
        return 0
    expected = load_expected(args.expected)["checks"]
    failed = 0
    for n, r in results.items():
        if n not in expected:
            print(f"{n}: no expected values stored; run `{REGENERATE_COMMAND} --checks {n}`")
            failed += 1
            continue
        drifts = compare(r, expected[n])
        if drifts:
            failed += 1
            print(drift_report(n, drifts, load_expected(args.expected)))
        else:
            print(f"{n}: ok")
    return 1 if failed else 0


add_subcommand("demos", setup_demos, cmd_demos, description="Make, summarise and view expert demos.")
add_subcommand("offline-data", setup_offline_data, cmd_offline_data, description=(
    "Record, or top up, the offline control set of ManiSkill tasks (100 expert + 100 noisy trajectories at\n"
    "quick and paper scale): the size comes from --spec's budget at --scale (or -n); each trajectory is\n"
    "stored as soon as it is recorded, so a stopped run loses at most one and the same command goes on\n"
    "where it stopped (--max N records N per sitting)."))
add_subcommand("subgoals", setup_subgoals, cmd_subgoals, description=(
    "Build (or load from the cache) the keypoint subgoal dataset of a task and print its summary."))
add_subcommand("overlay", setup_overlay, cmd_overlay, description=(
    "Draw the keypoints (Eq. 1), their tracks and the keyframes (Eq. 2) over one stored demo "
    "of a task, as a PNG summary or an animated GIF."))
add_subcommand("regression", setup_regression, cmd_regression,
               help="run the fixed-seed regression checks against tests/regression/expected.json",
               description="Fixed-seed regression checks (reward labels, keypoints/keyframes of a fixed demo, a tiny\n"
                           "anticipation model). Without options: compare with the stored expected values.")


#: ``relam NAME ...`` handed whole to a module's own ``main(argv)`` (its own --help and options)
TOOLS: dict[str, tuple[str, str]] = {
    "anticipation": ("relam.anticipation", "train / evaluate the anticipation model"),
}


def _tool_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs=argparse.REMAINDER)


def _tool_runner(module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).main(list(args.args)) or 0)
    return run


for _name, (_module, _help) in TOOLS.items():
    add_subcommand(_name, _tool_setup, _tool_runner(_module), _help)


def _load_plugins() -> None:
    for mod in PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not (mod == e.name or mod.startswith(e.name + ".")):
                raise


def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    parser = _Parser(prog="relam", description="ReLAM benchmark-reproduction harness",
                     formatter_class=HelpFormatter, epilog=ENVIRONMENT_HELP)
    parser.add_argument("--debug", action="store_true",
                        help="print the full traceback of an error (accepted anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for sc in SUBCOMMANDS.values():
        # argparse %-formats help strings (the command list), not descriptions (`relam CMD --help`)
        p = sub.add_parser(sc.name, help=sc.help.replace("%", "%%"), description=sc.description or sc.help,
                           formatter_class=HelpFormatter, epilog=ENVIRONMENT_HELP)
        sc.setup(p)
        p.set_defaults(_run=sc.run, _parser=p)
    return parser


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in TOOLS:  # the tool parses its own arguments (and its own --help)
        return int(importlib.import_module(TOOLS[argv[0]][0]).main(argv[1:]) or 0)
    args, extra = build_parser().parse_known_args(argv)
    if extra:  # named by the subcommand's parser (`relam demos: error: ...`), not by `relam`'s
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _check_scale(args)
    return int(args._run(args) or 0)


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'the input is wrong' (exit 2); their messages say what to change."""
    from relam.experiments.spec import SpecError
    from relam.tasks import TaskError

    return (UsageError, SpecError, TaskError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def _unknown_task_hint(e: BaseException) -> str | None:
    """'did you mean' for a TaskError about an unknown name (its message lists every task)."""
    from relam.tasks import TaskError, list_tasks

    if not isinstance(e, TaskError) or "unknown task '" not in str(e):
        return None
    word = str(e).split("unknown task '", 1)[1].split("'", 1)[0]
    close = _closest(word, list_tasks())
    return f"did you mean {close!r}?" if close else None


def _report(e: BaseException, command: str) -> int:
    """Print an error as one or two lines (what is wrong; the fix) and return the exit status."""
    prog = f"relam {command}".strip()
    if isinstance(e, _user_error_types()):
        fix = getattr(e, "fix", None) or _unknown_task_hint(e)
        print(f"{prog}: error: {e}" + (f"\n  {fix}" if fix else ""), file=sys.stderr)
        return 2
    print(f"{prog}: error: {type(e).__name__}: {e}\n  unexpected; rerun with --debug for the traceback",
          file=sys.stderr)
    return 1


def _pop_debug(argv: list[str]) -> tuple[list[str], bool]:
    """Remove ``--debug`` (before any ``--``), so tools with their own parsers never see it."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    return kept, len(kept) != len(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``relam`` console script; returns the exit status."""
    argv, debug = _pop_debug(list(sys.argv[1:] if argv is None else argv))
    command = next((a for a in argv if not a.startswith("-")), "")
    try:
        return _dispatch(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{f'relam {command}'.strip()}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- the one place that turns errors into messages
        if debug:
            raise
        return _report(e, command)


if __name__ == "__main__":
    sys.exit(main())
