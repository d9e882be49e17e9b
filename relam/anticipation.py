"""Anticipation model: predicts a task's keypoint subgoals from its first frame (paper 3.1.2).

What the model sees and says
----------------------------
Input: the *initial frame* of an episode and the task's *task-indication frame*, both turned into
patch tokens by a frozen image encoder (:mod:`relam.perception.encoders`). Output, generated
autoregressively: row 0 = the keypoints in the initial frame, rows 1..S = the keypoints at each
keyframe (the subgoals), and when to stop.

Token sequence (one transformer, prefix + causal)::

    [initial-frame patches | task-frame patches | START | kp_0 | kp_1 | ... | kp_{S-1}]
     \\_________ image prefix, bidirectional ____/ \\______ causal point tokens ______/

Image tokens attend to each other only; point token t attends to every image token and to point
tokens <= t. The output at point token t predicts row t (START predicts row 0, the initial
keypoints; kp_{t-1} predicts row t) as a *residual*: ``row_t = base_t + head(h_t)`` where base is
the input coordinates of that token, and for START a learned initial configuration (initialised
to the training mean of row 0). Coordinates are normalised, ``c = uv / size * 2 - 1``, and the
N points are flattened into one token through an MLP.

Choices the paper leaves open (documented here, all in :class:`AnticipationConfig`):

* *End of sequence*: the head has one extra logit per point token, "the row predicted here is the
  last one", trained with BCE (weight ``end_weight``). Generation stops at the first row whose
  end probability exceeds 0.5, or at ``max_len`` rows.
* *Task-indication frame*: the initial frame of the task's demo with the smallest seed in the
  training set (constant within a task, stored in the checkpoint). A caller may pass its own.
* *Learning rate*: lost in the paper's extraction; we use AdamW 3e-4 (weight decay 0.01), 100
  warm-up steps then cosine decay to 10%, gradient clipping at 1.0.
* *Exposure bias*: teacher-forced input coordinates get Gaussian noise of ``input_noise_px``
  pixels during training so that generation tolerates its own small errors.
* *Image position*: fixed 2-D sine-cosine position embeddings on patch tokens plus a learned
  embedding saying which of the two frames a token comes from.

Training is MSE on the normalised coordinates with teacher forcing (batch size 8 as in the
paper). See ``python -m relam.anticipation --help`` for the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from relam.cache import atomic_torch_save, atomic_write_bytes, atomic_write_json, cache_dir
from relam.scales import SCALES, ScaleTable
from relam.perception.encoders import (
    ImageEncoder,
    ConvAEEncoder,
    encode_cached,
    encoder_from_state,
    make_encoder,
)

__all__ = [
    "AnticipationConfig",
    "BUDGETS",
    "AnticipationNet",
    "AnticipationModel",
    "train_anticipation",
    "load_anticipation",
    "evaluate_anticipation",
    "plot_predictions",
    "split_holdout",
    "shift_image",
    "default_task_frames",
    "normalise_coords",
    "denormalise_coords",
    "SyntheticSequence",
    "synthetic_subgoal_items",
]


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class AnticipationConfig:
    """Everything that defines an anticipation-model training run.

    Architecture defaults are the paper's (appendix C): 12 layers, width 512, 8 heads, dropout
    0.1, 4 keypoints, batch size 8. ``lr`` is our choice (the paper's value was lost): 3e-4,
    AdamW, warm-up then cosine decay. ``max_len`` counts rows (initial keypoints + subgoals).
    ``augment_shifts`` > 0 adds translated copies of each training frame (keypoints shifted
    alike); off by default.
    """

    layers: int = 12
    width: int = 512
    heads: int = 8
    dropout: float = 0.1
    num_points: int = 4
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 100
    batch_size: int = 8
    steps: int = 20000
    max_len: int = 12  # most rows generated (initial keypoints + subgoals)
    end_weight: float = 0.1
    input_noise_px: float = 0.5
    augment_shifts: int = 0  # extra translated copies of each training frame (0: none)
    augment_max_px: int = 8  # largest translation of those copies, pixels
    image_size: int = 128
    task_grid: int | None = None  # pool task-frame tokens to this grid (None: all patches)
    encoder: str = "pixels"  # see relam.perception.encoders for why
    encoder_path: str | None = None  # dinov2 weights folder
    encoder_kwargs: dict = field(default_factory=dict)
    encoder_steps: int = 600  # conv-ae reconstruction pre-training steps
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 500

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AnticipationConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> "AnticipationConfig":
        """The ``smoke`` | ``quick`` | ``paper`` preset (see :data:`BUDGETS`), then overrides."""
        return cls.from_dict({**BUDGETS[scale].to_dict(), **overrides})


#: Budget presets. ``paper`` is the paper's architecture; on CPU it is far too slow to train in
#: minutes (one batch-8 step: 12x512 ~5.9 s, 6x256 ~0.7 s, 4x128 ~0.18 s, 2x64 ~0.05 s with one
#: thread on a shared 2-core machine; ``benchmarks/bench_anticipation.py --speed``), so ``quick``
#: shrinks depth/width and pools the task frame to 2x2 tokens.
BUDGETS: ScaleTable[AnticipationConfig] = ScaleTable(
    "anticipation",
    smoke=AnticipationConfig(layers=2, width=64, heads=4, steps=200, encoder_steps=60, ckpt_every=100),
    quick=AnticipationConfig(layers=4, width=128, heads=4, steps=4000, encoder_steps=300, task_grid=2),
    paper=AnticipationConfig(layers=12, width=512, heads=8, steps=20000, encoder_steps=1000),
)


# ---------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------


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


def _items(dataset: Any) -> list[Any]:
    items = list(getattr(dataset, "items", dataset))
    if not items:
        raise ValueError("dataset is empty: no subgoal sequences to train on")
    return items


def _validate_item(it: Any, num_points: int, image_size: int, max_len: int) -> None:
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


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------


class AnticipationNet(nn.Module):
    """Transformer over [frame tokens | task-frame tokens | START | keypoint tokens].

    ``forward(img_tokens, task_tokens, kp_in)`` with ``kp_in`` (B, L, N, 2) normalised
    coordinates of the teacher-forced inputs (row t feeds point token t+1; the last row is never
    read) returns ``coords`` (B, L, N, 2), the predicted rows 0..L-1, and ``end_logits`` (B, L).
    """

    def __init__(self, cfg: AnticipationConfig, token_dim: int, grid: int):
        super().__init__()
        self.cfg = cfg
        w, n = cfg.width, cfg.num_points
        self.grid, self.num_patches = grid, grid * grid
        self.task_grid = min(cfg.task_grid or grid, grid)
        self.token_proj = nn.Sequential(nn.Linear(token_dim, w), nn.LayerNorm(w))
        self.register_buffer("pos_img", sincos_2d(grid, w), persistent=False)
        self.register_buffer("pos_task", sincos_2d(self.task_grid, w), persistent=False)
        self.frame_type = nn.Parameter(torch.zeros(2, w))  # 0: initial frame, 1: task frame
        self.kp_embed = nn.Sequential(nn.Linear(2 * n, w), nn.GELU(), nn.Linear(w, w))
        self.start_token = nn.Parameter(torch.zeros(w))
        self.step_embed = nn.Parameter(torch.zeros(cfg.max_len, w))
        nn.init.normal_(self.frame_type, std=0.02)
        nn.init.normal_(self.start_token, std=0.02)
        nn.init.normal_(self.step_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(w, cfg.heads, 4 * w, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, norm=nn.LayerNorm(w),
                                            enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.Linear(w, 2 * n + 1))
        nn.init.zeros_(self.head[-1].weight)  # start as "no move": prediction = residual base
        nn.init.zeros_(self.head[-1].bias)
        # residual base of the START token: the mean initial configuration (set from data)
        self.initial_base = nn.Parameter(torch.zeros(n, 2))
        # per-feature standardisation of the frozen encoder's tokens (set from data)
        self.register_buffer("tok_mean", torch.zeros(token_dim))
        self.register_buffer("tok_std", torch.ones(token_dim))

    def image_prefix(self, img_tokens: torch.Tensor, task_tokens: torch.Tensor) -> torch.Tensor:
        """(B, P + Pt, W): projected frame tokens, then (optionally pooled) task-frame tokens.

        Pooling the task frame (``task_grid``) is a CPU-budget option: that frame only has to
        say *which* task, so a coarse grid keeps the information while halving the sequence.
        """
        if self.task_grid != self.grid:
            b, p, d = task_tokens.shape
            t = task_tokens.transpose(1, 2).reshape(b, d, self.grid, self.grid)
            task_tokens = F.adaptive_avg_pool2d(t, self.task_grid).flatten(2).transpose(1, 2)
        img = self.token_proj((img_tokens - self.tok_mean) / self.tok_std)
        tsk = self.token_proj((task_tokens - self.tok_mean) / self.tok_std)
        img = img + self.pos_img + self.frame_type[0]
        tsk = tsk + self.pos_task + self.frame_type[1]
        return torch.cat([img, tsk], dim=1)

    def forward(self, img_tokens: torch.Tensor, task_tokens: torch.Tensor,
                kp_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, length, n, _ = kp_in.shape
        if length > self.cfg.max_len:
            raise ValueError(f"sequence of {length} rows exceeds max_len={self.cfg.max_len}")
        prefix = self.image_prefix(img_tokens, task_tokens)
        # point tokens: START, then rows 0..L-2 of the inputs
        kp_tok = self.kp_embed(kp_in[:, : length - 1].flatten(2))  # (B, L-1, W)
        start = self.start_token.expand(b, 1, -1)
        pts = torch.cat([start, kp_tok], dim=1) + self.step_embed[:length]
        x = torch.cat([prefix, pts], dim=1)
        mask = prefix_causal_mask(prefix.shape[1], length).to(x.device)
        h = self.blocks(x, mask=mask)[:, prefix.shape[1]:]
        out = self.head(h)
        base = torch.cat([self.initial_base.expand(b, 1, n, 2), kp_in[:, : length - 1]], dim=1)
        coords = base + out[..., : 2 * n].reshape(b, length, n, 2)
        return coords, out[..., -1]


# ---------------------------------------------------------------------------------------------
# the model users hold: net + frozen encoder + task frames
# ---------------------------------------------------------------------------------------------


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

    def tokens(self, frames: np.ndarray) -> torch.Tensor:
        """Frozen encoder tokens for (B,H,W,3) frames, cached by content."""
        return encode_cached(self.encoder, frames, self._cache)

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
        img = self.tokens(frame[None])
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


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


def _pad_batch(kps: list[np.ndarray], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (S_i+1, N, 2) pixel arrays into normalised (B, L, N, 2) + valid mask (B, L)."""
    length = max(len(k) for k in kps)
    n = kps[0].shape[1]
    out = torch.zeros(len(kps), length, n, 2)
    valid = torch.zeros(len(kps), length, dtype=torch.bool)
    for i, k in enumerate(kps):
        out[i, : len(k)] = torch.as_tensor(normalise_coords(np.asarray(k, np.float32), size))
        valid[i, : len(k)] = True
    return out, valid


def anticipation_loss(coords: torch.Tensor, end_logits: torch.Tensor, target: torch.Tensor,
                      valid: torch.Tensor, end_weight: float) -> tuple[torch.Tensor, dict]:
    """Masked MSE on normalised coordinates + weighted BCE on the end-of-sequence logit."""
    lengths = valid.sum(1)
    is_last = torch.zeros_like(end_logits)
    is_last[torch.arange(len(lengths)), lengths - 1] = 1.0
    m = valid.float()
    mse = (((coords - target) ** 2).mean(dim=(2, 3)) * m).sum() / m.sum()
    bce = (F.binary_cross_entropy_with_logits(end_logits, is_last, reduction="none") * m).sum()
    bce = bce / m.sum()
    return mse + end_weight * bce, {"mse": float(mse.detach()), "bce": float(bce.detach())}


def _lr_at(step: int, cfg: AnticipationConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _save_checkpoint(path: Path, model: AnticipationModel, opt: torch.optim.Optimizer,
                     step: int, history: dict, gen: torch.Generator) -> None:
    atomic_torch_save(path, {"model": model.state(), "optim": opt.state_dict(), "step": step,
                             "history": history, "rng": gen.get_state(),
                             "torch_rng": torch.get_rng_state()})


def train_anticipation(dataset: Any, config: AnticipationConfig | None = None,
                       out_dir: str | Path | None = None, holdout: int = 10,
                       task_frames: dict[str, np.ndarray] | None = None,
                       progress: bool = True, evaluate: bool = True) -> AnticipationModel:
    """Train on ``dataset`` (a SubgoalDataset or a list of SubgoalSequence-like items).

    Per task, the ``holdout`` demos with the largest seeds are kept out for evaluation. Writes
    into ``out_dir``: ``checkpoint.pt`` (every ``ckpt_every`` steps, atomic; a rerun resumes
    from it), ``model.pt``, ``loss.png``, ``history.json``, ``split.json`` and, when held-out
    demos exist and ``evaluate``, ``metrics.json`` + ``predictions.png``.
    """
    from tqdm.auto import tqdm

    cfg = config or AnticipationConfig()
    out = Path(out_dir) if out_dir is not None else cache_dir() / "anticipation" / "default"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    t_start = time.time()

    # --- data: split, validate, task-indication frames ---------------------------------------
    items = _items(dataset)
    train, held = split_holdout(items, holdout) if holdout > 0 else (items, [])
    for it in items:
        _validate_item(it, cfg.num_points, cfg.image_size, cfg.max_len)
    frames = task_frames if task_frames is not None else default_task_frames(train)
    missing = sorted({it.task for it in items} - set(frames))
    if missing:
        raise ValueError(f"task_frames lacks tasks {missing}")
    atomic_write_json(out / "split.json", {
        "train": [[it.task, int(it.seed)] for it in train],
        "heldout": [[it.task, int(it.seed)] for it in held]})

    # --- resume or build: frozen encoder (conv-ae pre-trained on training frames) ------------
    ckpt_path = out / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False) \
        if ckpt_path.exists() else None
    if ckpt is not None:
        saved = {k: v for k, v in ckpt["model"]["config"].items() if k != "steps"}
        if saved != {k: v for k, v in cfg.to_dict().items() if k != "steps"}:
            raise ValueError(f"{ckpt_path} was written with a different config; use a new "
                             f"--out folder or delete the checkpoint")
        model = AnticipationModel.from_state(ckpt["model"])
        model.config = cfg
    else:
        kw = dict(cfg.encoder_kwargs)
        if cfg.encoder == "dinov2":
            kw.setdefault("path", cfg.encoder_path)
        elif cfg.encoder in ("conv-ae", "pixels"):
            kw.setdefault("image_size", cfg.image_size)
        encoder = make_encoder(cfg.encoder, **kw)
        if isinstance(encoder, ConvAEEncoder):
            ae_frames = [np.asarray(it.initial_frame) for it in train]
            for it in train:
                ae_frames += list(np.asarray(getattr(it, "keyframe_images", [])))
            encoder.fit(np.stack(ae_frames), steps=cfg.encoder_steps, seed=cfg.seed,
                        progress=progress)
        model = AnticipationModel(cfg, encoder, frames)
    net = model.net

    # --- cache the frozen tokens once (plus translated copies); normalisation statistics ------
    shift_rng = np.random.default_rng(cfg.seed)
    examples = []  # (frame, task, keypoints)
    for it in train:
        frame, kp = np.asarray(it.initial_frame), np.asarray(it.keypoints, np.float32)
        examples.append((frame, it.task, kp))
        for _ in range(cfg.augment_shifts):
            dx, dy = shift_rng.integers(-cfg.augment_max_px, cfg.augment_max_px + 1, 2)
            examples.append((shift_image(frame, int(dx), int(dy)), it.task,
                             kp + np.array([dx, dy], np.float32)))
    img_tok = model.tokens(np.stack([e[0] for e in examples]))
    task_tok = model.task_tokens([e[1] for e in examples])
    kps = [e[2] for e in examples]
    del examples
    if ckpt is None:
        all_tok = torch.cat([img_tok, task_tok]).flatten(0, 1)
        net.tok_mean.copy_(all_tok.mean(0))
        net.tok_std.copy_(all_tok.std(0).clamp_min(1e-3))
        row0 = np.stack([k[0] for k in kps])
        net.initial_base.data.copy_(torch.as_tensor(
            normalise_coords(row0.mean(0), cfg.image_size)))

    # --- optimiser -----------------------------------------------------------------------------
    decay = [p for n_, p in net.named_parameters() if p.ndim >= 2 and "embed" not in n_]
    no_decay = [p for n_, p in net.named_parameters() if not (p.ndim >= 2 and "embed" not in n_)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    step, history = 0, {"step": [], "loss": [], "mse": [], "bce": [], "train_px": [],
                        "elapsed_s": []}
    elapsed_before = 0.0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optim"])
        step, history = ckpt["step"], ckpt["history"]
        gen.set_state(ckpt["rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        elapsed_before = history["elapsed_s"][-1] if history["elapsed_s"] else 0.0
        del ckpt
    t_loop = time.time()

    # --- training loop: teacher forcing, MSE + end BCE ----------------------------------------
    net.train()
    bar = tqdm(range(step, cfg.steps), initial=step, total=cfg.steps, desc="anticipation",
               disable=not progress)
    run = {"loss": 0.0, "mse": 0.0, "bce": 0.0, "n": 0}
    for step in bar:
        idx = torch.randint(len(kps), (cfg.batch_size,), generator=gen).tolist()
        target, valid = _pad_batch([kps[i] for i in idx], cfg.image_size)
        kp_in = target
        if cfg.input_noise_px > 0:
            noise = torch.randn(target.shape, generator=gen) * (2 * cfg.input_noise_px
                                                                 / cfg.image_size)
            kp_in = target + noise
        coords, end_logits = net(img_tok[idx], task_tok[idx], kp_in)
        loss, parts = anticipation_loss(coords, end_logits, target, valid, cfg.end_weight)

        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

        run["loss"] += float(loss.detach()); run["mse"] += parts["mse"]; run["bce"] += parts["bce"]
        run["n"] += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            k = run["n"]
            mse = run["mse"] / k
            history["step"].append(step + 1)
            history["loss"].append(run["loss"] / k)
            history["mse"].append(mse)
            history["bce"].append(run["bce"] / k)
            # RMS error of one coordinate in pixels (teacher forced, training batch, dropout on)
            history["train_px"].append(math.sqrt(mse) * cfg.image_size / 2)
            history["elapsed_s"].append(elapsed_before + time.time() - t_loop)
            bar.set_postfix(loss=f"{run['loss'] / k:.2e}", rms_px=f"{history['train_px'][-1]:.2f}")
            run = {"loss": 0.0, "mse": 0.0, "bce": 0.0, "n": 0}
        if (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
            _save_checkpoint(ckpt_path, model, opt, step + 1, history, gen)
    bar.close()
    net.eval()
    model._cache.clear()  # the training frames' tokens are no longer needed
    del img_tok, task_tok

    # --- outputs: final checkpoint, model, curve, held-out evaluation -------------------------
    _save_checkpoint(ckpt_path, model, opt, cfg.steps, history, gen)
    model.save(out / "model.pt")
    atomic_write_json(out / "history.json", {**history, "config": cfg.to_dict(),
                                             "wall_s_total_this_call": time.time() - t_start})
    plot_loss_curve(history, out / "loss.png")
    if evaluate and held:
        metrics = evaluate_anticipation(model, held)
        metrics["train_wall_s"] = history["elapsed_s"][-1] if history["elapsed_s"] else 0.0
        atomic_write_json(out / "metrics.json", metrics)
        plot_predictions(model, held, out / "predictions.png")
    return model


# ---------------------------------------------------------------------------------------------
# evaluation and pictures
# ---------------------------------------------------------------------------------------------


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
    ax[0].set_xlabel("step"); ax[0].set_title("training loss"); ax[0].legend()
    ax[1].set_xlabel("step"); ax[1].set_title("teacher-forced RMS coord error (px)")
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


# ---------------------------------------------------------------------------------------------
# synthetic subgoal sequences (tests, benchmark stand-in when no demos exist)
# ---------------------------------------------------------------------------------------------


@dataclass
class SyntheticSequence:
    """Same fields as ``relam.subgoals.SubgoalSequence``, drawn procedurally."""

    task: str
    seed: int
    initial_frame: np.ndarray
    keypoints: np.ndarray
    keyframe_steps: np.ndarray
    keyframe_images: np.ndarray


def _draw_scene(size: int, base: np.ndarray, grip: np.ndarray, obj: np.ndarray,
                bg: tuple[int, int, int], obj_colour: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((size, size, 3), np.uint8)
    img[:] = bg
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # an "arm": thick segment from the base to the gripper
    d = grip - base
    t = np.clip(((xx - base[0]) * d[0] + (yy - base[1]) * d[1]) / max(float(d @ d), 1e-6), 0, 1)
    dist = np.hypot(xx - (base[0] + t * d[0]), yy - (base[1] + t * d[1]))
    img[dist < size * 0.035] = (90, 90, 100)
    img[np.hypot(xx - grip[0], yy - grip[1]) < size * 0.05] = (40, 40, 40)
    half = size * 0.06
    box = (np.abs(xx - obj[0]) < half) & (np.abs(yy - obj[1]) < half)
    img[box] = obj_colour
    return img


def synthetic_subgoal_items(task: str = "synth-push", n: int = 20, seed: int = 0,
                            num_points: int = 4, size: int = 128,
                            scene_tint: tuple[int, int, int] | None = None
                            ) -> list[SyntheticSequence]:
    """Procedural stand-in for a subgoal dataset: an arm reaching a box, then moving it.

    Keypoints: ``num_points - 1`` points along the arm and the box centre. Tasks:
    ``synth-push`` (above box, onto box, push right; a 4th stage "push down" when the box starts
    in the upper half, so S varies 3-4) and ``synth-lift`` (onto box, lift up; S = 2). The box
    position is random, so subgoals depend on the frame. ``scene_tint`` overrides the background
    (by default the two tasks share the same scene, so only the task frame tells them apart).
    """
    bg = scene_tint or (200, 190, 170)
    base = np.array([0.1, 0.9]) * size
    items = []
    for i in range(n):
        s = seed * 1000 + i
        r = np.random.default_rng(s)  # scene depends on the seed only, not on the task
        obj = np.array([r.uniform(0.45, 0.8), r.uniform(0.3, 0.7)]) * size
        grip0 = np.array([0.3, 0.5]) * size + r.normal(0, 0.01, 2) * size
        path_g, path_o = [grip0], [obj]
        if task == "synth-push":
            stages = [(obj + np.array([0, -0.15]) * size, obj), (obj, obj)]
            o2 = obj + np.array([0.12, 0.0]) * size
            stages.append((o2, o2))
            if obj[1] < 0.5 * size:
                o3 = o2 + np.array([0.0, 0.15]) * size
                stages.append((o3, o3))
        elif task == "synth-lift":
            o2 = obj + np.array([0.0, -0.2]) * size
            stages = [(obj, obj), (o2, o2)]
        else:
            raise ValueError(f"unknown synthetic task '{task}'; use synth-push or synth-lift")
        for g, o in stages:
            path_g.append(g)
            path_o.append(o)
        kps = []
        for g, o in zip(path_g, path_o):
            arm = [base + (g - base) * f for f in np.linspace(1.0, 0.4, num_points - 1)]
            kps.append(np.stack(arm + [o]))
        kps = np.asarray(kps, np.float32)
        frames = [_draw_scene(size, base, g, o, bg, (40, 160, 60))
                  for g, o in zip(path_g, path_o)]
        items.append(SyntheticSequence(
            task=task, seed=s, initial_frame=frames[0], keypoints=kps,
            keyframe_steps=np.arange(1, len(kps), dtype=np.int64) * 10,
            keyframe_images=np.stack(frames[1:])))
    return items


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


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


if __name__ == "__main__":
    sys.exit(main())
