"""Decoding with the direction classifier and rotated NMS."""

from __future__ import annotations

import math

import torch

from pipelines.detection.box_coder import ResidualCoder
from pipelines.detection.postprocess import apply_direction, decode_frame


def test_apply_direction_flips_by_pi():
    yaw = torch.tensor([0.3, 0.3, 3.0, -2.0])
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0], [0.0, 5.0]])
    out = apply_direction(yaw, logits, math.pi / 4)
    # bin 0 covers [pi/4, 5pi/4), bin 1 the other half; angles returned in [-pi, pi).
    expected = torch.tensor([0.3 + math.pi - 2 * math.pi, 0.3, 3.0, -2.0])
    torch.testing.assert_close(out, expected)


def test_decode_and_nms():
    coder = ResidualCoder()
    anchors = torch.tensor([[10.0, 0, -1, 3.9, 1.6, 1.56, 0]] * 3 + [[20.0, 5, -1, 3.9, 1.6, 1.56, 0]])
    codes = torch.zeros(4, 7)
    codes[1, 0] = 0.2 / math.hypot(3.9, 1.6)  # 0.2 m ahead of anchor 0: overlaps it, suppressed
    codes[2, 1] = 3.0 / math.hypot(3.9, 1.6)  # 3 m to the left: no overlap, kept
    logits = torch.tensor([[2.0], [1.0], [0.5], [-5.0]])  # the last is below the score threshold
    dir_logits = torch.tensor([[0.0, 5.0]] * 4)
    boxes, scores, labels = decode_frame(logits, codes, dir_logits, anchors, coder, score_thresh=0.1,
                                         nms_thresh=0.01)
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)
    torch.testing.assert_close(scores, torch.sigmoid(torch.tensor([2.0, 0.5])))
    torch.testing.assert_close(boxes[:, :2], torch.tensor([[10.0, 0.0], [10.0, 3.0]]))
    assert labels.tolist() == [0, 0]
    boxes, scores, _ = decode_frame(logits, codes, dir_logits, anchors, coder, score_thresh=0.1, nms_thresh=0.99)
    assert len(boxes) == 3


def test_per_class_nms_keeps_overlapping_boxes_of_other_classes():
    coder = ResidualCoder()
    anchors = torch.tensor([[10.0, 0, -1, 3.9, 1.6, 1.56, 0]] * 2)
    logits = torch.tensor([[3.0, -9.0], [-9.0, 2.0]])
    boxes, _, labels = decode_frame(logits, torch.zeros(2, 7), None, anchors, coder, per_class_nms=True)
    assert sorted(labels.tolist()) == [0, 1]
    boxes, _, labels = decode_frame(logits, torch.zeros(2, 7), None, anchors, coder, per_class_nms=False)
    assert labels.tolist() == [0]
