"""Non-learned surface baselines: screened Poisson reconstruction (Open3D) and largest-component cleanup."""

from __future__ import annotations

import numpy as np

from geo3d.errors import InputError
from geo3d.types import Mesh, PointCloud


def poisson_mesh(points: PointCloud, depth: int = 8, density_quantile: float = 0.02) -> Mesh:
    """Screened Poisson surface reconstruction (Kazhdan and Hoppe 2013) of an oriented point cloud.

    Poisson closes every hole with a smooth membrane; vertices whose support density (points per octree
    node) is below the ``density_quantile`` quantile are removed to trim those unsupported parts.

    Args:
        points: (N, 3) float32 metres with ``normals`` (N, 3) pointing outwards (to the observed free space);
            colours, when present, are interpolated onto the vertices.
        depth: octree depth: the finest cells are ``bbox / 2**depth`` (8: 256^3 over the scaled bounding box).
        density_quantile: fraction of the lowest-density vertices to remove, in [0, 1); 0 keeps all.

    Returns:
        Mesh: vertices (V, 3) float32 metres, faces (F, 3) int64, vertex colours in [0, 1] or None.

    Raises:
        InputError: when the cloud has no normals or too few points, or nothing is left after trimming.
    """
    import open3d as o3d

    if points.normals is None:
        raise InputError(None, "poisson_mesh: the point cloud has no normals (Poisson needs oriented points)")
    if len(points) < 3:
        raise InputError(None, f"poisson_mesh: needs at least 3 points, got {len(points)}")
    if not 0 <= density_quantile < 1:
        raise ValueError(f"poisson_mesh: density_quantile must be in [0, 1), got {density_quantile}")
    mesh, densities = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(points.to_open3d(), depth=depth)
    densities = np.asarray(densities)
    if density_quantile > 0 and len(densities):
        mesh.remove_vertices_by_mask(densities < np.quantile(densities, density_quantile))
    if len(mesh.triangles) == 0:
        raise InputError(None, "poisson_mesh: the reconstruction is empty")
    if mesh.has_vertex_colors():
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.asarray(mesh.vertex_colors).clip(0, 1))
    return Mesh.from_open3d(mesh)


def largest_component(mesh: Mesh) -> Mesh:
    """Keep the connected component (triangles sharing edges) with the most triangles.

    Args:
        mesh: a triangle mesh.

    Returns:
        Mesh: that component's triangles and vertices (unreferenced vertices dropped; colours kept).

    Raises:
        InputError: when the mesh has no triangle.
    """
    if mesh.num_faces == 0:
        raise InputError(None, "largest_component: the mesh has no triangle")
    o3d_mesh = mesh.to_open3d()
    clusters, sizes, _ = o3d_mesh.cluster_connected_triangles()
    clusters = np.asarray(clusters)
    o3d_mesh.remove_triangles_by_mask(clusters != int(np.argmax(np.asarray(sizes))))
    o3d_mesh.remove_unreferenced_vertices()
    return Mesh.from_open3d(o3d_mesh)
