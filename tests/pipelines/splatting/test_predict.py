"""``geo3d render`` (pipelines.splatting.predict): render_gaussians, turntables, files written, the command.

References are independent of the code under test: a direct rasterizer call, analytic depths of a flat
wall, projections with :meth:`Cameras.project`, cameras built by hand with a known up and target.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from geo3d.cli import main
from geo3d.errors import InputError
from geo3d.io import (
    MultiViewFrames,
    read_rgbd_sequence,
    write_gaussian_ply,
    write_mesh,
    write_transforms,
)
from geo3d.types import SH_C0, Cameras, Gaussians, Mesh
from ops import rasterize_gaussians
from pipelines.splatting.predict import render_gaussians, render_to_files

from .conftest import H, K, W, look_at_rows

WALL_RGB = (0.8, 0.3, 0.1)


def translation(t) -> torch.Tensor:
    w2c = torch.eye(4)
    w2c[:3, 3] = torch.tensor(t, dtype=torch.float32)
    return w2c


def random_gaussians(n: int, degree: int, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        torch.randn(n, 3, generator=g) * 0.4, torch.randn(n, 4, generator=g),
        torch.log(torch.rand(n, 3, generator=g) * 0.08 + 0.01), torch.randn(n, generator=g) * 2,
        torch.randn(n, (degree + 1) ** 2, 3, generator=g) * 0.5,
    )


def wall(z0: float = 2.0, spacing: float = 0.04) -> Gaussians:
    """Opaque flat Gaussians tiling the plane z = z0 for x in [-2, 0], y in [-1.5, 1.5] (left of the axis)."""
    xs, ys = np.arange(-2.0, 1e-9, spacing), np.arange(-1.5, 1.5 + 1e-9, spacing)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    n = len(grid)
    means = np.concatenate([grid, np.full((n, 1), z0)], 1)
    quats = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    log_scales = np.log(np.tile([0.03, 0.03, 1e-4], (n, 1)))
    sh = np.tile((np.array(WALL_RGB) - 0.5) / SH_C0, (n, 1))[:, None, :]
    return Gaussians(means, quats, log_scales, np.full(n, 8.0), sh)


# ------------------------------------------------------------------------------------------ render_gaussians

def test_render_gaussians_matches_one_rasterizer_call():
    gaussians = random_gaussians(300, degree=2)
    w2c = torch.stack([translation([0.0, 0.0, 3.0]), translation([0.3, -0.2, 2.5]),
                       torch.from_numpy(look_at_rows(np.array([2.0, 1.0, -2.0]), np.zeros(3),
                                                     np.array([0.0, -1.0, 0.0]))).float()])
    cameras = Cameras(K.expand(3, 3, 3), w2c, W, H)
    out = render_gaussians(gaussians, cameras, background=(0.2, 0.4, 0.6), with_depth=True, chunk=2)
    g = gaussians
    ref, alpha, _ = rasterize_gaussians(g.means, g.quats / g.quats.norm(dim=1, keepdim=True), g.log_scales.exp(),
                                        torch.sigmoid(g.opacity_logits), g.sh, w2c, cameras.K, W, H, sh_degree=2,
                                        backgrounds=torch.tensor([[0.2, 0.4, 0.6]] * 3), render_mode="RGB+D")
    alpha = alpha[..., 0]
    assert out.rgb.shape == (3, H, W, 3) and out.alpha.shape == (3, H, W) and out.depth.shape == (3, H, W)
    torch.testing.assert_close(out.rgb, ref[..., :3].clamp(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.alpha, alpha, atol=1e-5, rtol=0)
    expected = torch.where(alpha > 0.5, ref[..., 3] / alpha.clamp_min(1e-12), torch.zeros_like(alpha))
    torch.testing.assert_close(out.depth, expected, atol=1e-4, rtol=1e-5)
    assert (out.alpha > 0.5).float().mean() > 0.1 and bool((out.depth[out.alpha > 0.5] > 0).all())
    assert render_gaussians(gaussians, cameras).depth is None


def test_nothing_in_view_gives_the_background_and_no_depth():
    gaussians = random_gaussians(50, degree=0)
    behind = Cameras(K, translation([0.0, 0.0, -5.0]), W, H)  # every Gaussian is behind the camera
    out = render_gaussians(gaussians, behind, background=(0.0, 1.0, 0.25), with_depth=True)
    assert torch.equal(out.rgb, torch.tensor([0.0, 1.0, 0.25]).expand(1, H, W, 3))
    assert float(out.alpha.abs().max()) == 0.0 and float(out.depth.abs().max()) == 0.0


# ------------------------------------------------------------------------------------------------ files

@pytest.fixture
def wall_capture(tmp_path):
    """A wall PLY and a transforms.json with two fronto-parallel cameras: at the origin, and at (0.3, 0, -0.5)."""
    write_gaussian_ply(tmp_path / "wall.ply", wall())
    (tmp_path / "images").mkdir()
    names = ["a_left", "b_right"]
    for name in names:
        Image.new("RGB", (W, H)).save(tmp_path / "images" / f"{name}.png")
    w2c = torch.stack([translation([0.0, 0.0, 0.0]), translation([-0.3, 0.0, 0.5])])
    frames = MultiViewFrames([tmp_path / "images" / f"{n}.png" for n in names], Cameras(K.expand(2, 3, 3), w2c, W, H))
    write_transforms(tmp_path / "transforms.json", frames)
    return tmp_path


def test_render_to_files_writes_named_pngs_gif_and_metric_rgbd(wall_capture):
    root = wall_capture
    written = render_to_files(root / "wall.ply", root / "out", cameras=root / "transforms.json", depth=True,
                              progress=False)
    out = root / "out"
    assert written[:3] == [out / "a_left.png", out / "b_right.png", out / "renders.gif"]
    assert all(p.is_file() for p in written)
    assert (out / "rgbd" / "camera-intrinsics.txt") in written
    with Image.open(out / "renders.gif") as gif:
        assert gif.n_frames == 2 and gif.size == (W, H)

    seq = read_rgbd_sequence(out / "rgbd")
    assert len(seq) == 2
    torch.testing.assert_close(seq.K, K)
    wall_rgb = np.round(np.array(WALL_RGB) * 255)
    # Camera 0 sees the wall 2.0 m away left of column 32; camera 1 (0.3 m right, 0.5 m back) 2.5 m away
    # left of column 26. The wall's edge Gaussians reach 3 sigma = 0.09 m, under 3 pixels.
    for i, (name, z, edge, t) in enumerate([("a_left", 2.0, 32, [0, 0, 0]), ("b_right", 2.5, 26, [0.3, 0, -0.5])]):
        frame = seq[i]
        expected_pose = torch.eye(4)
        expected_pose[:3, 3] = torch.tensor(t, dtype=torch.float32)
        torch.testing.assert_close(frame.cam_to_world, expected_pose, atol=1e-6, rtol=0)
        depth, valid = frame.depth.depth.numpy(), frame.depth.valid.numpy()
        assert valid[:, : edge - 4].all() and not valid[:, edge + 4:].any()
        assert np.abs(depth[valid] - z).max() <= 1e-3  # uint16 millimetres: within 0.5 mm
        assert (depth[~valid] == 0).all()
        rgb = np.asarray(Image.open(out / f"{name}.png").convert("RGB")).astype(np.int32)
        np.testing.assert_array_equal(rgb, frame.color.numpy())
        assert np.abs(rgb[:, : edge - 4] - wall_rgb).max() <= 1
        assert (rgb[:, edge + 4:] == 255).all()  # white background where there is nothing


def test_turntable_without_cameras_frames_the_gaussians(tmp_path):
    gaussians = random_gaussians(400, degree=1, seed=3)
    gaussians.means += torch.tensor([5.0, -3.0, 1.0])  # far from the origin: framing must follow it
    write_gaussian_ply(tmp_path / "scene.ply", gaussians)
    written = render_to_files(tmp_path / "scene.ply", tmp_path / "tt", turntable=4, width=48, height=40,
                              background="black", progress=False)
    assert [p.name for p in written] == ["000.png", "001.png", "002.png", "003.png", "turntable.gif"]
    for path in written[:4]:
        image = np.asarray(Image.open(path).convert("RGB")).astype(np.int32)
        assert image.shape == (40, 48, 3)
        rows, cols = np.nonzero(image.max(-1) > 40)
        # In view, centred, and not touching the border (framed with a margin).
        assert len(rows) > 0.1 * image.shape[0] * image.shape[1]
        assert abs(cols.mean() - 24) < 5 and abs(rows.mean() - 20) < 5
        assert image[0].max() <= 40 and image[-1].max() <= 40
    with Image.open(written[-1]) as gif:
        assert gif.n_frames == 4


def test_turntable_around_given_cameras_uses_their_distance_and_focal(wall_capture, tmp_path):
    # Four cameras 3 m from a target, 20 degrees up (world up is -y); the turntable keeps the target, distance,
    # elevation and focal length (halved by scale=0.5), with the principal point at the image centre.
    target, up = np.array([0.0, 0.5, 2.0]), np.array([0.0, -1.0, 0.0])
    poses, eyes = [], []
    for azimuth in 0.3 + np.arange(4) * np.pi / 2:  # evenly spaced: their pitch-down tilts cancel in the mean up
        horizontal = np.array([math.cos(azimuth), 0.0, math.sin(azimuth)])
        eye = target + 3.0 * (math.cos(math.radians(20)) * horizontal + math.sin(math.radians(20)) * up)
        eyes.append(eye)
        poses.append(look_at_rows(eye, target, up))
    off_centre = K.clone()
    off_centre[:2, 2] = torch.tensor([28.0, 21.0])
    names = [f"v{i}" for i in range(4)]
    for name in names:
        Image.new("RGB", (W, H)).save(tmp_path / "images" / f"{name}.png")
    frames = MultiViewFrames([tmp_path / "images" / f"{n}.png" for n in names],
                             Cameras(off_centre.expand(4, 3, 3), torch.tensor(np.stack(poses)).float(), W, H))
    write_transforms(tmp_path / "orbit.json", frames)
    written = render_to_files(tmp_path / "wall.ply", tmp_path / "orbit", cameras=tmp_path / "orbit.json",
                              turntable=3, depth=True, scale=0.5, progress=False)
    seq = read_rgbd_sequence(tmp_path / "orbit" / "rgbd")
    assert len(seq) == 3 and written[3].name == "turntable.gif"
    torch.testing.assert_close(seq.K, torch.tensor([[25.0, 0, W / 4], [0, 25.0, H / 4], [0, 0, 1]]))
    for frame in seq:
        eye = frame.cam_to_world[:3, 3].double().numpy()
        assert np.linalg.norm(eye - target) == pytest.approx(3.0, abs=1e-4)
        assert (eye - target) @ up / 3.0 == pytest.approx(math.sin(math.radians(20)), abs=1e-4)
        forward = frame.cam_to_world[:3, 2].double().numpy()
        np.testing.assert_allclose(forward, (target - eye) / 3.0, atol=1e-5)


def test_render_to_files_errors(wall_capture, tmp_path):
    root = wall_capture
    with pytest.raises(InputError, match="wall.ply: nothing to render"):
        render_to_files(root / "wall.ply", root / "x")
    for bad in (dict(turntable=0), dict(turntable=2, scale=-1.0), dict(turntable=2, elevation=95.0),
                dict(turntable=2, width=0), dict(cameras=root / "transforms.json", width=100),
                dict(turntable=2, background="grey")):
        with pytest.raises(InputError):
            render_to_files(root / "wall.ply", root / "x", progress=False, **bad)
    write_mesh(tmp_path / "box.ply", Mesh.from_trimesh(trimesh.creation.box()))
    with pytest.raises(InputError, match="box.ply: not a 3DGS PLY"):
        render_to_files(tmp_path / "box.ply", root / "x", turntable=2)
    assert not (root / "x").exists()


# -------------------------------------------------------------------------------------------------- CLI

def test_cli_render(wall_capture, tmp_path, capsys):
    root = wall_capture
    code = main(["render", str(root / "wall.ply"), "--cameras", str(root / "transforms.json"), "--out",
                 str(root / "cli"), "--depth", "--background", "black"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "wrote 2 images" in out and "renders.gif" in out and "rgbd" in out
    image = np.asarray(Image.open(root / "cli" / "a_left.png").convert("RGB"))
    assert (image[:, 40:] == 0).all()  # black background

    write_mesh(tmp_path / "box.ply", Mesh.from_trimesh(trimesh.creation.box()))
    code = main(["render", str(tmp_path / "box.ply"), "--turntable", "3", "--out", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "box.ply" in err and "not a 3DGS PLY" in err
    code = main(["render", str(root / "wall.ply"), "--out", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--turntable" in err
    code = main(["render", str(root / "wall.ply"), "--turntable", "-2", "--out", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "turntable" in err
