"""VLM-style reward, the models: the three reward terms, the VLM prompts and answer parsing, the
:class:`RewardModel` interface and its two backends (the learned default, a local VLM), and their
measures. See :mod:`baselines.vlm_reward` for the method.
"""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.torch_layers import create_mlp
from torch import nn

from baselines.common import _small_cnn, _to_float, to_policy_images
from relam.cache import atomic_torch_save
from relam.devices import moved_to, resolve_device
from relam.versions import import_extra

__all__ = [
    "PROMPTS",
    "RewardTerms",
    "combine_terms",
    "direction_from_logits",
    "parse_direction",
    "parse_progress",
    "parse_completion",
    "RewardModel",
    "LearnedRewardConfig",
    "LearnedRewardModel",
    "VLMWeightsMissing",
    "VLMRewardModel",
    "pair_directions",
    "query_seconds",
]


# =============================================================================== the three terms


@dataclass(frozen=True)
class RewardTerms:
    """The reward model's answers for N queries: arrays (N,) of direction, progress and completion."""

    temporal: np.ndarray  #: -1 / 0 / +1
    progress: np.ndarray  #: in [0, 1]
    completion: np.ndarray  #: 0 / 1

    @property
    def reward(self) -> np.ndarray:
        return combine_terms(self.temporal, self.progress, self.completion)

    def row(self, i: int = 0) -> dict[str, float]:
        return {"temporal": float(self.temporal[i]), "progress": float(self.progress[i]),
                "completion": float(self.completion[i])}


def combine_terms(temporal: Any, progress: Any, completion: Any) -> np.ndarray:
    """``(temporal + progress + completion) / 3``, after checking each term's range.

    The result lies in [-1/3, 1]: finished and still 1, regressing at the start -1/3.
    """
    c = np.asarray(temporal, np.float64)
    p = np.asarray(progress, np.float64)
    d = np.asarray(completion, np.float64)
    if not np.isin(c, (-1.0, 0.0, 1.0)).all():
        raise ValueError(f"temporal term must be -1, 0 or +1, got {np.unique(c)}")
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError(f"progress term must lie in [0, 1], got min {p.min()} max {p.max()}")
    if not np.isin(d, (0.0, 1.0)).all():
        raise ValueError(f"completion term must be 0 or 1, got {np.unique(d)}")
    return (c + p + d) / 3.0


def direction_from_logits(logits: Any) -> np.ndarray:
    """Class scores (N, 3) over (away, none, toward) -> directions (N,) in {-1, 0, +1}."""
    z = np.asarray(logits)
    if z.ndim != 2 or z.shape[1] != 3:
        raise ValueError(f"direction logits must be (N, 3) over (away, none, toward), got shape {z.shape}")
    return (np.argmax(z, axis=1) - 1).astype(np.float64)


# =============================================================================== VLM prompts and answers

#: The three questions asked of a VLM; ``{task}`` is the instruction of :data:`TASK_INSTRUCTIONS`.
PROMPTS: dict[str, str] = {
    "temporal": ("The robot is asked to {task}. Image 1 was taken earlier, image 2 now. Compared with "
                 "image 1, did the scene in image 2 move toward completing the task, away from it, or not "
                 "change? Answer with one word: toward, away, or none."),
    "progress": ("The robot is asked to {task}. Image 1 shows the start of the episode, image 2 the scene "
                 "now. How much of the task is done in image 2, from 0 (nothing) to 100 (done)? Answer "
                 "with one number."),
    "completion": "The robot is asked to {task}. Is the task completed in this image? Answer yes or no.",
}

TASK_INSTRUCTIONS: dict[str, str] = {
    "drawer-open-v3": "open the green drawer",
    "door-open-v3": "open the door",
    "button-press-wall-v3": "press the button behind the wall",
}

