"""How well a trained model plans held-out demos: per-stage and final keypoint error in pixels
(generated and teacher-forced) and how often it predicts the right number of subgoals."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from relam.anticipation.model import AnticipationModel


def _point_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean distance over points, in pixels."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1).mean())


def evaluate_anticipation(model: AnticipationModel, items: Sequence[Any]) -> dict:
    """Generate for each item and compare with its true keypoint rows (pixels).

    Returns ``per_stage_error_px[k]`` (mean over items that have stage k in both the prediction
    and the truth; stage 0 = the initial keypoints), ``final_error_px`` (predicted last row vs
    true last row, whatever the lengths), ``length_accuracy`` (fraction with the right number of
    rows), teacher-forced one-step errors per stage, and the same split by task.
    """
    per_item = []
    for it in items:
        true = np.asarray(it.keypoints, np.float32)
        pred = model.generate(np.asarray(it.initial_frame), it.task)
        tf = model.teacher_forced(it)
        per_item.append({
            "task": it.task, "seed": int(it.seed), "true_len": len(true), "pred_len": len(pred),
            "stage_err": [_point_error(pred[k], true[k]) for k in range(min(len(pred),
                                                                             len(true)))],
            "tf_err": [_point_error(tf[k], true[k]) for k in range(len(true))],
            "final_err": _point_error(pred[-1], true[-1]),
        })

    def summarise(rows: list[dict]) -> dict:
        n_stage = max(max(len(r["stage_err"]) for r in rows), max(len(r["tf_err"]) for r in rows))
        stage, count, tf = [], [], []
        for k in range(n_stage):
            v = [r["stage_err"][k] for r in rows if k < len(r["stage_err"])]
            w = [r["tf_err"][k] for r in rows if k < len(r["tf_err"])]
            stage.append(float(np.mean(v)) if v else float("nan"))
            count.append(len(v))
            tf.append(float(np.mean(w)) if w else float("nan"))
        fin = [r["final_err"] for r in rows]
        return {
            "n": len(rows),
            "initial_error_px": stage[0],
            "per_stage_error_px": stage,
            "per_stage_count": count,
            "teacher_forced_error_px": tf,
            "final_error_px": float(np.mean(fin)),
            "final_error_px_median": float(np.median(fin)),
            "final_error_px_max": float(np.max(fin)),
            "mean_error_px": float(np.mean([e for r in rows for e in r["stage_err"]])),
            "length_accuracy": float(np.mean([r["true_len"] == r["pred_len"] for r in rows])),
        }

    result = summarise(per_item)
    tasks = sorted({r["task"] for r in per_item})
    result["by_task"] = {t: summarise([r for r in per_item if r["task"] == t]) for t in tasks}
    result["items"] = per_item
    return result
