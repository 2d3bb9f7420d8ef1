"""KITTI object I/O: readers, writers, errors, and the camera <-> LiDAR box convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.errors import InputError
from geo3d.io.kitti import (
    MAX_LIDAR_RANGE_M,
    KittiCalib,
    KittiObject,
    boxes_lidar_to_objects,
    objects_to_boxes_lidar,
    points_in_image_fov,
    read_calib,
    read_frame,
    read_label,
    read_split,
    read_velodyne,
    write_calib,
    write_label,
    write_split,
    write_velodyne,
)
from geo3d.types import Boxes3D, points_in_boxes

CLASSES = ("Car", "Truck", "Cyclist")

# An ideal rig: rectified camera = LiDAR axes permuted (x_cam = -y, y_cam = -z, z_cam = x), f = 100 px.
IDEAL = KittiCalib(
    P0=np.eye(3, 4), P1=np.eye(3, 4), P3=np.eye(3, 4),
    P2=[[100.0, 0, 50, 0], [0, 100.0, 50, 0], [0, 0, 1, 0]],
    R0_rect=np.eye(3),
    Tr_velo_to_cam=[[0.0, -1, 0, 0.5], [0, 0, -1, -0.2], [1, 0, 0, 0.3]],
)


def _wrap(a):
    return (a + math.pi) % (2 * math.pi) - math.pi


def _devkit_corners(obj: KittiObject) -> np.ndarray:
    """Corners in the rectified camera frame, as the KITTI devkit's computeBox3D builds them: (8, 3)."""
    h, w, l = obj.dimensions
    x = [l / 2, l / 2, -l / 2, -l / 2, l / 2, l / 2, -l / 2, -l / 2]
    y = [0, 0, 0, 0, -h, -h, -h, -h]
    z = [w / 2, -w / 2, -w / 2, w / 2, w / 2, -w / 2, -w / 2, w / 2]
    c, s = math.cos(obj.rotation_y), math.sin(obj.rotation_y)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return (rot @ np.array([x, y, z])).T + np.array(obj.location)


def _real_objects(frame):
    return [o for o in frame.objects if o.type in CLASSES]


# ----------------------------------------------------------------------------------------------- labels

def test_label_round_trip(tmp_path):
    objects = [
        KittiObject("Car", 0.12, 1, -1.2345, (10.5, 20.25, 110.75, 90.0), (1.5, 1.6, 3.9), (1.25, 1.7, 20.125),
                    1.5708),
        KittiObject("DontCare", -1, -1, -10, (1.0, 2.0, 3.0, 4.0), (-1, -1, -1), (-1000, -1000, -1000), -10),
    ]
    write_label(tmp_path / "a.txt", objects)
    assert read_label(tmp_path / "a.txt") == objects
    scored = [KittiObject("Pedestrian", 0, 0, 0.5, (1, 2, 3, 4), (1.7, 0.6, 0.8), (1, 2, 3), 0.25, score=0.875)]
    write_label(tmp_path / "b.txt", scored)
    text = (tmp_path / "b.txt").read_text()
    assert len(text.split()) == 16 and text.split()[-1] == "0.8750"
    assert read_label(tmp_path / "b.txt") == scored


