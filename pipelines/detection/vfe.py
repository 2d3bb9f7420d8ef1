"""Voxel feature encoders: turn the points of each voxel into one feature vector.

``MeanVFE`` (SECOND) averages the point features of a voxel. ``StackedVFE`` (VoxelNet) runs stacked
VFE layers: a shared per-point linear layer with BatchNorm and ReLU, a max over the voxel's points,
and the concatenation of the per-point and the voxel-wise features, followed by a final linear layer
and max pool. Padded point slots are masked out of BatchNorm statistics and of the max. Both take the
output of ``ops.voxelize.hard_voxelize``.
"""

from __future__ import annotations

import torch
from torch import nn

VFE_TYPES = ("mean", "stacked")


def _valid_mask(num_points: torch.Tensor, max_points: int) -> torch.Tensor:
    """(V, P) bool: slot p of voxel v holds a real point."""
    return torch.arange(max_points, device=num_points.device)[None, :] < num_points[:, None]


class MeanVFE(nn.Module):
    """Mean of the point features of each voxel (no parameters).

    Args:
        in_channels: point feature size C (4 for ``x, y, z, reflectance``).
    """

    def __init__(self, in_channels: int = 4):
        super().__init__()
        self.out_channels = in_channels

    def forward(self, voxels: torch.Tensor, num_points: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Average the points of each voxel.

        Args:
            voxels: (V, P, C) float32 point features, padded slots ignored.
            num_points: (V,) int32 number of real points per voxel (>= 1).
            coords: (V, 4) int32 ``[batch, z, y, x]`` (unused; same signature as ``StackedVFE``).

        Returns:
            (V, C) float32 mean point feature per voxel.
        """
        mask = _valid_mask(num_points, voxels.shape[1]).to(voxels.dtype)
        total = (voxels * mask[..., None]).sum(dim=1)
        return total / num_points.clamp(min=1).to(voxels.dtype)[:, None]


class _VFELayer(nn.Module):
    """One VoxelNet VFE layer: per-point FC+BN+ReLU to ``out/2``, concat with the voxel max -> ``out``."""

    def __init__(self, in_channels: int, out_channels: int, last: bool, momentum: float):
        super().__init__()
        self.last = last
        hidden = out_channels if last else out_channels // 2
        self.linear = nn.Linear(in_channels, hidden, bias=False)
        self.norm = nn.BatchNorm1d(hidden, eps=1e-3, momentum=momentum)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (V, P, Cin); mask: (V, P) bool. BatchNorm sees real points only.
        y = torch.zeros(*x.shape[:2], self.linear.out_features, dtype=x.dtype, device=x.device)
        y[mask] = torch.relu(self.norm(self.linear(x[mask])))
        pooled = y.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)  # (V, hidden)
        if self.last:
            return pooled
        out = torch.cat([y, pooled[:, None, :].expand_as(y)], dim=-1)
        return out * mask[..., None]


class StackedVFE(nn.Module):
    """VoxelNet's stacked voxel feature encoding layers.

    Each point is augmented with its offset to the mean of its voxel's points (VoxelNet) and to the
    voxel centre, so the input to the first layer has ``C + 6`` channels.

    Args:
        in_channels: point feature size C (``x, y, z, ...``).
        filters: output sizes of the VFE layers, e.g. ``[32, 64]``; all but the last must be even.
        voxel_size: ``[vx, vy, vz]`` metres.
        point_cloud_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]`` metres.
        bn_momentum: BatchNorm momentum.
    """

    def __init__(self, in_channels: int, filters: list[int], voxel_size: list[float], point_cloud_range: list[float],
                 bn_momentum: float = 0.01):
        super().__init__()
        if not filters or any(f % 2 for f in filters[:-1]):
            raise ValueError(f"vfe_filters: expected a non-empty list, all but the last even, got {filters}")
        self.register_buffer("voxel_size", torch.tensor(voxel_size, dtype=torch.float32), persistent=False)
        self.register_buffer("offset", torch.tensor(point_cloud_range[:3], dtype=torch.float32), persistent=False)
        layers = []
        channels = in_channels + 6
        for i, f in enumerate(filters):
            layers.append(_VFELayer(channels, f, last=i == len(filters) - 1, momentum=bn_momentum))
            channels = f
        self.layers = nn.ModuleList(layers)
        self.out_channels = filters[-1]

    def forward(self, voxels: torch.Tensor, num_points: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Encode each voxel.

        Args:
            voxels: (V, P, C) float32 point features ``x, y, z, ...`` (metres), padded slots ignored.
            num_points: (V,) int32 number of real points per voxel (>= 1).
            coords: (V, 4) int32 ``[batch, z, y, x]`` voxel indices.

        Returns:
            (V, filters[-1]) float32 voxel features.
        """
        mask = _valid_mask(num_points, voxels.shape[1])
        xyz = voxels[..., :3]
        mean = (xyz * mask[..., None]).sum(1) / num_points.clamp(min=1).to(voxels.dtype)[:, None]
        centre = (coords[:, [3, 2, 1]].to(voxels.dtype) + 0.5) * self.voxel_size + self.offset  # (V, 3) x, y, z
        x = torch.cat([voxels, xyz - mean[:, None], xyz - centre[:, None]], dim=-1) * mask[..., None]
        for layer in self.layers:
            x = layer(x, mask)  # (V, P, f) for inner layers, (V, filters[-1]) after the last
        return x


def build_vfe(
    kind: str, in_channels: int, filters: list[int], voxel_size: list[float], point_cloud_range: list[float],
    bn_momentum: float = 0.01,
) -> nn.Module:
    """Build the voxel feature encoder named ``kind`` (``"mean"`` or ``"stacked"``)."""
    if kind == "mean":
        return MeanVFE(in_channels)
    if kind == "stacked":
        return StackedVFE(in_channels, filters, voxel_size, point_cloud_range, bn_momentum)
    raise ValueError(f"vfe: expected one of {VFE_TYPES}, got {kind!r}")
