"""Triangle meshes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from geo3d.types._checks import as_tensor, check_finite, check_tensor
from geo3d.types.base import TensorDataclass


@dataclass
class Mesh(TensorDataclass):
    """A triangle mesh.

    Attributes:
        vertices: (V, 3) float32 metres.
        faces: (F, 3) int64 vertex indices, counter-clockwise seen from outside.
        vertex_colors: (V, 3) float32 in [0, 1] or None.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_colors: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.vertices = as_tensor(self.vertices, torch.float32)
        self.faces = as_tensor(self.faces, torch.int64)
        if self.faces.numel() == 0:
            self.faces = self.faces.reshape(0, 3)
        check_tensor("Mesh.vertices", self.vertices, (None, 3))
        check_tensor("Mesh.faces", self.faces, (None, 3))
        check_finite("Mesh.vertices", self.vertices)
        v = self.vertices.shape[0]
        if self.faces.numel() and (int(self.faces.min()) < 0 or int(self.faces.max()) >= v):
            raise ValueError(f"Mesh.faces: indices must lie in [0, {v}), got [{int(self.faces.min())}, "
                             f"{int(self.faces.max())}]")
        if self.vertex_colors is not None:
            self.vertex_colors = as_tensor(self.vertex_colors, torch.float32)
            check_tensor("Mesh.vertex_colors", self.vertex_colors, (v, 3))

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    def to_trimesh(self):
        """Return a ``trimesh.Trimesh`` (not processed: vertex order kept)."""
        import trimesh

        colors = None
        if self.vertex_colors is not None:
            colors = (self.vertex_colors.detach().cpu().numpy().clip(0, 1) * 255).round().astype(np.uint8)
        return trimesh.Trimesh(
            self.vertices.detach().cpu().numpy(), self.faces.detach().cpu().numpy(), vertex_colors=colors,
            process=False,
        )

    @classmethod
    def from_trimesh(cls, mesh) -> Mesh:
        """Build from a ``trimesh.Trimesh`` (vertex colours kept when present)."""
        colors = None
        visual = getattr(mesh, "visual", None)
        if visual is not None and getattr(visual, "kind", None) == "vertex":
            colors = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
        return cls(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64), colors)

    def to_open3d(self):
        """Return an ``open3d.geometry.TriangleMesh`` with vertex normals computed."""
        import open3d as o3d

        m = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(self.vertices.detach().cpu().double().numpy()),
            o3d.utility.Vector3iVector(self.faces.detach().cpu().numpy().astype(np.int32)),
        )
        if self.vertex_colors is not None:
            m.vertex_colors = o3d.utility.Vector3dVector(self.vertex_colors.detach().cpu().double().numpy())
        m.compute_vertex_normals()
        return m

    @classmethod
    def from_open3d(cls, mesh) -> Mesh:
        """Build from an ``open3d.geometry.TriangleMesh``."""
        colors = np.asarray(mesh.vertex_colors, np.float32) if mesh.has_vertex_colors() else None
        return cls(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.triangles, np.int64), colors)
