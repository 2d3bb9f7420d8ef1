"""Floater elimination: k-NN mean distances against brute force, the mean + lam * std rule, annealing."""

from __future__ import annotations

import pytest
import torch

from geo3d.errors import InputError
from pipelines.splatting.floaters import annealed_lambda, floater_mask, knn_mean_distance


def brute_force_mean_distance(points: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) float64 mean distance to the k nearest other points, from the full distance matrix."""
    d = torch.cdist(points.double(), points.double())
    d.fill_diagonal_(float("inf"))
    return d.topk(k, dim=1, largest=False).values.mean(1)


@pytest.mark.parametrize("k", [1, 4, 16])
def test_knn_mean_distance_matches_brute_force(k):
    points = torch.randn(500, 3, generator=torch.Generator().manual_seed(k)) * torch.tensor([1.0, 0.2, 3.0])
    got = knn_mean_distance(points, k)
    assert got.shape == (500,)
    assert torch.allclose(got.double(), brute_force_mean_distance(points, k), rtol=1e-5, atol=1e-7)


def test_knn_mean_distance_excludes_only_the_point_itself():
    # Two copies of each point: the nearest other point is the copy, at distance 0.
    points = torch.rand(50, 3, generator=torch.Generator().manual_seed(0))
    doubled = torch.cat([points, points])
    assert torch.equal(knn_mean_distance(doubled, 1), torch.zeros(100))
    assert torch.allclose(knn_mean_distance(doubled, 3).double(), brute_force_mean_distance(doubled, 3), atol=1e-6)
    # Unit spacing on a line: the two nearest others of an inner point are both at distance 1.
    line = torch.stack([torch.arange(10.0), torch.zeros(10), torch.zeros(10)], 1)
    assert torch.allclose(knn_mean_distance(line, 2)[1:-1], torch.ones(8))
    assert torch.allclose(knn_mean_distance(line, 2)[[0, -1]], torch.full((2,), 1.5))


def test_floater_mask_flags_exactly_the_far_points():
    gen = torch.Generator().manual_seed(0)
    cluster = torch.randn(400, 3, generator=gen) * 0.1
    far = torch.tensor([[5.0, 0.0, 0.0], [0.0, -6.0, 1.0], [3.0, 4.0, -5.0]])
    points = torch.cat([cluster[:150], far[:1], cluster[150:300], far[1:], cluster[300:]])
    expected = torch.zeros(len(points), dtype=torch.bool)
    expected[[150, 301, 302]] = True
    for k in (4, 16):
        assert torch.equal(floater_mask(points, k=k, lam=1.0), expected)
    assert floater_mask(cluster, k=8, lam=3.0).float().mean() < 0.03  # a plain cluster: only its sparse tail


def test_floater_mask_threshold_is_mean_plus_lam_std():
    points = torch.rand(300, 3, generator=torch.Generator().manual_seed(1)) ** 3  # uneven density
    reference = brute_force_mean_distance(points, 8)
    for lam in (-0.5, 0.0, 0.5, 1.0, 2.0):
        expected = reference > reference.mean() + lam * reference.std(correction=0)
        got = floater_mask(points, k=8, lam=lam)
        assert got.dtype == torch.bool and got.shape == (300,)
        # Identical except possibly for points within rounding of the threshold.
        threshold = reference.mean() + lam * reference.std(correction=0)
        differ = got != expected
        assert ((reference[differ] - threshold).abs() < 1e-5).all()
        assert expected.sum() > 0
    # Larger lam flags fewer (a subset).
    strict, lenient = floater_mask(points, 8, 0.5), floater_mask(points, 8, 2.0)
    assert lenient.sum() < strict.sum() and not (lenient & ~strict).any()


def test_floater_mask_analytic_line():
    # x = 0, 1, 3, 7 with k = 1: nearest distances 1, 1, 2, 4; mean 2, population std sqrt(1.5) = 1.2247.
    points = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0], [7.0, 0, 0]])
    assert torch.equal(knn_mean_distance(points, 1), torch.tensor([1.0, 1.0, 2.0, 4.0]))
    assert floater_mask(points, k=1, lam=1.6).tolist() == [False, False, False, True]  # 4 > 3.96
    assert floater_mask(points, k=1, lam=1.7).tolist() == [False, False, False, False]  # 4 < 4.08
    assert floater_mask(points, k=1, lam=-0.5).tolist() == [False, False, True, True]  # > 1.39


@pytest.mark.parametrize("n", [0, 1, 5, 8])
def test_floater_mask_with_too_few_points_flags_nothing(n):
    points = torch.rand(n, 3) * 100
    assert torch.equal(floater_mask(points, k=8), torch.zeros(n, dtype=torch.bool))


def test_knn_mean_distance_rejects_bad_input():
    with pytest.raises(InputError, match="more than k"):
        knn_mean_distance(torch.rand(4, 3), 4)
    with pytest.raises(InputError, match="k"):
        knn_mean_distance(torch.rand(10, 3), 0)
    with pytest.raises(InputError, match="means"):
        floater_mask(torch.rand(10, 2))


def test_annealed_lambda_is_linear_between_the_steps():
    assert annealed_lambda(0, 100, 300, 3.0, 1.0) == 3.0
    assert annealed_lambda(100, 100, 300, 3.0, 1.0) == 3.0
    assert annealed_lambda(150, 100, 300, 3.0, 1.0) == pytest.approx(2.5)
    assert annealed_lambda(200, 100, 300, 3.0, 1.0) == pytest.approx(2.0)
    assert annealed_lambda(300, 100, 300, 3.0, 1.0) == 1.0
    assert annealed_lambda(10_000, 100, 300, 3.0, 1.0) == 1.0
    # Degenerate schedule: a switch at start_step.
    assert annealed_lambda(99, 100, 100, 3.0, 1.0) == 3.0
    assert annealed_lambda(100, 100, 100, 3.0, 1.0) == 1.0
