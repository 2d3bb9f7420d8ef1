"""Hard and dynamic voxelization against the plain-Python reference voxelizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ops.reference.voxelize import voxelize_reference
from ops.voxelize import dynamic_voxelize, grid_size, hard_voxelize

VOXEL = [0.5, 0.5, 0.25]
RANGE = [-2.0, -1.0, -1.0, 2.0, 3.0, 1.0]  # negative mins: cells must not wrap
SECOND_VOXEL = [0.05, 0.05, 0.1]
SECOND_RANGE = [0.0, -40.0, -3.0, 70.4, 40.0, 1.0]


def _cloud(n: int = 600, batch_size: int = 3, seed: int = 0):
    """Points spilling out of RANGE on every side, with a reflectance column and shuffled batch items."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(RANGE[:3]), torch.tensor(RANGE[3:])
    xyz = lo - 0.5 + torch.rand(n, 3, generator=g) * (hi - lo + 1.0)
    points = torch.cat([xyz, torch.rand(n, 1, generator=g)], 1)
    batch = torch.randint(0, batch_size, (n,), generator=g)
    return points, batch


def _assert_hard_matches_reference(points, batch, voxel_size, pc_range, max_points, max_voxels):
    voxels, coords, num_points = hard_voxelize(points, batch, voxel_size, pc_range, max_points, max_voxels)
    ref = voxelize_reference(points.numpy(), None if batch is None else batch.numpy(), voxel_size, pc_range,
                             max_points, max_voxels)
    assert coords.dtype == torch.int32 and num_points.dtype == torch.int32 and voxels.dtype == torch.float32
    assert voxels.shape == (len(ref), max_points, points.shape[1])
    # CPU: same voxels, in the same (first come) order, with the same points in the same order
    assert [tuple(c) for c in coords.tolist()] == list(ref)
    assert num_points.tolist() == [len(rows) for rows in ref.values()]
    for v, rows in enumerate(ref.values()):
        assert torch.equal(voxels[v, : len(rows)], points[rows])
        assert (voxels[v, len(rows):] == 0).all()
    return coords


def test_grid_size():
    assert grid_size(SECOND_VOXEL, SECOND_RANGE) == (1408, 1600, 40)
    assert grid_size(VOXEL, RANGE) == (8, 8, 8)


@pytest.mark.parametrize("voxel_size, pc_range, match", [
    ([0.3, 0.5, 0.25], RANGE, "not a multiple"),
    ([0.5, 0.0, 0.25], RANGE, "positive"),
    ([0.5, 0.5], RANGE, "positive"),
    (VOXEL, [2.0, -1.0, -1.0, -2.0, 3.0, 1.0], "max must exceed min"),
])
def test_bad_settings_raise(voxel_size, pc_range, match):
    with pytest.raises(ValueError, match=match):
        grid_size(voxel_size, pc_range)
    with pytest.raises(ValueError, match=match):
        dynamic_voxelize(torch.zeros(1, 3), None, voxel_size, pc_range)


@pytest.mark.parametrize("max_points, max_voxels", [(3, 25), (2, 1000), (50, 1000)])
def test_hard_matches_reference_with_batch(max_points, max_voxels):
    points, batch = _cloud()
    coords = _assert_hard_matches_reference(points, batch, VOXEL, RANGE, max_points, max_voxels)
    if max_voxels == 25:  # the cap applies per batch item
        assert torch.bincount(coords[:, 0].long()).tolist() == [25, 25, 25]


def test_hard_without_batch_and_empty_item():
    points, batch = _cloud(n=200)
    _assert_hard_matches_reference(points, None, VOXEL, RANGE, 4, 1000)
    batch[batch == 1] = 2  # item 1 has no points
    coords = _assert_hard_matches_reference(points, batch, VOXEL, RANGE, 4, 1000)
    assert set(coords[:, 0].tolist()) == {0, 2}


@pytest.mark.parametrize("batch", [None, torch.zeros(0, dtype=torch.int64)])
def test_no_points(batch):
    voxels, coords, num_points = hard_voxelize(torch.zeros(0, 4), batch, VOXEL, RANGE, 5, 10)
    assert voxels.shape == (0, 5, 4) and coords.shape == (0, 4) and num_points.shape == (0,)
    features, coords, point_to_voxel = dynamic_voxelize(torch.zeros(0, 4), batch, VOXEL, RANGE)
    assert features.shape == (0, 4) and coords.shape == (0, 4) and point_to_voxel.shape == (0,)


def test_dynamic_matches_reference_means_and_mapping():
    points, batch = _cloud()
    features, coords, point_to_voxel = dynamic_voxelize(points, batch, VOXEL, RANGE)
    ref = voxelize_reference(points.numpy(), batch.numpy(), VOXEL, RANGE)
    got = {tuple(c): v for v, c in enumerate(coords.tolist())}
    assert set(got) == set(ref)
    assert coords.dtype == torch.int32 and features.shape == (len(ref), 4)
    members: dict[int, list[int]] = {}
    for row, v in enumerate(point_to_voxel.tolist()):
        members.setdefault(v, []).append(row)
    assert len(members.get(-1, [])) == len(points) - sum(len(r) for r in ref.values())
    expected = torch.stack([points[rows].double().mean(0) for rows in ref.values()])
    assert [members[got[key]] for key in ref] == list(ref.values())
    rows = torch.tensor([got[key] for key in ref])
    torch.testing.assert_close(features[rows].double(), expected, rtol=1e-6, atol=1e-6)


