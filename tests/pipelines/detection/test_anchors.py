"""Anchor generation: shapes, positions, heights, class order."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.detection.anchors import generate_anchors

RANGE = [0.0, -10.0, -3.0, 20.0, 10.0, 1.0]


def test_shapes_and_positions():
    sizes = [[3.9, 1.6, 1.56], [0.8, 0.6, 1.73]]
    anchors, cls = generate_anchors(RANGE, (4, 5), sizes, [0.0, math.pi / 2], [-1.78, -0.6])
    assert anchors.shape == (4, 5, 4, 7)
    assert cls.tolist() == [0, 0, 1, 1]
    # Cells are 4 m x 5 m; the first anchor sits at the centre of the first cell.
    torch.testing.assert_close(anchors[0, 0, 0, :2], torch.tensor([2.0, -7.5]))
    torch.testing.assert_close(anchors[3, 4, 0, :2], torch.tensor([18.0, 7.5]))
    torch.testing.assert_close(anchors[2, 1, 3, :2], torch.tensor([6.0, 2.5]))  # row = y, column = x
    # z at the bottom height plus half the anchor height; sizes and yaws by slot.
    torch.testing.assert_close(anchors[0, 0, :, 2], torch.tensor([-1.0, -1.0, 0.265, 0.265]))
    torch.testing.assert_close(anchors[1, 1, 1, 3:], torch.tensor([3.9, 1.6, 1.56, math.pi / 2]))
    torch.testing.assert_close(anchors[1, 1, 2, 3:], torch.tensor([0.8, 0.6, 1.73, 0.0]))


def test_mismatched_class_lists():
    with pytest.raises(ValueError, match="one per class"):
        generate_anchors(RANGE, (2, 2), [[3.9, 1.6, 1.56]], [0.0], [-1.78, -0.6])
