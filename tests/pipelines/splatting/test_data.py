"""The splatting datamodule: view split, image loading (masks, background, downscale, undistortion), errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from geo3d.errors import InputError
from geo3d.io import MultiViewFrames, write_transforms
from geo3d.types import Cameras
from pipelines.splatting.data import SplatDataModule, load_views, read_view_pool, select_views


def test_select_views_is_farthest_point_sampling():
    g = torch.Generator().manual_seed(3)
    centers = torch.randn(30, 3, generator=g, dtype=torch.float64)
    chosen = select_views(centers, 6, seed=5)
    assert len(set(chosen)) == 6
    assert chosen == select_views(centers, 6, seed=5)
    dist = torch.cdist(centers, centers)
    for k in range(1, 6):  # each pick is the camera farthest from those already picked (brute force)
        nearest_chosen = dist[:, chosen[:k]].min(1).values
        assert nearest_chosen[chosen[k]] == pytest.approx(float(nearest_chosen.max()), abs=1e-12)
    firsts = {select_views(centers, 1, seed=s)[0] for s in range(20)}
    assert len(firsts) > 3  # the seed moves the first camera
    with pytest.raises(InputError, match="views"):
        select_views(centers, 31)


def test_datamodule_split_is_disjoint_and_reproducible(tiny_nerf):
    dm = SplatDataModule(str(tiny_nerf), views=4, test_views=3)
    dm.setup("fit")
    assert len(dm.train) == 4 and len(dm.test) == 3
    assert all(n.startswith("train/") for n in dm.train.names)
    assert all(n.startswith("test/") for n in dm.test.names)  # transforms_test.json exists: used for testing
    again = SplatDataModule(str(tiny_nerf), views=4, test_views=3)
    again.setup("fit")
    assert again.split() == dm.split()
    assert json.loads(json.dumps(dm.split()))["train"] == dm.train.names


def test_scene_and_batches_carry_what_the_model_needs(tiny_nerf):
    dm = SplatDataModule(str(tiny_nerf), views=4, test_views=3, background="black")
    scene = dm.scene  # loads the views on first use
    assert scene.train is dm.train and scene.test is dm.test
    assert scene.background == (0.0, 0.0, 0.0) and scene.split == dm.split() and scene.source == str(tiny_nerf)
    batches = list(dm.test_dataloader())
    assert [b["name"] for b in batches] == [[name] for name in dm.test.names]  # test views named in the batch
    assert torch.equal(batches[1]["image"][0], dm.test.images[1])
    assert "SplatDataModule(path=" in str(dm) and "\n" not in str(dm)  # error messages quote it on one line


def test_holdout_split_without_a_test_json(tiny_nerf, tmp_path):
    source = tiny_nerf / "transforms_train.json"
    dm = SplatDataModule(str(source), views=5, test_views=4)
    dm.setup("fit")
    assert not set(dm.train.names) & set(dm.test.names)
    assert len(dm.test) == 4
    with pytest.raises(InputError, match="12 images"):
        bad = SplatDataModule(str(source), views=13)
        bad.setup("fit")


def test_rgba_masks_background_and_downscale(tiny_nerf):
    pool = read_view_pool(tiny_nerf)
    white = load_views(pool, [0], 1, "white")
    black = load_views(pool, [0], 1, "black")
    rgba = np.asarray(Image.open(pool.paths[0]), dtype=np.float64) / 255
    alpha = torch.from_numpy(rgba[..., 3])
    assert torch.allclose(white.masks[0].double(), alpha, atol=1e-6)
    expected_white = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    assert np.allclose(white.images[0].numpy(), expected_white, atol=1e-6)
    assert np.allclose(black.images[0].numpy(), rgba[..., :3] * rgba[..., 3:], atol=1e-6)
    half = load_views(pool, [0], 2, "white")
    assert half.images.shape == (1, 16, 16, 3)
    # area averaging: coverage is preserved exactly, and K scales with the image
    assert float(half.masks.sum()) * 4 == pytest.approx(float(alpha.sum()), rel=1e-6)
    point = torch.tensor([[0.3, -0.2, 0.4]])
    uv_full, _ = white.cameras.project(point)
    uv_half, _ = half.cameras.project(point)
    assert torch.allclose(uv_half, uv_full / 2, atol=1e-5)


def _distort(x: np.ndarray, y: np.ndarray, k1: float, k2: float, p1: float, p2: float):
    """OpenCV's radial-tangential model on normalised coordinates (written out)."""
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


