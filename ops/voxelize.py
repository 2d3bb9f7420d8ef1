"""Point cloud voxelization: hard (VoxelNet/SECOND, spconv's ``PointToVoxel``) and dynamic (mean, torch).

Binning rule, shared by both and by ``ops/reference/voxelize.py``: with
``lo, hi = pc_range[:3], pc_range[3:]``, a point is kept iff on every axis ``lo <= p < hi`` and its cell
``floor((p - lo) / voxel_size)``, computed in float32 as spconv does, lies in ``[0, grid)``. Points outside
are dropped, never wrapped or clamped.
Voxel coordinates are ``[batch, z, y, x]`` int32, as spconv's ``SparseConvTensor`` wants.

Hard voxelization keeps at most ``max_points_per_voxel`` points per voxel and ``max_voxels`` voxels per
batch item. On CPU, spconv fills voxels in point order (first come, first kept), so results are
deterministic; spconv's CUDA kernel may keep different points/voxels once a limit is hit.

CPU speed notes (KITTI frame, SECOND settings, 2-core machine):
- ``PointToVoxel`` allocates a dense int32 hash over the whole grid (1408 x 1600 x 40: 360 MB, 0.3-1.7 s
  to fill with -1) when it is built; generators are therefore cached per setting (:func:`_point_to_voxel`,
  two settings at most). A generator reuses its buffers, so do not call :func:`hard_voxelize` from two
  threads at once (DataLoader worker processes are fine).
- spconv's CPU kernel itself (single-threaded) takes ~2 ms, but ``PointToVoxel`` then copies its outputs
  with torch ops that run on torch's intra-op thread pool; on this machine, whose cores are shared with other
  jobs, waking that pool cost 10-30 ms per call, far more than the copies (measured: 12 ms for a 1.3 MB clone
  vs 0.1 ms on one thread). At ~100k points threads buy nothing, so both voxelizers run their CPU work on
  one intra-op thread (:func:`_one_torch_thread`), as DataLoader workers do anyway. Measured on the KITTI
  frame with the machine at load ~5: hard 9 ms and dynamic 20 ms on one thread, vs 12 ms (spconv's
  ``PointToVoxel`` alone) and 127 ms on two (best of 10-30 runs; see ``scripts/bench/voxelize.py``).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from spconv.pytorch.utils import PointToVoxel

from geo3d.errors import InputError, require
from ops.scatter import scatter_mean

__all__ = ["dynamic_voxelize", "grid_size", "hard_voxelize"]


def grid_size(voxel_size: Sequence[float], pc_range: Sequence[float]) -> tuple[int, int, int]:
    """Number of voxels along x, y, z.

    Args:
        voxel_size: (3,) [vx, vy, vz] metres, positive.
        pc_range: (6,) [xmin, ymin, zmin, xmax, ymax, zmax] metres; each extent must be a whole number of
            voxels (within 1e-4 of a voxel), so that the grid ends exactly at the range's max.

    Returns:
        (nx, ny, nz) ints.

    Raises:
        ValueError: on wrong lengths, non-positive sizes, empty ranges or extents that are not a multiple of
            the voxel size.
    """
    size = [float(v) for v in voxel_size]
    rng = [float(v) for v in pc_range]
    require(len(size) == 3 and all(v > 0 for v in size), None,
            f"voxel_size must be 3 positive sizes [vx, vy, vz] in metres, got {list(voxel_size)}")
    require(len(rng) == 6 and all(math.isfinite(v) for v in rng), None,
            f"pc_range must be 6 finite values [xmin, ymin, zmin, xmax, ymax, zmax], got {list(pc_range)}")
    counts = []
    for axis in range(3):
        extent = rng[axis + 3] - rng[axis]
        require(extent > 0, None,
                f"pc_range: max must exceed min on axis {'xyz'[axis]}, got {list(pc_range)}")
        n = extent / size[axis]
        require(abs(n - round(n)) < 1e-4, None,
                f"pc_range extent {extent:g} on axis {'xyz'[axis]} is not a multiple of voxel_size "
                f"{size[axis]:g} ({n:.4f} voxels)")
        counts.append(round(n))
    return counts[0], counts[1], counts[2]


def _check_points(points: torch.Tensor, batch: torch.Tensor | None, name: str) -> None:
    require(isinstance(points, torch.Tensor) and points.dim() == 2 and points.shape[1] >= 3, None,
            f"{name}: points must be an (N, C >= 3) tensor [x, y, z, ...], got "
            f"{tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__}")
    require(points.dtype == torch.float32, None, f"{name}: points must be float32, got {points.dtype}")
    row = _first_non_finite_row(points)
    if row is not None:
        raise InputError(None, f"{name}: points must be finite; row {row} is {points[row].tolist()}")
    if batch is not None:
        require(batch.dim() == 1 and batch.shape[0] == points.shape[0] and batch.dtype == torch.int64, None,
                f"{name}: batch must be (N,) = ({points.shape[0]},) int64, got "
                f"{tuple(batch.shape)} {batch.dtype}")
        require(batch.device == points.device, None,
                f"{name}: batch on {batch.device} but points on {points.device}")
        require(batch.numel() == 0 or int(batch.min()) >= 0, None, f"{name}: batch indices must be >= 0")


def _first_non_finite_row(points: torch.Tensor) -> int | None:
    """First row of (N, C) ``points`` holding NaN or inf, or None (numpy's one-pass check on CPU)."""
    if points.device.type == "cpu":
        values = points.detach().numpy()
        if np.isfinite(values).all():
            return None
        return int(np.flatnonzero(~np.isfinite(values).all(1))[0])
    bad = ~torch.isfinite(points).all(1)
    return int(bad.nonzero()[0]) if bool(bad.any()) else None


def _in_range(xyz: torch.Tensor, pc_range: Sequence[float]) -> torch.Tensor:
    """(N, 3) float32 -> (N,) bool: ``lo <= p < hi`` on every axis (scalar compares per column: fastest)."""
    keep = (xyz[:, 0] >= pc_range[0]) & (xyz[:, 0] < pc_range[3])
    for axis in (1, 2):
        keep &= (xyz[:, axis] >= pc_range[axis]) & (xyz[:, axis] < pc_range[axis + 3])
    return keep


def _cells(xyz: torch.Tensor, voxel_size: Sequence[float], pc_range: Sequence[float],
           grid: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cells (M, 3) int64 [x, y, z] of the kept points and the (N,) bool keep mask (binning rule above)."""
    keep = _in_range(xyz, pc_range)
    lo = torch.tensor(pc_range[:3], dtype=torch.float32, device=xyz.device)
    size = torch.tensor(voxel_size, dtype=torch.float32, device=xyz.device)
    cell = torch.floor((xyz[keep] - lo) / size).long()
    # float32 rounding can put a point just below ``hi`` into cell ``grid``: drop it, as spconv does
    inside = ((cell >= 0) & (cell < torch.tensor(grid, device=xyz.device))).all(1)
    if not bool(inside.all()):
        keep[keep.clone()] = inside
        cell = cell[inside]
    return cell, keep


@functools.lru_cache(maxsize=2)
def _point_to_voxel(voxel_size: tuple[float, ...], pc_range: tuple[float, ...], channels: int,
                    max_voxels: int, max_points_per_voxel: int, device: torch.device) -> PointToVoxel:
    """Cached spconv generator: building one allocates a dense hash over the grid on CPU (see module doc)."""
    return PointToVoxel(list(voxel_size), list(pc_range), channels, max_voxels, max_points_per_voxel,
                        device=device)


@contextlib.contextmanager
def _one_torch_thread(device: torch.device) -> Iterator[None]:
    """Run torch CPU ops on one intra-op thread inside the block (no-op for other devices)."""
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def hard_voxelize(points: torch.Tensor, batch: torch.Tensor | None, voxel_size: Sequence[float],
                  pc_range: Sequence[float], max_points_per_voxel: int,
                  max_voxels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VoxelNet/SECOND voxelization with spconv's ``PointToVoxel``, on CPU or CUDA.

    Args:
        points: (N, C) float32 [x, y, z, ...] metres (extra columns such as reflectance are carried along).
        batch: (N,) int64 batch item of each point, or None for a single item.
        voxel_size: (3,) [vx, vy, vz] metres.
        pc_range: (6,) [xmin, ymin, zmin, xmax, ymax, zmax] metres.
        max_points_per_voxel: P, points kept per voxel (later ones are dropped).
        max_voxels: voxels kept per batch item (points opening a further voxel are dropped).

    Returns:
        voxels: (V, P, C) float32 points of each voxel, zero-padded after ``num_points``.
        coords: (V, 4) int32 [batch, z, y, x] voxel indices, grouped by batch item in increasing order.
        num_points: (V,) int32 points stored per voxel, in [1, P].

    Raises:
        ValueError: on wrong shapes/dtypes, NaN or inf values, or bad voxel settings.
    """
    _check_points(points, batch, "hard_voxelize")
    grid_size(voxel_size, pc_range)
    voxel_size, pc_range = tuple(float(v) for v in voxel_size), tuple(float(v) for v in pc_range)
    require(int(max_points_per_voxel) >= 1 and int(max_voxels) >= 1, None,
            f"hard_voxelize: max_points_per_voxel and max_voxels must be >= 1, got "
            f"{max_points_per_voxel}, {max_voxels}")
    generator = _point_to_voxel(voxel_size, pc_range, points.shape[1], int(max_voxels),
                                int(max_points_per_voxel), points.device)
    with _one_torch_thread(points.device):
        return _hard_voxelize(points.detach(), batch, generator, pc_range)


def _hard_voxelize(points: torch.Tensor, batch: torch.Tensor | None, generator: PointToVoxel,
                   pc_range: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`hard_voxelize` on validated input: one ``generator`` call per batch item."""
    n_items = 1 if batch is None else (int(batch.max()) + 1 if batch.numel() else 0)
    voxels = [generator.voxels[:0]]
    coords = [torch.zeros((0, 4), dtype=torch.int32, device=points.device)]
    counts = [generator.num_per_voxel[:0]]
    for item in range(n_items):
        pts = points if batch is None else points[batch == item]
        v, c, n = generator(pts[_in_range(pts[:, :3], pc_range)].contiguous())
        voxels.append(v)
        coords.append(torch.cat([torch.full_like(c[:, :1], item), c], 1))
        counts.append(n)
    return torch.cat(voxels), torch.cat(coords), torch.cat(counts)


def dynamic_voxelize(points: torch.Tensor, batch: torch.Tensor | None, voxel_size: Sequence[float],
                     pc_range: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic voxelization: every in-range point counts; each voxel's feature is the mean of its points.

    Differentiable with respect to ``points`` (the mean is a scatter-mean).

    Args:
        points: (N, C) float32 [x, y, z, ...] metres.
        batch: (N,) int64 batch item of each point, or None for a single item.
        voxel_size: (3,) [vx, vy, vz] metres.
        pc_range: (6,) [xmin, ymin, zmin, xmax, ymax, zmax] metres.

    Returns:
        voxel_features: (V, C) float32 mean of the points in each voxel.
        coords: (V, 4) int32 [batch, z, y, x], sorted (batch-major, then z, y, x).
        point_to_voxel: (N,) int64 row of each point's voxel, -1 for dropped (out-of-range) points.

    Raises:
        ValueError: on wrong shapes/dtypes, NaN or inf values, or bad voxel settings.
    """
    _check_points(points, batch, "dynamic_voxelize")
    nx, ny, nz = grid_size(voxel_size, pc_range)
    voxel_size, pc_range = tuple(float(v) for v in voxel_size), tuple(float(v) for v in pc_range)
    with _one_torch_thread(points.device):
        cell, keep = _cells(points[:, :3].detach(), voxel_size, pc_range, (nx, ny, nz))
        item = torch.zeros_like(cell[:, 0]) if batch is None else batch[keep]
        key = ((item * nz + cell[:, 2]) * ny + cell[:, 1]) * nx + cell[:, 0]
        unique, inverse = torch.unique(key, return_inverse=True)
        voxel_features = scatter_mean(points[keep], inverse, unique.shape[0])
        x = unique % nx
        y = unique // nx % ny
        z = unique // (nx * ny) % nz
        b = unique // (nx * ny * nz)
        coords = torch.stack([b, z, y, x], 1).int()
        point_to_voxel = torch.full((points.shape[0],), -1, dtype=torch.int64, device=points.device)
        point_to_voxel[keep] = inverse
    return voxel_features, coords, point_to_voxel
