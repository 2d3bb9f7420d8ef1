"""The real-scan report (``predict.py``): counting rules on a hand-made frame, the files it writes, the script, bad
input, and loading checkpoints, also those of the old flat settings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from geo3d.errors import InputError
from geo3d.io.kitti import KittiObject, find_kitti_frames, objects_to_boxes_lidar, read_frame
from geo3d.types import Boxes3D
from pipelines.detection.demo import tiny_config
from pipelines.detection.module import SecondDetector
from pipelines.detection.predict import (
    FP_COLOR,
    MATCH_COLOR,
    classify_frame,
    evaluate_real_frames,
    load_detector,
)
from tests.scripts import load_script

from .conftest import CALIB, car_label

RANGE = [0.0, -25.6, -3.0, 51.2, 25.6, 1.0]
DONTCARE = KittiObject("DontCare", -1, -1, -10, (100.0, 100.0, 300.0, 300.0), (-1, -1, -1), (-1000, -1000, -1000),
                       -10)


def _script(name: str):
    return load_script(name)


def _along(box: torch.Tensor, d: float) -> torch.Tensor:
    """The box moved ``d`` metres along its own heading (IoU with the original: (l - d) / (l + d))."""
    out = box.clone()
    out[0] += d * math.cos(float(box[6]))
    out[1] += d * math.sin(float(box[6]))
    return out


def test_classify_frame_sorts_every_prediction_by_the_documented_rules():
    annos = [car_label(15.0, 0.0), car_label(30.0, 5.0, kind="Van"), car_label(20.0, -8.0, kind="Truck"),
             car_label(60.0, 0.0), DONTCARE]
    gt = objects_to_boxes_lidar(annos, CALIB, ("Car", "Van", "Truck")).boxes
    car, van, truck, far_car = gt  # file order
    assert float(far_car[0]) == pytest.approx(60.0, abs=1e-4) and float(van[0]) == pytest.approx(30.0, abs=1e-4)
    side = car.clone()
    side[:2] = torch.tensor([10.0, 20.0])  # 63 degrees off the camera axis (the view's half-angle is 41)
    preds = torch.stack([
        _along(car, 1.0),     # IoU 2.9 / 4.9 = 0.59: match, the car is found
        _along(van, 1.4),     # IoU 2.5 / 5.3 = 0.47: not a match, so a false positive; the van is missed
        truck,                # on the Truck label: a false positive that names it
        side,                 # out of the camera's view
        car + torch.tensor([10.0, -3.0, 0, 0, 0, 0, 0]),  # free space in view at (25, -3): a false positive
        _along(car, -6.0),    # free space in view at (15, 6), its 2D box inside the DontCare region
        _along(car, 0.5),     # a second match of the same car, score below the threshold: left out
        _along(far_car, 0.0),  # on the 60 m car: centre out of range, left out
    ])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.2, 0.9])
    bbox = np.tile([600.0, 150.0, 700.0, 250.0], (8, 1))
    bbox[5] = [150.0, 150.0, 250.0, 400.0]  # 100 x 250 box, 100 x 150 of it inside DontCare: 0.6 >= 0.5
    record = classify_frame(preds, scores, bbox, annos, CALIB, (1242, 375), RANGE, score_thresh=0.3, iou_thresh=0.5)
    kinds = [p["kind"] for p in record["predictions"]]
    assert kinds == ["match", "false_positive", "false_positive", "out_of_view", "false_positive", "in_dontcare"]
    assert [p["overlaps"] for p in record["predictions"]] == [None, "Van", "Truck", None, None, None]
    assert [p["score"] for p in record["predictions"]] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert (record["cars_in_range"], record["cars_found"], record["false_positives"], record["out_of_view"],
            record["in_dontcare"], record["matches"], record["detections"]) == (2, 1, 3, 1, 1, 1, 6)
    by_x = {round(c["x"]): c for c in record["cars"]}
    assert by_x[15]["found"] and by_x[15]["best_iou"] == pytest.approx(2.9 / 4.9, abs=1e-3)
    assert not by_x[30]["found"] and by_x[30]["best_iou"] == pytest.approx(2.5 / 5.3, abs=1e-3)
    assert not by_x[60]["in_range"] and by_x[60]["type"] == "Car" and by_x[30]["type"] == "Van"
    # the same frame at IoU 0.45: the shifted van box becomes a match and the van is found
    loose = classify_frame(preds, scores, bbox, annos, CALIB, (1242, 375), RANGE, score_thresh=0.3, iou_thresh=0.45)
    assert (loose["cars_found"], loose["false_positives"], loose["matches"]) == (2, 2, 2)


def _tiny_model() -> SecondDetector:
    model_args, _ = tiny_config("unused")
    return SecondDetector(**model_args)


def _fake_predict(model: SecondDetector, extra_xy: tuple[float, float]):
    """A predict_step that returns the frame's in-range Car labels (score 0.9) and one extra box (score 0.5)."""
    from geo3d.io.kitti import boxes_lidar_to_objects

    def predict_step(batch, batch_idx):
        cars = objects_to_boxes_lidar(batch["annos"][0], batch["calib"][0], ("Car",)).boxes
        extra = torch.tensor([[*extra_xy, -1.0, 3.9, 1.6, 1.5, 0.0]])
        boxes = torch.cat([cars, extra])
        det = Boxes3D(boxes, torch.zeros(len(boxes), dtype=torch.int64),
                      torch.tensor([0.9] * len(cars) + [0.5]), ("Car",))
        return [{"frame_id": batch["frame_id"][0], "boxes": det,
                 "objects": boxes_lidar_to_objects(det, batch["calib"][0], batch["image_size"][0])}]

    model.predict_step = predict_step
    return model


