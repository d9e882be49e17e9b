"""Image Subgoal (IS) baseline, the model: the subgoal-image generator and its measure.

A conditional flow-matching model (rectified flow) generates the next subgoal image
autoregressively from the initial image and the previous subgoal (the initial image for the first),
trained on the keyframe images of the expert demos (:mod:`relam.subgoals`). See
:mod:`baselines.image_subgoal` for the method, and ``benchmarks/bench_image_subgoal.py`` for the
held-out pixel error of the generated subgoals.

**Why the 32 px generator lost to copying the first frame on ManiSkill (issue 18 item 3), and the
fix.** Measured with ``python benchmarks/bench_image_subgoal.py PushCube-v1 --train 16 --test 4``
(1200 steps, demos 16-19 held out, mean absolute error 0-255 at 64 px):

    PushCube-v1                                           generated   copy first frame
    at 64 px, enlarged as is (compose="upsample")            12.0           7.1
    at the generator's own 32 px                              6.4           6.7
    a perfect 32 px generator (true subgoals), "upsample"     8.7           7.1
    at 64 px, compose="residual"                              6.7           7.1
    a perfect 32 px generator, "residual"                     2.8           7.1

The generator is not the problem: at its own resolution it beats copying (6.4 vs 6.7), and its
training loss falls from 0.032 (first tenth of the steps) to 0.0002 (last tenth). The loss is in
the enlargement: 84 % of a ManiSkill frame is static background with fine texture that copying gets
right (error 0.26 there) and a 32 px image cannot hold, so even the true subgoals shrunk to 32 px and
enlarged score 8.7, worse than copying. Copying's error sits on the arm (94 % of it, on 16 % of the
pixels); the object is 0.6 % of the pixels and moves 4.5 px (PushCube) / 6.9 px (PickCube) in the
32 px image, the arm keypoints 11.1 / 3.9 px. On PickCube (untrained diagnostics, same split):
copying 7.8, a perfect 32 px generator enlarged as is 7.3, with ``residual`` 3.4.
``compose="residual"`` keeps the sharp initial frame and adds only the generator's enlarged *change*
(:func:`compose_residual`); it costs nothing (same weights, no retraining) and brings PushCube to 6.7,
below copying (background error 9.1 -> 2.7; the arm's 27 is then two thirds of what is left). It is
a setting (:attr:`FlowSettings.compose`, ``ImageSubgoalSettings.generator_compose``), out of every
cache key at its default ``"upsample"``, so Meta-World components and runs keep theirs; a 64 px
generator is 3.6x the CPU per step (0.51 vs 0.14 s) and was not trained to the end here.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from relam.cache import atomic_torch_save
from relam.devices import moved_to
from relam.perception.images import resize_images

__all__ = [
    "COMPOSE_MODES",
    "FlowSettings",
    "compose_residual",
    "SubgoalImageModel",
    "flow_matching_loss",
    "euler_sample",
    "predict_clean",
    "training_pairs",
    "pixel_error",
]


# =============================================================================== the generator

#: values of :attr:`FlowSettings.compose`
COMPOSE_MODES = ("upsample", "residual")


@dataclass(frozen=True)
class FlowSettings:
    """Knobs of the subgoal image generator (hashed into its cache key)."""

    image_size: int = 32  #: generator resolution (multiple of 4)
    width: int = 24  #: base channel count of the UNet
    max_subgoals: int = 8  #: size of the subgoal-index embedding (later indices share the last)
    train_steps: int = 1200
    batch_size: int = 16
    lr: float = 2e-3
    euler_steps: int = 8  #: Euler steps when sampling
    output_size: int = 64  #: size of the images handed to the policy / reward
    seed: int = 0
    #: how a generated image reaches ``output_size``: ``"upsample"`` (the image itself, enlarged) or
    #: ``"residual"`` (the initial frame at ``output_size`` plus the enlarged *change* the generator
    #: made to the initial frame at ``image_size``: where it changed nothing the subgoal is the sharp
    #: initial frame, see the module docstring). Left out of :meth:`to_dict` (hence of cache keys) at
    #: its default, so components cached before it existed keep their keys.
    compose: str = "upsample"

    def __post_init__(self) -> None:
        if self.image_size % 4 or self.image_size < 8:
            raise ValueError(f"FlowSettings.image_size={self.image_size}: must be a multiple of 4, >= 8")
        if self.width % 8:
            raise ValueError(f"FlowSettings.width={self.width}: must be a multiple of 8 (GroupNorm)")
        if self.euler_steps < 1 or self.max_subgoals < 1:
            raise ValueError("FlowSettings.euler_steps and max_subgoals must be >= 1")
        if self.compose not in COMPOSE_MODES:
            raise ValueError(f"FlowSettings.compose={self.compose!r}: choose one of {COMPOSE_MODES}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["compose"] == "upsample":
            del d["compose"]  # the default before the field existed: keys unchanged
        return d


def _time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the flow time t in [0, 1] (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half - 1, 1))
    ang = (t[:, None] * 1000.0) * freqs[None]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the conditioning vector as a FiLM scale/shift."""

    def __init__(self, cin: int, cout: int, emb: int):
        super().__init__()
        self.n1 = nn.GroupNorm(8, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.film = nn.Linear(emb, 2 * cout)
        self.n2 = nn.GroupNorm(8, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.film(e)[:, :, None, None].chunk(2, dim=1)
        h = self.c2(F.silu(self.n2(h) * (1 + scale) + shift))
        return h + self.skip(x)


class _FlowUNet(nn.Module):
    """Velocity field v(x_t, t | initial image, previous subgoal, index, is_last).

    The two conditioning images enter as extra input channels (3 + 3 + 3 = 9), so the net can
    copy the static background straight from them; a two-level UNet (s, s/2, s/4).
    """

    def __init__(self, width: int, max_subgoals: int):
        super().__init__()
        w, e = width, 4 * width
        self.t_mlp = nn.Sequential(nn.Linear(w, e), nn.SiLU(), nn.Linear(e, e))
        self.k_emb = nn.Embedding(max_subgoals, e)
        self.last_emb = nn.Embedding(2, e)
        self.inp = nn.Conv2d(9, w, 3, 1, 1)
        self.d1 = _ResBlock(w, w, e)
        self.down1 = nn.Conv2d(w, 2 * w, 4, 2, 1)
        self.d2 = _ResBlock(2 * w, 2 * w, e)
        self.down2 = nn.Conv2d(2 * w, 2 * w, 4, 2, 1)
        self.mid1 = _ResBlock(2 * w, 2 * w, e)
        self.mid2 = _ResBlock(2 * w, 2 * w, e)
        self.up2 = nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1)
        self.u2 = _ResBlock(4 * w, 2 * w, e)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 4, 2, 1)
        self.u1 = _ResBlock(2 * w, w, e)
        self.out = nn.Sequential(nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, 3, 3, 1, 1))
        self.width = w

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, k: torch.Tensor,
                last: torch.Tensor) -> torch.Tensor:
        e = self.t_mlp(_time_features(t, self.width)) + self.k_emb(k) + self.last_emb(last)
        h1 = self.d1(self.inp(torch.cat([x, cond], dim=1)), e)
        h2 = self.d2(self.down1(h1), e)
        h = self.mid2(self.mid1(self.down2(h2), e), e)
        h = self.u2(torch.cat([self.up2(h), h2], dim=1), e)
        h = self.u1(torch.cat([self.up1(h), h1], dim=1), e)
        return self.out(h)


