"""Augmentations keep each point inside its box; ground-truth sampling pastes without overlaps."""

from __future__ import annotations

import math

import numpy as np
import torch

from geo3d.types import points_in_boxes
from pipelines.detection.augment import (
    AugmentConfig,
    GTDatabase,
    augment_frame,
    flip_x,
    rotate_z,
    sample_ground_truth,
    scale,
)


def _scene(seed=0):
    """Two boxes with points inside, plus background points."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[10.0, 3.0, -0.9, 3.9, 1.6, 1.5, 0.4], [20.0, -5.0, -0.9, 4.2, 1.7, 1.6, -2.0]])
    local = (torch.rand(2, 100, 3, generator=g) - 0.5) * 0.98 * boxes[:, None, 3:6]
    c, s = torch.cos(boxes[:, 6])[:, None], torch.sin(boxes[:, 6])[:, None]
    inside = torch.stack([local[..., 0] * c - local[..., 1] * s, local[..., 0] * s + local[..., 1] * c,
                          local[..., 2]], -1) + boxes[:, None, :3]
    background = torch.rand(300, 3, generator=g) * torch.tensor([40.0, 40.0, 0.1]) + torch.tensor([0, -20, -1.7])
    points = torch.cat([inside.reshape(-1, 3), background])
    points = torch.cat([points, torch.rand(len(points), 1, generator=g)], 1)
    return points, boxes


def test_global_transforms_keep_points_in_boxes():
    points, boxes = _scene()
    before = points_in_boxes(points[:, :3], boxes)
    assert before[:100, 0].all() and before[100:200, 1].all()
    for transform in (flip_x, lambda p, b: rotate_z(p, b, 0.7), lambda p, b: scale(p, b, 1.07)):
        p2, b2 = transform(points, boxes)
        assert torch.equal(points_in_boxes(p2[:, :3], b2), before)
        torch.testing.assert_close(p2[:, 3], points[:, 3])  # reflectance untouched


def test_rotation_and_flip_values():
    points = torch.tensor([[1.0, 0.0, 0.5, 0.2]])
    boxes = torch.tensor([[1.0, 0.0, 0.5, 2.0, 1.0, 1.0, 3.0]])
    p, b = rotate_z(points, boxes, math.pi / 2)
    torch.testing.assert_close(p[0, :3], torch.tensor([0.0, 1.0, 0.5]), atol=1e-6, rtol=0)
    torch.testing.assert_close(b[0, 6], torch.tensor(3.0 + math.pi / 2 - 2 * math.pi))
    p, b = flip_x(torch.tensor([[1.0, 2.0, 0.0, 0.0]]), torch.tensor([[1.0, 2.0, 0.0, 1.0, 1.0, 1.0, 0.5]]))
    assert p[0, 1].item() == -2.0 and b[0, 1].item() == -2.0 and b[0, 6].item() == -0.5


def test_augment_frame_keeps_points_in_boxes():
    points, boxes = _scene(1)
    labels = torch.zeros(2, dtype=torch.int64)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        p, b, lab = augment_frame(points, boxes, labels, AugmentConfig(), rng)
        inside = points_in_boxes(p[:, :3], b)
        assert inside[:100, 0].all() and inside[100:200, 1].all()
        assert torch.equal(lab, labels)


def test_ground_truth_sampling_pastes_without_overlap():
    points, boxes = _scene(2)
    labels = torch.zeros(2, dtype=torch.int64)
    # Database: one object overlapping the scene's first box (must be rejected), two free ones.
    db_boxes = torch.tensor([[10.5, 3.0, -0.9, 3.9, 1.6, 1.5, 0.0], [30.0, 8.0, -0.9, 4.0, 1.7, 1.5, 1.0],
                             [5.0, -10.0, -0.9, 4.0, 1.7, 1.5, -0.5]])
    db_points = [torch.cat([b[:3] + torch.tensor([[0.1 * k, 0.0, 0.0] for k in range(-5, 6)]),
                            torch.full((11, 1), 0.5)], 1) for b in db_boxes]
    database = GTDatabase({0: db_boxes}, {0: db_points})
    for seed in range(3):
        p, b, lab = sample_ground_truth(points, boxes, labels, database, {0: 5}, np.random.default_rng(seed))
        assert len(b) == 4 and lab.tolist() == [0, 0, 0, 0]  # the overlapping object is never pasted
        assert torch.equal(b[:2], boxes)
        pasted = b[2:]
        assert not torch.isin(pasted[:, 0], torch.tensor([10.5])).any()
        inside = points_in_boxes(p[:, :3], pasted)
        assert (inside.sum(0) == 11).all()  # only the pasted points lie in the pasted boxes
        # scene points inside the pasted boxes were removed; the others are all kept
        scene_inside = points_in_boxes(points[:, :3], pasted).any(1)
        assert len(p) == len(points) - int(scene_inside.sum()) + 22
    # No sampling when the frame already has enough boxes of the class.
    p, b, _ = sample_ground_truth(points, boxes, labels, database, {0: 2}, np.random.default_rng(0))
    assert torch.equal(b, boxes) and torch.equal(p, points)
