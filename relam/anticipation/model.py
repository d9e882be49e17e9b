"""The model users hold: the network, its frozen image encoder and the task-indication frames;
``generate(frame, task)`` plans the keypoint subgoals. Saved and loaded as one ``model.pt``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from relam.anticipation.config import AnticipationConfig
from relam.anticipation.data import denormalise_coords, normalise_coords
from relam.anticipation.net import AnticipationNet
from relam.cache import atomic_torch_save
from relam.perception.encoders import ImageEncoder, encode_cached, encoder_from_state


class AnticipationModel:
    """A trained anticipation model: ``generate(initial_frame, task)`` -> keypoint subgoals."""

    def __init__(self, config: AnticipationConfig, encoder: ImageEncoder,
                 task_frames: dict[str, np.ndarray], net: AnticipationNet | None = None):
        self.config = config
        self.encoder = encoder
        self.task_frames = {t: np.asarray(f, dtype=np.uint8) for t, f in task_frames.items()}
        self.net = net if net is not None else AnticipationNet(config, encoder.dim, encoder.grid)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def tasks(self) -> list[str]:
        return sorted(self.task_frames)

    def tokens(self, frames: np.ndarray, keep: bool = True) -> torch.Tensor:
        """Frozen encoder tokens for (B,H,W,3) frames, cached by content (``keep=False``: read the
        cache but do not add to it, for frames seen once)."""
        return encode_cached(self.encoder, frames, self._cache, store=keep)

    def task_tokens(self, tasks: Sequence[str]) -> torch.Tensor:
        for t in tasks:
            if t not in self.task_frames:
                raise ValueError(f"task '{t}' is unknown to this anticipation model; it was "
                                 f"trained on {self.tasks}")
        return self.tokens(np.stack([self.task_frames[t] for t in tasks]))

    @torch.no_grad()
    def generate(self, initial_frame: np.ndarray, task: str,
                 max_len: int | None = None) -> np.ndarray:
        """Autoregressively predict (S+1, N, 2) pixel coordinates; row 0 = initial keypoints.

        Stops at the first row whose end-of-sequence probability exceeds 0.5 (at least one
        subgoal is always produced), or after ``max_len`` rows.
        """
        frame = np.asarray(initial_frame)
        size = self.config.image_size
        if frame.shape != (size, size, 3) or frame.dtype != np.uint8:
            raise ValueError(f"initial_frame must be uint8 ({size},{size},3); got "
                             f"{frame.dtype} {frame.shape}")
        max_len = min(max_len or self.config.max_len, self.config.max_len)
        self.net.eval()
        # not kept: an RL run plans from a new first frame at every reset (thousands per run; a
        # DINOv2 frame's tokens are 0.8 MB), and no frame is planned from twice
        img = self.tokens(frame[None], keep=False)
        tsk = self.task_tokens([task])
        n = self.config.num_points
        rows = torch.zeros(1, 1, n, 2)
        out = []
        for length in range(1, max_len + 1):
            coords, end = self.net(img, tsk, rows)
            nxt = coords[:, -1]
            out.append(nxt[0])
            if length >= 2 and torch.sigmoid(end[0, -1]) > 0.5:
                break
            rows = torch.cat([rows[:, :-1], nxt[:, None], torch.zeros(1, 1, n, 2)], dim=1)
        pred = torch.stack(out).numpy()
        return denormalise_coords(pred, size).astype(np.float32)

    @torch.no_grad()
    def teacher_forced(self, item: Any) -> np.ndarray:
        """One-step predictions (S+1, N, 2) in pixels given the true previous rows."""
        self.net.eval()
        kp = torch.as_tensor(normalise_coords(np.asarray(item.keypoints, np.float32),
                                              self.config.image_size))[None]
        coords, _ = self.net(self.tokens(np.asarray(item.initial_frame)[None]),
                             self.task_tokens([item.task]), kp)
        return denormalise_coords(coords[0].numpy(), self.config.image_size)

    def state(self) -> dict[str, Any]:
        return {
            "format": "relam.anticipation/1",
            "config": self.config.to_dict(),
            "encoder": self.encoder.state(),
            "task_frames": {t: f for t, f in self.task_frames.items()},
            "net": self.net.state_dict(),
        }

    def save(self, path: str | Path) -> Path:
        """Atomically write a self-contained checkpoint (net, encoder, task frames, config)."""
        return atomic_torch_save(path, self.state())

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "AnticipationModel":
        if state.get("format") != "relam.anticipation/1":
            raise ValueError("not an anticipation-model checkpoint (missing format tag)")
        cfg = AnticipationConfig.from_dict(state["config"])
        enc = encoder_from_state(state["encoder"])
        model = cls(cfg, enc, state["task_frames"])
        model.net.load_state_dict(state["net"])
        model.net.eval()
        return model


def load_anticipation(path: str | Path) -> AnticipationModel:
    """Load a model written by :meth:`AnticipationModel.save` (or a training folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"no anticipation model at '{path}'; train one with "
                                f"`python -m relam.anticipation train TASK --out DIR`")
    state = torch.load(path, map_location="cpu", weights_only=False)
    return AnticipationModel.from_state(state)
