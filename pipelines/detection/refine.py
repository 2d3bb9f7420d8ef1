"""Vertical refinement of detected boxes from the scan: bottoms on the ground, tops where the points allow.

A small detector trained for minutes places boxes well in bird's-eye view but not vertically: the tiny
config's boxes are off the labelled bottom by 6 cm and the top by 5 cm (median), and it predicts about the
mean car height. Replacing only the matched detections' bottom and height with the label's raised one such
model's held-out 3D AP from 75 to 91, its BEV AP (the eighth session's analysis in
pipelines/detection/README.md). The scan itself pins both down, and no learned part is needed for it:

* **Bottom.** A car stands on the ground, and the ground shows in the ring of points around its footprint
  (:func:`~pipelines.detection.augment.local_ground_heights`). That estimate is off by 2 cm (median) but has
  outliers (a ring on a wall's foot or a slope), so it replaces the predicted bottom only when the two agree
  within :func:`ground_tolerances` (0.3 m, growing with range beyond 33 m, as the detector's own vertical error
  does).
* **Top.** The highest return on the object (inside the footprint, above the ground) bounds the top from
  below; the beam above that return passed over the object, so the top is at most one beam spacing higher.
  The predicted top is clipped into that interval.

Footprints and yaws (x, y, dx, dy, yaw) are left as predicted. A box with too few returns keeps its predicted
top, and one whose evidence would shrink it below half its predicted height keeps its prediction.
"""

from __future__ import annotations

import math

import torch

from geo3d.types import points_in_boxes
from pipelines.detection.augment import local_ground_heights

GROUND_TOLERANCE = 0.3
"""Metres a box's bottom may lie off the ground estimate and still count as standing on it, within 33 m. Set on the
validation frames of the training seed with the eighth session's config model, moving bottoms only: 0.15, 0.2, 0.3,
0.5 and 1.0 m gave Car 3D R40 moderate 72.3, 75.7, 75.7, 75.7 and 75.3 (65.3 unrefined)."""

GROUND_TOLERANCE_PER_METRE = 0.009
"""Beyond 33 m the tolerance is this fraction of the range: the 95th percentile of the true positives' offsets on
those frames grows with range (0.18, 0.19, 0.30 and 0.44 m at 0-15, 15-30, 30-40 and 40-60 m; ninth session's
config model)."""


def ground_tolerances(boxes: torch.Tensor) -> torch.Tensor:
    """Per box, how far its bottom may lie off the ground and still count as standing on it.

    Args:
        boxes: (M, 7) float32 ``x, y, z, dx, dy, dz, yaw``, LiDAR frame (sensor at the origin), metres.

    Returns:
        (M,) float32 metres: ``max(GROUND_TOLERANCE, GROUND_TOLERANCE_PER_METRE * range)`` (range on the ground
        plane, to the box centre), on the CPU.
    """
    distance = torch.hypot(boxes[:, 0], boxes[:, 1]).float().cpu()
    return (GROUND_TOLERANCE_PER_METRE * distance).clamp(min=GROUND_TOLERANCE)


def ground_offsets(points: torch.Tensor, boxes: torch.Tensor, margin: float = 1.5) -> torch.Tensor:
    """How far each box's bottom lies below the ground around it.

    Args:
        points: (N, >=3) float32 scene points ``x, y, z`` metres.
        boxes: (M, 7) float32 ``x, y, z, dx, dy, dz, yaw`` (z at the box centre), same frame.
        margin: width of the ring of ground points around each footprint, metres
            (:func:`~pipelines.detection.augment.local_ground_heights`).

    Returns:
        (M,) float32 ground height minus box bottom, metres (positive: the box is sunk); NaN where the ring holds
        too few points to tell.
    """
    bottoms = (boxes[:, 2] - boxes[:, 5] / 2).double().cpu()
    return (local_ground_heights(points, boxes, margin) - bottoms).float()


def refine_vertical(
    points: torch.Tensor,
    boxes: torch.Tensor,
    offsets: torch.Tensor | None = None,
    beam_spacing_deg: float = 0.33,
    top_noise: float = 0.02,
    max_top_shift: float = 0.5,
    min_points: int = 10,
    footprint_scale: float = 0.8,
    clearance: float = 0.3,
) -> torch.Tensor:
    """Move box bottoms onto the local ground and clip box tops to what the scan allows.

    Args:
        points: (N, >=3) float32 scene points ``x, y, z`` metres, LiDAR frame (sensor at the origin).
        boxes: (M, 7) float32 ``x, y, z, dx, dy, dz, yaw`` (z at the box centre), same frame.
        offsets: (M,) float32 :func:`ground_offsets` of the boxes, if already computed.
        beam_spacing_deg: the sensor's vertical beam spacing, degrees (HDL-64E's upper block: 32 beams from +2 to
            -8.33 deg, 31 gaps of 0.33 deg); the top may lie up to ``range * tan(spacing)`` above the highest return.
        top_noise: metres a return may lie above the true top (range noise).
        max_top_shift: returns more than this above the predicted top are not the object's (a crown above a
            car); metres.
        min_points: returns on the object needed to touch its top.
        footprint_scale: the object's returns are taken from its footprint shrunk by this factor (to keep a
            neighbour's or a wall's points out).
        clearance: metres above the bottom where the object's returns start (ground points stay out).

    Returns:
        (M, 7) float32 refined boxes; only z and dz differ from ``boxes``.
    """
    refined = boxes.clone()
    if len(boxes) == 0:
        return refined
    bottoms = (boxes[:, 2] - boxes[:, 5] / 2).tolist()
    tops = (boxes[:, 2] + boxes[:, 5] / 2).tolist()
    offsets = ground_offsets(points, boxes) if offsets is None else offsets
    for i, (offset, tolerance) in enumerate(zip(offsets.tolist(), ground_tolerances(boxes).tolist())):
        if abs(offset) <= tolerance:  # False for NaN
            bottoms[i] += offset
    columns = boxes.clone()
    columns[:, 3:5] *= footprint_scale
    lows = torch.tensor(bottoms, dtype=boxes.dtype, device=boxes.device) + clearance
    highs = boxes[:, 2] + boxes[:, 5] / 2 + max_top_shift
    columns[:, 2], columns[:, 5] = (lows + highs) / 2, (highs - lows).clamp(min=0.0)
    inside = points_in_boxes(points[:, :3], columns)  # (N, M)
    for i in range(len(boxes)):
        z = points[inside[:, i], 2]
        if len(z) >= min_points:
            highest = float(z.max())
            gap = float(torch.hypot(boxes[i, 0], boxes[i, 1])) * math.tan(math.radians(beam_spacing_deg))
            tops[i] = min(max(tops[i], highest - top_noise), highest + gap)
        if tops[i] - bottoms[i] > 0.5 * float(boxes[i, 5]):  # else the evidence contradicts the box: keep it
            refined[i, 2] = (tops[i] + bottoms[i]) / 2
            refined[i, 5] = tops[i] - bottoms[i]
    return refined
