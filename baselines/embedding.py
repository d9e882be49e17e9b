"""Image embeddings for the Image Subgoal (IS) and Oracle baselines (paper section 4.2, Fig. 6c).

IS rewards the policy with the *cosine similarity* between the current observation and the target
subgoal image in an image-embedding space; the paper uses DINOv2. Two backends sit behind one
small interface (``embed(uint8 (B,H,W,3)) -> float32 (B,D)`` unit vectors):

* ``temporal`` (default, no weights needed): a small conv encoder trained on the expert demo
  frames so that the cosine similarity of two frames regresses ``exp(-dt / tau)``, where ``dt`` is
  their distance in time (steps; across demos, the distance in normalised progress times the
  mean demo length). Why: the reward needs a similarity that *rises as an expert episode nears a
  keyframe* and that a threshold can cut cleanly. Raw pixels rise monotonically too, but the
  large static background keeps every frame similar to every target, so the usable range is
  small; a temporal-distance objective (in the spirit of time-contrastive networks) puts the
  task-progress information into the whole embedding. Measured with :func:`approach_score` on 4
  held-out drawer-open-v3 demos (16 segments; embedding trained on 16 other demos, 400 steps;
  ``python benchmarks/bench_embedding.py drawer-open-v3 --train 16 --test 4 --steps 400
  --generator <IS model .pt>``): with the *true* next keyframe as
  target, pixels rho 1.00, similarity 0.77 -> 1.00 over a segment; temporal rho 0.94,
  0.25 -> 1.00. With the *generated* subgoal as target (what IS uses): pixels rho 0.99,
  0.72 -> 0.90 (range 0.18); temporal rho 0.97, 0.16 -> 0.85 (range 0.69, ~4x wider).
* ``pixels``: the (down-sampled, mean-removed) image itself; the no-training reference the
  default is compared against.
* ``dinov2``: ``transformers.Dinov2Model.from_pretrained(local_path)`` (CLS token or mean of the
  patch tokens), as in the paper. It needs a local copy of the weights and raises
  :class:`relam.perception.encoders.MissingWeightsError` naming the path otherwise.

All images are area-resized to the embedding's ``input_size`` first, so observations (128 px),
policy images (64 px) and generated subgoals (32 px) can be compared directly.
"""
from __future__ import annotations

import os
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from relam.devices import moved_to
from relam.perception.images import image_batch, resize_images

__all__ = [
    "ImageEmbedding",
    "EMBEDDINGS",
    "resize_images",
    "cosine_similarity",
    "TemporalEmbedding",
    "PixelEmbedding",
    "Dinov2Embedding",
    "make_embedding",
    "embedding_from_state",
    "approach_score",
]

EMBEDDINGS = ("temporal", "pixels", "dinov2")


@runtime_checkable
class ImageEmbedding(Protocol):
    """What IS needs: unit-norm embeddings of uint8 RGB images."""

    name: str

    def embed(self, images: np.ndarray) -> np.ndarray: ...

    def state(self) -> dict[str, Any]: ...


