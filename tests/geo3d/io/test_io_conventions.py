"""OpenGL <-> OpenCV pose conversion and rigid inversion."""

from __future__ import annotations

import math

import pytest
import torch

from geo3d.io.conventions import invert_rigid, opencv_to_opengl, opengl_to_opencv


def _rotation_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _random_rigid(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.linalg.det(q)[:, None, None]  # proper rotations
    out = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    out[:, :3, :3] = q
    out[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=torch.float64) * 5
    return out


def test_opengl_camera_looking_down_minus_z_sees_points_in_front_after_conversion():
    # OpenGL camera at (0, 0, 5), identity rotation: looks along world -z, y up.
    gl = torch.eye(4, dtype=torch.float64)
    gl[2, 3] = 5.0
    cv = opengl_to_opencv(gl)
    expected = torch.tensor(
        [[1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, -1.0, 5.0], [0, 0, 0, 1.0]], dtype=torch.float64
    )
    assert torch.equal(cv, expected)
    w2c = invert_rigid(cv)
    origin_cam = w2c @ torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    up_cam = w2c @ torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    assert origin_cam[2] == pytest.approx(5.0)  # in front: OpenCV z forward
    assert up_cam[1] == pytest.approx(-1.0)  # world up is image up: OpenCV y points down


def test_conversion_is_an_involution_and_keeps_batch_shape():
    poses = _random_rigid(6).reshape(2, 3, 4, 4)
    converted = opengl_to_opencv(poses)
    assert converted.shape == (2, 3, 4, 4)
    assert torch.equal(opencv_to_opengl(converted), poses)
    assert torch.equal(converted[..., :3, 3], poses[..., :3, 3])  # camera centres unchanged


def test_invert_rigid_matches_general_inverse():
    poses = _random_rigid(8, seed=1)
    poses[0, :3, :3] = _rotation_z(0.3)
    inv = invert_rigid(poses)
    assert torch.allclose(inv, torch.linalg.inv(poses), atol=1e-12)
    assert torch.allclose(poses @ inv, torch.eye(4, dtype=torch.float64).expand(8, 4, 4), atol=1e-12)


@pytest.mark.parametrize("fn", [opengl_to_opencv, opencv_to_opengl, invert_rigid])
def test_bad_shapes_raise_value_error(fn):
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 4\)"):
        fn(torch.eye(3))
