"""Shared fixtures of the simulation tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from pipelines.simulation.features import HISTORY


def _random_history(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """A random walk of ``n`` particles in the unit box: (HISTORY, n, dim) float64 positions."""
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(n, dim, generator=g, dtype=torch.float64)
    steps = torch.randn(HISTORY - 1, n, dim, generator=g, dtype=torch.float64) * 0.01
    return torch.cat([start[None], start + torch.cumsum(steps, 0)])


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run each test with one torch thread (restored after). The models here are tiny, so a second intra-op thread
    only adds synchronisation; on a 2-core machine shared with other jobs it stalls (150 training steps of the
    short-training tests took 3 s with one thread and 100 s with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def random_history() -> Callable[..., torch.Tensor]:
    """``random_history(n, dim, seed=0)``: (HISTORY, n, dim) float64 random-walk positions in the unit box."""
    return _random_history
