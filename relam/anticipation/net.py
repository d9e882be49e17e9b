"""The transformer of the anticipation model: image patch tokens as a bidirectional prefix, then
causal point tokens whose outputs are residual keypoint rows and end-of-sequence logits (the token
sequence: :mod:`relam.anticipation`)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from relam.anticipation.config import AnticipationConfig
from relam.anticipation.data import prefix_causal_mask, sincos_2d


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
