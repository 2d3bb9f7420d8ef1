"""The detection stage of ``geo3d demo`` (:func:`run_stage`): the model zoo's SECOND on held-out synthetic frames
and on the real KITTI frames, beside its model card.

1. Model: ``zoo:second_car`` (:func:`geo3d.zoo.load`), no training.
2. Held-out data: the first :data:`DEMO_FRAMES` frames of the card's benchmark set, ``geo3d synth kitti DIR
   --frames 0 --val-frames 120 --seed 1`` (every frame has a seed of its own, spawned from the set's seed, so the
   first N frames are the same whatever the count; the 120 frames take about 90 s to generate, too long for the
   stage). The card carries the AP of this subset (:func:`card_subset_metric`) beside the AP of all 120.
3. Evaluation: the module's own detection path (:meth:`SecondDetector.predict_step`, as ``geo3d validate`` runs
   it) on the frames as the data module loads them for validation, and the KITTI protocol
   (:func:`~pipelines.detection.kitti_eval.kitti_eval`, Car): the same numbers ``geo3d validate`` logs. The
   detections are written as KITTI result files.
4. The real KITTI frames (``../shared/data/kitti``) when present: the real-scan report
   (:func:`~pipelines.detection.predict.evaluate_real_frames`: cars in range found and false positives at score
   >= 0.3, a BEV picture per frame) and the CPU inference time on frame 000001. Without the shared data the
   report says it was skipped.
5. A BEV picture of the held-out frame with the most labelled cars, drawn as the real-scan report draws its frames.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from geo3d.io.atomic import atomic_path
from geo3d.io.kitti import write_label
from geo3d.io.shared_data import shared_data_dir
from geo3d.report import StageResult, card_checks
from pipelines.detection.data import KittiDataModule, KittiDetectionDataset, collate_frames, list_frames
from pipelines.detection.kitti_eval import kitti_eval
from pipelines.detection.module import SecondDetector
from pipelines.detection.predict import classify_frame, evaluate_real_frames, render_frame

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "detection" / "second_tiny_cpu.yaml"
ZOO_MODEL = "second_car"
HELD_OUT_SEED = 1  # the card's benchmark: geo3d synth kitti DIR --frames 0 --val-frames 120 --seed 1
DEMO_FRAMES = 40
"""Held-out frames the stage generates and evaluates: the first 40 of the card's 120."""

def card_subset_metric(frames: int) -> str:
    """The card's name for the AP of the first ``frames`` held-out frames (``geo3d validate`` on a set written with
    ``--frames 0 --val-frames FRAMES --seed 1``)."""
    return f"held-out Car 3D AP R40 moderate, first {frames} frames"


REAL_SCORE = 0.3  # score threshold of the real-scan report's counts
REPORTED = ("Car_3d_R40_moderate", "Car_bev_R40_moderate", "Car_3d_R40_easy", "Car_3d_R40_hard",
            "Car_3d_R11_moderate", "Car_bbox_R40_moderate")
SHOWS = (f"the model zoo's SECOND (`zoo:second_car`) on {DEMO_FRAMES} freshly generated held-out synthetic "
         "frames (Car 3D AP R40 moderate) and on the real KITTI frames (cars found, false positives), with BEV "
         "pictures, beside its model card")


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
    """The model and data arguments of ``configs/detection/second_tiny_cpu.yaml`` for ``data_dir`` (the tests build
    small detectors from it).

    ``class_names`` and ``point_cloud_range``, written once in the config's data section, go to both (as the CLI's
    links do); data is loaded in the main process (``num_workers=0``).

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


def time_inference(model: SecondDetector, batch: dict, repeats: int = 3) -> float:
    """Median seconds of one forward pass, decoding, NMS and vertical refinement on ``batch`` (eval mode, no grad)."""
    model.eval()
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first call builds spconv's and the voxelizer's caches
            start = time.perf_counter()
            model.detect(model(batch["points"], batch["batch"], batch["batch_size"]), batch["points"], batch["batch"])
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def evaluate_held_out(model: SecondDetector, data_dir: Path, result_dir: Path) -> tuple[dict[str, float], dict]:
    """Detect on the validation split of ``data_dir`` and score it with the KITTI protocol, as ``geo3d validate``.

    Args:
        model: the detector (eval mode).
        data_dir: a KITTI-format folder with ``ImageSets/val.txt``.
        result_dir: where each frame's detections go as a KITTI result file ``<frame_id>.txt``.

    Returns:
        ``(results, best)``: the KITTI evaluation (Car: ``Car_3d_R40_moderate``, ...; plus ``num_frames``) and the
        frame with the most labelled cars (``item``: its loaded frame, ``prediction``: its
        :meth:`SecondDetector.predict_step` output).
    """
    data = KittiDataModule(str(data_dir), class_names=model.class_names, point_cloud_range=model.point_cloud_range)
    data.setup("validate")
    dataset = data.datasets["val"]
    gt_annos, dt_annos, best = [], [], None
    with torch.no_grad():
        for index in range(len(dataset)):
            item = dataset.load(index)
            (prediction,) = model.predict_step(collate_frames([item]), index)
            write_label(result_dir / f"{item['frame_id']}.txt", prediction["objects"])
            gt_annos.append(item["annos"])
            dt_annos.append(prediction["objects"])
            cars = sum(o.type == "Car" for o in item["annos"])
            if best is None or cars > best["cars"]:
                best = {"cars": cars, "item": item, "prediction": prediction}
    classes = tuple(model.runtime.eval_classes or model.class_names)
    results = {k: float(v) for k, v in kitti_eval(gt_annos, dt_annos, classes=classes).items()}
    results["num_frames"] = float(len(dataset))
    return results, best


def held_out_picture(model: SecondDetector, best: dict, png: Path) -> Path:
    """The BEV picture of one held-out frame, labels and detections drawn as the real-scan report draws them."""
    from PIL import Image

    item, det = best["item"], best["prediction"]["boxes"]
    bbox_2d = np.array([o.bbox for o in best["prediction"]["objects"]], dtype=np.float64).reshape(-1, 4)
    record = classify_frame(det.boxes, det.scores, bbox_2d, item["annos"], item["calib"], item["image_size"],
                            list(model.point_cloud_range), REAL_SCORE)
    title = (f"held-out synthetic {item['frame_id']}: {record['cars_found']}/{record['cars_in_range']} cars found, "
             f"{record['false_positives']} false positives (score >= {REAL_SCORE:g})")
    with atomic_path(png) as tmp:
        Image.fromarray(render_frame(item["points"], record, list(model.point_cloud_range), title)).save(tmp, "PNG")
    return png


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
    """The real-scan report's counts as demo metrics."""
    t = report["total"]
    metrics = {"real_cars_in_range": t["cars_in_range"], "real_cars_found": t["cars_found"],
               f"real_false_positives_score{report['score_thresh']:g}": t["false_positives"],
               "real_max_false_positives_per_frame": max((f["false_positives"] for f in report["frames"]), default=0),
               "real_out_of_view": t["out_of_view"], "real_in_dontcare": t["in_dontcare"]}
    for f in report["frames"]:
        metrics[f"real_{f['frame_id']}_cars_found"] = f["cars_found"]
        metrics[f"real_{f['frame_id']}_cars_in_range"] = f["cars_in_range"]
        metrics[f"real_{f['frame_id']}_false_positives"] = f["false_positives"]
    return metrics


