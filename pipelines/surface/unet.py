"""Sparse 3D U-Net that refines a fused TSDF on its active voxels (the learned step of the surface pipeline).

The network sees the voxels a TSDF fusion left active (features: TSDF, observation weight, colour; see
:func:`make_input`) and predicts, at exactly those voxels, a corrected TSDF and a keep/occupancy logit.
It is built on the op layer (``ops.sparse_conv``), so the same module runs on CPU (spconv's Native
algorithm) and CUDA tensors.

Layout for ``levels = L`` (channels ``c_l = base_channels * 2**l``)::

    encoder l = 0..L-1 : 2 x [SubMConv3d(3) + BN + ReLU] (key "subm{l}")  -> skip_l
                         SparseConv3d(k=2, s=2) + BN + ReLU   (key "down{l}")
    bottleneck         : 2 x [SubMConv3d(3) + BN + ReLU] at stride 2**L (key "subm{L}")
    decoder l = L-1..0 : SparseInverseConv3d(k=2, key "down{l}") + BN + ReLU -> back at the sites of skip_l
                         concat [skip_l, up] (2 c_l) -> 2 x [SubMConv3d(3) + BN + ReLU] (key "subm{l}")
    head               : SubMConv3d(1) c_0 -> out_channels (with bias)

so the coarsest grid has stride ``2**L``: the spatial shape must be a multiple of ``2**L`` per axis, and
the network is exactly equivariant to translations of the coordinates by multiples of ``2**L``.
"""

from __future__ import annotations

import torch
from torch import nn

from geo3d.errors import require
from ops.sparse_conv import (
    SparseConv3d,
    SparseConvTensor,
    SparseInverseConv3d,
    SparseSequential,
    SubMConv3d,
    sparse_tensor,
)

__all__ = ["SparseUNet3d", "make_input", "INPUT_CHANNELS"]

#: Feature channels built by :func:`make_input`: ``[tsdf, weight feature, r, g, b]``.
INPUT_CHANNELS = 5

# Input TSDF is clipped to +-(1 - _TSDF_EPS) before atanh, so the identity residual stays finite.
_TSDF_EPS = 1e-2


def _block(cin: int, cout: int, key: str, momentum: float) -> list[nn.Module]:
    """SubMConv3d(3) + BatchNorm1d + ReLU; rulebook cached under ``key``."""
    return [SubMConv3d(cin, cout, 3, indice_key=key, bias=False),
            nn.BatchNorm1d(cout, eps=1e-3, momentum=momentum), nn.ReLU()]


