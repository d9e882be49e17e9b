"""The compared reward methods of the paper's tables (section 4.2, appendix A.4).

* :mod:`baselines.dacfo` -- DACfO, adversarial imitation from expert videos (+ the discriminator
  ensemble that labels offline datasets);
* :mod:`baselines.diffusion_reward` -- Diffusion Reward, conditional entropy of a video diffusion
  model + RND;
* :mod:`baselines.image_subgoal` -- Image Subgoal (IS) and Oracle: generated / ground-truth subgoal
  images, image-embedding similarity reward;
* :mod:`baselines.vlm_reward` -- the related paper's VLM-style three-term reward (temporal,
  progress, completion) refining a behaviour-cloning policy with PPO (``experiments/refine.yaml``);
* :mod:`baselines.common` -- what they share: frame preprocessing, RND, the batched-reward
  gymnasium wrapper and SB3 callback.

Imports are lazy (``from baselines import DACfO`` loads torch/diffusers only then), so importing
the package, e.g. for another baseline module, stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

# relam first: it keeps the unmaintained gym package (and its banner) away from stable-baselines3,
# which the baseline modules import
import relam  # noqa: F401

_EXPORTS = {
    "DACfO": "baselines.dacfo",
    "DiscriminatorEnsemble": "baselines.dacfo",
    "DiffusionReward": "baselines.diffusion_reward",
    "FrameRewardModel": "baselines.common",
    "VideoRewardWrapper": "baselines.common",
    "RolloutRewardCallback": "baselines.common",
    "VLMReward": "baselines.vlm_reward",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'baselines' has no attribute {name!r}")
