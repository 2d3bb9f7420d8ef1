"""The detection stage of ``geo3d demo`` on a few generated frames with a tiny time budget."""

from __future__ import annotations

import numpy as np
from PIL import Image

import geo3d.cli.demo as cli_demo
import pipelines.detection.demo as detection_demo
from pipelines.detection.demo import run_detection_demo


def test_demo_trains_evaluates_and_reuses_the_checkpoint(synth_kitti, tmp_path, monkeypatch):
    monkeypatch.setattr(detection_demo, "_real_kitti_dir", lambda: None)  # as for a user without the shared data
    result = run_detection_demo(tmp_path, data_dir=synth_kitti, max_minutes=0.05)
    assert result["checkpoint"].is_file()
    assert result["metrics"]["val_frames"] == 3
    assert 0 <= result["metrics"]["Car_3d_R40_moderate"] <= 100
    assert "trained for" in result["text"]
    assert "real-scan report was skipped" in result["text"] and result["real_report"] is None
    assert sorted(p.name for p in result["val_results"].glob("*.txt")) == ["000004.txt", "000005.txt", "000006.txt"]
    for image in result["images"]:
        assert image.is_file() and image.is_relative_to(tmp_path)
    again = run_detection_demo(tmp_path, data_dir=synth_kitti)
    assert "loaded from" in again["text"]


def test_cli_stage_renders_a_validation_frame_with_both_box_sets(synth_kitti, tmp_path, monkeypatch, shared_data):
    real = shared_data / "kitti"
    monkeypatch.setattr(detection_demo, "_real_kitti_dir", lambda: real if real.is_dir() else None)
    fast = run_detection_demo  # the real stage on the small fixture set, a few seconds of training
    monkeypatch.setattr(detection_demo, "run_detection_demo",
                        lambda out, **kw: fast(out, data_dir=synth_kitti, max_minutes=0.05))
    report = cli_demo.Report(tmp_path)
    cli_demo.stage_detection(tmp_path, report, minutes=None)
    val_pngs = sorted(tmp_path.glob("detection_val_*.png"))
    assert len(val_pngs) == 1
    image = np.asarray(Image.open(val_pngs[0]).convert("RGB")).astype(int)
    green = (image[..., 1] > 150) & (image[..., 0] < 100) & (image[..., 2] < 120)
    assert green.sum() > 50  # ground-truth boxes are drawn
    text = (tmp_path / "report.md").read_text()
    assert val_pngs[0].name in text
    if real.is_dir():
        assert (tmp_path / "detection_real_000001.png").is_file() and "detection_real_000001.png" in text
        # the real-scan report: its counts in the text and metrics, one BEV picture per real frame
        assert "Real-scan report on 3 real KITTI frames" in text and "false positives at score >= 0.3" in text
        metrics = cli_demo.json.loads((tmp_path / "metrics.json").read_text())["detection"]
        assert metrics["real_cars_in_range"] == 2 and 0 <= metrics["real_cars_found"] <= 2
        per_frame = [metrics[f"real_{i}_false_positives"] for i in ("000001", "000003", "000004")]
        assert metrics["real_false_positives_score0.3"] == sum(per_frame)
        for frame_id in ("000001", "000003", "000004"):
            assert f"real_scans/bev/{frame_id}.png" in text
