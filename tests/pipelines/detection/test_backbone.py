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


def test_bev_backbone_channels_last_is_the_same_function():
    """The channels-last layout (the default) against the plain NCHW network with the same weights, float64:
    outputs and the input's gradient."""
    torch.manual_seed(0)
    plain = BEVBackbone(16, [1, 1], [1, 2], [8, 16], [2, 4], [8, 8], channels_last=False).double()
    fast = BEVBackbone(16, [1, 1], [1, 2], [8, 16], [2, 4], [8, 8]).double()
    fast.load_state_dict(plain.state_dict())
    assert fast.blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 16, 8, 12, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a, b = plain(xa), fast(xb)
    assert b.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    weights = torch.randn(a.shape, dtype=torch.float64)
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels_last", [False, True])
def test_anchor_head_equals_its_three_1x1_convolutions(channels_last):
    """The head's single matrix product against its own three ``nn.Conv2d`` run as convolutions, flattened in the
    anchors' (H, W, A) order, float64."""
    from pipelines.detection.head import AnchorHead

    torch.manual_seed(0)
    head = AnchorHead(12, 2, 3, 7, num_dir_bins=2).double()
    x = torch.randn(2, 12, 5, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = head(x)
    for name, conv, size in (("cls", head.conv_cls, 3), ("box", head.conv_box, 7), ("dir", head.conv_dir, 2)):
        expected = conv(x).permute(0, 2, 3, 1).reshape(2, -1, size)
        assert out[name].shape == (2, 5 * 6 * 2, size)
        torch.testing.assert_close(out[name], expected, rtol=1e-12, atol=1e-12)
    assert "dir" not in AnchorHead(12, 2, 3, 7, num_dir_bins=0).double()(x)
