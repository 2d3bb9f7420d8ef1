"""Vertical refinement: bottoms snap to the ground around the box, tops are clipped to the interval the scan's
highest return allows, and everything else about a box stays as predicted. Expected values are worked out by
hand from the scene's construction (flat ground at a known height, a car whose roof is a known plane)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pipelines.detection.module import (
    AnchorSettings,
    BackboneSettings,
    PostProcessSettings,
    SecondDetector,
    VoxelSettings,
)
from pipelines.detection.refine import ground_offsets, ground_tolerances, refine_vertical

GROUND = -1.7  # metres, LiDAR frame
ROOF = GROUND + 1.5  # the car's highest returns
CAR = (15.0, 2.0, 4.0, 1.8)  # x, y, length, width (yaw 0)


def _scene(with_crown: bool = False) -> torch.Tensor:
    """(N, 4) float32: a 0.2 m ground grid with a hole under the car, the car's returns up to ROOF."""
    xs, ys = torch.arange(0.0, 25.6, 0.2), torch.arange(-12.8, 12.8, 0.2)
    gx, gy = torch.meshgrid(xs, ys, indexing="ij")
    ground = torch.stack([gx.ravel(), gy.ravel(), torch.full_like(gx.ravel(), GROUND)], 1)
    x, y, length, width = CAR
    under = ((ground[:, 0] - x).abs() <= length / 2) & ((ground[:, 1] - y).abs() <= width / 2)
    ground = ground[~under]
    cx, cy, cz = torch.meshgrid(torch.linspace(x - 1.9, x + 1.9, 20), torch.linspace(y - 0.8, y + 0.8, 9),
                                torch.linspace(GROUND + 0.3, ROOF, 14), indexing="ij")
    parts = [ground, torch.stack([cx.ravel(), cy.ravel(), cz.ravel()], 1)]
    if with_crown:  # a tree crown 1.2 m above the roof
        parts.append(torch.tensor([[x, y, ROOF + 1.2]]).repeat(30, 1) + torch.rand(30, 3) * 0.2)
    points = torch.cat(parts)
    return torch.cat([points, torch.zeros(len(points), 1)], 1).float()


def _box(bottom: float, height: float, x: float = CAR[0], y: float = CAR[1]) -> torch.Tensor:
    return torch.tensor([[x, y, bottom + height / 2, CAR[2], CAR[3], height, 0.3]])


def _bottom_top(box: torch.Tensor) -> tuple[float, float]:
    return float(box[0, 2] - box[0, 5] / 2), float(box[0, 2] + box[0, 5] / 2)


def test_bottom_snaps_to_ground_and_low_top_rises_to_roof():
    predicted = _box(GROUND - 0.15, 1.3)  # bottom 15 cm low, top 35 cm below the roof
    refined = refine_vertical(_scene(), predicted)
    bottom, top = _bottom_top(refined)
    assert bottom == pytest.approx(GROUND, abs=1e-5)
    assert top == pytest.approx(ROOF - 0.02, abs=1e-5)  # the highest return less top_noise
    assert torch.equal(refined[:, [0, 1, 3, 4, 6]], predicted[:, [0, 1, 3, 4, 6]])


def test_high_top_is_clipped_one_beam_spacing_above_roof():
    predicted = _box(GROUND + 0.05, 1.9)  # top 45 cm above the roof
    bottom, top = _bottom_top(refine_vertical(_scene(), predicted, beam_spacing_deg=0.33))
    gap = math.hypot(CAR[0], CAR[1]) * math.tan(math.radians(0.33))
    assert bottom == pytest.approx(GROUND, abs=1e-5)
    assert top == pytest.approx(ROOF + gap, abs=1e-5)


def test_top_within_the_allowed_interval_is_kept():
    predicted = _box(GROUND, 1.53)
    _, top = _bottom_top(refine_vertical(_scene(), predicted))
    assert top == pytest.approx(GROUND + 1.53, abs=1e-5)


def test_ground_far_from_the_prediction_is_not_trusted():
    predicted = _box(GROUND + 0.5, 1.2)  # 0.5 m above the ground: beyond the 0.3 m tolerance at 15 m
    bottom, _ = _bottom_top(refine_vertical(_scene(), predicted))
    assert bottom == pytest.approx(GROUND + 0.5, abs=1e-5)
    bottom, _ = _bottom_top(refine_vertical(_scene(), _box(GROUND + 0.29, 1.2)))
    assert bottom == pytest.approx(GROUND, abs=1e-5)


