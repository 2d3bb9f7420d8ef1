"""Shared by the splatting tests: a tiny synthetic NeRF-synthetic folder (generated once per session), a small
pinhole camera (``W``, ``H``, ``K``) and OpenCV look-at poses written from the definition (:func:`look_at_rows`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo3d.synth.nerf import generate_nerf

W, H = 64, 48
K = torch.tensor([[50.0, 0.0, W / 2], [0.0, 50.0, H / 2], [0.0, 0.0, 1.0]])


def look_at_rows(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(4, 4) OpenCV world_to_cam written from the definition: rows right, down, forward."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([right, down, forward])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return w2c




@pytest.fixture(scope="session")
def tiny_nerf(tmp_path_factory):
    """``geo3d synth nerf`` toy object: 32 x 32, 12 training-pool views, 4 test views."""
    out = tmp_path_factory.mktemp("nerf_toy")
    return generate_nerf(out, object="toy", res=32, views=12, test_views=4, seed=0, progress=False)