_DIRECTION_WORDS = [(-1, r"\baway\b|\bbackward|\bfurther\b|\bworse\b|\bregress"),
                    (0, r"\bnone\b|\bno change\b|\bnot change\b|\bunchanged\b|\bsame\b|\bstatic\b|\bnot at all\b"),
                    (1, r"\btoward|\bcloser\b|\bforward\b|\bprogress|\bbetter\b")]


def parse_direction(text: str) -> int:
    """A VLM's temporal answer -> -1 / 0 / +1: the earliest keyword wins; no keyword -> 0."""
    t = text.lower()
    best: tuple[int, int] | None = None
    for value, pattern in _DIRECTION_WORDS:
        m = re.search(pattern, t)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), value)
    return best[1] if best else 0


def parse_progress(text: str) -> float:
    """A VLM's progress answer -> [0, 1]: the first number, read as percent when above 1; none -> 0."""
    m = re.search(r"-?\d+(?:\.\d+)?", text)
    if not m:
        return 0.0
    v = float(m.group())
    if v > 1.0 or "%" in text:
        v /= 100.0
    return float(np.clip(v, 0.0, 1.0))


def parse_completion(text: str) -> float:
    """A VLM's completion answer -> 1.0 for yes/true/completed, else 0.0."""
    t = text.strip().lower()
    if re.match(r"^(yes|true|complete|completed|done)\b", t):
        return 1.0
    return 0.0


# =============================================================================== the interface


class RewardModel(Protocol):
    """What the held-reward wrapper needs: the three terms for N queries of raw (H,W,3) uint8 frames."""

    def terms(self, current: np.ndarray, previous: np.ndarray, initial: np.ndarray) -> RewardTerms: ...


