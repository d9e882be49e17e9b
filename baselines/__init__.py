"""The compared reward methods of the paper's tables (section 4.2, appendix A.4).

* :mod:`baselines.dacfo` -- DACfO, adversarial imitation from expert videos (+ the discriminator
  ensemble that labels offline datasets);
* :mod:`baselines.diffusion_reward` -- Diffusion Reward, conditional entropy of a video diffusion
  model + RND;
* :mod:`baselines.image_subgoal` -- Image Subgoal (IS) and Oracle: generated / ground-truth subgoal
  images, image-embedding similarity reward (the generator in :mod:`baselines.is_generator`, the
  planners, reward, wrapper and labeller in :mod:`baselines.is_reward`, the embeddings in
  :mod:`baselines.embedding`);
* :mod:`baselines.vlm_reward` -- the related paper's VLM-style three-term reward (temporal,
  progress, completion) refining a behaviour-cloning policy with PPO (``experiments/refine.yaml``;
  the reward models in :mod:`baselines.vlm_models`, their training, BC and the refinement PPO in
  :mod:`baselines.vlm_training`);
* :mod:`baselines.common` -- what the video-reward baselines share: frame preprocessing, RND, the
  frame-reward-model interface, the batched-reward gymnasium wrapper and SB3 callback;
* :mod:`baselines.runs` -- one Table 4 cell: PPO with a frame reward model, or the offline path;
* :mod:`baselines.evaluation` -- reward measures before training: random-action videos, expert-vs-
  random AUC, offline reward sanity.

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
