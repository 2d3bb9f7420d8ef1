"""Synthetic NeRF-synthetic data: files read back, camera geometry, exact alpha, shading, determinism, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from geo3d.cli import main
from geo3d.errors import InputError
from geo3d.io.meshes import read_mesh
from geo3d.io.transforms_json import read_transforms
from geo3d.synth import nerf

SEED = 5
RES = 32
VIEWS, TEST_VIEWS = 4, 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return nerf.generate_nerf(tmp_path_factory.mktemp("nerf") / "a", "toy", RES, VIEWS, TEST_VIEWS, SEED,
                              progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rgba(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        return np.asarray(im)


def _coverage_reference(tris: np.ndarray, res: int, ss: int, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force 2D coverage: for each pixel, how many of its ss x ss samples at offsets (k + 0.5) / ss lie
    in the union of the projected triangles ``tris`` (T, 3, 2) pixels. Returns (lower, upper) counts
    (res, res): samples within ``eps`` pixels of an edge count only in ``upper``."""
    tile = 4
    assert res % tile == 0
    sub = (np.arange(ss) + 0.5) / ss
    lower = np.zeros((res, res), np.int64)
    upper = np.zeros((res, res), np.int64)
    lo, hi = tris.min(1), tris.max(1)
    for ty in range(0, res, tile):
        for tx in range(0, res, tile):
            keep = (hi[:, 0] >= tx) & (lo[:, 0] <= tx + tile) & (hi[:, 1] >= ty) & (lo[:, 1] <= ty + tile)
            t = tris[keep]
            if not len(t):
                continue
            # samples (tile, tile, ss, ss): pixel row, pixel column, sub-row, sub-column
            py, px, sy, sx = np.meshgrid(ty + np.arange(tile), tx + np.arange(tile), sub, sub, indexing="ij")
            p = np.stack([px + sx, py + sy], -1).reshape(-1, 1, 2)
            # signed distance of each sample to each edge, normalised by the edge length
            dist = []
            for i in range(3):
                a, b = t[None, :, i], t[None, :, (i + 1) % 3]
                e = b - a
                cross = e[..., 0] * (p[..., 1] - a[..., 1]) - e[..., 1] * (p[..., 0] - a[..., 0])
                dist.append(cross / np.maximum(np.linalg.norm(e, axis=-1), 1e-12))
            dist = np.stack(dist, -1)  # (S, T, 3)
            strictly = ((dist > eps).all(-1) | (dist < -eps).all(-1)).any(1)
            loosely = ((dist > -eps).all(-1) | (dist < eps).all(-1)).any(1)
            lower[ty:ty + tile, tx:tx + tile] = strictly.reshape(tile, tile, ss * ss).sum(-1)
            upper[ty:ty + tile, tx:tx + tile] = loosely.reshape(tile, tile, ss * ss).sum(-1)
    return lower, upper


def test_layout_and_cameras_read_back(dataset):
    expected = nerf.split_poses(VIEWS, TEST_VIEWS, SEED)
    for split, count in (("train", VIEWS), ("test", TEST_VIEWS)):
        data = json.loads((dataset / f"transforms_{split}.json").read_text())
        assert data["camera_angle_x"] == pytest.approx(0.6911112070083618)
        assert [f["file_path"] for f in data["frames"]] == [f"./{split}/r_{i}" for i in range(count)]
        frames = read_transforms(dataset / f"transforms_{split}.json", skip_missing=False)
        assert [p.name for p in frames.image_paths] == [f"r_{i}.png" for i in range(count)]
        assert (frames.width, frames.height) == (RES, RES)
        for path in frames.image_paths:
            assert _rgba(path).shape == (RES, RES, 4)
        cams = nerf.make_cameras(expected[split], RES)
        torch.testing.assert_close(frames.cameras.world_to_cam, cams.world_to_cam, atol=1e-6, rtol=0)
        torch.testing.assert_close(frames.cameras.K, cams.K, atol=1e-5, rtol=0)
    scene = json.loads((dataset / "scene.json").read_text())
    assert (scene["object"], scene["seed"], scene["res"], scene["views"], scene["test_views"]) == \
        ("toy", SEED, RES, VIEWS, TEST_VIEWS)
    mesh = read_mesh(dataset / "mesh.ply")
    assert mesh.vertex_colors is not None and mesh.num_faces > 1000
    bounds = torch.stack([mesh.vertices.min(0).values, mesh.vertices.max(0).values]).double()
    torch.testing.assert_close(bounds, torch.tensor(scene["bounds"], dtype=torch.float64), atol=1e-5, rtol=0)
    assert np.linalg.norm(np.ptp(scene["bounds"], 0)) / 2 == pytest.approx(1.25, abs=1e-4)
    assert np.abs(np.mean(scene["bounds"], 0)).max() <= 0.05 + 1e-6


