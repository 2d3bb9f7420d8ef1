"""Textbook farthest-point sampling in plain Python (tests and benchmarks only).

The O(N * M) greedy loop: keep, for every point, its squared distance to the nearest chosen point; after each
pick, update those distances against the newest point and pick the not yet chosen point with the largest one,
scanning the points in index order and replacing the best only on a strictly larger distance (so ties go to the
lowest index, and duplicates of a chosen point, at distance 0, come after every other point). Python floats are
IEEE float64 and each squared distance is summed axis by axis from 0, as in :mod:`ops.sampling`, so the two agree
index for index; the reference shares no code with the op.
"""

from __future__ import annotations

from collections.abc import Sequence


def farthest_point_sampling_reference(points: Sequence[Sequence[float]], count: int, start: int = 0) -> list[int]:
    """Greedy farthest-point sampling, one point and one axis at a time.

    Args:
        points: N points of D coordinates each (metres; a list of lists, an (N, D) array or tensor).
        count: points to pick, 0 <= count <= N.
        start: index of the first point.

    Returns:
        The ``count`` picked indices in the order picked, distinct.
    """
    rows = [[float(x) for x in p] for p in points]
    if count == 0:
        return []
    nearest = [float("inf")] * len(rows)
    chosen = [start]
    taken = {start}
    while len(chosen) < count:
        last = rows[chosen[-1]]
        best, best_d2 = -1, -1.0
        for i, p in enumerate(rows):
            d2 = 0.0
            for x, y in zip(p, last):
                d2 += (x - y) * (x - y)
            nearest[i] = min(nearest[i], d2)
            if i not in taken and nearest[i] > best_d2:
                best, best_d2 = i, nearest[i]
        chosen.append(best)
        taken.add(best)
    return chosen
