"""Point clouds: positions with optional per-point features, colours and normals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from geo3d.types._checks import as_tensor, check_finite, check_tensor
from geo3d.types.base import TensorDataclass


@dataclass
class PointCloud(TensorDataclass):
    """A point cloud.

    Attributes:
        points: (N, 3) float32, metres.
        features: (N, F) float32 or None, e.g. LiDAR reflectance in column 0.
        colors: (N, 3) float32 in [0, 1] or None.
        normals: (N, 3) float32 unit vectors or None.
    """

    points: torch.Tensor
    features: torch.Tensor | None = None
    colors: torch.Tensor | None = None
    normals: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.points = as_tensor(self.points, torch.float32)
        check_tensor("PointCloud.points", self.points, (None, 3))
        check_finite("PointCloud.points", self.points)
        n = self.points.shape[0]
        if self.features is not None:
            self.features = as_tensor(self.features, torch.float32)
            if self.features.dim() == 1:
                self.features = self.features[:, None]
            check_tensor("PointCloud.features", self.features, (n, None))
        if self.colors is not None:
            self.colors = as_tensor(self.colors, torch.float32)
            check_tensor("PointCloud.colors", self.colors, (n, 3))
            if n and (self.colors.min() < 0 or self.colors.max() > 1):
                raise ValueError("PointCloud.colors: expected values in [0, 1]")
        if self.normals is not None:
            self.normals = as_tensor(self.normals, torch.float32)
            check_tensor("PointCloud.normals", self.normals, (n, 3))

    def __len__(self) -> int:
        return self.points.shape[0]

    def to_open3d(self):
        """Return an ``open3d.geometry.PointCloud`` (colours and normals kept)."""
        import open3d as o3d

        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(self.points.detach().cpu().double().numpy()))
        if self.colors is not None:
            pcd.colors = o3d.utility.Vector3dVector(self.colors.detach().cpu().double().numpy())
        if self.normals is not None:
            pcd.normals = o3d.utility.Vector3dVector(self.normals.detach().cpu().double().numpy())
        return pcd

    @classmethod
    def from_open3d(cls, pcd) -> PointCloud:
        """Build from an ``open3d.geometry.PointCloud``."""
        colors = np.asarray(pcd.colors, dtype=np.float32) if pcd.has_colors() else None
        normals = np.asarray(pcd.normals, dtype=np.float32) if pcd.has_normals() else None
        return cls(np.asarray(pcd.points, dtype=np.float32), colors=colors, normals=normals)

    def to_trimesh(self):
        """Return a ``trimesh.PointCloud`` (colours as uint8 RGBA)."""
        import trimesh

        colors = None
        if self.colors is not None:
            rgb = (self.colors.detach().cpu().numpy() * 255).round().astype(np.uint8)
            colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1)
        return trimesh.PointCloud(self.points.detach().cpu().numpy(), colors=colors)

    @classmethod
    def from_trimesh(cls, cloud) -> PointCloud:
        """Build from a ``trimesh.PointCloud``."""
        colors = None
        c = getattr(cloud, "colors", None)
        if c is not None and len(c) == len(cloud.vertices):
            colors = np.asarray(c, dtype=np.float32)[:, :3] / 255.0
        return cls(np.asarray(cloud.vertices, dtype=np.float32), colors=colors)
