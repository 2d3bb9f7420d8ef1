"""Sparse 3D backbone (output stride 8, z reduction) and the BEV backbone/neck: shapes and gradients."""

from __future__ import annotations

import pytest
import torch

from pipelines.detection.backbone3d import SparseBackbone3D
from pipelines.detection.bev import BEVBackbone, height_compression


def _coords(batch_size: int, shape: tuple[int, int, int], n: int, seed: int = 0) -> torch.Tensor:
    """Unique random (n * batch_size, 4) int32 [batch, z, y, x] coordinates."""
    g = torch.Generator().manual_seed(seed)
    d, h, w = shape
    rows = []
    for b in range(batch_size):
        flat = torch.randperm(d * h * w, generator=g)[:n]
        rows.append(torch.stack([torch.full_like(flat, b), flat // (h * w), flat // w % h, flat % w], 1))
    return torch.cat(rows).int()


@pytest.mark.parametrize("nz, paddings, depth", [(40, [1, 1, 0], 2), (20, [1, 1, 1], 1)])
def test_sparse_backbone_shapes(nz, paddings, depth):
    net = SparseBackbone3D(4, (64, 48, nz), [8, 8, 16, 16, 16], paddings)
    assert net.out_depth == depth and net.bev_channels == 16 * depth
    coords = _coords(2, (nz, 48, 64), 300)
    features = torch.randn(len(coords), 4, requires_grad=True)
    out = net(features, coords, batch_size=2)
    dense = out.dense()
    assert dense.shape == (2, 16, depth, 6, 8)
    bev = height_compression(out)
    assert bev.shape == (2, 16 * depth, 6, 8)
    bev.sum().backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()


def test_sparse_backbone_rejects_bad_grids():
    with pytest.raises(ValueError, match="multiples of 8"):
        SparseBackbone3D(4, (60, 48, 40), [8, 8, 16, 16, 16])
    with pytest.raises(ValueError, match="z cells"):
        SparseBackbone3D(4, (64, 48, 20), [8, 8, 16, 16, 16], [1, 1, 0])


@pytest.mark.parametrize("up, stride", [([1, 2], 1.0), ([2, 4], 0.5)])
def test_bev_backbone_shapes(up, stride):
    net = BEVBackbone(16, [1, 1], [1, 2], [8, 16], up, [8, 8])
    assert net.stride == stride and net.out_channels == 16
    out = net(torch.randn(2, 16, 8, 12))
    assert out.shape == (2, 16, int(8 / stride), int(12 / stride))


def test_bev_backbone_rejects_inconsistent_strides():
    with pytest.raises(ValueError, match="different strides"):
        BEVBackbone(16, [1, 1], [1, 2], [8, 16], [1, 1], [8, 8])
