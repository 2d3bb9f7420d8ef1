"""The detection stage of ``geo3d demo`` on a few generated frames with a tiny time budget."""

from __future__ import annotations

from pipelines.detection.demo import run_detection_demo


def test_demo_trains_evaluates_and_reuses_the_checkpoint(synth_kitti, tmp_path):
    result = run_detection_demo(tmp_path, data_dir=synth_kitti, max_minutes=0.05)
    assert result["checkpoint"].is_file()
    assert result["metrics"]["val_frames"] == 3
    assert 0 <= result["metrics"]["Car_3d_R40_moderate"] <= 100
    assert "trained for" in result["text"]
    for image in result["images"]:
        assert image.is_file() and image.is_relative_to(tmp_path)
    again = run_detection_demo(tmp_path, data_dir=synth_kitti)
    assert "loaded from" in again["text"]
