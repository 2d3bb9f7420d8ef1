"""From the sparse 3D features to a 2D bird's-eye-view feature map.

``height_compression`` stacks the z cells of the dense 3D map into channels (OpenPCDet
``HeightCompression``). ``BEVBackbone`` is SECOND's 2D backbone and upsampling neck (OpenPCDet
``BaseBEVBackbone``): blocks of 3x3 convolutions, each block's output upsampled back to a common
resolution with a transposed convolution, the results concatenated.
"""

from __future__ import annotations

import torch
from torch import nn

from ops.sparse_conv import SparseConvTensor


def height_compression(x: SparseConvTensor) -> torch.Tensor:
    """Densify a sparse 3D feature map and fold its height into channels.

    Args:
        x: sparse tensor with dense shape (B, C, D, H, W).

    Returns:
        (B, C * D, H, W) float32 BEV features.
    """
    dense = x.dense()
    b, c, d, h, w = dense.shape
    return dense.reshape(b, c * d, h, w)


def _conv_bn_relu(cin: int, cout: int, stride: int, momentum: float) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=momentum),
        nn.ReLU(),
    ]


class BEVBackbone(nn.Module):
    """SECOND's 2D backbone with an upsampling neck.

    Args:
        in_channels: channels of the BEV map from height compression.
        layer_nums: extra 3x3 convolutions per block, e.g. ``[5, 5]``.
        layer_strides: stride of each block's first convolution, e.g. ``[1, 2]``.
        num_filters: channels of each block, e.g. ``[128, 256]``.
        upsample_strides: upsampling factor of each block's output, e.g. ``[1, 2]``; the ratios
            ``prod(layer_strides[:i + 1]) / upsample_strides[i]`` must all be equal (that ratio is the
            output stride: 1 keeps the input resolution, 0.5 doubles it).
        num_upsample_filters: channels of each upsampled output, e.g. ``[256, 256]``.
        bn_momentum: BatchNorm momentum.
        channels_last: run the convolutions on channels-last (NHWC) maps and weights (oneDNN's native layout on
            the CPU; the same numbers to rounding). The output is then channels-last too, which the head reads as
            a plain (B, H, W, C) matrix.

    Attributes:
        out_channels: ``sum(num_upsample_filters)``.
        stride: output stride relative to the input map (float; 0.5 means twice the resolution).
    """

    def __init__(
        self,
        in_channels: int,
        layer_nums: list[int],
        layer_strides: list[int],
        num_filters: list[int],
        upsample_strides: list[int],
        num_upsample_filters: list[int],
        bn_momentum: float = 0.01,
        channels_last: bool = True,
    ):
        super().__init__()
        self.channels_last = channels_last
        n = len(layer_nums)
        if not n or any(len(v) != n for v in (layer_strides, num_filters, upsample_strides, num_upsample_filters)):
            raise ValueError(
                "bev backbone: layer_nums, layer_strides, num_filters, upsample_strides and num_upsample_filters "
                "must be non-empty lists of the same length"
            )
        strides, total = [], 1
        for s, u in zip(layer_strides, upsample_strides):
            total *= s
            strides.append(total / u)
        if len(set(strides)) != 1:
            raise ValueError(f"bev backbone: block outputs end at different strides {strides}; fix upsample_strides")
        self.stride = float(strides[0])
        self.blocks = nn.ModuleList()
        self.deblocks = nn.ModuleList()
        cin = in_channels
        for num, stride, filters, up, up_filters in zip(
            layer_nums, layer_strides, num_filters, upsample_strides, num_upsample_filters
        ):
            layers = _conv_bn_relu(cin, filters, stride, bn_momentum)
            for _ in range(num):
                layers += _conv_bn_relu(filters, filters, 1, bn_momentum)
            self.blocks.append(nn.Sequential(*layers))
            self.deblocks.append(
                nn.Sequential(
                    nn.ConvTranspose2d(filters, up_filters, up, stride=up, bias=False),
                    nn.BatchNorm2d(up_filters, eps=1e-3, momentum=bn_momentum),
                    nn.ReLU(),
                )
            )
            cin = filters
        self.out_channels = sum(num_upsample_filters)
        if channels_last:  # loading a state dict keeps the layout
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                    module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks and the neck.

        Args:
            x: (B, in_channels, H, W) float32 BEV features.

        Returns:
            (B, out_channels, H / stride, W / stride) float32 (H, W must be divisible by the total
            stride of the blocks).
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outs = []
        for block, deblock in zip(self.blocks, self.deblocks):
            x = block(x)
            outs.append(deblock(x))
        return torch.cat(outs, dim=1)
