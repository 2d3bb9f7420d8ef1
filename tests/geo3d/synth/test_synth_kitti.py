"""Synthetic KITTI scenes: determinism, files that parse back, label validity, shapes, occlusion."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shapely.geometry import Polygon

from geo3d.errors import InputError
from geo3d.io.kitti import objects_to_boxes_lidar, read_calib, read_frame, read_label, read_split
from geo3d.synth import kitti as synth
from geo3d.synth import shapes_kitti as shapes
from geo3d.types import points_in_boxes

CLASSES = ("Car", "Van", "Pedestrian", "Cyclist")
SEED = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """2 train + 1 val frames, generated in this process."""
    return synth.generate_kitti(tmp_path_factory.mktemp("kitti") / "a", 2, 1, SEED, workers=1, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_splits(dataset):
    assert read_split(dataset / "ImageSets" / "train.txt") == ["000000", "000001"]
    assert read_split(dataset / "ImageSets" / "val.txt") == ["000002"]
    for kind, ext in (("velodyne", "bin"), ("label_2", "txt"), ("calib", "txt"), ("image_2", "png")):
        assert sorted(p.name for p in (dataset / "training" / kind).iterdir()) == [f"00000{i}.{ext}" for i in range(3)]
    with Image.open(dataset / "training" / "image_2" / "000000.png") as im:
        assert im.size == (1242, 375)
    np.testing.assert_allclose(read_calib(dataset / "training" / "calib" / "000000.txt").P2, synth.CALIB.P2)


def test_determinism_and_independent_streams(dataset, tmp_path):
    again = synth.generate_kitti(tmp_path / "b", 2, 1, SEED, workers=1, progress=False)
    assert _files(again) == _files(dataset)
    # Val frames come from their own stream: one train frame fewer leaves the val frame unchanged.
    shorter = synth.generate_kitti(tmp_path / "c", 1, 1, SEED, workers=1, progress=False)
    assert (shorter / "training/velodyne/000001.bin").read_bytes() == \
        (dataset / "training/velodyne/000002.bin").read_bytes()
    other = synth.generate_kitti(tmp_path / "d", 1, 0, SEED + 1, workers=1, image=False, progress=False)
    assert (other / "training/velodyne/000000.bin").read_bytes() != \
        (dataset / "training/velodyne/000000.bin").read_bytes()


def test_resume_and_refuse_other_parameters(dataset, tmp_path):
    root = tmp_path / "r"
    shutil.copytree(dataset, root)
    (root / "training/label_2/000001.txt").unlink()
    kept = root / "training/velodyne/000000.bin"
    kept.write_bytes(b"")  # a frame whose files all exist is skipped, so this stays untouched
    synth.generate_kitti(root, 2, 1, SEED, workers=1, progress=False)
    assert (root / "training/label_2/000001.txt").read_bytes() == \
        (dataset / "training/label_2/000001.txt").read_bytes()
    assert kept.read_bytes() == b""
    with pytest.raises(InputError, match="generated with"):
        synth.generate_kitti(root, 2, 1, SEED + 1, workers=1, progress=False)
    foreign = tmp_path / "foreign"
    (foreign / "training/velodyne").mkdir(parents=True)
    (foreign / "training/velodyne/000000.bin").write_bytes(b"")
    with pytest.raises(InputError, match="not written by geo3d synth kitti"):
        synth.generate_kitti(foreign, 1, 0, SEED, workers=1, progress=False)


def test_labels_valid_and_boxes_hold_points(dataset):
    n_labelled = 0
    for fid in ("000000", "000001", "000002"):
        frame = read_frame(dataset, fid)
        assert frame.points.dtype == np.float32 and np.isfinite(frame.points).all()
        assert 0 <= frame.points[:, 3].min() and frame.points[:, 3].max() <= 1
        for obj in frame.objects:
            assert obj.type in CLASSES + ("DontCare",)
            left, top, right, bottom = obj.bbox
            assert 0 <= left < right <= 1241 and 0 <= top < bottom <= 374
            if obj.type == "DontCare":
                assert obj.occluded == -1 and obj.location == (-1000, -1000, -1000)
                continue
            n_labelled += 1
            assert 0 <= obj.truncated <= 1 and obj.occluded in (0, 1, 2)
            assert obj.location[2] > 0  # in front of the camera
            x, _, z = obj.location
            assert abs((obj.alpha - obj.rotation_y + math.atan2(x, z) + math.pi) % (2 * math.pi) - math.pi) < 1e-3
        boxes = objects_to_boxes_lidar(frame.objects, frame.calib, CLASSES)
        counts = points_in_boxes(torch.from_numpy(frame.points[:, :3]), boxes.boxes).sum(0)
        assert (counts >= synth.MIN_POINTS).all(), counts
    assert n_labelled >= 5


def test_scan_looks_like_an_hdl64():
    frame = synth.simulate_frame(11)
    points = frame.points
    n_rays = 64 * 2000
    assert 0.6 * n_rays < len(points) < 0.97 * n_rays  # ray drop and sky
    rng = np.linalg.norm(points[:, :3], axis=1)
    assert rng.max() < 120.1 and (points[:, 0] < -5).sum() > 1000  # 360 degrees kept
    # the ground under the sensor is the street's surface, 1.73 m below the sensor at the origin
    street = synth._layout(np.random.default_rng(11)).street
    surface = street.surface_z(points[:, 0], points[:, 1])
    near = (rng < 8) & (np.abs(points[:, 2] - surface) < 0.2)
    assert near.sum() > 5000 and abs(np.median(points[near, 2] - surface[near])) < 0.01
    assert street.surface_z(0.0, 0.0) == pytest.approx(-1.73)
    # two laser blocks: elevations cluster at the 64 beams, 1/3 degree apart above -8.33, 1/2 degree below
    elevation = np.sort(np.degrees(np.arcsin(points[:, 2] / rng)))
    starts = np.flatnonzero(np.diff(elevation) > 0.08)
    clusters = np.split(elevation, starts + 1)
    centres = np.array([np.median(c) for c in clusters if len(c) > 20])[::-1]
    assert len(centres) == 64
    spacing = -np.diff(centres)
    assert abs(np.median(spacing[:31]) - 10.33 / 31) < 0.03 and abs(np.median(spacing[32:]) - 15.5 / 31) < 0.03
    assert abs(spacing[31] - 0.5) < 0.1  # the gap between the blocks
    assert elevation.min() > -24.6 and elevation.max() < 2.3


def test_no_overlapping_objects():
    for seed in (0, 5):
        frame = synth.simulate_frame(seed)
        polys = [Polygon(c[:4, :2].tolist()) for c in frame.boxes.corners().numpy()]
        assert len(polys) >= 3
        for i in range(len(polys)):
            for j in range(i + 1, len(polys)):
                assert polys[i].intersection(polys[j]).area == 0.0
        # Trees, poles, buildings and the scatter volumes (foliage, wire mesh) stay out of the object boxes.
        layout = synth._layout(np.random.default_rng(seed))
        boxes = torch.tensor(np.array([box for _, box in layout.objects]), dtype=torch.float32)
        vertices = torch.from_numpy(np.concatenate([m.vertices for m in layout.clutter[1:]]))
        assert not points_in_boxes(vertices, boxes).any()
        grid = torch.stack(torch.meshgrid(*[torch.linspace(-0.5, 0.5, 5)] * 3, indexing="ij"), -1).reshape(-1, 3)
        for box in boxes:
            c, s = math.cos(box[6]), math.sin(box[6])
            local = grid * box[3:6]
            inside = torch.stack([local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c,
                                  local[:, 2]], 1) + box[:3]
            assert not layout.volumes.contains(inside.double().numpy()).any()
        assert len(layout.volumes) >= 3


def test_meshes_are_shaped_not_boxes():
    rng = np.random.default_rng(0)
    l, w, h = 4.0, 1.6, 1.5
    car = shapes.car(l, w, h, 0.3, rng).vertices
    np.testing.assert_allclose(car.min(0), [-l / 2, -w / 2, 0], atol=1e-6)  # tight in its box
    np.testing.assert_allclose(car.max(0), [l / 2, w / 2, h], atol=1e-6)
    top = car[car[:, 2] > 0.75 * h]
    assert np.ptp(top[:, 0]) < 0.65 * l and np.ptp(top[:, 1]) < 0.9 * w  # the cabin is shorter and narrower
    person = shapes.pedestrian(0.8, 0.6, 1.75, 0.3, rng).vertices
    head = person[person[:, 2] > 1.55]
    assert np.ptp(head[:, 1]) < 0.25 and np.ptp(head[:, 0]) < 0.25


def test_car_points_do_not_fill_the_box(dataset):
    """In the simulated scans, well-seen cars have (almost) no returns above the bonnet: the front 25 % of the box's
    upper quarter is empty for every body type (mixed-pixel returns at the silhouette excepted)."""
    checked = 0
    for fid in ("000000", "000001", "000002"):
        frame = read_frame(dataset, fid)
        boxes = objects_to_boxes_lidar(frame.objects, frame.calib, ("Car",)).boxes
        points = torch.from_numpy(frame.points[:, :3])
        inside = points_in_boxes(points, boxes)
        for k, box in enumerate(boxes):
            local = points[inside[:, k]] - box[:3]
            c, s = math.cos(box[6]), math.sin(box[6])
            along = local[:, 0] * c + local[:, 1] * s
            high = local[:, 2] > box[5] / 4
            if high.sum() < 30 or np.ptp(along.numpy()) < 0.8 * float(box[3]):
                continue  # not seen enough to judge
            above_bonnet = high & (along > 0.25 * float(box[3]))
            assert int(above_bonnet.sum()) <= 0.05 * int(high.sum()), (int(above_bonnet.sum()), int(high.sum()))
            checked += 1
    assert checked >= 2


def test_occlusion_from_visibility():
    rng = np.random.default_rng(0)

    def car(x, y):
        mesh = shapes.car(4.0, 1.6, 1.5, 0.3, rng).placed(0.3, (x, y, synth.GROUND_Z))
        return mesh, [x, y, synth.GROUND_Z + 0.75, 4.0, 1.6, 1.5, 0.3]

    (m1, b1), (m2, b2), (m3, b3) = car(15, 0), car(25, 0.5), car(10, -8)
    ground = shapes.box(-150, 150, -150, 150, synth.GROUND_Z - 0.1, synth.GROUND_Z, 0.2)
    _, owner, visibility = synth._scan([m1, m2, m3], np.array([b1, b2, b3]), [ground], synth.LidarSpec(), rng, 0)
    assert visibility[0] == 1.0 and visibility[2] == 1.0  # nothing in front of them
    assert visibility[1] < 0.45  # hidden behind the first car
    assert [synth._occlusion_level(v) for v in visibility] == [0, 2, 0]
    assert (owner == 1).sum() > 0


@pytest.mark.slow
def test_worker_pool_writes_the_same_files(dataset, tmp_path):
    pooled = synth.generate_kitti(tmp_path / "p", 2, 1, SEED, workers=2, progress=False)
    assert _files(pooled) == _files(dataset)


def test_labels_read_back_equal_simulation(dataset):
    seed = np.random.SeedSequence(SEED).spawn(2)[0].spawn(2)[1]
    frame = synth.simulate_frame(seed)
    labels = read_label(dataset / "training/label_2/000001.txt")
    assert [o.type for o in labels] == [o.type for o in frame.objects]
    for a, b in zip(labels, frame.objects):
        np.testing.assert_allclose(a.location, b.location, atol=1e-4)


@pytest.mark.parametrize("side", [1, -1])
def test_bush_rows_fill_their_road_edge_strip_and_stay_inside_it(side):
    rng = np.random.default_rng(11)
    street = synth._Street(rng)
    volumes = synth.ScatterVolumes()
    u0, length, offset, depth = -5.0, 20.0, street.road_half + 0.5, 2.0
    synth._bush_row(volumes, street, u0, length, offset, side, depth, rng)
    assert len(volumes) >= 4 and not volumes.is_box.any()  # ellipsoids, each at most 4.5 m long
    # dense samples of every ellipsoid's surface, in street coordinates
    theta, phi = np.meshgrid(np.linspace(0, np.pi, 9), np.linspace(0, 2 * np.pi, 17), indexing="ij")
    unit = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1).reshape(-1, 3)
    along, across = [], []
    for centre, half, yaw in zip(volumes.centres, volumes.half_sizes, volumes.yaws):
        local = unit * half
        x = centre[0] + local[:, 0] * np.cos(yaw) - local[:, 1] * np.sin(yaw)
        y = centre[1] + local[:, 0] * np.sin(yaw) + local[:, 1] * np.cos(yaw)
        along.append(x * np.cos(street.phi) + y * np.sin(street.phi))
        across.append(street.lateral(x, y))
        assert 0.8 - 1e-9 <= 2 * half[2] <= 2.8 + 1e-9 and 2 * half[0] <= 4.5 + 1e-9
    along, across = np.concatenate(along), np.concatenate(across) * side
    assert along.min() >= u0 - 1e-6 and along.max() <= u0 + length + 1e-6
    assert across.min() >= offset - 1e-6 and across.max() <= offset + depth + 1e-6
    assert along.max() - along.min() > 0.9 * length  # the row spans the strip