def run_stage(out: Path, frames: int = DEMO_FRAMES) -> StageResult:
    """The detection stage of ``geo3d demo`` (see the module docstring).

    Args:
        out: the stage's folder, ``<report folder>/detection`` (generated data, result files, real-scan report).
        frames: held-out frames to generate and evaluate (the first ones of the card's set).

    Returns:
        The stage's text, metrics (the KITTI APs of :data:`REPORTED`, ``val_frames``, the real-scan counts and the
        inference time), its pictures (``<report folder>/detection_heldout.png``, then the real frames' BEV
        pictures) and its numbers beside the ``second_car`` card.
    """
    from geo3d import zoo
    from geo3d.synth.kitti import generate_kitti

    out = Path(out)
    model = zoo.load(ZOO_MODEL)
    start = time.perf_counter()
    data_dir = generate_kitti(out / "synth_kitti_seed1", frames=0, val_frames=frames, seed=HELD_OUT_SEED,
                              workers=2 if frames > 4 else 1, progress=False)
    generate_seconds = time.perf_counter() - start
    results, best = evaluate_held_out(model, data_dir, out / "heldout_results")
    metrics: dict[str, Any] = {k: results[k] for k in REPORTED if k in results}
    metrics["val_frames"] = int(results["num_frames"])
    measured = {card_subset_metric(frames): metrics["Car_3d_R40_moderate"]}
    images = [held_out_picture(model, best, out.parent / "detection_heldout.png")]
    text = (f"SECOND from the model zoo (`zoo:{ZOO_MODEL}`, no training here) on the first {frames} frames of "
            f"its held-out benchmark set (`geo3d synth kitti DIR --frames 0 --val-frames {frames} --seed "
            f"{HELD_OUT_SEED}`: the same frames as the card's 120-frame set begins with; generated in "
            f"{generate_seconds:.0f} s), evaluated with the KITTI protocol: Car 3D AP R40 moderate "
            f"{metrics['Car_3d_R40_moderate']:.2f}. Detections in `heldout_results`; the first picture is the "
            f"held-out frame {best['item']['frame_id']} (its {best['cars']} labelled cars) in bird's-eye view.")
    real = _real_kitti_dir()
    if real is not None:
        report = evaluate_real_frames(model, real / "training", out / "real_scans", score_thresh=REAL_SCORE,
                                      progress=False)
        metrics.update(_real_report_metrics(report))
        measured.update({"real KITTI cars in range": report["total"]["cars_in_range"],
                         "real KITTI cars found": report["total"]["cars_found"],
                         "real KITTI false positives (score >= 0.3)": report["total"]["false_positives"]})
        images += [Path(f["image"]) for f in report["frames"]]
        first = KittiDetectionDataset(real, list_frames(real, "all")[:1], model.class_names, model.point_cloud_range)
        batch = collate_frames([first.load(0)])
        metrics["real_frame_inference_s"] = time_inference(model, batch)
        text += (" " + _real_report_text(report, "real_scans") + " Inference on the real frame "
                 f"{batch['frame_id'][0]}: {metrics['real_frame_inference_s'] * 1000:.0f} ms on the CPU "
                 f"({torch.get_num_threads()} torch thread(s); forward, decoding, NMS, refinement). BEV pictures: "
                 "labelled cars green, predictions with their scores (matching a car cyan, false positives red, "
                 "out of the camera's view or in DontCare grey).")
    else:
        text += (f" The real-scan report was skipped: no real KITTI frames at `{shared_data_dir() / 'kitti'}` (set "
                 "GEO3D_SHARED_DATA to a folder holding kitti/training/{velodyne,calib,label_2}).")
    return StageResult("detection", text, metrics, images, card_checks(ZOO_MODEL, measured))
