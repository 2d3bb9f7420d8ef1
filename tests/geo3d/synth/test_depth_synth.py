"""Synthetic depth-completion data: z-depth against analytic planes, files read back, resuming, determinism, sky."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geo3d.cli import main
from geo3d.errors import InputError
from geo3d.io.depth_png import read_depth_png
from geo3d.synth import depth as synth

SEED = 5
W, H = 192, 64
FRAMES = 4


def _generate(out: Path, frames: int = FRAMES, seed: int = SEED, kind: str = "mixed") -> Path:
    return synth.generate_depth(out, frames, seed, W, H, kind, progress=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("depth") / "mixed")


@pytest.fixture(scope="module")
def outdoor(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("depth") / "outdoor", kind="outdoor")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _quad(corners: np.ndarray) -> synth.Surface:
    """A flat quadrilateral (4, 3) with a checker texture."""
    texture = synth.Texture("checker", np.array([[0.2, 0.3, 0.8], [0.9, 0.8, 0.1]]), period=0.5)
    return synth.Surface(np.asarray(corners, np.float64), np.array([[0, 1, 2], [0, 2, 3]]), texture)


def _pixel_rays_world(pose: np.ndarray, K: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Unit world directions of the rays through pixel centres (row, col) (N, 2)."""
    uv1 = np.stack([pixels[:, 1] + 0.5, pixels[:, 0] + 0.5, np.ones(len(pixels))], 1)
    cam = uv1 @ np.linalg.inv(K).T
    world = cam @ pose[:3, :3].T
    return world / np.linalg.norm(world, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------- z-depth, render

def test_fronto_parallel_plane_has_constant_z_depth_not_ray_length():
    """A plane 7 m ahead and square to the optical axis: every pixel's z-depth is 7 m, although rays to the
    corners are about 1.33x longer (80 degree field of view)."""
    K = synth.camera_matrix(W, H, 80.0)
    pose = synth.look_pose((1.0, -2.0, 1.5), 0.3, 0.0)
    forward, right, down = pose[:3, 2], pose[:3, 0], pose[:3, 1]
    centre = pose[:3, 3] + 7.0 * forward
    corners = [centre + 50 * (sx * right + sy * down) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    rgb, depth = synth.render_view([_quad(np.array(corners))], pose, K, W, H)
    assert rgb.shape == (H, W, 3) and depth.shape == (H, W) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, 7.0, atol=1e-4)
    corner_ray_length = 7.0 * np.linalg.norm(np.linalg.inv(K) @ [0.5, 0.5, 1.0])
    assert corner_ray_length > 1.3 * 7.0


def test_tilted_plane_matches_analytic_depth():
    """An oblique plane under an oblique, non-centred camera: depth = the camera-frame z of the analytic
    ray-plane intersection, to 1e-4 m at pixels over the whole image."""
    normal = np.array([-0.15, 0.1, 1.0])
    normal /= np.linalg.norm(normal)
    offset = -0.4  # plane: normal . X = offset
    u_axis = np.cross(normal, [1.0, 0.0, 0.0])
    u_axis /= np.linalg.norm(u_axis)
    v_axis = np.cross(normal, u_axis)
    on_plane = offset * normal
    corners = np.array([on_plane + 100 * (a * u_axis + b * v_axis) for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    K = np.array([[150.0, 0.0, 90.0], [0.0, 140.0, 35.0], [0.0, 0.0, 1.0]])
    pose = synth.look_pose((0.5, 0.2, 2.5), math.radians(40.0), math.radians(-30.0))
    _, depth = synth.render_view([_quad(corners)], pose, K, W, H)
    pixels = np.array([[0, 0], [0, W - 1], [H - 1, 0], [H - 1, W - 1], [H // 2, W // 2], [17, 133], [51, 9]])
    rays = _pixel_rays_world(pose, K, pixels)
    origin = pose[:3, 3]
    t = (offset - normal @ origin) / (rays @ normal)
    assert np.all(t > 0)
    points = origin + t[:, None] * rays
    z_cam = (points - origin) @ pose[:3, 2]  # camera z axis in the world
    np.testing.assert_allclose(depth[pixels[:, 0], pixels[:, 1]], z_cam, atol=1e-4)


def test_ground_plane_sky_and_far_ground_are_missing():
    """A level camera 1.7 m above an endless ground: rays above the horizon (sky) and ground hits beyond
    80 m are 0; nearer ground has depth 1.7 / tan(angle below the horizon) along the (level) optical axis."""
    K = synth.camera_matrix(W, H, 80.0)
    pose = synth.look_pose((0.0, 0.0, 1.7), 0.0, 0.0)
    ground = np.array([[-1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [1e4, 1e4, 0.0], [-1e4, 1e4, 0.0]])
    rgb, depth = synth.render_view([_quad(ground)], pose, K, W, H, synth.Lighting())
    rows = np.arange(H) + 0.5
    below = (rows - K[1, 2]) / K[1, 1]  # tan of the angle below the horizon (a level camera)
    expected = np.where(below > 0, 1.7 / np.where(below > 0, below, 1.0), 0.0)
    expected = np.where(expected <= synth.MAX_DEPTH, expected, 0.0)
    np.testing.assert_allclose(depth, np.broadcast_to(expected[:, None], (H, W)), atol=1e-4)
    assert (depth[: H // 2] == 0).all() and (depth[-1] > 0).all()
    sky = rgb[: H // 2]
    assert (sky[..., 2] > sky[..., 0]).all()  # blue sky
    assert (np.diff(sky[:, W // 2, 0]) > 0).all()  # lighter towards the horizon


def test_textures_make_colour_edges_inside_a_surface():
    K = synth.camera_matrix(W, H, 80.0)
    pose = synth.look_pose((0.0, 0.0, 1.7), 0.0, math.radians(-20.0))
    ground = np.array([[-100, -100, 0.0], [100, -100, 0.0], [100, 100, 0.0], [-100, 100, 0.0]])
    rgb, depth = synth.render_view([_quad(ground)], pose, K, W, H)
    lower = rgb[H // 2:]
    assert (depth[H // 2:] > 0).all()
    assert np.abs(np.diff(lower, axis=1)).max() > 0.3  # checker edges on one plane


# ------------------------------------------------------------------------------------------- the dataset

def test_layout_and_round_trip(dataset):
    scene = json.loads((dataset / "scene.json").read_text())
    assert scene["frames"] == FRAMES and scene["seed"] == SEED and scene["kind"] == "mixed"
    assert (scene["width"], scene["height"], scene["max_depth"]) == (W, H, 80.0)
    assert len(scene["kinds"]) == FRAMES and set(scene["kinds"]) <= {"indoor", "outdoor"}
    seeds = np.random.SeedSequence(SEED).spawn(FRAMES)
    for i in range(FRAMES):
        name = f"{i:06d}"
        image, depth, K, kind = synth.synth_frame(seeds[i], "mixed", W, H)
        assert kind == scene["kinds"][i]
        with Image.open(dataset / "image" / f"{name}.png") as im:
            assert im.mode == "RGB" and im.size == (W, H)
            np.testing.assert_array_equal(np.asarray(im), image)
        read = read_depth_png(dataset / "groundtruth" / f"{name}.png", scale=256)
        assert read.depth.shape == (H, W)
        np.testing.assert_array_equal(read.valid.numpy(), depth > 0)
        assert np.abs(read.depth.numpy() - depth).max() <= 0.5 / 256 + 1e-6  # 1/256 m codes
        K_read = np.loadtxt(dataset / "intrinsics" / f"{name}.txt")
        np.testing.assert_allclose(K_read, K, rtol=1e-8)
        assert K_read[0, 0] == K_read[1, 1] and K_read[0, 2] == W / 2 and K_read[1, 2] == H / 2
        fov = math.degrees(2 * math.atan(W / 2 / K_read[0, 0]))
        assert (fov == pytest.approx(80.0)) if kind == "outdoor" else (60.0 <= fov <= 70.0)
        if kind == "indoor":  # a closed room: everything hit, nothing beyond 10-odd metres
            assert read.valid.all() and 0.3 < read.depth.min() and read.depth.max() < 12.0


def test_outdoor_frames_have_missing_sky(outdoor):
    """Outdoor frames: every ray that would meet the road within 79 m of z-depth has a depth (the road, or
    something nearer); the missing pixels look up (sky, or facades beyond 80 m). (The sky's colour and exact
    zeros are checked on an analytic ground plane above.)"""
    scene = json.loads((outdoor / "scene.json").read_text())
    assert scene["kinds"] == ["outdoor"] * FRAMES
    seeds = np.random.SeedSequence(SEED).spawn(FRAMES)
    sky_pixels = 0
    for i in range(FRAMES):
        gt = read_depth_png(outdoor / "groundtruth" / f"{i:06d}.png", scale=256)
        K = np.loadtxt(outdoor / "intrinsics" / f"{i:06d}.txt")
        pose = synth.outdoor_scene(np.random.default_rng(seeds[i]))[2]  # the frame's camera
        v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
        rays = np.stack([u.ravel(), v.ravel(), np.ones(H * W)], 1) @ np.linalg.inv(K).T @ pose[:3, :3].T  # z_cam=1
        missing = ~gt.valid.numpy().ravel()
        ground_depth = np.where(rays[:, 2] < 0, pose[2, 3] / np.maximum(-rays[:, 2], 1e-12), np.inf)
        assert not missing[ground_depth < 79.0].any()
        up = rays[:, 2] > 0
        assert missing[up].mean() > 0.1 and missing[~up].mean() < 0.1  # missing: sky (or beyond 80 m)
        sky_pixels += (missing & up).sum()
        assert gt.depth.max() <= synth.MAX_DEPTH
    assert sky_pixels > 0.05 * FRAMES * H * W


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    again = _generate(tmp_path / "again")
    assert _files(again) == _files(dataset)
    other = _files(_generate(tmp_path / "other", frames=1, seed=SEED + 1))
    assert other["image/000000.png"] != _files(dataset)["image/000000.png"]


def test_resume_writes_only_missing_frames(dataset, tmp_path):
    out = _generate(tmp_path / "resume", frames=2)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.*")}
    (out / "groundtruth" / "000001.png").unlink()
    (out / "scene.json").unlink()
    _generate(out, frames=FRAMES)  # resumes frame 1, adds frames 2-3
    after = _files(out)
    assert after == _files(dataset)
    for path, mtime in before.items():
        if path.name != "scene.json" and path.exists() and "000001" not in path.name:
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    _generate(out, frames=2)  # fewer frames: the extra ones go
    assert sorted(p.name for p in (out / "image").iterdir()) == ["000000.png", "000001.png"]


def test_refuses_a_folder_of_other_parameters(dataset, tmp_path):
    out = _generate(tmp_path / "a", frames=1)
    with pytest.raises(InputError, match="generated with"):
        synth.generate_depth(out, 1, SEED + 1, W, H, "mixed", progress=False)
    (tmp_path / "b" / "image").mkdir(parents=True)
    (tmp_path / "b" / "image" / "000000.png").write_bytes(b"x")
    with pytest.raises(InputError, match="not written by"):
        _generate(tmp_path / "b", frames=1)


@pytest.mark.parametrize("kwargs, match", [({"kind": "forest"}, "kind"), ({"frames": 0}, "frames"),
                                           ({"width": 0}, "width")])
def test_bad_arguments(tmp_path, kwargs, match):
    args = {"frames": 1, "seed": 0, "width": W, "height": H, "kind": "mixed"} | kwargs
    with pytest.raises(InputError, match=match):
        synth.generate_depth(tmp_path / "x", progress=False, **args)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    code = main(["synth", "depth", str(out), "--frames", "2", "--seed", "1", "--width", "48", "--height", "24",
                 "--depth-kind", "indoor"])
    assert code == 0
    scene = json.loads((out / "scene.json").read_text())
    assert (scene["frames"], scene["seed"], scene["width"], scene["height"]) == (2, 1, 48, 24)
    assert scene["kinds"] == ["indoor", "indoor"]
    assert read_depth_png(out / "groundtruth" / "000001.png").depth.shape == (24, 48)
    assert main(["synth", "depth", str(tmp_path / "bad"), "--frames", "0"]) == 2
