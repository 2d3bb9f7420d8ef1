"""RGB-D folders that record no scale reconstruct without flags: ``geo3d render --depth`` of a splat sphere 4 m
from its cameras (no scene.json, no ground truth) -> ``geo3d reconstruct`` with no ``--depth-max`` or
``--voxel-size`` (pipelines.surface.extent). Explicit flags still win; a folder with no valid depth is a one-line
error naming it.

References are independent of the code under test: the sphere's radius and centre, its bounding box, and the
rendered depths read back from the PNGs.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geo3d.cli import main
from geo3d.io import MultiViewFrames, read_mesh, read_rgbd_sequence, write_gaussian_ply, write_transforms
from geo3d.types import SH_C0, Cameras, Gaussians

RADIUS = 0.5  # metres, the splat sphere's, centred at the origin
DISTANCE = 4.0  # metres, every camera's distance from the origin (NeRF-synthetic lego's)
W = H = 64
FOCAL = 120.0  # pixels: the sphere spans about 30 pixels, a pixel is 3.3 cm on it
VIEWS = 8


def splat_sphere(count: int = 2000) -> Gaussians:
    """Opaque flat Gaussians tangent to the sphere (Fibonacci points 4 cm apart; discs sigma 3 cm, 1 mm thin)."""
    i = np.arange(count) + 0.5
    z = 1 - 2 * i / count
    phi = np.pi * (1 + 5**0.5) * i
    normals = np.stack([np.sqrt(1 - z**2) * np.cos(phi), np.sqrt(1 - z**2) * np.sin(phi), z], 1)
    # the rotation taking the disc's thin z axis onto the normal: quaternion (w, x, y, z) = (1 + n.z, z x n)
    quats = np.stack([1 + normals[:, 2], -normals[:, 1], normals[:, 0], np.zeros(count)], 1)
    log_scales = np.log(np.tile([0.03, 0.03, 1e-3], (count, 1)))
    sh = np.tile((np.array([0.2, 0.6, 0.3]) - 0.5) / SH_C0, (count, 1))[:, None, :]
    return Gaussians(RADIUS * normals, quats / np.linalg.norm(quats, axis=1, keepdims=True), log_scales,
                     np.full(count, 8.0), sh)


def ring_cameras() -> Cameras:
    """VIEWS OpenCV cameras 4 m from the origin looking at it, around it at elevations -40 to 50 degrees."""
    w2c = []
    for k in range(VIEWS):
        azimuth, elevation = 2 * math.pi * k / VIEWS, math.radians(-40 + 90 * k / (VIEWS - 1))
        eye = DISTANCE * np.array([math.cos(elevation) * math.cos(azimuth),
                                   math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
        forward = -eye / DISTANCE
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        rows = np.stack([right, np.cross(forward, right), forward])
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rows, -rows @ eye
        w2c.append(pose)
    K = torch.tensor([[FOCAL, 0, W / 2], [0, FOCAL, H / 2], [0, 0, 1]])
    return Cameras(K.expand(VIEWS, 3, 3), torch.tensor(np.stack(w2c), dtype=torch.float32), W, H)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """``geo3d render sphere.ply --cameras transforms.json --depth``: the RGB-D folder (read-only for the tests)."""
    root = tmp_path_factory.mktemp("splat_sphere")
    write_gaussian_ply(root / "sphere.ply", splat_sphere())
    (root / "images").mkdir()
    images = [root / "images" / f"{k:03d}.png" for k in range(VIEWS)]
    for image in images:  # transforms.json names images; the render only needs them to exist
        Image.new("RGB", (W, H)).save(image)
    frames = MultiViewFrames(images, ring_cameras())
    write_transforms(root / "transforms.json", frames)
    assert main(["render", str(root / "sphere.ply"), "--cameras", str(root / "transforms.json"), "--depth",
                 "--out", str(root / "render")]) == 0
    rgbd = root / "render" / "rgbd"
    assert not (rgbd / "scene.json").exists() and not (rgbd / "mesh.ply").exists()  # nothing records the scale
    return rgbd


def valid_depths(folder: Path) -> np.ndarray:
    sequence = read_rgbd_sequence(folder)
    return np.concatenate([frame.depth.depth[frame.depth.valid].numpy() for frame in sequence])


def test_rendered_splats_at_4m_reconstruct_without_flags(rendered, tmp_path):
    depths = valid_depths(rendered)
    assert len(depths) > VIEWS * 400 and depths.min() > 3.0  # the old default --depth-max 3 dropped every pixel
    out = tmp_path / "out"
    assert main(["reconstruct", "--input", str(rendered), "--output", str(out), "--no-progress"]) == 0
    record = json.loads((out / "rgbd" / "status.json").read_text())
    assert record["status"] == "ok" and record["voxel_from"] == "frames" and record["metrics"] is None
    assert record["depth_max"] == pytest.approx(depths.max() * 1.01, rel=1e-6)
    # 1/128 of the observed extent: about the sphere's box diagonal
    box_diagonal = 2 * RADIUS * math.sqrt(3)
    assert record["voxel_size"] == pytest.approx(box_diagonal / 128, rel=0.1)
    mesh = read_mesh(out / "rgbd" / "mesh.ply")
    assert mesh.num_faces > 5000
    radius = mesh.vertices.double().norm(dim=1).numpy()
    # on the sphere's shell: the rendered depth itself lies up to about 3 cm outside it (a splat's depth is its
    # centre's, and the discs nearest the camera along an oblique ray sit in front of the surface there)
    assert np.percentile(np.abs(radius - RADIUS), 99) < 0.05
    directions = mesh.vertices.double() / torch.from_numpy(radius)[:, None]
    octants = {tuple(s) for s in (directions.sign() > 0).int().tolist()}
    assert len(octants) == 8  # around all of it


def test_explicit_flags_win(rendered, tmp_path):
    meshes = {}
    for name, depth_max in (("all", []), ("near", ["--depth-max", "3.8"])):
        out = tmp_path / name
        assert main(["reconstruct", "--input", str(rendered), "--output", str(out), "--voxel-size", "0.02",
                     *depth_max, "--no-progress"]) == 0
        record = json.loads((out / "rgbd" / "status.json").read_text())
        assert record["voxel_size"] == 0.02 and record["voxel_from"] == "voxel_size"
        meshes[name] = read_mesh(out / "rgbd" / "mesh.ply")
    assert record["depth_max"] == 3.8
    # the sphere's depths span 3.5 to 3.97 m: within 3.8 m each view gives only its middle, less surface
    assert meshes["near"].num_faces < 0.9 * meshes["all"].num_faces
    assert main(["reconstruct", "--input", str(rendered), "--output", str(tmp_path / "old"), "--depth-max", "3",
                 "--no-progress"]) == 2  # the old default: nothing within 3 m


def test_no_valid_depth_is_one_error_line_naming_the_folder(rendered, tmp_path, capsys):
    scene = Path(shutil.copytree(rendered, tmp_path / "blank"))
    for png in scene.glob("frame-*.depth.png"):
        Image.fromarray(np.zeros((H, W), np.uint16)).save(png)
    assert main(["reconstruct", "--input", str(scene), "--output", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"geo3d: error: {scene}: no valid depth pixel in any of its {VIEWS} frames: nothing to "
                   "reconstruct (wrong --depth-scale?)"]
