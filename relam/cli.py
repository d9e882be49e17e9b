"""The ``relam`` command line: one function pair per subcommand, kept in a registry.

    relam run SPEC --scale smoke [--backend local|ray] [--workers N] [--retry-failed] [--address A]
    relam status SPEC [--scale S]
    relam table SPEC [--scale S] [--out DIR]
    relam plot SPEC [--scale S] [--out DIR]

SPEC is a path or a name in experiments/ (``table4``). The scale defaults to ``$RELAM_SCALE`` or
``smoke``. Other modules add subcommands with :func:`add_subcommand` (a ``setup(parser)`` that adds
arguments and a ``run(args) -> int`` that does the work), e.g.::

    from relam.cli import add_subcommand
    add_subcommand("demos", setup_demos, run_demos, help="record expert demos")

Modules listed in :data:`PLUGIN_MODULES` are imported (if present) before parsing, so their
``add_subcommand`` calls take effect.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Callable

__all__ = ["SUBCOMMANDS", "PLUGIN_MODULES", "Subcommand", "add_subcommand", "build_parser", "main"]


@dataclass(frozen=True)
class Subcommand:
    name: str
    setup: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    help: str


SUBCOMMANDS: dict[str, Subcommand] = {}

#: modules that register more subcommands when imported (missing ones are ignored)
PLUGIN_MODULES: list[str] = []


def add_subcommand(name: str, setup_fn: Callable[[argparse.ArgumentParser], None],
                   run_fn: Callable[[argparse.Namespace], int], help: str = "") -> None:
    """Register ``relam NAME``: ``setup_fn(parser)`` adds its arguments, ``run_fn(args)`` runs it."""
    SUBCOMMANDS[name] = Subcommand(name, setup_fn, run_fn, help or (run_fn.__doc__ or "").strip().split("\n")[0])


def _default_scale() -> str:
    return os.environ.get("RELAM_SCALE", "smoke")


def _spec_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="spec file path, or a name in experiments/ (e.g. table4, fig6a)")


def _scale_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", choices=("smoke", "quick", "paper"), default=_default_scale(),
                   help="budget scale: smoke (CI minutes), quick (hours on 2 cores), paper "
                        "(the paper's budgets); default $RELAM_SCALE or smoke")


# --- run --------------------------------------------------------------------------------------
def setup_run(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    _scale_arg(p)
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: this process (1 worker) or a spawn process pool; ray: Ray tasks")
    p.add_argument("--workers", type=int, default=1, help="parallel runs (pool size / Ray num_cpus)")
    p.add_argument("--address", default=None, help="address of an existing Ray cluster (--backend ray)")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks (default: all of the spec)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="only these columns, by label or method name (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="only these seeds")


def cmd_run(args: argparse.Namespace) -> int:
    """Run every missing run of a spec (idempotent; finished runs are skipped)."""
    from relam.experiments import load_spec, run_spec
    from relam.experiments.runner import expand

    spec = load_spec(args.spec)
    runs = [r for r in expand(spec, args.scale)
            if (args.tasks is None or r.task in args.tasks)
            and (args.methods is None or r.label in args.methods or r.method in args.methods)
            and (args.seeds is None or r.seed in args.seeds)]
    if not runs:
        print(f"error: no run of {spec.name} matches --tasks/--methods/--seeds", file=sys.stderr)
        return 2
    summary = run_spec(spec, args.scale, backend=args.backend, workers=args.workers, runs=runs,
                       retry_failed=args.retry_failed, address=args.address, progress=not args.no_progress)
    print(summary.line())
    real = [r for r in summary.failed() if not r.get("not_implemented")]
    for r in real[:10]:
        print(f"  failed: {r['task']} / {r.get('label') or r['method']} / seed {r['seed']}: {r['error']}")
    return 1 if real else 0


# --- status -----------------------------------------------------------------------------------
def setup_status(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    _scale_arg(p)
    p.add_argument("-v", "--verbose", action="store_true", help="list every run")


def cmd_status(args: argparse.Namespace) -> int:
    """Show which runs of a spec are done, failed, not implemented or missing."""
    from collections import Counter

    from relam.experiments import load_spec, spec_status

    spec = load_spec(args.spec)
    rows = spec_status(spec, args.scale)
    counts: Counter = Counter()
    for run, rec in rows:
        st = "missing" if rec is None else rec["status"] if rec["status"] == "ok" else (
            "not implemented" if rec.get("not_implemented") else "failed")
        counts[st] += 1
        if args.verbose or st == "failed":
            extra = f"success={rec['success']:.3f}" if st == "ok" else (rec or {}).get("error") or ""
            print(f"{run.key}  {st:15s} {run.task:22s} {run.label:20s} seed {run.seed}  {extra}")
    print(f"{spec.name} [{args.scale}]: {len(rows)} runs: " +
          ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0


# --- table / plot -----------------------------------------------------------------------------
def setup_table(p: argparse.ArgumentParser) -> None:
    _spec_arg(p)
    _scale_arg(p)
    p.add_argument("--out", default=None, help="output folder (default <cache>/reports/<spec>/<scale>)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for the IQM intervals")


def cmd_table(args: argparse.Namespace) -> int:
    """Render the spec's table (Markdown, CSV, LaTeX) from the stored records."""
    from relam.experiments import load_spec
    from relam.experiments.reports import render_table

    rep = render_table(load_spec(args.spec), args.scale, out_dir=args.out, reps=args.reps)
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

    print(f"written: {render_curves(load_spec(args.spec), args.scale, out_dir=args.out)}")
    return 0


add_subcommand("run", setup_run, cmd_run)
add_subcommand("status", setup_status, cmd_status)
add_subcommand("table", setup_table, cmd_table)
add_subcommand("plot", setup_plot, cmd_plot)


#: ``relam NAME ...`` handed whole to a module's own ``main(argv)`` (its own --help and options)
TOOLS: dict[str, tuple[str, str]] = {
    "demos": ("relam.demos", "make, summarise and view expert demos (relam demos --help)"),
    "subgoals": ("relam.subgoals", "build the subgoal dataset of a task (keypoints + keyframes)"),
    "overlay": ("relam.overlay", "draw keypoints, tracks and keyframes over a demo (PNG/GIF)"),
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
    parser = argparse.ArgumentParser(prog="relam", description="ReLAM benchmark-reproduction harness")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for sc in SUBCOMMANDS.values():
        # argparse %-formats help strings (the command list), not descriptions (`relam CMD --help`)
        p = sub.add_parser(sc.name, help=sc.help.replace("%", "%%"), description=sc.help)
        sc.setup(p)
        p.set_defaults(_run=sc.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``relam`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:  # the tool parses its own arguments (and its own --help)
        return int(importlib.import_module(TOOLS[argv[0]][0]).main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    from relam.experiments.spec import SpecError

    try:
        return int(args._run(args) or 0)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
