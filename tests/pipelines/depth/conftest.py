"""Fixtures shared by the depth-completion tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from geo3d.synth.depth import generate_depth


@pytest.fixture(scope="session")
def frames(tmp_path_factory) -> Path:
    """Six 64 x 192 synthetic frames (train) and two held-out ones (val); the tests only read them."""
    root = tmp_path_factory.mktemp("depth")
    generate_depth(root / "train", frames=6, seed=0, width=192, height=64, progress=False)
    generate_depth(root / "val", frames=2, seed=1000, width=192, height=64, progress=False)
    return root
