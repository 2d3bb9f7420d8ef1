"""SECOND's single-level anchor head: per-anchor class scores, box residuals and direction bins.

Three 1x1 convolutions over the BEV features (OpenPCDet ``AnchorHeadSingle``). Outputs are flattened
in the anchors' ``(H, W, A)`` order (see ``anchors.py``). The classification bias starts at the focal
loss prior ``-log((1 - p) / p)`` with ``p = 0.01`` so that early training is not swamped by negatives.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class AnchorHead(nn.Module):
    """Classification, box regression and direction classification heads.

    Args:
        in_channels: BEV feature channels.
        num_anchors_per_location: anchors per cell A (classes x rotations).
        num_classes: number of object classes K (sigmoid outputs, no background column).
        code_size: box code size (7 or 8, see ``box_coder.py``).
        num_dir_bins: direction bins (2 in SECOND), 0 to disable the direction classifier.
    """

    def __init__(self, in_channels: int, num_anchors_per_location: int, num_classes: int, code_size: int,
                 num_dir_bins: int = 2):
        super().__init__()
        a = num_anchors_per_location
        self.num_classes = num_classes
        self.code_size = code_size
        self.num_dir_bins = num_dir_bins
        self.conv_cls = nn.Conv2d(in_channels, a * num_classes, 1)
        self.conv_box = nn.Conv2d(in_channels, a * code_size, 1)
        self.conv_dir = nn.Conv2d(in_channels, a * num_dir_bins, 1) if num_dir_bins > 0 else None
        prior = 0.01
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - prior) / prior))
        nn.init.normal_(self.conv_box.weight, mean=0.0, std=0.001)
        nn.init.zeros_(self.conv_box.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict per-anchor outputs.

        The three 1x1 convolutions run as one matrix product over the (B, H, W, C) view of ``x`` (free when ``x``
        is channels-last): torch sends 1x1 convolutions with few output channels to its slow reference kernel
        on the CPU. Same parameters as the three ``nn.Conv2d`` (checkpoints unchanged).

        Args:
            x: (B, in_channels, H, W) float32 BEV features.

        Returns:
            ``cls``: (B, H*W*A, K) logits; ``box``: (B, H*W*A, code_size) residuals;
            ``dir``: (B, H*W*A, num_dir_bins) logits (absent when disabled).
        """
        convs = [self.conv_cls, self.conv_box] + ([self.conv_dir] if self.conv_dir is not None else [])
        weight = torch.cat([conv.weight.flatten(1) for conv in convs])  # (sum of outputs, C)
        bias = torch.cat([conv.bias for conv in convs])
        y = nn.functional.linear(x.permute(0, 2, 3, 1), weight, bias)  # (B, H, W, sum of outputs)
        b = x.shape[0]
        parts = y.split([conv.out_channels for conv in convs], dim=-1)
        names = ["cls", "box", "dir"]
        sizes = [self.num_classes, self.code_size, self.num_dir_bins]
        return {name: part.reshape(b, -1, size) for name, part, size in zip(names, parts, sizes)}
