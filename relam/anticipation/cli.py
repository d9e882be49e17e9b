"""``relam anticipation train|evaluate`` (also ``python -m relam.anticipation``): train a model on
tasks' demos (or synthetic sequences) and evaluate it on its held-out demos."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from relam.anticipation.config import AnticipationConfig
from relam.anticipation.data import split_holdout
from relam.anticipation.evaluation import evaluate_anticipation
from relam.anticipation.model import load_anticipation
from relam.anticipation.plots import plot_predictions
from relam.anticipation.synthetic import synthetic_subgoal_items
from relam.anticipation.training import train_anticipation
from relam.cache import atomic_write_json
from relam.scales import SCALES


def _load_items(tasks: Sequence[str], args: argparse.Namespace) -> list[Any]:
    if args.synthetic:
        return [it for t in tasks for it in synthetic_subgoal_items(
            t, n=args.n_demos, seed=0, num_points=args.num_points, size=args.image_size)]
    try:
        from relam.subgoals import build_subgoal_dataset
    except ImportError as e:  # pragma: no cover - depends on the rest of the tree
        raise SystemExit(f"relam.subgoals is not available ({e}); use --synthetic") from e
    items = []
    for t in tasks:
        items += list(_build_dataset(build_subgoal_dataset, t, args.num_points,
                                     args.n_demos).items)
    return items


def _build_dataset(build, task: str, num_points: int, n_demos: int | None):
    """``relam.subgoals.build_subgoal_dataset`` with N keypoints on the first ``n_demos`` demos.

    ``n_demos`` is passed explicitly: with ``None`` the subgoal cache key does not record how
    many demos were stored when it was built, so a file made from a partial demo set is reused.
    """
    from relam.subgoals import KeypointSettings

    return build(task, KeypointSettings(num_points=num_points), n_demos=n_demos)


def _config_from_args(args: argparse.Namespace) -> AnticipationConfig:
    over = {k: getattr(args, k) for k in ("layers", "width", "heads", "dropout", "lr",
                                          "batch_size", "steps", "encoder", "encoder_path",
                                          "encoder_steps", "max_len", "seed", "num_points",
                                          "augment_shifts",
                                          "image_size") if getattr(args, k, None) is not None}
    return AnticipationConfig.for_scale(args.scale, **over)


def main(argv: Sequence[str] | None = None) -> int:
    from relam.toolargs import TOOL_HELP, add_weights_args, tool_parser

    p = tool_parser("anticipation", "Train / evaluate the ReLAM anticipation model.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("tasks", nargs="*", help="task names (e.g. drawer-open-v3 PushCube-v1)")
        q.add_argument("--synthetic", action="store_true",
                       help="use procedural stand-in data (tasks synth-push / synth-lift)")
        q.add_argument("--n-demos", type=int, default=100, help="demos per task to load")
        q.add_argument("--holdout", type=int, default=10, help="held-out demos per task")
        q.add_argument("--num-points", type=int, default=4, help="keypoints per subgoal")
        q.add_argument("--image-size", type=int, default=128, help="image side in pixels")

    t = sub.add_parser("train", help="train a model (resumes from DIR/checkpoint.pt)",
                       description="Train an anticipation model (resumes from OUT/checkpoint.pt).", **TOOL_HELP)
    common(t)
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--scale", default="quick", choices=SCALES,
                   help="model/training budget preset")
    for name, typ in (("layers", int), ("width", int), ("heads", int), ("dropout", float),
                      ("lr", float), ("batch-size", int), ("steps", int), ("augment-shifts", int),
                      ("encoder-steps", int), ("max-len", int), ("seed", int)):
        t.add_argument(f"--{name}", type=typ, default=None, help="default: the --scale preset's")
    t.add_argument("--encoder", choices=["pixels", "conv-ae", "dinov2"], default=None,
                   help="frozen image encoder (default: the --scale preset's; dinov2 needs --dinov2-path)")
    add_weights_args(t, dinov2=True)

    e = sub.add_parser("evaluate", help="evaluate a trained model on its held-out demos",
                       description="Evaluate a trained model on its held-out demos.", **TOOL_HELP)
    common(e)
    e.add_argument("model", help="training folder or model.pt")
    e.add_argument("--picture", default=None, help="PNG path for predicted vs true subgoals")

    args = p.parse_args(argv)
    if args.cmd == "train":
        if not args.tasks:
            p.error("train needs at least one TASK")
        cfg = _config_from_args(args)
        items = _load_items(args.tasks, args)
        model = train_anticipation(items, cfg, args.out, holdout=args.holdout)
        metrics_path = Path(args.out) / "metrics.json"
        if metrics_path.exists():
            m = json.loads(metrics_path.read_text())
            print(json.dumps({k: m[k] for k in ("n", "final_error_px", "per_stage_error_px",
                                                "length_accuracy", "train_wall_s")}, indent=1))
        del model
        return 0

    model = load_anticipation(args.model)
    folder = Path(args.model) if Path(args.model).is_dir() else Path(args.model).parent
    tasks = args.tasks or model.tasks
    items = _load_items(tasks, args)
    split = folder / "split.json"
    if split.exists():
        held = {(t_, s_) for t_, s_ in json.loads(split.read_text())["heldout"]}
        items = [it for it in items if (it.task, int(it.seed)) in held]
    else:
        items = split_holdout(items, args.holdout)[1]
    if not items:
        raise SystemExit("no held-out demos found for these tasks")
    metrics = evaluate_anticipation(model, items)
    atomic_write_json(folder / "eval_metrics.json", metrics)
    plot_predictions(model, items, args.picture or folder / "eval_predictions.png")
    print(json.dumps({k: v for k, v in metrics.items() if k != "items"}, indent=1))
    return 0
