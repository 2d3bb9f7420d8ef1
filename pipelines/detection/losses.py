"""SECOND's training losses: sigmoid focal loss, smooth-L1 on box residuals, direction cross-entropy.

As in OpenPCDet's ``AnchorHeadTemplate``: every term is normalised by the number of positive anchors
of its frame (at least 1) and averaged over the batch. With the residual angle encoding the yaw term
uses the sin-difference trick (``sin(a - b) = sin a cos b - cos a sin b``) so that boxes off by pi are
not penalised: the direction classifier resolves the heading instead. The focal loss is torchvision's
formula written in a few lines (torchvision is not a dependency). Optional hard-negative weighting multiplies the
classification loss of the background anchors that currently score above a threshold (online hard-negative
mining as a weight: the focal loss already fades easy negatives; this stresses the ones that would be false
positives at the reporting threshold).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from geo3d.types import limit_period


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
                       ) -> torch.Tensor:
    """Element-wise sigmoid focal loss (Lin et al. 2017).

    Args:
        logits: (..., K) float32 class logits.
        targets: (..., K) float32 one-hot targets (all zero for background).
        alpha: weight of the positive class.
        gamma: focusing exponent.

    Returns:
        (..., K) float32 loss per element.
    """
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def smooth_l1(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Element-wise smooth L1 of a difference ``x``: ``0.5 x^2 / beta`` below ``beta``, ``|x| - beta/2`` above."""
    ax = x.abs()
    return torch.where(ax < beta, 0.5 * ax**2 / beta, ax - 0.5 * beta)


def direction_targets(yaw: torch.Tensor, dir_offset: float, num_bins: int) -> torch.Tensor:
    """Direction bin of each ground-truth yaw.

    Args:
        yaw: (...,) float32 radians.
        dir_offset: angle (radians) where bin 0 starts (SECOND: pi / 4).
        num_bins: number of bins over 2 pi.

    Returns:
        (...,) int64 bin index in ``[0, num_bins)``.
    """
    rot = limit_period(yaw - dir_offset, 0.0, 2 * math.pi)
    return torch.clamp(torch.floor(rot / (2 * math.pi / num_bins)).long(), 0, num_bins - 1)


def detection_losses(
    preds: dict[str, torch.Tensor],
    labels: torch.Tensor,
    box_targets: torch.Tensor,
    dir_targets: torch.Tensor | None,
    sin_difference: bool,
    cls_weight: float = 1.0,
    box_weight: float = 2.0,
    dir_weight: float = 0.2,
    smooth_l1_beta: float = 1.0 / 9.0,
    hard_negative_weight: float = 1.0,
    hard_negative_score: float = 0.3,
    code_weights: Sequence[float] | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted SECOND losses for a batch.

    Args:
        preds: head outputs ``cls`` (B, N, K), ``box`` (B, N, code), optional ``dir`` (B, N, bins).
        labels: (B, N) int64 anchor labels: -1 ignored, 0 background, ``k + 1`` class k.
        box_targets: (B, N, code) float32 encoded targets (used at positives only).
        dir_targets: (B, N) int64 direction bins, or None without a direction classifier.
        sin_difference: apply the sin-difference trick to the last code entry (residual yaw).
        cls_weight, box_weight, dir_weight: term weights (OpenPCDet: 1.0, 2.0, 0.2).
        smooth_l1_beta: smooth-L1 transition point.
        hard_negative_weight: factor on the classification loss of every background anchor whose score (the
            sigmoid of its largest logit, not differentiated) is at least ``hard_negative_score``: the negatives a
            detector would report at that threshold. 1 disables it.
        hard_negative_score: score from which a background anchor counts as a hard negative.
        code_weights: (code,) factors on the smooth-L1 term of each box code entry (OpenPCDet's
            ``code_weights``), e.g. to weigh the size entries more; None weighs all by 1.

    Returns:
        ``loss`` (scalar total) and the unweighted-by-term scalars ``loss_cls``, ``loss_box``, ``loss_dir``.
    """
    positives = labels > 0
    cared = labels >= 0
    num_pos = positives.sum(dim=1, keepdim=True).clamp(min=1).to(preds["cls"].dtype)  # (B, 1)
    batch_size = labels.shape[0]

    num_classes = preds["cls"].shape[-1]
    one_hot = F.one_hot(labels.clamp(min=0), num_classes + 1)[..., 1:].to(preds["cls"].dtype)
    cls_w = cared.to(preds["cls"].dtype) / num_pos
    if hard_negative_weight != 1.0:
        scores = torch.sigmoid(preds["cls"].detach()).amax(-1)  # (B, N)
        hard = (labels == 0) & (scores >= hard_negative_score)
        cls_w = torch.where(hard, cls_w * hard_negative_weight, cls_w)
    loss_cls = (sigmoid_focal_loss(preds["cls"], one_hot).sum(-1) * cls_w).sum() / batch_size

    pred_box, target_box = preds["box"], box_targets
    if sin_difference:
        a, b = pred_box[..., -1:], target_box[..., -1:]
        pred_box = torch.cat([pred_box[..., :-1], torch.sin(a) * torch.cos(b)], dim=-1)
        target_box = torch.cat([target_box[..., :-1], torch.cos(a) * torch.sin(b)], dim=-1)
    reg_w = positives.to(pred_box.dtype) / num_pos
    per_code = smooth_l1(pred_box - target_box, smooth_l1_beta)
    if code_weights is not None:
        if len(code_weights) != per_code.shape[-1]:
            raise ValueError(f"code_weights: expected {per_code.shape[-1]} values (one per box code entry), "
                             f"got {len(code_weights)}")
        per_code = per_code * per_code.new_tensor(list(code_weights))
    loss_box = (per_code.sum(-1) * reg_w).sum() / batch_size

    losses = {"loss_cls": loss_cls, "loss_box": loss_box}
    total = cls_weight * loss_cls + box_weight * loss_box
    if dir_targets is not None and "dir" in preds:
        ce = F.cross_entropy(preds["dir"].flatten(0, 1), dir_targets.flatten(), reduction="none").view_as(reg_w)
        loss_dir = (ce * reg_w).sum() / batch_size
        losses["loss_dir"] = loss_dir
        total = total + dir_weight * loss_dir
    losses["loss"] = total
    return losses
