"""Tests for the U-Net's training targets (pipelines/surface/targets.py), against analytic signed distances
and against Open3D's own TSDF fusion (``open3d.t.geometry.VoxelBlockGrid``)."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import torch
import trimesh

from geo3d.types.mesh import Mesh
from pipelines.surface.targets import sdf_targets, signed_distance, voxel_centers


def random_directions(n: int, seed: int) -> torch.Tensor:
    u = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return u / u.norm(dim=1, keepdim=True)


def test_sphere_tsdf_along_rays_and_band():
    radius, trunc = 0.5, 0.05
    centre = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    # tessellation error: how far the flat faces sink below the sphere (~1e-3 r for 4 subdivisions)
    v = sphere.vertices[sphere.faces]
    normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    plane_dist = np.abs((normals / np.linalg.norm(normals, axis=1, keepdims=True) * v[:, 0]).sum(1))
    tess = radius - plane_dist.min()
    assert 1e-4 * radius < tess < 2e-3 * radius
    sphere.apply_translation(centre.numpy())
    mesh = Mesh.from_trimesh(sphere)

    n = 3000
    d = torch.linspace(-2.5 * trunc, 2.5 * trunc, n, dtype=torch.float64)
    points = centre + (radius + d)[:, None] * random_directions(n, 0)
    tsdf, occ = sdf_targets(mesh, points.float(), trunc)
    assert tsdf.shape == (n,) and tsdf.dtype == torch.float32 and occ.dtype == torch.bool
    expected = (d / trunc).clamp(-1, 1)
    # the mesh lies inside the sphere by up to `tess`: the distance is d + [0, tess] (outside: d - [..])
    assert (tsdf.double() - expected).abs().max() <= tess / trunc + 1e-5
    clear = d.abs() > tess + 1e-6
    assert torch.equal(torch.sign(tsdf[clear]).double(), torch.sign(d[clear]))  # negative inside
    band_clear = (d.abs() - trunc).abs() > tess + 1e-6
    assert torch.equal(occ[band_clear], (d.abs() < trunc)[band_clear])
    assert occ.sum() > n / 3 and (~occ).sum() > n / 3
    # centre and far away
    far = sdf_targets(mesh, torch.stack([centre, centre + 3 * radius]).float(), trunc)
    assert far[0].tolist() == [-1.0, 1.0] and far[1].tolist() == [False, False]


def box_sdf(points: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Exact signed distance to an axis-aligned box centred at the origin, positive outside."""
    q = points.abs() - half
    return q.clamp_min(0).norm(dim=1) + q.amax(1).clamp_max(0)


def test_box_signed_distance_is_exact_and_band_is_sharp():
    half = torch.tensor([0.3, 0.2, 0.4], dtype=torch.float64)
    mesh = Mesh.from_trimesh(trimesh.creation.box(extents=(2 * half).numpy()))
    gen = torch.Generator().manual_seed(1)
    points = (torch.rand(4000, 3, generator=gen, dtype=torch.float64) * 2 - 1) * (half + 0.15)
    expected = box_sdf(points, half)
    dist = signed_distance(mesh, points.float())
    torch.testing.assert_close(dist.double(), expected, atol=2e-6, rtol=0)
    assert (expected < 0).sum() > 500 and (expected > 0).sum() > 500
    trunc = 0.05
    tsdf, occ = sdf_targets(mesh, points.float(), trunc)
    torch.testing.assert_close(tsdf.double(), (expected / trunc).clamp(-1, 1), atol=5e-5, rtol=0)
    # the band edge, on the +x face: just inside the band is kept, just outside is not
    eps = 1e-4
    edge = torch.tensor([[0.3 + trunc * (1 - eps), 0, 0], [0.3 + trunc * (1 + eps), 0, 0],
                         [0.3 - trunc * (1 - eps), 0, 0], [0.3 - trunc * (1 + eps), 0, 0]])
    assert sdf_targets(mesh, edge, trunc)[1].tolist() == [True, False, True, False]


def test_voxel_centers_scale_indices_without_offset():
    coords = torch.tensor([[0, 0, 0], [1, -2, 3], [-7, 8, 1000]])
    out = voxel_centers(coords, 0.04)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, coords.float() * 0.04)
    with pytest.raises(ValueError, match="coords"):
        voxel_centers(coords.float(), 0.04)


