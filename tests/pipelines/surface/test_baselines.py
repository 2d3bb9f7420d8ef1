"""Poisson baseline and largest-component cleanup, against analytic spheres."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from geo3d.errors import InputError
from geo3d.types import Mesh, PointCloud
from pipelines.surface.baselines import largest_component, poisson_mesh

CENTRE = np.array([0.3, -0.2, 0.1])
RADIUS = 0.5


def sphere_points(n: int, seed: int = 0, upper_half: bool = False) -> PointCloud:
    """n points uniform on the sphere, with outward unit normals and colours."""
    normals = np.random.default_rng(seed).normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    if upper_half:
        normals[:, 2] = np.abs(normals[:, 2])
    colors = np.full((n, 3), 0.25)
    return PointCloud(CENTRE + RADIUS * normals, colors=colors, normals=normals)


def test_poisson_mesh_of_an_oriented_sphere_lies_on_the_sphere():
    mesh = poisson_mesh(sphere_points(10_000), depth=6, density_quantile=0.0)
    radial = np.linalg.norm(mesh.vertices.numpy() - CENTRE, axis=1) - RADIUS
    assert np.abs(radial).max() < 0.003  # an octree cell is 1.1 * 2 * RADIUS / 2**6 = 0.017
    tm = mesh.to_trimesh()
    assert tm.is_watertight
    assert tm.area == pytest.approx(4 * np.pi * RADIUS**2, rel=0.005)
    torch.testing.assert_close(mesh.vertex_colors, torch.full_like(mesh.vertex_colors, 0.25), atol=1e-4, rtol=0)


def test_density_trimming_removes_the_unsupported_membrane():
    """Points on the upper half only: Poisson closes the bottom with a membrane far from any point; trimming
    the lowest-density vertices removes vertices, the lowest first (the membrane)."""
    points = sphere_points(10_000, upper_half=True)
    full = poisson_mesh(points, depth=6, density_quantile=0.0)
    trimmed = poisson_mesh(points, depth=6, density_quantile=0.3)
    assert trimmed.num_vertices == pytest.approx(0.7 * full.num_vertices, rel=0.01)
    lowest = lambda m: float(m.vertices[:, 2].min())  # noqa: E731
    assert lowest(full) < CENTRE[2] - 0.3 * RADIUS  # the membrane bulges below the equator
    assert lowest(trimmed) > lowest(full) + 0.1 * RADIUS


def test_poisson_needs_normals():
    with pytest.raises(InputError, match="no normals"):
        poisson_mesh(PointCloud(torch.rand(100, 3)))


def test_largest_component_keeps_the_component_with_most_triangles():
    big = trimesh.creation.icosphere(3, radius=1.0)  # 1280 triangles
    small = trimesh.creation.icosphere(2, radius=0.5)  # 320
    small.apply_translation([5.0, 0, 0])
    both = trimesh.util.concatenate([small, big])
    colors = np.concatenate([np.full((len(small.vertices), 3), 0.2), np.full((len(big.vertices), 3), 0.8)])
    mesh = Mesh(both.vertices, both.faces, colors)
    kept = largest_component(mesh)
    assert kept.num_faces == 1280 and kept.num_vertices == len(big.vertices)
    np.testing.assert_allclose(np.linalg.norm(kept.vertices.numpy(), axis=1), 1.0, atol=1e-6)
    torch.testing.assert_close(kept.vertex_colors, torch.full_like(kept.vertex_colors, 0.8))
    with pytest.raises(InputError, match="no triangle"):
        largest_component(Mesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64)))
