"""Sparse 3D backbone with output stride 8 (SECOND / OpenPCDet ``VoxelBackBone8x``).

Four stages on the op layer's sparse convolutions: a submanifold stage at full resolution, then three
stages that each start with a strided ``SparseConv3d`` (stride 2) followed by two ``SubMConv3d``, all
with BatchNorm and ReLU, and a last strided convolution along z only that shrinks the height before
the BEV compression. The z paddings of the three strided stages are configurable so that coarse
voxels (few z cells) still leave at least one output cell.
"""

from __future__ import annotations

import torch
from torch import nn

from ops.sparse_conv import SparseConv3d, SparseConvTensor, SparseSequential, SubMConv3d, sparse_tensor


def _norm_act(channels: int, momentum: float) -> list[nn.Module]:
    return [nn.BatchNorm1d(channels, eps=1e-3, momentum=momentum), nn.ReLU()]


def _subm(cin: int, cout: int, key: str, momentum: float) -> list[nn.Module]:
    return [SubMConv3d(cin, cout, 3, indice_key=key, bias=False), *_norm_act(cout, momentum)]


def _down(cin: int, cout: int, kernel, stride, padding, key: str, momentum: float) -> list[nn.Module]:
    conv = SparseConv3d(cin, cout, kernel, stride=stride, padding=padding, indice_key=key, bias=False)
    return [conv, *_norm_act(cout, momentum)]


def _conv_out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class SparseBackbone3D(nn.Module):
    """SECOND's sparse middle encoder.

    Args:
        in_channels: voxel feature size from the VFE.
        grid_size: ``(nx, ny, nz)`` voxels of the point-cloud range; nx and ny must be multiples of 8.
        channels: ``[c1, c2, c3, c4, c_out]`` output channels of the stages and of the final z-conv,
            e.g. OpenPCDet's ``[16, 32, 64, 64, 128]``.
        z_paddings: z padding of the three strided stages (OpenPCDet: ``[1, 1, 0]``).
        bn_momentum: BatchNorm momentum (OpenPCDet: 0.01, for schedules of tens of thousands of steps).

    Attributes:
        out_depth: number of z cells left after the last convolution.
        bev_channels: ``c_out * out_depth``, the channel count after height compression.
    """

    def __init__(
        self,
        in_channels: int,
        grid_size: tuple[int, int, int],
        channels: list[int],
        z_paddings: list[int] = (1, 1, 0),
        bn_momentum: float = 0.01,
    ):
        super().__init__()
        if len(channels) != 5:
            raise ValueError(f"backbone_channels: expected 5 values [c1, c2, c3, c4, c_out], got {channels}")
        if len(z_paddings) != 3:
            raise ValueError(f"backbone_z_paddings: expected 3 values, got {list(z_paddings)}")
        nx, ny, nz = grid_size
        if nx % 8 or ny % 8:
            raise ValueError(f"grid size {nx} x {ny} (x, y): expected multiples of 8 for output stride 8")
        # OpenPCDet pads the z extent by one cell so that 40 z cells reduce to 2 after the stages.
        self.sparse_shape = [nz + 1, ny, nx]
        c1, c2, c3, c4, c_out = channels
        depth = self.sparse_shape[0]
        for pad in z_paddings:
            depth = _conv_out_size(depth, 3, 2, pad)
        depth = _conv_out_size(depth, 3, 2, 0)
        if depth < 1:
            raise ValueError(
                f"sparse backbone: {nz} z cells leave no output cell after 4 strided z-convolutions; "
                f"use smaller voxels along z or larger backbone_z_paddings (got {list(z_paddings)})"
            )
        self.out_depth = depth
        self.bev_channels = c_out * depth
        m = bn_momentum
        self.conv_input = SparseSequential(*_subm(in_channels, c1, "subm1", m))
        self.conv1 = SparseSequential(*_subm(c1, c1, "subm1", m))
        stages = []
        for i, (cin, cout, pad) in enumerate(zip((c1, c2, c3), (c2, c3, c4), z_paddings), start=2):
            stages.append(SparseSequential(
                *_down(cin, cout, 3, 2, (pad, 1, 1), f"spconv{i}", m),
                *_subm(cout, cout, f"subm{i}", m),
                *_subm(cout, cout, f"subm{i}", m),
            ))
        self.conv2, self.conv3, self.conv4 = stages
        self.conv_out = SparseSequential(*_down(c4, c_out, (3, 1, 1), (2, 1, 1), 0, "spconv_down2", m))

    def forward(self, features: torch.Tensor, coords: torch.Tensor, batch_size: int) -> SparseConvTensor:
        """Run the sparse stages.

        Args:
            features: (V, C) float32 voxel features.
            coords: (V, 4) int32 ``[batch, z, y, x]`` voxel indices.
            batch_size: number of frames B.

        Returns:
            A sparse tensor whose ``.dense()`` is (B, c_out, out_depth, ny / 8, nx / 8).
        """
        x = sparse_tensor(features, coords, self.sparse_shape, batch_size)
        x = self.conv_input(x)
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.conv3(x)
        x = self.conv4(x)
        return self.conv_out(x)