def integrate_plane(z0: float, voxel_size: float, trunc_mult: float):
    """One depth image of a fronto-parallel plane at depth z0 (camera = world frame) fused into a
    VoxelBlockGrid; returns (global voxel indices (N, 3) int64, positions (N, 3), tsdf (N,), weight (N,))."""
    res, size, f = 8, 48, 48.0
    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight"), attr_dtypes=(o3d.core.float32, o3d.core.float32), attr_channels=(1, 1),
        voxel_size=voxel_size, block_resolution=res, block_count=2000, device=o3d.core.Device("CPU:0"))
    K = o3d.core.Tensor(np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]), o3d.core.float64)
    extrinsic = o3d.core.Tensor(np.eye(4), o3d.core.float64)
    depth = o3d.t.geometry.Image(o3d.core.Tensor(np.full((size, size), z0, np.float32)))
    blocks = vbg.compute_unique_block_coordinates(depth, K, extrinsic, 1.0, 3.0, trunc_mult)
    vbg.integrate(blocks, depth, K, extrinsic, 1.0, 3.0, trunc_mult)
    index = torch.from_numpy(vbg.voxel_coordinates(vbg.voxel_indices()).numpy().T.copy())
    positions, flat = vbg.voxel_coordinates_and_flattened_indices()
    flat = flat.numpy().reshape(-1)
    tsdf = vbg.attribute("tsdf").numpy().reshape(-1)[flat]
    weight = vbg.attribute("weight").numpy().reshape(-1)[flat]
    return index, torch.from_numpy(positions.numpy()), torch.from_numpy(tsdf), torch.from_numpy(weight)


def test_voxel_convention_and_sign_match_open3d_voxel_block_grid():
    voxel_size, trunc_mult, z0 = 0.04, 8.0, 1.013  # z0 / voxel_size = 25.325: off the lattice
    sdf_trunc = trunc_mult * voxel_size
    index, positions, tsdf, weight = integrate_plane(z0, voxel_size, trunc_mult)
    assert index.dtype == torch.int64 and index.shape == positions.shape
    # 1. a voxel's position is index * voxel_size (no half-voxel offset)
    torch.testing.assert_close(voxel_centers(index, voxel_size), positions, atol=1e-6, rtol=0)
    seen = weight > 0
    assert seen.sum() > 1000
    # 2. the zero crossing of the plane's TSDF, in voxel-index units along z, lies at z0 / voxel_size
    column = seen & (index[:, 0] == 0) & (index[:, 1] == 0)
    k = index[column, 2]
    order = k.argsort()
    k, t = k[order].double(), tsdf[column][order].double()
    assert torch.equal(k, torch.arange(k[0], k[0] + len(k), dtype=torch.float64))  # a full column
    i = int(torch.nonzero((t[:-1] > 0) & (t[1:] <= 0))[0])
    crossing = k[i] + t[i] / (t[i] - t[i + 1])
    assert abs(crossing - z0 / voxel_size) < 0.01  # a (index + 0.5) convention would put it at 24.825
    # 3. sign and units: positive in front of the surface (camera side), (z0 - z) / sdf_trunc in the band
    z = voxel_centers(index, voxel_size)[:, 2].double()
    expected = ((z0 - z) / sdf_trunc).clamp(max=1.0)
    torch.testing.assert_close(tsdf[seen].double(), expected[seen], atol=1e-4, rtol=0)
    assert (tsdf[seen & (z < z0 - voxel_size)] > 0).all() and (tsdf[seen & (z > z0 + voxel_size)] < 0).all()
    assert (z[seen] <= z0 + sdf_trunc + 1e-6).all()  # voxels further than sdf_trunc behind are not updated
    # 4. sdf_targets on a closed box whose front face is that plane gives Open3D's values
    box = trimesh.creation.box(extents=(10.0, 10.0, 2.0))
    box.apply_translation((0.0, 0.0, z0 + 1.0))
    target, occupancy = sdf_targets(Mesh.from_trimesh(box), voxel_centers(index[seen], voxel_size), sdf_trunc)
    torch.testing.assert_close(target, tsdf[seen], atol=1e-4, rtol=0)
    torch.testing.assert_close(occupancy, (z[seen] - z0).abs() < sdf_trunc)
