"""The detection stage of ``geo3d demo`` (``run_stage``) on zoo weights: the held-out frames are the first frames of
the card's set, its AP is the one ``geo3d validate`` gives for the same weights, and the real-scan counts are the
report's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytorch_lightning as pl
from PIL import Image

import pipelines.detection.demo as detection_demo
from geo3d.io.kitti import read_label
from geo3d.report import StageResult
from geo3d.synth.kitti import generate_kitti
from pipelines.detection.data import KittiDataModule
from pipelines.detection.kitti_eval import kitti_eval
from tests.demo_zoo import tiny_detector, write_zoo

REPO = detection_demo.REPO
FRAMES = 2  # held-out frames in the stage's test run


def _files(root, frame_id: str) -> dict[str, bytes]:
    base = root / "training"
    return {kind: (base / kind / f"{frame_id}.{ext}").read_bytes()
            for kind, ext in (("velodyne", "bin"), ("label_2", "txt"), ("calib", "txt"))}


def test_the_first_held_out_frames_do_not_depend_on_the_count(tmp_path):
    few = generate_kitti(tmp_path / "few", frames=0, val_frames=1, seed=detection_demo.HELD_OUT_SEED, workers=1,
                         image=False, progress=False)
    more = generate_kitti(tmp_path / "more", frames=0, val_frames=2, seed=detection_demo.HELD_OUT_SEED, workers=1,
                          image=False, progress=False)
    assert _files(few, "000000") == _files(more, "000000")
    assert _files(more, "000001") != _files(more, "000000")
    benchmark = REPO / "data" / "synth_kitti_seed1"  # the card's 120 frames, where they were generated here
    if (benchmark / "training" / "velodyne" / "000000.bin").is_file():
        assert _files(few, "000000") == _files(benchmark, "000000")


@pytest.fixture(scope="module")
def detector():
    return tiny_detector()


def _geo3d_validate(model, data_dir) -> dict[str, float]:
    """``geo3d validate``'s metrics of ``model`` on ``data_dir``'s validation split."""
    data = KittiDataModule(str(data_dir), class_names=model.class_names, point_cloud_range=model.point_cloud_range)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(model, datamodule=data, verbose=False)
    return metrics


def test_stage_ap_is_geo3d_validates_beside_the_card(detector, tmp_path, monkeypatch):
    reference = generate_kitti(tmp_path / "reference", frames=0, val_frames=FRAMES, seed=1, workers=1,
                               progress=False)
    expected = _geo3d_validate(detector, reference)
    metric = detection_demo.card_subset_metric(FRAMES)
    cards = {"second_car": {metric: (expected["val/Car_3d_R40_moderate"], 1e-6)}}
    monkeypatch.setenv("GEO3D_ZOO_DIR", str(write_zoo(tmp_path / "zoo", {"second_car": detector}, cards)))
    monkeypatch.setattr(detection_demo, "_real_kitti_dir", lambda: None)  # as for a user without the shared data

    report = tmp_path / "report"
    result = detection_demo.run_stage(report / "detection", frames=FRAMES)
    assert isinstance(result, StageResult) and result.title == "detection"
    assert "real-scan report was skipped" in result.text and "no training here" in result.text
    metrics = result.metrics
    assert metrics["val_frames"] == FRAMES
    for key in detection_demo.REPORTED:
        assert metrics[key] == pytest.approx(expected[f"val/{key}"], abs=1e-6)
    # ... and the KITTI evaluation of the result files the stage wrote
    results = report / "detection" / "heldout_results"
    labels = report / "detection" / "synth_kitti_seed1" / "training" / "label_2"
    ids = sorted(p.stem for p in results.glob("*.txt"))
    assert ids == [f"{i:06d}" for i in range(FRAMES)]
    again = kitti_eval([read_label(labels / f"{i}.txt") for i in ids], [read_label(results / f"{i}.txt") for i in ids],
                       classes=("Car",))
    assert metrics["Car_3d_R40_moderate"] == pytest.approx(again["Car_3d_R40_moderate"], abs=1e-4)
    (check,) = result.card
    assert (check.model, check.metric, check.agrees) == ("second_car", metric, True)
    # the held-out frame's bird's-eye view: labelled cars drawn green
    (picture,) = result.images
    assert picture == report / "detection_heldout.png"
    image = np.asarray(Image.open(picture).convert("RGB")).astype(int)
    assert ((image[..., 1] > 200) & (image[..., 0] < 60) & (image[..., 2] < 60)).sum() > 50


def test_stage_reports_the_real_frames_beside_the_card(detector, shared_data, tmp_path, monkeypatch):
    real = shared_data / "kitti"
    cards = {"second_car": {"real KITTI cars in range": (2, 0.0), "real KITTI cars found": (99, 0.0)}}
    monkeypatch.setenv("GEO3D_ZOO_DIR", str(write_zoo(tmp_path / "zoo", {"second_car": detector}, cards)))
    monkeypatch.setattr(detection_demo, "_real_kitti_dir", lambda: real)
    result = detection_demo.run_stage(tmp_path / "report" / "detection", frames=1)
    saved = json.loads((tmp_path / "report" / "detection" / "real_scans" / "real_scans.json").read_text())
    metrics = result.metrics
    assert "Real-scan report on 3 real KITTI frames" in result.text
    assert metrics["real_cars_in_range"] == saved["total"]["cars_in_range"] == 2
    assert metrics["real_cars_found"] == saved["total"]["cars_found"]
    assert metrics["real_false_positives_score0.3"] == saved["total"]["false_positives"]
    assert metrics["real_frame_inference_s"] > 0
    assert [p.name for p in result.images[1:]] == ["000001.png", "000003.png", "000004.png"]
    checks = {c.metric: c for c in result.card}
    assert checks["real KITTI cars in range"].agrees is True
    assert checks["real KITTI cars found"].agrees is False  # 99 on this card: a difference is reported as one
    assert checks["real KITTI false positives (score >= 0.3)"].card is None
