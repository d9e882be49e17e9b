"""The anticipation model's settings (:class:`AnticipationConfig`) and its per-scale budgets
(:data:`BUDGETS`): everything that decides a trained model, so its ``to_dict()`` keys the cache."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from relam.scales import ScaleTable


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
