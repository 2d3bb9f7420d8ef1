"""Benchmark rows for ``ops.neighbors``: radius graph and knn of 100k points.

Points: 100,000 uniform in the unit cube (seed 0); the radius gives 20 neighbours per point in the
interior (about 19 on average with the cube's faces). The radius-graph reference is scipy alone:
``cKDTree(points).query_pairs(r, output_type="ndarray")`` (tree build included; unique pairs, unsorted),
so the ratio is the price of the symmetric, sorted, torch edge list. The knn reference is
``cKDTree(points).query(points, k=16, workers=-1)``. Times are medians of 5 runs after a warm-up, ours
and the reference alternating so that load from other processes hits both alike.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import torch
from scipy.spatial import cKDTree

from bench._timing import seconds
from ops.neighbors import knn, radius_graph

N_POINTS, NEIGHBOURS, K = 100_000, 20, 16
RADIUS = (NEIGHBOURS / (N_POINTS * 4 / 3 * math.pi)) ** (1 / 3)


def _median_pair(ours, ref, device: str, repeats: int = 5) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``ref``, run alternately after one warm-up each."""
    ours(), ref()
    times = [(seconds(ours, device), seconds(ref, "cpu")) for _ in range(repeats)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def rows(device: str) -> list[dict]:
    """Benchmark rows (see scripts/bench_ops.py) on ``device``: "cpu" or "cuda"."""
    points = torch.rand(N_POINTS, 3, generator=torch.Generator().manual_seed(0))
    x = points.double().numpy()
    on_device = points.to(device)
    ours, ref = _median_pair(lambda: radius_graph(on_device, RADIUS),
                             lambda: cKDTree(x).query_pairs(RADIUS, output_type="ndarray"), device)
    edges = radius_graph(on_device, RADIUS).shape[1]
    out = [{
        "op": "radius_graph",
        "case": f"100k pts, r={RADIUS:.4f} ({edges / N_POINTS:.1f} nbrs/pt)",
        "ours_s": ours,
        "ref_s": ref,
        "ref": "scipy cKDTree build + query_pairs",
        "target": "<= 1.5x ref",
        "ok": ours <= 1.5 * ref,
    }]
    ours, ref = _median_pair(lambda: knn(on_device, on_device, K),
                             lambda: cKDTree(x).query(x, k=K, workers=-1), device)
    out.append({
        "op": "knn",
        "case": "100k pts, k=16, queries = points",
        "ours_s": ours,
        "ref_s": ref,
        "ref": "scipy cKDTree build + query(workers=-1)",
        "target": "report",
        "ok": None,
    })
    return out


if __name__ == "__main__":
    for row in rows("cuda" if torch.cuda.is_available() else "cpu"):
        print(row)
    print("numpy", np.__version__)
