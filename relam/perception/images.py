"""Image batches: one validator and one resize for every image model and policy observation.

Everything that shrinks a rendered frame -- the policy's 64 px image, the reward models' and the
image embeddings' inputs, the IS generator's targets, the offline data sets -- goes through
:func:`resize_images`, so a frame is downsampled the same way online and offline, by ReLAM and by
the baselines:

* shrinking by a whole factor: the mean of each ``f x f`` block, rounded half to even (exact and
  alias-free: a 128 px frame and its 64 px copy give the same 32 px image; thin parts such as a
  handle do not flicker in and out as with nearest-neighbour sampling);
* shrinking by another factor: OpenCV's area average (``INTER_AREA``);
* enlarging (32 px generated subgoals to the 64 px policy image): bilinear, half-pixel centres.
"""
from __future__ import annotations

import numpy as np

__all__ = ["image_batch", "resize_images"]


def image_batch(images: np.ndarray, what: str = "images", *, size: int | None = None,
                square: bool = False, channels: int | None = 3) -> np.ndarray:
    """``images`` as a uint8 batch (B,H,W,C) (a single (H,W,C) image becomes a batch of 1).

    Raises ``ValueError`` naming ``what`` when the dtype, the layout, the channel count
    (``channels``; None: any), the squareness (``square``) or the side (``size``) is off.
    """
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    c = "C" if channels is None else str(channels)
    if a.ndim != 4 or (channels is not None and a.shape[-1] != channels) or a.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 images shaped (B,H,W,{c}) or (H,W,{c}), channel last, "
                         f"in [0, 255]; got dtype {a.dtype}, shape {a.shape}")
    if square and a.shape[1] != a.shape[2]:
        raise ValueError(f"{what} must be square; got {a.shape[1]}x{a.shape[2]}")
    if size is not None and a.shape[1:3] != (size, size):
        raise ValueError(f"{what} must be {size}x{size} here (the model was built/trained at that size); "
                         f"got {a.shape[1]}x{a.shape[2]}")
    return a


def resize_images(images: np.ndarray, size: int, *, channels_first: bool = False,
                  what: str = "images") -> np.ndarray:
    """uint8 images (B,H,W,C) or (H,W,C) -> (B,size,size,C) uint8; with ``channels_first`` the
    input is (B,C,H,W) or (C,H,W) and the output (B,C,size,size).

    Images already at ``size`` come back as an unchanged copy. See the module docstring for the
    method (block mean for whole factors, area average otherwise, bilinear to enlarge).
    """
    a = np.asarray(images)
    if channels_first:
        if a.ndim in (3, 4):
            a = np.moveaxis(a, -3, -1)
        a = image_batch(a, what, channels=None)
    else:
        a = image_batch(a, what, channels=None)
    size = int(size)
    b, h, w, c = a.shape
    if (h, w) == (size, size):
        out = a.copy()
    elif h % size == 0 and w % size == 0:
        blocks = a.reshape(b, size, h // size, size, w // size, c).astype(np.float32)
        out = np.rint(blocks.mean(axis=(2, 4))).astype(np.uint8)
    elif h > size and w > size:
        import cv2

        out = np.stack([cv2.resize(np.ascontiguousarray(x), (size, size), interpolation=cv2.INTER_AREA)
                        .reshape(size, size, c) for x in a])
    else:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    if channels_first:
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    return out