def test_dynamic_is_differentiable():
    points, batch = _cloud(n=50)
    points.requires_grad_(True)
    features, _, point_to_voxel = dynamic_voxelize(points, batch, VOXEL, RANGE)
    features.sum().backward()
    counts = torch.bincount(point_to_voxel[point_to_voxel >= 0])
    expected = torch.zeros(50)
    kept = point_to_voxel >= 0
    expected[kept] = 1.0 / counts[point_to_voxel[kept]].float()
    torch.testing.assert_close(points.grad, expected[:, None].expand(-1, 4))


def test_range_edges_hand_computed():
    """min edge kept in cell 0, max edge dropped, just inside max kept in the last cell, no wrapping."""
    points = torch.tensor([
        [-2.0, -1.0, -1.0, 1.0],    # exactly on the min corner: cell (0, 0, 0)
        [2.0, 0.0, 0.0, 2.0],       # exactly on max x: dropped
        [0.0, 3.0, 0.0, 3.0],       # exactly on max y: dropped
        [0.0, 0.0, 1.0, 4.0],       # exactly on max z: dropped
        [1.999, 2.999, 0.999, 5.0], # just inside: last cell (7, 7, 7)
        [-2.001, 0.0, 0.0, 6.0],    # just below min x: dropped (would wrap to -1)
        [-0.1, -0.6, -0.3, 7.0],    # negative coords: x cell 3, y cell 0, z cell 2
    ])
    expected = [[0, 0, 0, 0], [0, 7, 7, 7], [0, 2, 0, 3]]  # [batch, z, y, x]
    voxels, coords, num_points = hard_voxelize(points, None, VOXEL, RANGE, 2, 10)
    assert coords.tolist() == expected and num_points.tolist() == [1, 1, 1]
    assert voxels[:, 0, 3].tolist() == [1.0, 5.0, 7.0]
    features, coords, point_to_voxel = dynamic_voxelize(points, None, VOXEL, RANGE)
    assert coords.tolist() == sorted(expected)
    assert point_to_voxel.tolist() == [0, -1, -1, -1, 2, -1, 1]
    assert features[:, 3].tolist() == [1.0, 7.0, 5.0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("fn", ["hard", "dynamic"])
def test_non_finite_points_rejected(bad, fn):
    points, _ = _cloud(n=10)
    points[4, 1] = bad
    with pytest.raises(ValueError, match="finite; row 4"):
        if fn == "hard":
            hard_voxelize(points, None, VOXEL, RANGE, 5, 100)
        else:
            dynamic_voxelize(points, None, VOXEL, RANGE)


def test_bad_inputs_rejected():
    points, batch = _cloud(n=10)
    with pytest.raises(ValueError, match="float32"):
        hard_voxelize(points.double(), None, VOXEL, RANGE, 5, 100)
    with pytest.raises(ValueError, match=r"\(N, C >= 3\)"):
        dynamic_voxelize(points[:, :2], None, VOXEL, RANGE)
    with pytest.raises(ValueError, match="batch must be"):
        dynamic_voxelize(points, batch[:5], VOXEL, RANGE)
    with pytest.raises(ValueError, match="batch must be"):
        hard_voxelize(points, batch.int(), VOXEL, RANGE, 5, 100)
    with pytest.raises(ValueError, match="max_voxels"):
        hard_voxelize(points, None, VOXEL, RANGE, 5, 0)


@pytest.fixture(scope="module")
def kitti_points(shared_data):
    path = shared_data / "kitti" / "training" / "velodyne" / "000001.bin"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return torch.from_numpy(np.fromfile(path, np.float32).reshape(-1, 4))


def test_real_kitti_frame_hard_matches_reference(kitti_points):
    """SECOND's settings on a real HDL-64 scan: the 16000-voxel cap is hit, so the voxel order matters."""
    coords = _assert_hard_matches_reference(kitti_points, None, SECOND_VOXEL, SECOND_RANGE, 5, 16000)
    assert coords.shape[0] == 16000


def test_real_kitti_frame_dynamic_matches_reference(kitti_points):
    _, coords, point_to_voxel = dynamic_voxelize(kitti_points, None, SECOND_VOXEL, SECOND_RANGE)
    ref = voxelize_reference(kitti_points.numpy(), None, SECOND_VOXEL, SECOND_RANGE)
    assert {tuple(c) for c in coords.tolist()} == set(ref)
    counts = torch.bincount(point_to_voxel[point_to_voxel >= 0], minlength=coords.shape[0])
    index = {tuple(c): v for v, c in enumerate(coords.tolist())}
    assert [int(counts[index[k]]) for k in ref] == [len(rows) for rows in ref.values()]


@pytest.mark.cuda
def test_cuda_hard_and_dynamic_match_cpu():
    points, batch = _cloud()
    _, coords, num_points = hard_voxelize(points, batch, VOXEL, RANGE, 50, 1000)  # no cap is hit
    _, gpu_coords, gpu_num = hard_voxelize(points.cuda(), batch.cuda(), VOXEL, RANGE, 50, 1000)
    cpu = dict(zip(map(tuple, coords.tolist()), num_points.tolist()))
    assert dict(zip(map(tuple, gpu_coords.cpu().tolist()), gpu_num.cpu().tolist())) == cpu
    features, coords, _ = dynamic_voxelize(points, batch, VOXEL, RANGE)
    gpu_features, gpu_coords, _ = dynamic_voxelize(points.cuda(), batch.cuda(), VOXEL, RANGE)
    assert torch.equal(gpu_coords.cpu(), coords)
    torch.testing.assert_close(gpu_features.cpu(), features, rtol=1e-5, atol=1e-5)