def test_evaluate_real_frames_writes_table_json_and_pictures(hand_kitti, tmp_path):
    model = _fake_predict(_tiny_model(), (25.0, 2.0))
    out = tmp_path / "report"
    report = evaluate_real_frames(model, hand_kitti / "training", out, progress=False)
    # each frame: a Car at 15 m (found), a Car at 150 m (out of range), one free-space box at score 0.5
    assert [f["frame_id"] for f in report["frames"]] == ["000000", "000001"]
    assert report["total"] == {"frames": 2, "cars_in_range": 2, "cars_found": 2, "false_positives": 2,
                               "out_of_view": 0, "in_dontcare": 0, "matches": 2, "detections": 4}
    assert model.hparams.postprocess.score_thresh == 0.1 and model.result_dir is None and model.training
    saved = json.loads((out / "real_scans.json").read_text())
    assert saved["total"] == report["total"] and saved["frames"][0]["cars"][0]["found"]
    text = (out / "real_scans.md").read_text()
    assert "| **total** | 2 / 2 | 2 | 0 | 0 | 2 | 4 |" in text and "not false" in text
    image = np.asarray(Image.open(out / "bev" / "000000.png").convert("RGB"))
    assert image.shape[1:] == (640, 3) and 640 < image.shape[0] < 720  # the BEV and the legend band below
    for color in (FP_COLOR, MATCH_COLOR):
        assert (image == np.array(color)).all(-1).sum() > 20
    # the parent folder works too; no output folder: nothing written
    again = evaluate_real_frames(model, hand_kitti, None, progress=False)
    assert again["total"] == report["total"] and all(f["image"] is None for f in again["frames"])


def test_evaluate_real_frames_on_the_shared_frames(shared_data, tmp_path):
    """The real frames with a stand-in model that returns their in-range cars: 2 of 2 found, 1 false positive."""
    kitti = shared_data / "kitti" / "training"
    model = _fake_predict(_tiny_model(), (20.0, 0.0))
    report = evaluate_real_frames(model, kitti, tmp_path, progress=False)
    in_range = 0
    for frame_id in ("000001", "000003", "000004"):  # independent count: Car/Van centres inside the x/y range
        frame = read_frame(kitti.parent, frame_id)
        boxes = objects_to_boxes_lidar(frame.objects, frame.calib, ("Car", "Van")).boxes
        in_range += int(((boxes[:, 0] >= 0) & (boxes[:, 0] < 51.2) & (boxes[:, 1].abs() < 25.6)).sum())
    assert in_range == 2
    assert report["total"]["cars_in_range"] == 2 and report["total"]["cars_found"] == 2
    # the extra box at (20, 0) is in view and in free space on every frame except where it hits a label
    assert report["total"]["false_positives"] + report["total"]["in_dontcare"] == 3
    assert len(list((tmp_path / "bev").glob("*.png"))) == 3


def test_bad_input_is_an_input_error(hand_kitti, tmp_path):
    with pytest.raises(InputError, match="not a KITTI object folder"):
        find_kitti_frames(hand_kitti / "training" / "calib")
    with pytest.raises(InputError, match="folder not found"):
        find_kitti_frames(tmp_path / "missing")
    (hand_kitti / "training" / "label_2" / "000001.txt").unlink()
    with pytest.raises(InputError, match="label_2"):
        evaluate_real_frames(_tiny_model(), hand_kitti, None, progress=False)
    with pytest.raises(ValueError, match="score_thresh"):
        evaluate_real_frames(_tiny_model(), hand_kitti, None, score_thresh=1.5)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.ckpt"):
        load_detector(bad)


