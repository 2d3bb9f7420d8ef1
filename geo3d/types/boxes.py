"""Oriented 3D boxes in the LiDAR frame (OpenPCDet convention)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from geo3d.types._checks import as_tensor, check_finite, check_tensor
from geo3d.types.base import TensorDataclass

# Corner order: bottom face counter-clockwise from (+x, +y), then the top face in the same order.
_CORNER_SIGNS = torch.tensor(
    [[1, 1, -1], [-1, 1, -1], [-1, -1, -1], [1, -1, -1], [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]],
    dtype=torch.float32,
)


@dataclass
class Boxes3D(TensorDataclass):
    """A set of oriented 3D boxes.

    Attributes:
        boxes: (N, 7) float32 ``x, y, z, dx, dy, dz, yaw``; centre in metres (z at the box centre),
            sizes in metres along the box's own x (length), y (width), z (height), yaw in radians
            about +z, counter-clockwise from +x.
        labels: (N,) int64 class indices, or None.
        scores: (N,) float32 confidences in [0, 1], or None (ground truth).
        class_names: names indexed by ``labels``, e.g. ``("Car", "Pedestrian", "Cyclist")``.
    """

    boxes: torch.Tensor
    labels: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.boxes = as_tensor(self.boxes, torch.float32)
        if self.boxes.numel() == 0:
            self.boxes = self.boxes.reshape(0, 7)
        check_tensor("Boxes3D.boxes", self.boxes, (None, 7))
        check_finite("Boxes3D.boxes", self.boxes)
        n = self.boxes.shape[0]
        if n and bool((self.boxes[:, 3:6] <= 0).any()):
            raise ValueError("Boxes3D.boxes: sizes dx, dy, dz must be positive")
        if self.labels is not None:
            self.labels = as_tensor(self.labels, torch.int64).reshape(-1)
            check_tensor("Boxes3D.labels", self.labels, (n,))
        if self.scores is not None:
            self.scores = as_tensor(self.scores, torch.float32).reshape(-1)
            check_tensor("Boxes3D.scores", self.scores, (n,))
        self.class_names = tuple(self.class_names)

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def __getitem__(self, index) -> Boxes3D:
        """Select boxes by index, slice or boolean mask."""
        return Boxes3D(
            self.boxes[index].reshape(-1, 7),
            None if self.labels is None else self.labels[index].reshape(-1),
            None if self.scores is None else self.scores[index].reshape(-1),
            self.class_names,
        )

    def names(self) -> list[str]:
        """Class name of each box (``"?"`` when unknown)."""
        if self.labels is None:
            return ["?"] * len(self)
        return [self.class_names[i] if 0 <= i < len(self.class_names) else str(i) for i in self.labels.tolist()]

    def corners(self) -> torch.Tensor:
        """Box corners: (N, 8, 3) float32 metres, bottom face then top face (see ``_CORNER_SIGNS``)."""
        return box_corners(self.boxes)

    def points_in_boxes(self, points: torch.Tensor) -> torch.Tensor:
        """Which box each point lies in.

        Args:
            points: (P, 3) float32 metres, same frame as the boxes.

        Returns:
            (P, N) bool, ``True`` where point p is inside box n.
        """
        return points_in_boxes(points, self.boxes)

    def to_open3d(self, color: tuple[float, float, float] = (0.0, 1.0, 0.0)) -> list:
        """One ``open3d.geometry.LineSet`` per box (12 edges), painted ``color`` (RGB in [0, 1])."""
        import open3d as o3d

        lines = [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]]
        out = []
        for corners in self.corners().detach().cpu().double().numpy():
            ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(corners), o3d.utility.Vector2iVector(lines))
            ls.paint_uniform_color(color)
            out.append(ls)
        return out


def box_corners(boxes: torch.Tensor) -> torch.Tensor:
    """Corners of oriented boxes.

    Args:
        boxes: (N, 7) float32 ``x, y, z, dx, dy, dz, yaw`` (metres, radians).

    Returns:
        (N, 8, 3) float32 corners in metres.
    """
    half = boxes[:, None, 3:6] * 0.5 * _CORNER_SIGNS.to(boxes)[None]
    c, s = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    x = half[..., 0] * c[:, None] - half[..., 1] * s[:, None]
    y = half[..., 0] * s[:, None] + half[..., 1] * c[:, None]
    return torch.stack([x, y, half[..., 2]], -1) + boxes[:, None, :3]


def points_in_boxes(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Point-in-box test.

    Args:
        points: (P, 3) float32 metres.
        boxes: (N, 7) float32 ``x, y, z, dx, dy, dz, yaw``.

    Returns:
        (P, N) bool.
    """
    local = points[:, None, :] - boxes[None, :, :3]
    c, s = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    lx = local[..., 0] * c + local[..., 1] * s
    ly = -local[..., 0] * s + local[..., 1] * c
    half = boxes[:, 3:6] * 0.5
    return (lx.abs() <= half[:, 0]) & (ly.abs() <= half[:, 1]) & (local[..., 2].abs() <= half[:, 2])


def limit_period(angle: torch.Tensor, offset: float = 0.5, period: float = 2 * math.pi) -> torch.Tensor:
    """Wrap angles into ``[-offset * period, (1 - offset) * period)`` (radians)."""
    return angle - torch.floor(angle / period + offset) * period
