"""Frozen image encoders that turn frames into patch tokens for the anticipation model.

The paper (section 3.1.2) feeds the anticipation model patch embeddings of a *frozen* DINOv2.
No weights can be downloaded here, so there are three backends behind one small interface:

* ``pixels`` (the default; no weights, no training): raw 16x16 pixel patches in [-1, 1]. It loses
  nothing, so every sub-patch detail the keypoints depend on is there; the anticipation model's
  trainable token projection plays the role of a ViT patch embedding. Why the default: on
  drawer-open-v3 (90 train / 10 held-out demos, 4x128 model, 1,500 steps) it matched the
  reconstruction-pretrained encoder below (final-subgoal error 6.4 vs 6.2 px, medians 5.1 vs
  5.5 px; within the noise of 10 demos) while needing no pre-training pass (``conv-ae`` spent
  ~7 min of a contended 2-core CPU on 300 reconstruction steps).
* ``conv-ae``: a small convolutional auto-encoder pre-trained on the (training) demonstration
  frames with a pixel-reconstruction objective, then frozen: the closest weight-free analogue of
  a frozen self-supervised encoder. A reconstruction objective forces each latent cell to keep
  where the edges inside its patch are, which is what the model must read; its features gave
  slightly lower teacher-forced errors (1.3 vs 1.5 px) but no better generated subgoals.
* ``dinov2``: ``transformers.Dinov2Model.from_pretrained(local_path)``, as in the paper. It needs
  a local copy of the weights and raises :class:`MissingWeightsError` naming the path otherwise.

Every encoder maps ``uint8 (B, H, W, 3)`` images to ``float32 (B, P, D)`` patch tokens in
row-major patch order (``P = grid * grid``) and exposes ``dim`` (D), ``num_patches`` (P) and
``grid``. Encoders are frozen: ``encode`` runs without gradients, so tokens can be computed once
per image and cached (see :func:`encode_cached`).
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from relam.devices import moved_to
from relam.perception.images import image_batch
from relam.versions import import_extra

__all__ = [
    "ImageEncoder",
    "MissingWeightsError",
    "ConvAEEncoder",
    "PixelPatchEncoder",
    "Dinov2Encoder",
    "ENCODERS",
    "make_encoder",
    "encoder_from_state",
    "encode_cached",
]

ENCODERS = ("conv-ae", "pixels", "dinov2")


class MissingWeightsError(FileNotFoundError):
    """Raised when a backend that needs pretrained weights cannot find them locally."""


@runtime_checkable
class ImageEncoder(Protocol):
    """What the anticipation model needs from an image encoder."""

    name: str

    @property
    def dim(self) -> int: ...

    @property
    def num_patches(self) -> int: ...

    @property
    def grid(self) -> int: ...

    def encode(self, images: np.ndarray) -> torch.Tensor: ...

    def state(self) -> dict[str, Any]: ...


def _check_images(images: np.ndarray, size: int | None = None) -> np.ndarray:
    return image_batch(images, size=size)


def _to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float (B,3,H,W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------
# conv-ae: reconstruction-pretrained conv encoder (default)
# ---------------------------------------------------------------------------------------------


class _ConvAE(nn.Module):
    """Stride-2 conv stack to a (dim, H/stride, W/stride) latent and its mirror decoder."""

    def __init__(self, dim: int, stride: int, width: int, half_res_decoder: bool = True):
        super().__init__()
        n_down = int(round(math.log2(stride)))
        n_up = n_down - 1 if half_res_decoder else n_down
        chans = [3] + [min(width * 2**i, 4 * width) for i in range(n_down)]
        enc: list[nn.Module] = []
        for i in range(n_down):
            enc += [nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1), nn.GELU()]
        enc += [nn.Conv2d(chans[-1], dim, 3, 1, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(dim, chans[-1], 3, 1, 1), nn.GELU()]
        for i in range(n_down, n_down - n_up, -1):
            dec += [nn.ConvTranspose2d(chans[i], chans[i - 1] if i > 1 else width, 4, 2, 1)]
            dec += [nn.GELU()]
        if n_up < n_down:
            dec += [nn.Conv2d(chans[n_down - n_up], width, 3, 1, 1), nn.GELU()]
        dec += [nn.Conv2d(width, 3, 3, 1, 1)]
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent and reconstruction (at half resolution with the half-res decoder)."""
        z = self.encoder(x)
        return z, self.decoder(z)


