"""The detection stage of ``geo3d demo`` (``run_stage``) on a few generated frames with a tiny time budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import pipelines.detection.demo as detection_demo
from geo3d.io.kitti import objects_to_boxes_lidar, read_frame, read_label
from geo3d.report import StageResult
from ops.boxes import boxes_iou_bev
from pipelines.detection.kitti_eval import kitti_eval

REAL_FRAMES = ("000001", "000003", "000004")


@pytest.fixture(scope="module")
def stage(synth_kitti, tmp_path_factory) -> tuple:
    """One stage run without the shared data: trains for 3 s on the fixture set (``report/detection``)."""
    report = tmp_path_factory.mktemp("report")
    fast = detection_demo.run_detection_demo
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(detection_demo, "_real_kitti_dir", lambda: None)  # as for a user without the shared data
        mp.setattr(detection_demo, "run_detection_demo",
                   lambda out, **kw: fast(out, data_dir=synth_kitti, **{"max_minutes": 0.05, **kw}))
        result = detection_demo.run_stage(report / "detection", max_minutes=0.05)
    return report, result


def test_stage_trains_evaluates_and_renders_a_validation_frame(stage, synth_kitti):
    report, result = stage
    assert isinstance(result, StageResult) and result.title == "detection"
    assert (report / "detection" / "second_tiny.ckpt").is_file()
    assert "trained for" in result.text and "real-scan report was skipped" in result.text
    assert result.metrics["val_frames"] == 3
    # The stage's APs are the KITTI evaluation of its detections: recomputed here from the result files it wrote.
    val_results = report / "detection" / "val_results"
    frame_ids = sorted(p.stem for p in val_results.glob("*.txt"))
    assert frame_ids == ["000004", "000005", "000006"]
    labels = synth_kitti / "training" / "label_2"
    expected = kitti_eval([read_label(labels / f"{i}.txt") for i in frame_ids],
                          [read_label(val_results / f"{i}.txt") for i in frame_ids], classes=("Car",))
    reported = {k: v for k, v in result.metrics.items() if k.startswith("Car_")}
    assert len(reported) == 6 and reported == pytest.approx({k: expected[k] for k in reported}, abs=1e-4)
    # the render: the validation frame with the most cars, ground-truth boxes drawn in green, under the report folder
    (val_png,) = [p for p in result.images if p.name.startswith("detection_val_")]
    assert val_png.parent == report and val_png.is_file()
    image = np.asarray(Image.open(val_png).convert("RGB")).astype(int)
    green = (image[..., 1] > 150) & (image[..., 0] < 100) & (image[..., 2] < 120)
    assert green.sum() > 50
    assert all(p.is_file() and p.is_relative_to(report) for p in result.images)


def test_stage_reuses_the_checkpoint_and_reports_the_real_frames(stage, synth_kitti, shared_data, monkeypatch):
    report, _ = stage
    real = shared_data / "kitti"
    monkeypatch.setattr(detection_demo, "_real_kitti_dir", lambda: real)
    fast = detection_demo.run_detection_demo
    monkeypatch.setattr(detection_demo, "run_detection_demo", lambda out, **kw: fast(out, data_dir=synth_kitti))
    result = detection_demo.run_stage(report / "detection")
    assert "loaded from" in result.text and (report / "detection_real_000001.png") in result.images
    assert "Real-scan report on 3 real KITTI frames" in result.text and "false positives at score >= 0.3" in result.text
    metrics = result.metrics
    per_frame = [metrics[f"real_{i}_false_positives"] for i in REAL_FRAMES]
    assert metrics["real_false_positives_score0.3"] == sum(per_frame)
    for frame_id in REAL_FRAMES:
        assert report / "detection" / "real_scans" / "bev" / f"{frame_id}.png" in result.images
    # Cars found, recomputed from the KITTI result files the stage wrote: in-range Car/Van labels with a result box
    # of score >= 0.3 at BEV IoU >= 0.5.
    found = in_range = 0
    for frame_id in REAL_FRAMES:
        frame = read_frame(real, frame_id)
        cars = objects_to_boxes_lidar(frame.objects, frame.calib, ("Car", "Van")).boxes
        inside = (cars[:, 0] >= 0) & (cars[:, 0] < 51.2) & (cars[:, 1].abs() < 25.6)
        results = [o for o in read_label(report / "detection" / "real_kitti_results" / f"{frame_id}.txt")
                   if o.score >= 0.3]
        preds = objects_to_boxes_lidar(results, frame.calib, ("Car",)).boxes
        hit = (boxes_iou_bev(cars, preds).max(1).values >= 0.5 if len(preds) and len(cars)
               else torch.zeros(len(cars), dtype=torch.bool))
        assert metrics[f"real_{frame_id}_cars_found"] == int((hit & inside).sum())
        found, in_range = found + int((hit & inside).sum()), in_range + int(inside.sum())
    assert in_range == metrics["real_cars_in_range"] == 2 and metrics["real_cars_found"] == found
