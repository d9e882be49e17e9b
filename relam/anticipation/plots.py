"""Pictures of an anticipation model: its loss curve, and predicted vs true subgoals on demos."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from relam.anticipation.model import AnticipationModel
from relam.cache import atomic_write_bytes


def plot_loss_curve(history: dict, path: str | Path) -> Path:
    """Training loss (and RMS pixel error) against steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    if history["step"]:
        ax[0].semilogy(history["step"], history["loss"], label="total")
        ax[0].semilogy(history["step"], history["mse"], label="coord MSE")
        ax[1].semilogy(history["step"], history["train_px"])
    ax[0].set_xlabel("step")
    ax[0].set_title("training loss")
    ax[0].legend()
    ax[1].set_xlabel("step")
    ax[1].set_title("teacher-forced RMS coord error (px)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_predictions(model: AnticipationModel, items: Sequence[Any], path: str | Path,
                     max_items: int = 8) -> Path:
    """Predicted (dashed, x) vs true (solid, o) keypoint paths over each initial frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(items)[:max_items]
    cols = min(4, len(items))
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    colours = plt.cm.tab10(np.arange(10))
    for ax, it in zip(axes.flat, items):
        true = np.asarray(it.keypoints)
        pred = model.generate(np.asarray(it.initial_frame), it.task)
        ax.imshow(np.asarray(it.initial_frame))
        for j in range(true.shape[1]):
            c = colours[j % 10]
            ax.plot(true[:, j, 0], true[:, j, 1], "-o", color=c, ms=3, lw=1)
            ax.plot(pred[:, j, 0], pred[:, j, 1], "--x", color=c, ms=4, lw=1)
            ax.plot(true[-1, j, 0], true[-1, j, 1], "o", mfc="none", mec="w", ms=7)
        size = np.asarray(it.initial_frame).shape[0]
        ax.set_xlim(-0.1 * size, 1.1 * size)
        ax.set_ylim(1.1 * size, -0.1 * size)
        ax.set_title(f"{it.task} s{it.seed}: {len(pred) - 1}/{len(true) - 1} subgoals",
                     fontsize=7)
        ax.axis("off")
    for ax in list(axes.flat)[len(items):]:
        ax.axis("off")
    fig.suptitle("true (o, solid) vs predicted (x, dashed); white ring = true final", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