def _recon_target(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """The image at the decoder's output resolution (2x2 average when it is half-res)."""
    if recon.shape[-1] != x.shape[-1]:
        return F.adaptive_avg_pool2d(x, recon.shape[-2:])
    return x


class ConvAEEncoder:
    """Small conv auto-encoder, pre-trained on demo frames (``fit``), then frozen.

    ``stride`` sets the patch size (16 -> an 8x8 grid of tokens on 128 px frames). The decoder
    reconstructs the frame at half resolution (2x2-averaged): the full-resolution decoder layers
    cost most of the compute on CPU, and 2-px detail is still demanded of the latent.
    """

    name = "conv-ae"

    def __init__(self, image_size: int = 128, stride: int = 16, dim: int = 64, width: int = 16,
                 seed: int = 0):
        if stride not in (4, 8, 16, 32):
            raise ValueError(f"stride must be one of 4, 8, 16, 32; got {stride}")
        if image_size % stride:
            raise ValueError(f"image_size ({image_size}) must be a multiple of stride ({stride})")
        self.image_size, self.stride, self._dim, self.width, self.seed = (
            image_size, stride, dim, width, seed)
        torch.manual_seed(seed)
        self.net = _ConvAE(dim, stride, width).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.fitted = False
        self.fit_loss: list[float] = []

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def grid(self) -> int:
        return self.image_size // self.stride

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def fit(self, frames: np.ndarray, steps: int = 600, batch_size: int = 16, lr: float = 2e-3,
            seed: int = 0, progress: bool = True, device: str = "auto") -> list[float]:
        """Pre-train on ``frames`` (uint8 (M,H,W,3)) by pixel reconstruction; then freeze.

        Returns the loss curve. Only the frames given here are seen, so pass training demos only.
        ``device``: where the steps run (``"auto"``: CUDA when torch sees it,
        :func:`relam.devices.resolve_device`); batches are drawn on the CPU and the network comes
        back to the CPU afterwards (:meth:`encode` runs there).
        """
        from tqdm.auto import tqdm

        frames = _check_images(frames, self.image_size)
        gen = torch.Generator().manual_seed(seed)
        net = self.net.train()
        for p in net.parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        warm = max(1, steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warm) * (
            0.55 + 0.45 * math.cos(math.pi * min(i / max(steps, 1), 1.0))))
        data = _to_float(frames)
        losses = []
        bar = tqdm(range(steps), desc="conv-ae pretrain", disable=not progress, leave=False)
        with moved_to(device, [net], [opt]) as dev:
            for _ in bar:
                idx = torch.randint(len(data), (min(batch_size, len(data)),), generator=gen)
                x = data[idx].to(dev)
                _, recon = net(x)
                loss = F.mse_loss(recon, _recon_target(x, recon))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.fitted = True
        self.fit_loss = losses
        return losses

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> torch.Tensor:
        images = _check_images(images, self.image_size)
        z = self.net.encoder(_to_float(images))  # (B, D, g, g)
        return z.flatten(2).transpose(1, 2).contiguous()

    @torch.no_grad()
    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Decoded images (uint8), for checking what the frozen latent keeps."""
        images = _check_images(images, self.image_size)
        _, recon = self.net(_to_float(images))
        recon = F.interpolate(recon, size=images.shape[1:3], mode="nearest")
        x = ((recon.clamp(-1, 1) + 1) * 127.5).round().byte()
        return x.permute(0, 2, 3, 1).numpy()

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kwargs": dict(image_size=self.image_size, stride=self.stride, dim=self._dim,
                           width=self.width, seed=self.seed),
            "weights": {k: v.clone() for k, v in self.net.state_dict().items()},
            "fitted": self.fitted,
        }


# ---------------------------------------------------------------------------------------------
# pixels: raw patches
# ---------------------------------------------------------------------------------------------


class PixelPatchEncoder:
    """Raw pixel patches in [-1, 1] (no weights, no training, loses nothing)."""

    name = "pixels"

    def __init__(self, image_size: int = 128, patch: int = 16):
        if image_size % patch:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch ({patch})")
        self.image_size, self.patch = image_size, patch

    @property
    def dim(self) -> int:
        return 3 * self.patch**2

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> torch.Tensor:
        images = _check_images(images, self.image_size)
        x = _to_float(images)
        p = F.unfold(x, kernel_size=self.patch, stride=self.patch)  # (B, 3*p*p, P)
        return p.transpose(1, 2).contiguous()

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": dict(image_size=self.image_size, patch=self.patch)}


# ---------------------------------------------------------------------------------------------
# dinov2: frozen pretrained ViT from a local folder
# ---------------------------------------------------------------------------------------------

DINOV2_HINT = (
    "DINOv2 weights are not downloaded at run time (this machine has no hub access). On a machine "
    "with internet run `huggingface-cli download facebook/dinov2-small --local-dir <DIR>` (or "
    "dinov2-base), copy <DIR> here, and pass it as the encoder path (CLI: --encoder dinov2 "
    "--encoder-path <DIR>; env RELAM_DINOV2_PATH). The folder must hold config.json and "
    "model.safetensors (or pytorch_model.bin). The default encoder 'conv-ae' needs no weights."
)


class Dinov2Encoder:
    """Frozen DINOv2 (``transformers.Dinov2Model``) patch tokens, as in the paper.

    Frames are resized to ``input_size`` (a multiple of the patch size 14; 224 -> 16x16 patches)
    and normalised with ImageNet statistics. The CLS token is dropped.
    """

    name = "dinov2"
    _MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    _STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def __init__(self, path: str | os.PathLike | None = None, input_size: int = 224,
                 batch_size: int = 16, model: nn.Module | None = None):
        """``path``: local folder from ``save_pretrained``/hub download. ``model``: an
        already-built ``Dinov2Model`` (tests use a tiny random one)."""
        path = path if path is not None else os.environ.get("RELAM_DINOV2_PATH")
        self.path = str(path) if path is not None else None
        if model is None:
            if self.path is None:
                raise MissingWeightsError(f"the 'dinov2' encoder needs a local weights path. "
                                          f"{DINOV2_HINT}")
            p = Path(self.path)
            has_weights = any((p / f).exists() for f in
                              ("model.safetensors", "pytorch_model.bin"))
            if not (p / "config.json").exists() or not has_weights:
                raise MissingWeightsError(
                    f"DINOv2 weights not found at '{p}' (need config.json and model.safetensors "
                    f"or pytorch_model.bin there). {DINOV2_HINT}")
            Dinov2Model = import_extra("transformers", "pretrained", "the 'dinov2' encoder").Dinov2Model
            model = Dinov2Model.from_pretrained(str(p), local_files_only=True)
        self.model = model.eval()
        for q in self.model.parameters():
            q.requires_grad_(False)
        cfg = self.model.config
        self.patch_size = int(cfg.patch_size)
        if input_size % self.patch_size:
            raise ValueError(f"input_size ({input_size}) must be a multiple of the DINOv2 patch "
                             f"size ({self.patch_size})")
        self.input_size = input_size
        self.batch_size = batch_size
        self._dim = int(cfg.hidden_size)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def grid(self) -> int:
        return self.input_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @torch.no_grad()
    def outputs(self, images: np.ndarray) -> Iterator[Any]:
        """The model's outputs (``last_hidden_state``, ``pooler_output``), batch by batch, for
        uint8 (B,H,W,3) images resized (bicubic) to ``input_size`` and normalised as DINOv2 was
        trained."""
        images = _check_images(images)
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + self.batch_size]))
            x = x.permute(0, 3, 1, 2).float() / 255.0
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic",
                              align_corners=False)
            yield self.model(pixel_values=(x - self._MEAN) / self._STD)

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> torch.Tensor:
        # drop CLS (and any register tokens)
        out = [o.last_hidden_state[:, -self.num_patches:] for o in self.outputs(images)]
        return torch.cat(out).float()

    def state(self) -> dict[str, Any]:
        # Weights stay in their folder (they are large and licensed separately): store the path.
        return {"name": self.name, "kwargs": dict(path=self.path, input_size=self.input_size)}


# ---------------------------------------------------------------------------------------------
# factory, (de)serialisation, caching
# ---------------------------------------------------------------------------------------------


def make_encoder(name: str = "pixels", **kwargs: Any) -> ImageEncoder:
    """Build an encoder by name (``pixels`` | ``conv-ae`` | ``dinov2``)."""
    if name == "conv-ae":
        return ConvAEEncoder(**kwargs)
    if name == "pixels":
        return PixelPatchEncoder(**kwargs)
    if name == "dinov2":
        return Dinov2Encoder(**kwargs)
    raise ValueError(f"unknown encoder '{name}'; choose one of {ENCODERS}")


def encoder_from_state(state: dict[str, Any]) -> ImageEncoder:
    """Rebuild an encoder saved with ``encoder.state()`` (used by checkpoints)."""
    enc = make_encoder(state["name"], **state["kwargs"])
    if isinstance(enc, ConvAEEncoder):
        enc.net.load_state_dict(state["weights"])
        enc.fitted = bool(state.get("fitted", True))
    return enc


def image_key(image: np.ndarray) -> str:
    """Content hash of one image (cache key)."""
    a = np.ascontiguousarray(image)
    return hashlib.sha1(a.tobytes() + str(a.shape).encode()).hexdigest()[:20]


def encode_cached(encoder: ImageEncoder, images: np.ndarray, cache: dict[str, torch.Tensor],
                  batch_size: int = 64, store: bool = True) -> torch.Tensor:
    """Encode ``images`` (B,H,W,3) using/filling an in-memory ``cache`` keyed by content.

    The encoders are frozen, so a frame's tokens never change: training computes each distinct
    frame once and reuses the tensor every step. ``store=False`` reads the cache but leaves it as
    it was (frames seen once, such as the first frames an RL run plans from).
    """
    images = _check_images(images)
    keys = [image_key(im) for im in images]
    todo = sorted({k: i for i, k in enumerate(keys) if k not in cache}.items(), key=lambda t: t[1])
    new: dict[str, torch.Tensor] = cache if store else {}
    for j in range(0, len(todo), batch_size):
        chunk = todo[j:j + batch_size]
        toks = encoder.encode(images[[i for _, i in chunk]])
        for (k, _), t in zip(chunk, toks):
            new[k] = t
    return torch.stack([cache[k] if k in cache else new[k] for k in keys])
