"""A bird's-eye-view raster of a LiDAR frame with boxes, for TensorBoard and quick looks (numpy only).

Image rows run along -x (forward is up), columns along -y (left is left), one pixel per
``resolution`` metres. Points are drawn grey by height, ground truth green, detections red with a
short line from the centre along the heading. Written with numpy rather than Open3D/matplotlib so it
is cheap enough to call inside a validation loop on a headless machine.
"""

from __future__ import annotations

import numpy as np
import torch

from geo3d.types import box_corners

GT_COLOR = (0, 255, 0)
PRED_COLOR = (255, 48, 48)


def _to_pixels(xy: np.ndarray, point_cloud_range: list[float], resolution: float) -> np.ndarray:
    """(N, 2) metres -> (N, 2) integer (row, col)."""
    xmin, ymin, _, xmax, ymax, _ = point_cloud_range
    rows = ((xmax - xy[:, 0]) / resolution).astype(np.int64)
    cols = ((ymax - xy[:, 1]) / resolution).astype(np.int64)
    return np.stack([rows, cols], 1)


def _draw_segment(image: np.ndarray, a: np.ndarray, b: np.ndarray, color: tuple[int, int, int]) -> None:
    n = int(np.abs(b - a).max()) + 1
    t = np.linspace(0.0, 1.0, n)[:, None]
    px = np.round(a[None] * (1 - t) + b[None] * t).astype(np.int64)
    ok = (px[:, 0] >= 0) & (px[:, 0] < image.shape[0]) & (px[:, 1] >= 0) & (px[:, 1] < image.shape[1])
    image[px[ok, 0], px[ok, 1]] = color


def render_bev(
    points: torch.Tensor,
    point_cloud_range: list[float],
    gt_boxes: torch.Tensor | None = None,
    pred_boxes: torch.Tensor | None = None,
    resolution: float = 0.1,
) -> np.ndarray:
    """Render a BEV image.

    Args:
        points: (N, >=3) float32 ``x, y, z, ...`` metres, LiDAR frame.
        point_cloud_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]`` metres: the area drawn.
        gt_boxes: (M, 7) float32 ground-truth boxes, drawn green, or None.
        pred_boxes: (D, 7) float32 detections, drawn red, or None.
        resolution: metres per pixel.

    Returns:
        (H, W, 3) uint8 RGB image, ``H = (xmax - xmin) / resolution``, ``W = (ymax - ymin) / resolution``.
    """
    xmin, ymin, zmin, xmax, ymax, zmax = point_cloud_range
    h, w = int(round((xmax - xmin) / resolution)), int(round((ymax - ymin) / resolution))
    image = np.zeros((h, w, 3), dtype=np.uint8)
    pts = points.detach().cpu().float().numpy()
    if len(pts):
        px = _to_pixels(pts[:, :2], point_cloud_range, resolution)
        ok = (px[:, 0] >= 0) & (px[:, 0] < h) & (px[:, 1] >= 0) & (px[:, 1] < w)
        shade = 80 + 175 * np.clip((pts[ok, 2] - zmin) / max(zmax - zmin, 1e-6), 0, 1)
        image[px[ok, 0], px[ok, 1]] = shade.astype(np.uint8)[:, None]
    for boxes, color in ((gt_boxes, GT_COLOR), (pred_boxes, PRED_COLOR)):
        if boxes is not None:
            draw_boxes_bev(image, boxes, point_cloud_range, color, resolution)
    return image


def draw_boxes_bev(
    image: np.ndarray,
    boxes: torch.Tensor,
    point_cloud_range: list[float],
    color: tuple[int, int, int],
    resolution: float = 0.1,
) -> np.ndarray:
    """Draw box outlines (bottom face) and heading ticks onto a :func:`render_bev` image, in place.

    Args:
        image: (H, W, 3) uint8 RGB image of :func:`render_bev` with the same range and resolution.
        boxes: (K, 7) float32 boxes ``x, y, z, dx, dy, dz, yaw`` (metres, radians, LiDAR frame).
        point_cloud_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]`` metres of the image.
        color: RGB 0-255.
        resolution: metres per pixel.

    Returns:
        ``image``.
    """
    if len(boxes) == 0:
        return image
    b = boxes.detach().cpu().float()
    corners = box_corners(b)[:, :4, :2].numpy()  # bottom face, (K, 4, 2)
    for box, quad in zip(b.numpy(), corners):
        q = _to_pixels(quad, point_cloud_range, resolution)
        for i in range(4):
            _draw_segment(image, q[i], q[(i + 1) % 4], color)
        head = box[:2] + 0.5 * box[3] * np.array([np.cos(box[6]), np.sin(box[6])])
        c = _to_pixels(np.stack([box[:2], head]), point_cloud_range, resolution)
        _draw_segment(image, c[0], c[1], color)
    return image


def bev_pixels(xy: np.ndarray, point_cloud_range: list[float], resolution: float = 0.1) -> np.ndarray:
    """(N, 2) metres ``x, y`` -> (N, 2) int64 ``(row, col)`` pixels of a :func:`render_bev` image."""
    return _to_pixels(np.asarray(xy, dtype=np.float64).reshape(-1, 2), point_cloud_range, resolution)
