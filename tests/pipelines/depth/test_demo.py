"""The depth stage of ``geo3d demo`` (with a 3-second training budget): metrics for every method and pattern, and
the comparison pictures."""

from __future__ import annotations

from PIL import Image

from pipelines.depth.demo import DEMO_PATTERNS, run_depth_demo


def test_depth_demo_reports_every_method_and_pattern(tmp_path):
    result = run_depth_demo(tmp_path, seconds=3)
    metrics = result["metrics"]
    assert metrics["train_steps"] >= 1
    for pattern in DEMO_PATTERNS:
        for method in ("nearest", "linear", "ip_basic", "model"):
            assert 0 < metrics[f"rmse_m/{pattern}/{method}"] < 80
    assert result["images"][0].name == "synthetic_lidar16.png"
    for png in result["images"]:
        with Image.open(png) as im:
            assert im.width >= 320 and im.height > 4 * 96  # image + sparse + completion + truth + error panels
    if "kitti" not in metrics:  # the shared KITTI frame was there
        assert 0 < metrics["kitti_rmse_m/ip_basic"] < 5 and metrics["kitti_model_seconds"] > 0
