"""ops.sampling: farthest-point sampling against the textbook loop (exact indices, ties and duplicates included),
the device path equal to the CPU path, spread, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

import ops.sampling as sampling
from geo3d.errors import InputError
from ops.reference.sampling import farthest_point_sampling_reference
from ops.sampling import farthest_point_sampling


def _clouds() -> dict[str, torch.Tensor]:
    """Random clouds, and clouds with exact distance ties (an integer lattice) and duplicate points (float64)."""
    g = torch.Generator().manual_seed(0)
    lattice = torch.stack(torch.meshgrid(*[torch.arange(5.0, dtype=torch.float64)] * 2, indexing="ij"), -1)
    random3 = torch.rand(120, 3, generator=g, dtype=torch.float64)
    duplicated = torch.cat([random3[:40], random3[:40], random3[10:20]])  # every point at least twice
    return {
        "random 2D": torch.rand(150, 2, generator=g, dtype=torch.float64),
        "random 3D": random3,
        "random 3D float32": torch.rand(100, 3, generator=g),
        "lattice (ties)": lattice.reshape(-1, 2),
        "duplicates": duplicated[torch.randperm(len(duplicated), generator=g)],
        "one point many times": torch.ones(6, 3, dtype=torch.float64),
    }


@pytest.mark.parametrize("name", list(_clouds()))
def test_fps_matches_the_textbook_loop(name):
    points = _clouds()[name]
    n = len(points)
    for count, start in ((n // 4, 0), (n // 2, n - 1), (n, 7 % n)):
        expected = farthest_point_sampling_reference(points.tolist(), count, start)
        picked = farthest_point_sampling(points, count, start)
        assert picked.dtype == torch.int64 and picked.device == points.device
        assert picked.tolist() == expected, (name, count, start)
        assert torch.equal(sampling._fps_torch(points, count, start), picked), (name, count, start)  # device path
        assert len(set(expected)) == count  # never the same index twice, duplicates or not


def test_fps_ties_and_duplicates_break_to_the_lowest_index():
    # from (0, 0): (2, 0) and (0, 2) tie at distance 2, the lower index wins; then the two duplicates of the start
    # (distance 0) come last, lowest first
    points = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    assert farthest_point_sampling(points, 6).tolist() == [0, 2, 3, 5, 1, 4]
    assert farthest_point_sampling_reference(points, 6) == [0, 2, 3, 5, 1, 4]


def test_fps_spreads_the_points():
    g = torch.Generator().manual_seed(1)
    points = torch.rand(400, 2, generator=g, dtype=torch.float64)

    def min_pairwise(x: torch.Tensor) -> float:
        d = torch.cdist(x, x)
        return float(d.fill_diagonal_(math.inf).min())

    picked = farthest_point_sampling(points, 40, start=3)
    random = torch.randperm(400, generator=g)[:40]
    # greedy FPS is a 2-approximation of the best spread: its min spacing is far above a random subset's
    assert min_pairwise(points[picked]) > 2 * min_pairwise(points[random])
    assert farthest_point_sampling(points, 0).shape == (0,)


def test_fps_bad_input_raises():
    points = torch.rand(10, 3)
    with pytest.raises(InputError, match=r"count must lie in \[0, 10\], got 11"):
        farthest_point_sampling(points, 11)
    with pytest.raises(InputError, match=r"start must lie in \[0, 10\), got 10"):
        farthest_point_sampling(points, 2, start=10)
    with pytest.raises(InputError, match="expected an \\(N, D\\) float tensor"):
        farthest_point_sampling(torch.arange(10), 2)


@pytest.mark.cuda
def test_fps_cuda_equals_cpu():
    for name, points in _clouds().items():
        n = len(points)
        cpu = farthest_point_sampling(points, n // 2, 1)
        cuda = farthest_point_sampling(points.cuda(), n // 2, 1)
        assert cuda.device.type == "cuda" and torch.equal(cuda.cpu(), cpu), name
