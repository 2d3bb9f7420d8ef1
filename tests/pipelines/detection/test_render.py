"""BEV raster: points and box outlines land on the expected pixels."""

from __future__ import annotations

import numpy as np
import torch

from pipelines.detection.render import render_bev

RANGE = [0.0, -10.0, -3.0, 20.0, 10.0, 1.0]


def _has(image: np.ndarray, row: int, col: int, color: tuple[int, int, int]) -> bool:
    """``color`` within one pixel of (row, col)."""
    window = image[row - 1: row + 2, col - 1: col + 2].reshape(-1, 3)
    return bool((window == np.array(color)).all(1).any())


def test_render_bev_pixels():
    points = torch.tensor([[5.05, 2.05, 1.0, 0.0]])  # z at zmax: brightest grey
    gt = torch.tensor([[10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0]])  # x 8..12, y -1..1
    pred = gt + torch.tensor([0, 5.0, 0, 0, 0, 0, 0])  # y 4..6
    image = render_bev(points, RANGE, gt_boxes=gt, pred_boxes=pred, resolution=0.1)
    assert image.shape == (200, 200, 3) and image.dtype == np.uint8
    # row = (xmax - x) / res, col = (ymax - y) / res
    assert tuple(image[149, 79]) == (255, 255, 255)
    assert _has(image, 80, 95, (0, 255, 0))  # front edge of the ground truth (x = 12, y = 0.5)
    assert _has(image, 100, 100, (0, 255, 0))  # heading tick from the centre towards +x
    assert _has(image, 80, 40, (255, 48, 48))  # front-left corner of the detection (x = 12, y = 6)
    assert not _has(image, 100, 150, (0, 255, 0)) and image[0, 0].sum() == 0
