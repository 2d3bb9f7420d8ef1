"""Synthetic RGB-D scans: files read back, depth on the mesh, the Kinect noise model, objects, determinism, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
import trimesh

from geo3d.cli import main
from geo3d.errors import InputError
from geo3d.io.meshes import read_mesh
from geo3d.io.rgbd import read_rgbd_sequence
from geo3d.synth import rgbd

SEED = 3
W, H = 64, 48
FRAMES = 3


def _generate(out: Path, object: str = "blob", frames: int = FRAMES, noise: str = "none", seed: int = SEED,
              **kwargs) -> Path:
    return rgbd.generate_rgbd(out, object, frames, noise, seed, W, H, progress=False, **kwargs)


@pytest.fixture(scope="module")
def exact_scan(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("rgbd") / "exact")


@pytest.fixture(scope="module")
def noisy_scan(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("rgbd") / "noisy", noise="kinect")


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def _sigma(z):
    """Nguyen, Izadi, Lovell 2012, axial noise of the Kinect v1, metres."""
    return 0.0012 + 0.0019 * (z - 0.4) ** 2


def _distance_to_mesh(path: Path, points: np.ndarray) -> np.ndarray:
    mesh = read_mesh(path)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.numpy()), o3d.core.Tensor(mesh.faces.numpy().astype(np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def _assert_depth_on_mesh(scan: Path, min_share: float = 0.05) -> None:
    """Back-projected valid depth (pixel centres, z-depth, K and camera-to-world as read back) lies on mesh.ply:
    within the 0.5 mm depth rounding (times the ray's length over its z, < 1.2 here) plus float error."""
    for frame in read_rgbd_sequence(scan):
        assert frame.depth.valid.float().mean() > min_share  # the object is in view
        points = frame.depth.to_points(frame.cam_to_world).numpy()
        assert _distance_to_mesh(scan / "mesh.ply", points).max() < 0.7e-3


# ------------------------------------------------------------------------------------------- layout, poses

def test_layout_reads_back_with_intrinsics_and_poses(exact_scan):
    seq = read_rgbd_sequence(exact_scan)
    assert len(seq) == FRAMES and seq.indices == list(range(FRAMES))
    focal = 0.5 * W / math.tan(math.radians(30.0))  # 60 degrees horizontal field of view
    np.testing.assert_allclose(seq.K.numpy(), [[focal, 0, W / 2], [0, focal, H / 2], [0, 0, 1]], rtol=1e-6)
    scene = json.loads((exact_scan / "scene.json").read_text())
    assert scene["object"] == "blob" and scene["seed"] == SEED and scene["noise"] == "none"
    assert scene["frames"] == FRAMES and scene["diagonal"] == 1.0 and scene["noise_parameters"] is None
    np.testing.assert_allclose(scene["K"], seq.K.numpy(), rtol=1e-6)
    for frame in seq:
        assert frame.color.shape == (H, W, 3) and frame.depth.depth.shape == (H, W)
        pose = frame.cam_to_world.double().numpy()
        centre, axis = pose[:3, 3], pose[:3, 2]
        distance = np.linalg.norm(centre)
        assert 1.2 - 0.09 < distance < 1.6 + 0.09  # 1.2-1.6 diagonals from a look-at point within 0.05 per axis
        assert -20.5 < math.degrees(math.asin(centre[2] / distance)) < 70.5
        # the optical axis passes within the look-at jitter (0.05 * sqrt(3)) of the object centre
        assert np.linalg.norm(np.cross(axis, -centre)) < 0.087
        assert axis @ -centre > 0
        assert pose[2, 1] < 0  # image y (down) points down in the world: z up projects upwards
        background = ~frame.depth.valid.numpy()
        assert (frame.color.numpy()[background] == 0).all() and (frame.color.numpy()[~background] > 0).any()


def test_exact_depth_lies_on_the_mesh(exact_scan):
    _assert_depth_on_mesh(exact_scan)


def test_multi_part_object_depth_lies_on_its_outer_surface_mesh(tmp_path):
    # mesh.ply of a multi-part object leaves out faces inside other parts; the visible ones must all remain
    _assert_depth_on_mesh(_generate(tmp_path / "robot", "robot", frames=2), min_share=0.02)


def test_bunny_from_shared_data(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("GEO3D_SHARED_DATA", str(shared_data))
    scan = _generate(tmp_path / "bunny", "bunny", frames=2, diagonal=0.5)
    _assert_depth_on_mesh(scan)
    original = trimesh.load(shared_data / "surface" / "bunny.ply", process=False)
    size = np.ptp(original.vertices, 0)
    mesh = read_mesh(scan / "mesh.ply").vertices.double().numpy()
    # y up in the file -> z up, centred, scaled to a 0.5 m diagonal
    np.testing.assert_allclose(np.ptp(mesh, 0), np.array([size[0], size[2], size[1]]) * 0.5 / np.linalg.norm(size),
                               rtol=1e-5)
    np.testing.assert_allclose(mesh.min(0) + mesh.max(0), 0, atol=1e-6)


def test_bunny_missing_names_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEO3D_SHARED_DATA", str(tmp_path / "nowhere"))
    expected = str(tmp_path / "nowhere" / "surface" / "bunny.ply")
    with pytest.raises(InputError, match="bunny"):
        try:
            rgbd.generate_rgbd(tmp_path / "out", "bunny", 1, progress=False)
        except InputError as e:
            assert e.path == expected
            raise
    assert main(["synth", "rgbd", str(tmp_path / "out"), "--frames", "1", "--res", "16"]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------------------ objects

@pytest.mark.parametrize("name", ["blob", "torus_knot", "toy", "chair", "mug", "robot"])
def test_objects_are_centred_and_scaled_to_the_diagonal(name):
    obj = rgbd.build_rgbd_object(name, np.random.default_rng(0), diagonal=0.7)
    vertices = np.concatenate([p.mesh.vertices for p in obj.parts])
    np.testing.assert_allclose(np.linalg.norm(np.ptp(vertices, 0)), 0.7, rtol=1e-9)
    np.testing.assert_allclose(vertices.min(0) + vertices.max(0), 0, atol=1e-9)
    if len(obj.parts) == 1:  # the single meshes are closed and outward facing (ground truth for reconstruction)
        assert obj.parts[0].mesh.is_watertight and obj.parts[0].mesh.volume > 0


def test_mesh_ply_bounding_box_diagonal(exact_scan, tmp_path):
    for scan, diagonal in ((exact_scan, 1.0), (_generate(tmp_path / "knot", "torus_knot", 1, diagonal=2.5), 2.5)):
        vertices = read_mesh(scan / "mesh.ply").vertices.double().numpy()
        assert np.linalg.norm(np.ptp(vertices, 0)) == pytest.approx(diagonal, rel=1e-6)


def test_outer_surface_drops_faces_inside_other_parts():
    obj = rgbd.build_rgbd_object("robot", np.random.default_rng(1))
    assert all(p.mesh.is_convex for p in obj.parts)  # so "inside" is an independent half-space test

    def deepest_inside(mesh) -> np.ndarray:
        """For each face, how deep (metres) its least deep corner lies inside the part where that is deepest."""
        vertices, faces = mesh.vertices.double().numpy(), mesh.faces.numpy()
        depth = np.full(len(faces), -np.inf)
        for part in obj.parts:
            m = part.mesh
            near = np.all((vertices > m.bounds[0] - 0.01) & (vertices < m.bounds[1] + 0.01), 1)[faces].all(1)
            corners = vertices[faces[near]].reshape(-1, 3)
            # signed distance to each face plane; inside the convex part when all are negative
            planes = np.einsum("nfk,fk->nf", corners[:, None] - m.triangles[None, :, 0], m.face_normals)
            depth[near] = np.maximum(depth[near], -planes.max(1).reshape(-1, 3).max(1))
        return depth

    raw = obj.mesh(0.024)
    outer = rgbd.surface_mesh(obj, 0.024)
    assert (deepest_inside(raw) > 1e-3).sum() > 100  # legs in the torso, eyes in the head...
    assert deepest_inside(outer).max() < 2e-4
    assert outer.num_faces > 0.9 * raw.num_faces and outer.vertex_colors is not None


def test_unknown_object_and_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="object: unknown 'teapot'"):
        rgbd.generate_rgbd(tmp_path, "teapot", progress=False)
    with pytest.raises(InputError, match="noise"):
        rgbd.generate_rgbd(tmp_path, "blob", noise="kinect2", progress=False)
    with pytest.raises(InputError, match="frames"):
        rgbd.generate_rgbd(tmp_path, "blob", frames=0, progress=False)
    with pytest.raises(InputError, match="diagonal"):
        rgbd.generate_rgbd(tmp_path, "blob", diagonal=-1.0, progress=False)
    assert not any(tmp_path.iterdir())


# -------------------------------------------------------------------------------------------- noise model

@pytest.mark.parametrize("z", [0.6, 1.5, 3.0])
def test_noise_std_on_a_flat_wall_follows_sigma_of_z(z):
    wall = np.full((120, 160), z)
    noisy = rgbd.kinect_noise(wall, np.random.default_rng(0))
    valid = noisy > 0
    residual = noisy[valid] - z
    assert residual.std() == pytest.approx(_sigma(z), rel=0.05)  # 19k samples: std known to ~0.5%
    assert abs(residual.mean()) < 4 * _sigma(z) / math.sqrt(valid.sum())


def test_random_dropout_is_one_percent_on_a_wall():
    noisy = rgbd.kinect_noise(np.full((200, 200), 1.0), np.random.default_rng(1))
    assert 0.008 < (noisy == 0).mean() < 0.012  # 40k pixels: 1% +- 0.05%


def test_edge_dropout_at_a_step():
    exact = rgbd.KinectNoise(sigma_base=0.0, sigma_quadratic=0.0, dropout=0.0)
    step = np.full((H, W), 1.0)
    step[:, 32:] = 1.5
    for width, dropped in ((1, [31, 32]), (2, [30, 31, 32, 33])):
        params = rgbd.KinectNoise(**{**exact.__dict__, "edge_width": width})
        out = rgbd.kinect_noise(step, np.random.default_rng(0), params)
        missing_columns = np.flatnonzero((out == 0).all(0))
        assert missing_columns.tolist() == dropped
        kept = [c for c in range(W) if c not in dropped]
        np.testing.assert_array_equal(out[:, kept], step[:, kept])
    small = np.full((H, W), 1.0)
    small[:, 32:] = 1.02  # a 2 cm step is below the 3 cm threshold
    ramp = 1.0 + 0.025 * np.arange(W)[None].repeat(H, 0)  # 2.5 cm per pixel: a slope, no discontinuity
    for depth in (small, ramp):
        np.testing.assert_array_equal(rgbd.kinect_noise(depth, np.random.default_rng(0), exact), depth)
    hole = np.full((H, W), 1.0)
    hole[10:14, 20:24] = 0.0  # missing pixels count as far away: a one-pixel ring around the hole goes
    out = rgbd.kinect_noise(hole, np.random.default_rng(0), exact)
    expected = np.ones((H, W), bool)
    expected[9:15, 19:25] = False
    np.testing.assert_array_equal(out > 0, expected)
    # with the default noise the step's two columns go and about 1% of the rest
    out = rgbd.kinect_noise(step, np.random.default_rng(0))
    assert (out[:, 31:33] == 0).all() and 0.003 < (out[:, :31] == 0).mean() < 0.02


def test_depth_edges_matches_a_brute_force_reference():
    rng = np.random.default_rng(4)
    depth = np.repeat(np.repeat(rng.choice([0.0, 1.0, 1.02, 1.1, 2.0], (4, 5)), 4, 0), 4, 1)
    depth += rng.uniform(0, 0.01, depth.shape) * (depth > 0)
    for width in (1, 2):
        edges = rgbd.depth_edges(depth, 0.03, width)
        reference = np.zeros_like(edges)
        for v in range(depth.shape[0]):
            for u in range(depth.shape[1]):
                if depth[v, u] <= 0:
                    continue
                window = depth[max(v - width, 0):v + width + 1, max(u - width, 0):u + width + 1]
                reference[v, u] = ((window <= 0) | (np.abs(window - depth[v, u]) > 0.03)).any()
        np.testing.assert_array_equal(edges, reference)
        assert reference.any() and not reference.all()


def test_generated_noise_matches_the_model(exact_scan, noisy_scan):
    exact, noisy = read_rgbd_sequence(exact_scan), read_rgbd_sequence(noisy_scan)
    scene = json.loads((noisy_scan / "scene.json").read_text())
    assert scene["noise"] == "kinect" and scene["noise_parameters"]["sigma_quadratic"] == 0.0019
    residuals = []
    for a, b in zip(exact, noisy):
        np.testing.assert_array_equal(a.cam_to_world.numpy(), b.cam_to_world.numpy())  # the same cameras
        np.testing.assert_array_equal(a.color.numpy(), b.color.numpy())
        za, zb = a.depth.depth.double().numpy(), b.depth.depth.double().numpy()
        assert not (zb[za == 0] > 0).any()  # noise never invents depth
        # every pixel of the object beside the background (4-neighbours, within the image) has dropped out
        valid = za > 0
        silhouette = np.zeros_like(valid)
        silhouette[1:] |= ~valid[:-1]
        silhouette[:-1] |= ~valid[1:]
        silhouette[:, 1:] |= ~valid[:, :-1]
        silhouette[:, :-1] |= ~valid[:, 1:]
        assert (silhouette & valid).sum() > 20 and (zb[silhouette & valid] == 0).all()
        both = (za > 0) & (zb > 0)
        # both depths are rounded to 1 mm: add the variance of the difference of two roundings, 2 / 12 mm^2
        residuals.append((zb - za)[both] / np.sqrt(_sigma(za[both]) ** 2 + 2e-6 / 12))
        assert both.sum() > 0.5 * (valid & ~silhouette).sum()  # steep slopes also drop (> 3 cm per pixel)
    residuals = np.concatenate(residuals)
    assert len(residuals) > 500 and residuals.std() == pytest.approx(1.0, rel=0.15)


# ------------------------------------------------------------------------------------ determinism and CLI

def test_same_seed_same_bytes(tmp_path, noisy_scan):
    again = _generate(tmp_path / "again", noise="kinect")
    assert _files(again) == _files(noisy_scan)
    other = _files(_generate(tmp_path / "other", noise="kinect", seed=SEED + 1))
    assert other["frame-000000.depth.png"] != _files(noisy_scan)["frame-000000.depth.png"]


def test_rerun_with_fewer_frames_leaves_no_stale_frames(tmp_path):
    _generate(tmp_path / "a", frames=3)
    _generate(tmp_path / "a", frames=2)
    assert len(read_rgbd_sequence(tmp_path / "a")) == 2


def test_cli_synth_rgbd(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["synth", "rgbd", str(out), "--object", "blob", "--frames", "3", "--res", "32", "--seed", "2",
                 "--noise", "none"])
    assert code == 0 and str(out) in capsys.readouterr().out
    seq = read_rgbd_sequence(out)
    assert len(seq) == 3 and seq[0].depth.depth.shape == (24, 32)
    scene = json.loads((out / "scene.json").read_text())
    assert (scene["object"], scene["seed"], scene["noise"], scene["width"], scene["height"]) == ("blob", 2, "none",
                                                                                                  32, 24)
    code = main(["synth", "rgbd", str(tmp_path / "bad"), "--object", "teapot", "--frames", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "teapot" in err and "bunny" in err
