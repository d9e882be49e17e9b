"""Fixed-seed regression checks: small results that must not drift (issue 6, item 7).

Unit tests check that each piece is *right* on hand-made inputs; these checks pin what the pieces
*do* on a few fixed, realistic inputs, so that an unintended change anywhere along the pipeline
(reward math, stage logic, the sim tracker's lifting, keypoint selection, keyframes, the expert
rollout, anticipation-model training) shows up as a named number that moved.  Each check is a
pure-ish function that computes a small JSON-able dict deterministically on one CPU thread in a
few seconds:

``reward_hand_track``
    :func:`relam.reward.label_trajectory` on a hand-built 3-point track with 3 subgoals, for every
    reward shape and both ``reach`` rules (no simulator).
``demo_keypoints``
    keypoint selection (Eq. 1) and keyframes (Eq. 2) of one real expert demo: drawer-open-v3,
    env seed 0, the scripted expert, sim segmenter and tracker (:func:`relam.subgoals.subgoal_sequence`).
``reward_demo``
    ReLAM reward labels of that demo with its own ground-truth subgoals, through
    :class:`relam.relam_method.ReLAMLabeller` (the sim tracker re-lifts the plan's first row).
``anticipation_tiny``
    a tiny anticipation model trained for a few steps on a fixed synthetic dataset (torch seeded,
    one thread): its loss history and its generated plan for one frame.

The expected values live in ``tests/regression/expected.json`` (``tests/test_regression.py``
compares them: integers, booleans and strings exactly, floats to 1e-4 relative).  When a change
is *meant* to move them, regenerate and commit the file::

    python -m relam.regression --regenerate      # the same as `relam regression --regenerate`

The command line (``relam regression``) is in :mod:`relam.cli`.

The demo is rolled out fresh (not read from the demo cache), so a stale cache can never hide a
drift and the checks write nothing outside a temporary folder.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from relam.cache import REPO_ROOT, atomic_write_json
from relam.versions import package_versions

__all__ = [
    "EXPECTED_PATH",
    "REGENERATE_COMMAND",
    "REL_TOL",
    "ABS_TOL",
    "CHECKS",
    "reward_hand_track",
    "demo_keypoints",
    "reward_demo",
    "anticipation_tiny",
    "run_checks",
    "compare",
    "load_expected",
    "write_expected",
]

EXPECTED_PATH = REPO_ROOT / "tests" / "regression" / "expected.json"
REGENERATE_COMMAND = "python -m relam.regression --regenerate"
#: floats match when ``|a - e| <= REL_TOL * max(|a|, |e|) + ABS_TOL`` (the absolute floor keeps
#: values that should be 0 from failing on 1e-12 noise).
REL_TOL = 1e-4
ABS_TOL = 1e-6

DEMO_TASK = "drawer-open-v3"
DEMO_SEED = 0


def _floats(a: Any) -> list:
    """numpy -> nested lists of Python floats (float32 values widened exactly)."""
    return np.asarray(a, dtype=np.float64).tolist()


def _ints(a: Any) -> list:
    return np.asarray(a, dtype=np.int64).tolist()


# --------------------------------------------------------------------------- (a) hand-made track


def hand_track() -> tuple[np.ndarray, np.ndarray]:
    """A fixed 3-point track (41 frames) through 3 subgoals, and the subgoals.

    Two "arm" points lead and one "object" point follows; the object lags 9 px behind at the
    second subgoal's first visit (so the ``"mean"`` rule reaches it a few steps before
    ``"every"``), the path overshoots once, stalls once and carries a small deterministic wiggle,
    so distances cover all pieces of the piecewise-linear shape and beyond ``d_max``.
    """
    start = np.array([[20.0, 100.0], [30.0, 100.0], [90.0, 40.0]])
    g1 = start + [[60.0, -50.0], [60.0, -50.0], [0.0, 0.0]]
    g2 = g1 + [[0.0, 20.0], [0.0, 20.0], [-30.0, 20.0]]
    g3 = g2 + [[-10.0, 0.0], [-10.0, 0.0], [-10.0, 0.0]]
    lag = g2 + [[0.0, 0.0], [0.0, 0.0], [9.0, 0.0]]
    overshoot = g1 + [[4.0, -3.0], [4.0, -3.0], [0.0, 0.0]]
    # waypoints and the number of steps spent moving to each (linear in between)
    way = [(overshoot, 12), (g1, 3), (g1, 4), (lag, 8), (g2, 4), (g3, 6), (g3, 4)]
    frames = [start]
    for target, steps in way:
        a = frames[-1]
        for k in range(1, steps + 1):
            frames.append(a + (target - a) * (k / steps))
    track = np.stack(frames)
    t = np.arange(len(track), dtype=np.float64)
    track = track + 0.4 * np.sin(0.7 * t)[:, None, None] * np.array([1.0, -0.5])
    return track, np.stack([g1, g2, g3])


def reward_hand_track() -> dict:
    """Reward labels of :func:`hand_track` for every shape (reach="every") and reach="mean"."""
    from relam.reward import SHAPES, RewardSettings, label_trajectory

    track, subgoals = hand_track()
    base = RewardSettings()
    variants = {shape: dataclasses.replace(base, shape=shape) for shape in SHAPES}
    variants["piecewise_linear_mean_reach"] = dataclasses.replace(base, reach="mean")
    out: dict[str, Any] = {}
    for name, settings in variants.items():
        rewards, stages, reached = label_trajectory(track, subgoals, settings)
        out[name] = {"rewards": _floats(rewards), "stages": _ints(stages),
                     "reached_steps": _ints(np.flatnonzero(reached)), "return": float(np.sum(rewards, dtype=np.float64))}
    return out


# --------------------------------------------------------------------------- (c) the real demo


@functools.lru_cache(maxsize=1)
def fixed_demo() -> Any:
    """The scripted expert on drawer-open-v3 from env seed 0, recorded fresh (about 2 s)."""
    from relam.demos import rollout_expert
    from relam.tasks import make_env

    env = make_env(DEMO_TASK)
    try:
        demo = rollout_expert(env, DEMO_SEED)
    finally:
        env.close()
    if demo is None or not demo.succeeded:
        raise RuntimeError(f"regression: the scripted expert failed on {DEMO_TASK} seed {DEMO_SEED}; "
                           "the Meta-World expert or the task entry changed")
    return demo


@functools.lru_cache(maxsize=1)
def _fixed_subgoals() -> tuple[Any, Any]:
    from relam.keypoints import KeypointSettings
    from relam.subgoals import subgoal_sequence

    return subgoal_sequence(fixed_demo(), KeypointSettings())


def demo_keypoints() -> dict:
    """Keypoint selection (Eq. 1) and keyframes (Eq. 2) of the fixed demo (sim segmenter/tracker)."""
    demo = fixed_demo()
    seq, kp = _fixed_subgoals()
    sel = kp.selection
    return {
        "demo_length": int(demo.length),
        "demo_first_success_step": int(np.flatnonzero(demo.success)[0]),
        "env_return": float(np.sum(demo.env_reward, dtype=np.float64)),
        "counts": {k: int(v) for k, v in sorted(sel.counts.items())},
        "keypoints_uv": _floats(sel.uv),
        "on_object": [bool(b) for b in sel.on_object],
        "keyframe_steps": _ints(seq.keyframe_steps),
        "subgoal_keypoints": _floats(seq.keypoints),
    }


def reward_demo() -> dict:
    """ReLAM labels of the fixed demo with its ground-truth subgoals (ReLAMLabeller, sim tracker)."""
    from relam.relam_method import ReLAMLabeller
    from relam.wrappers import FixedSubgoals

    demo = fixed_demo()
    seq, _ = _fixed_subgoals()
    lab = ReLAMLabeller(FixedSubgoals(np.asarray(seq.keypoints, np.float64)), tracker="sim").label(demo)
    stages = np.asarray(lab.info["stages"])
    return {
        "rewards": _floats(lab.rewards),
        "stages": _ints(stages),
        "reached_steps": _ints(np.flatnonzero(lab.info["reached"])),
        "return": float(np.sum(lab.rewards, dtype=np.float64)),
        "final_keypoints": _floats(lab.extra_obs["keypoints"][-1]),
    }


# --------------------------------------------------------------------------- (b) anticipation


def anticipation_tiny() -> dict:
    """A tiny anticipation model, trained 30 steps on 6 synthetic sequences (64 px), seed 0.

    Records the logged losses, the generated plan for one training frame and one unseen frame
    (with the end-of-sequence probabilities), and the teacher-forced rows for the first.
    """
    import torch

    from relam.anticipation import (AnticipationConfig, normalise_coords, synthetic_subgoal_items,
                                    train_anticipation)

    torch.set_num_threads(1)
    items = synthetic_subgoal_items("synth-push", n=6, seed=3, size=64)
    unseen = synthetic_subgoal_items("synth-push", n=1, seed=4, size=64)[0]
    cfg = AnticipationConfig(layers=1, width=32, heads=2, dropout=0.0, steps=30, lr=3e-3, warmup=5,
                             batch_size=4, image_size=64, encoder="pixels", encoder_kwargs={"patch": 16},
                             input_noise_px=0.5, max_len=6, task_grid=1, log_every=10, ckpt_every=1000,
                             seed=0)
    with tempfile.TemporaryDirectory(prefix="relam-regression-") as tmp:
        # on the CPU even where a GPU is seen: the expected values are CPU bits
        model = train_anticipation(items, cfg, tmp, holdout=0, progress=False, evaluate=False, device="cpu")
        hist = json.loads((Path(tmp) / "history.json").read_text())
    out: dict[str, Any] = {"mse": _floats(hist["mse"]), "bce": _floats(hist["bce"])}
    for name, frame in (("train_frame", items[0].initial_frame), ("unseen_frame", unseen.initial_frame)):
        plan = model.generate(frame, "synth-push")
        with torch.no_grad():
            img = model.tokens(np.asarray(frame)[None])
            rows = torch.as_tensor(normalise_coords(plan, cfg.image_size)[None], dtype=torch.float32)
            _, end = model.net(img, model.task_tokens(["synth-push"]), rows)
        out[name] = {"plan": _floats(plan), "end_prob": _floats(torch.sigmoid(end[0]).numpy())}
    out["teacher_forced"] = _floats(model.teacher_forced(items[0]))
    return out


# --------------------------------------------------------------------------- running and comparing


CHECKS: dict[str, Callable[[], dict]] = {
    "reward_hand_track": reward_hand_track,
    "demo_keypoints": demo_keypoints,
    "reward_demo": reward_demo,
    "anticipation_tiny": anticipation_tiny,
}


def _versions() -> dict[str, str]:
    return package_versions(("numpy", "torch", "mujoco", "metaworld", "opencv-python", "opencv-python-headless"))


def context() -> dict:
    """What the expected values were made with (shown when a value drifts; never compared)."""
    from relam.keypoints import KeypointSettings
    from relam.reward import RewardSettings

    import relam.tasks

    ctx = {"reward_settings": RewardSettings().to_dict(), "keypoint_settings": KeypointSettings().to_dict(),
           "sim_revision": dict(getattr(relam.tasks, "SIM_REVISION", {})), "versions": _versions()}
    return json.loads(json.dumps(ctx))  # as the file holds it (tuples -> lists)


def run_checks(names: Iterable[str] | None = None, timings: dict[str, float] | None = None) -> dict:
    """Compute the named checks (all by default) -> ``{name: result}``; seconds go to ``timings``."""
    names = list(names) if names is not None else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown regression check(s) {unknown}; choose from {list(CHECKS)}")
    out = {}
    for n in names:
        t0 = time.perf_counter()
        out[n] = CHECKS[n]()
        if timings is not None:
            timings[n] = time.perf_counter() - t0
    return out


def _close(a: float, e: float, rel_tol: float, abs_tol: float) -> bool:
    if math.isnan(a) or math.isnan(e):
        return math.isnan(a) and math.isnan(e)
    return abs(a - e) <= rel_tol * max(abs(a), abs(e)) + abs_tol


def compare(actual: Any, expected: Any, path: str = "", rel_tol: float = REL_TOL,
            abs_tol: float = ABS_TOL) -> list[str]:
    """Every place where ``actual`` drifted from ``expected``, as ``"path: expected X, got Y"``.

    Integers, booleans and strings must match exactly (an int never matches a float); floats to
    ``rel_tol`` relative (plus ``abs_tol``); lists must have the same length; dicts the same keys.
    """
    where = path or "<root>"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected a mapping, got {type(actual).__name__}"]
        out = []
        for k in sorted(set(expected) | set(actual)):
            p = f"{path}.{k}" if path else str(k)
            if k not in actual:
                out.append(f"{p}: missing from the new result")
            elif k not in expected:
                out.append(f"{p}: new value not in the expected file")
            else:
                out += compare(actual[k], expected[k], p, rel_tol, abs_tol)
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {type(actual).__name__}"]
        if len(actual) != len(expected):
            return [f"{where}: expected {len(expected)} entries, got {len(actual)}"]
        out = []
        for i, (a, e) in enumerate(zip(actual, expected)):
            out += compare(a, e, f"{path}[{i}]", rel_tol, abs_tol)
        return out
    if isinstance(expected, float) and isinstance(actual, float):
        if not _close(actual, expected, rel_tol, abs_tol):
            return [f"{where}: expected {expected!r}, got {actual!r} (rel. tolerance {rel_tol:g})"]
        return []
    if type(actual) is not type(expected) or actual != expected:
        return [f"{where}: expected {expected!r}, got {actual!r} (must match exactly)"]
    return []


def load_expected(path: str | Path = EXPECTED_PATH) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no expected regression values at {path}; make them with `{REGENERATE_COMMAND}`")
    return json.loads(path.read_text())


def write_expected(results: dict, path: str | Path = EXPECTED_PATH, merge: bool = True) -> Path:
    """Write ``results`` (plus the context they were made with) atomically; keeps other checks'
    entries when ``merge`` (so ``--checks a`` regenerates only ``a``)."""
    path = Path(path)
    data = load_expected(path) if merge and path.exists() else {"checks": {}}
    data["checks"].update(results)
    data["context"] = context()
    data["regenerate"] = REGENERATE_COMMAND
    return atomic_write_json(path, data)


def drift_report(name: str, drifts: list[str], expected_file: dict, limit: int = 12) -> str:
    """A failure message: which values of check ``name`` drifted, what changed around them, how to fix."""
    lines = [f"regression check '{name}' drifted in {len(drifts)} value(s):"]
    lines += [f"  {d}" for d in drifts[:limit]]
    if len(drifts) > limit:
        lines.append(f"  ... and {len(drifts) - limit} more")
    ctx_now, ctx_then = context(), expected_file.get("context", {})
    changed = [f"{k}.{f}: {ctx_then.get(k, {}).get(f)!r} -> {v!r}"
               for k in ctx_now for f, v in ctx_now[k].items() if ctx_then.get(k, {}).get(f) != v]
    if changed:
        lines.append("changed since the expected values were made: " + "; ".join(changed))
    lines.append(f"If the change is intended, regenerate with `{REGENERATE_COMMAND} --checks {name}` "
                 f"and commit {EXPECTED_PATH.relative_to(REPO_ROOT)}.")
    return "\n".join(lines)


if __name__ == "__main__":  # `python -m relam.regression` is `relam regression` (the parsing is in relam.cli)
    import sys

    from relam.cli import main

    raise SystemExit(main(["regression", *sys.argv[1:]]))
