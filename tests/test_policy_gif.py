"""`relam gif`: a trained ReLAM policy's evaluation episodes with its keypoints and subgoals drawn
(relam/policy_gif.py, drawing in relam/overlay.py), and the report page that embeds it."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import yaml
from PIL import Image, ImageSequence

from relam import cli
from relam.experiments import ResultStore, expand, load_spec, run_spec
from relam.experiments.report_page import render_page
from relam.overlay import _COLORS, draw_policy_frame, gif_bytes
from relam.policy_gif import PolicyGifError, default_gif_path, find_policy_run, load_policy


def _frames(data: bytes) -> list[np.ndarray]:
    return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(io.BytesIO(data)))]


# --- drawing -----------------------------------------------------------------------------------
def test_frame_marks_keypoints_targets_and_stage():
    frame = np.full((32, 32, 3), 90, np.uint8)
    kp = np.array([[5.0, 5.0], [26.0, 8.0]])
    plan = np.array([kp, [[10.0, 12.0], [20.0, 10.0]], [[15.0, 16.0], [12.0, 17.0]]])  # start + 2 subgoals (off the corner boxes)
    img = draw_policy_frame(frame, kp, plan, stage=0, success=False, step=7, scale=4)
    assert img.shape == (128, 128, 3)
    px = lambda uv: tuple(int(v) for v in np.rint((np.asarray(uv) + 0.5) * 4 - 0.5))  # noqa: E731
    for i in range(2):  # a disc of the keypoint's colour where it is, a cross of that colour on subgoal 1
        x, y = px(kp[i])
        assert (img[y, x] == _COLORS[i]).all()
        x, y = px(plan[1, i])
        assert (img[y, x] == _COLORS[i]).all()
    # stage 1: the cross moves to subgoal 2; the old target keeps only the plan's thin line
    img1 = draw_policy_frame(frame, kp, plan, stage=1, success=True, step=8, scale=4)
    x, y = px(plan[2, 0])
    assert (img1[y, x] == _COLORS[0]).all() and not (img[y, x] == _COLORS[0]).all()
    # the corner text differs between the two (step, stage, success)
    assert not np.array_equal(img[-40:, :60], img1[-40:, :60])


def test_gif_keeps_the_marker_colours_exactly():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(3)]
    for i, f in enumerate(frames):
        f[:4, :4] = _COLORS[i]  # a marker on a noisy scene (a median cut alone would blur it)
    out = _frames(gif_bytes(frames, fps=5))
    assert len(out) == 3
    for i, f in enumerate(out):
        assert (f[:4, :4] == _COLORS[i]).all()
    assert Image.open(io.BytesIO(gif_bytes(frames, fps=5))).info["duration"] == 200


# --- finding the run -------------------------------------------------------------------------
@pytest.fixture()
def spec(tmp_path, monkeypatch):
    """A one-cell-per-method points-only spec: ReLAM with ground-truth subgoals (no anticipation
    model to train), and Random, on drawer-open with 30-step episodes."""
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RELAM_SCALE", raising=False)
    budget = {"train_steps": 128, "eval_every": 64, "eval_episodes": 1, "n_demos": 3, "horizon": 30,
              "policy_input": "points", "n_envs": 2, "log_std_init": -0.5}
    data = {"name": "gifspec", "title": "GIF", "report": "table", "tasks": ["drawer-open-v3"],
            "methods": [{"label": "ReLAM (gt)", "method": "relam", "settings": {"subgoals": "ground_truth"}},
                        {"label": "Random", "method": "random", "reference": True}],
            "seeds": [0], "budgets": {"metaworld": {s: budget for s in ("smoke", "quick", "paper")}}}
    path = tmp_path / "gifspec.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


def test_errors_name_what_is_missing_and_the_command(spec):
    with pytest.raises(PolicyGifError, match="has no record yet") as e:
        find_policy_run(spec, "smoke")
    assert e.value.fix == f"train it first: relam run {spec.name} --scale smoke --tasks drawer-open-v3 " \
                          "--methods 'ReLAM (gt)' --seeds 0"
    with pytest.raises(PolicyGifError, match="method 'random'"):
        find_policy_run(spec, "smoke", label="Random")
    with pytest.raises(PolicyGifError, match="not a seed"):
        find_policy_run(spec, "smoke", seed=4)
    with pytest.raises(PolicyGifError, match="not in spec"):
        find_policy_run(spec, "smoke", task="door-open-v3")
    [run] = [r for r in expand(spec, "smoke") if r.method == "relam"]
    store = ResultStore()
    store.put({"key": run.key, "status": "failed", "error": "RuntimeError: boom"})
    with pytest.raises(PolicyGifError, match="failed: RuntimeError: boom") as e:
        find_policy_run(spec, "smoke")
    assert e.value.fix.endswith("--retry-failed")
    store.put({"key": run.key, "status": "ok", "success": 0.0, "curve": []})  # an imported record
    with pytest.raises(PolicyGifError, match="no checkpoint") as e:
        find_policy_run(spec, "smoke")
    assert str(store.record_path(run.key)) in e.value.fix


def test_cli_error_is_two_lines(spec, capsys):
    assert cli.main(["gif", str(spec.path), "--method", "Random"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "ReLAM's keypoints" in err[0] and "ReLAM (gt)" in err[1]


# --- a real run, its GIF and the report ----------------------------------------------------------
def test_gif_of_a_trained_run_replays_its_evaluation_env_and_lands_in_the_report(spec, tmp_path, capsys):
    from relam.policy_gif import run_context
    from relam.reward import RewardSettings
    from relam.rl.evaluation import eval_seeds, run_episode
    from relam.relam_method import make_planner
    from relam.wrappers import make_relam_env

    summary = run_spec(spec, "smoke", progress=False)
    assert all(r["status"] == "ok" for r in summary.records.values()), summary.failed()
    assert cli.main(["gif", str(spec.path), "--episodes", "2", "--px", "2", "--fps", "10"]) == 0
    out = capsys.readouterr().out
    run, rec, ckpt = find_policy_run(spec, "smoke")
    gif = default_gif_path(spec, "smoke", run.task, run.label, run.seed)
    assert f"written: {gif}" in out
    meta = json.loads(gif.with_suffix(".json").read_text())
    assert meta["key"] == run.key and meta["checkpoint_steps"] == 128
    assert [e["seed"] for e in meta["episodes"]] == eval_seeds(2)
    # the GIF's episodes are those of the run's own (points-only, unrendered) environment
    model = load_policy(ckpt)
    ctx = run_context(run, ckpt.parent)
    env = make_relam_env(ctx.task_spec(), make_planner(ctx), settings=RewardSettings(), n_points=4,
                         include_image=False)
    try:
        for ep in meta["episodes"]:
            ok, ret, n, stage = run_episode(lambda o: model.predict(o, deterministic=True)[0], env, ep["seed"])
            assert (ok, n, stage) == (ep["success"], ep["length"], ep["stage"]) and ret == pytest.approx(ep["return"], abs=1e-3)
    finally:
        env.close()
    frames = _frames(gif.read_bytes())
    assert frames[0].shape == (256, 256, 3)  # 128 px frames, twice
    assert len(frames) >= 2 * 30  # 30 steps + the reset frame per episode (held frames may merge)
    assert not np.array_equal(frames[1], frames[25])  # the arm moves

    # the report embeds it, once, with the run key
    page = render_page(spec, "smoke", out_dir=tmp_path / "rep", reps=50).html
    [b64] = re.findall(r'src="data:image/gif;base64,([A-Za-z0-9+/=]+)"', page)
    assert base64.b64decode(b64) == gif.read_bytes()
    assert f"run <code>{run.key}</code>" in page and "The trained policy" in page
    # a GIF of another run of the cell is named, not shown
    meta["key"] = "0123456789abcdef"
    gif.with_suffix(".json").write_text(json.dumps(meta))
    page = render_page(spec, "smoke", out_dir=tmp_path / "rep", reps=50).html
    assert "data:image/gif" not in page and "shows run <code>0123456789abcdef</code>" in page
    assert "No GIF yet" in page


def test_policy_env_feeds_the_image_the_training_loop_gave(tmp_path):
    """Meta-World image + points runs train on a 64 px render (make_relam_env's "auto"), so the
    GIF's policy gets the same, not the area-averaged 128 px frame."""
    from relam.methods import Budget, RunContext, get_method
    from relam.policy_gif import policy_env

    method = get_method("relam")
    ctx = RunContext(task="drawer-open-v3", method="relam", settings=method.Settings(subgoals="ground_truth"),
                     seed=0, budget=Budget(train_steps=10, eval_every=10, eval_episodes=1, horizon=5,
                                           policy_input="image+points"),
                     scale="smoke", out_dir=tmp_path)
    env, wrapper = policy_env(ctx)
    try:
        assert env.source == "render"
        obs, _ = env.reset(seed=1000000)
        assert obs["image"].shape == (3, 64, 64)
    finally:
        env.close()
