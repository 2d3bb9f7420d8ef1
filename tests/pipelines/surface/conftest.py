"""Fixtures for the surface pipeline's tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: the sparse U-Net's CPU path is thousands of small matrix products, which a thread pool
    makes slower, and on the busy 2-core machine many times slower (a training step: about 0.1 s on one thread,
    1.5 to 3 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
