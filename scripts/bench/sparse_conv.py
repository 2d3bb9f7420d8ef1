"""Benchmark rows for ``ops.sparse_conv.SubMConv3d`` (16 -> 16 channels, 3x3x3, float32).

- ``kitti``: the active voxels of a real KITTI scan on SECOND's grid (41 x 1600 x 1408, voxel
  [0.05, 0.05, 0.1] m), from ``../shared/data/kitti/training/velodyne/000001.bin`` (or
  ``$GEO3D_SHARED_DATA``) when present, otherwise
  40,000 random sites on that grid. Forward (rulebook included, no grad) and forward + backward; no target.
- ``1% of 128^3``: 20,972 random sites of a 128^3 grid, batch 1. Reference: dense ``torch.conv3d`` on the
  same (1, 16, 128, 128, 128) grid, forward only, as is our row. Target: at least 10x faster.

Each case runs twice: with torch's default intra-op thread count and with one thread. On this 2-core machine
shared with other jobs, OpenMP fan-out of spconv's many small torch ops (27 ``mm`` per conv, copies) waits
for a descheduled worker thread and costs far more than it saves. Times are the best of a few runs after one
warm-up call (medians mostly measure the other jobs); the load average is printed in the case.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench._timing import timings
from ops.sparse_conv import SubMConv3d, sparse_tensor
from ops.voxelize import dynamic_voxelize

SHARED_DATA = Path(os.environ.get("GEO3D_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared/data"))
KITTI_SCAN = SHARED_DATA / "kitti" / "training" / "velodyne" / "000001.bin"
SECOND_VOXEL = [0.05, 0.05, 0.1]
SECOND_RANGE = [0.0, -40.0, -3.0, 70.4, 40.0, 1.0]
KITTI_SHAPE = [41, 1600, 1408]  # SECOND's sparse input shape: z grid (40) + 1


def _random_sites(n: int, shape: list[int], seed: int = 0) -> torch.Tensor:
    """(n, 4) int32 unique [batch=0, z, y, x] sites drawn uniformly from ``shape``."""
    g = torch.Generator().manual_seed(seed)
    total = int(np.prod(shape))
    flat = torch.unique(torch.randint(0, total, (int(n * 1.05),), generator=g))[:n]
    flat = flat[torch.randperm(flat.numel(), generator=g)]
    zyx = torch.stack(torch.unravel_index(flat, shape), 1)
    return torch.cat([torch.zeros_like(zyx[:, :1]), zyx], 1).int()


def _kitti_sites() -> tuple[torch.Tensor, str]:
    if KITTI_SCAN.exists():
        points = torch.from_numpy(np.fromfile(KITTI_SCAN, np.float32).reshape(-1, 4))
        _, coords, _ = dynamic_voxelize(points, None, SECOND_VOXEL, SECOND_RANGE)
        return coords, "real scan 000001"
    return _random_sites(40_000, KITTI_SHAPE), "random sites (scan absent)"


def _conv_rows(coords: torch.Tensor, shape: list[int], device: str, repeats: int) -> tuple[float, float]:
    """(forward seconds, forward + backward seconds) of SubMConv3d 16 -> 16 on these sites."""
    torch.manual_seed(0)
    conv = SubMConv3d(16, 16, 3, bias=True).to(device)
    features = torch.randn(coords.shape[0], 16, device=device)
    coords = coords.to(device)

    def forward():
        with torch.no_grad():
            conv(sparse_tensor(features, coords, shape, 1))

    leaf = features.clone().requires_grad_(True)

    def forward_backward():
        conv(sparse_tensor(leaf, coords, shape, 1)).features.sum().backward()

    return min(timings(forward, device, repeats)), min(timings(forward_backward, device, repeats))


@contextlib.contextmanager
def _threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (None: leave the default)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rows(device: str, threads: int | None) -> list[dict]:
    setting = f"{threads or torch.get_num_threads()} thread(s), load avg {os.getloadavg()[0]:.1f}"
    coords, source = _kitti_sites()
    fwd, fwd_bwd = _conv_rows(coords, KITTI_SHAPE, device, repeats=5)
    case = f"KITTI grid 41x1600x1408, {coords.shape[0]:,} voxels ({source}), {setting}"
    out = [
        dict(op="SubMConv3d 16->16 k3", case=f"{case}, forward", ours_s=fwd, ref_s=None, ref="-",
             target="report", ok=None),
        dict(op="SubMConv3d 16->16 k3", case=f"{case}, forward+backward", ours_s=fwd_bwd, ref_s=None, ref="-",
             target="report", ok=None),
    ]

    shape = [128, 128, 128]
    coords = _random_sites(int(0.01 * 128**3), shape)
    fwd, _ = _conv_rows(coords, shape, device, repeats=5)
    weight = torch.randn(16, 16, 3, 3, 3, device=device)
    dense = torch.zeros(1, 16, *shape, device=device)
    dense[0, :, coords[:, 1].long(), coords[:, 2].long(), coords[:, 3].long()] = 1.0

    def dense_forward():
        with torch.no_grad():
            F.conv3d(dense, weight, padding=1)

    ref = min(timings(dense_forward, device, repeats=3))
    case = f"1% of 128^3 ({coords.shape[0]:,} voxels), batch 1, forward, {setting}"
    out.append(dict(op="SubMConv3d 16->16 k3", case=case, ours_s=fwd, ref_s=ref,
                    ref="dense torch conv3d, same grid",
                    target=">= 10x faster than dense", ok=ref / fwd >= 10))
    return out


def rows(device: str) -> list[dict]:
    out = []
    for threads in (None, 1) if device == "cpu" else (None,):
        with _threads(threads):
            out.extend(_rows(device, threads))
    return out