def test_undistortion_moves_a_feature_to_its_pinhole_position(tmp_path):
    w = h = 64
    f, cx, cy = 40.0, 32.0, 32.0
    k1, k2, p1, p2 = 0.3, -0.05, 0.01, -0.005
    world = np.array([0.45, -0.35, 1.0])  # camera at the origin looking down +z: normalised coords (0.45, -0.35)
    xd, yd = _distort(np.array(world[0]), np.array(world[1]), k1, k2, p1, p2)
    ud, vd = f * xd + cx, f * yd + cy  # where the distorted image shows the feature (continuous pixels)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    blob = np.exp(-((xx - ud) ** 2 + (yy - vd) ** 2) / (2 * 1.5**2))
    Image.fromarray((np.stack([blob] * 3, -1) * 255).round().astype(np.uint8)).save(tmp_path / "im.png")
    cams = Cameras(torch.tensor([[f, 0, cx], [0, f, cy], [0, 0, 1]]), torch.eye(4), w, h)
    dist = {k: torch.tensor([v]) for k, v in dict(k1=k1, k2=k2, p1=p1, p2=p2).items()}
    write_transforms(tmp_path / "transforms.json", MultiViewFrames([tmp_path / "im.png"], cams, dist))
    views = load_views(read_view_pool(tmp_path / "transforms.json"), [0], 1, "white")
    image = views.images[0, ..., 0].double()
    weights = image / image.sum()
    u = float((weights * torch.from_numpy(xx)).sum())
    v = float((weights * torch.from_numpy(yy)).sum())
    assert math.hypot(u - (f * world[0] + cx), v - (f * world[1] + cy)) < 0.15  # pinhole position
    assert math.hypot(ud - (f * world[0] + cx), vd - (f * world[1] + cy)) > 1.0  # and the distortion was real


def test_bad_sources_name_the_file(tmp_path):
    with pytest.raises(InputError, match="no transforms_train.json"):
        read_view_pool(tmp_path)
    (tmp_path / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.7}))
    with pytest.raises(InputError, match="frames"):
        read_view_pool(tmp_path / "transforms.json")
    (tmp_path / "transforms.json").write_text(json.dumps(
        {"camera_angle_x": 0.7, "frames": [{"file_path": "a.png", "transform_matrix": [[1, 0, 0], [0, 1, 0]]}]}))
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(InputError, match="4x4"):
        read_view_pool(tmp_path / "transforms.json")
    (tmp_path / "transforms.json").write_text(json.dumps(
        {"camera_angle_x": 0.7, "frames": [{"file_path": "missing.png", "transform_matrix": np.eye(4).tolist()}]}))
    with pytest.raises(InputError, match="none of the 1 frame images exist"):
        read_view_pool(tmp_path / "transforms.json")


def test_colmap_text_model_loads_like_transforms(tiny_nerf, tmp_path):
    """The same views written as a COLMAP text model (sparse/0 + images/) load with the same cameras."""
    import shutil

    from geo3d.io import ColmapCamera, ColmapImage, ColmapModel, write_colmap_text
    from geo3d.types import PointCloud

    pool = read_view_pool(tiny_nerf)
    (tmp_path / "images").mkdir()
    cams = pool.cameras
    fx, fy, cx, cy = (float(cams.K[0, 0, 0]), float(cams.K[0, 1, 1]), float(cams.K[0, 0, 2]), float(cams.K[0, 1, 2]))
    images = []
    for i, path in enumerate(pool.paths[:6]):
        shutil.copy(path, tmp_path / "images" / f"view_{i}.png")
        q, t = ColmapImage.pose_from_world_to_cam(cams.world_to_cam[i])
        images.append(ColmapImage(i + 1, f"view_{i}.png", 1, q, t))
    model = ColmapModel({1: ColmapCamera(1, "PINHOLE", cams.width, cams.height, np.array([fx, fy, cx, cy]))},
                        images, PointCloud(torch.zeros(0, 3), torch.zeros(0, 3)), torch.zeros(0, dtype=torch.int64),
                        torch.zeros(0), [])
    write_colmap_text(tmp_path / "sparse" / "0", model)
    colmap = read_view_pool(tmp_path)
    assert colmap.names == [f"view_{i}.png" for i in range(6)]
    assert torch.allclose(colmap.cameras.world_to_cam, cams.world_to_cam[:6], atol=1e-5)
    assert torch.allclose(colmap.cameras.K, cams.K[:6], atol=1e-4)
    views = load_views(colmap, [0, 3], 1, "white")
    direct = load_views(pool, [0, 3], 1, "white")
    assert torch.equal(views.images, direct.images) and torch.equal(views.masks, direct.masks)
    (tmp_path / "images" / "view_5.png").unlink()
    with pytest.raises(InputError, match="1 of 6 images"):
        read_view_pool(tmp_path)