def test_camera_geometry():
    """Independent checks on the poses: on the 4 m sphere, looking at the origin, z up, spread, distinct."""
    poses = nerf.split_poses(40, 20, 0)
    for pose in poses.values():
        cams = nerf.make_cameras(pose, 100)
        centres = cams.centers.double()
        torch.testing.assert_close(centres.norm(dim=1), torch.full((len(cams),), 4.0, dtype=torch.float64))
        elevation = torch.rad2deg(torch.asin(centres[:, 2] / 4.0))
        assert elevation.min() >= -15 - 1e-4 and elevation.max() <= 75 + 1e-4
        assert (elevation > 0).float().mean() > 0.7  # mostly the upper hemisphere
        azimuth = torch.atan2(centres[:, 1], centres[:, 0])
        assert torch.histc(azimuth, 4, -math.pi, math.pi).min() >= len(cams) / 8  # all around
        uv, depth = cams.project(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]]))
        torch.testing.assert_close(uv[:, 0], torch.full((len(cams), 2), 50.0), atol=1e-3, rtol=0)
        assert (depth[:, 0] - 4.0).abs().max() < 1e-4
        assert (uv[:, 1, 1] < 50 - 1).all()  # world up is image up
        assert (uv[:, 1, 0] - 50).abs().max() < 1e-3  # ... and vertical: no roll
        # horizontal field of view 0.6911 rad: a point at the image edge is 0.3456 rad off axis
        assert cams.K[0, 0, 0].item() == pytest.approx(50 / math.tan(0.6911112070083618 / 2), rel=1e-6)
    gap = torch.cdist(torch.from_numpy(poses["train"][:, :3, 3]), torch.from_numpy(poses["test"][:, :3, 3]))
    assert gap.min() > 0.05


def test_alpha_is_exact_coverage_of_the_mesh(dataset):
    """Alpha = share of 3x3 sub-pixel samples inside the projected mesh.ply, by brute-force 2D tests."""
    frames = read_transforms(dataset / "transforms_train.json")
    mesh = read_mesh(dataset / "mesh.ply")
    uv, depth = frames.cameras.project(mesh.vertices)
    assert (depth > 1.0).all()  # the whole object is in front of every camera
    faces = mesh.faces.numpy()
    partial = 0
    for c, path in enumerate(frames.image_paths):
        alpha = _rgba(path)[..., 3].astype(np.int64)
        lower, upper = _coverage_reference(uv[c].double().numpy()[faces], RES, 3)
        hits = np.round(alpha * 9 / 255).astype(np.int64)
        np.testing.assert_array_equal(alpha, np.round(hits * 255 / 9))  # alpha is a ninth of 255
        assert ((hits >= lower) & (hits <= upper)).all(), np.argwhere((hits < lower) | (hits > upper))
        partial += ((alpha > 0) & (alpha < 255)).sum()
        # vertices land on covered pixels; nothing touches the border (the object always fits)
        pix = np.floor(uv[c].numpy()).astype(np.int64)
        inside = (pix >= 0).all(1) & (pix < RES).all(1)
        assert inside.all()
        assert (alpha[pix[:, 1], pix[:, 0]] > 0).mean() > 0.95  # not all: antennae are ~1/3 pixel wide here
        assert alpha[[0, -1]].max() == 0 and alpha[:, [0, -1]].max() == 0
        # centred: the alpha-weighted centroid is near the image centre
        ys, xs = np.mgrid[:RES, :RES] + 0.5
        centroid = np.array([(xs * alpha).sum(), (ys * alpha).sum()]) / alpha.sum()
        assert np.abs(centroid - RES / 2).max() < 0.15 * RES
        assert 0.1 < (alpha > 0).mean() < 0.8
    assert partial > 20  # anti-aliased silhouettes


