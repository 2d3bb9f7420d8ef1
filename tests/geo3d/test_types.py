"""Core types: validation, device moves, conversions, geometry helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.types import (
    Boxes3D,
    Cameras,
    DepthMap,
    Gaussians,
    Mesh,
    ParticleTrajectory,
    PointCloud,
    box_corners,
    limit_period,
    points_in_boxes,
)


def test_pointcloud_validates_shapes_and_ranges():
    pc = PointCloud(np.zeros((5, 3)), features=np.ones(5), colors=np.full((5, 3), 0.5))
    assert pc.points.dtype == torch.float32 and pc.features.shape == (5, 1) and len(pc) == 5
    with pytest.raises(ValueError, match=r"PointCloud.points: expected shape \(\*, 3\), got \(5, 2\)"):
        PointCloud(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="colors: expected values in"):
        PointCloud(np.zeros((2, 3)), colors=np.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="NaN"):
        PointCloud(np.array([[0, 0, np.nan]]))
    with pytest.raises(ValueError, match="features"):
        PointCloud(np.zeros((5, 3)), features=np.ones((4, 1)))


def test_pointcloud_open3d_and_trimesh_round_trip():
    rng = np.random.default_rng(0)
    pc = PointCloud(rng.normal(size=(100, 3)), colors=rng.uniform(size=(100, 3)),
                    normals=rng.normal(size=(100, 3)))
    back = PointCloud.from_open3d(pc.to_open3d())
    torch.testing.assert_close(back.points, pc.points)
    torch.testing.assert_close(back.colors, pc.colors)
    torch.testing.assert_close(back.normals, pc.normals)
    tm = PointCloud.from_trimesh(pc.to_trimesh())
    torch.testing.assert_close(tm.points, pc.points)
    assert (tm.colors - pc.colors).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit colours


def test_to_device_moves_every_tensor_field():
    pc = PointCloud(torch.zeros(3, 3), colors=torch.zeros(3, 3)).to("meta")
    assert pc.points.device.type == "meta" and pc.colors.device.type == "meta" and pc.device.type == "meta"


def test_box_corners_axis_aligned_and_rotated():
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0, 2.0, 1.0, 0.0]])
    c = box_corners(boxes)[0]
    assert c[:, 0].min() == -1 and c[:, 0].max() == 3 and c[:, 1].min() == 1 and c[:, 1].max() == 3
    assert c[:4, 2].max() == 2.5 and c[4:, 2].min() == 3.5
    rotated = box_corners(torch.tensor([[0.0, 0, 0, 4, 2, 1, math.pi / 2]]))[0]
    # a 90 degree yaw swaps the footprint's extents: length now along y
    torch.testing.assert_close(rotated[:, 1].max(), torch.tensor(2.0))
    torch.testing.assert_close(rotated[:, 0].max(), torch.tensor(1.0))


def test_points_in_boxes_respects_yaw():
    boxes = torch.tensor([[0.0, 0, 0, 4, 1, 1, math.pi / 4]])
    on_diagonal = torch.tensor([[1.2, 1.2, 0.0]])  # 1.7 m along the rotated length axis: inside
    off_diagonal = torch.tensor([[1.2, -1.2, 0.0]])  # across the 1 m width: outside
    assert points_in_boxes(on_diagonal, boxes).item()
    assert not points_in_boxes(off_diagonal, boxes).item()
    b = Boxes3D(boxes, labels=[0], scores=[0.9], class_names=("Car",))
    assert b.names() == ["Car"] and len(b[torch.tensor([True])]) == 1


def test_boxes_reject_bad_sizes_and_shapes():
    with pytest.raises(ValueError, match="positive"):
        Boxes3D([[0, 0, 0, 0, 1, 1, 0]])
    with pytest.raises(ValueError, match=r"Boxes3D.boxes: expected shape \(\*, 7\)"):
        Boxes3D(torch.zeros(2, 6))
    assert Boxes3D([]).boxes.shape == (0, 7)
    with pytest.raises(ValueError, match="labels"):
        Boxes3D([[0, 0, 0, 1, 1, 1, 0]], labels=[0, 1])


def test_limit_period_wraps_into_range():
    a = torch.tensor([-3 * math.pi, -math.pi, 0.0, math.pi, 2.5 * math.pi])
    w = limit_period(a)
    assert bool(((w >= -math.pi) & (w < math.pi)).all())
    torch.testing.assert_close(torch.cos(w), torch.cos(a), atol=1e-6, rtol=0)


def test_cameras_project_and_validate():
    K = torch.tensor([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]])
    w2c = torch.eye(4)
    w2c[2, 3] = 2.0  # camera 2 m behind the origin
    cams = Cameras(K, w2c, 100, 80)
    uv, depth = cams.project(torch.tensor([[0.0, 0, 0], [0.2, -0.2, 0]]))
    torch.testing.assert_close(uv[0], torch.tensor([[50.0, 40.0], [60.0, 30.0]]))
    torch.testing.assert_close(depth[0], torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(cams.centers[0], torch.tensor([0.0, 0, -2]))
    assert cams.scaled(0.5).width == 50 and cams.scaled(0.5).K[0, 0, 0] == 50
    bad = torch.eye(4)
    bad[0, 0] = 2
    with pytest.raises(ValueError, match="orthonormal"):
        Cameras(K, bad, 100, 80)
    with pytest.raises(ValueError, match="positive"):
        Cameras(K, w2c, 0, 80)


def test_gaussians_shapes_and_activations():
    g = Gaussians.from_points(torch.zeros(4, 3), colors=torch.full((4, 3), 0.25), scale=0.1, sh_degree=2, opacity=0.3)
    assert g.sh.shape == (4, 9, 3) and g.sh_degree == 2
    torch.testing.assert_close(g.scales, torch.full((4, 3), 0.1))
    torch.testing.assert_close(g.opacities, torch.full((4,), 0.3))
    torch.testing.assert_close(g.base_colors(), torch.full((4, 3), 0.25))
    with pytest.raises(ValueError, match="not a square"):
        Gaussians(torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]]), torch.zeros(1, 3), torch.zeros(1),
                  torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="zero-length"):
        Gaussians(torch.zeros(1, 3), torch.zeros(1, 4), torch.zeros(1, 3), torch.zeros(1), torch.zeros(1, 1, 3))


def test_mesh_checks_face_indices_and_converts():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=1)
    m = Mesh.from_trimesh(sphere)
    assert m.num_vertices == len(sphere.vertices) and m.num_faces == len(sphere.faces)
    back = Mesh.from_open3d(m.to_open3d())
    torch.testing.assert_close(back.vertices, m.vertices)
    assert torch.equal(back.faces, m.faces)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\)"):
        Mesh(torch.zeros(3, 3), torch.tensor([[0, 1, 3]]))


def test_depthmap_back_projection_hits_pixel_centres():
    K = torch.tensor([[10.0, 0, 2], [0, 10, 2], [0, 0, 1]])
    depth = torch.zeros(4, 4)
    depth[1, 3] = 5.0
    d = DepthMap(depth, K=K)
    pts = d.to_points()
    # pixel column 3, row 1 has its centre at (3.5, 1.5): x = (3.5 - 2) / 10 * 5, y = (1.5 - 2) / 10 * 5
    torch.testing.assert_close(pts, torch.tensor([[0.75, -0.25, 5.0]]))
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([1.0, 2, 3])
    torch.testing.assert_close(d.to_points(c2w), torch.tensor([[1.75, 1.75, 8.0]]))
    assert DepthMap(torch.tensor([[float("nan"), 1.0]])).valid.tolist() == [[False, True]]
    with pytest.raises(ValueError, match="negative"):
        DepthMap(torch.tensor([[-1.0]]))


def test_particle_trajectory_validates_and_differentiates():
    pos = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    traj = ParticleTrajectory(pos, torch.zeros(3), dt=0.5, bounds=[[0, 1], [0, 1]])
    torch.testing.assert_close(traj.velocities(), torch.full((1, 3, 2), 12.0))
    with pytest.raises(ValueError, match="D = 2 or 3"):
        ParticleTrajectory(torch.zeros(2, 3, 4), torch.zeros(3), dt=0.1)
    with pytest.raises(ValueError, match="dt"):
        ParticleTrajectory(pos, torch.zeros(3), dt=0.0)
