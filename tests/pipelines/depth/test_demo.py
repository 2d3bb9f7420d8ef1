"""The depth stage of ``geo3d demo`` (with a 3-second training budget): its report section, the baselines'
numbers against an independent recomputation, the model against a constant prediction, and the pictures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from geo3d.report import StageResult
from pipelines.depth.data import DepthFrames
from pipelines.depth.demo import DEMO_PATTERNS, run_stage


def _rmse_m(pred: np.ndarray, gt: np.ndarray, cap: float = 80.0) -> float:
    """RMSE in metres over the pixels with ground truth in (1 mm, cap], the prediction clamped to [1 mm, cap]."""
    valid = (gt > 1e-3) & (gt <= cap)
    return float(np.sqrt(np.mean((np.clip(pred[valid], 1e-3, cap) - gt[valid]) ** 2)))


def test_depth_stage_reports_every_method_and_pattern(tmp_path):
    out = tmp_path / "depth"
    result = run_stage(out, seconds=3)
    assert isinstance(result, StageResult) and result.title == "depth"
    metrics = result.metrics
    assert metrics["train_steps"] >= 1
    # the held-out inputs again (fixed seeds): nearest recomputed with a KD-tree, and a constant prediction
    held_out = DepthFrames(out / "val", DEMO_PATTERNS, repeat=True)
    nearest, constant = {}, {}
    for i in range(len(held_out)):
        item = held_out[i]
        sparse, gt = item["sparse"][0].numpy(), item["gt"][0].numpy()
        ys, xs = np.nonzero(sparse > 0)
        grid = np.stack(np.meshgrid(np.arange(sparse.shape[0]), np.arange(sparse.shape[1]), indexing="ij"), -1)
        index = cKDTree(np.stack([ys, xs], 1)).query(grid.reshape(-1, 2))[1]
        filled = sparse[ys, xs][index].reshape(sparse.shape)
        nearest.setdefault(item["pattern"], []).append(_rmse_m(filled, gt))
        constant.setdefault(item["pattern"], []).append(_rmse_m(np.full_like(gt, np.median(sparse[ys, xs])), gt))
    for pattern in DEMO_PATTERNS:
        for method in ("nearest", "linear", "ip_basic", "model"):
            assert math.isfinite(metrics[f"rmse_m/{pattern}/{method}"])
        # equidistant samples may be broken differently by the two nearest-neighbour searches: a few mm at most
        assert metrics[f"rmse_m/{pattern}/nearest"] == pytest.approx(np.mean(nearest[pattern]), abs=0.02)
        assert metrics[f"rmse_m/{pattern}/model"] < np.mean(constant[pattern])
    assert [png.name for png in result.images][:1] == ["synthetic_lidar16.png"]
    for png in result.images:
        assert png.parent == out and png.is_relative_to(out.parent)  # under the report folder
        with Image.open(png) as im:
            assert im.width >= 320 and im.height > 4 * 96  # image + sparse + completion + truth + error panels
    if "kitti" not in metrics:  # the shared KITTI frame was there: IP-Basic's number of the README's benchmark
        assert metrics["kitti_rmse_m/ip_basic"] == pytest.approx(2.196, abs=0.001)
        assert [png.name for png in result.images][1:] == ["kitti_model.png", "kitti_ip_basic.png"]
