"""The detection stage of ``geo3d demo`` (:func:`run_stage`): train (or reuse) the tiny SECOND, evaluate it, run it
on real data, render a validation frame and a real frame.

1. Data: a small synthetic KITTI set (``geo3d.synth.kitti.generate_kitti``: 240 training and 30 validation frames,
   about 100 s) unless ``data_dir`` is given. With the same training time, 240 distinct frames gave fewer false
   positives on the real frames than 120 frames seen twice as often (measured 2026-11-30: at most 3 per frame
   against 4).
2. Model: ``OUT/second_tiny.ckpt`` (or ``checkpoint``) when it exists, else a short training run with
   ``configs/detection/second_tiny_cpu.yaml``'s model and data settings, sized to ``max_minutes``.
3. Evaluation: the KITTI APs over the validation split.
4. The real KITTI frames (``../shared/data/kitti``) when present: detections written as KITTI result
   files, the CPU inference time per frame (forward + decoding + NMS, median of 5), and the real-scan report
   (``predict.evaluate_real_frames``: cars in range found and false positives at score >= 0.3, per frame,
   with a BEV picture of each frame). Without the shared data the report says it was skipped.
5. Renders (:func:`run_stage`): the validation frame with the most labelled cars and the real frame 000001, ground
   truth green and predictions red with their scores (``viewers.files.view_files``), into the report folder.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml

from geo3d.io.atomic import atomic_path
from geo3d.io.checkpoint import load_module
from geo3d.io.kitti import read_label
from geo3d.io.shared_data import shared_data_dir
from geo3d.report import StageResult
from pipelines.detection.data import KittiDataModule, SplitSettings, collate_frames, list_frames
from pipelines.detection.module import SecondDetector
from pipelines.detection.predict import evaluate_real_frames

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "detection" / "second_tiny_cpu.yaml"
# Training cost of the tiny model per frame on the 2-core reference machine: measured 0.15 s idle and
# 0.3 s busy; the time budget (max_time) stops a slower run anyway.
SECONDS_PER_FRAME = 0.2
REAL_SCORE = 0.3  # score threshold of the real-scan report's counts
REPORTED = ("Car_3d_R40_moderate", "Car_bev_R40_moderate", "Car_3d_R40_easy", "Car_3d_R40_hard",
            "Car_3d_R11_moderate", "Car_bbox_R40_moderate")


def _real_kitti_dir() -> Path | None:
    shared = shared_data_dir() / "kitti"
    return shared if (shared / "training" / "velodyne").is_dir() else None


def typed_init_args(cls: type, init_args: dict[str, Any]) -> dict[str, Any]:
    """A config's ``init_args`` for ``cls(**...)``: nested dicts of its settings groups become their dataclasses.

    Args:
        cls: :class:`SecondDetector` or :class:`KittiDataModule`.
        init_args: the YAML's ``init_args`` (groups as dicts, defaults left out).

    Returns:
        The same arguments, each group as the dataclass of its parameter's default.

    Example:
        >>> args = typed_init_args(SecondDetector, {"optim": {"lr": 0.01}, "result_dir": None})
        >>> args["optim"]
        OptimSettings(lr=0.01, weight_decay=0.01, div_factor=10.0, pct_start=0.4)
    """
    params = inspect.signature(cls).parameters
    out = {}
    for name, value in init_args.items():
        default = params[name].default if name in params else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = type(default)(**value)
        out[name] = value
    return out


def tiny_config(data_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model and data arguments of ``configs/detection/second_tiny_cpu.yaml`` for ``data_dir``.

    ``class_names`` and ``point_cloud_range``, written once in the config's data section, go to both (as the CLI's
    links do); the demo loads data in the main process (``num_workers=0``).

    Returns:
        ``(model_args, data_args)`` for :class:`SecondDetector` and :class:`KittiDataModule`.
    """
    config = yaml.safe_load(TINY_CONFIG.read_text())
    data_args = typed_init_args(KittiDataModule, {**config["data"]["init_args"], "data_dir": str(data_dir),
                                                  "num_workers": 0})
    model_args = typed_init_args(SecondDetector, {**config["model"]["init_args"],
                                                  "class_names": data_args["class_names"],
                                                  "point_cloud_range": data_args["point_cloud_range"]})
    return model_args, data_args


