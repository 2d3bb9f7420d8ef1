"""TSDF fusion on voxel blocks: TSDF values against the projective formula, meshes against analytic surfaces."""

from __future__ import annotations

import itertools
import time

import numpy as np
import open3d as o3d
import open3d.core as o3c
import pytest
import torch
import trimesh

from geo3d.errors import InputError
from geo3d.io.rgbd import RGBDFrame, read_rgbd_sequence, write_intrinsics, write_rgbd_frame
from geo3d.metrics import point_to_mesh_distance
from geo3d.types import DepthMap
from pipelines.surface.fusion import TSDFVolume, fuse_rgbd, open3d_device

H, W = 120, 160
K = np.array([[150.0, 0, 80.0], [0, 150.0, 60.0], [0, 0, 1]])
CENTRE = np.array([0.1, -0.05, 0.2])
RADIUS = 0.25


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(4, 4) float64 OpenCV camera-to-world looking from ``eye`` at ``target``."""
    z = (target - eye) / np.linalg.norm(target - eye)
    helper = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, np.cross(z, x), z], 1)
    pose[:3, 3] = eye
    return pose


def render_depth(mesh: trimesh.Trimesh, cam_to_world: np.ndarray) -> np.ndarray:
    """Exact (H, W) float32 z-depth of ``mesh`` (0 = miss) through pixel centres ``(u + 0.5, v + 0.5)``."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3c.Tensor(mesh.vertices.astype(np.float32)), o3c.Tensor(mesh.faces.astype(np.uint32)))
    v, u = np.mgrid[0:H, 0:W] + 0.5
    dirs_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1
    dirs = dirs_cam @ cam_to_world[:3, :3].T
    rays = np.concatenate([np.broadcast_to(cam_to_world[:3, 3], dirs.shape), dirs], -1).astype(np.float32)
    t_hit = scene.cast_rays(o3c.Tensor(rays))["t_hit"].numpy()  # along a direction of unit z: z-depth
    return np.where(np.isfinite(t_hit), t_hit, 0).astype(np.float32)


def make_frame(depth: np.ndarray, cam_to_world: np.ndarray, rgb=(200, 100, 50)) -> RGBDFrame:
    color = torch.tensor(rgb, dtype=torch.uint8).expand(H, W, 3).contiguous()
    return RGBDFrame(color, DepthMap(torch.from_numpy(depth), K=torch.tensor(K).float()),
                     torch.from_numpy(cam_to_world).float())


def sphere_views() -> list[np.ndarray]:
    """14 cameras 0.8 m from the sphere's centre: along the 6 axes and the 8 cube diagonals."""
    dirs = [d for d in itertools.product((-1, 0, 1), repeat=3) if sum(map(abs, d)) in (1, 3)]
    return [look_at(CENTRE + 0.8 * np.array(d) / np.linalg.norm(d), CENTRE) for d in dirs]


