"""Voxel feature encoders: masking of padded slots, means, permutation invariance."""

from __future__ import annotations

import pytest
import torch

from pipelines.detection.vfe import MeanVFE, StackedVFE, build_vfe

VOXEL = [0.2, 0.2, 0.4]
RANGE = [0.0, -4.0, -2.0, 8.0, 4.0, 2.0]


def _voxels():
    g = torch.Generator().manual_seed(0)
    voxels = torch.rand(6, 5, 4, generator=g) + 1.0
    num = torch.tensor([1, 2, 5, 3, 4, 1], dtype=torch.int32)
    coords = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0], [1, 4, 5, 6], [1, 2, 2, 2], [0, 3, 1, 1], [1, 0, 9, 9]],
                          dtype=torch.int32)
    return voxels, num, coords


def test_mean_vfe_ignores_padding():
    voxels, num, coords = _voxels()
    out = MeanVFE(4)(voxels, num, coords)
    expected = torch.stack([voxels[i, : int(n)].mean(0) for i, n in enumerate(num)])
    torch.testing.assert_close(out, expected)


def test_stacked_vfe_shape_padding_and_order():
    voxels, num, coords = _voxels()
    vfe = StackedVFE(4, [16, 32], VOXEL, RANGE).eval()
    out = vfe(voxels, num, coords)
    assert out.shape == (6, 32)
    garbage = voxels.clone()
    for i, n in enumerate(num):
        garbage[i, int(n):] = 1e3  # padded slots must not matter
    torch.testing.assert_close(vfe(garbage, num, coords), out)
    perm = voxels.clone()
    perm[2] = voxels[2, torch.tensor([4, 2, 0, 3, 1])]  # point order inside a voxel must not matter
    torch.testing.assert_close(vfe(perm, num, coords), out)


def test_stacked_vfe_backward():
    voxels, num, coords = _voxels()
    vfe = StackedVFE(4, [16, 32], VOXEL, RANGE).train()
    vfe(voxels, num, coords).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in vfe.parameters())


def test_build_vfe_rejects_unknown():
    with pytest.raises(ValueError, match="vfe"):
        build_vfe("pillar", 4, [32], VOXEL, RANGE)
    with pytest.raises(ValueError, match="vfe_filters"):
        build_vfe("stacked", 4, [31, 64], VOXEL, RANGE)
