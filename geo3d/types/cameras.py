"""Pinhole cameras, OpenCV convention (x right, y down, z forward)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geo3d.types._checks import as_tensor, check_finite, check_tensor
from geo3d.types.base import TensorDataclass


@dataclass
class Cameras(TensorDataclass):
    """A batch of C pinhole cameras sharing one image size.

    Attributes:
        K: (C, 3, 3) float32 intrinsics in pixels; continuous image coordinates, so the centre of
            pixel column i, row j is at (i + 0.5, j + 0.5) (the convention of gsplat and OpenCV's K).
        world_to_cam: (C, 4, 4) float32 rigid transforms, metres, OpenCV camera frame.
        width: image width in pixels.
        height: image height in pixels.
    """

    K: torch.Tensor
    world_to_cam: torch.Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        self.K = as_tensor(self.K, torch.float32)
        self.world_to_cam = as_tensor(self.world_to_cam, torch.float32)
        if self.K.dim() == 2:
            self.K = self.K[None]
        if self.world_to_cam.dim() == 2:
            self.world_to_cam = self.world_to_cam[None]
        check_tensor("Cameras.K", self.K, (None, 3, 3))
        c = self.K.shape[0]
        check_tensor("Cameras.world_to_cam", self.world_to_cam, (c, 4, 4))
        check_finite("Cameras.K", self.K)
        check_finite("Cameras.world_to_cam", self.world_to_cam)
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Cameras: image size must be positive, got {self.width}x{self.height}")
        rot = self.world_to_cam[:, :3, :3]
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device).expand_as(rot)
        if not torch.allclose(rot @ rot.transpose(1, 2), eye, atol=1e-3):
            raise ValueError("Cameras.world_to_cam: rotation part is not orthonormal")

    def __len__(self) -> int:
        return self.K.shape[0]

    def __getitem__(self, index) -> Cameras:
        """Select cameras by index or slice (keeps the batch dimension)."""
        K, w2c = self.K[index], self.world_to_cam[index]
        return Cameras(K.reshape(-1, 3, 3), w2c.reshape(-1, 4, 4), self.width, self.height)

    @property
    def cam_to_world(self) -> torch.Tensor:
        """(C, 4, 4) float32 camera-to-world transforms."""
        return torch.linalg.inv(self.world_to_cam)

    @property
    def centers(self) -> torch.Tensor:
        """(C, 3) float32 camera centres in the world frame, metres."""
        return self.cam_to_world[:, :3, 3]

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points into every camera.

        Args:
            points: (N, 3) float32 world frame, metres.

        Returns:
            uv: (C, N, 2) float32 pixel coordinates; depth: (C, N) float32 camera z, metres.
        """
        homo = torch.cat([points, torch.ones_like(points[:, :1])], 1)
        cam = torch.einsum("cij,nj->cni", self.world_to_cam, homo)[..., :3]
        depth = cam[..., 2]
        pix = torch.einsum("cij,cnj->cni", self.K, cam)
        uv = pix[..., :2] / depth.clamp_min(1e-8)[..., None]
        return uv, depth

    def scaled(self, factor: float) -> Cameras:
        """Cameras for images resized by ``factor`` (intrinsics scaled, poses kept)."""
        K = self.K.clone()
        K[:, :2] *= factor
        return Cameras(K, self.world_to_cam, round(self.width * factor), round(self.height * factor))
