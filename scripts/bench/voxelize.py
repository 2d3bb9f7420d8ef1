"""Benchmark rows for ``ops.voxelize`` on a real KITTI scan with SECOND's settings.

Scan: ``../shared/data/kitti/training/velodyne/000001.bin`` (or ``$GEO3D_SHARED_DATA``), ~120k points,
float32 N x 4. Settings: voxel [0.05, 0.05, 0.1] m, range [0, -40, -3, 70.4, 40, 1] m, 5 points per voxel,
16,000 voxels.

Times are the best of 30 (10 for dynamic) runs: this 2-core machine is shared with other jobs, whose load
(printed in the case) a median mostly measures.

- ``hard_voxelize``: per-frame time once the spconv generator is built; target < 20 ms. Reference:
  spconv's ``PointToVoxel`` called directly, as is (torch's default thread count): the gap is the
  OpenMP wake-up cost its output copies pay on a busy machine (see ``ops/voxelize.py``).
- first call: building the generator (dense 360 MB hash over the grid), paid once per setting.
- ``dynamic_voxelize``: per-frame time, no target.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from spconv.pytorch.utils import PointToVoxel

from bench._timing import timings
from ops import voxelize

SHARED_DATA = Path(os.environ.get("GEO3D_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared/data"))
KITTI_SCAN = SHARED_DATA / "kitti" / "training" / "velodyne" / "000001.bin"
VOXEL = [0.05, 0.05, 0.1]
RANGE = [0.0, -40.0, -3.0, 70.4, 40.0, 1.0]
MAX_POINTS, MAX_VOXELS = 5, 16_000


def _times(fn, device: str, repeats: int) -> tuple[float, float]:
    """(best, median) seconds of ``fn()`` over ``repeats`` runs (call it once before to exclude warm-up)."""
    times = timings(fn, device, repeats, warmup=False)
    return min(times), statistics.median(times)


def rows(device: str) -> list[dict]:
    if not KITTI_SCAN.exists():
        return [dict(op="hard_voxelize", case=f"skipped: {KITTI_SCAN} not found", ours_s=None, ref_s=None,
                     ref="-", target="< 20 ms per frame", ok=None)]
    points = torch.from_numpy(np.fromfile(KITTI_SCAN, np.float32).reshape(-1, 4)).to(device)
    case = f"KITTI 000001 ({points.shape[0]:,} points), SECOND settings"
    load = f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores" if device == "cpu" else device

    def hard():
        return voxelize.hard_voxelize(points, None, VOXEL, RANGE, MAX_POINTS, MAX_VOXELS)

    voxelize._point_to_voxel.cache_clear()
    t0 = time.perf_counter()
    hard()
    first = time.perf_counter() - t0
    ours, ours_median = _times(hard, device, repeats=30)

    generator = PointToVoxel(VOXEL, RANGE, 4, MAX_VOXELS, MAX_POINTS, device=torch.device(device))
    generator(points)
    ref, ref_median = _times(lambda: generator(points), device, repeats=30)

    def dynamic():
        return voxelize.dynamic_voxelize(points, None, VOXEL, RANGE)

    dynamic()
    dyn, dyn_median = _times(dynamic, device, repeats=10)
    return [
        dict(op="hard_voxelize", case=f"{case}, per frame ({load}; medians {ours_median * 1e3:.1f} ms, "
             f"ref {ref_median * 1e3:.1f} ms)", ours_s=ours, ref_s=ref,
             ref="spconv PointToVoxel as is", target="< 20 ms per frame", ok=ours < 0.020),
        dict(op="hard_voxelize", case=f"{case}, first call (builds the generator)", ours_s=first, ref_s=None,
             ref="-", target="report", ok=None),
        dict(op="dynamic_voxelize", case=f"{case}, per frame (median {dyn_median * 1e3:.1f} ms)", ours_s=dyn,
             ref_s=None, ref="-",
             target="report", ok=None),
    ]