class SparseUNet3d(nn.Module):
    """Sparse 3D U-Net: per-voxel TSDF correction and keep logit at the input voxels.

    Args:
        in_channels: input feature channels C_in (5 from :func:`make_input`); channel 0 must be the input
            TSDF in truncation units, in [-1, 1].
        base_channels: channels at full resolution; level l has ``base_channels * 2**l``.
        levels: number of stride-2 downsamplings L (the coarsest grid has stride ``2**L``).
        out_channels: output channels, at least 1 (2 by default: corrected TSDF, keep logit).
        bn_momentum: BatchNorm momentum.

    Output channels:
        0: corrected TSDF in truncation units, ``tanh(atanh(clip(tsdf_in, -0.99, 0.99)) + delta)``: a residual on
           the input TSDF (channel 0 of the input features) added in atanh space, so it is bounded to (-1, 1)
           and smooth. The head's channel-0 weights start at zero, so an untrained network returns the
           input TSDF (clipped to +-0.99): it starts as the identity, never worse than the fusion.
        1: occupancy / keep logit (``sigmoid > 0.5``: keep the voxel for mesh extraction).
        2..: raw (unbounded) head outputs.

    BatchNorm in training mode pools statistics over all voxels of the batch, so batch items only stay
    independent of each other in eval mode (as with any BatchNorm network).

    Example:
        >>> coords = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [9, 5, 5]])  # (M, 3) int64 voxel indices
        >>> tsdf, weight, color = torch.tensor([0.5, -0.2, 0.1, 1.0]), torch.ones(4), torch.full((4, 3), 0.5)
        >>> net = SparseUNet3d(base_channels=4, levels=2).eval()
        >>> x, origin = make_input(coords, tsdf, weight, color, levels=2)
        >>> out = net(x)  # (M, 2), rows in input order
        >>> out.shape
        torch.Size([4, 2])
        >>> torch.allclose(out[:, 0], tsdf.clamp(-0.99, 0.99))  # untrained: the identity on the TSDF
        True
    """

    def __init__(self, in_channels: int = INPUT_CHANNELS, base_channels: int = 16, levels: int = 3,
                 out_channels: int = 2, bn_momentum: float = 0.1):
        super().__init__()
        if in_channels < 1 or base_channels < 1 or levels < 1 or out_channels < 1:
            raise ValueError(f"SparseUNet3d: in_channels, base_channels, levels and out_channels must be >= 1, got "
                             f"{in_channels}, {base_channels}, {levels}, {out_channels}")
        self.in_channels, self.out_channels, self.levels = in_channels, out_channels, levels
        m = bn_momentum
        ch = [base_channels * 2**level for level in range(levels + 1)]
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        cin = in_channels
        for level in range(levels):
            c, c_next = ch[level], ch[level + 1]
            key = f"subm{level}"
            self.enc.append(SparseSequential(*_block(cin, c, key, m), *_block(c, c, key, m)))
            self.down.append(SparseSequential(
                SparseConv3d(c, c_next, 2, stride=2, indice_key=f"down{level}", bias=False),
                nn.BatchNorm1d(c_next, eps=1e-3, momentum=m), nn.ReLU()))
            self.up.append(SparseSequential(
                SparseInverseConv3d(c_next, c, 2, indice_key=f"down{level}", bias=False),
                nn.BatchNorm1d(c, eps=1e-3, momentum=m), nn.ReLU()))
            self.dec.append(SparseSequential(*_block(2 * c, c, key, m), *_block(c, c, key, m)))
            cin = c_next
        key = f"subm{levels}"
        self.bottleneck = SparseSequential(*_block(ch[levels], ch[levels], key, m),
                                           *_block(ch[levels], ch[levels], key, m))
        self.head = SubMConv3d(ch[0], out_channels, 1, bias=True)
        with torch.no_grad():  # identity start for the TSDF channel
            self.head.weight[0].zero_()
            self.head.bias[0] = 0.0

    def forward(self, x: SparseConvTensor) -> torch.Tensor:
        """Refine the TSDF at the active voxels.

        Args:
            x: op-layer sparse tensor (from :func:`make_input` or ``ops.sparse_tensor``): features (M, C_in)
                float32 with the TSDF (truncation units) in channel 0; indices (M, 4) int32 ``[batch, z, y, x]``;
                every ``spatial_shape`` entry a multiple of ``2**levels``.

        Returns:
            (M, out_channels) float32: one row per input voxel, in the input's row order (see the class
            docstring for the channels).

        Raises:
            ValueError: on a wrong channel count or a spatial shape that is not a multiple of ``2**levels``.
        """
        stride = 2**self.levels
        require(x.features.dim() == 2 and x.features.shape[1] == self.in_channels, None,
                f"SparseUNet3d: features must be (M, {self.in_channels}), got {tuple(x.features.shape)}")
        require(all(int(s) % stride == 0 for s in x.spatial_shape), None,
                f"SparseUNet3d: spatial_shape {list(x.spatial_shape)} must be multiples of 2**levels = {stride}")
        tsdf_in = x.features[:, 0]
        skips = []
        for enc, down in zip(self.enc, self.down):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for level in reversed(range(self.levels)):
            up = self.up[level](x)  # features at the sites (and in the row order) of skips[level]
            skip = skips[level]
            x = skip.replace_feature(torch.cat([skip.features, up.features], dim=1))
            x = self.dec[level](x)
        out = self.head(x).features
        base = torch.atanh(tsdf_in.clamp(-1 + _TSDF_EPS, 1 - _TSDF_EPS))
        tsdf = torch.tanh(base + out[:, 0])
        return torch.cat([tsdf[:, None], out[:, 1:]], dim=1)