def test_tsdf_values_follow_the_projective_formula_pixel_and_pose_conventions():
    """Every observed voxel holds clip((depth at its pixel - its camera z) / sdf_trunc, -1, 1), computed here
    independently: voxel (i, j, k) at (i, j, k) * voxel_size, world-to-camera = inverse(cam_to_world), pixel
    floor(K @ p) (pixel u covers [u, u + 1)). The depth image is a staircase (one depth per column) seen from a
    rotated, translated camera, so a half-pixel, transposed-pose or wrong-K convention changes the values.
    The colour image has 3 times the depth's size and encodes its pixel coordinates: depth pixel (u, v) must take
    the colour pixel holding its centre, (3u + 1, 3v + 1), on every row and column, the first included."""
    voxel, trunc = 0.01, 0.03
    cam_to_world = look_at(np.array([0.3, -0.2, -0.9]), np.array([0.35, -0.1, 0.3]))
    depth = np.broadcast_to(0.9 + 0.004 * np.arange(W, dtype=np.float32), (H, W)).copy()
    depth[:, 5] = 0  # a column of missing depth
    rows, cols = np.mgrid[0 : 3 * H, 0 : 3 * W]
    color = np.stack([cols % 256, cols // 256, rows % 256], -1).astype(np.uint8)  # (3H, 3W, 3)
    frame = RGBDFrame(torch.from_numpy(color), DepthMap(torch.from_numpy(depth), K=torch.tensor(K).float()),
                      torch.from_numpy(cam_to_world).float())
    volume = fuse_rgbd([frame], voxel, sdf_trunc=trunc, progress=False)
    coords, tsdf, weight, rgb = volume.voxels()
    assert coords.dtype == torch.int64 and tsdf.dtype == weight.dtype == rgb.dtype == torch.float32
    assert len(coords) > 10_000

    p_world = coords.double().numpy() * voxel
    world_to_cam = np.linalg.inv(cam_to_world)
    p_cam = p_world @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    uv = p_cam @ K.T
    u, v = uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2]
    assert (p_cam[:, 2] > 0).all() and (u >= 0).all() and (u < W).all() and (v >= 0).all() and (v < H).all()
    ui, vi = np.floor(u).astype(int), np.floor(v).astype(int)
    d = depth[vi, ui]
    assert (d > 0).all(), "a voxel was updated from a missing-depth pixel"
    sdf = d - p_cam[:, 2]
    assert (sdf >= -trunc - 1e-5).all()
    expected = np.clip(sdf / trunc, -1, 1)
    away_from_pixel_edges = (np.abs(u - np.round(u)) > 1e-3) & (np.abs(v - np.round(v)) > 1e-3)
    assert away_from_pixel_edges.mean() > 0.99
    np.testing.assert_allclose(tsdf.numpy()[away_from_pixel_edges], expected[away_from_pixel_edges], atol=1e-4)
    assert (weight == 1).all()
    # every column and row but the missing one and the last (Open3D's bounds test is u <= W - 1)
    assert set(ui) == set(range(W - 1)) - {5} and set(vi) == set(range(H - 1))
    col, row = 3 * ui + 1, 3 * vi + 1
    expected_rgb = np.stack([col % 256, col // 256, row % 256], -1) / 255
    ok = away_from_pixel_edges
    np.testing.assert_allclose(rgb.numpy()[ok], expected_rgb[ok], atol=1e-5)
    assert volume.sdf_trunc == trunc and volume.voxel_size == voxel


def test_fused_sphere_from_written_frames_is_within_a_voxel_and_closed(tmp_path):
    """Exact depth maps of an off-centre sphere from 14 views, written as a 7-Scenes folder (uint16 mm) and
    fused at 1 cm: the marching-cubes mesh lies within a voxel of the analytic sphere, is closed and welded."""
    sphere = trimesh.creation.icosphere(5, radius=RADIUS)
    sphere.apply_translation(CENTRE)
    write_intrinsics(tmp_path, torch.tensor(K))
    for i, pose in enumerate(sphere_views()):
        write_rgbd_frame(tmp_path, i, make_frame(render_depth(sphere, pose), pose))
    volume = fuse_rgbd(tmp_path, voxel_size=0.01, progress=False)
    mesh = volume.extract_mesh()
    radial = np.linalg.norm(mesh.vertices.numpy() - CENTRE, axis=1) - RADIUS
    assert np.abs(radial).max() < 0.01
    assert np.abs(radial).mean() < 0.002
    tm = mesh.to_trimesh()
    tm.merge_vertices()  # would merge duplicated positions: none when welded
    assert len(tm.vertices) == mesh.num_vertices
    assert tm.is_watertight
    assert tm.area == pytest.approx(4 * np.pi * RADIUS**2, rel=0.02)
    torch.testing.assert_close(mesh.vertex_colors.mean(0), torch.tensor([200, 100, 50]) / 255, atol=2e-3, rtol=0)

    cloud = volume.extract_points()
    offsets = cloud.points.numpy() - CENTRE
    assert np.abs(np.linalg.norm(offsets, axis=1) - RADIUS).max() < 0.01
    outward = np.sum(cloud.normals.numpy() * offsets, 1) / np.linalg.norm(offsets, axis=1)
    assert outward.min() > 0.9  # normals point to the observed free space
    stats = volume.stats
    assert stats.frames == 14 and stats.empty_frames == 0 and stats.blocks == volume.num_blocks > 0
    assert stats.fuse_seconds > 0 and stats.extract_seconds > 0 and stats.peak_rss_mib > 0


def test_set_voxels_round_trip_new_blocks_and_mesh_edits():
    sphere = trimesh.creation.icosphere(4, radius=RADIUS)
    sphere.apply_translation(CENTRE)
    frames = [make_frame(render_depth(sphere, pose), pose) for pose in sphere_views()[:3]]
    volume = fuse_rgbd(frames, voxel_size=0.02, progress=False)
    coords, tsdf, weight, color = volume.voxels()
    volume.set_voxels(coords, -tsdf, weight + 1)
    coords2, tsdf2, weight2, color2 = volume.voxels()
    assert torch.equal(coords2, coords) and torch.equal(tsdf2, -tsdf) and torch.equal(weight2, weight + 1)
    assert torch.equal(color2, color)

    far = torch.tensor([[1000, -3, 7], [1001, -3, 7]])
    blocks = volume.num_blocks
    volume.set_voxels(far, torch.tensor([0.5, -0.5]), torch.tensor([2.0, 3.0]), torch.tensor([[0.1, 0.2, 0.3]] * 2))
    assert volume.num_blocks == blocks + 1
    coords3, tsdf3, weight3, color3 = volume.voxels()
    assert len(coords3) == len(coords) + 2  # the new block's other 510 voxels are zeroed: unobserved
    new = (coords3[:, None] == far).all(-1).any(1)
    torch.testing.assert_close(tsdf3[new], torch.tensor([0.5, -0.5]))
    torch.testing.assert_close(color3[new], torch.tensor([[0.1, 0.2, 0.3]] * 2))

    volume.set_voxels(coords3, tsdf3, torch.zeros_like(weight3))  # everything unobserved: no surface
    assert len(volume.voxels()[0]) == 0
    with pytest.raises(InputError, match="no voxel was touched"):
        volume.extract_mesh()
    with pytest.raises(ValueError, match="tsdf in"):
        volume.set_voxels(far, torch.tensor([2.0, 0.0]), torch.ones(2))


def test_errors_name_the_scene_and_the_likely_cause(tmp_path):
    far = np.full((H, W), 5.0, np.float32)  # e.g. a wrong depth scale: everything beyond depth_max
    with pytest.raises(InputError, match="no voxel was touched: check depth scale and pose convention"):
        fuse_rgbd([make_frame(far, np.eye(4))], 0.01, depth_max=3.0, progress=False)
    write_intrinsics(tmp_path, torch.tensor(K))
    write_rgbd_frame(tmp_path, 0, make_frame(far, np.eye(4)))
    with pytest.raises(InputError) as error:
        fuse_rgbd(tmp_path, 0.01, depth_scale=1000.0, progress=False)
    assert error.value.path == str(tmp_path)
    volume = fuse_rgbd(tmp_path, 0.01, depth_scale=2000.0, progress=False)  # the same codes read as 2.5 m
    assert volume.stats.empty_frames == 0
    with pytest.raises(InputError, match="weight > 1.5"):
        volume.extract_mesh(weight_threshold=1.5)  # a single frame gives weight 1
    with pytest.raises(InputError, match="no voxel was touched"):
        TSDFVolume(0.01).extract_mesh()
    with pytest.raises(InputError, match="no voxel was touched"):
        TSDFVolume(0.01).extract_points()


def test_device_strings():
    assert open3d_device("cpu") == o3c.Device("CPU:0")
    assert open3d_device("cuda") == o3c.Device("CUDA:0")
    assert open3d_device(torch.device("cuda", 1)) == o3c.Device("CUDA:1")
    with pytest.raises(ValueError):
        open3d_device("meta")


@pytest.mark.cuda
def test_cuda_fusion_matches_cpu():
    if not o3d.core.cuda.is_available():
        pytest.skip("this Open3D build has no CUDA")
    sphere = trimesh.creation.icosphere(4, radius=RADIUS)
    sphere.apply_translation(CENTRE)
    frames = [make_frame(render_depth(sphere, pose), pose) for pose in sphere_views()]
    cpu = fuse_rgbd(frames, 0.01, device="cpu", progress=False).voxels()
    cuda = fuse_rgbd(frames, 0.01, device="cuda", progress=False).voxels()
    order_cpu = np.lexsort(cpu[0].numpy().T)
    order_cuda = np.lexsort(cuda[0].cpu().numpy().T)
    for a, b in zip(cpu, cuda):
        torch.testing.assert_close(b.cpu()[order_cuda], a[order_cpu], atol=1e-5, rtol=0)


def test_real_7scenes_frames_fuse_into_a_dense_mesh_on_the_depth(shared_data):
    """25 Kinect frames at 1 cm: a dense mesh in seconds, lying on the measured depth (65535 codes invalid)."""
    folder = shared_data / "surface" / "7scenes"
    start = time.perf_counter()
    volume = fuse_rgbd(folder, voxel_size=0.01, progress=False)
    mesh = volume.extract_mesh()
    assert time.perf_counter() - start < 30
    assert mesh.num_faces > 100_000
    assert volume.stats.frames == 25 and volume.stats.empty_frames == 0

    frame = read_rgbd_sequence(folder)[0]
    assert float(frame.depth.depth.max()) < 10  # no 65.535 m from the 65535 "invalid" code
    points = frame.depth.to_points(frame.cam_to_world)
    points = points[frame.depth.depth[frame.depth.valid] < 3.0][::50]
    distance = point_to_mesh_distance(points, mesh)
    assert float(distance.median()) < 0.0075  # Kinect noise and pose error: about 4 mm
    assert float((distance < 0.05).float().mean()) > 0.98
