"""Target assignment on hand-made anchors whose IoU with the ground truth is known in closed form."""

from __future__ import annotations

import math

import torch

from pipelines.detection.targets import assign_targets

CAR = [3.9, 1.6, 1.56]


def _box(x, y, yaw=0.0, size=CAR):
    return [x, y, -0.95, *size, yaw]


def test_hand_case():
    gt = torch.tensor([_box(10, 0), _box(30, 0, math.pi / 2)])
    anchors = torch.tensor([
        _box(10, 0),  # IoU 1 -> positive, GT 0
        _box(11, 0),  # shifted 1 m along the length: IoU 2.9 / 4.9 = 0.59 -> ignored (0.45 <= IoU < 0.6)
        _box(12, 0),  # shifted 2 m: IoU 1.9 / 5.9 = 0.32 -> negative
        _box(10, 0, math.pi / 2),  # crossed: IoU 2.56 / (2 * 6.24 - 2.56) = 0.26 -> negative
        _box(30, 1.0, math.pi / 2),  # GT 1's best anchor (IoU 0.59): forced positive
        _box(30, 1.3, math.pi / 2),  # IoU 2.6 / 5.2 = 0.5 -> ignored
        _box(50, 0),  # far away -> negative
        _box(10, 0, size=[0.8, 0.6, 1.73]),  # class 1 anchor: no class-1 GT -> background
    ])
    anchor_class = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1])
    t = assign_targets(anchors, anchor_class, gt, torch.tensor([0, 0]), [0.6, 0.5], [0.45, 0.35])
    assert t.labels.tolist() == [1, -1, 0, 0, 1, -1, 0, 0]
    torch.testing.assert_close(t.matched_boxes[0], gt[0])
    torch.testing.assert_close(t.matched_boxes[4], gt[1])
    assert (t.matched_boxes[[1, 2, 3, 5, 6, 7]] == 0).all()


def test_classes_are_matched_separately_and_empty_gt():
    anchors = torch.tensor([_box(10, 0), _box(10, 0, size=[0.8, 0.6, 1.73])])
    anchor_class = torch.tensor([0, 1])
    gt = torch.tensor([_box(10, 0, size=[0.8, 0.6, 1.73])])  # a pedestrian
    t = assign_targets(anchors, anchor_class, gt, torch.tensor([1]), [0.6, 0.5], [0.45, 0.35])
    assert t.labels.tolist() == [0, 2]
    t = assign_targets(anchors, anchor_class, torch.zeros(0, 7), torch.zeros(0, dtype=torch.long),
                       [0.6, 0.5], [0.45, 0.35])
    assert t.labels.tolist() == [0, 0]


def test_ground_truth_without_overlap_forces_nothing():
    anchors = torch.tensor([_box(10, 0), _box(20, 0)])
    t = assign_targets(anchors, torch.tensor([0, 0]), torch.tensor([_box(40, 0)]), torch.tensor([0]),
                       [0.6], [0.45])
    assert t.labels.tolist() == [0, 0]