def _frames(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ValueError(f"{name}: need RGB uint8 frames (N,H,W,3) or (H,W,3), got {x.dtype} {x.shape}")
    return x


# =============================================================================== learned backend


@dataclass(frozen=True)
class LearnedRewardConfig:
    """Knobs of the default reward model (hashed into its cache key)."""

    size: int = 32  #: input side (policy images are area-averaged down to it)
    feat: int = 64  #: encoder output size
    hidden: int = 64  #: head MLP width
    steps: int = 1500
    batch: int = 64
    lr: float = 1e-3
    min_gap: int = 3  #: temporal pairs are min_gap..max_gap steps apart (queries: 10)
    max_gap: int = 20
    completion_frames: int = 5  #: last frames of a successful demo labelled 'complete'
    random_fraction: float = 0.25  #: share of random-action frames / pairs in a batch
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size % 8 or self.size < 16:
            raise ValueError(f"LearnedRewardConfig.size={self.size}: must be a multiple of 8, >= 16")
        if not 1 <= self.min_gap <= self.max_gap:
            raise ValueError(f"LearnedRewardConfig: need 1 <= min_gap ({self.min_gap}) <= max_gap ({self.max_gap})")
        if self.steps < 0 or self.batch < 4 or self.completion_frames < 1:
            raise ValueError("LearnedRewardConfig: steps >= 0, batch >= 4 and completion_frames >= 1 are needed")
        if not 0.0 <= self.random_fraction < 1.0:
            raise ValueError(f"LearnedRewardConfig.random_fraction={self.random_fraction}: must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    """A head on the encoder's (linear) features: ReLU, then SB3's MLP with one hidden layer."""
    return nn.Sequential(nn.ReLU(), *create_mlp(inp, out, [hidden], activation_fn=nn.ReLU))


class _TermNet(nn.Module):
    """One frame encoder, three heads: progress(cur, init), completion(cur), direction(prev, cur)."""

    def __init__(self, size: int, feat: int, hidden: int):
        super().__init__()
        self.encoder = _small_cnn(3, feat, size)
        self.progress = _mlp(2 * feat, hidden, 1)
        self.completion = _mlp(feat, hidden, 1)
        self.direction = _mlp(3 * feat, hidden, 3)

    def heads(self, f_cur: torch.Tensor, f_prev: torch.Tensor, f_init: torch.Tensor):
        return (self.progress(torch.cat([f_cur, f_init], 1)).squeeze(1),
                self.completion(f_cur).squeeze(1),
                self.direction(torch.cat([f_prev, f_cur, f_cur - f_prev], 1)))


class _Videos:
    """Training videos as policy images with per-frame progress and completion targets."""

    def __init__(self, expert: Sequence[tuple[np.ndarray, bool]], random: Sequence[np.ndarray],
                 completion_frames: int, size: int):
        self.expert = [to_policy_images(f, size) for f, _ in expert]
        self.random = [to_policy_images(f, size) for f in random]
        self.progress = [np.linspace(0.0, 1.0, len(v)) for v in self.expert]
        self.complete = []
        for v, (_, ok) in zip(self.expert, expert):
            c = np.zeros(len(v))
            if ok:
                c[-completion_frames:] = 1.0
            self.complete.append(c)


class LearnedRewardModel:
    """The default backend: small CNN heads trained on expert / reversed / random-action videos."""

    kind = "vlm_reward_learned"

    def __init__(self, config: LearnedRewardConfig = LearnedRewardConfig()):
        self.config = config
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            self.net = _TermNet(config.size, config.feat, config.hidden)
        self.losses: list[float] = []

    # ---------------------------------------------------------------- training
    def fit(self, demos: Sequence[Any], random_videos: Sequence[np.ndarray] = (), steps: int | None = None,
            progress: bool = False, device: str = "auto") -> dict[str, float]:
        """Train the three heads; ``demos`` are :class:`relam.demos.Demo` or (T+1,H,W,3) expert videos
        (a raw video counts as successful), ``random_videos`` random-action videos (negatives).
        ``device``: where the steps run (``"auto"``: CUDA when torch sees it,
        :func:`relam.devices.resolve_device`); batches are drawn on the CPU and the network comes
        back to the CPU afterwards (rewards are queried there)."""
        from tqdm import tqdm

        cfg = self.config
        expert = [(np.asarray(getattr(d, "frames", d)), bool(getattr(d, "succeeded", True))) for d in demos]
        if not expert or any(len(f) < cfg.max_gap + 1 for f, _ in expert):
            raise ValueError(f"LearnedRewardModel.fit(demos=...): need expert videos of at least "
                             f"max_gap+1 = {cfg.max_gap + 1} frames")
        data = _Videos(expert, list(random_videos), cfg.completion_frames, cfg.size)
        rng = np.random.default_rng(cfg.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        n_pos = sum(c.sum() for c in data.complete)
        n_all = sum(len(c) for c in data.complete) + sum(len(v) for v in data.random)
        pos_weight = torch.tensor(float(np.clip((n_all - n_pos) / max(n_pos, 1.0), 1.0, 50.0)))
        self.net.train()
        bar = tqdm(range(cfg.steps if steps is None else int(steps)), desc="reward model", disable=not progress)
        stats: dict[str, float] = {}
        with moved_to(device, [self.net], [opt]) as dev:
            pos_weight = pos_weight.to(dev)
            for _ in bar:
                stats = self._step(data, rng, opt, pos_weight, dev)
                self.losses.append(stats["loss"])
                bar.set_postfix(loss=f"{stats['loss']:.3f}")
        self.net.eval()
        return stats

    def _sample(self, data: _Videos, rng: np.random.Generator):
        """One batch: frames (cur, prev, init) uint8 and targets (progress, completion, direction class)."""
        cfg = self.config
        cur, prev, init, prog, comp, cls = [], [], [], [], [], []
        n_rand = int(round(cfg.batch * cfg.random_fraction)) if data.random else 0
        for k in range(cfg.batch):
            if k < n_rand:
                v = data.random[rng.integers(len(data.random))]
                i = int(rng.integers(len(v)))
                j = int(np.clip(i + rng.choice([-1, 1]) * rng.integers(cfg.min_gap, cfg.max_gap + 1), 0, len(v) - 1))
                cur.append(v[j]), prev.append(v[i]), init.append(v[0])
                prog.append(0.0), comp.append(0.0), cls.append(1)
                continue
            e = int(rng.integers(len(data.expert)))
            v, p, c = data.expert[e], data.progress[e], data.complete[e]
            kind = rng.random()
            if kind < 0.15:  # static: the scene did not move
                i = j = int(rng.integers(len(v)))
            else:
                g = int(rng.integers(cfg.min_gap, cfg.max_gap + 1))
                a = int(rng.integers(0, len(v) - g))
                i, j = (a, a + g) if kind < 0.575 else (a + g, a)  # forward / reversed
            cur.append(v[j]), prev.append(v[i]), init.append(v[0])
            prog.append(p[j]), comp.append(c[j]), cls.append(int(np.sign(p[j] - p[i])) + 1)
        return (np.stack(cur), np.stack(prev), np.stack(init), torch.tensor(prog, dtype=torch.float32),
                torch.tensor(comp, dtype=torch.float32), torch.tensor(cls))

    def _step(self, data: _Videos, rng: np.random.Generator, opt: torch.optim.Optimizer,
              pos_weight: torch.Tensor, dev: torch.device | None = None) -> dict[str, float]:
        dev = dev or torch.device("cpu")
        cur, prev, init, prog, comp, cls = self._sample(data, rng)
        prog, comp, cls = prog.to(dev), comp.to(dev), cls.to(dev)
        n = len(cur)
        f = self.net.encoder(_to_float(np.concatenate([cur, prev, init])).to(dev))
        lp, lc, ld = self.net.heads(f[:n], f[n:2 * n], f[2 * n:])
        l_prog = F.binary_cross_entropy_with_logits(lp, prog)
        l_comp = F.binary_cross_entropy_with_logits(lc, comp, pos_weight=pos_weight)
        l_dir = F.cross_entropy(ld, cls)
        loss = l_prog + l_comp + l_dir
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "progress_loss": l_prog.item(), "completion_loss": l_comp.item(),
                "direction_loss": l_dir.item()}

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def terms(self, current: np.ndarray, previous: np.ndarray, initial: np.ndarray) -> RewardTerms:
        """The three terms for N queries of raw frames (N,H,W,3) uint8 (or one (H,W,3) each)."""
        cur, prev, init = (to_policy_images(_frames(x, name), self.config.size)
                           for x, name in ((current, "current"), (previous, "previous"), (initial, "initial")))
        if not len(cur) == len(prev) == len(init):
            raise ValueError(f"terms(): current/previous/initial need the same count, got {len(cur)}, "
                             f"{len(prev)}, {len(init)}")
        n = len(cur)
        f = self.net.encoder(_to_float(np.concatenate([cur, prev, init])))
        lp, lc, ld = self.net.heads(f[:n], f[n:2 * n], f[2 * n:])
        return RewardTerms(temporal=direction_from_logits(ld.numpy()),
                           progress=torch.sigmoid(lp).double().numpy(),
                           completion=(lc > 0).double().numpy())

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        return atomic_torch_save(path, {"kind": self.kind, "config": self.config.to_dict(),
                                        "net": self.net.state_dict(), "losses": self.losses})

    @classmethod
    def load(cls, path: str | Path) -> "LearnedRewardModel":
        blob = torch.load(Path(path), map_location="cpu", weights_only=False)
        if blob.get("kind") != cls.kind:
            raise ValueError(f"{path} holds a {blob.get('kind')!r} model, not {cls.kind!r}")
        model = cls(LearnedRewardConfig(**blob["config"]))
        model.net.load_state_dict(blob["net"])
        model.net.eval()
        model.losses = list(blob.get("losses", []))
        return model


def pair_directions(model: RewardModel, video: np.ndarray, gap: int = 10) -> dict[str, np.ndarray]:
    """Temporal terms on hand-made pairs of one expert video (T+1,H,W,3): frames ``gap`` apart forward
    (expect +1), the same pairs reversed (expect -1), and each frame with itself (expect 0)."""
    v = _frames(video, "video")
    if len(v) <= gap:
        raise ValueError(f"pair_directions: the video has {len(v)} frames, need more than gap={gap}")
    a, b = v[:-gap], v[gap:]
    init = np.repeat(v[:1], len(a), 0)
    return {"forward": model.terms(b, a, init).temporal, "reversed": model.terms(a, b, init).temporal,
            "static": model.terms(a, a, init).temporal}


# =============================================================================== VLM backend


class VLMWeightsMissing(FileNotFoundError):
    """The ``vlm`` backend was chosen but its local weights folder is not set or not there."""


def _check_vlm_path(model_path: str | None) -> Path:
    fix = ("put a transformers image-text-to-text model (e.g. a Qwen2.5-VL checkpoint) in a local folder and "
           "set the method setting `model_path: /that/folder` in the spec, or use the default "
           "`backend: learned` (no weights needed); nothing can be downloaded on these machines")
    if not model_path:
        raise VLMWeightsMissing(f"vlm_reward backend 'vlm' needs the setting model_path (a local folder with the "
                                f"VLM weights), but it is not set: {fix}")
    p = Path(model_path).expanduser()
    if not p.is_dir() or not (p / "config.json").exists():
        raise VLMWeightsMissing(f"vlm_reward setting model_path={model_path!r}: no model folder with a "
                                f"config.json there: {fix}")
    return p


class VLMRewardModel:
    """The paper's backend: a VLM asked the three questions of :data:`PROMPTS` for each query.

    Loaded lazily through ``transformers`` from ``model_path`` only (``local_files_only``). Greedy
    decoding of a few tokens; answers parsed with :func:`parse_direction` / :func:`parse_progress` /
    :func:`parse_completion`. Untested here beyond the missing-weights error (no weights exist on
    these machines).
    """

    def __init__(self, model_path: str | None, task: str, max_new_tokens: int = 8, device: str = "auto"):
        self.path = _check_vlm_path(model_path)
        transformers = import_extra("transformers", "pretrained", "the pretrained VLM reward backend")

        device = resolve_device(device)  # "auto": CUDA when torch sees it
        self.instruction = TASK_INSTRUCTIONS.get(task, task.replace("-v3", "").replace("-", " "))
        self.processor = transformers.AutoProcessor.from_pretrained(self.path, local_files_only=True)
        self.model = transformers.AutoModelForImageTextToText.from_pretrained(
            self.path, local_files_only=True).to(device).eval()
        self.max_new_tokens, self.device = int(max_new_tokens), device

    @torch.no_grad()
    def ask(self, images: Sequence[np.ndarray], prompt: str) -> str:
        """One question about one or more (H,W,3) uint8 frames; the decoded answer."""
        Image = import_extra("PIL.Image", "pretrained", "the pretrained VLM reward backend")

        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        text = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        inputs = self.processor(text=[text], images=[Image.fromarray(np.asarray(im)) for im in images],
                                return_tensors="pt").to(self.device)
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]

    def terms(self, current: np.ndarray, previous: np.ndarray, initial: np.ndarray) -> RewardTerms:
        cur, prev, init = _frames(current, "current"), _frames(previous, "previous"), _frames(initial, "initial")
        q = {k: v.format(task=self.instruction) for k, v in PROMPTS.items()}
        c = [parse_direction(self.ask([p, x], q["temporal"])) for p, x in zip(prev, cur)]
        p = [parse_progress(self.ask([i, x], q["progress"])) for i, x in zip(init, cur)]
        d = [parse_completion(self.ask([x], q["completion"])) for x in cur]
        return RewardTerms(np.asarray(c, np.float64), np.asarray(p, np.float64), np.asarray(d, np.float64))


def query_seconds(model: RewardModel, frames: np.ndarray, n: int = 20) -> float:
    """Seconds of one held-reward query (batch of one), the median of ``n`` timed calls."""
    f = _frames(frames, "frames")
    times = []
    for i in range(n):
        j = i % len(f)
        t0 = time.perf_counter()
        model.terms(f[j:j + 1], f[:1], f[:1])
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