def make_input(coords: torch.Tensor, tsdf: torch.Tensor, weight: torch.Tensor, color: torch.Tensor,
               batch: torch.Tensor | None = None, levels: int = 3) -> tuple[SparseConvTensor, torch.Tensor]:
    """Pack fused voxels into the U-Net's input sparse tensor.

    Args:
        coords: (M, 3) int64 global voxel indices ``(i, j, k)`` along ``(x, y, z)``, as Open3D's
            ``VoxelBlockGrid`` (``block_key * block_resolution + local index``); unique per batch item.
        tsdf: (M,) float TSDF in truncation units, [-1, 1], positive in front of the surface.
        weight: (M,) float >= 0 integration weight (number of observations).
        color: (M, 3) float RGB in [0, 1].
        batch: (M,) int64 batch item of each voxel, or None for one item.
        levels: the U-Net's ``levels``; the spatial shape is padded to a multiple of ``2**levels``.

    Returns:
        ``(x, origin)``: ``x`` an op-layer sparse tensor with features (M, 5) float32
        ``[tsdf, log1p(weight) / max_item(log1p(weight)), r, g, b]`` (the weight feature normalised to [0, 1]
        per batch item) and indices (M, 4) int32 ``[batch, z, y, x]`` = ``coords - origin[batch]`` reordered to
        z, y, x, rows in input order; ``origin`` (B, 3) int64 ``(x, y, z)`` voxel index subtracted per batch
        item: the item's minimum, rounded down to a multiple of ``2**levels`` so that the network's
        downsampling grid stays aligned with the global voxel grid.

    Raises:
        ValueError: on wrong shapes or dtypes, non-finite or out-of-range values.
    """
    require(coords.dim() == 2 and coords.shape[1] == 3 and coords.shape[0] > 0, None,
            f"make_input: coords must be (M, 3) with M > 0, got {tuple(coords.shape)}")
    require(not coords.is_floating_point(), None, f"make_input: coords must be integer, got {coords.dtype}")
    m = coords.shape[0]
    for name, value, shape in (("tsdf", tsdf, (m,)), ("weight", weight, (m,)), ("color", color, (m, 3))):
        require(tuple(value.shape) == shape and value.is_floating_point(), None,
                f"make_input: {name} must be floating {shape}, got {tuple(value.shape)} {value.dtype}")
        require(bool(torch.isfinite(value).all()), None, f"make_input: {name} has non-finite values")
    require(bool((weight >= 0).all()), None, "make_input: weight must be >= 0")
    device = coords.device
    if batch is None:
        batch = torch.zeros(m, dtype=torch.int64, device=device)
    require(tuple(batch.shape) == (m,) and not batch.is_floating_point() and bool((batch >= 0).all()), None,
            f"make_input: batch must be (M,) = ({m},) non-negative integers, got {tuple(batch.shape)} {batch.dtype}")
    batch = batch.long()
    coords = coords.long()
    batch_size = int(batch.max()) + 1
    align = 2**levels
    big = torch.iinfo(torch.int64).max
    lo = torch.full((batch_size, 3), big, dtype=torch.int64, device=device)
    lo = lo.scatter_reduce(0, batch[:, None].expand(-1, 3), coords, reduce="amin")
    lo = torch.where(lo == big, torch.zeros_like(lo), lo)  # items without voxels
    origin = torch.div(lo, align, rounding_mode="floor") * align
    local = coords - origin[batch]
    extent = local.amax(0) + 1
    shape_xyz = (torch.div(extent + align - 1, align, rounding_mode="floor") * align).tolist()
    indices = torch.cat([batch[:, None], local.flip(1)], dim=1)  # [batch, z, y, x]

    log_w = torch.log1p(weight.float())
    w_max = torch.zeros(batch_size, dtype=log_w.dtype, device=device).scatter_reduce(
        0, batch, log_w, reduce="amax", include_self=True)
    w_feat = log_w / w_max.clamp_min(1e-6)[batch]
    features = torch.cat([tsdf.float()[:, None], w_feat[:, None], color.float()], dim=1)
    x = sparse_tensor(features, indices, shape_xyz[::-1], batch_size)
    return x, origin