def test_ground_tolerance_grows_with_range():
    boxes = torch.tensor([[10.0, 0.0, -1.0, 4.0, 1.8, 1.5, 0.0], [30.0, 40.0, -1.0, 4.0, 1.8, 1.5, 0.0],
                          [-20.0, 0.0, -1.0, 4.0, 1.8, 1.5, 0.0]])
    torch.testing.assert_close(ground_tolerances(boxes), torch.tensor([0.3, 0.45, 0.3]), rtol=0, atol=1e-7)


def test_crown_above_the_car_is_not_its_top():
    predicted = _box(GROUND, 1.3)
    _, top = _bottom_top(refine_vertical(_scene(with_crown=True), predicted, max_top_shift=0.5))
    assert top == pytest.approx(ROOF - 0.02, abs=1e-5)


def test_thin_evidence_keeps_the_prediction():
    predicted = _box(GROUND - 0.1, 1.3, x=-15.0)  # nothing there: no ring, no returns
    torch.testing.assert_close(refine_vertical(_scene(), predicted), predicted, rtol=0, atol=0)
    assert refine_vertical(_scene(), torch.zeros(0, 7)).shape == (0, 7)


def test_ground_offsets():
    boxes = torch.cat([_box(GROUND - 0.15, 1.5), _box(GROUND + 0.5, 1.2), _box(GROUND, 1.5, x=-15.0)])
    offsets = ground_offsets(_scene(), boxes)
    torch.testing.assert_close(offsets[:2], torch.tensor([0.15, -0.5]), atol=1e-5, rtol=0)
    assert offsets[2].isnan()  # no ring: unknown


def _detectors(**extra) -> tuple[SecondDetector, SecondDetector]:
    """A random tiny detector without and with the refinement (same weights), eval mode."""
    torch.manual_seed(0)
    post = PostProcessSettings(score_thresh=extra.pop("score_thresh", 0.0), nms_post_max=500)
    options = dict(class_names=["Car"], point_cloud_range=[0.0, -12.8, -3.0, 25.6, 12.8, 1.0],
                   voxels=VoxelSettings(size=(0.2, 0.2, 0.2)),
                   backbone=BackboneSettings(channels=(4, 4, 4, 4, 8), z_paddings=(1, 1, 1), bev_layer_nums=(1, 1),
                                             bev_num_filters=(8, 8), bev_num_upsample_filters=(8, 8)),
                   anchors=AnchorSettings(sizes=((3.9, 1.6, 1.56),), bottom_heights=(-1.78,), matched_thresholds=(0.6,),
                                          unmatched_thresholds=(0.45,)))
    plain = SecondDetector(**options, postprocess=post).eval()
    refined = SecondDetector(**options, postprocess=dataclasses.replace(post, vertical_refinement=True, **extra)).eval()
    refined.load_state_dict(plain.state_dict())
    return plain, refined


def _scene_in_range() -> tuple[torch.Tensor, torch.Tensor]:
    """The scene with a terrace 0.6 m high at y < -6 m (boxes there are off the ground), within the model's range."""
    points = _scene()
    points[points[:, 1] < -6.0, 2] += 0.6
    points = points[(points[:, 0] < 25.6) & (points[:, 1].abs() < 12.8)]
    return points, torch.zeros(len(points), dtype=torch.long)


def test_model_applies_it_only_when_asked():
    plain, refined = _detectors()
    points, batch = _scene_in_range()
    with torch.no_grad():
        preds = plain(points, batch, 1)
        before = plain.detect(preds)[0].boxes
        after = refined.detect(preds, points, batch)[0].boxes
        with pytest.raises(ValueError, match="vertical_refinement needs the frames' points"):
            refined.detect(preds)
    torch.testing.assert_close(after, refine_vertical(points, before), rtol=0, atol=0)
    assert torch.equal(after[:, [0, 1, 3, 4, 6]], before[:, [0, 1, 3, 4, 6]])
    assert not torch.equal(after, before)


@pytest.mark.parametrize("factor", [0.0, 0.5])
def test_model_scales_scores_of_off_ground_boxes(factor):
    plain, refined = _detectors(off_ground_score_factor=factor, score_thresh=1e-3)  # the random model scores ~1e-2
    points, batch = _scene_in_range()
    with torch.no_grad():
        preds = plain(points, batch, 1)
        before = plain.detect(preds)[0]
        after = refined.detect(preds, points, batch)[0]
    off = ground_offsets(points, before.boxes).abs() > ground_tolerances(before.boxes)
    assert off.any() and (~off).any()  # boxes at anchor height -1.78 m: on the terrace, off
    expected = torch.where(off, before.scores * factor, before.scores)
    keep = expected >= 1e-3
    assert torch.equal(after.scores, expected[keep].sort(descending=True).values)
    assert len(after) == int(keep.sum()) and (len(after) < len(before)) == (factor == 0)
