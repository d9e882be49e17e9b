"""Policy and critic inputs of appendix A.3: image CNN + keypoint MLP, concatenated.

The paper: "For image o we utilize a three-layer CNN network as encoder. For the points p and g we
flatten and feed them into a MLP to get point representation. The image and point features are
concatenated together and sent into another MLP."  The concatenation is the features extractor
below; "another MLP" is SB3's ``net_arch`` on top of it (separate heads for actor and critic).

The sizes were lost from the paper's table (appendix C); ours, and why:

- CNN channels (32, 64, 64), kernels (8, 4, 3), strides (4, 2, 1): the DQN/Nature encoder, the
  common three-layer choice for 64-84 px control images; at 64 px it leaves a 64 x 4 x 4 map.
  A linear layer maps it to ``image_dim = 256``.
- point MLP (128, 128) with ReLU on the 4N coordinates (current and target): small, since the
  input is 16 numbers for N = 4.
- ``net_arch`` (256, 256) for both heads (set in :class:`relam.rl.ppo.PPOSettings`).

Observations without an ``image`` entry (the points-only fast loop) skip the CNN; observations with
only an ``image`` entry (image-only reward baselines sharing this PPO) skip the point MLP.
"""

from __future__ import annotations

from typing import Sequence

import gymnasium as gym
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

__all__ = ["KeypointImageExtractor", "conv_output_size"]


def conv_output_size(size: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Side of the feature map after valid convolutions (no padding)."""
    for k, s in zip(kernels, strides):
        size = (size - k) // s + 1
        if size < 1:
            raise ValueError(
                f"policy CNN: kernels {tuple(kernels)} / strides {tuple(strides)} shrink the image to "
                "nothing; use a larger policy_image_size or smaller kernels"
            )
    return size


class KeypointImageExtractor(BaseFeaturesExtractor):
    """Features = concat(CNN(image), MLP(keypoints, target)) for a Dict observation.

    Expects keys ``image`` (C, H, W) (SB3 divides uint8 images by 255 before this module),
    ``keypoints`` and ``target`` (flattened normalised points); an optional ``proprio`` vector
    (:class:`relam.wrappers.RobotProprio`) joins the points' MLP input.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        cnn_channels: Sequence[int] = (32, 64, 64),
        cnn_kernels: Sequence[int] = (8, 4, 3),
        cnn_strides: Sequence[int] = (4, 2, 1),
        image_dim: int = 256,
        point_hidden: Sequence[int] = (128, 128),
    ):
        if not isinstance(observation_space, gym.spaces.Dict):
            raise ValueError("KeypointImageExtractor needs a Dict observation space")
        keys = set(observation_space.spaces)
        has_points = {"keypoints", "target"} <= keys
        if not has_points and ({"keypoints", "target"} & keys or "image" not in keys):
            raise ValueError(
                "KeypointImageExtractor: the observation needs both 'keypoints' and 'target' entries, "
                f"or only an 'image' entry (image-only baselines); got {sorted(keys)}"
            )
        if not (len(cnn_channels) == len(cnn_kernels) == len(cnn_strides)):
            raise ValueError("KeypointImageExtractor: cnn_channels, cnn_kernels, cnn_strides must have equal lengths")
        has_image = "image" in observation_space.spaces
        self.point_keys = [k for k in ("keypoints", "target", "proprio") if k in keys] if has_points else []
        n_point_in = sum(int(observation_space[k].shape[0]) for k in self.point_keys)
        point_out = (int(point_hidden[-1]) if point_hidden else n_point_in) if has_points else 0
        features_dim = point_out + (int(image_dim) if has_image else 0)
        super().__init__(observation_space, features_dim)

        self.point_mlp: nn.Module | None = None
        if has_points:
            layers: list[nn.Module] = []
            prev = n_point_in
            for h in point_hidden:
                layers += [nn.Linear(prev, int(h)), nn.ReLU()]
                prev = int(h)
            self.point_mlp = nn.Sequential(*layers) if layers else nn.Identity()

        self.cnn: nn.Module | None = None
        if has_image:
            c, h, w = observation_space["image"].shape
            conv: list[nn.Module] = []
            prev_c = c
            for ch, k, s in zip(cnn_channels, cnn_kernels, cnn_strides):
                conv += [nn.Conv2d(prev_c, int(ch), int(k), int(s)), nn.ReLU()]
                prev_c = int(ch)
            side_h = conv_output_size(h, cnn_kernels, cnn_strides)
            side_w = conv_output_size(w, cnn_kernels, cnn_strides)
            conv += [nn.Flatten(), nn.Linear(prev_c * side_h * side_w, int(image_dim)), nn.ReLU()]
            self.cnn = nn.Sequential(*conv)

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        feats = []
        if self.cnn is not None:
            feats.append(self.cnn(observations["image"]))
        if self.point_mlp is not None:
            feats.append(self.point_mlp(th.cat([observations[k] for k in self.point_keys], dim=1)))
        return th.cat(feats, dim=1)
