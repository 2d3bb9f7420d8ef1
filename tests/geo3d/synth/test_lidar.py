"""The LiDAR sensor model: ray drop follows its detection curve, foliage returns lie inside the scattering volumes
and their transmission follows Beer-Lambert, glass passes most rays on, mixed pixels sit between the two surfaces."""

from __future__ import annotations

import math

import numpy as np
import open3d as o3d

from geo3d.synth import shapes_kitti as shapes
from geo3d.synth.lidar import GLASS, LidarSpec, ScatterVolumes, return_probability, scan

# A sensor without the random effects a test does not look at (each test turns on what it checks).
QUIET = dict(dropout=(0.0, 0.0), elevation_jitter_deg=0.0, azimuth_jitter_deg=0.0, range_noise=0.0, mixed_prob=0.0,
             glass_transmit=0.0, glass_reflect=1.0)
ALWAYS = dict(p50=1e-12)  # every hit returns


def _scene(*parts: shapes.PartMesh):
    mesh = shapes.merge(list(parts))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices), o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    return scene, mesh


def test_return_probability_is_the_lognormal_detection_curve():
    spec = LidarSpec()
    rho, cos, r = np.array([0.05, 0.3, 0.6]), np.array([1.0, 0.5, 0.1]), np.array([30.0, 10.0, 60.0])
    power = rho * (0.2 + 0.8 * cos) / r**2
    expected = [0.5 * math.erfc(-(math.log(p) - math.log(spec.p50)) / (spec.p_sigma * math.sqrt(2))) for p in power]
    np.testing.assert_allclose(return_probability(rho, cos, r, spec), expected, rtol=1e-12)
    # darker, farther and more grazing: fewer returns
    assert return_probability(np.array([0.05]), np.ones(1), np.array([20.0]), spec) < \
        return_probability(np.array([0.5]), np.ones(1), np.array([20.0]), spec)
    assert return_probability(np.array([0.3]), np.array([0.05]), np.array([20.0]), spec) < \
        return_probability(np.array([0.3]), np.ones(1), np.array([20.0]), spec)


def test_ray_drop_rates_follow_the_model():
    """Walls of dark and bright paint at several distances and the ground: in bins of the model's return
    probability, the number of returns matches the sum of the probabilities (binomial, 4 sigma)."""
    spec = LidarSpec(**QUIET, p50=4e-4)  # a weak sensor, so that probabilities spread over (0, 1) at these ranges
    walls = [shapes.box(d, d + 0.2, -40, 40, -2, 6, rho) for d, rho in ((12, 0.05), (25, 0.6))]
    behind = shapes.box(-40, -39.8, -40, 40, -2, 6, 0.3)
    ground = shapes.box(-50, 50, -50, 50, -1.83, -1.73, 0.25)
    scene, mesh = _scene(*walls, behind, ground)
    directions = spec.directions()
    hit = scene.cast_rays(o3d.core.Tensor(np.concatenate([np.zeros_like(directions), directions], 1)
                                          .astype(np.float32)))
    t = hit["t_hit"].numpy().astype(np.float64)
    ok = np.isfinite(t)
    face = hit["primitive_ids"].numpy().astype(np.int64)[ok]
    cos = np.abs((hit["primitive_normals"].numpy()[ok] * directions[ok]).sum(1))
    p_all = return_probability(mesh.reflectance[face], cos, t[ok], spec)
    result = scan(scene, mesh.reflectance, mesh.material, ScatterVolumes(), spec, np.random.default_rng(0))
    edges = np.linspace(0, 1, 11)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (p_all >= lo) & (p_all < hi)
        if in_bin.sum() < 200:
            continue
        expected, sd = p_all[in_bin].sum(), math.sqrt((p_all[in_bin] * (1 - p_all[in_bin])).sum())
        got = ((result.probability >= lo) & (result.probability < hi)).sum()
        assert abs(got - expected) <= 4 * sd + 1, (lo, got, expected, sd)
    assert (p_all < 0.1).sum() > 1000 and (p_all > 0.9).sum() > 1000  # both ends exercised


