"""Pure helpers on keypoint coordinates and subgoal items: normalisation to [-1, 1], position
embeddings, the prefix-causal mask, image shifts, the held-out split, the task-indication frames and
the checks an item must pass before training."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import torch


def normalise_coords(uv: np.ndarray | torch.Tensor, size: int):
    """Pixel coordinates -> [-1, 1] (pixel 0 -> -1, pixel ``size`` -> 1)."""
    return uv / size * 2.0 - 1.0


def denormalise_coords(c: np.ndarray | torch.Tensor, size: int):
    """Inverse of :func:`normalise_coords`."""
    return (c + 1.0) * 0.5 * size


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (grid*grid, dim), row-major patches."""
    if dim % 4:
        raise ValueError(f"width must be a multiple of 4 for 2-D position embeddings; got {dim}")
    y, x = torch.meshgrid(torch.arange(grid, dtype=torch.float32),
                          torch.arange(grid, dtype=torch.float32), indexing="ij")
    omega = 1.0 / (100.0 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4)))
    out = []
    for p in (x.flatten(), y.flatten()):
        a = p[:, None] * omega[None]
        out += [a.sin(), a.cos()]
    return torch.cat(out, dim=1)


def prefix_causal_mask(num_image: int, num_points: int) -> torch.Tensor:
    """Boolean attention mask (True = may NOT attend) for [image prefix | causal points].

    Image tokens see all image tokens and no point token; point token t sees all image tokens
    and point tokens 0..t.
    """
    n = num_image + num_points
    mask = torch.ones(n, n, dtype=torch.bool)
    mask[:, :num_image] = False
    causal = torch.triu(torch.ones(num_points, num_points, dtype=torch.bool), diagonal=1)
    mask[num_image:, num_image:] = causal
    return mask


def shift_image(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate an (H,W,C) image by (dx, dy) pixels (content moves right/down), edges repeated.

    Keypoints of the shifted image are ``uv + (dx, dy)``, so a translated copy is a new,
    geometrically consistent training example (used by ``augment_shifts``).
    """
    h, w = image.shape[:2]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return image[rows][:, cols]


def split_holdout(items: Sequence[Any], holdout: int) -> tuple[list[Any], list[Any]]:
    """Per task, hold out the ``holdout`` items with the largest seeds (deterministic)."""
    train, held = [], []
    for task in sorted({it.task for it in items}):
        group = sorted((it for it in items if it.task == task), key=lambda it: it.seed)
        if holdout >= len(group):
            raise ValueError(f"holdout={holdout} leaves no training demos for task '{task}' "
                             f"({len(group)} demos); lower --holdout")
        cut = len(group) - holdout
        train += group[:cut]
        held += group[cut:]
    return train, held


def default_task_frames(items: Iterable[Any]) -> dict[str, np.ndarray]:
    """Task-indication frame per task: the initial frame of its demo with the smallest seed."""
    best: dict[str, Any] = {}
    for it in items:
        if it.task not in best or it.seed < best[it.task].seed:
            best[it.task] = it
    return {t: np.asarray(it.initial_frame, dtype=np.uint8).copy() for t, it in best.items()}


def dataset_items(dataset: Any) -> list[Any]:
    items = list(getattr(dataset, "items", dataset))
    if not items:
        raise ValueError("dataset is empty: no subgoal sequences to train on")
    return items


def validate_item(it: Any, num_points: int, image_size: int, max_len: int) -> None:
    kp = np.asarray(it.keypoints)
    name = f"item (task={getattr(it, 'task', '?')}, seed={getattr(it, 'seed', '?')})"
    if kp.ndim != 3 or kp.shape[1:] != (num_points, 2):
        raise ValueError(f"{name}: keypoints must be (S+1, {num_points}, 2); got {kp.shape}. "
                         f"Set AnticipationConfig.num_points to the dataset's N.")
    if kp.shape[0] < 2:
        raise ValueError(f"{name}: keypoints has {kp.shape[0]} row(s); need the initial "
                         f"keypoints plus at least one subgoal")
    if kp.shape[0] > max_len:
        raise ValueError(f"{name}: {kp.shape[0]} keypoint rows exceed max_len={max_len}; "
                         f"raise AnticipationConfig.max_len")
    fr = np.asarray(it.initial_frame)
    if fr.shape != (image_size, image_size, 3) or fr.dtype != np.uint8:
        raise ValueError(f"{name}: initial_frame must be uint8 ({image_size},{image_size},3); "
                         f"got {fr.dtype} {fr.shape}. Set AnticipationConfig.image_size.")
