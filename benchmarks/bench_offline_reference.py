"""What an offline row's data and policy input allow, whatever the reward: the same IQL, budget,
policy input and evaluation as one column of a spec, trained on reference labels instead of the
method's own.

Variants (``--variants``, comma-separated):

- ``labels``: the method's own labels (what ``relam run`` trains on; a same-process reference);
- ``dense``: the 200 trajectories relabelled with the simulator's dense reward (ManiSkill's
  ``normalized_dense``, recorded with every trajectory), the reward the task's designers shaped:
  an upper reference for any reward learned from videos;
- ``bc``: the expert trajectories alone with a zero reward, so that every advantage is the same
  and IQL's actor loss is plain behaviour cloning of the experts.

When ``dense`` and ``bc`` score about what the method's labels score, the reward is not what
holds the row back; when they score far more, it is. Prints one Markdown table (and, with
``--json``, one JSON line per variant)::

    python benchmarks/bench_offline_reference.py --task PickCube-v1 --variants dense,bc --seed 0
    python benchmarks/bench_offline_reference.py --smoke

The spec's budget at ``--scale`` (default offline_relam, quick) is used as it is;
``--budget FIELD=VALUE ...`` replaces fields of it (``train_steps=30000 iql_encoder=separate``).
Each variant checkpoints under ``<cache>/bench_offline_reference/`` (a folder per run key) and
resumes where it stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from relam.cache import cache_dir
from relam.methods import get_method
from relam.offline import OfflineDataset
from relam.scales import SCALES

VARIANTS = ("labels", "dense", "bc")


def reference_transform(variant: str) -> Callable[[OfflineDataset], OfflineDataset] | None:
    """The relabelling of one variant (None: the method's own labels)."""
    if variant == "labels":
        return None
    if variant == "dense":
        return lambda ds: ds.with_rewards(ds.env_reward, "env_dense")
    if variant == "bc":
        def experts_alone(ds: OfflineDataset) -> OfflineDataset:
            sub = ds.subset(np.flatnonzero(~ds.noisy))
            return sub.with_rewards(np.zeros_like(sub.rewards), "zero (experts alone: behaviour cloning)")
        return experts_alone
    raise ValueError(f"--variants: unknown variant {variant!r}; one of {', '.join(VARIANTS)}")


def budget_fields(pairs: Sequence[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs, each checked against :class:`relam.methods.Budget` (YAML values)."""
    import yaml

    from relam.methods import Budget

    out: dict[str, Any] = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or field not in Budget.model_fields:
            raise ValueError(f"--budget {pair!r}: expected FIELD=VALUE with FIELD a budget field "
                             f"(e.g. iql_encoder=shared; fields: {', '.join(sorted(Budget.model_fields))})")
        out[field] = yaml.safe_load(value)
    return out


def run_variant(spec_name: str, task: str, label: str, variant: str, scale: str, seed: int,
                overrides: dict[str, Any], progress: bool) -> dict[str, Any]:
    """One variant of the spec's run (``task``, column ``label``, ``seed``), its budget with
    ``overrides``; its work folder is named by the run's key, so a changed task entry or budget
    never resumes another's checkpoint."""
    from relam.experiments.runner import expand
    from relam.experiments.spec import load_spec
    from relam.methods import Budget
    from relam.policy_gif import run_context

    runs = [r for r in expand(load_spec(spec_name), scale) if r.task == task and r.label == label]
    if not runs:
        raise ValueError(f"--task {task!r} / --column {label!r}: not a cell of spec {spec_name!r}")
    budget = Budget(**{**runs[0].budget, **overrides})  # validated as a spec's budget would be
    run = dataclasses.replace(runs[0], seed=seed, budget=budget.key_dict())
    out = cache_dir() / "bench_offline_reference" / f"{task}-{variant}-{scale}-s{seed}-{run.key}"
    ctx = dataclasses.replace(run_context(run, out), progress=progress, offline_transform=reference_transform(variant))
    t0 = time.time()
    res = get_method(run.method).offline(ctx)
    return {"task": task, "column": label, "variant": variant, "seed": seed, "success": res.success,
            "curve": res.curve, "wall_s": round(time.time() - t0, 1), "train_steps": budget.train_steps,
            "label_return_expert": res.metrics.get("label_return_expert"),
            "label_return_noisy": res.metrics.get("label_return_noisy"),
            "trajectories": res.metrics.get("offline_trajectories"), "out_dir": str(out)}


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| task | column | variant | seed | trajectories | IQL steps | success | curve (success % per evaluation) | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        curve = ", ".join(f"{100 * v:.0f}" for _, v in r["curve"])
        lines.append(f"| {r['task']} | {r['column']} | {r['variant']} | {r['seed']} | {r['trajectories']:.0f} | "
                     f"{r['train_steps']} | {100 * r['success']:.0f}% | {curve} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_offline_reference.py",
                                description="One offline column trained on reference labels (dense reward, experts "
                                            "alone) beside its own: is the reward what holds the row back?")
    p.add_argument("--task", default="PickCube-v1")
    p.add_argument("--spec", default="offline_relam", help="spec whose budget and column are used")
    p.add_argument("--column", default="ReLAM (ground truth)", help="the spec's column (its label)")
    p.add_argument("--variants", default="dense,bc", help=f"comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--scale", default="quick", choices=SCALES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="budget fields replaced, e.g. train_steps=30000 iql_encoder=shared (validated as a spec's budget)")
    p.add_argument("--json", action="store_true", help="also one JSON line per variant")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--smoke", action="store_true", help="a few minutes: the spec's smoke budget, PushCube-v1")
    a = p.parse_args(list(argv) if argv is not None else None)
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    for v in variants:
        reference_transform(v)  # rejects an unknown name before any work
    if a.smoke:
        a.scale, a.task = "smoke", "PushCube-v1"
    overrides = budget_fields(a.budget)
    torch.set_num_threads(1)
    rows = []
    for v in variants:
        r = run_variant(a.spec, a.task, a.column, v, a.scale, a.seed, overrides, progress=not a.quiet)
        rows.append(r)
        if a.json:
            print(json.dumps(r), flush=True)
    print(table(rows), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
