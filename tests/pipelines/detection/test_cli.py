"""The detector through the Lightning CLI: a smoke fit with validation, resume, predict, and DDP on 2 CPUs."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
import yaml

from geo3d.cli import main
from geo3d.cli.lightning import run_lightning
from geo3d.io.kitti import read_label
from pipelines.detection.data import KittiDetectionDataset, collate_frames
from pipelines.detection.kitti_eval import kitti_eval
from pipelines.detection.predict import load_detector

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "configs" / "detection" / "second_tiny_cpu.yaml"


def _overrides(data_dir: Path, out: Path) -> list[str]:
    return [
        "--config", str(CONFIG), "--data.data_dir", str(data_dir), "--data.batch_size", "1",
        "--data.eval_batch_size", "2", "--trainer.default_root_dir", str(out),
        "--trainer.logger.class_path", "pytorch_lightning.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]


def _metrics(out: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted(out.glob("**/metrics.csv")):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    return rows


def _last(rows: list[dict[str, str]], key: str) -> float:
    values = [float(r[key]) for r in rows if r.get(key)]
    assert values, f"{key} was never logged"
    return values[-1]


def _kitti_eval_of_checkpoint(ckpt: Path, data_dir: Path, split: str) -> tuple[dict[str, float], int]:
    """The KITTI APs of a checkpoint's detections on a split, computed here frame by frame, and the detections'
    count."""
    model = load_detector(ckpt)
    frame_ids = (data_dir / "ImageSets" / f"{split}.txt").read_text().split()
    dataset = KittiDetectionDataset(data_dir, frame_ids, model.class_names, model.point_cloud_range)
    gt, dt = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            (pred,) = model.predict_step(collate_frames([dataset.load(i)]), i)
            gt.append(read_label(data_dir / "training" / "label_2" / f"{pred['frame_id']}.txt"))
            dt.append(pred["objects"])
    return kitti_eval(gt, dt, classes=("Car",)), sum(len(d) for d in dt)


def test_smoke_fit_validates_and_resumes(synth_kitti, tmp_path):
    out = tmp_path / "run"
    steps = tmp_path / "steps"
    every_2 = ["--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
               "--trainer.callbacks.dirpath", str(steps), "--trainer.callbacks.every_n_train_steps", "2",
               "--trainer.callbacks.save_top_k", "-1", "--trainer.callbacks.filename", "{step}"]
    # score threshold 0: 20 boxes per frame of the 3-step model (scores ~0.01) are evaluated, not an empty set
    all_boxes = ["--model.postprocess.score_thresh", "0.0", "--model.postprocess.nms_post_max", "20"]
    assert main(["fit", *_overrides(synth_kitti, out), "--trainer.max_steps", "3", *all_boxes, *every_2]) == 0
    rows = _metrics(out)
    assert _last(rows, "val/num_frames") == 3  # validated after the last step, over the whole split
    assert any(r.get("train/loss") for r in rows)
    (last,) = out.glob("**/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == 3
    # Resume the same run from its step-2 checkpoint (as after an interruption): one more step.
    resumed = tmp_path / "resumed"
    assert main(["fit", *_overrides(synth_kitti, resumed), "--trainer.max_steps", "3",
                 "--ckpt_path", str(steps / "step=2.ckpt")]) == 0
    (last,) = resumed.glob("**/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == 3
    assert _last(_metrics(resumed), "val/num_frames") == 3
    # Predict with the checkpoint: the command line's result_dir is used (not overridden by the checkpoint).
    results = tmp_path / "results"
    assert main(["predict", *_overrides(synth_kitti, tmp_path / "predict"), "--ckpt_path", str(last),
                 "--model.result_dir", str(results)]) == 0
    val_ids = (synth_kitti / "ImageSets" / "val.txt").read_text().split()
    assert sorted(p.stem for p in results.glob("*.txt")) == sorted(val_ids)
    # The APs the resumed run logged at its end are those of its last.ckpt's detections: the KITTI evaluation of
    # them, recomputed here frame by frame, gives the same numbers (all of them, also the loose and AOS ones).
    expected, detections = _kitti_eval_of_checkpoint(last, synth_kitti, "val")
    assert detections == 3 * 20  # nms_post_max boxes per frame at score threshold 0
    logged = {k: _last(_metrics(resumed), f"val/{k}") for k in expected}
    assert logged == pytest.approx(expected, abs=1e-6)


def test_predict_writes_kitti_results_on_the_real_frame(shared_data, tmp_path):
    kitti = shared_data / "kitti"
    results = tmp_path / "results"
    code = main(["predict", "--config", str(CONFIG), "--data.data_dir", str(kitti), "--data.splits.predict", "all",
                 "--model.result_dir", str(results), "--model.postprocess.score_thresh", "0.0",
                 "--model.postprocess.nms_post_max", "20",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
                 "--trainer.enable_progress_bar", "false"])
    assert code == 0
    objects = read_label(results / "000001.txt")
    assert len(objects) == 20  # untrained scores are low but the threshold is 0
    assert all(o.type == "Car" and o.score is not None for o in objects)
    assert (results / "bev" / "000001.png").is_file()


def test_class_names_and_range_are_written_once_and_linked(synth_kitti, tmp_path, capsys):
    """The model's classes and range come from the data section (geo3d/cli/lightning.py links them)."""
    with pytest.raises(SystemExit) as done:  # jsonargparse prints the config and exits
        main(["fit", "--config", str(CONFIG), "--print_config"])
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    model, data = printed["model"]["init_args"], printed["data"]["init_args"]
    assert "class_names" not in model and "point_cloud_range" not in model
    assert data["class_names"] == ["Car"] and data["point_cloud_range"] == [0.0, -25.6, -3.0, 51.2, 25.6, 1.0]
    assert model["postprocess"]["vertical_refinement"] and model["anchors"]["sizes"] == [[3.9, 1.6, 1.56]]
    # data's classes reach the model: two classes with the config's one anchor size fail in the model's check
    # (jsonargparse reports it on a later line of its error, which `geo3d` cuts to the first: run_lightning here)
    with pytest.raises(ValueError, match=re.escape("model.anchors.sizes: expected one value per class (2: ['Car', "
                                                   "'Pedestrian']), got 1")):
        run_lightning(["fit", *_overrides(synth_kitti, tmp_path), "--data.class_names", "[Car, Pedestrian]"])


def test_bad_data_dir_is_one_line_error(tmp_path, capsys):
    code = main(["validate", "--config", str(CONFIG), "--data.data_dir", str(tmp_path / "missing"),
                 "--trainer.logger", "false"])
    assert code == 2
    assert "not a KITTI object folder" in capsys.readouterr().err
