"""Training of the anticipation model: teacher-forced MSE on normalised coordinates plus the
end-of-sequence BCE, AdamW with warm-up and cosine decay, resumable from ``checkpoint.pt``; the
held-out evaluation and pictures are written at the end."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from relam.anticipation.config import AnticipationConfig
from relam.anticipation.data import (dataset_items, default_task_frames, normalise_coords, shift_image,
                                    split_holdout, validate_item)
from relam.anticipation.evaluation import evaluate_anticipation
from relam.anticipation.model import AnticipationModel
from relam.anticipation.plots import plot_loss_curve, plot_predictions
from relam.cache import atomic_torch_save, atomic_write_json, cache_dir
from relam.devices import moved_to
from relam.perception.encoders import ConvAEEncoder, make_encoder


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
    is_last[torch.arange(len(lengths), device=lengths.device), lengths - 1] = 1.0
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
                       progress: bool = True, evaluate: bool = True, device: str = "auto",
                       threads: int | None = 1) -> AnticipationModel:
    """Train on ``dataset`` (a SubgoalDataset or a list of SubgoalSequence-like items).

    Per task, the ``holdout`` demos with the largest seeds are kept out for evaluation. Writes
    into ``out_dir``: ``checkpoint.pt`` (every ``ckpt_every`` steps, atomic; a rerun resumes
    from it), ``model.pt``, ``loss.png``, ``history.json``, ``split.json`` and, when held-out
    demos exist and ``evaluate``, ``metrics.json`` + ``predictions.png``.

    ``device``: where the gradient steps (and the conv-ae pre-training) run -- ``"auto"``: CUDA
    when torch sees it (:func:`relam.devices.resolve_device`). Not part of the config (nor of the
    cache key): batches and noise are drawn on the CPU with the same generator whatever the
    device, the frozen encoder's tokens are computed on the CPU, and the network comes back to the
    CPU after the loop (planning runs there); a resumed run may use another device.

    ``threads``: torch's intra-op threads while training (restored after; None keeps torch's
    setting). One by default, as PPO and IQL use: the model's batches of 8 are too small to split,
    and torch's default (every core) stalls when other processes share the cores. Measured on the
    2-core box with four to six processes on it (``benchmarks/bench_anticipation.py --speed
    --threads T``, the quick model): 0.28 s a step with one thread, 1.41 s with two; a ``relam
    run --workers 1`` that trained drawer's model in-process (torch's default, two threads) made
    0.25-0.5 steps/s, and 8-9 steps/s once ``OMP_NUM_THREADS=1`` was set. Not part of the config.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _train(dataset, config, out_dir, holdout, task_frames, progress, evaluate, device)
    finally:
        torch.set_num_threads(previous)


def _train(dataset: Any, config: AnticipationConfig | None, out_dir: str | Path | None, holdout: int,
           task_frames: dict[str, np.ndarray] | None, progress: bool, evaluate: bool,
           device: str) -> AnticipationModel:
    """:func:`train_anticipation`'s body, under its thread setting."""
    from tqdm.auto import tqdm

    cfg = config or AnticipationConfig()
    out = Path(out_dir) if out_dir is not None else cache_dir() / "anticipation" / "default"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    t_start = time.time()

    # --- data: split, validate, task-indication frames ---------------------------------------
    items = dataset_items(dataset)
    train, held = split_holdout(items, holdout) if holdout > 0 else (items, [])
    for it in items:
        validate_item(it, cfg.num_points, cfg.image_size, cfg.max_len)
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
                        progress=progress, device=device)
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
    with moved_to(device, [net], [opt]) as dev:
        img_tok, task_tok = img_tok.to(dev), task_tok.to(dev)
        for step in bar:
            idx = torch.randint(len(kps), (cfg.batch_size,), generator=gen).tolist()
            target, valid = _pad_batch([kps[i] for i in idx], cfg.image_size)
            kp_in = target
            if cfg.input_noise_px > 0:
                noise = torch.randn(target.shape, generator=gen) * (2 * cfg.input_noise_px
                                                                     / cfg.image_size)
                kp_in = target + noise
            target, valid, kp_in = target.to(dev), valid.to(dev), kp_in.to(dev)
            coords, end_logits = net(img_tok[idx], task_tok[idx], kp_in)
            loss, parts = anticipation_loss(coords, end_logits, target, valid, cfg.end_weight)

            for g in opt.param_groups:
                g["lr"] = _lr_at(step, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()

            run["loss"] += float(loss.detach())
            run["mse"] += parts["mse"]
            run["bce"] += parts["bce"]
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
