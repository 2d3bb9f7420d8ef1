"""NeRF-synthetic / instant-ngp transforms.json."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from geo3d.errors import InputError
from geo3d.io.transforms_json import MultiViewFrames, read_transforms, write_transforms
from geo3d.types import Cameras


def _closest_point_to_lines(origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Least-squares point nearest to lines ``o + s d`` ((C, 3) each, d unit): solve sum (I - d d^T) p = ..."""
    proj = torch.eye(3, dtype=origins.dtype) - directions[:, :, None] * directions[:, None, :]
    return torch.linalg.solve(proj.sum(0), (proj @ origins[:, :, None]).sum(0))[:, 0]


def test_fox_capture(shared_data):
    path = shared_data / "nvs" / "fox" / "transforms.json"
    with pytest.warns(UserWarning, match=r"skipping 17 of 67 frames.*images/0005\.jpg") as record:
        frames = read_transforms(path)
    assert len(record) == 1  # one warning, not one per frame
    assert len(frames) == 50 and all(p.is_file() for p in frames.image_paths)
    assert (frames.width, frames.height) == (1080, 1920)
    expected_K = torch.tensor([[1375.52, 0, 554.558], [0, 1374.49, 965.268], [0, 0, 1]])
    assert torch.equal(frames.cameras.K, expected_K.expand(50, 3, 3))
    assert frames.distortion["k1"][0].item() == pytest.approx(0.0578421)
    assert set(frames.distortion) == {"k1", "k2", "p1", "p2"}

    # The capture circles the fox: the optical axes (OpenCV +z) pass near one point, which every
    # camera sees in front of it and inside its image. A wrong convention puts it behind the cameras.
    cams = frames.cameras
    c2w = cams.cam_to_world.double()
    centres, axes = c2w[:, :3, 3], c2w[:, :3, 2]
    target = _closest_point_to_lines(centres, axes)
    to_target = torch.nn.functional.normalize(target - centres, dim=1)
    angles = torch.rad2deg(torch.acos((to_target * axes).sum(1).clamp(-1, 1)))
    assert float(angles.max()) < 20.0
    uv, depth = cams.project(target.float()[None])
    assert bool((depth > 0.5 * (centres - target).norm(dim=1)).all())
    assert bool((uv[..., 0] > 0).all() and (uv[..., 0] < 1080).all())
    assert bool((uv[..., 1] > 0).all() and (uv[..., 1] < 1920).all())


def _write_images(folder, names, size=(8, 6)):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", size).save(folder / name)


def test_nerf_synthetic_style_file(tmp_path):
    _write_images(tmp_path / "train", ["r_0.png", "r_1.png"], size=(40, 30))
    angle = 0.69
    gl_identity = np.eye(4).tolist()
    moved = np.eye(4)
    moved[:3, 3] = [1.0, 2.0, 3.0]
    (tmp_path / "transforms_train.json").write_text(json.dumps({
        "camera_angle_x": angle,
        "frames": [{"file_path": "./train/r_0", "rotation": 0.0, "transform_matrix": gl_identity},
                   {"file_path": "./train/r_1", "transform_matrix": moved.tolist()}],
    }))
    frames = read_transforms(tmp_path / "transforms_train.json")
    assert [p.name for p in frames.image_paths] == ["r_0.png", "r_1.png"]
    assert (frames.width, frames.height) == (40, 30)  # read from the first image
    focal = 0.5 * 40 / math.tan(0.5 * angle)
    expected_K = torch.tensor([[focal, 0, 20], [0, focal, 15], [0, 0, 1]])
    assert torch.allclose(frames.cameras.K, expected_K.expand(2, 3, 3))
    assert frames.distortion is None
    # An OpenGL camera at the origin looks down -z: the world point (0, 0, -2) is 2 m in front of it,
    # on the principal point; the second camera sits at (1, 2, 3), 5 m behind the point (1, 2, -2).
    uv, depth = frames.cameras.project(torch.tensor([[0.0, 0.0, -2.0], [1.0, 2.0, -2.0]]))
    assert depth[0, 0].item() == pytest.approx(2.0) and uv[0, 0].tolist() == pytest.approx([20, 15])
    assert depth[1, 1].item() == pytest.approx(5.0) and uv[1, 1].tolist() == pytest.approx([20, 15])
    # World +y (OpenGL up) appears above the centre: smaller row, since OpenCV y points down.
    uv_up, _ = frames.cameras.project(torch.tensor([[0.0, 0.5, -2.0]]))
    assert uv_up[0, 0, 1] < 15


