"""COLMAP text models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.errors import InputError
from geo3d.io.colmap import (
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    read_colmap_text,
    write_colmap_text,
)
from geo3d.types import PointCloud

S = math.sqrt(0.5)

# A hand-made model. Camera 1: PINHOLE fx=500 fy=400 cx=320 cy=240. Camera 2: SIMPLE_RADIAL f=600,
# cx=319.5, cy=239.5. Image 1: identity rotation, t = (0, 0, 2). Image 2: 90 degrees about z
# (q = (cos 45, 0, 0, sin 45), so (x, y, z) -> (-y, x, z)), t = (0, 0, 3). Image 3: no keypoints.
# Point 1 = (1, 0.5, 0):   image 1 -> camera (1, 0.5, 2)    -> (500 * 0.5 + 320, 400 * 0.25 + 240) = (570, 340)
#                          image 2 -> camera (-0.5, 1, 3)   -> (600 * -1/6 + 319.5, 600 / 3 + 239.5) = (219.5, 439.5)
# Point 2 = (-0.4, 0.2, 1): image 1 -> camera (-0.4, 0.2, 3) -> (320 - 200/3, 240 + 80/3)
CAMERAS = """# Camera list with one line of data per camera:
#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]
1 PINHOLE 640 480 500 400 320 240
2 SIMPLE_RADIAL 640 480 600 319.5 239.5 0.01
"""
IMAGES = f"""# Image list with two lines of data per image:
#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME
#   POINTS2D[] as (X, Y, POINT3D_ID)
1 1 0 0 0 0 0 2 1 frame one.png
570 340 1 {320 - 200 / 3!r} {240 + 80 / 3!r} 2 100 100 -1
2 {S!r} 0 0 {S!r} 0 0 3 2 b.png
219.5 439.5 1
3 1 0 0 0 5 5 5 1 empty.png

