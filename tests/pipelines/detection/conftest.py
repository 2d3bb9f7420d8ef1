"""Fixtures for the detection tests: a hand-made KITTI folder and a small synthetic one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geo3d.io.kitti import KittiCalib, KittiObject, write_calib, write_label, write_split, write_velodyne

# LiDAR (x forward, y left, z up) -> camera (x right, y down, z forward), focal 720 px, 1242 x 375 image.
CALIB = KittiCalib(
    P0=np.eye(3, 4), P1=np.eye(3, 4),
    P2=np.array([[720.0, 0, 621.0, 0], [0, 720.0, 187.5, 0], [0, 0, 1, 0]]), P3=np.eye(3, 4),
    R0_rect=np.eye(3),
    Tr_velo_to_cam=np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]]),
)


def car_label(x: float, y: float, yaw_cam: float = 0.0, kind: str = "Car") -> KittiObject:
    """A camera-frame label of a 3.9 x 1.6 x 1.5 m object whose LiDAR centre is (x, y, -1.0)."""
    # bottom centre in camera coordinates: x_cam = -y, y_cam = -(z - h / 2) = 1.75, z_cam = x
    return KittiObject(kind, 0.0, 0, 0.0, (500.0, 150.0, 700.0, 250.0), (1.5, 1.6, 3.9), (-y, 1.75, x), yaw_cam)


def write_frame(root: Path, frame_id: str, points: np.ndarray, objects: list[KittiObject]) -> None:
    base = root / "training"
    write_velodyne(base / "velodyne" / f"{frame_id}.bin", points)
    write_calib(base / "calib" / f"{frame_id}.txt", CALIB)
    write_label(base / "label_2" / f"{frame_id}.txt", objects)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run each test on one intra-op thread: on a busy 2-core machine, torch's and spconv's thread pools
    make these small workloads many times slower (measured: 0.02 s vs 0.4 s for a sparse conv)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hand_kitti(tmp_path: Path) -> Path:
    """Two frames: points ahead, behind, above and beyond the range; a Car, a Pedestrian and a DontCare."""
    rng = np.random.default_rng(0)
    ahead = np.column_stack([rng.uniform(5, 30, 200), rng.uniform(-3, 3, 200), rng.uniform(-1.7, 0, 200),
                             rng.uniform(0, 1, 200)])
    behind = ahead * np.array([-1, 1, 1, 1])
    far = ahead + np.array([100.0, 0, 0, 0])
    points = np.concatenate([ahead, behind, far]).astype(np.float32)
    objects = [car_label(15.0, 0.0), car_label(10.0, 2.0, kind="Pedestrian"),
               KittiObject("DontCare", -1, -1, -10, (0.0, 0.0, 20.0, 20.0), (-1, -1, -1), (-1000, -1000, -1000), -10),
               car_label(150.0, 0.0)]
    for frame_id in ("000000", "000001"):
        write_frame(tmp_path, frame_id, points, objects)
    write_split(tmp_path / "ImageSets" / "train.txt", ["000000"])
    write_split(tmp_path / "ImageSets" / "val.txt", ["000001"])
    return tmp_path


@pytest.fixture(scope="session")
def synth_kitti(tmp_path_factory) -> Path:
    """A small synthetic KITTI set (4 train + 3 val frames) from ``geo3d.synth.kitti``."""
    from geo3d.synth.kitti import generate_kitti

    return Path(generate_kitti(tmp_path_factory.mktemp("synth_kitti"), frames=4, val_frames=3, seed=0, workers=1))
