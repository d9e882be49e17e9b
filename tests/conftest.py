"""Shared test set-up: a private cache folder per test session, 1 torch thread, headless GL."""
import os
import tempfile

os.environ.setdefault("MUJOCO_GL", "egl")
# Tests never touch the user's cache: demos and checkpoints they make go to a session folder,
# shared by the xdist workers of one run (made once, under a file lock, by whoever needs it first).
if "RELAM_TEST_CACHE" not in os.environ:
    os.environ["RELAM_TEST_CACHE"] = os.path.join(tempfile.gettempdir(), "relam-test-cache")
os.environ["RELAM_CACHE"] = os.environ["RELAM_TEST_CACHE"]

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    yield


@pytest.fixture(scope="module")
def videos():
    """Drawer-open: 5 expert demos (3 to train, 2 held out) and 4 random-action videos
    (2 'policy', 2 held out), shared by the reward-model baseline tests."""
    from baselines.evaluation import random_action_videos
    from relam.demos import load_demos

    expert = [d.frames for d in load_demos("drawer-open-v3", n=5)]
    rand = random_action_videos("drawer-open-v3", n=4, steps=60, seed=7)
    return expert[:3], expert[3:], rand[:2], rand[2:]
