"""Anticipation model: predicts a task's keypoint subgoals from its first frame (paper 3.1.2).

What the model sees and says
----------------------------
Input: the *initial frame* of an episode and the task's *task-indication frame*, both turned into
patch tokens by a frozen image encoder (:mod:`relam.perception.encoders`). Output, generated
autoregressively: row 0 = the keypoints in the initial frame, rows 1..S = the keypoints at each
keyframe (the subgoals), and when to stop.

Token sequence (one transformer, prefix + causal)::

    [initial-frame patches | task-frame patches | START | kp_0 | kp_1 | ... | kp_{S-1}]
     \\_________ image prefix, bidirectional ____/ \\______ causal point tokens ______/

Image tokens attend to each other only; point token t attends to every image token and to point
tokens <= t. The output at point token t predicts row t (START predicts row 0, the initial
keypoints; kp_{t-1} predicts row t) as a *residual*: ``row_t = base_t + head(h_t)`` where base is
the input coordinates of that token, and for START a learned initial configuration (initialised
to the training mean of row 0). Coordinates are normalised, ``c = uv / size * 2 - 1``, and the
N points are flattened into one token through an MLP.

Choices the paper leaves open (documented here, all in :class:`AnticipationConfig`):

* *End of sequence*: the head has one extra logit per point token, "the row predicted here is the
  last one", trained with BCE (weight ``end_weight``). Generation stops at the first row whose
  end probability exceeds 0.5, or at ``max_len`` rows.
* *Task-indication frame*: the initial frame of the task's demo with the smallest seed in the
  training set (constant within a task, stored in the checkpoint). A caller may pass its own.
* *Learning rate*: lost in the paper's extraction; we use AdamW 3e-4 (weight decay 0.01), 100
  warm-up steps then cosine decay to 10%, gradient clipping at 1.0.
* *Exposure bias*: teacher-forced input coordinates get Gaussian noise of ``input_noise_px``
  pixels during training so that generation tolerates its own small errors.
* *Image position*: fixed 2-D sine-cosine position embeddings on patch tokens plus a learned
  embedding saying which of the two frames a token comes from.

Training is MSE on the normalised coordinates with teacher forcing (batch size 8 as in the
paper). See ``relam anticipation --help`` (or ``python -m relam.anticipation --help``) for the command line.

The package, one job a module (imports go down this list only):

* :mod:`~relam.anticipation.config` -- :class:`AnticipationConfig` and the per-scale :data:`BUDGETS`;
* :mod:`~relam.anticipation.data` -- coordinates, masks, shifts, the held-out split, item checks;
* :mod:`~relam.anticipation.net` -- :class:`AnticipationNet`, the transformer;
* :mod:`~relam.anticipation.model` -- :class:`AnticipationModel` (net + encoder + task frames), saved
  and loaded with :func:`load_anticipation`;
* :mod:`~relam.anticipation.evaluation` and :mod:`~relam.anticipation.plots` -- held-out errors and
  pictures;
* :mod:`~relam.anticipation.training` -- :func:`train_anticipation`;
* :mod:`~relam.anticipation.synthetic` -- procedural stand-in sequences;
* :mod:`~relam.anticipation.cli` -- the command line.
"""
from __future__ import annotations

from relam.anticipation.cli import main
from relam.anticipation.config import BUDGETS, AnticipationConfig
from relam.anticipation.data import (default_task_frames, denormalise_coords, normalise_coords, prefix_causal_mask,
                                     shift_image, split_holdout)
from relam.anticipation.evaluation import evaluate_anticipation
from relam.anticipation.model import AnticipationModel, load_anticipation
from relam.anticipation.net import AnticipationNet
from relam.anticipation.plots import plot_loss_curve, plot_predictions
from relam.anticipation.synthetic import SyntheticSequence, synthetic_subgoal_items
from relam.anticipation.training import train_anticipation

__all__ = [
    "AnticipationConfig",
    "BUDGETS",
    "AnticipationNet",
    "AnticipationModel",
    "train_anticipation",
    "load_anticipation",
    "evaluate_anticipation",
    "plot_loss_curve",
    "plot_predictions",
    "split_holdout",
    "shift_image",
    "default_task_frames",
    "normalise_coords",
    "denormalise_coords",
    "prefix_causal_mask",
    "SyntheticSequence",
    "synthetic_subgoal_items",
    "main",
]
