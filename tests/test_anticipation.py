"""Anticipation model: coordinates, masks, causality, overfitting, save/load, resume, multi-task,
evaluation arithmetic, clear errors and the command line. Tiny models on 64 px synthetic data."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from relam.anticipation import (
    AnticipationConfig,
    AnticipationNet,
    default_task_frames,
    denormalise_coords,
    evaluate_anticipation,
    load_anticipation,
    main,
    normalise_coords,
    prefix_causal_mask,
    shift_image,
    split_holdout,
    synthetic_subgoal_items,
    train_anticipation,
)
from relam.perception.encoders import MissingWeightsError

torch.set_num_threads(1)

SIZE = 64


def tiny(**kw) -> AnticipationConfig:
    base = dict(layers=2, width=64, heads=4, dropout=0.0, steps=400, lr=3e-3, warmup=20,
                image_size=SIZE, encoder="pixels", encoder_kwargs={"patch": 16},
                input_noise_px=0.0, log_every=25, ckpt_every=1000, max_len=8, task_grid=1)
    base.update(kw)
    return AnticipationConfig(**base)


def test_coordinate_normalisation_known_values():
    uv = np.array([[0.0, 64.0], [128.0, 32.0]])
    np.testing.assert_allclose(normalise_coords(uv, 128), [[-1, 0], [1, -0.5]])
    np.testing.assert_allclose(denormalise_coords(normalise_coords(uv, 128), 128), uv)


def test_prefix_causal_mask_known_answer():
    m = prefix_causal_mask(2, 3).int().numpy()  # 1 = may not attend
    expected = np.array([
        [0, 0, 1, 1, 1],
        [0, 0, 1, 1, 1],
        [0, 0, 0, 1, 1],
        [0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0],
    ])
    np.testing.assert_array_equal(m, expected)


def test_shift_image_moves_content_and_repeats_edges():
    img = np.arange(12).reshape(3, 4, 1)
    np.testing.assert_array_equal(shift_image(img, 1, 0)[..., 0],
                                  [[0, 0, 1, 2], [4, 4, 5, 6], [8, 8, 9, 10]])
    np.testing.assert_array_equal(shift_image(img, 0, -1)[..., 0],
                                  [[4, 5, 6, 7], [8, 9, 10, 11], [8, 9, 10, 11]])
    # a bright pixel at (u=1, v=1) moves to (u+dx, v+dy): keypoints shift the same way
    dot = np.zeros((8, 8, 1), np.uint8)
    dot[1, 1] = 255
    v, u = np.argwhere(shift_image(dot, 3, 2)[..., 0] == 255)[0]
    assert (u, v) == (4, 3)


def _net(**kw):
    torch.manual_seed(0)
    cfg = tiny(**kw)
    return AnticipationNet(cfg, token_dim=12, grid=4).eval()


def test_shapes_and_residual_bases_at_initialisation():
    net = _net()
    net.initial_base.data.fill_(0.25)
    img, tsk = torch.randn(3, 16, 12), torch.randn(3, 16, 12)
    kp = torch.rand(3, 5, 4, 2)
    coords, end = net(img, tsk, kp)
    assert coords.shape == (3, 5, 4, 2) and end.shape == (3, 5)
    # the head starts at zero: START predicts the initial base, token t predicts its input
    assert torch.allclose(coords[:, 0], torch.full((3, 4, 2), 0.25))
    assert torch.allclose(coords[:, 1:], kp[:, :-1])


@pytest.mark.parametrize("task_grid", [None, 2])
def test_causality_later_keypoints_never_change_earlier_predictions(task_grid):
    net = _net(task_grid=task_grid)
    for p in net.head[-1].parameters():  # make the head non-trivial
        torch.nn.init.normal_(p, std=0.5)
    img, tsk = torch.randn(2, 16, 12), torch.randn(2, 16, 12)
    kp = torch.rand(2, 6, 4, 2)
    c0, e0 = net(img, tsk, kp)
    for j in range(6):
        kp2 = kp.clone()
        kp2[:, j] += 0.7  # input row j feeds point token j+1, which predicts row j+1
        c1, e1 = net(img, tsk, kp2)
        assert torch.equal(c0[:, : j + 1], c1[:, : j + 1]) and torch.equal(e0[:, : j + 1],
                                                                           e1[:, : j + 1])
        if j < 5:
            assert not torch.allclose(c0[:, j + 1], c1[:, j + 1])
    # the images do reach every prediction
    c2, _ = net(img + 1.0, tsk, kp)
    assert not torch.allclose(c0[:, 0], c2[:, 0])


FRAMES = {"synth-push": np.full((SIZE, SIZE, 3), 30, np.uint8),
          "synth-lift": np.full((SIZE, SIZE, 3), 220, np.uint8)}


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """A tiny two-task model trained to memorise 3 + 3 synthetic sequences.

    Both tasks draw identical scenes (same seeds), so only the task-indication frame (given
    explicitly here) tells them apart: fitting both shows the model uses it.
    """
    push = synthetic_subgoal_items("synth-push", n=3, seed=1, size=SIZE)
    lift = synthetic_subgoal_items("synth-lift", n=3, seed=1, size=SIZE)
    for p, q in zip(push, lift):
        np.testing.assert_array_equal(p.initial_frame, q.initial_frame)
    out = tmp_path_factory.mktemp("overfit")
    model = train_anticipation(push + lift, tiny(), out, holdout=0, task_frames=FRAMES,
                               progress=False)
    return push + lift, model, out


def test_tiny_model_overfits_a_handful_of_sequences(overfit):
    items, model, out = overfit
    hist = json.loads((out / "history.json").read_text())
    assert hist["mse"][-1] < 1e-4 and hist["mse"][-1] < 0.01 * hist["mse"][0]
    metrics = evaluate_anticipation(model, items)
    assert metrics["length_accuracy"] == 1.0
    assert metrics["final_error_px"] < 1.0 and metrics["mean_error_px"] < 1.0
    for name in ("model.pt", "checkpoint.pt", "loss.png", "split.json"):
        assert (out / name).exists()


def test_multi_task_model_separates_tasks_by_the_task_frame(overfit):
    items, model, _ = overfit
    m = evaluate_anticipation(model, items)
    for task in ("synth-push", "synth-lift"):
        assert m["by_task"][task]["final_error_px"] < 1.5
    push0, lift0 = items[0], items[3]
    a = model.generate(push0.initial_frame, "synth-push")
    b = model.generate(push0.initial_frame, "synth-lift")
    assert len(a) == len(push0.keypoints) and len(b) == len(lift0.keypoints)
    assert np.abs(b - lift0.keypoints).max() < 4.0


def test_generate_keeps_no_tokens_of_the_frames_it_plans_from(overfit):
    """An RL run plans from a new first frame at every reset: the model must not keep their tokens
    (thousands per run; 0.8 MB each with DINOv2), and a frame's plan is the same either way."""
    items, model, _ = overfit
    before = len(model._cache)
    plans = [model.generate(it.initial_frame, it.task) for it in items]
    assert len(model._cache) == before
    model.tokens(np.stack([it.initial_frame for it in items]))  # now cached: the same plans
    for it, plan in zip(items, plans):
        np.testing.assert_array_equal(model.generate(it.initial_frame, it.task), plan)


