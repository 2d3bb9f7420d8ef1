"""Viewing 3D Gaussian splatting PLYs: centres, ellipsoids, file recognition, headless PNGs, and a real window.

Ellipsoid vertices are checked against the Gaussian's covariance built independently (scipy rotation):
each must lie at Mahalanobis distance 2. Headless images are small; the window test runs under Xvfb.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from geo3d.cli import main
from geo3d.io import write_gaussian_ply, write_point_cloud
from geo3d.types import SH_C0, Gaussians, PointCloud
from viewers import render
from viewers.colors import BACKGROUND
from viewers.files import load_scene, view_files
from viewers.scene import Scene

ICO_VERTICES, ICO_FACES = 42, 80  # a once-subdivided icosphere
COLOR = (0.9, 0.1, 0.7)


def make_gaussians(n: int, seed: int = 0, degree: int = 1, color: tuple[float, float, float] | None = None
                   ) -> Gaussians:
    rng = np.random.default_rng(seed)
    rgb = np.tile(color, (n, 1)) if color is not None else rng.uniform(0.05, 0.95, (n, 3))
    sh = rng.normal(scale=0.1, size=(n, (degree + 1) ** 2, 3))
    sh[:, 0] = (rgb - 0.5) / SH_C0
    return Gaussians(rng.normal(size=(n, 3)), rng.normal(size=(n, 4)), np.log(rng.uniform(0.02, 0.2, (n, 3))),
                     rng.normal(scale=2.0, size=n), sh)


def test_centres_are_the_visible_means_in_their_dc_colour():
    g = make_gaussians(40)
    opacity = 1 / (1 + np.exp(-g.opacity_logits.numpy().astype(np.float64)))
    keep = opacity >= 0.3
    assert 0 < keep.sum() < len(g)
    scene = Scene()
    (item,) = scene.add_gaussians(g, min_opacity=0.3, label="splats")
    assert item.kind == "points" and item.name == "gaussians_0"
    np.testing.assert_allclose(np.asarray(item.geometry.points), g.means.numpy()[keep], atol=1e-6)
    dc = g.sh[:, 0].numpy().astype(np.float64)[keep]
    np.testing.assert_allclose(np.asarray(item.geometry.colors), np.clip(0.5 + SH_C0 * dc, 0, 1), atol=1e-6)
    assert scene.legend[0][0] == "splats"
    with pytest.raises(ValueError, match="opacity"):
        Scene().add_gaussians(g, min_opacity=1.0)
    with pytest.raises(ValueError, match="mode"):
        Scene().add_gaussians(g, mode="blobs")


def test_ellipsoids_are_the_largest_opaque_gaussians_at_two_sigma():
    g = make_gaussians(60, seed=1)
    opacity = 1 / (1 + np.exp(-g.opacity_logits.numpy().astype(np.float64)))
    scales = np.exp(g.log_scales.numpy().astype(np.float64))
    candidates = np.flatnonzero(opacity >= 0.5)
    chosen = candidates[np.argsort(-scales[candidates].prod(1))[:7]]
    scene = Scene()
    mesh_item, points_item = scene.add_gaussians(g, mode="ellipsoids", max_ellipsoids=7, min_opacity=0.1)
    assert mesh_item.kind == "mesh" and points_item.kind == "points"
    vertices = np.asarray(mesh_item.geometry.vertices)
    assert vertices.shape == (7 * ICO_VERTICES, 3) and len(mesh_item.geometry.triangles) == 7 * ICO_FACES
    assert mesh_item.geometry.has_vertex_normals()
    # The rest of the visible Gaussians are centres.
    assert len(points_item.geometry.points) == (opacity >= 0.1).sum() - 7
    blocks = vertices.reshape(7, ICO_VERTICES, 3)
    colors = np.asarray(mesh_item.geometry.vertex_colors).reshape(7, ICO_VERTICES, 3)
    means = g.means.numpy().astype(np.float64)
    quats = g.quats.numpy().astype(np.float64)
    for block, block_colors in zip(blocks, colors):
        centre = block.mean(0)  # an icosphere is symmetric about its centre
        (k,) = [k for k in chosen if np.linalg.norm(means[k] - centre) < 1e-5]
        rot = Rotation.from_quat(quats[k], scalar_first=True).as_matrix()
        cov = rot @ np.diag(scales[k] ** 2) @ rot.T
        rel = block - means[k]
        mahalanobis = np.sqrt(np.einsum("vi,ij,vj->v", rel, np.linalg.inv(cov), rel))
        np.testing.assert_allclose(mahalanobis, 2.0, atol=1e-4)
        dc = np.clip(0.5 + SH_C0 * g.sh[k, 0].numpy().astype(np.float64), 0, 1)
        np.testing.assert_allclose(block_colors, np.tile(dc, (ICO_VERTICES, 1)), atol=1e-6)
    # All ellipsoids, no centres left: one mesh item; a second call gets fresh names.
    (only,) = scene.add_gaussians(g, mode="ellipsoids", max_ellipsoids=1000, min_opacity=0.5)
    assert only.kind == "mesh" and len(only.geometry.vertices) == len(candidates) * ICO_VERTICES
    assert len({item.name for item in scene.items}) == 3


def test_gaussian_ply_is_recognised_by_its_header(tmp_path):
    write_gaussian_ply(tmp_path / "scene.ply", make_gaussians(123, degree=3))
    scene, title = load_scene(tmp_path / "scene.ply")
    assert title == "scene.ply: 123 Gaussians (degree 3 SH)"
    assert [item.kind for item in scene.items] == ["points"]
    scene, _ = load_scene(tmp_path / "scene.ply", gaussians="ellipsoids")
    assert [item.kind for item in scene.items][0] == "mesh"
    # An ordinary coloured point-cloud PLY is still a point cloud.
    write_point_cloud(tmp_path / "cloud.ply", PointCloud(np.random.default_rng(0).normal(size=(50, 3)),
                                                         colors=np.full((50, 3), 0.5)))
    _, title = load_scene(tmp_path / "cloud.ply")
    assert title == "cloud.ply: 50 points"


@pytest.fixture(scope="module")
def splat_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("splats") / "scene_3dgs.ply"
    g = make_gaussians(400, seed=2, color=COLOR)
    g.opacity_logits = torch.full((400,), 4.0)
    write_gaussian_ply(path, g)
    return path


def count_color(image: np.ndarray, rgb: tuple[float, float, float], tol: int = 3) -> int:
    want = np.round(np.array(rgb) * 255).astype(np.int32)
    return int((np.abs(image.astype(np.int32) - want).max(-1) <= tol).sum())


def test_view_gaussians_headless_png(splat_file, tmp_path, capsys):
    if not render.headless_available():
        pytest.skip("Open3D headless rendering is not available here")
    code = main(["view", str(splat_file), "--out", str(tmp_path / "centres.png"), "--width", "320", "--height", "240"])
    assert code == 0 and str(tmp_path / "centres.png") in capsys.readouterr().out
    image = np.asarray(Image.open(tmp_path / "centres.png").convert("RGB"))
    assert count_color(image, COLOR) > 300  # unlit points keep their exact DC colour
    assert count_color(image, BACKGROUND) > 0.5 * image.shape[0] * image.shape[1]
    out = view_files(splat_file, out=tmp_path / "ell.png", width=320, height=240, gaussians="ellipsoids")
    lit = np.asarray(Image.open(out).convert("RGB")).astype(np.int32)
    # Lit ellipsoids are shaded, so not the exact colour, but magenta-dominated: red and blue over green.
    magenta = (lit[..., 0] > lit[..., 1] + 40) & (lit[..., 2] > lit[..., 1] + 25)
    assert magenta.sum() > 2000


# ------------------------------------------------------------------------------------- interactive window

def test_window_shows_the_gaussians_and_closes_cleanly(splat_file, magenta_window):
    script = textwrap.dedent(f"""
        from viewers.files import view_files
        view_files({str(splat_file)!r}, width=400, height=300)
    """)
    magenta_window(script, "Gaussians")
