"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.detection.losses import detection_losses, direction_targets, sigmoid_focal_loss, smooth_l1


def test_focal_loss_hand_values():
    logits = torch.tensor([0.0, 2.0])
    targets = torch.tensor([1.0, 0.0])
    p = torch.sigmoid(torch.tensor(2.0)).item()
    expected = torch.tensor([0.25 * 0.5**2 * math.log(2.0), 0.75 * p**2 * -math.log(1 - p)])
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets), expected)


def test_smooth_l1_hand_values():
    x = torch.tensor([0.05, -0.5, 2.0])
    beta = 0.1
    torch.testing.assert_close(smooth_l1(x, beta), torch.tensor([0.5 * 0.05**2 / beta, 0.45, 1.95]))


def test_direction_targets():
    yaw = torch.tensor([0.0, math.pi / 2, math.pi, -math.pi / 2, math.pi / 4 + 1e-3, math.pi / 4 - 1e-3])
    assert direction_targets(yaw, math.pi / 4, 2).tolist() == [1, 0, 0, 1, 0, 1]


def _preds(n=3, k=1):
    return {"cls": torch.zeros(1, n, k), "box": torch.zeros(1, n, 7), "dir": torch.zeros(1, n, 2)}


def test_perfect_regression_has_zero_box_loss_and_pi_flip_is_free():
    preds = _preds()
    targets = torch.zeros(1, 3, 7)
    targets[0, 0] = torch.tensor([0.1, -0.2, 0.05, 0.1, 0.0, -0.1, 0.4])
    labels = torch.tensor([[1, 0, -1]])
    preds["box"][0, 0] = targets[0, 0]
    out = detection_losses(preds, labels, targets, torch.zeros(1, 3, dtype=torch.long), sin_difference=True)
    assert out["loss_box"].item() < 1e-12
    preds["box"][0, 0, 6] += math.pi  # the sin-difference term cannot see a heading flipped by pi
    out = detection_losses(preds, labels, targets, torch.zeros(1, 3, dtype=torch.long), sin_difference=True)
    assert out["loss_box"].item() < 1e-10


def test_normalisation_and_ignored_anchors():
    preds = _preds()
    labels = torch.tensor([[1, 0, -1]])
    out = detection_losses(preds, labels, torch.zeros(1, 3, 7), torch.zeros(1, 3, dtype=torch.long),
                           sin_difference=False)
    # logits 0: the positive costs 0.25 * 0.25 * log 2, the negative 0.75 * 0.25 * log 2, the ignored one 0.
    torch.testing.assert_close(out["loss_cls"], torch.tensor(0.25 * math.log(2.0)))
    torch.testing.assert_close(out["loss_dir"], torch.tensor(math.log(2.0)))
    torch.testing.assert_close(out["loss"], out["loss_cls"] + 2.0 * out["loss_box"] + 0.2 * out["loss_dir"])


def test_hard_negative_weight_scales_only_confident_background_anchors():
    # anchors: a positive, a negative at logit 2 (score 0.88: hard), a negative at logit -2 (0.12: easy), ignored
    logits = torch.tensor([[[0.0], [2.0], [-2.0], [3.0]]])
    preds = {"cls": logits, "box": torch.zeros(1, 4, 7)}
    labels = torch.tensor([[1, 0, 0, -1]])

    def focal(logit: float, target: float) -> float:  # the focal loss by hand, alpha 0.25, gamma 2
        p = 1.0 / (1.0 + math.exp(-logit))
        p_t = p if target else 1.0 - p
        return (0.25 if target else 0.75) * (1.0 - p_t) ** 2 * -math.log(p_t)

    for weight in (1.0, 3.0):
        out = detection_losses(preds, labels, torch.zeros(1, 4, 7), None, sin_difference=False,
                               hard_negative_weight=weight, hard_negative_score=0.3)
        expected = focal(0.0, 1) + weight * focal(2.0, 0) + focal(-2.0, 0)  # one positive: normaliser 1
        assert abs(float(out["loss_cls"]) - expected) < 1e-6
    # a threshold above every score: no anchor is hard, the weight changes nothing
    out = detection_losses(preds, labels, torch.zeros(1, 4, 7), None, sin_difference=False,
                           hard_negative_weight=3.0, hard_negative_score=0.95)
    assert abs(float(out["loss_cls"]) - (focal(0.0, 1) + focal(2.0, 0) + focal(-2.0, 0))) < 1e-6


def test_code_weights_scale_each_box_entry_by_hand():
    # one positive anchor; its errors 0.5 (x), 0.05 (dz), 0.2 (dx): smooth-L1 with beta 1/9 by hand
    preds = {"cls": torch.zeros(1, 2, 1, dtype=torch.float64), "box": torch.zeros(1, 2, 7, dtype=torch.float64)}
    targets = torch.zeros(1, 2, 7, dtype=torch.float64)
    targets[0, 0, 0], targets[0, 0, 5], targets[0, 0, 3] = 0.5, 0.05, 0.2
    labels = torch.tensor([[1, 0]])
    beta = 1.0 / 9.0

    def sl1(e: float) -> float:
        return 0.5 * e * e / beta if e < beta else e - 0.5 * beta

    weights = [1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 1.0]
    plain = detection_losses(preds, labels, targets, None, sin_difference=False)
    weighted = detection_losses(preds, labels, targets, None, sin_difference=False, code_weights=weights)
    assert abs(float(plain["loss_box"]) - (sl1(0.5) + sl1(0.2) + sl1(0.05))) < 1e-12
    assert abs(float(weighted["loss_box"]) - (sl1(0.5) + 3.0 * sl1(0.2) + 4.0 * sl1(0.05))) < 1e-12
    with pytest.raises(ValueError, match="code_weights: expected 7"):
        detection_losses(preds, labels, targets, None, sin_difference=False, code_weights=[1.0] * 6)