def test_colours_in_range_and_not_premultiplied(dataset):
    for path in sorted((dataset / "train").glob("*.png")):
        rgba = _rgba(path).astype(np.int64)
        rgb, alpha = rgba[..., :3], rgba[..., 3]
        assert rgb[alpha == 0].max() == 0
        full = rgb[alpha == 255]
        assert full.min() >= 1 and full.max() <= 254
        assert len(np.unique(full, axis=0)) > 10  # crisp procedural detail, not flat colours
        # straight alpha: faint silhouette pixels are as bright as the object (premultiplied: ~alpha times)
        faint = rgb[(alpha > 0) & (alpha <= 3 * 255 // 9)]
        assert np.median(faint.max(1)) > 0.6 * np.median(full.max(1))


def _orbit_view(position) -> np.ndarray:
    """(1, 4, 4) OpenCV camera-to-world at ``position`` looking at the origin with z up (built here)."""
    c = np.asarray(position, np.float64)
    f = -c / np.linalg.norm(c)
    r = np.cross(f, [0, 0, 1.0])
    r /= np.linalg.norm(r)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([r, np.cross(f, r), f], 1)
    pose[:3, 3] = c
    return pose[None]


def test_lambertian_shading_matches_analytic_sphere_from_any_view():
    """A grey sphere: every covered pixel equals albedo * (ambient + sum w max(0, n.l)) with the exact sphere
    normal at the pixel-centre ray's hit, from two different views (view-independent shading)."""
    albedo = 0.8
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    obj = nerf.SynthObject("ball", [nerf.Part(sphere, nerf.Pattern("solid", np.full((2, 3), albedo)))])
    res = 48
    for position in ([4.0, 0.0, 0.0], [-1.0, 2.5, 3.0]):
        pose = _orbit_view(position)
        rgba = next(nerf.render_rgba(obj, pose, res))
        cams = nerf.make_cameras(pose, res)
        K = cams.K[0].double().numpy()
        ys, xs = np.mgrid[:res, :res] + 0.5
        d = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones_like(xs)], -1) @ pose[0, :3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        o = pose[0, :3, 3]
        b = d @ o
        disc = b**2 - (o @ o - 1.0)
        full = (rgba[..., 3] == 255) & (disc > 0.05)  # well inside the silhouette
        assert full.sum() > 200
        n = o + (-b - np.sqrt(np.clip(disc, 0, None)))[..., None] * d  # hit point on the unit sphere = normal
        light = nerf.AMBIENT + sum(w * np.clip(n @ (v / np.linalg.norm(v)), 0, None) for v, w in nerf.LIGHTS)
        expected = 255 * albedo * light
        err = np.abs(rgba[..., :3].astype(np.float64) - expected[..., None])[full]
        assert err.max() < 0.04 * 255 and err.mean() < 0.01 * 255
        assert (rgba[..., 3][disc < -0.15] == 0).all()  # 3.5 cm off the sphere, more than half a pixel


def _facing_y(position) -> np.ndarray:
    """(1, 4, 4) OpenCV camera-to-world at ``position`` looking along +y, image right = +x, image down = -z."""
    pose = np.eye(4)
    pose[:3, :3] = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]
    pose[:3, 3] = position
    return pose[None]


