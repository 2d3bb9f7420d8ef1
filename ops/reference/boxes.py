"""Slow, simple references for ``ops.boxes`` built on shapely polygons (tests and benchmarks only).

Corners are computed here with numpy, independently of ``geo3d.types.box_corners``, and greedy NMS
uses the full IoU matrix, so the references share no code with the op they check.
"""

from __future__ import annotations

import numpy as np
import shapely


def bev_polygons(boxes: np.ndarray) -> np.ndarray:
    """Shapely polygons of the BEV footprints.

    Args:
        boxes: (N, 7) ``x, y, z, dx, dy, dz, yaw`` (metres, radians).

    Returns:
        (N,) object array of ``shapely.Polygon``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    local = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])[None] * boxes[:, None, 3:5]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = boxes[:, None, 0] + c * local[..., 0] - s * local[..., 1]
    y = boxes[:, None, 1] + s * local[..., 0] + c * local[..., 1]
    return shapely.polygons(np.stack([x, y], -1))


def overlap_bev_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) float64 BEV intersection areas (m^2) of boxes (N, 7) and (M, 7)."""
    pa, pb = bev_polygons(a), bev_polygons(b)
    return shapely.area(shapely.intersection(pa[:, None], pb[None, :])).reshape(len(pa), len(pb))


def iou_bev_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) float64 BEV IoU of boxes (N, 7) and (M, 7)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 7), np.asarray(b, np.float64).reshape(-1, 7)
    inter = overlap_bev_reference(a, b)
    union = (a[:, 3] * a[:, 4])[:, None] + (b[:, 3] * b[:, 4])[None, :] - inter
    return inter / union


def iou_3d_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) float64 3D IoU of boxes (N, 7) and (M, 7), z at the box centre."""
    a, b = np.asarray(a, np.float64).reshape(-1, 7), np.asarray(b, np.float64).reshape(-1, 7)
    top = np.minimum((a[:, 2] + a[:, 5] / 2)[:, None], (b[:, 2] + b[:, 5] / 2)[None, :])
    bottom = np.maximum((a[:, 2] - a[:, 5] / 2)[:, None], (b[:, 2] - b[:, 5] / 2)[None, :])
    inter = overlap_bev_reference(a, b) * np.clip(top - bottom, 0, None)
    union = np.prod(a[:, 3:6], 1)[:, None] + np.prod(b[:, 3:6], 1)[None, :] - inter
    return inter / union


def nms_rotated_reference(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, labels: np.ndarray | None = None
) -> list[int]:
    """Greedy NMS over the full BEV IoU matrix; only boxes with equal labels suppress each other.

    Returns:
        Indices of the kept boxes by descending score (ties: lower index first).
    """
    iou = iou_bev_reference(boxes, boxes)
    labels = np.zeros(len(scores), dtype=np.int64) if labels is None else np.asarray(labels)
    keep: list[int] = []
    for i in np.argsort(-np.asarray(scores), kind="stable").tolist():
        if all(labels[k] != labels[i] or iou[k, i] <= iou_threshold for k in keep):
            keep.append(i)
    return keep