"""
POINTS = """# 3D point list with one line of data per point:
#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)
1 1 0.5 0 255 0 0 0.5 1 0 2 0
2 -0.4 0.2 1 10 20 30 0.25 1 1
"""


def _write(folder, cameras=CAMERAS, images=IMAGES, points=POINTS):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.txt").write_text(cameras)
    (folder / "images.txt").write_text(images)
    (folder / "points3D.txt").write_text(points)
    return folder


def test_hand_made_model_projects_as_computed_by_hand(tmp_path):
    model = read_colmap_text(_write(tmp_path / "sparse"))
    assert model.image_names == ["frame one.png", "b.png", "empty.png"]
    assert torch.equal(model.K[0], torch.tensor([[500.0, 0, 320], [0, 400, 240], [0, 0, 1]]))
    assert torch.equal(model.K[1], torch.tensor([[600.0, 0, 319.5], [0, 600, 239.5], [0, 0, 1]]))
    assert model.cameras[2].distortion == {"k1": 0.01}
    assert torch.allclose(model.world_to_cam[1, :3, :3], torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]),
                          atol=1e-7)
    assert model.points.points.tolist() == [[1.0, 0.5, 0.0], [-0.4000000059604645, 0.20000000298023224, 1.0]]
    assert torch.allclose(model.points.colors, torch.tensor([[1.0, 0, 0], [10 / 255, 20 / 255, 30 / 255]]))
    assert model.point_ids.tolist() == [1, 2] and model.point_errors.tolist() == [0.5, 0.25]
    assert [t.tolist() for t in model.tracks] == [[[1, 0], [2, 0]], [[1, 1]]]
    assert len(model.images[2].xys) == 0

    uv, depth = model.to_cameras().project(model.points.points)
    assert uv[0, 0].tolist() == pytest.approx([570, 340], abs=1e-4)
    assert uv[1, 0].tolist() == pytest.approx([219.5, 439.5], abs=1e-4)
    assert uv[0, 1].tolist() == pytest.approx([320 - 200 / 3, 240 + 80 / 3], abs=1e-4)
    assert depth[:2, 0].tolist() == pytest.approx([2.0, 3.0])
    # Every stored observation agrees with the projection of the point it observes.
    index = {pid: i for i, pid in enumerate(model.point_ids.tolist())}
    for c, image in enumerate(model.images):
        for xy, pid in zip(image.xys, image.point3d_ids.tolist()):
            if pid >= 0:
                assert uv[c, index[pid]].tolist() == pytest.approx(xy.tolist(), abs=1e-4)


def test_text_round_trip_is_exact(tmp_path):
    model = read_colmap_text(_write(tmp_path / "a"))
    write_colmap_text(tmp_path / "b", model)
    back = read_colmap_text(tmp_path / "b")
    _assert_same(model, back)


def _assert_same(a: ColmapModel, b: ColmapModel) -> None:
    assert a.cameras.keys() == b.cameras.keys()
    for cid, cam in a.cameras.items():
        other = b.cameras[cid]
        assert (cam.model, cam.width, cam.height) == (other.model, other.width, other.height)
        np.testing.assert_array_equal(cam.params, other.params)
    assert [im.image_id for im in a.images] == [im.image_id for im in b.images]
    for im, other in zip(a.images, b.images):
        assert (im.name, im.camera_id) == (other.name, other.camera_id)
        for field in ("qvec", "tvec", "xys", "point3d_ids"):
            np.testing.assert_array_equal(getattr(im, field), getattr(other, field))
    assert torch.equal(a.points.points, b.points.points)
    assert torch.equal(a.points.colors, b.points.colors)
    assert torch.equal(a.point_ids, b.point_ids) and torch.equal(a.point_errors, b.point_errors)
    assert all(np.array_equal(x, y) for x, y in zip(a.tracks, b.tracks)) and len(a.tracks) == len(b.tracks)


def test_round_trip_of_a_generated_model_with_all_models(tmp_path):
    rng = np.random.default_rng(0)
    params = {"SIMPLE_PINHOLE": [300.0, 160, 120], "OPENCV": [310.5, 311.25, 160, 120, 0.1, -0.02, 1e-3, -2e-4],
              "RADIAL": [305.0, 160, 120, 0.01, 0.002], "OPENCV_FISHEYE": [300.0, 300, 160, 120, 0.1, 0.01, 0, 0],
              "FULL_OPENCV": [300.0, 301, 160, 120, *rng.normal(size=8).tolist()]}
    cameras = {i + 1: ColmapCamera(i + 1, m, 320, 240, p) for i, (m, p) in enumerate(params.items())}
    images = []
    for i in range(5):
        q = rng.normal(size=4)
        images.append(ColmapImage(10 + i, f"im_{i}.jpg", i + 1, q / np.linalg.norm(q), rng.normal(size=3),
                                  rng.uniform(0, 300, (3, 2)), [i, -1, 7]))
    points = PointCloud(torch.from_numpy(rng.normal(size=(8, 3))).float(),
                        colors=torch.from_numpy(rng.integers(0, 256, (8, 3))).float() / 255)
    tracks = [np.array([[10 + j % 5, 0]]) for j in range(8)]
    model = ColmapModel(cameras, images, points, torch.arange(8), torch.rand(8), tracks)
    write_colmap_text(tmp_path, model)
    back = read_colmap_text(tmp_path)
    _assert_same(model, back)
    # Poses survive as matrices too: quaternion -> rotation through scipy, then back.
    q, t = ColmapImage.pose_from_world_to_cam(back.images[0].world_to_cam)
    again = ColmapImage(1, "x", 1, q, t).world_to_cam
    assert torch.allclose(again, back.images[0].world_to_cam, atol=1e-6)
    assert torch.allclose(back.K[1], torch.tensor([[310.5, 0, 160], [0, 311.25, 120], [0, 0, 1]]))


@pytest.mark.parametrize(
    ("file", "text", "match"),
    [
        ("cameras", "1 FISHEYE_X 640 480 1 2 3\n", r"cameras\.txt: line 1: .*unsupported 'FISHEYE_X'"),
        ("cameras", "1 PINHOLE 640 480 500 400 320\n", r"cameras\.txt: line 1: .*PINHOLE takes 4 parameters"),
        ("cameras", "1 PINHOLE 640 480 500 400 320 abc\n", r"cameras\.txt: line 1: bad camera parameters"),
        ("images", "1 1 0 0 0 0 0 2 9 a.png\n\n", r"images\.txt: image a\.png uses camera id 9"),
        ("images", "1 1 0 0 0 0 0 2 1 a.png\n570 340\n", r"images\.txt: line 2: expected POINTS2D"),
        ("images", "1 1 0 0 0 2 1 a.png\n\n", r"images\.txt: line 1: expected IMAGE_ID"),
        ("points3D", "1 1 0.5 0 255 0 0 0.5 1\n", r"points3D\.txt: line 1: expected POINT3D_ID"),
        ("points3D", "1 1 0.5 0 300 0 0 0.5\n", r"points3D\.txt: point colours must be 0-255"),
    ],
)
def test_malformed_files_raise_input_error_with_file_and_line(tmp_path, file, text, match):
    files = {"cameras": CAMERAS, "images": IMAGES, "points": POINTS}
    files["points" if file == "points3D" else file] = text
    folder = _write(tmp_path, files["cameras"], files["images"], files["points"])
    with pytest.raises(InputError, match=match):
        read_colmap_text(folder)


def test_missing_file(tmp_path):
    folder = _write(tmp_path)
    (folder / "points3D.txt").unlink()
    with pytest.raises(InputError, match=r"points3D\.txt: file not found"):
        read_colmap_text(folder)