def time_inference(model: SecondDetector, batch: dict, repeats: int = 5) -> float:
    """Median seconds of one forward pass, decoding, NMS and vertical refinement on ``batch`` (eval mode, no grad)."""
    model.eval()
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first call builds spconv's and voxelizer's caches
            start = time.perf_counter()
            model.detect(model(batch["points"], batch["batch"], batch["batch_size"]), batch["points"], batch["batch"])
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def run_detection_demo(
    out_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    max_minutes: float = 6.0,
    checkpoint: str | os.PathLike | None = None,
    train_frames: int = 240,
    val_frames: int = 30,
    seed: int = 0,
) -> dict:
    """Train or reuse the tiny detector, evaluate it, and run it on the real KITTI frame.

    Args:
        out_dir: output folder (checkpoint, logs, results, images).
        data_dir: a KITTI-format folder with ``ImageSets/{train,val}.txt``; None generates
            ``train_frames`` + ``val_frames`` synthetic frames into ``out_dir/synth_kitti``.
        max_minutes: training budget when no checkpoint exists (the schedule is sized to fit it).
        checkpoint: a checkpoint to reuse; default ``out_dir/second_tiny.ckpt`` when it exists.
        train_frames, val_frames, seed: the generated data set.

    Returns:
        ``text`` (a markdown paragraph), ``metrics`` (dict of floats), ``images`` (list of PNG paths),
        ``checkpoint`` (Path), ``results`` (the real frames' KITTI result files, or None), ``val_results``
        (KITTI result files of the validation frames), ``data_dir`` (the KITTI-format data set, Path),
        ``real_dir`` (the real KITTI folder, or None) and ``real_report`` (``evaluate_real_frames``'s result,
        written to ``out_dir/real_scans``, or None).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        from geo3d.synth.kitti import generate_kitti

        data_dir = generate_kitti(out / "synth_kitti", frames=train_frames, val_frames=val_frames, seed=seed)
    model_args, data_args = tiny_config(data_dir)
    splits = data_args.get("splits", SplitSettings())
    pl.seed_everything(seed, workers=True)
    ckpt = Path(checkpoint) if checkpoint else out / "second_tiny.ckpt"
    datamodule = KittiDataModule(**data_args)
    trained_now = not ckpt.is_file()
    start = time.perf_counter()
    if trained_now:
        model = SecondDetector(**model_args)
        n_train = len(list_frames(data_dir, splits.train))
        epochs = max(1, int(max_minutes * 60 * 0.85 / (SECONDS_PER_FRAME * n_train)))
        print(f"training the tiny SECOND on {n_train} frames for {epochs} epochs (at most {max_minutes:g} min)",
              flush=True)
        trainer = pl.Trainer(max_epochs=epochs, max_time={"minutes": max_minutes}, accelerator="auto", devices=1,
                             gradient_clip_val=10.0, logger=pl.loggers.CSVLogger(out, name="logs"),
                             enable_checkpointing=False, num_sanity_val_steps=0,
                             limit_val_batches=0, enable_model_summary=False)
        trainer.fit(model, datamodule=datamodule)
        with atomic_path(ckpt) as tmp:  # an interrupted save never leaves a checkpoint to reuse
            trainer.save_checkpoint(tmp)
    model = load_module(ckpt, SecondDetector)
    train_seconds = time.perf_counter() - start
    evaluator = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False,
                           enable_model_summary=False)
    results = evaluator.validate(model, datamodule=datamodule, verbose=False)[0]
    metrics = {k: float(results[f"val/{k}"]) for k in REPORTED if f"val/{k}" in results}
    metrics["val_frames"] = float(results.get("val/num_frames", 0))
    origin = f"trained for {train_seconds / 60:.1f} min, saved to" if trained_now else "loaded from"
    shown = ckpt.relative_to(out) if ckpt.is_relative_to(out) else ckpt
    text = (f"SECOND (tiny CPU configuration) {origin} `{shown}`, evaluated with the KITTI protocol on "
            f"{int(metrics['val_frames'])} validation frames of `{data_dir}`.")
    val_results = out / "val_results"
    model.result_dir = str(val_results)
    val_data = KittiDataModule(**{**data_args, "splits": dataclasses.replace(splits, predict=splits.val)})
    evaluator.predict(model, datamodule=val_data)
    text += f" Its detections on the validation frames are in `{val_results.relative_to(out)}`."
    images = []
    result_dir = None
    real = _real_kitti_dir()
    if real is not None:
        result_dir = out / "real_kitti_results"
        model.result_dir = str(result_dir)
        predict_data = KittiDataModule(**{**data_args, "data_dir": str(real),
                                           "splits": dataclasses.replace(splits, predict="all")})
        predictions = evaluator.predict(model, datamodule=predict_data)
        frame = predictions[0][0]
        predict_data.setup("predict")
        batch = collate_frames([predict_data.datasets["predict"][0]])
        metrics["real_frame_inference_s"] = time_inference(model.to("cpu"), batch)
        metrics["real_frame_detections"] = float(len(frame["boxes"]))
        text += (f" On the real KITTI frame {frame['frame_id']} it predicted {len(frame['boxes'])} cars (score >= "
                 f"{model.hparams.postprocess.score_thresh}; results in `{result_dir.relative_to(out)}`), in "
                 f"{metrics['real_frame_inference_s'] * 1000:.0f} ms per frame on the CPU "
                 f"({torch.get_num_threads()} torch thread(s)).")
        real_report = evaluate_real_frames(model, real / "training", out / "real_scans", score_thresh=REAL_SCORE,
                                           progress=False)
        text += " " + _real_report_text(real_report, "real_scans")
        metrics.update(_real_report_metrics(real_report))
        images += [Path(f["image"]) for f in real_report["frames"]]
    else:
        real_report = None
        shared = shared_data_dir() / "kitti"
        text += (f" The real-scan report was skipped: no real KITTI frames at `{shared}` (set GEO3D_SHARED_DATA to "
                 "a folder holding kitti/training/{velodyne,calib,label_2}).")
    return {"text": text, "metrics": metrics, "images": images, "checkpoint": ckpt, "results": result_dir,
            "val_results": val_results, "data_dir": Path(data_dir), "real_dir": real, "real_report": real_report}


def _real_report_text(report: dict, where: str) -> str:
    """A paragraph of the real-scan report's counts, per frame and in total (files in ``where``)."""
    t, s = report["total"], report["score_thresh"]
    per_frame = "; ".join(f"{f['frame_id']}: {f['cars_found']}/{f['cars_in_range']} found, {f['false_positives']} "
                          "false positives" for f in report["frames"])
    return (f"Real-scan report on {t['frames']} real KITTI frames: {t['cars_found']} of {t['cars_in_range']} "
            f"labelled cars in range found (BEV IoU >= {report['iou_thresh']:g}), {t['false_positives']} false "
            f"positives at score >= {s:g} ({per_frame}); {t['out_of_view']} prediction(s) outside the camera's "
            f"view and {t['in_dontcare']} in DontCare regions are not counted as false positives, as KITTI "
            f"evaluates the camera view only. Table and BEV pictures in `{where}`.")