def test_script_runs_a_checkpoint_and_fails_in_one_line(hand_kitti, tmp_path, capsys):
    import pytorch_lightning as pl

    model = _tiny_model()
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__}, ckpt)
    script = _script("detect_real")
    out = tmp_path / "out"
    assert script.main([str(ckpt), str(hand_kitti / "training"), "--out", str(out), "--score", "0.3"]) == 0
    report = json.loads((out / "real_scans.json").read_text())
    assert report["total"]["frames"] == 2 and report["total"]["cars_in_range"] == 2
    for key in ("false_positives", "cars_found", "detections"):
        assert report["total"][key] == sum(f[key] for f in report["frames"])
    assert "cars in range found" in capsys.readouterr().out
    assert script.main([str(tmp_path / "none.ckpt"), str(hand_kitti)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("detect_real: error:") and "none.ckpt" in err and "\n" not in err
    assert script.main([str(ckpt), str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


# The hyper-parameters of a checkpoint that `geo3d fit --config configs/detection/second_tiny_cpu.yaml` wrote before the
# settings were grouped (commit b019f9c, copied from its last.ckpt), and what they are in the grouped signature.
OLD_FLAT_HPARAMS = {
    "_class_path": "pipelines.detection.module.SecondDetector", "class_names": ["Car"],
    "point_cloud_range": [0.0, -25.6, -3.0, 51.2, 25.6, 1.0], "voxel_size": [0.16, 0.16, 0.2],
    "max_points_per_voxel": 5, "max_voxels_train": 16000, "max_voxels_eval": 40000, "num_point_features": 4,
    "vfe": "mean", "vfe_filters": [32, 64], "backbone_channels": [16, 32, 32, 32, 64], "backbone_z_paddings": [1, 1, 1],
    "bev_layer_nums": [2, 2], "bev_layer_strides": [1, 2], "bev_num_filters": [64, 64], "bev_upsample_strides": [2, 4],
    "bev_num_upsample_filters": [64, 64], "bn_momentum": 0.1, "anchor_sizes": [[3.9, 1.6, 1.56]],
    "anchor_bottom_heights": [-1.78], "anchor_rotations": [0.0, 1.57079633], "matched_thresholds": [0.6],
    "unmatched_thresholds": [0.45], "angle_encoding": "residual", "num_dir_bins": 2, "dir_offset": 0.78539816,
    "loss_weights": [1.0, 2.0, 0.2], "code_weights": None, "hard_negative_weight": 4.0, "hard_negative_score": 0.2,
    "lr": 0.003, "weight_decay": 0.01, "div_factor": 10.0, "pct_start": 0.4, "score_thresh": 0.1, "nms_thresh": 0.01,
    "nms_pre_max": 1000, "nms_post_max": 100, "per_class_nms": False, "vertical_refinement": True,
    "off_ground_score_factor": 0.0, "eval_classes": None, "_instantiator": "pytorch_lightning.cli.instantiate_module",
}


@pytest.mark.parametrize("written_by", ["cli", "python"])
def test_load_detector_upgrades_a_checkpoint_of_the_old_flat_settings(tmp_path, written_by):
    """An old checkpoint (flat hyper-parameters) loads into the grouped signature with the tiny config's settings."""
    import pytorch_lightning as pl

    model = _tiny_model()
    for p in model.parameters():  # weights that differ from a fresh model's, to see them loaded
        p.data.uniform_(-1, 1)
    hparams = dict(OLD_FLAT_HPARAMS)
    if written_by == "python":  # SecondDetector(**flat) in a script or the old demo: no instantiator keys
        hparams = {k: v for k, v in hparams.items() if not k.startswith("_")}
    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": pl.__version__}, ckpt)
    loaded = load_detector(ckpt)
    assert not loaded.training
    for group in ("voxels", "backbone", "anchors", "losses", "postprocess", "optim"):
        assert loaded.hparams[group] == model.hparams[group], group
    assert loaded.class_names == ["Car"] and loaded.point_cloud_range == model.point_cloud_range
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert SecondDetector.upgrade_hparams(dict(loaded.hparams)) == dict(loaded.hparams)  # a new one: unchanged
