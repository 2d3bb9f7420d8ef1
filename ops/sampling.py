"""Farthest-point sampling: exact greedy FPS of a point cloud, the backend chosen from the input's device.

Greedy FPS starts from one point and repeatedly adds the not yet chosen point whose squared distance to the
nearest chosen point is largest; ties go to the lowest index, and a point is never picked twice (duplicates of
a chosen point, at distance 0, come last, lowest index first). Each pick updates an (N,) array of those
nearest distances against the newest point, so ``count`` picks cost O(count * N) time and O(N) memory.

Two backends, chosen from the input's device:

* CPU tensors: NumPy in float64, one contiguous 1-D pass per axis (NumPy's single-threaded loops do not
  stall on a busy machine as torch's thread pool does; a pick of 100k points is a few of those passes).
* Other devices (CUDA): the same loop in torch on the device, without a host synchronisation per pick
  (the picked index stays a device tensor).

Both compute every squared distance in float64 in the same order, ``((0 + dx^2) + dy^2) + dz^2``, and
take the first maximum, so they pick the same indices, ties and duplicate points included. The textbook
loop they are tested against is :func:`ops.reference.sampling.farthest_point_sampling_reference`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from geo3d.errors import InputError


def farthest_point_sampling(points: torch.Tensor, count: int, start: int = 0) -> torch.Tensor:
    """Exact greedy farthest-point sampling.

    Starting from ``start``, repeatedly add the not yet chosen point whose distance to the chosen ones is
    largest (ties: the lowest index). Distances are computed in float64. A duplicate of a chosen point is at
    distance 0: it is picked only after every point at a positive distance, and no index is picked twice.

    Args:
        points: (N, D) float tensor, metres (any device; float32 or float64).
        count: points to pick, 0 <= count <= N.
        start: index of the first point, 0 <= start < N (ignored when ``count`` is 0).

    Returns:
        (count,) int64 distinct indices into ``points`` in the order picked, on ``points``' device.

    Raises:
        InputError: (a ValueError) ``points`` is not an (N, D) floating-point tensor, or ``count`` or
            ``start`` is out of range.

    Example:
        >>> points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.1, 0.0], [0.0, 2.0]])
        >>> farthest_point_sampling(points, 3)
        tensor([0, 3, 1])
    """
    if not isinstance(points, torch.Tensor) or points.dim() != 2 or not points.is_floating_point():
        what = f"shape {tuple(points.shape)}, {points.dtype}" if isinstance(points, torch.Tensor) else type(points)
        raise InputError(None, f"farthest_point_sampling: points: expected an (N, D) float tensor, got {what}")
    n = points.shape[0]
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= n:
        raise InputError(None, f"farthest_point_sampling: count must lie in [0, {n}], got {count!r}")
    if count and (isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < n):
        raise InputError(None, f"farthest_point_sampling: start must lie in [0, {n}), got {start!r}")
    if points.device.type == "cpu":
        return _fps_numpy(points, count, start)
    return _fps_torch(points, count, start)


def _fps_numpy(points: torch.Tensor, count: int, start: int) -> torch.Tensor:
    """CPU path: (N, D) CPU tensor -> (count,) int64 CPU indices (float64 NumPy)."""
    n = points.shape[0]
    axes = np.ascontiguousarray(points.detach().double().numpy().T)  # (D, N): contiguous 1-D passes
    out = np.empty(count, dtype=np.int64)
    nearest = np.full(n, np.inf)
    d2, diff = np.empty(n), np.empty(n)
    last = start
    for i in range(count):
        out[i] = last
        d2.fill(0.0)
        for axis in axes:  # ((0 + dx^2) + dy^2) + dz^2
            np.subtract(axis, axis[last], out=diff)
            np.multiply(diff, diff, out=diff)
            np.add(d2, diff, out=d2)
        np.minimum(nearest, d2, out=nearest)
        nearest[last] = -1.0  # chosen: below every distance, never picked again
        last = int(nearest.argmax())
    return torch.from_numpy(out)


def _fps_torch(points: torch.Tensor, count: int, start: int) -> torch.Tensor:
    """Device path (any device; the tests run it on the CPU): (N, D) -> (count,) int64 on ``points``' device."""
    n, device = points.shape[0], points.device
    axes = points.detach().double().T.contiguous()  # (D, N)
    out = torch.empty(count, dtype=torch.int64, device=device)
    nearest = torch.full((n,), math.inf, dtype=torch.float64, device=device)
    last = torch.tensor(start, device=device)
    for i in range(count):
        out[i] = last
        d2 = torch.zeros(n, dtype=torch.float64, device=device)
        for axis in axes:  # ((0 + dx^2) + dy^2) + dz^2, as the CPU path
            diff = axis - axis[last]
            d2 = d2 + diff * diff
        nearest = torch.minimum(nearest, d2).index_fill_(0, last.view(1), -1.0)  # chosen: never picked again
        last = torch.argmax(nearest)  # the first maximum
    return out
