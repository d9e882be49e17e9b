"""The harness follows its ecosystem's conventions: ``python -m relam``, no gym banner, the tasks
as gymnasium ids, and TensorBoard logs through SB3's logger (an optional extra; asking for them
without it is one clear error naming the extra)."""
from __future__ import annotations

import subprocess
import sys
import tomllib

import gymnasium
import numpy as np
import pytest
import yaml
from test_iql import SMALL, tiny_dataset
from test_ppo import CountEnv

from relam import cli
from relam.cache import REPO_ROOT
from relam.registration import env_id
from relam.rl.iql import IQLSettings, train_iql
from relam.rl.ppo import PPOSettings, train_ppo
from relam.tasks import TaskError, get_task, list_tasks
from relam.tblog import EXTRA, INSTALL_HINT, TensorBoardMissing, tensorboard_available

BANNER = "Gym has been unmaintained"
GYM_INSTALLED = subprocess.run([sys.executable, "-c", "import importlib.util as u; "
                                "raise SystemExit(u.find_spec('gym') is None)"]).returncode == 0


def _python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def test_python_dash_m_relam_is_the_command_line():
    p = _python("-m", "relam", "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: relam ") and all(c in p.stdout for c in ("report", "export", "import"))
    bad = _python("-m", "relam", "table", "no-such-spec")
    assert bad.returncode == 2 and bad.stderr.startswith("relam table: error:")


def test_no_gym_banner_from_relam_commands_or_sb3():
    """`relam status` imports the methods (and with them stable-baselines3, which tries `import gym`)."""
    for args in (["-m", "relam", "status", "table4"],
                 ["-c", "import relam.rl.ppo, stable_baselines3.common.utils as u; u.get_system_info(False)"]):
        p = _python(*args)
        assert p.returncode == 0, p.stderr
        assert BANNER not in p.stderr and BANNER not in p.stdout
    if GYM_INSTALLED:  # the check can fail: without the hiding, the same import prints the banner
        p = _python("-c", "import relam.rl.ppo", env={"RELAM_ALLOW_GYM": "1"})
        assert BANNER in p.stderr
    hidden = _python("-c", "import relam, gym")
    assert hidden.returncode == 1 and "RELAM_ALLOW_GYM=1" in hidden.stderr


def test_every_task_is_a_gymnasium_id():
    import relam  # noqa: F401  (registers on import)

    for task in list_tasks():
        spec = gymnasium.spec(env_id(task))
        assert spec.kwargs == {"task": task} and spec.max_episode_steps == get_task(task).horizon
    env = gymnasium.make("relam/drawer-open-v3")
    try:
        obs, info = env.reset(seed=3)
        assert obs.shape == (get_task("drawer-open-v3").image_size,) * 2 + (3,) and obs.dtype == np.uint8
        obs2, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert "success" in info and not terminated and not truncated
        assert env.unwrapped.task.name == "drawer-open-v3"
    finally:
        env.close()
    with pytest.raises(TaskError, match="only 'rgb_array'"):
        gymnasium.make("relam/drawer-open-v3", render_mode="human")


def test_tensorboard_is_an_optional_extra():
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    [req] = meta["optional-dependencies"][EXTRA]
    assert req.startswith("tensorboard==")
    assert not any(d.startswith("tensorboard") for d in meta["dependencies"])
    assert f"relam[{EXTRA}]" in INSTALL_HINT


@pytest.mark.skipif(tensorboard_available(), reason="tensorboard is installed")
def test_asking_for_tensorboard_without_it_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RELAM_TENSORBOARD", raising=False)
    spec = tmp_path / "tb.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tb", "title": "tb", "report": "table", "tasks": ["drawer-open-v3"],
        "methods": [{"label": "S", "method": "synthetic"}], "seeds": [0],
        "budgets": {"metaworld": {s: {"train_steps": 20, "eval_every": 10, "eval_episodes": 1}
                                  for s in ("smoke", "quick", "paper")}}}))
    assert cli.main(["run", str(spec), "--tensorboard", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "relam run --tensorboard needs the 'tensorboard' package, which is not installed" in err
    assert f"pip install 'relam[{EXTRA}]'" in err
    assert not (tmp_path / "cache" / "results" / "runs").exists()  # stopped before any run
    monkeypatch.setenv("RELAM_TENSORBOARD", "maybe")
    assert cli.main(["run", str(spec), "--no-progress"]) == 2
    assert "RELAM_TENSORBOARD='maybe'" in capsys.readouterr().err

    def no_env(seed):
        raise AssertionError("no environment is made before the missing extra is reported")

    with pytest.raises(TensorBoardMissing, match=r"train_ppo\(tensorboard=...\) needs .*relam\[tensorboard\]"):
        train_ppo(no_env, PPOSettings(n_steps=20, batch_size=10), tmp_path / "ppo", 40, 20, 1, 0,
                  progress=False, tensorboard=True)
    with pytest.raises(TensorBoardMissing, match=r"train_iql\(tensorboard=...\) needs"):
        train_iql(tiny_dataset(), IQLSettings(**SMALL, epochs=1), tmp_path / "iql", progress=False,
                  tensorboard=True)


@pytest.mark.skipif(not tensorboard_available(), reason="needs the tensorboard extra")
def test_tensorboard_logs_of_ppo_and_iql(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tags(folder):
        acc = EventAccumulator(str(folder))
        acc.Reload()
        return acc, set(acc.Tags()["scalars"])

    settings = PPOSettings(n_steps=20, batch_size=10, n_epochs=1, point_hidden=(8,), net_arch=(8,))
    train_ppo(lambda s: CountEnv(), settings, tmp_path / "ppo", total_steps=40, eval_every=20,
              eval_episodes=2, seed=0, progress=False, tensorboard=True)
    acc, ppo = tags(tmp_path / "ppo" / "tensorboard")
    assert {"eval/success_rate", "eval/mean_stage", "train/loss", "rollout/ep_rew_mean"} <= ppo
    assert [e.step for e in acc.Scalars("eval/success_rate")] == [0, 20, 40] and "eval/step" not in ppo
    assert len(acc.Scalars("train/loss")) == 2  # one per update: the last update's values are written too

    monkeypatch.setenv("RELAM_TENSORBOARD", "1")  # what `relam run --tensorboard` sets for its workers
    train_iql(tiny_dataset(), IQLSettings(**SMALL, epochs=2), tmp_path / "iql", eval_fn=lambda p: 0.5,
              progress=False)
    acc, iql = tags(tmp_path / "iql" / "tensorboard")
    assert {"iql/q_mean", "iql/success"} <= iql and [e.step for e in acc.Scalars("iql/success")] == [3, 6]
