"""Plain-Python reference voxelizer (dict of lists), used only by tests.

One point at a time, batch item by batch item: the binning rule of ``ops/voxelize.py`` (keep a point iff
``lo <= p < hi`` and ``floor((p - lo) / size)`` in float32 lies in ``[0, grid)``), voxels opened in point
order, at most ``max_points_per_voxel`` points stored per voxel and ``max_voxels`` voxels per batch item.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Voxel = tuple[int, int, int, int]  # (batch, z, y, x)


def voxelize_reference(points: np.ndarray, batch: np.ndarray | None, voxel_size: Sequence[float],
                       pc_range: Sequence[float], max_points_per_voxel: int | None = None,
                       max_voxels: int | None = None) -> dict[Voxel, list[int]]:
    """Group point rows into voxels.

    Args:
        points: (N, C) float32 [x, y, z, ...] metres.
        batch: (N,) int batch item of each point, or None.
        voxel_size: (3,) metres.
        pc_range: (6,) [xmin, ymin, zmin, xmax, ymax, zmax] metres.
        max_points_per_voxel: rows stored per voxel (None: all).
        max_voxels: voxels per batch item (None: all).

    Returns:
        {(batch, z, y, x): [row indices of the stored points]}, in the order voxels were opened
        (batch items in increasing order, then point order).
    """
    lo = [np.float32(v) for v in pc_range[:3]]
    hi = [np.float32(v) for v in pc_range[3:]]
    size = [np.float32(v) for v in voxel_size]
    grid = [int(round((hi[a] - lo[a]) / size[a])) for a in range(3)]
    items = np.zeros(len(points), dtype=np.int64) if batch is None else np.asarray(batch)
    voxels: dict[Voxel, list[int]] = {}
    for item in sorted(set(items.tolist())):
        opened = 0
        for row in np.flatnonzero(items == item).tolist():
            cell = []
            for a in range(3):
                p = np.float32(points[row, a])
                c = math.floor((p - lo[a]) / size[a])
                if not (lo[a] <= p < hi[a] and 0 <= c < grid[a]):
                    break
                cell.append(c)
            else:
                key = (item, cell[2], cell[1], cell[0])
                if key not in voxels:
                    if max_voxels is not None and opened == max_voxels:
                        continue
                    voxels[key] = []
                    opened += 1
                if max_points_per_voxel is None or len(voxels[key]) < max_points_per_voxel:
                    voxels[key].append(row)
    return voxels
