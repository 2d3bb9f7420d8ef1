"""Training targets for the sparse U-Net: the true truncated signed distance at voxel centres.

Conventions (checked against Open3D 0.20's tensor ``VoxelBlockGrid`` in tests/pipelines/surface/test_targets.py):

- Voxel indexing. A voxel's global index is ``block_key * block_resolution + local index`` along ``(x, y, z)``
  (``VoxelBlockGrid.voxel_coordinates(voxel_indices())`` returns it), and its TSDF sample lies at
  ``index * voxel_size`` metres: no half-voxel offset (``voxel_coordinates_and_flattened_indices()``
  returns exactly these positions, and the zero crossing of a plane integrated at depth z0 lies at
  index z0 / voxel_size).
- Sign and units. ``VoxelBlockGrid.integrate`` stores ``min(1, (depth - z_voxel) / sdf_trunc)`` with
  ``sdf_trunc = trunc_voxel_multiplier * voxel_size`` (default multiplier 8): positive in front of the
  surface (towards the camera, i.e. outside an object), negative behind it, in truncation units; voxels more
  than ``sdf_trunc`` behind the observed surface are not updated (weight 0).
  :func:`sdf_targets` returns the same: ``clamp(signed distance / sdf_trunc, -1, 1)``, positive outside.
  (Fusion's value is a projective distance along the ray, >= the true distance; both agree in sign and
  at the zero crossing.)
"""

from __future__ import annotations

import numpy as np
import torch

from geo3d.errors import require
from geo3d.types.mesh import Mesh

__all__ = ["sdf_targets", "signed_distance", "voxel_centers"]


def voxel_centers(coords: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """Positions of voxels given by global voxel indices, as Open3D's ``VoxelBlockGrid`` places them.

    Args:
        coords: (M, 3) integer global voxel indices ``(i, j, k)`` along ``(x, y, z)``
            (``block_key * block_resolution + local index``).
        voxel_size: voxel edge in metres.

    Returns:
        (M, 3) float32 metres: ``coords * voxel_size`` (the TSDF sample point of voxel ``(i, j, k)`` is its
        corner-aligned lattice point; there is no ``+ 0.5`` offset).
    """
    require(coords.dim() == 2 and coords.shape[1] == 3 and not coords.is_floating_point(), None,
            f"voxel_centers: coords must be (M, 3) integer, got {tuple(coords.shape)} {coords.dtype}")
    require(voxel_size > 0, None, f"voxel_centers: voxel_size must be > 0, got {voxel_size}")
    return (coords.double() * float(voxel_size)).float()


def signed_distance(mesh: Mesh, points: torch.Tensor, nsamples: int = 3) -> torch.Tensor:
    """Signed distance from points to a closed triangle mesh (Open3D ``RaycastingScene``).

    Args:
        mesh: a closed (watertight, or nearly) triangle mesh, metres.
        points: (M, 3) float query points, metres.
        nsamples: odd number of rays whose majority vote decides inside/outside (Open3D's ``nsamples``;
            more rays make the sign robust to rays grazing edges or small holes).

    Returns:
        (M,) float32 metres on ``points``' device: unsigned distance to the nearest triangle, negative inside.
    """
    import open3d as o3d

    require(points.dim() == 2 and points.shape[1] == 3 and points.is_floating_point(), None,
            f"signed_distance: points must be (M, 3) floating, got {tuple(points.shape)} {points.dtype}")
    require(mesh.num_faces > 0, None, "signed_distance: mesh has no faces")
    require(nsamples >= 1 and nsamples % 2 == 1, None, f"signed_distance: nsamples must be odd, got {nsamples}")
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(mesh.vertices.detach().cpu().numpy(), np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(mesh.faces.detach().cpu().numpy(), np.uint32)),
    )
    query = o3d.core.Tensor(np.ascontiguousarray(points.detach().cpu().numpy(), np.float32))
    dist = scene.compute_signed_distance(query, nsamples=nsamples).numpy()
    return torch.from_numpy(dist.astype(np.float32)).to(points.device)


def sdf_targets(mesh: Mesh, centers: torch.Tensor, sdf_trunc: float,
                nsamples: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Target TSDF and occupancy at voxel centres from a ground-truth mesh.

    Args:
        mesh: closed ground-truth surface, metres (the sign needs a well-defined inside).
        centers: (M, 3) float voxel positions, metres (e.g. :func:`voxel_centers`).
        sdf_trunc: truncation distance in metres (fusion's ``trunc_voxel_multiplier * voxel_size``).
        nsamples: rays voting on inside/outside (see :func:`signed_distance`).

    Returns:
        ``(target_tsdf, occupancy)``: target_tsdf (M,) float32 ``clamp(d / sdf_trunc, -1, 1)`` with ``d`` the
        signed distance, positive outside the mesh (Open3D ``VoxelBlockGrid``'s sign: positive in front of the
        surface); occupancy (M,) bool ``|d| < sdf_trunc``: the voxels inside the truncation band, those a mesh
        extraction should keep. Both on ``centers``' device.
    """
    require(sdf_trunc > 0, None, f"sdf_targets: sdf_trunc must be > 0, got {sdf_trunc}")
    dist = signed_distance(mesh, centers, nsamples=nsamples)
    return (dist / float(sdf_trunc)).clamp(-1.0, 1.0), dist.abs() < sdf_trunc