def test_save_load_gives_identical_predictions(overfit, tmp_path):
    items, model, _ = overfit
    model.save(tmp_path / "m.pt")
    again = load_anticipation(tmp_path / "m.pt")
    for it in items[:2] + items[-1:]:
        np.testing.assert_array_equal(model.generate(it.initial_frame, it.task),
                                      again.generate(it.initial_frame, it.task))
    with pytest.raises(ValueError, match="synth-push"):
        again.generate(items[0].initial_frame, "door-open-v3")
    with pytest.raises(FileNotFoundError, match="relam.anticipation train"):
        load_anticipation(tmp_path / "missing.pt")


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    items = synthetic_subgoal_items("synth-lift", n=3, seed=2, size=SIZE)
    kw = dict(ckpt_every=5, dropout=0.1, input_noise_px=0.5, log_every=5)
    straight = train_anticipation(items, tiny(steps=15, **kw), tmp_path / "a", holdout=0,
                                  progress=False)
    train_anticipation(items, tiny(steps=10, **kw), tmp_path / "b", holdout=0, progress=False)
    resumed = train_anticipation(items, tiny(steps=15, **kw), tmp_path / "b", holdout=0,
                                 progress=False)
    for (k, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    with pytest.raises(ValueError, match="different config"):
        train_anticipation(items, tiny(steps=40, width=32), tmp_path / "b", holdout=0,
                           progress=False)


def test_missing_dinov2_weights_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("RELAM_DINOV2_PATH", raising=False)
    items = synthetic_subgoal_items("synth-lift", n=3, size=SIZE)
    cfg = tiny(encoder="dinov2", encoder_kwargs={}, encoder_path=str(tmp_path / "nowhere"))
    with pytest.raises(MissingWeightsError, match="nowhere"):
        train_anticipation(items, cfg, tmp_path / "out", holdout=0, progress=False)


def test_bad_data_is_named():
    items = synthetic_subgoal_items("synth-lift", n=3, size=SIZE, num_points=4)
    with pytest.raises(ValueError, match="num_points"):
        train_anticipation(items, tiny(num_points=8), None, holdout=0, progress=False)
    with pytest.raises(ValueError, match="holdout"):
        split_holdout(items, 3)


def test_split_and_task_frames_are_deterministic():
    items = synthetic_subgoal_items("synth-push", n=5, size=SIZE) + \
        synthetic_subgoal_items("synth-lift", n=4, size=SIZE)
    train, held = split_holdout(items[::-1], 2)
    assert sorted((i.task, i.seed) for i in held) == [("synth-lift", 2), ("synth-lift", 3),
                                                      ("synth-push", 3), ("synth-push", 4)]
    frames = default_task_frames(train)
    np.testing.assert_array_equal(frames["synth-push"], items[0].initial_frame)


class _Fixed:
    """A stand-in model with known predictions, to check the evaluation arithmetic."""

    def __init__(self, preds):
        self.preds = preds

    def generate(self, frame, task):
        return self.preds[task]

    def teacher_forced(self, item):
        return np.asarray(item.keypoints) + 1.0  # off by (1, 1): sqrt(2) px


def test_evaluation_known_answers():
    true = np.zeros((3, 2, 2), np.float32)  # S = 2
    frame = np.zeros((SIZE, SIZE, 3), np.uint8)
    a = SimpleNamespace(task="a", seed=0, initial_frame=frame, keypoints=true)
    b = SimpleNamespace(task="b", seed=0, initial_frame=frame, keypoints=true)
    pred_a = true.copy()
    pred_a[2] += [3.0, 4.0]  # final row off by 5 px
    pred_b = np.zeros((2, 2, 2), np.float32)  # one subgoal short, final row = true row 1
    pred_b[1, 0] = [6.0, 8.0]  # one point off by 10 px -> mean 5
    m = evaluate_anticipation(_Fixed({"a": pred_a, "b": pred_b}), [a, b])
    assert m["per_stage_error_px"] == pytest.approx([0.0, 2.5, 5.0])
    assert m["per_stage_count"] == [2, 2, 1]
    assert m["final_error_px"] == pytest.approx(5.0)
    assert m["length_accuracy"] == 0.5
    assert m["teacher_forced_error_px"] == pytest.approx([np.sqrt(2)] * 3)
    assert m["by_task"]["b"]["length_accuracy"] == 0.0


def test_command_line_train_and_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--synthetic", "--n-demos", "6", "--holdout", "2", "--image-size", str(SIZE)]
    assert main(["train", "synth-lift", *args, "--out", str(out), "--scale", "smoke",
                 "--steps", "20", "--encoder", "pixels"]) == 0
    assert main(["evaluate", str(out), *args]) == 0
    printed = capsys.readouterr().out
    assert "final_error_px" in printed
    metrics = json.loads((out / "eval_metrics.json").read_text())
    assert metrics["n"] == 2 and (out / "eval_predictions.png").exists()


def test_training_runs_on_the_threads_it_is_given_and_restores_torchs(tmp_path, monkeypatch):
    """One torch thread while training by default (the small batches stall on oversubscribed
    cores otherwise), ``threads=None`` keeps torch's setting, and the caller's setting comes back."""
    import relam.anticipation.training as training

    items = synthetic_subgoal_items("synth-lift", n=3, seed=2, size=SIZE)
    seen = []
    real = training._train

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "_train", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        training.train_anticipation(items, tiny(steps=2), tmp_path / "a", holdout=0, progress=False,
                                    evaluate=False)
        assert torch.get_num_threads() == 2
        training.train_anticipation(items, tiny(steps=2), tmp_path / "b", holdout=0, progress=False,
                                    evaluate=False, threads=None)
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]
