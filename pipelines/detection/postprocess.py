"""Decode head outputs into boxes and suppress duplicates with rotated NMS (op layer).

Per frame: sigmoid class scores, the best class per anchor, a score threshold, the top
``nms_pre_max`` anchors, residual decoding, the heading flipped by the direction classifier, and
``ops.boxes.nms_rotated`` (class-agnostic, as OpenPCDet's SECOND) or ``batched_nms_rotated``
(per class).
"""

from __future__ import annotations

import math

import torch

from geo3d.types import limit_period
from ops.boxes import batched_nms_rotated, nms_rotated
from pipelines.detection.box_coder import ResidualCoder


def apply_direction(yaw: torch.Tensor, dir_logits: torch.Tensor, dir_offset: float) -> torch.Tensor:
    """Resolve the heading ambiguity of regressed yaws with the direction classifier.

    Args:
        yaw: (N,) float32 decoded yaw, radians.
        dir_logits: (N, bins) float32 direction logits.
        dir_offset: angle where bin 0 starts, radians (as used for the targets).

    Returns:
        (N,) float32 yaw in the bin the classifier chose, wrapped to ``[-pi, pi)``.
    """
    bins = dir_logits.shape[-1]
    period = 2 * math.pi / bins
    base = limit_period(yaw - dir_offset, 0.0, period)
    yaw = base + dir_offset + period * dir_logits.argmax(dim=-1).to(yaw.dtype)
    return limit_period(yaw, 0.5, 2 * math.pi)


def decode_frame(
    cls_logits: torch.Tensor,
    box_codes: torch.Tensor,
    dir_logits: torch.Tensor | None,
    anchors: torch.Tensor,
    coder: ResidualCoder,
    dir_offset: float = math.pi / 4,
    score_thresh: float = 0.1,
    nms_thresh: float = 0.01,
    nms_pre_max: int = 4096,
    nms_post_max: int = 500,
    per_class_nms: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detections of one frame.

    Args:
        cls_logits: (N, K) float32 class logits per anchor.
        box_codes: (N, code) float32 regressed residuals.
        dir_logits: (N, bins) float32 direction logits, or None.
        anchors: (N, 7) float32 anchors.
        coder: the box coder used for training.
        dir_offset: direction-bin offset, radians.
        score_thresh: minimum sigmoid score kept.
        nms_thresh: rotated BEV IoU above which the lower-scoring box is suppressed.
        nms_pre_max: boxes kept (by score) before NMS.
        nms_post_max: boxes kept after NMS.
        per_class_nms: suppress only within a class (else class-agnostic).

    Returns:
        boxes: (D, 7) float32 ``x, y, z, dx, dy, dz, yaw`` (LiDAR frame, yaw in ``[-pi, pi)``);
        scores: (D,) float32 in [0, 1], descending; labels: (D,) int64 class indices.
    """
    scores, labels = torch.sigmoid(cls_logits).max(dim=-1)
    keep = torch.nonzero(scores >= score_thresh).squeeze(1)
    if keep.numel() > nms_pre_max:
        keep = keep[scores[keep].topk(nms_pre_max).indices]
    boxes = coder.decode(box_codes[keep], anchors[keep])
    if dir_logits is not None:
        boxes[:, 6] = apply_direction(boxes[:, 6], dir_logits[keep], dir_offset)
    else:
        boxes[:, 6] = limit_period(boxes[:, 6], 0.5, 2 * math.pi)
    finite = torch.isfinite(boxes).all(dim=1)  # an untrained head can overflow exp() in the size decoding
    boxes, scores, labels = boxes[finite], scores[keep][finite], labels[keep][finite]
    if boxes.shape[0] == 0:
        return boxes, scores, labels
    if per_class_nms:
        kept = batched_nms_rotated(boxes, scores, labels, nms_thresh)
    else:
        kept = nms_rotated(boxes, scores, nms_thresh)
    kept = kept[:nms_post_max]
    return boxes[kept], scores[kept], labels[kept]
