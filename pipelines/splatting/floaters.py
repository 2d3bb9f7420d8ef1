"""Floater elimination (GaussianObject): flag Gaussians far from their k nearest neighbours.

A Gaussian whose mean distance to its k nearest neighbours (itself excluded) exceeds ``mean + lam * std`` of
that distance over all Gaussians is a floater. ``lam`` is annealed during training from a lenient (large) to a
strict (small) value with :func:`annealed_lambda`, so that early, still-moving Gaussians are spared.
"""

from __future__ import annotations

import torch

from geo3d.errors import require
from ops import knn


def knn_mean_distance(means: torch.Tensor, k: int) -> torch.Tensor:
    """Mean Euclidean distance of each point to its ``k`` nearest other points.

    Args:
        means: (N, 3) float Gaussian centres, metres, N > k.
        k: number of neighbours, >= 1 (the point itself is not counted; a duplicate of it is, at distance 0).

    Returns:
        (N,) float32 mean distances, metres, on the device of ``means``.

    Raises:
        InputError: (a ValueError) on a bad shape, ``k < 1`` or ``N <= k``.
    """
    require(isinstance(means, torch.Tensor) and means.dim() == 2 and means.shape[1] == 3, None,
            f"knn_mean_distance: means: expected an (N, 3) tensor, got {getattr(means, 'shape', type(means))}")
    require(isinstance(k, int) and not isinstance(k, bool) and k >= 1, None,
            f"knn_mean_distance: k: expected an integer >= 1, got {k!r}")
    require(means.shape[0] > k, None,
            f"knn_mean_distance: need more than k={k} points to have k neighbours each, got {means.shape[0]}")
    points = means.detach()
    # k + 1 neighbours, nearest first: the first is the point itself (or a duplicate, also at distance 0).
    _, dist = knn(points, points, k + 1)
    return dist[:, 1:].mean(1)


def floater_mask(means: torch.Tensor, k: int = 16, lam: float = 1.0) -> torch.Tensor:
    """Flag floaters: Gaussians whose k-NN mean distance exceeds ``mean + lam * std`` over all Gaussians.

    The mean and standard deviation (population, ``correction=0``) are taken over the N k-NN mean distances
    of :func:`knn_mean_distance`; a larger ``lam`` flags fewer Gaussians.

    Args:
        means: (N, 3) float Gaussian centres, metres.
        k: neighbours per Gaussian, >= 1.
        lam: threshold in standard deviations above the mean (may be negative).

    Returns:
        (N,) bool, True for floaters (to prune); all False when N <= k (too few Gaussians to judge).
    """
    require(isinstance(means, torch.Tensor) and means.dim() == 2 and means.shape[1] == 3, None,
            f"floater_mask: means: expected an (N, 3) tensor, got {getattr(means, 'shape', type(means))}")
    require(isinstance(k, int) and not isinstance(k, bool) and k >= 1, None,
            f"floater_mask: k: expected an integer >= 1, got {k!r}")
    if means.shape[0] <= k:
        return torch.zeros(means.shape[0], dtype=torch.bool, device=means.device)
    distance = knn_mean_distance(means, k).double()
    threshold = distance.mean() + lam * distance.std(correction=0)
    return distance > threshold


def annealed_lambda(step: int, start_step: int, end_step: int, lam_start: float, lam_end: float) -> float:
    """The floater threshold ``lam`` at ``step``, moving linearly from ``lam_start`` to ``lam_end``.

    ``lam_start`` (lenient, large) up to ``start_step``, ``lam_end`` (strict, small) from ``end_step`` on, and
    linear in between: ``lam_start + (lam_end - lam_start) * (step - start_step) / (end_step - start_step)``.
    With ``end_step <= start_step`` it switches from ``lam_start`` to ``lam_end`` at ``start_step``.

    Args:
        step: current training step.
        start_step: step where annealing starts.
        end_step: step where it ends.
        lam_start: value before ``start_step``.
        lam_end: value from ``end_step`` on.

    Returns:
        float ``lam`` for :func:`floater_mask`.
    """
    if step < start_step:
        return float(lam_start)
    if step >= end_step:
        return float(lam_end)
    t = (step - start_step) / (end_step - start_step)
    return float(lam_start + (lam_end - lam_start) * t)
