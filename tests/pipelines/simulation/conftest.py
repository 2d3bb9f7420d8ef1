"""Shared fixtures of the simulation tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from pipelines.simulation.features import HISTORY


def _random_history(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """A random walk of ``n`` particles in the unit box: (HISTORY, n, dim) float64 positions."""
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(n, dim, generator=g, dtype=torch.float64)
    steps = torch.randn(HISTORY - 1, n, dim, generator=g, dtype=torch.float64) * 0.01
    return torch.cat([start[None], start + torch.cumsum(steps, 0)])


@pytest.fixture
def random_history() -> Callable[..., torch.Tensor]:
    """``random_history(n, dim, seed=0)``: (HISTORY, n, dim) float64 random-walk positions in the unit box."""
    return _random_history