def _random_frames(tmp_path, n=4, seed=0) -> MultiViewFrames:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.linalg.det(q)[:, None, None]
    w2c = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    w2c[:, :3, :3] = q
    w2c[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=torch.float64)
    K = torch.tensor([[50.0, 0, 4.1], [0, 52.0, 3.2], [0, 0, 1]]).repeat(n, 1, 1)
    K[1, 0, 0] = 60.0  # one camera with its own focal length: written per frame
    names = [f"img_{i}.jpg" for i in range(n)]
    _write_images(tmp_path / "images", names)
    distortion = {"k1": torch.full((n,), 0.01), "p2": torch.linspace(0, 0.003, n)}
    return MultiViewFrames([tmp_path / "images" / nm for nm in names], Cameras(K, w2c.float(), 8, 6), distortion)


def test_round_trip(tmp_path):
    frames = _random_frames(tmp_path)
    write_transforms(tmp_path / "transforms.json", frames, extra={"aabb_scale": 4})
    raw = json.loads((tmp_path / "transforms.json").read_text())
    assert raw["aabb_scale"] == 4 and raw["fl_y"] == 52.0 and "fl_x" not in raw
    assert raw["frames"][1]["fl_x"] == 60.0 and raw["frames"][0]["file_path"] == "images/img_0.jpg"
    back = read_transforms(tmp_path / "transforms.json")
    assert back.image_paths == frames.image_paths
    assert (back.width, back.height) == (8, 6)
    assert torch.equal(back.cameras.K, frames.cameras.K)
    assert torch.allclose(back.cameras.world_to_cam, frames.cameras.world_to_cam, atol=1e-6)
    assert set(back.distortion) == {"k1", "p2"}
    for key, values in frames.distortion.items():
        assert torch.equal(back.distortion[key], values)


def test_per_frame_overrides_and_skip_missing_false(tmp_path):
    _write_images(tmp_path, ["a.png", "b.png"])
    pose = np.eye(4).tolist()
    data = {"fl_x": 10.0, "fl_y": 11.0, "w": 8, "h": 6, "k1": 0.1,
            "frames": [{"file_path": "a.png", "transform_matrix": pose},
                       {"file_path": "b.png", "transform_matrix": pose, "fl_x": 20.0, "cx": 3.0, "k1": 0.2},
                       {"file_path": "gone.png", "transform_matrix": pose}]}
    (tmp_path / "t.json").write_text(json.dumps(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = read_transforms(tmp_path / "t.json")
    assert frames.cameras.K[:, 0, 0].tolist() == [10.0, 20.0]
    assert frames.cameras.K[:, 1, 1].tolist() == [11.0, 11.0]
    assert frames.cameras.K[:, 0, 2].tolist() == [4.0, 3.0]  # default cx = w / 2
    assert frames.distortion["k1"].tolist() == pytest.approx([0.1, 0.2])
    with pytest.raises(InputError, match=r"t\.json: 1 of 3 frame images are missing: gone\.png"):
        read_transforms(tmp_path / "t.json", skip_missing=False)


def _write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_bad_files_raise_input_error_naming_file_and_field(tmp_path):
    _write_images(tmp_path, ["a.png"])
    with pytest.raises(InputError, match=r"no_frames\.json: missing 'frames'"):
        read_transforms(_write_json(tmp_path / "no_frames.json", {"camera_angle_x": 0.5}))
    with pytest.raises(InputError, match=r"empty\.json: 'frames' must be a non-empty list"):
        read_transforms(_write_json(tmp_path / "empty.json", {"camera_angle_x": 0.5, "frames": []}))
    bad_shape = {"camera_angle_x": 0.5, "frames": [{"file_path": "a.png", "transform_matrix": np.eye(3).tolist()}]}
    with pytest.raises(InputError, match=r"shape\.json: frames\[0\]\.transform_matrix: expected a 4x4"):
        read_transforms(_write_json(tmp_path / "shape.json", bad_shape))
    scaled_pose = np.diag([2.0, 2.0, 2.0, 1.0]).tolist()
    scaled = {"camera_angle_x": 0.5, "frames": [{"file_path": "a.png", "transform_matrix": scaled_pose}]}
    with pytest.raises(InputError, match=r"frames\[0\]\.transform_matrix: rotation"):
        read_transforms(_write_json(tmp_path / "scaled.json", scaled))
    no_focal = {"frames": [{"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}]}
    with pytest.raises(InputError, match="no focal length"):
        read_transforms(_write_json(tmp_path / "focal.json", no_focal))
    none_exist = {"camera_angle_x": 0.5, "frames": [{"file_path": "x.png", "transform_matrix": np.eye(4).tolist()}]}
    with pytest.raises(InputError, match="none of the 1 frame images exist"):
        read_transforms(_write_json(tmp_path / "none.json", none_exist))
    (tmp_path / "broken.json").write_text("{ not json")
    with pytest.raises(InputError, match=r"broken\.json: not valid JSON"):
        read_transforms(tmp_path / "broken.json")
    with pytest.raises(InputError, match="file not found"):
        read_transforms(tmp_path / "absent.json")
