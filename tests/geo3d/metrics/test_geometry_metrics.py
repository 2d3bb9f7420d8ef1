"""Mesh metrics against analytic answers, and point-to-mesh distances against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from geo3d.errors import InputError
from geo3d.metrics import mesh_metrics, point_to_mesh_distance
from geo3d.types import Mesh


def square(x0: float = 0.0, x1: float = 1.0, z: float = 0.0) -> Mesh:
    """The square [x0, x1] x [0, 1] at height z, two triangles."""
    vertices = [[x0, 0, z], [x1, 0, z], [x1, 1, z], [x0, 1, z]]
    return Mesh(torch.tensor(vertices, dtype=torch.float32), torch.tensor([[0, 1, 2], [0, 2, 3]]))


def closest_point_on_triangle(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Reference: the closest point of triangle abc to p, by Voronoi regions (Ericson, Real-Time Collision
    Detection, 5.1.5), in float64, one point at a time."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = ab @ ap, ac @ ap
    if d1 <= 0 and d2 <= 0:
        return a
    bp = p - b
    d3, d4 = ab @ bp, ac @ bp
    if d3 >= 0 and d4 <= d3:
        return b
    vc = d1 * d4 - d3 * d2
    if vc <= 0 and d1 >= 0 and d3 <= 0:
        return a + d1 / (d1 - d3) * ab
    cp = p - c
    d5, d6 = ab @ cp, ac @ cp
    if d6 >= 0 and d5 <= d6:
        return c
    vb = d5 * d2 - d1 * d6
    if vb <= 0 and d2 >= 0 and d6 <= 0:
        return a + d2 / (d2 - d6) * ac
    va = d3 * d6 - d5 * d4
    if va <= 0 and d4 - d3 >= 0 and d5 - d6 >= 0:
        return b + (d4 - d3) / ((d4 - d3) + (d5 - d6)) * (c - b)
    denom = 1 / (va + vb + vc)
    return a + ab * vb * denom + ac * vc * denom


def test_point_to_mesh_distance_matches_brute_force():
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(6, 3))
    faces = np.array([[0, 1, 2], [1, 3, 2], [2, 3, 4], [0, 4, 5], [5, 1, 0]])
    points = rng.normal(scale=1.5, size=(300, 3))
    expected = [min(np.linalg.norm(p - closest_point_on_triangle(p, *vertices[f])) for f in faces) for p in points]
    got = point_to_mesh_distance(torch.tensor(points, dtype=torch.float32), Mesh(vertices, faces))
    assert got.dtype == torch.float32 and got.shape == (300,)
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-6, rtol=1e-5)
    np.testing.assert_array_equal(point_to_mesh_distance(points.astype(np.float32), Mesh(vertices, faces)).numpy(),
                                  got.numpy())


def test_a_mesh_against_itself_is_perfect():
    sphere = Mesh.from_trimesh(trimesh.creation.icosphere(3))
    m = mesh_metrics(sphere, sphere, num_points=20_000, fscore_threshold=1e-4)
    assert m["accuracy"] < 1e-6 and m["completeness"] < 1e-6 and m["chamfer"] < 1e-6
    assert m["precision"] == m["recall"] == m["fscore"] == 1.0
    assert m["normal_consistency"] == pytest.approx(1.0, abs=1e-6)


def test_sphere_against_a_one_percent_larger_sphere():
    """Surfaces 0.01 apart everywhere (up to tessellation): every distance is about 0.01, normals agree."""
    gt = Mesh.from_trimesh(trimesh.creation.icosphere(5))
    pred = Mesh(gt.vertices * 1.01, gt.faces)
    m = mesh_metrics(pred, gt, num_points=20_000, fscore_threshold=0.02)
    assert m["accuracy"] == pytest.approx(0.01, abs=1e-4)
    assert m["completeness"] == pytest.approx(0.01, abs=1e-4)
    assert m["chamfer"] == pytest.approx(0.01, abs=1e-4)
    assert m["fscore"] == 1.0
    assert m["normal_consistency"] > 0.999
    assert mesh_metrics(pred, gt, num_points=20_000, fscore_threshold=0.009)["fscore"] == 0.0


@pytest.mark.parametrize("d", [0.02, 0.3])
def test_shifted_plane_distances_are_exact_and_fscore_steps_at_the_threshold(d):
    pred, gt = square(z=d), square(z=0.0)
    m = mesh_metrics(pred, gt, num_points=5_000, fscore_threshold=d * 1.001)
    np.testing.assert_allclose([m["accuracy"], m["completeness"], m["chamfer"]], d, rtol=1e-5)
    assert m["precision"] == m["recall"] == m["fscore"] == 1.0
    assert m["normal_consistency"] == pytest.approx(1.0, abs=1e-6)
    below = mesh_metrics(pred, gt, num_points=5_000, fscore_threshold=d * 0.999)
    assert below["precision"] == below["recall"] == below["fscore"] == 0.0


def test_partial_overlap_precision_recall_and_completeness_are_analytic():
    """pred = [0, 1] x [0, 1], gt = [0, 2] x [0, 1], coplanar: a gt sample at x > 1 is x - 1 from pred, so
    recall = (1 + t) / 2 and completeness = (0 + 1/2) / 2 = 1/4; precision = 1, accuracy = 0."""
    t = 0.1
    m = mesh_metrics(square(0, 1), square(0, 2), num_points=100_000, fscore_threshold=t)
    assert m["accuracy"] < 1e-6 and m["precision"] == 1.0
    assert m["recall"] == pytest.approx((1 + t) / 2, abs=0.006)  # binomial std 0.0016
    assert m["completeness"] == pytest.approx(0.25, abs=0.003)
    assert m["fscore"] == pytest.approx(2 * m["recall"] / (1 + m["recall"]), rel=1e-12)


def test_normal_consistency_of_a_tilted_plane_is_the_cosine():
    theta = np.deg2rad(30)
    rotation = torch.tensor([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    flat = square()
    tilted = Mesh(flat.vertices @ rotation.float().T, flat.faces)
    m = mesh_metrics(tilted, flat, num_points=2_000, fscore_threshold=0.1)
    assert m["normal_consistency"] == pytest.approx(np.cos(theta), abs=1e-6)
    flipped = Mesh(flat.vertices, flat.faces[:, [0, 2, 1]])  # orientation does not count
    assert mesh_metrics(flipped, flat, num_points=2_000)["normal_consistency"] == pytest.approx(1.0, abs=1e-6)


def test_seeded_and_empty_meshes_rejected():
    sphere = Mesh.from_trimesh(trimesh.creation.icosphere(2))
    bigger = Mesh(sphere.vertices * 1.1, sphere.faces)
    assert mesh_metrics(bigger, sphere, 1000, seed=3) == mesh_metrics(bigger, sphere, 1000, seed=3)
    assert mesh_metrics(bigger, sphere, 1000, seed=3) != mesh_metrics(bigger, sphere, 1000, seed=4)
    empty = Mesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64))
    with pytest.raises(InputError, match="pred mesh is empty"):
        mesh_metrics(empty, sphere)
    degenerate = Mesh(torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), torch.tensor([[0, 1, 2]]))
    with pytest.raises(InputError, match="gt mesh is empty"):
        mesh_metrics(sphere, degenerate)
    with pytest.raises(InputError, match="empty"):
        point_to_mesh_distance(torch.zeros(2, 3), empty)
