"""Benchmark rows for ``ops.sampling``: farthest-point sampling.

Points uniform in the unit cube (seed 0). The first row compares the op with the textbook loop of
``ops/reference/sampling.py`` (plain Python, O(N * M)) on a cloud small enough for it: 2,000 points, 200 picks.
The second row is the size the GIOROM benchmark (``scripts/bench_simulation.py``) would need without its random
candidate subset: 1,000 picks from 100,000 points. Times are medians of 3 runs after a warm-up.
"""

from __future__ import annotations

import statistics

import torch

from bench._timing import seconds, timings
from ops.reference.sampling import farthest_point_sampling_reference
from ops.sampling import farthest_point_sampling


def rows(device: str) -> list[dict]:
    """Benchmark rows (see scripts/bench_ops.py) on ``device``: "cpu" or "cuda"."""
    points = torch.rand(100_000, 3, generator=torch.Generator().manual_seed(0))
    small, large = points[:2000].to(device), points.to(device)
    ours = statistics.median(timings(lambda: farthest_point_sampling(small, 200), device, repeats=3))
    as_lists = points[:2000].tolist()
    ref = seconds(lambda: farthest_point_sampling_reference(as_lists, 200), "cpu")
    big = statistics.median(timings(lambda: farthest_point_sampling(large, 1000), device, repeats=3))
    return [
        {"op": "farthest_point_sampling", "case": "2k pts, 200 picks", "ours_s": ours, "ref_s": ref,
         "ref": "textbook loop (plain Python)", "target": ">= 20x ref", "ok": ref >= 20 * ours},
        {"op": "farthest_point_sampling", "case": "100k pts, 1000 picks", "ours_s": big, "ref_s": None,
         "ref": "-", "target": "report", "ok": None},
    ]


if __name__ == "__main__":
    for row in rows("cuda" if torch.cuda.is_available() else "cpu"):
        print(row)
