"""Depth maps with a validity mask and intrinsics."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geo3d.types._checks import as_tensor, check_tensor
from geo3d.types.base import TensorDataclass


@dataclass
class DepthMap(TensorDataclass):
    """A depth image.

    Attributes:
        depth: (H, W) float32 z-depth along the optical axis, metres; 0 where invalid.
        valid: (H, W) bool; defaults to ``depth > 0`` (and finite).
        K: (3, 3) float32 intrinsics in pixels, or None when unknown (e.g. KITTI depth PNGs).
    """

    depth: torch.Tensor
    valid: torch.Tensor | None = None
    K: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.depth = as_tensor(self.depth, torch.float32)
        check_tensor("DepthMap.depth", self.depth, (None, None))
        finite = torch.isfinite(self.depth)
        if self.valid is None:
            self.valid = finite & (self.depth > 0)
        else:
            self.valid = as_tensor(self.valid, torch.bool)
            check_tensor("DepthMap.valid", self.valid, tuple(self.depth.shape))
            if bool((self.valid & ~finite).any()):
                raise ValueError("DepthMap.valid: marks NaN/infinite depths as valid")
        if bool((self.depth[finite] < 0).any()):
            raise ValueError("DepthMap.depth: negative depth values (expected metres >= 0, 0 = missing)")
        self.depth = torch.where(self.valid, self.depth, torch.zeros_like(self.depth))
        if self.K is not None:
            self.K = as_tensor(self.K, torch.float32)
            check_tensor("DepthMap.K", self.K, (3, 3))

    @property
    def height(self) -> int:
        return self.depth.shape[0]

    @property
    def width(self) -> int:
        return self.depth.shape[1]

    def to_points(self, cam_to_world: torch.Tensor | None = None) -> torch.Tensor:
        """Back-project valid pixels (pixel centres) to 3D.

        Args:
            cam_to_world: (4, 4) float32 or None; None keeps points in the camera frame.

        Returns:
            (M, 3) float32 metres, M = number of valid pixels, row-major pixel order.
        """
        if self.K is None:
            raise ValueError("DepthMap.to_points: intrinsics K are unknown")
        v, u = torch.nonzero(self.valid, as_tuple=True)
        z = self.depth[v, u]
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        x = (u.to(z) + 0.5 - cx) / fx * z
        y = (v.to(z) + 0.5 - cy) / fy * z
        pts = torch.stack([x, y, z], 1)
        if cam_to_world is not None:
            pts = pts @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
        return pts
