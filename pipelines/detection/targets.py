"""Anchor target assignment (SECOND / OpenPCDet ``AxisAlignedTargetAssigner``), per class.

Anchors of class k are compared with the ground-truth boxes of class k by rotated BEV IoU
(``ops.boxes.boxes_iou_bev``). An anchor is positive when its best IoU reaches the class's matched
threshold, or when it is the best anchor of some ground truth (ties included, ground truths with no
overlap at all force nothing); negative when its best IoU is below the unmatched threshold; ignored
in between. Only anchors whose centre is close enough to a ground truth for the boxes to overlap are
passed to the IoU op: the others have IoU exactly 0, so this saves time without changing the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ops.boxes import boxes_iou_bev


@dataclass
class AnchorTargets:
    """Assignment result for one frame.

    Attributes:
        labels: (N,) int64 per anchor: -1 ignored, 0 background, ``k + 1`` positive of class k.
        matched_boxes: (N, 7) float32 ground-truth box of each positive anchor (zeros elsewhere).
    """

    labels: torch.Tensor
    matched_boxes: torch.Tensor


def _iou_near(anchors: torch.Tensor, gts: torch.Tensor) -> torch.Tensor:
    """(N, M) rotated BEV IoU, computed only for anchors within reach of a ground truth."""
    iou = anchors.new_zeros(anchors.shape[0], gts.shape[0])
    reach = (torch.linalg.norm(anchors[:, 3:5], dim=1)[:, None] + torch.linalg.norm(gts[:, 3:5], dim=1)[None]) / 2
    near = (torch.cdist(anchors[:, :2], gts[:, :2]) < reach).any(dim=1)
    if near.any():
        iou[near] = boxes_iou_bev(anchors[near], gts).to(iou.dtype)
    return iou


def assign_targets(
    anchors: torch.Tensor,
    anchor_class: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    matched_thresholds: list[float],
    unmatched_thresholds: list[float],
) -> AnchorTargets:
    """Assign each anchor a class label and a ground-truth box.

    Args:
        anchors: (N, 7) float32 flattened anchors ``x, y, z, dx, dy, dz, yaw``.
        anchor_class: (N,) int64 class index of each anchor.
        gt_boxes: (M, 7) float32 ground-truth boxes, LiDAR frame.
        gt_labels: (M,) int64 class index of each ground truth.
        matched_thresholds: per class, IoU at or above which an anchor is positive (e.g. Car 0.6).
        unmatched_thresholds: per class, IoU below which an anchor is negative (e.g. Car 0.45).

    Returns:
        The per-anchor :class:`AnchorTargets`.
    """
    n = anchors.shape[0]
    labels = torch.zeros(n, dtype=torch.int64, device=anchors.device)
    matched = anchors.new_zeros(n, 7)
    for cls, (pos_thr, neg_thr) in enumerate(zip(matched_thresholds, unmatched_thresholds)):
        a_idx = torch.nonzero(anchor_class == cls).squeeze(1)
        gts = gt_boxes[gt_labels == cls]
        if gts.shape[0] == 0 or a_idx.numel() == 0:
            continue
        iou = _iou_near(anchors[a_idx], gts)  # (Na, Mc)
        best_iou, best_gt = iou.max(dim=1)
        gt_best = iou.max(dim=0).values  # (Mc,)
        gt_best[gt_best == 0] = -1  # a ground truth without overlap forces no anchor
        forced_anchor, forced_gt = torch.nonzero(iou == gt_best[None]).unbind(1)
        best_gt[forced_anchor] = forced_gt
        positive = best_iou >= pos_thr
        positive[forced_anchor] = True
        cls_labels = torch.where(best_iou < neg_thr, 0, -1)
        cls_labels[positive] = cls + 1
        labels[a_idx] = cls_labels
        matched[a_idx[positive]] = gts[best_gt[positive]]
    return AnchorTargets(labels, matched)