def test_read_label_wrong_column_count(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Car 0 0 0 1 2 3 4 1.5 1.6 3.9 1 2 3 0\nCar 0 0 0 1 2 3 4 1.5 1.6\n")
    with pytest.raises(InputError) as err:
        read_label(path)
    assert str(err.value) == f"{path}: line 2: expected 15 or 16 columns, got 10"


def test_read_label_not_a_number(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Car 0 0 0 1 2 3 4 1.5 1.6 3.9 1 two 3 0\n")
    with pytest.raises(InputError, match=r"bad.txt: line 1: column 'y' is not a number: 'two'"):
        read_label(path)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_read_label_not_finite(tmp_path, text):
    path = tmp_path / "bad.txt"
    path.write_text(f"Car 0 0 0 1 2 3 4 {text} {text} 3.9 1 2 3 0\n")
    with pytest.raises(InputError, match=rf"bad.txt: line 1: column 'h' is not a finite number: '{text}'"):
        read_label(path)


# --------------------------------------------------------------------------------------------- velodyne

def test_velodyne_round_trip_and_truncation(tmp_path):
    points = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    path = tmp_path / "000000.bin"
    write_velodyne(path, points)
    assert path.stat().st_size == 100 * 16
    np.testing.assert_array_equal(read_velodyne(path), points)
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(InputError, match=r"000000.bin: truncated .*1594 bytes.*N x 4 float32"):
        read_velodyne(path)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        write_velodyne(path, points[:, :3])


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_read_velodyne_refuses_nan_and_inf_naming_the_file(tmp_path, value):
    points = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    points[[7, 42], 2] = value
    path = tmp_path / "000000.bin"
    write_velodyne(path, points)
    with pytest.raises(InputError, match=r"000000.bin: 2 of 100 points hold NaN or infinite values \(first: point 7"):
        read_velodyne(path)


def test_read_velodyne_drops_far_points_with_a_warning(tmp_path):
    points = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    points[:3, :3] = [[1e30, 1e30, 1e30], [-1e30, 0, 0], [0, 0, 1001.0]]  # beyond the 1 km limit
    points[3, :3] = [999.0, 0, 0]  # inside it
    path = tmp_path / "000000.bin"
    write_velodyne(path, points)
    assert MAX_LIDAR_RANGE_M == 1000.0
    with pytest.warns(UserWarning, match=r"000000.bin: dropped 3 of 100 points farther than 1000 m"):
        kept = read_velodyne(path)
    np.testing.assert_array_equal(kept, points[3:])
    np.testing.assert_array_equal(read_velodyne(path, max_range=math.inf), points)
    write_velodyne(path, np.full((5, 4), -1e30, np.float32))
    with pytest.raises(InputError, match=r"000000.bin: all 5 points lie farther than 1000 m from the sensor"):
        read_velodyne(path)


# ------------------------------------------------------------------------------------------ calibration

def test_calib_round_trip(tmp_path):
    calib = KittiCalib(P0=np.arange(12.0).reshape(3, 4), P1=np.eye(3, 4), P2=IDEAL.P2, P3=np.eye(3, 4) * 2,
                       R0_rect=np.eye(3) * 0.5, Tr_velo_to_cam=IDEAL.Tr_velo_to_cam,
                       Tr_imu_to_velo=np.full((3, 4), 0.25))
    write_calib(tmp_path / "c.txt", calib)
    back = read_calib(tmp_path / "c.txt")
    for name in ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"):
        np.testing.assert_array_equal(getattr(back, name), getattr(calib, name))


def test_calib_key_variants_and_errors(tmp_path):
    p = " ".join(["1"] * 12)
    path = tmp_path / "tracking.txt"
    # KITTI tracking style: no colon, R_rect / Tr_velo_cam / Tr_imu_velo spellings.
    path.write_text(f"P0: {p}\nP1: {p}\nP2: {p}\nP3: {p}\nR_rect {' '.join(['2'] * 9)}\n"
                    f"Tr_velo_cam {' '.join(['3'] * 12)}\nTr_imu_velo {' '.join(['4'] * 12)}\n")
    calib = read_calib(path)
    assert (calib.R0_rect == 2).all() and (calib.Tr_velo_to_cam == 3).all() and (calib.Tr_imu_to_velo == 4).all()

    path.write_text(f"P0: {p}\nP1: {p}\nP3: {p}\nR0_rect: {' '.join(['2'] * 9)}\n")
    with pytest.raises(InputError, match=r"tracking.txt: missing calibration key\(s\) P2, Tr_velo_to_cam"):
        read_calib(path)
    path.write_text(f"P0: {p}\nP1: {p}\nP2: 1 2 3\n")
    with pytest.raises(InputError, match=r"line 3: P2 expected 12 values \(3 x 4\), got 3"):
        read_calib(path)
    path.write_text(f"P0: {p}\nP1: {p}\nP2: nan {' '.join(['1'] * 11)}\n")
    with pytest.raises(InputError, match=r"tracking.txt: line 3: P2 has a value that is not finite"):
        read_calib(path)


def test_lidar_rect_transforms():
    # Hand-computed: rect = (-y, -z, x) + t for the ideal rig.
    rect = IDEAL.lidar_to_rect(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(rect, [[-2 + 0.5, -3 - 0.2, 1 + 0.3]])
    points = np.random.default_rng(1).uniform(-50, 50, (200, 3))
    calib = _real_calib()
    np.testing.assert_allclose(calib.rect_to_lidar(calib.lidar_to_rect(points)), points, atol=1e-9)
    uv, depth = IDEAL.rect_to_image(np.array([[1.0, -2.0, 10.0]]))
    np.testing.assert_allclose(uv, [[60.0, 30.0]])
    np.testing.assert_allclose(depth, [10.0])


def test_points_in_image_fov():
    points = np.array([[10.0, 0.3, 0.0], [-10.0, 0.0, 0.0], [10.0, 20.0, 0.0], [10.0, 0.0, 20.0]])
    np.testing.assert_array_equal(points_in_image_fov(points, IDEAL, (100, 100)), [True, False, False, False])


# ---------------------------------------------------------------------------------------- conversions

@pytest.mark.parametrize("ry", [-3.0, -1.56, -0.4, 0.0, 0.7, 1.57, 2.9])
def test_box_convention_matches_devkit_corners(ry):
    obj = KittiObject("Car", 0, 0, 0, (0, 0, 0, 0), (1.5, 1.6, 4.0), (2.0, 1.6, 15.0), ry)
    boxes = objects_to_boxes_lidar([obj], IDEAL, ("Car",))
    ours = IDEAL.lidar_to_rect(boxes.corners()[0].double().numpy())
    ref = _devkit_corners(obj)
    # Same corner set (order differs): every devkit corner has one of ours within 1e-5 m and vice versa.
    dist = np.linalg.norm(ref[:, None] - ours[None], axis=-1)
    assert dist.min(1).max() < 1e-5 and dist.min(0).max() < 1e-5
    # The yaw formula, independently: heading (cos ry, 0, -sin ry) in camera = (cos yaw, sin yaw) in LiDAR.
    yaw = float(boxes.boxes[0, 6])
    assert math.isclose(math.cos(yaw), -math.sin(ry), abs_tol=1e-6)
    assert math.isclose(math.sin(yaw), -math.cos(ry), abs_tol=1e-6)


def test_boxes_lidar_to_objects_truncation_and_behind():
    # A flat 2 m x 2 m board at camera (x, y, z) = (4.9, 0, 10): u = 50 + 10 x_cam spans [89, 109] on a
    # 100 px wide image, so half of its 2D box lies beyond the last column (u = 99); v spans [40, 60].
    boxes = Boxes3D(torch.tensor([[10.0 - 0.3, -(4.9 - 0.5), -0.2, 0.01, 2.0, 2.0, 0.0],
                                  [-10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]]),
                    labels=torch.tensor([0, 0]), scores=torch.tensor([0.9, 0.1]), class_names=("Car",))
    front, behind = boxes_lidar_to_objects(boxes, IDEAL, (100, 100))
    assert front.type == "Car" and front.score == pytest.approx(0.9)
    assert front.truncated == pytest.approx(0.5, abs=2e-3)
    assert front.bbox == pytest.approx((89.0, 40.0, 99.0, 60.0), abs=0.02)
    assert behind.truncated == 1.0 and behind.bbox == (0.0, 0.0, 0.0, 0.0)


def test_boxes_lidar_to_objects_crossing_camera_plane():
    # A long box from 2 m behind to 6 m ahead of the camera, off to the right: its visible part reaches the
    # right image border, so the clipped box touches it and truncation is high.
    # Camera x in [0.2, 1.8], z in [-2, 6]: at z = 6 its left edge projects to u = 53.3.
    boxes = Boxes3D(torch.tensor([[2.0 - 0.3, -0.5, -0.2, 8.0, 1.6, 1.5, 0.0]]), class_names=("Car",))
    (obj,) = boxes_lidar_to_objects(boxes, IDEAL, (100, 100))
    assert obj.bbox[2] == 99.0 and obj.bbox[0] == pytest.approx(50 + 100 * 0.2 / 6, abs=1e-6)
    assert 0.5 < obj.truncated < 1.0


# ------------------------------------------------------------------------------------------ real data

def _real_calib() -> KittiCalib:
    return KittiCalib(
        P0=np.eye(3, 4), P1=np.eye(3, 4), P3=np.eye(3, 4),
        P2=[[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0, 0, 1, 0.002745884]],
        R0_rect=[[0.9999239, 0.00983776, -0.007445048], [-0.009869795, 0.9999421, -0.004278459],
                 [0.007402527, 0.004351614, 0.9999631]],
        Tr_velo_to_cam=[[0.007533745, -0.9999714, -0.000616602, -0.004069766],
                        [0.01480249, 0.0007280733, -0.9998902, -0.07631618],
                        [0.9998621, 0.00752379, 0.01480755, -0.2717806]],
    )


def test_read_real_frame(shared_data):
    frame = read_frame(shared_data / "kitti", 1)
    assert frame.frame_id == "000001" and frame.image_size == (1242, 375)
    assert frame.points.shape == (120268, 4) and frame.points.dtype == np.float32
    assert [o.type for o in frame.objects] == ["Truck", "Car", "Cyclist"] + ["DontCare"] * 4
    assert frame.objects[1].location == (-16.53, 2.39, 58.49) and frame.objects[2].occluded == 3
    np.testing.assert_allclose(frame.calib.P2, _real_calib().P2)
    assert frame.calib.Tr_imu_to_velo is not None
    fov = points_in_image_fov(frame.points, frame.calib, frame.image_size)
    assert (frame.points[fov, 0] > 0).all() and 0.1 < fov.mean() < 0.3


def test_real_boxes_contain_their_points(shared_data):
    frame = read_frame(shared_data / "kitti", "000001")
    boxes = objects_to_boxes_lidar(frame.objects, frame.calib, CLASSES)
    assert boxes.names() == ["Truck", "Car", "Cyclist"]
    points = torch.from_numpy(frame.points[:, :3])
    counts = points_in_boxes(points, boxes.boxes).sum(0).tolist()
    # Truck at 70 m, car at 60 m, cyclist at 46 m (few points that far).
    assert counts[0] >= 50 and counts[1] >= 5 and counts[2] >= 10
    shifted = boxes.boxes.clone()
    yaw = shifted[:, 6]
    shifted[:, 0] -= 3 * torch.sin(yaw)  # 3 m to each box's left
    shifted[:, 1] += 3 * torch.cos(yaw)
    shifted_counts = points_in_boxes(points, shifted).sum(0).tolist()
    assert all(s <= c / 4 for s, c in zip(shifted_counts, counts))


def test_real_round_trip_and_alpha(shared_data):
    frame = read_frame(shared_data / "kitti", 1)
    labels = _real_objects(frame)
    back = boxes_lidar_to_objects(objects_to_boxes_lidar(labels, frame.calib, CLASSES), frame.calib,
                                  frame.image_size)
    for ref, obj in zip(labels, back, strict=True):
        assert obj.type == ref.type
        np.testing.assert_allclose(obj.dimensions, ref.dimensions, atol=1e-4)
        np.testing.assert_allclose(obj.location, ref.location, atol=1e-4)
        assert abs(_wrap(obj.rotation_y - ref.rotation_y)) < 1e-4
        # alpha = ry - arctan2(x, z) reproduces the file's alpha (written with 2 decimals).
        assert abs(_wrap(obj.alpha - ref.alpha)) < 0.006
        # These labels' 2D boxes are the projections of their 3D boxes (2 decimals in the file).
        np.testing.assert_allclose(obj.bbox, ref.bbox, atol=0.15)


def test_objects_to_boxes_lidar_skips_and_scores():
    objs = [KittiObject("Car", 0, 0, 0, (0, 0, 0, 0), (1.5, 1.6, 4.0), (0, 1.6, 10), 0.0, score=0.5),
            KittiObject("DontCare", -1, -1, -10, (0, 0, 0, 0), (-1, -1, -1), (-1000, -1000, -1000), -10),
            KittiObject("Cyclist", 0, 0, 0, (0, 0, 0, 0), (1.7, 0.6, 1.8), (1, 1.6, 8), 0.5, score=0.25)]
    boxes = objects_to_boxes_lidar(objs, IDEAL, ("Pedestrian", "Cyclist", "Car"))
    assert boxes.labels.tolist() == [2, 1] and boxes.scores.tolist() == [0.5, 0.25]
    # Centre: bottom centre (0, 1.6, 10) in camera -> LiDAR (10 - 0.3, 0 + 0.5, -1.6 - 0.2) + h / 2 up.
    np.testing.assert_allclose(boxes.boxes[0].numpy(), [9.7, 0.5, -1.8 + 0.75, 4.0, 1.6, 1.5, -math.pi / 2],
                               atol=1e-6)
    empty = objects_to_boxes_lidar(objs[1:2], IDEAL, ("Car",))
    assert len(empty) == 0 and empty.scores is None


def test_split_round_trip(tmp_path):
    write_split(tmp_path / "train.txt", ["000000", "000002"])
    (tmp_path / "val.txt").write_text("000001\n\n000003\n")
    assert read_split(tmp_path / "train.txt") == ["000000", "000002"]
    assert read_split(tmp_path / "val.txt") == ["000001", "000003"]
