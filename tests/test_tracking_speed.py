"""The batched sim-tracker projection (_project_local) against the plain per-point reference."""
from types import SimpleNamespace

import numpy as np
import pytest

from relam.perception.tracking import _project_local
from relam.tasks import Camera, look_at_rotation, quat_wxyz_to_mat


def reference_project_local(camera, body, local, pos, rot):
    """The former implementation: gather each point's pose, then ``Camera.project`` (Camera.project
    inlined, so that a change there does not hide a change here)."""
    pos = np.asarray(pos, dtype=np.float64)
    rot = np.asarray(rot, dtype=np.float64)
    world = np.einsum("...nij,nj->...ni", rot[..., body, :, :], local) + pos[..., body, :]
    lead = world.shape[:-1]
    P = world.reshape(-1, 3)
    pc = P @ camera.world_to_cam[:3, :3].T + camera.world_to_cam[:3, 3]
    z = pc[:, 2]
    zs = np.where(np.abs(z) < 1e-9, 1e-9, z)
    uv = (pc[:, :2] / zs[:, None]) @ camera.K[:2, :2].T + camera.K[:2, 2]
    return uv.reshape(*lead, 2)


def random_camera(rng):
    eye = rng.uniform(-1, 1, 3) + [0.0, -1.5, 1.0]
    R = look_at_rotation(eye, rng.uniform(-0.2, 0.2, 3))  # camera-to-world
    w2c = np.eye(4)
    w2c[:3, :3] = R.T
    w2c[:3, 3] = -R.T @ eye
    K = np.array([[rng.uniform(80, 200), rng.uniform(-2, 2), rng.uniform(40, 90)],
                  [0.0, rng.uniform(80, 200), rng.uniform(40, 90)], [0, 0, 1]])
    return Camera(K=K, world_to_cam=w2c, width=128, height=128)


def random_scene(rng, lead, n_bodies, n_points):
    pos = rng.uniform(-0.3, 0.3, (*lead, n_bodies, 3))
    rot = quat_wxyz_to_mat(rng.normal(size=(*lead, n_bodies, 4)))
    body = rng.integers(0, n_bodies, n_points)
    local = rng.uniform(-0.1, 0.1, (n_points, 3))
    return body, local, pos, rot


@pytest.mark.parametrize("lead", [(), (1,), (7,), (40,), (3, 5)])
def test_project_local_matches_reference(lead):
    rng = np.random.default_rng(len(lead) * 100 + sum(lead))
    for _ in range(5):
        cam = random_camera(rng)
        body, local, pos, rot = random_scene(rng, lead, int(rng.integers(1, 12)), int(rng.integers(1, 400)))
        got = _project_local(cam, body, local, pos, rot)
        want = reference_project_local(cam, body, local, pos, rot)
        assert got.shape == want.shape == (*lead, body.shape[0], 2)
        assert got.dtype == np.float64
        assert np.abs(got - want).max() < 1e-9


def test_project_local_single_frame_is_bit_identical():
    """SimTracker.update (one frame, a few points) keeps the former arithmetic exactly."""
    rng = np.random.default_rng(3)
    cam = random_camera(rng)
    body, local, pos, rot = random_scene(rng, (), 9, 4)
    np.testing.assert_array_equal(_project_local(cam, body, local, pos, rot),
                                  reference_project_local(cam, body, local, pos, rot))


def test_project_local_depth_guard_and_edge_cases():
    cam = Camera(K=np.array([[100.0, 0, 64], [0, 100.0, 64], [0, 0, 1]]), world_to_cam=np.eye(4),
                 width=128, height=128)
    T = 4
    pos = np.zeros((T, 2, 3))
    pos[:, 1, 2] = 2.0
    rot = np.tile(np.eye(3), (T, 2, 1, 1))
    # points on the camera plane (z = 0: the 1e-9 guard), just in front/behind it, and ordinary ones
    local = np.array([[0.1, 0.2, 0.0], [0.1, 0.2, 1e-12], [0.1, -0.2, -1e-12], [0.1, 0.2, -0.5],
                      [0.3, 0.1, 0.0], [0.0, 0.0, 1.0]])
    body = np.array([0, 0, 0, 0, 1, 1])
    got = _project_local(cam, body, local, pos, rot)
    want = reference_project_local(cam, body, local, pos, rot)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    # no points at all
    empty = _project_local(cam, np.zeros(0, np.int64), np.zeros((0, 3)), pos, rot)
    assert empty.shape == (T, 0, 2)


def test_project_local_camera_without_matrices_uses_project():
    """A camera object with only ``project`` (duck typing) still works for several frames."""
    rng = np.random.default_rng(5)
    cam = random_camera(rng)
    duck = SimpleNamespace(project=cam.project)
    body, local, pos, rot = random_scene(rng, (6,), 3, 20)
    np.testing.assert_allclose(_project_local(duck, body, local, pos, rot),
                               reference_project_local(cam, body, local, pos, rot), rtol=0, atol=1e-9)
