"""Camera geometry (pipelines.splatting.cameras): turntables, a capture's up and looked-at point, the scene size.

References are independent of the code under test: poses written from the definition (rows right, down, forward),
projections with :meth:`Cameras.project`, cameras built by hand with a known up and target.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.errors import InputError
from geo3d.io import read_transforms
from geo3d.types import Cameras
from pipelines.splatting.cameras import center_from_cameras, scene_center_and_scale, turntable_cameras, up_from_cameras
from pipelines.splatting.data import read_view_pool

from .conftest import H, K, W, look_at_rows


def test_turntable_cameras_look_at_the_centre_upright_at_the_radius():
    center = np.array([1.0, -2.0, 0.5])
    up = np.array([0.2, 0.1, 1.0])
    up_unit = up / np.linalg.norm(up)
    n, radius, elevation = 8, 3.0, 30.0
    cams = turntable_cameras(n, center, radius, elevation, up, K, W, H)
    assert len(cams) == n and (cams.width, cams.height) == (W, H)
    rot = cams.world_to_cam[:, :3, :3].double()
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(n, 3, 3),
                               atol=1e-6, rtol=0)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(n, dtype=torch.float64), atol=1e-6)
    offsets = cams.centers.double().numpy() - center
    np.testing.assert_allclose(np.linalg.norm(offsets, axis=1), radius, atol=1e-5)
    np.testing.assert_allclose(offsets @ up_unit / radius, math.sin(math.radians(elevation)), atol=1e-6)
    # Evenly spaced around the up axis: consecutive horizontal offsets are 360 / n degrees apart.
    flat = offsets - np.outer(offsets @ up_unit, up_unit)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    np.testing.assert_allclose(np.sum(flat * np.roll(flat, -1, 0), 1), math.cos(2 * math.pi / n), atol=1e-6)
    # The centre projects onto the principal point (in front); a point above it projects straight above it.
    points = torch.tensor(np.stack([center, center + 0.5 * up_unit]), dtype=torch.float32)
    uv, depth = cams.project(points)
    torch.testing.assert_close(uv[:, 0], torch.tensor([W / 2, H / 2]).expand(n, 2), atol=1e-4, rtol=0)
    assert bool((depth[:, 0] - radius).abs().max() < 1e-5)
    torch.testing.assert_close(uv[:, 1, 0], torch.full((n,), W / 2), atol=1e-4, rtol=0)
    assert bool((uv[:, 1, 1] < H / 2 - 1).all())


@pytest.mark.parametrize("bad", [dict(n=0), dict(radius=0.0), dict(elevation_deg=90.0), dict(up=np.zeros(3))])
def test_turntable_rejects_bad_numbers(bad):
    args = dict(n=4, center=np.zeros(3), radius=1.0, elevation_deg=10.0, up=np.array([0.0, 0.0, 1.0]), K=K,
                width=W, height=H)
    with pytest.raises(InputError):
        turntable_cameras(**{**args, **bad})


def test_up_from_cameras_recovers_a_known_up():
    up = np.array([0.3, -0.2, 1.0])
    up /= np.linalg.norm(up)
    e1 = np.cross(up, [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    rng = np.random.default_rng(0)
    poses = []
    for azimuth in rng.uniform(0, 2 * np.pi, 5):  # each looking up and down by the same pitch: tilts cancel
        level = math.cos(azimuth) * e1 + math.sin(azimuth) * e2
        for pitch in (-0.4, 0.4):
            forward = math.cos(pitch) * level + math.sin(pitch) * up
            camera_up = math.cos(pitch) * up - math.sin(pitch) * level  # in the forward/up plane, normal to forward
            right = np.cross(forward, camera_up)
            w2c = np.eye(4)
            w2c[:3, :3] = np.stack([right, -camera_up, forward])
            w2c[:3, 3] = -w2c[:3, :3] @ rng.normal(size=3)
            poses.append(w2c)
    cams = Cameras(K.expand(len(poses), 3, 3), torch.tensor(np.stack(poses), dtype=torch.float32), W, H)
    np.testing.assert_allclose(up_from_cameras(cams).numpy(), up, atol=1e-6)
    with pytest.raises(InputError, match="cancel"):  # two cameras upside down to each other
        flipped = poses[0].copy()
        flipped[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ flipped[:3, :3]
        up_from_cameras(Cameras(K.expand(2, 3, 3), torch.tensor(np.stack([poses[0], flipped])).float(), W, H))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_center_from_cameras_finds_the_looked_at_point(n):
    target = np.array([0.5, -1.0, 2.0])
    rng = np.random.default_rng(n)
    eyes = target + rng.normal(size=(n, 3)) * 3
    poses = [look_at_rows(eye, target, np.array([0.0, 0.0, 1.0])) for eye in eyes]
    cams = Cameras(K.expand(n, 3, 3), torch.tensor(np.stack(poses)).float(), W, H)
    np.testing.assert_allclose(center_from_cameras(cams).numpy(), target, atol=1e-4)


def test_nerf_synthetic_cameras_circle_the_origin_with_z_up(shared_data):
    path = shared_data / "nvs" / "lego" / "transforms_train.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    cams = read_transforms(path).cameras  # Blender cameras on a hemisphere, all aimed at the origin
    np.testing.assert_allclose(center_from_cameras(cams).numpy(), 0.0, atol=1e-3)
    assert float(up_from_cameras(cams) @ torch.tensor([0.0, 0.0, 1.0])) > math.cos(math.radians(5))


def test_scene_scale_is_robust_with_two_cameras(tiny_nerf):
    pool = read_view_pool(tiny_nerf)
    for n in (2, 3, 4):
        center, scale = scene_center_and_scale(pool.cameras[torch.arange(n)])
        assert float(center.norm()) < 0.05  # the synthetic cameras look at the origin from 4 m
        assert scale == pytest.approx(1.1 * 4.0, rel=1e-3)
