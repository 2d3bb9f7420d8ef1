"""A tiny synthetic NeRF-synthetic folder shared by the splatting tests (generated once per session)."""

from __future__ import annotations

import pytest

from geo3d.synth.nerf import generate_nerf


@pytest.fixture(scope="session")
def tiny_nerf(tmp_path_factory):
    """``geo3d synth nerf`` toy object: 32 x 32, 12 training-pool views, 4 test views."""
    out = tmp_path_factory.mktemp("nerf_toy")
    return generate_nerf(out, object="toy", res=32, views=12, test_views=4, seed=0, progress=False)
