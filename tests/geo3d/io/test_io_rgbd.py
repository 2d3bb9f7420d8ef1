"""7-Scenes style RGB-D sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geo3d.errors import InputError
from geo3d.io.rgbd import RGBDFrame, read_rgbd_sequence, write_intrinsics, write_rgbd_frame
from geo3d.types import DepthMap


def _reprojected_depth_error(a: RGBDFrame, b: RGBDFrame, K: torch.Tensor, invert_poses: bool = False):
    """Median |depth_b(project(p)) - z_b(p)| over points p of frame a seen by frame b, and the overlap."""
    pose_a, pose_b = a.cam_to_world, b.cam_to_world
    if invert_poses:  # what a world-to-camera misreading would do
        pose_a, pose_b = torch.linalg.inv(pose_a), torch.linalg.inv(pose_b)
    world = a.depth.to_points(pose_a)[::3]  # a third of the points is plenty
    w2c = torch.linalg.inv(pose_b)
    cam = world @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    u = K[0, 0] * cam[:, 0] / z + K[0, 2]
    v = K[1, 1] * cam[:, 1] / z + K[1, 2]
    inside = (z > 0.1) & (u >= 0) & (u < b.depth.width) & (v >= 0) & (v < b.depth.height)
    col, row = u[inside].floor().long(), v[inside].floor().long()
    seen = b.depth.valid[row, col]
    diff = (b.depth.depth[row, col][seen] - z[inside][seen]).abs()
    return float(diff.median()), float(inside.float().mean())


def test_7scenes_sample(shared_data):
    seq = read_rgbd_sequence(shared_data / "surface" / "7scenes")
    assert len(seq) == 25
    assert seq.indices[:3] == [0, 40, 80]
    assert torch.equal(seq.K, torch.tensor([[585.0, 0, 320], [0, 585, 240], [0, 0, 1]]))
    frame = seq[0]
    assert frame.color.shape == (480, 640, 3) and frame.color.dtype == torch.uint8
    assert frame.depth.depth.shape == (480, 640) and torch.equal(frame.depth.K, seq.K)
    raw = np.asarray(Image.open(shared_data / "surface" / "7scenes" / "frame-000000.depth.png")).astype(np.int64)
    valid = (raw > 0) & (raw < 65535)
    assert torch.equal(frame.depth.valid, torch.from_numpy(valid))
    assert torch.allclose(frame.depth.depth[frame.depth.valid], torch.from_numpy(raw[valid] / 1000.0).float())
    expected_pose = np.loadtxt(shared_data / "surface" / "7scenes" / "frame-000000.pose.txt")
    assert torch.equal(frame.cam_to_world, torch.from_numpy(expected_pose).float())
    assert seq[-1].cam_to_world.shape == (4, 4)


def test_7scenes_poses_are_camera_to_world_and_K_is_right(shared_data):
    seq = read_rgbd_sequence(shared_data / "surface" / "7scenes")
    for i in (0, 12):
        a, b = seq[i], seq[i + 1]
        error, overlap = _reprojected_depth_error(a, b, seq.K)
        assert overlap > 0.3
        assert error < 0.05  # metres
        wrong, _ = _reprojected_depth_error(a, b, seq.K, invert_poses=True)
        assert wrong > 0.1  # the check can tell the pose direction apart


def _frame(seed: int = 0, h: int = 6, w: int = 8) -> RGBDFrame:
    g = torch.Generator().manual_seed(seed)
    color = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
    depth = torch.randint(0, 8000, (h, w), generator=g).float() / 1000.0  # whole millimetres, some zeros
    depth[0, 0] = 0.0
    pose = torch.eye(4)
    pose[:3, :3] = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    pose[:3, 3] = torch.tensor([0.1, -2.5, 1.0 + seed])
    return RGBDFrame(color, DepthMap(depth), pose)


def test_round_trip(tmp_path):
    K = torch.tensor([[10.0, 0, 4.0], [0, 11.0, 3.0], [0, 0, 1]])
    frames = [_frame(0), _frame(1)]
    write_intrinsics(tmp_path, K)
    write_rgbd_frame(tmp_path, 7, frames[0])
    write_rgbd_frame(tmp_path, 12, frames[1])
    assert (tmp_path / "frame-000007.color.png").is_file()
    seq = read_rgbd_sequence(tmp_path)
    assert seq.indices == [7, 12] and torch.equal(seq.K, K)
    for original, back in zip(frames, seq):
        assert torch.equal(back.color, original.color)
        assert torch.equal(back.depth.depth, original.depth.depth)
        assert torch.equal(back.depth.valid, original.depth.valid)
        assert torch.equal(back.cam_to_world, original.cam_to_world)


def test_jpeg_colour_and_invalid_65535(tmp_path):
    write_intrinsics(tmp_path, torch.eye(3))
    write_rgbd_frame(tmp_path, 0, _frame(), color_format="jpg")
    Image.fromarray(np.array([[0, 65535, 1500]], dtype=np.uint16)).save(tmp_path / "frame-000000.depth.png")
    frame = read_rgbd_sequence(tmp_path)[0]
    assert frame.color.shape == (6, 8, 3)
    assert frame.depth.valid.tolist() == [[False, False, True]]
    assert frame.depth.depth.tolist() == [[0.0, 0.0, 1.5]]


def test_depth_beyond_65534_mm_is_refused(tmp_path):
    frame = _frame()
    frame.depth.depth[1, 1] = 65.535  # would be code 65535, which means invalid
    with pytest.raises(ValueError, match="exceeds"):
        write_rgbd_frame(tmp_path, 0, frame)


def test_bad_folders_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        read_rgbd_sequence(tmp_path / "nope")
    with pytest.raises(InputError, match=r"camera-intrinsics\.txt: file not found"):
        read_rgbd_sequence(tmp_path)
    write_intrinsics(tmp_path, torch.eye(3))
    with pytest.raises(InputError, match=r"no frame-NNNNNN\.pose\.txt"):
        read_rgbd_sequence(tmp_path)
    write_rgbd_frame(tmp_path, 3, _frame())
    (tmp_path / "frame-000003.depth.png").unlink()
    with pytest.raises(InputError, match=r"frame-000003: missing depth image"):
        read_rgbd_sequence(tmp_path)
    write_rgbd_frame(tmp_path, 3, _frame())
    (tmp_path / "frame-000003.pose.txt").write_text("1 0 0\n0 1 0\n")
    seq = read_rgbd_sequence(tmp_path)  # lazy: the pose is read on access
    with pytest.raises(InputError, match=r"frame-000003\.pose\.txt: expected a 4x4 pose matrix"):
        seq[0]
    (tmp_path / "camera-intrinsics.txt").write_text("1 0 0\n0 1 0\n0 0 0\n")
    with pytest.raises(InputError, match="not a pinhole K"):
        read_rgbd_sequence(tmp_path)
    with pytest.raises(IndexError):
        seq[5]


def test_frames_of_another_size_and_intrinsics_for_another_size_are_errors(tmp_path):
    """One folder is one camera: a depth frame of another size than the first (it was fused without a word, 5x
    worse) names its file; a principal point outside the images says the intrinsics are for another size."""
    K = torch.tensor([[5.0, 0, 4.0], [0, 5.0, 3.0], [0, 0, 1]])
    write_intrinsics(tmp_path, K)
    write_rgbd_frame(tmp_path, 0, _frame(0))
    write_rgbd_frame(tmp_path, 1, _frame(1, h=12, w=16))
    seq = read_rgbd_sequence(tmp_path)
    assert seq.depth_size == (6, 8) and seq[0].depth.depth.shape == (6, 8)
    with pytest.raises(InputError, match=r"frame-000001\.depth\.png: depth image is 12 x 16, but the sequence's "
                                         r"first is 6 x 8"):
        seq[1]
    from pipelines.surface.fusion import fuse_rgbd

    with pytest.raises(InputError, match=r"frame-000001\.depth\.png: depth image is 12 x 16"):
        fuse_rgbd(tmp_path, 0.05, 0.2, progress=False)
    write_intrinsics(tmp_path, torch.tensor([[5.0, 0, 40.0], [0, 5.0, 3.0], [0, 0, 1]]))
    with pytest.raises(InputError, match=r"camera-intrinsics\.txt: principal point \(40, 3\) lies outside the 8 x 6"):
        read_rgbd_sequence(tmp_path)[0]