# ------------------------------------------------------------------------------- pure helpers


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (B,D) and (B,D) or (D,) vectors (zero vectors give 0)."""
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = np.atleast_2d(np.asarray(b, np.float64))
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    dot = (a * b).sum(-1)
    return np.where((na > 0) & (nb > 0), dot / np.maximum(na * nb, 1e-12), 0.0)


def _to_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _normalise(z: torch.Tensor) -> np.ndarray:
    return F.normalize(z.float(), dim=-1).numpy().astype(np.float32)


# ------------------------------------------------------------------------------- temporal (default)


class _ConvEncoder(nn.Module):
    """Three stride-2 convs to a (4w, s/8, s/8) map, flattened (keeps *where* things are), linear."""

    def __init__(self, input_size: int, dim: int, width: int):
        super().__init__()
        w = width
        self.conv = nn.Sequential(
            nn.Conv2d(3, w, 3, 1, 1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.GELU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.GELU(),
            nn.Conv2d(4 * w, 4 * w, 4, 2, 1), nn.GELU(),
        )
        g = input_size // 8
        self.head = nn.Linear(4 * w * g * g, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


def _random_shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``pad`` px (replicate padding): robustness to small offsets."""
    if pad <= 0:
        return x
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    return torch.stack([xp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


class TemporalEmbedding:
    """Conv encoder trained so that ``cos(e(x_i), e(x_j)) ~ exp(-dt_ij / tau)`` on demo frames.

    ``dt_ij``: for two frames of demos of lengths T_a, T_b at steps t_i, t_j, the distance of their
    normalised progress ``|t_i/T_a - t_j/T_b|`` times the mean demo length (within one demo this
    is about ``|t_i - t_j|`` steps). Pairs come half from the same demo, half across demos, so the
    embedding measures task progress rather than which demo a frame came from (initial states
    differ between demos). ``tau`` (steps) sets how sharply similarity peaks at a keyframe.
    """

    name = "temporal"

    def __init__(self, input_size: int = 32, dim: int = 32, width: int = 16, tau: float = 8.0,
                 seed: int = 0):
        if input_size % 8:
            raise ValueError(f"TemporalEmbedding.input_size must be a multiple of 8, got {input_size}")
        if not tau > 0:
            raise ValueError(f"TemporalEmbedding.tau must be > 0 steps, got {tau}")
        self.input_size, self.dim, self.width, self.tau, self.seed = input_size, dim, width, tau, seed
        torch.manual_seed(seed)
        self.net = _ConvEncoder(input_size, dim, width).eval()
        self.fitted = False
        self.fit_loss: list[float] = []

    def fit(self, videos: Sequence[np.ndarray], steps: int = 600, batch_size: int = 64,
            lr: float = 2e-3, shift: int = 1, seed: int = 0, progress: bool = True,
            device: str = "auto") -> list[float]:
        """Train on expert videos (each uint8 (T+1,H,W,3)); returns the loss curve.

        Pass training demos only (held-out demos measure generalisation). ``device``: where the
        network's steps run (``"auto"``: CUDA when torch sees it, :func:`relam.devices.resolve_device`);
        pairs are drawn and shifted on the CPU, and the network comes back to the CPU afterwards.
        """
        from tqdm.auto import tqdm

        if len(videos) < 1:
            raise ValueError("TemporalEmbedding.fit: videos must hold at least one demo video")
        small = [_to_float(resize_images(v, self.input_size)) for v in videos]
        lengths = torch.tensor([len(v) - 1 for v in small], dtype=torch.float32)
        if torch.any(lengths < 1):
            raise ValueError("TemporalEmbedding.fit: every video needs at least 2 frames")
        data = torch.cat(small)
        offsets = torch.cumsum(torch.cat([torch.zeros(1), lengths[:-1] + 1]), 0).long()
        mean_len = float(lengths.mean())
        gen = torch.Generator().manual_seed(seed)
        net = self.net.train()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1),
                                                    pct_start=0.1)
        n = len(small)
        losses: list[float] = []
        bar = tqdm(range(steps), desc="temporal embedding", disable=not progress, leave=False)
        with moved_to(device, [net], [opt]) as dev:
            for _ in bar:
                va = torch.randint(n, (batch_size,), generator=gen)
                same = torch.rand(batch_size, generator=gen) < 0.5
                vb = torch.where(same, va, torch.randint(n, (batch_size,), generator=gen))
                pa = torch.rand(batch_size, generator=gen)
                # the partner is near in time half of the time (fine resolution close to a keyframe)
                near = torch.rand(batch_size, generator=gen) < 0.5
                pb = torch.where(near, pa + (torch.rand(batch_size, generator=gen) - 0.5) * 4 * self.tau / mean_len,
                                 torch.rand(batch_size, generator=gen)).clamp(0, 1)
                ta = (pa * lengths[va]).round().long()
                tb = (pb * lengths[vb]).round().long()
                dt = (ta / lengths[va] - tb / lengths[vb]).abs() * mean_len
                target = torch.exp(-dt / self.tau)
                xa = _random_shift(data[offsets[va] + ta], shift, gen)
                xb = _random_shift(data[offsets[vb] + tb], shift, gen)
                z = F.normalize(net(torch.cat([xa, xb]).to(dev)), dim=-1)
                cos = (z[:batch_size] * z[batch_size:]).sum(-1)
                loss = F.mse_loss(cos, target.to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
        net.eval()
        self.fitted = True
        self.fit_loss = losses
        return losses

    @torch.no_grad()
    def embed(self, images: np.ndarray) -> np.ndarray:
        x = _to_float(resize_images(images, self.input_size))
        return _normalise(torch.cat([self.net(x[i:i + 256]) for i in range(0, len(x), 256)]))

    def state(self) -> dict[str, Any]:
        return {"name": self.name,
                "kwargs": dict(input_size=self.input_size, dim=self.dim, width=self.width,
                               tau=self.tau, seed=self.seed),
                "weights": {k: v.clone() for k, v in self.net.state_dict().items()},
                "fitted": self.fitted}


# ------------------------------------------------------------------------------- pixels


class PixelEmbedding:
    """The down-sampled image itself, centred per image (a weight-free reference)."""

    name = "pixels"

    def __init__(self, input_size: int = 32):
        self.input_size = input_size

    def embed(self, images: np.ndarray) -> np.ndarray:
        x = _to_float(resize_images(images, self.input_size)).flatten(1)
        return _normalise(x - x.mean(dim=1, keepdim=True))

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": dict(input_size=self.input_size)}


# ------------------------------------------------------------------------------- dinov2


class Dinov2Embedding:
    """Frozen DINOv2 global embedding (the paper's choice): CLS token or mean patch token.

    ``path``: a local folder with ``config.json`` and ``model.safetensors``/``pytorch_model.bin``
    (default ``$RELAM_DINOV2_PATH``); a missing folder raises ``MissingWeightsError`` naming it.
    ``model``: an already-built ``Dinov2Model`` (tests use a tiny random one).
    """

    name = "dinov2"

    def __init__(self, path: str | os.PathLike | None = None, pooling: str = "cls",
                 input_size: int = 224, model: nn.Module | None = None):
        from relam.perception.encoders import Dinov2Encoder

        if pooling not in ("cls", "mean"):
            raise ValueError(f"Dinov2Embedding.pooling must be 'cls' or 'mean', got {pooling!r}")
        self.pooling = pooling
        self._enc = Dinov2Encoder(path, input_size=input_size, model=model)
        self.path = self._enc.path
        self.input_size = input_size

    @torch.no_grad()
    def embed(self, images: np.ndarray) -> np.ndarray:
        enc = self._enc
        out = [o.pooler_output if self.pooling == "cls" else o.last_hidden_state[:, -enc.num_patches:].mean(1)
               for o in enc.outputs(image_batch(images, square=True))]
        return _normalise(torch.cat(out))

    def state(self) -> dict[str, Any]:
        return {"name": self.name,
                "kwargs": dict(path=self.path, pooling=self.pooling, input_size=self.input_size)}


# ------------------------------------------------------------------------------- factory


def make_embedding(name: str = "temporal", **kwargs: Any) -> ImageEmbedding:
    """Build an embedding by name (``temporal`` | ``pixels`` | ``dinov2``)."""
    if name == "temporal":
        return TemporalEmbedding(**kwargs)
    if name == "pixels":
        return PixelEmbedding(**kwargs)
    if name == "dinov2":
        return Dinov2Embedding(**kwargs)
    raise ValueError(f"unknown embedding {name!r}; choose one of {EMBEDDINGS}")


def embedding_from_state(state: dict[str, Any]) -> ImageEmbedding:
    """Rebuild an embedding saved with ``state()``."""
    emb = make_embedding(state["name"], **state["kwargs"])
    if isinstance(emb, TemporalEmbedding):
        emb.net.load_state_dict(state["weights"])
        emb.fitted = bool(state.get("fitted", True))
    return emb


# ------------------------------------------------------------------------------- measurement


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho of ordinal ranks (ties ranked in order of appearance), 0 when undefined."""
    from scipy.stats import rankdata, spearmanr

    if len(x) < 2:
        return 0.0
    return float(spearmanr(rankdata(x, method="ordinal"), rankdata(y, method="ordinal")).statistic)


def approach_score(embedding: ImageEmbedding, videos: Sequence[np.ndarray],
                   keyframe_steps: Sequence[np.ndarray],
                   targets: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """How well similarity to the next keyframe tracks an expert's approach to it.

    For every demo and every segment ``(previous keyframe, next keyframe]`` (the first starts at
    frame 0), take ``s_t = cos(e(frame_t), e(target))`` where ``target`` is the true keyframe image
    (or ``targets[i][k]``, e.g. generated subgoals). Returns the mean over segments of the Spearman
    rank correlation between ``t`` and ``s_t`` (``rho``; 1 = similarity rises monotonically),
    the fraction of segments where ``s`` at the keyframe exceeds ``s`` at the segment start
    (``rises``), and the mean similarities at both ends (``s_start``, ``s_end``).
    """
    rhos, rises, s0s, s1s = [], [], [], []
    for i, (video, steps) in enumerate(zip(videos, keyframe_steps)):
        video = image_batch(video, "videos[i]", square=True)
        steps = np.asarray(steps, dtype=int)
        emb = embedding.embed(video)
        tgt = embedding.embed(np.asarray(targets[i]) if targets is not None else video[steps])
        prev = 0
        for k, step in enumerate(steps):
            if step - prev < 2:
                prev = step
                continue
            s = cosine_similarity(emb[prev:step + 1], tgt[k])
            rhos.append(_spearman(np.arange(len(s)), s))
            rises.append(float(s[-1] > s[0]))
            s0s.append(float(s[0]))
            s1s.append(float(s[-1]))
            prev = step
    if not rhos:
        raise ValueError("approach_score: no segment of at least 2 steps in the given demos")
    return {"rho": float(np.mean(rhos)), "rises": float(np.mean(rises)),
            "s_start": float(np.mean(s0s)), "s_end": float(np.mean(s1s)), "segments": len(rhos)}