def test_foliage_returns_lie_inside_the_volumes_and_transmit_by_beer_lambert():
    spec = LidarSpec(**QUIET, **ALWAYS)
    sigma, depth = 1.5, 0.8
    volumes = ScatterVolumes()
    volumes.add((10.0, 0.0, 0.0), (depth / 2, 20.0, 20.0), 0.0, True, sigma, 0.3)  # a slab across +x
    volumes.add((-8.0, 5.0, 0.5), (2.0, 1.5, 2.5), 0.4, False, 2.0, 0.3)  # a crown behind
    wall = shapes.box(20, 20.2, -60, 60, -30, 30, 0.5)
    scene, mesh = _scene(wall, shapes.box(-60, -59.8, -60, 60, -30, 30, 0.5))
    result = scan(scene, mesh.reflectance, mesh.material, volumes, spec, np.random.default_rng(1))
    foliage = result.volume >= 0
    assert foliage.sum() > 1000 and set(np.unique(result.volume[foliage])) == {0, 1}
    assert volumes.contains(result.points[foliage, :3].astype(np.float64), margin=1e-4).all()
    # rays towards the slab: the share reaching the wall is exp(-sigma * path length in the slab)
    pts = result.points[:, :3].astype(np.float64)
    toward = (pts[:, 0] > 5) & (np.abs(np.arctan2(pts[:, 1], pts[:, 0])) < 0.6)
    directions = pts[toward] / np.linalg.norm(pts[toward], axis=1, keepdims=True)
    path = depth / directions[:, 0]
    reached = ~foliage[toward]
    expected = np.exp(-sigma * path)
    assert abs(reached.sum() - expected.sum()) <= 4 * math.sqrt((expected * (1 - expected)).sum())
    # inside the slab, free paths are exponential: the mean depth of the scatter matches the truncated mean
    x_in = pts[toward][~reached, 0] - (10.0 - depth / 2)
    truncated_mean = 1 / sigma - depth * math.exp(-sigma * depth) / (1 - math.exp(-sigma * depth))
    assert abs(np.mean(x_in * 1.0) - truncated_mean) < 0.05  # x-depth ~ path depth for near-normal rays


def test_glass_passes_most_rays_on():
    spec = LidarSpec(**{**QUIET, "glass_transmit": 0.6, "glass_reflect": 0.1}, **ALWAYS)
    pane = shapes.box(8, 8.01, -30, 30, -10, 10, 0.08).as_glass()
    wall = shapes.box(15, 15.2, -80, 80, -40, 40, 0.5)  # catches every ray through the pane
    scene, mesh = _scene(pane, wall)
    assert (mesh.material == GLASS).sum() == 12
    result = scan(scene, mesh.reflectance, mesh.material, ScatterVolumes(), spec, np.random.default_rng(2))
    d = result.rays[:, 3:].astype(np.float64)
    through_pane = (d[:, 0] > 0) & (np.abs(d[:, 1] / d[:, 0] * 8) < 30) & (np.abs(d[:, 2] / d[:, 0] * 8) < 10)
    n = int(through_pane.sum())
    p = result.points[:, :3].astype(np.float64)
    behind_pane = (p[:, 0] > 0) & (np.abs(p[:, 1] / p[:, 0] * 8) < 30) & (np.abs(p[:, 2] / p[:, 0] * 8) < 10)
    on_pane = int((behind_pane & (p[:, 0] < 9)).sum())
    on_wall = int((behind_pane & (p[:, 0] > 14)).sum())
    for got, share in ((on_pane, 0.1), (on_wall, 0.6)):  # reflected, transmitted; the other 30 % are lost
        assert abs(got - share * n) <= 4 * math.sqrt(n * share * (1 - share)), (got, share * n)


def test_mixed_pixels_lie_between_the_two_surfaces():
    spec = LidarSpec(**{**QUIET, "mixed_prob": 1.0}, **ALWAYS)
    front = shapes.box(10, 10.5, -1, 1, -3, 3, 0.5)  # a post 1 m wide, 10 m ahead
    wall = shapes.box(30, 30.2, -40, 40, -20, 20, 0.5)
    scene, mesh = _scene(front, wall)
    result = scan(scene, mesh.reflectance, mesh.material, ScatterVolumes(), spec, np.random.default_rng(3))
    x = result.points[:, 0]
    ahead = np.abs(np.arctan2(result.points[:, 1], x)) < 0.3
    between = ahead & (x > 10.6) & (x < 29.9)
    assert between.sum() >= 10  # the post's two edges, on the beams that reach the wall above and below it
    edge_azimuth = np.degrees(np.abs(np.arctan2(result.points[between, 1], x[between])))
    post_edge = np.degrees(np.arctan2(1.0, 10.0))
    assert np.all(np.abs(edge_azimuth - post_edge) < 0.3)  # only at the silhouette