def _to_unit(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float (B,3,size,size) in [-1, 1]."""
    small = resize_images(images, size)
    return torch.from_numpy(np.ascontiguousarray(small)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def training_pairs(sequences: Sequence[Any], size: int, max_subgoals: int) -> dict[str, torch.Tensor]:
    """Teacher-forced examples from subgoal sequences (anything with ``initial_frame`` and
    ``keyframe_images``): for subgoal k of a demo with S keyframes, condition = (initial image,
    keyframe k-1 or the initial image for k = 0), index ``min(k, max_subgoals-1)``,
    ``is_last = k == S-1``; target = keyframe k. Images resized to ``size``."""
    cond, tgt, ks, last = [], [], [], []
    for seq in sequences:
        kf = np.asarray(seq.keyframe_images)
        if kf.ndim != 4 or len(kf) < 1:
            raise ValueError("training_pairs: every sequence needs keyframe_images (S>=1,H,W,3)")
        init = _to_unit(np.asarray(seq.initial_frame)[None], size)
        imgs = _to_unit(kf, size)
        prev = torch.cat([init, imgs[:-1]])
        s = len(kf)
        cond.append(torch.cat([init.expand(s, -1, -1, -1), prev], dim=1))
        tgt.append(imgs)
        ks.append(torch.clamp(torch.arange(s), max=max_subgoals - 1))
        last.append((torch.arange(s) == s - 1).long())
    if not tgt:
        raise ValueError("training_pairs: no sequences given")
    return {"cond": torch.cat(cond), "target": torch.cat(tgt), "k": torch.cat(ks),
            "last": torch.cat(last)}


def flow_matching_loss(net: nn.Module, x1: torch.Tensor, cond: torch.Tensor, k: torch.Tensor,
                       last: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rectified-flow loss in its x-prediction form.

    x_t = (1-t) x0 + t x1 with x0 ~ N(0, I); the net predicts the clean image x1 (as a residual
    on the previous subgoal, see :func:`predict_clean`) and the velocity follows as
    ``v = (x1_hat - x_t) / (1 - t)``. Why x- rather than v-prediction: with a small net and a few
    minutes of CPU training, predicting a clean image that mostly *is* the previous subgoal is far
    easier than predicting ``x1 - x0`` (which is mostly noise); v-prediction at the same budget
    gave images worse than copying the initial frame.
    """
    x0 = torch.randn(x1.shape, generator=gen).to(x1.device)  # drawn on the CPU whatever the device
    t = torch.rand(x1.shape[0], generator=gen).to(x1.device)
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * x1
    return F.mse_loss(predict_clean(net, xt, t, cond, k, last), x1)


def predict_clean(net: nn.Module, xt: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                  k: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """The clean-image estimate: previous subgoal (cond channels 3:6) plus the net's residual."""
    return cond[:, 3:6] + net(xt, t, cond, k, last)


@torch.no_grad()
def euler_sample(net: nn.Module, cond: torch.Tensor, k: torch.Tensor, last: torch.Tensor,
                 steps: int, gen: torch.Generator) -> torch.Tensor:
    """Integrate dx/dt = v = (x1_hat - x) / (1 - t) from Gaussian noise at t=0 to t=1 with
    ``steps`` Euler steps (the last step lands exactly on x1_hat)."""
    b, _, h, w = cond.shape
    x = torch.randn((b, 3, h, w), generator=gen)
    for i in range(steps):
        t = i / steps
        x1_hat = predict_clean(net, x, torch.full((b,), t), cond, k, last)
        x = x + (x1_hat - x) / (1 - t) / steps
    return x.clamp(-1, 1)


class SubgoalImageModel:
    """The IS high level: generates K subgoal images from an initial frame (see module doc)."""

    def __init__(self, settings: FlowSettings = FlowSettings(), n_subgoals: int = 4):
        self.settings = settings
        torch.manual_seed(settings.seed)
        self.net = _FlowUNet(settings.width, settings.max_subgoals).eval()
        self.n_subgoals = int(n_subgoals)
        self.fit_loss: list[float] = []

    def fit(self, sequences: Sequence[Any], steps: int | None = None, progress: bool = True,
            device: str = "auto") -> list[float]:
        """Train on subgoal sequences; sets ``n_subgoals`` to their median keyframe count.

        ``device``: where the training steps run (``"auto"``: CUDA when torch sees it,
        :func:`relam.devices.resolve_device`); batches and noise are drawn on the CPU and the net
        comes back to the CPU afterwards (sampling runs there)."""
        from tqdm.auto import tqdm

        s = self.settings
        steps = s.train_steps if steps is None else int(steps)
        data = training_pairs(sequences, s.image_size, s.max_subgoals)
        self.n_subgoals = max(1, int(np.round(np.median([len(q.keyframe_images) for q in sequences]))))
        gen = torch.Generator().manual_seed(s.seed)
        net = self.net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=max(steps, 1),
                                                    pct_start=0.1)
        n = len(data["target"])
        bar = tqdm(range(steps), desc="IS flow model", disable=not progress, leave=False)
        with moved_to(device, [net], [opt]) as dev:
            data = {k: v.to(dev) for k, v in data.items()}
            for _ in bar:
                idx = torch.randint(n, (min(s.batch_size, n),), generator=gen).to(dev)
                loss = flow_matching_loss(net, data["target"][idx], data["cond"][idx], data["k"][idx],
                                          data["last"][idx], gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                self.fit_loss.append(float(loss.detach()))
                bar.set_postfix(loss=f"{self.fit_loss[-1]:.4f}")
        net.eval()
        return self.fit_loss

    @torch.no_grad()
    def generate(self, initial_frame: np.ndarray, n: int | None = None, seed: int = 0,
                 size: int | None = None) -> np.ndarray:
        """``n`` (default ``n_subgoals``) subgoal images, uint8 (n, size, size, 3), size default
        ``settings.output_size``; each conditioned on the previous generated one."""
        s = self.settings
        n = self.n_subgoals if n is None else int(n)
        if n < 1:
            raise ValueError(f"SubgoalImageModel.generate: n must be >= 1, got {n}")
        size = s.output_size if size is None else int(size)
        frame = np.asarray(initial_frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"initial_frame must be uint8 (H,W,3), got {frame.dtype} {frame.shape}")
        gen = torch.Generator().manual_seed(int(seed))
        init = _to_unit(frame[None], s.image_size)
        prev = init
        out = []
        for k in range(n):
            kk = torch.tensor([min(k, s.max_subgoals - 1)])
            last = torch.tensor([int(k == n - 1)])
            x = euler_sample(self.net, torch.cat([init, prev], dim=1), kk, last, s.euler_steps, gen)
            img = _to_uint8(x)
            out.append(img[0])
            prev = _to_unit(img, s.image_size)  # what the next step sees is a real (quantised) image
        small = np.stack(out)
        if s.compose == "residual":
            return compose_residual(small, frame, size)
        return resize_images(small, size)

    # -- storage
    def state(self) -> dict[str, Any]:
        return {"settings": self.settings.to_dict(), "n_subgoals": self.n_subgoals,
                "weights": {k: v.clone() for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "SubgoalImageModel":
        m = cls(FlowSettings(**state["settings"]), int(state["n_subgoals"]))
        m.net.load_state_dict(state["weights"])
        return m

    def save(self, path: str | Path) -> Path:
        return atomic_torch_save(path, self.state())

    @classmethod
    def load(cls, path: str | Path) -> "SubgoalImageModel":
        return cls.from_state(torch.load(path, weights_only=False))


def compose_residual(generated: np.ndarray, initial_frame: np.ndarray, size: int) -> np.ndarray:
    """Subgoal images at ``size`` from images generated at a lower resolution: the initial frame at
    ``size`` plus the enlarged difference between each generated image and the initial frame at the
    generator's resolution (``FlowSettings(compose="residual")``).

    Where the generator reproduced the initial frame exactly the result *is* the sharp initial frame,
    so the static background keeps its full-resolution detail; only what the generator changed (the
    arm, the object) comes out at the generator's resolution.
    """
    g = np.asarray(generated)
    small = g.shape[1]
    init_small = resize_images(np.asarray(initial_frame)[None], small).astype(np.float32)
    delta = torch.from_numpy(g.astype(np.float32) - init_small).permute(0, 3, 1, 2)
    if small != size:  # the signed difference, enlarged as resize_images enlarges (bilinear, half-pixel)
        delta = F.interpolate(delta, size=(size, size), mode="bilinear", align_corners=False)
    base = resize_images(np.asarray(initial_frame)[None], size).astype(np.float32)
    return np.clip(np.round(base + delta.permute(0, 2, 3, 1).numpy()), 0, 255).astype(np.uint8)


def pixel_error(generated: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute pixel error (0-255 scale) between two image stacks, compared at the smaller
    of the two sizes (area-resized)."""
    g, t = np.asarray(generated), np.asarray(true)
    size = min(g.shape[-2], t.shape[-2])
    g = resize_images(g, size).astype(np.float64)
    t = resize_images(t, size).astype(np.float64)
    if g.shape != t.shape:
        raise ValueError(f"pixel_error: stacks differ in count: {g.shape} vs {t.shape}")
    return float(np.abs(g - t).mean())
