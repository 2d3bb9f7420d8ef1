"""Depth metrics against a per-pixel Python-loop reference, hand examples, and the KITTI-DC averaging/crop rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.metrics import depth_metrics, format_depth_metrics

KEYS = ("rmse_mm", "mae_mm", "irmse_1km", "imae_1km", "rel", "delta1", "delta2", "delta3")


def _loop_reference(pred, gt, max_depth=None, min_depth=1e-3, crop=None) -> dict[str, float]:
    """Written independently: plain Python loops over (B, H, W) nested lists, one image at a time."""
    pred, gt = np.asarray(pred, dtype=np.float64).tolist(), np.asarray(gt, dtype=np.float64).tolist()
    per_image = {k: [] for k in KEYS}
    total = 0
    for b in range(len(gt)):
        height, width = len(gt[b]), len(gt[b][0])
        top, bottom, left, right = crop if crop is not None else (0, height, 0, width)
        se = ae = ise = iae = rel = 0.0
        d1 = d2 = d3 = 0
        n = 0
        for i in range(top, bottom):
            for j in range(left, right):
                g = gt[b][i][j]
                if not g > min_depth or (max_depth is not None and g > max_depth):
                    continue
                p = max(pred[b][i][j], min_depth)
                if max_depth is not None:
                    p = min(p, max_depth)
                n += 1
                se += (p - g) ** 2
                ae += abs(p - g)
                ise += (1000.0 / p - 1000.0 / g) ** 2
                iae += abs(1000.0 / p - 1000.0 / g)
                rel += abs(p - g) / g
                r = max(p / g, g / p)
                d1 += r < 1.25
                d2 += r < 1.25**2
                d3 += r < 1.25**3
        total += n
        values = (math.sqrt(se / n) * 1000, ae / n * 1000, math.sqrt(ise / n), iae / n, rel / n, d1 / n, d2 / n, d3 / n)
        for k, v in zip(KEYS, values):
            per_image[k].append(v)
    out = {k: sum(v) / len(v) for k, v in per_image.items()}
    out["pixels"] = total
    return out


def _random_pair(b=3, h=5, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, h, w, generator=g, dtype=torch.float64) * 30 + 0.5
    gt[torch.rand(b, h, w, generator=g) < 0.3] = 0  # missing
    pred = gt.clone() * (1 + 0.4 * (torch.rand(b, h, w, generator=g, dtype=torch.float64) - 0.5)) + 0.3
    pred[torch.rand(b, h, w, generator=g) < 0.15] = 0  # below min_depth: clamped
    pred[0, 0, 0], gt[0, 0, 0] = 50.0, 4.0  # above any max_depth used below: clamped
    return pred, gt


def _assert_match(m, ref):
    assert set(m) == set(KEYS) | {"pixels"}
    for k in KEYS:
        assert m[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-9), k
    assert m["pixels"] == ref["pixels"]


@pytest.mark.parametrize("max_depth", [None, 20.0])
def test_matches_the_loop_reference_float64(max_depth):
    pred, gt = _random_pair()
    _assert_match(depth_metrics(pred, gt, max_depth=max_depth), _loop_reference(pred, gt, max_depth=max_depth))


def test_crop_matches_the_loop_reference_and_slicing():
    pred, gt = _random_pair(b=2, h=8, w=9, seed=1)
    crop = (2, 7, 1, 6)
    m = depth_metrics(pred, gt, max_depth=25.0, crop=crop)
    _assert_match(m, _loop_reference(pred, gt, max_depth=25.0, crop=crop))
    sliced = depth_metrics(pred[:, 2:7, 1:6], gt[:, 2:7, 1:6], max_depth=25.0)
    for k in m:
        assert m[k] == pytest.approx(sliced[k], rel=1e-12)
    assert m["pixels"] == int((gt[:, 2:7, 1:6] > 1e-3).logical_and(gt[:, 2:7, 1:6] <= 25).sum())


def test_averages_per_image_not_per_pixel():
    gt = torch.zeros(2, 4, 4, dtype=torch.float64)
    pred = torch.zeros(2, 4, 4, dtype=torch.float64)
    gt[0] = 10.0  # 16 pixels, error 1 m
    pred[0] = 11.0
    gt[1, 0, 0] = 10.0  # 1 pixel, error 3 m
    pred[1] = 13.0
    m = depth_metrics(pred, gt)
    assert m["mae_mm"] == pytest.approx(2000.0, rel=1e-12)  # (1 + 3) / 2, not (16 * 1 + 3) / 17
    assert m["rmse_mm"] == pytest.approx(2000.0, rel=1e-12)
    assert m["pixels"] == 17
    singles = [depth_metrics(pred[i], gt[i]) for i in range(2)]
    for k in KEYS:
        assert m[k] == pytest.approx((singles[0][k] + singles[1][k]) / 2, rel=1e-12)


def test_max_depth_excludes_gt_and_clamps_pred_by_hand():
    gt = torch.tensor([[2.0, 5.0, 20.0, 0.0]], dtype=torch.float64)
    pred = torch.tensor([[3.0, 50.0, 20.0, 7.0]], dtype=torch.float64)
    m = depth_metrics(pred, gt, max_depth=10.0)  # gt 20 excluded, 0 missing; pred 50 -> 10: errors 1, 5
    assert m["pixels"] == 2
    assert m["rmse_mm"] == pytest.approx(math.sqrt((1 + 25) / 2) * 1000, rel=1e-12)
    assert m["mae_mm"] == pytest.approx(3000.0, rel=1e-12)
    assert m["rel"] == pytest.approx((1 / 2 + 5 / 5) / 2, rel=1e-12)
    assert m["irmse_1km"] == pytest.approx(math.sqrt(((1000 / 3 - 500) ** 2 + (100 - 200) ** 2) / 2), rel=1e-12)
    # ratios 1.5 and 2: 1.25 < 1.5 < 1.5625 = 1.25^2, and 2 > 1.953 = 1.25^3
    assert (m["delta1"], m["delta2"], m["delta3"]) == (0.0, 0.5, 0.5)
    free = depth_metrics(pred, gt)  # no max: 3 pixels, pred 50 kept
    assert free["pixels"] == 3
    assert free["mae_mm"] == pytest.approx((1 + 45 + 0) / 3 * 1000, rel=1e-12)


def test_perfect_prediction_and_shape_variants():
    pred, gt = _random_pair(b=2, seed=3)
    perfect = depth_metrics(gt.clone(), gt)
    for k in ("rmse_mm", "mae_mm", "irmse_1km", "imae_1km", "rel"):
        assert perfect[k] == 0.0
    assert perfect["delta1"] == 1.0
    batched = depth_metrics(pred, gt)
    four_d = depth_metrics(pred[:, None], gt[:, None])
    assert batched == four_d
    assert depth_metrics(pred[1], gt[1]) == depth_metrics(pred[1:2], gt[1:2])
    f32 = depth_metrics(pred.float(), gt.float())
    assert f32["rmse_mm"] == pytest.approx(batched["rmse_mm"], rel=1e-5)


def test_errors():
    pred, gt = _random_pair(b=2)
    with pytest.raises(ValueError, match="shapes differ"):
        depth_metrics(pred, gt[:, :4])
    with pytest.raises(ValueError, match=r"\(H, W\), \(B, H, W\) or \(B, 1, H, W\)"):
        depth_metrics(pred[:, None].expand(2, 3, 5, 7), gt[:, None].expand(2, 3, 5, 7))
    empty = gt.clone()
    empty[1] = 0
    with pytest.raises(ValueError, match=r"image\(s\) \[1\] have no valid ground-truth pixel"):
        depth_metrics(pred, empty)
    with pytest.raises(ValueError, match="no valid ground-truth pixel"):
        depth_metrics(pred, gt, max_depth=0.01)
    with pytest.raises(ValueError, match="crop"):
        depth_metrics(pred, gt, crop=(3, 3, 0, 7))
    with pytest.raises(ValueError, match="crop"):
        depth_metrics(pred, gt, crop=(0, 6, 0, 7))


def test_format_is_one_line():
    pred, gt = _random_pair()
    line = format_depth_metrics(depth_metrics(pred, gt))
    assert "\n" not in line
    assert line.startswith("RMSE ") and " mm" in line and "1/km" in line and line.endswith(" px")