def _real_report_metrics(report: dict) -> dict:
    """The real-scan report's counts as demo metrics (floats)."""
    t = report["total"]
    metrics = {"real_cars_in_range": float(t["cars_in_range"]), "real_cars_found": float(t["cars_found"]),
               f"real_false_positives_score{report['score_thresh']:g}": float(t["false_positives"]),
               "real_max_false_positives_per_frame": float(max((f["false_positives"] for f in report["frames"]),
                                                               default=0)),
               "real_out_of_view": float(t["out_of_view"]), "real_in_dontcare": float(t["in_dontcare"])}
    for f in report["frames"]:
        metrics[f"real_{f['frame_id']}_cars_found"] = float(f["cars_found"])
        metrics[f"real_{f['frame_id']}_cars_in_range"] = float(f["cars_in_range"])
        metrics[f"real_{f['frame_id']}_false_positives"] = float(f["false_positives"])
    return metrics


def run_stage(out: Path, max_minutes: float | None = None) -> StageResult:
    """The detection stage of ``geo3d demo``: :func:`run_detection_demo` into ``out``, and renders of a validation
    frame and the real frame 000001 (ground truth green, predictions red with their scores) into the report folder.

    Args:
        out: the stage's folder, ``<report folder>/detection`` (checkpoint, data, results, logs).
        max_minutes: training budget when no checkpoint exists (None: :func:`run_detection_demo`'s 6 minutes).

    Returns:
        The stage's text, metrics and images (the renders ``<report folder>/detection_val_<frame>.png`` and
        ``detection_real_000001.png``, then the real-scan report's BEV pictures under ``out``).
    """
    from viewers.files import view_files

    out = Path(out)
    report_dir = out.parent
    result = run_detection_demo(out, **({} if max_minutes is None else {"max_minutes": max_minutes}))
    images = []
    # The validation frame with the most labelled cars, ground truth (green) against predictions (red).
    val = result["data_dir"] / "training"
    frame_ids = sorted(p.stem for p in result["val_results"].glob("*.txt"))
    if frame_ids:
        frame = max(frame_ids, key=lambda i: sum(o.type == "Car" for o in read_label(val / "label_2" / f"{i}.txt")))
        images.append(view_files([val / "velodyne" / f"{frame}.bin"], boxes=val / "label_2" / f"{frame}.txt",
                                 calib=val / "calib" / f"{frame}.txt", pred=result["val_results"] / f"{frame}.txt",
                                 out=report_dir / f"detection_val_{frame}.png", width=1280, height=720))
    if result["results"] is not None:
        real = result["real_dir"] / "training"
        images.append(view_files([real / "velodyne" / "000001.bin"], boxes=real / "label_2" / "000001.txt",
                                 calib=real / "calib" / "000001.txt", pred=result["results"] / "000001.txt",
                                 out=report_dir / "detection_real_000001.png", width=1280, height=720))
    text = result["text"] + (" Renders: ground truth green, predictions red with their scores (a validation "
                             "frame, then the real KITTI frame)")
    if result["real_report"] is not None:
        text += ("; then the real-scan report's bird's-eye views, one per real frame (labelled cars green, "
                 "predictions with their scores: matching a car cyan, false positives red, out of the camera's "
                 "view or in DontCare grey).")
    else:
        text += "."
    return StageResult("detection", text, result["metrics"], [Path(i) for i in images] + result["images"])