def test_colour_follows_the_3d_hit_point():
    """Stripes across x on a box face seen head-on: each pixel's colour is the stripe at its hit point."""
    colors = np.array([[0.9, 0.1, 0.1], [0.1, 0.1, 0.9]])
    period, phase = 0.2, 0.3
    box = trimesh.creation.box(extents=(4.0, 0.2, 4.0))  # front face at y = -0.1, fills the image
    obj = nerf.SynthObject("slab", [nerf.Part(box, nerf.Pattern("stripes", colors, period, phase,
                                                                np.array([1.0, 0.0, 0.0])))])
    res, camera_x = 40, 0.3  # 1.5 stripe periods: a hit point taken relative to the camera flips every stripe
    rgba = next(nerf.render_rgba(obj, _facing_y([camera_x, -4.0, 0.1]), res))
    focal = 0.5 * res / math.tan(0.5 * nerf.CAMERA_ANGLE_X)
    edges = camera_x + (np.arange(res + 1) - res / 2) / focal * 3.9  # world x of the pixel column borders
    first, last = np.floor(edges[:-1] / period + phase), np.floor(edges[1:] / period + phase)
    clean = first == last  # the pixel column lies inside one stripe
    assert clean.sum() > res / 3
    row = rgba[res // 2]
    assert (row[:, 3] == 255).all()
    red = row[:, 0].astype(int) > row[:, 2].astype(int)
    np.testing.assert_array_equal(red[clean], (first[clean] % 2) == 0)


def test_open_surfaces_are_lit_on_the_side_seen():
    """A one-sided square in the xz plane, seen from -y and from +y: lit with the normal facing the camera."""
    square = trimesh.Trimesh([[-1, 0, -1], [1, 0, -1], [1, 0, 1], [-1, 0, 1]], [[0, 1, 2], [0, 2, 3]], process=False)
    obj = nerf.SynthObject("square", [nerf.Part(square, nerf.Pattern("solid", np.full((2, 3), 0.8)))])
    for y in (-4.0, 4.0):
        pose = _facing_y([0.0, y, 0.0]) if y < 0 else _orbit_view([0.0, y, 0.0])
        rgba = next(nerf.render_rgba(obj, pose, 16))
        normal = np.array([0.0, np.sign(y), 0.0])  # towards the camera
        light = nerf.AMBIENT + sum(w * max(0.0, normal @ v / np.linalg.norm(v)) for v, w in nerf.LIGHTS)
        assert rgba[8, 8, 3] == 255
        np.testing.assert_allclose(rgba[8, 8, :3], 255 * 0.8 * light, atol=0.6)


def test_determinism_and_seed(dataset, tmp_path):
    again = nerf.generate_nerf(tmp_path / "b", "toy", RES, VIEWS, TEST_VIEWS, SEED, progress=False)
    assert _files(again) == _files(dataset)
    other = nerf.generate_nerf(tmp_path / "c", "toy", RES, 1, 1, SEED + 1, progress=False)
    assert (other / "train/r_0.png").read_bytes() != (dataset / "train/r_0.png").read_bytes()
    colors = [read_mesh(root / "mesh.ply").vertex_colors for root in (other, dataset)]
    assert colors[0].shape != colors[1].shape or not torch.equal(*colors)


@pytest.mark.parametrize("name", list(nerf.OBJECTS))
def test_every_object_fits_and_has_thin_detail(name):
    obj = nerf.build_object(name, np.random.default_rng(0))
    low, high = obj.bounds
    assert np.linalg.norm(high - low) / 2 == pytest.approx(1.25)
    assert np.abs((low + high) / 2).max() <= 0.05
    assert 1.0 < (high - low).max() < 2.5
    pose = nerf.split_poses(1, 1, 0)["train"]
    alpha = next(nerf.render_rgba(obj, pose, 48))[..., 3]
    assert alpha[[0, -1]].max() == 0 and alpha[:, [0, -1]].max() == 0
    assert 0.1 < (alpha > 0).mean() < 0.8
    # thin parts: some part is under 5 cm thick (about 2 pixels at 128 x 128)
    assert min(np.ptp(p.mesh.vertices, 0).min() for p in obj.parts) < 0.05


@pytest.mark.parametrize("kwargs, field", [({"object": "teapot"}, "object"), ({"res": 0}, "res"),
                                           ({"views": 0}, "views"), ({"test_views": 0}, "test_views")])
def test_bad_arguments(tmp_path, kwargs, field):
    with pytest.raises(InputError, match=f"^{field}: "):
        nerf.generate_nerf(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", "nerf", str(out), "--object", "toy", "--res", "32", "--views", "4", "--test-views", "2"]) == 0
    assert len(read_transforms(out / "transforms_train.json")) == 4
    assert len(read_transforms(out / "transforms_test.json")) == 2
    assert (out / "mesh.ply").is_file() and (out / "scene.json").is_file()
    capsys.readouterr()
    assert main(["synth", "nerf", str(tmp_path / "bad"), "--object", "teapot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("geo3d: error: object: unknown 'teapot'; expected one of toy")
