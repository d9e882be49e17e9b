"""Text-prompted segmentation: image + prompt -> boolean mask (the "S" of Eq. 1).

The paper runs EVF-SAM (a text-grounded SAM) on the first frame of each demonstration with prompts
such as "robot arm" and "green drawer". Here two backends share one small interface:

- ``SimSegmenter`` (default, no weights): reads the simulator's own segmentation. With a live env it
  calls ``env.prompt_mask(prompt)``; for a stored demo it maps the prompt to simulator body names
  through ``TaskSpec.prompts`` and those names to indices of ``demo.body_names`` in
  ``demo.body_seg``. It is the "perfect SAM" stand-in that makes the rest of the pipeline testable.
- ``EvfSamSegmenter(weights_path)``: EVF-SAM from a local checkpoint folder; the package is imported
  only when this backend is built, and a missing path or package gives an error saying how to fix it.

``make_segmenter(name, **kw)`` builds one by name (the name goes into the settings hash).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from relam.devices import resolve_device

__all__ = [
    "Segmenter",
    "SimSegmenter",
    "EvfSamSegmenter",
    "make_segmenter",
    "list_segmenters",
    "SEGMENTERS",
]


@runtime_checkable
class Segmenter(Protocol):
    """image (H,W,3) uint8 + text prompt -> (H,W) bool mask.

    ``env`` / ``demo`` / ``t`` give simulator backends access to ground truth; image models ignore
    them.
    """

    name: str

    def segment(
        self, image: np.ndarray, prompt: str, *, env: Any = None, demo: Any = None, t: int = 0
    ) -> np.ndarray: ...


class SimSegmenter:
    """Segmentation from the simulator (ground truth), the default backend.

    ``prompts`` optionally overrides the prompt -> body-names mapping (otherwise
    ``relam.tasks.get_task(demo.task).prompts``); handy for hand-built demos in tests.
    """

    name = "sim"

    def __init__(self, prompts: Mapping[str, Sequence[str]] | None = None) -> None:
        self.prompts = None if prompts is None else {k: tuple(v) for k, v in prompts.items()}

    def _bodies_for(self, prompt: str, task: str) -> tuple[str, ...]:
        prompts = self.prompts
        if prompts is None:
            from relam.tasks import get_task

            prompts = get_task(task).prompts
        if prompt not in prompts:
            raise ValueError(
                f"SimSegmenter: prompt {prompt!r} is not declared for task {task!r}; known prompts: "
                f"{sorted(prompts)} (add it to the task's `prompts` in relam/tasks.yaml)"
            )
        return tuple(prompts[prompt])

    def segment(
        self, image: np.ndarray, prompt: str, *, env: Any = None, demo: Any = None, t: int = 0
    ) -> np.ndarray:
        if env is not None:
            return np.asarray(env.prompt_mask(prompt), dtype=bool)
        if demo is None:
            raise ValueError(
                "SimSegmenter.segment needs env= (a live TaskEnv) or demo= (a stored Demo): it reads "
                "the simulator's segmentation, not the image; use make_segmenter('evf-sam', "
                "weights_path=...) to segment plain images"
            )
        names = self._bodies_for(prompt, demo.task)
        body_names = list(demo.body_names)
        missing = [n for n in names if n not in body_names]
        if missing:
            raise ValueError(
                f"SimSegmenter: bodies {missing} of prompt {prompt!r} are not in demo.body_names "
                f"{tuple(body_names)}; regenerate the demos after changing the task's prompts"
            )
        idx = [body_names.index(n) for n in names]
        return np.isin(np.asarray(demo.body_seg[t]), idx)


class EvfSamSegmenter:
    """EVF-SAM (Zhang et al., 2024) from a local checkpoint folder; the paper's segmenter.

    No weights can be downloaded at run time, so ``weights_path`` must name a folder holding the
    Hugging Face checkpoint (e.g. ``YxZhang/evf-sam2``, copied from a machine with network access).
    The EVF-SAM code (github.com/hustvl/EVF-SAM, importable as ``evf_sam``) and torchvision are
    needed; they are not installed by default because PyPI's torchvision breaks this project's CPU
    torch (see ENVIRONMENT.md) -- install them in a separate environment.
    """

    name = "evf-sam"

    def __init__(self, weights_path: str | Path | None = None, device: str = "auto",
                 model_type: str = "sam2") -> None:
        if weights_path is None:
            raise ValueError(
                "EvfSamSegmenter needs weights_path= (a local EVF-SAM checkpoint folder, e.g. a copy "
                "of Hugging Face YxZhang/evf-sam2); use segmenter 'sim' to run without weights"
            )
        path = Path(weights_path).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"EvfSamSegmenter: weights_path {str(path)!r} does not exist. Copy the EVF-SAM "
                f"checkpoint folder (e.g. Hugging Face YxZhang/evf-sam2) there from a machine with "
                f"network access, or use segmenter 'sim', which needs no weights"
            )
        try:
            import evf_sam  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "EvfSamSegmenter: the EVF-SAM package `evf_sam` is not installed. Install the code "
                "from https://github.com/hustvl/EVF-SAM (plus torchvision matching your torch) in an "
                "environment where torchvision imports, or use segmenter 'sim'"
            ) from exc
        self.weights_path = path
        self.device = resolve_device(device)  # "auto": CUDA when torch sees it
        self.model_type = model_type
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:  # pragma: no cover - needs the weights
        import torch

        from relam.versions import import_extra

        AutoTokenizer = import_extra("transformers", "pretrained", "the 'evf-sam' segmenter").AutoTokenizer

        if self.model_type == "sam2":
            from evf_sam.model.evf_sam2 import EvfSam2Model as Model
        else:
            from evf_sam.model.evf_sam import EvfSamModel as Model
        self._tokenizer = AutoTokenizer.from_pretrained(
            str(self.weights_path), padding_side="right", use_fast=False
        )
        model = Model.from_pretrained(str(self.weights_path), low_cpu_mem_usage=True,
                                      torch_dtype=torch.float32)
        self._model = model.eval().to(self.device)

    def segment(
        self, image: np.ndarray, prompt: str, *, env: Any = None, demo: Any = None, t: int = 0
    ) -> np.ndarray:  # pragma: no cover - needs the weights
        import torch
        from evf_sam.inference import beit3_preprocess, sam_preprocess

        if self._model is None:
            self._load()
        img = np.asarray(image, dtype=np.uint8)
        model = self._model
        with torch.no_grad():
            beit = beit3_preprocess(img, 224).to(dtype=model.dtype, device=model.device)
            sam, resize = sam_preprocess(img, model_type=self.model_type)
            sam = sam.to(dtype=model.dtype, device=model.device)
            ids = self._tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)
            pred = model.inference(sam.unsqueeze(0), beit.unsqueeze(0), ids,
                                   resize_list=[resize], original_size_list=[img.shape[:2]])
        return pred.detach().cpu().numpy()[0] > 0


SEGMENTERS: dict[str, Callable[..., Segmenter]] = {
    "sim": SimSegmenter,
    "evf-sam": EvfSamSegmenter,
}


def list_segmenters() -> list[str]:
    return sorted(SEGMENTERS)


def make_segmenter(name: str = "sim", **kwargs: Any) -> Segmenter:
    """Build a segmenter by registry name ("sim" | "evf-sam"); kwargs go to its constructor."""
    if name not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {name!r}; known: {list_segmenters()}")
    return SEGMENTERS[name](**kwargs)
