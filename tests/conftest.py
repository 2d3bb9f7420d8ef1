"""Shared fixtures: the real-data folder (skip when absent) and the ``cuda`` marker; one thread per parallel worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# `make test` runs the suite in parallel workers (pytest-xdist, one per core). Each worker, and every process a test
# starts, then gets one thread, so that two workers' thread pools do not share the cores (a second thread made the
# small workloads here many times slower on the busy 2-core machine: tests/pipelines/*/conftest.py). Set before torch
# (its OpenMP pool), numba and Open3D are first imported; a value set by the user is kept.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GEO3D_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real samples folder ``../shared/data`` (or $GEO3D_SHARED_DATA); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data samples not found at {SHARED_DATA} (set GEO3D_SHARED_DATA)")
    return SHARED_DATA
