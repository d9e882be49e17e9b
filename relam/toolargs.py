"""The parts of the command line that :mod:`relam.cli` (``relam demos``, ``subgoals``, ``overlay``
...) shares with :mod:`relam.anticipation.cli` (``relam anticipation``): the error type, the parser
and help format, the environment-variable epilog and the perception-weights options.

A module of its own, importing nothing of relam at module level, so that
:mod:`relam.anticipation.cli` can use it while :mod:`relam.cli` runs it: imports go one way.
"""
from __future__ import annotations

import argparse
import os
import sys

__all__ = ["ENVIRONMENT_HELP", "TOOL_HELP", "HelpFormatter", "UsageError", "add_weights_args", "tool_parser",
           "weights_kwargs"]


class UsageError(Exception):
    """A mistake on the command line or in the environment; ``fix`` says what to do instead."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.fix = fix


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are two lines (the error, and where the help is) instead
    of the full usage block, which for ``relam run`` is longer than the error it precedes."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message}\n  see '{self.prog} --help'", file=sys.stderr)
        sys.exit(2)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with each option's default, ``(default: X)``, except where there is none to show (a
    ``None`` or ``False`` default, or a help text that already says it); descriptions and epilogs
    keep their line breaks (the environment block)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or "default" in text.lower() or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS
                or not (action.option_strings or action.nargs in ("?", "*"))):
            return text
        return text + " (default: %(default)s)"


#: the environment variables relam reads; the epilog of `relam --help` and of every subcommand's
ENVIRONMENT_HELP = """environment variables:
  RELAM_CACHE           root of all generated data: demos, subgoal datasets, models, results,
                        reports (default <repo>/.cache/relam in a checkout, else
                        ~/.cache/relam)
  RELAM_SCALE           default --scale: smoke, quick or paper (default smoke)
  RELAM_METHOD_MODULES  comma-separated modules imported to register more methods
  RELAM_TENSORBOARD     1: every PPO / IQL run writes a TensorBoard log in its work folder
                        (what `relam run --tensorboard` sets; needs the tensorboard extra)
  RELAM_ALLOW_GYM       1: do not hide the unmaintained 'gym' package (see relam.oldgym)
  MUJOCO_GL             MuJoCo's renderer: egl (GPU/headless), osmesa (CPU) or glfw (a display)
  RELAM_DINOV2_PATH     DINOv2 weights folder (config.json + model.safetensors), read when no
                        --dinov2-path is given
  RELAM_COTRACKER_PATH  CoTracker3 checkpoint file (e.g. scaled_offline.pth), read when no
                        --cotracker-path is given
  RELAM_EVF_SAM_PATH    EVF-SAM checkpoint folder (e.g. a copy of YxZhang/evf-sam2), read when no
                        --evf-sam-path is given
No weights are downloaded at run time; the default backends (sim segmenter and tracker, pixels
or conv-ae encoder) need none."""


#: keywords for a tool's sub-subparsers (``sub.add_parser(name, **TOOL_HELP)``), which do not
#: inherit their parent's formatter and epilog
TOOL_HELP = dict(formatter_class=HelpFormatter, epilog=ENVIRONMENT_HELP)


def tool_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The parser of a tool subcommand (``relam demos`` ...): named ``relam NAME`` in its usage
    line, with the defaults and the environment variables in its help."""
    return _Parser(prog=f"relam {name}", description=description, **TOOL_HELP)


def add_weights_args(p: argparse.ArgumentParser, *, segmenter: bool = False, tracker: bool = False,
                     dinov2: bool = False) -> None:
    """``--evf-sam-path`` / ``--cotracker-path`` / ``--dinov2-path``: the local weights of the
    perception backends, each defaulting to its environment variable."""
    if segmenter:
        p.add_argument("--segmenter", default="sim", choices=("sim", "evf-sam"),
                       help="text-prompted segmenter (evf-sam needs --evf-sam-path)")
        p.add_argument("--evf-sam-path", default=os.environ.get("RELAM_EVF_SAM_PATH"), metavar="DIR",
                       help="EVF-SAM checkpoint folder for --segmenter evf-sam "
                            "(default $RELAM_EVF_SAM_PATH)")
    if tracker:
        p.add_argument("--tracker", default="sim", choices=("sim", "lk", "cotracker"),
                       help="point tracker (cotracker needs --cotracker-path)")
        p.add_argument("--cotracker-path", default=os.environ.get("RELAM_COTRACKER_PATH"), metavar="FILE",
                       help="CoTracker3 checkpoint file for --tracker cotracker "
                            "(default $RELAM_COTRACKER_PATH)")
    if dinov2:
        # None here: the DINOv2 encoder itself falls back to $RELAM_DINOV2_PATH
        p.add_argument("--dinov2-path", "--encoder-path", dest="encoder_path", metavar="DIR", default=None,
                       help="DINOv2 weights folder for --encoder dinov2 (default $RELAM_DINOV2_PATH)")


def weights_kwargs(args: argparse.Namespace) -> dict:
    """``KeypointSettings`` keywords for the segmenter and tracker chosen by :func:`add_weights_args`
    options, with their weights paths. A backend that needs weights is built once here, before any
    work, so that a missing path ends the command at once with the backend's own error (naming the
    path and where to get the weights); the backends load their models lazily, so this is cheap."""
    from relam.perception import make_segmenter, make_tracker

    kw: dict = {}
    checks = []
    if getattr(args, "segmenter", None) is not None:
        kw["segmenter"] = args.segmenter
        if args.segmenter == "evf-sam":
            if args.evf_sam_path is None:
                raise UsageError("--segmenter evf-sam needs its weights folder",
                                 fix="pass --evf-sam-path DIR or set RELAM_EVF_SAM_PATH (or use --segmenter sim)")
            kw["segmenter_kwargs"] = {"weights_path": args.evf_sam_path}
            checks.append(lambda: make_segmenter("evf-sam", **kw["segmenter_kwargs"]))
    if getattr(args, "tracker", None) is not None:
        kw["tracker"] = args.tracker
        if args.tracker == "cotracker":
            if args.cotracker_path is None:
                raise UsageError("--tracker cotracker needs its checkpoint file",
                                 fix="pass --cotracker-path FILE or set RELAM_COTRACKER_PATH "
                                     "(or use --tracker sim or lk)")
            kw["tracker_kwargs"] = {"checkpoint": args.cotracker_path}
            checks.append(lambda: make_tracker("cotracker", **kw["tracker_kwargs"]))
    for check in checks:
        try:
            check()
        except ImportError as e:  # the weights are there but the backend's package is not
            raise UsageError(str(e)) from e
    return kw
