"""The detector through the Lightning CLI: a smoke fit with validation, resume, predict, and DDP on 2 CPUs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch

from geo3d.cli import main
from geo3d.io.kitti import read_label

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


def test_smoke_fit_validates_and_resumes(synth_kitti, tmp_path):
    out = tmp_path / "run"
    steps = tmp_path / "steps"
    every_2 = ["--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
               "--trainer.callbacks.dirpath", str(steps), "--trainer.callbacks.every_n_train_steps", "2",
               "--trainer.callbacks.save_top_k", "-1", "--trainer.callbacks.filename", "{step}"]
    assert main(["fit", *_overrides(synth_kitti, out), "--trainer.max_steps", "3", *every_2]) == 0
    rows = _metrics(out)
    assert _last(rows, "val/num_frames") == 3  # validated after the last step, over the whole split
    assert 0 <= _last(rows, "val/Car_3d_R40_moderate") <= 100
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


def test_predict_writes_kitti_results_on_the_real_frame(shared_data, tmp_path):
    kitti = shared_data / "kitti"
    results = tmp_path / "results"
    code = main(["predict", "--config", str(CONFIG), "--data.data_dir", str(kitti), "--data.predict_split", "all",
                 "--model.result_dir", str(results), "--model.score_thresh", "0.0", "--model.nms_post_max", "20",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
                 "--trainer.enable_progress_bar", "false"])
    assert code == 0
    objects = read_label(results / "000001.txt")
    assert len(objects) == 20  # untrained scores are low but the threshold is 0
    assert all(o.type == "Car" and o.score is not None for o in objects)
    assert (results / "bev" / "000001.png").is_file()


def test_mismatched_model_and_data_classes(synth_kitti, tmp_path, capsys):
    code = main(["fit", *_overrides(synth_kitti, tmp_path), "--trainer.max_steps", "1",
                 "--data.class_names", "[Car, Pedestrian]"])
    assert code == 2
    assert "model.class_names ['Car'] differs from data.class_names" in capsys.readouterr().err


def test_bad_data_dir_is_one_line_error(tmp_path, capsys):
    code = main(["validate", "--config", str(CONFIG), "--data.data_dir", str(tmp_path / "missing"),
                 "--trainer.logger", "false"])
    assert code == 2
    assert "not a KITTI object folder" in capsys.readouterr().err


def test_ddp_two_cpu_processes(synth_kitti, tmp_path):
    """`geo3d fit ... --trainer.strategy ddp --trainer.devices 2`: APs over the whole validation split."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "geo3d.cli", "fit", *_overrides(synth_kitti, out), "--trainer.accelerator", "cpu",
           "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_steps", "4"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _metrics(out)
    # 3 validation frames on 2 ranks: the sampler pads to 4; the gathered, de-duplicated set has 3.
    assert _last(rows, "val/num_frames") == 3
    assert _last(rows, "epoch") >= 1
