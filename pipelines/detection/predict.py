"""The code behind ``scripts/detect_real.py``: a detector run on real KITTI frames, judged by counts of cars found
and false positives (the real-scan report).

A model trained on synthetic frames meets real scans here. A handful of labelled frames is too few for an AP,
so the report counts, per frame and in total:

* **cars in range**: the frame's ``Car`` and ``Van`` labels (KITTI's Car evaluation treats Van as a neighbouring
  class, never as a false positive) whose box centre lies inside the model's ``point_cloud_range`` in x and y;
* **found**: those with a prediction of score >= ``score_thresh`` at rotated BEV IoU >= ``iou_thresh``
  (exact polygon clipping, :func:`ops.boxes.boxes_iou_bev`);
* every prediction of score >= ``score_thresh`` whose centre lies in the range is exactly one of

  - a **match**: BEV IoU >= ``iou_thresh`` with a Car or Van label (in range or not; duplicates are not
    counted twice as false positives: NMS leaves none at the tiny config's threshold);
  - **out of view**: its centre projects outside the left camera image or lies behind the camera. KITTI labels
    and evaluates the camera's field of view only, so nothing there can be a labelled car: such predictions
    are counted separately and are *not* false positives. (The model sees the field-of-view crop it was
    trained on unless ``fov_only=False``, so out-of-view boxes are rare and sit at the view's edges.)
  - **in DontCare**: its projected 2D box lies at least half inside a ``DontCare`` region (intersection over
    its own area >= 0.5, the rule of the KITTI evaluation, ``kitti_eval.py``): not a false positive, counted
    separately;
  - a **false positive**: every other one, including boxes on Truck, Tram, Misc, Cyclist or Pedestrian labels
    (KITTI's Car evaluation counts those too; the report names the label such a box overlaps most, a Car or
    Van below the IoU threshold included).

KITTI's minimum 2D box height is not applied: every in-range box counts, however far.

:func:`evaluate_real_frames` does the counting through the module's own prediction path
(:meth:`SecondDetector.predict_step` on the frames as the data module loads them) and writes
``real_scans.md``, ``real_scans.json`` and ``bev/<frame_id>.png`` (points seen by the model, grey by height;
labels green with their distance; predictions with their score: matches cyan, false positives red,
out-of-view and DontCare ones grey). ``scripts/detect_real.py`` wraps it; the demo's detection stage calls it
on the shared real frames.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from geo3d.io.atomic import atomic_path, atomic_write_text
from geo3d.io.checkpoint import load_module
from geo3d.io.kitti import find_kitti_frames, objects_to_boxes_lidar, points_in_image_fov
from ops.boxes import boxes_iou_bev
from pipelines.detection.data import KittiDetectionDataset, boxes_in_range, collate_frames, crop_points
from pipelines.detection.module import SecondDetector
from pipelines.detection.render import bev_pixels, draw_boxes_bev, render_bev

PROBE_SEED = 27
"""The seed of :func:`zoo_probe`'s synthetic frame (:func:`geo3d.synth.kitti.simulate_frame`)."""
CAR_TYPES = ("Car", "Van")
DONTCARE_MIN_OVERLAP = 0.5  # share of a prediction's 2D box inside a DontCare region to ignore it
RULES = (
    "Cars: Car and Van labels with their box centre inside the model's x/y range. Found: a prediction of score "
    ">= {score:g} at rotated BEV IoU >= {iou:g}. False positive: a prediction of score >= {score:g} with its "
    "centre in range that matches no Car/Van label at BEV IoU >= {iou:g}, lies in the camera's field of view "
    "(KITTI labels and evaluates only what the left camera sees, so predictions outside it are not false "
    "positives; they are counted apart as 'out of view') and not at least half inside a DontCare region "
    "(counted apart as 'in DontCare')."
)
# BEV picture colours (RGB 0-255).
LABEL_COLOR = (0, 255, 0)
OTHER_LABEL_COLOR = (0, 140, 0)
MATCH_COLOR = (0, 200, 255)
FP_COLOR = (255, 48, 48)
IGNORED_COLOR = (150, 150, 150)


def load_detector(path: str | os.PathLike) -> SecondDetector:
    """Load a :class:`SecondDetector` checkpoint on the CPU, in eval mode (:func:`geo3d.io.checkpoint.load_module`;
    checkpoints of the old flat settings are upgraded).

    Raises:
        InputError: the file is missing, unreadable, or not a SecondDetector checkpoint.
    """
    return load_module(path, SecondDetector, map_location="cpu")


@torch.no_grad()
def zoo_probe(module: SecondDetector) -> dict[str, np.ndarray]:
    """The model zoo's probe: the detector's output on one fixed synthetic KITTI-like frame.

    The frame is :func:`geo3d.synth.kitti.simulate_frame` of seed :data:`PROBE_SEED` (a street with cars, ray-cast
    by the simulated HDL-64E; built in code, about 2 s), cut to the left camera's field of view and the model's
    range as the data module cuts it. The module runs in eval mode, as inference does.

    Args:
        module: a :class:`SecondDetector` (a zoo entry's weights, or any).

    Returns:
        ``boxes`` (P, 7) float32 LiDAR-frame boxes (metres, radians), ``scores`` (P,) float32 and ``labels`` (P,)
        int64 of the detections, and ``cls_logits`` (A, K) float32 the head's class logits at every anchor (so a
        change is seen even where no box passes the score threshold).
    """
    from geo3d.synth.kitti import IMAGE_SIZE, simulate_frame

    frame = simulate_frame(PROBE_SEED, nthreads=1)
    points = frame.points[points_in_image_fov(frame.points[:, :3], frame.calib, IMAGE_SIZE)]
    points = torch.from_numpy(np.ascontiguousarray(crop_points(points, module.point_cloud_range)))
    batch = torch.zeros(len(points), dtype=torch.int64)
    was_training = module.training
    module.eval()
    try:
        preds = module(points, batch, 1)
        (detections,) = module.detect(preds, points, batch)
    finally:
        module.train(was_training)
    return {"boxes": detections.boxes.numpy(), "scores": detections.scores.numpy(),
            "labels": detections.labels.numpy(), "cls_logits": preds["cls"][0].numpy()}


def _dontcare_share(boxes_2d: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """(P,) largest share of each (left, top, right, bottom) box's area inside one of the regions (R, 4)."""
    if len(boxes_2d) == 0 or len(regions) == 0:
        return np.zeros(len(boxes_2d))
    b, r = boxes_2d[:, None], regions[None]
    w = (np.minimum(b[..., 2], r[..., 2]) - np.maximum(b[..., 0], r[..., 0])).clip(0)
    h = (np.minimum(b[..., 3], r[..., 3]) - np.maximum(b[..., 1], r[..., 1])).clip(0)
    area = ((boxes_2d[:, 2] - boxes_2d[:, 0]) * (boxes_2d[:, 3] - boxes_2d[:, 1]))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(area > 0, w * h / area, 0.0)
    return share.max(1)


def classify_frame(
    pred_boxes: torch.Tensor,
    pred_scores: torch.Tensor,
    pred_bbox_2d: np.ndarray,
    annos: list,
    calib,
    image_size: tuple[int, int],
    point_cloud_range: list[float],
    score_thresh: float = 0.3,
    iou_thresh: float = 0.5,
) -> dict:
    """Count one frame's found cars and sort its predictions into match / out of view / DontCare / false positive.

    Args:
        pred_boxes: (P, 7) float32 predicted boxes, LiDAR frame (metres, radians).
        pred_scores: (P,) float32 scores.
        pred_bbox_2d: (P, 4) float ``left, top, right, bottom`` image pixels of the projected boxes.
        annos: the frame's KITTI label objects (all types).
        calib: the frame's :class:`geo3d.io.kitti.KittiCalib`.
        image_size: (width, height) pixels.
        point_cloud_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]`` metres: "in range" is inside its x/y.
        score_thresh: predictions below this score are left out.
        iou_thresh: BEV IoU for a match.

    Returns:
        ``cars`` (one dict per Car/Van label: type, x, y, distance_m, in_range, found, best_iou, best_score),
        ``cars_in_range``, ``cars_found``, ``detections`` (predictions counted), ``matches``,
        ``false_positives``, ``out_of_view``, ``in_dontcare``, ``predictions`` (one dict per counted prediction:
        x, y, yaw, score, kind, overlaps: the type of the label a false positive overlaps most in BEV, or None),
        and ``car_boxes`` / ``other_boxes`` / ``counted`` (tensors for drawing).
    """
    cars = objects_to_boxes_lidar(annos, calib, CAR_TYPES)
    other_types = sorted({o.type for o in annos} - set(CAR_TYPES) - {"DontCare"})
    others = objects_to_boxes_lidar(annos, calib, other_types)
    regions = np.array([o.bbox for o in annos if o.type == "DontCare"], dtype=np.float64).reshape(-1, 4)
    keep = (pred_scores >= score_thresh) & boxes_in_range(pred_boxes, point_cloud_range)
    boxes, scores, bbox_2d = pred_boxes[keep], pred_scores[keep], np.asarray(pred_bbox_2d).reshape(-1, 4)[keep.numpy()]
    iou = boxes_iou_bev(boxes, cars.boxes) if len(boxes) and len(cars) else torch.zeros(len(boxes), len(cars))
    iou_other = boxes_iou_bev(boxes, others.boxes) if len(boxes) and len(others) else torch.zeros(len(boxes), 0)
    in_view = points_in_image_fov(boxes[:, :3].double().numpy(), calib, image_size)
    dontcare = _dontcare_share(bbox_2d, regions) >= DONTCARE_MIN_OVERLAP
    predictions = []
    for i in range(len(boxes)):
        if len(cars) and float(iou[i].max()) >= iou_thresh:
            kind = "match"
        elif not in_view[i]:
            kind = "out_of_view"
        elif dontcare[i]:
            kind = "in_dontcare"
        else:
            kind = "false_positive"
        overlaps = None
        both = torch.cat([iou[i], iou_other[i]])
        if kind == "false_positive" and len(both) and float(both.max()) > 0:
            overlaps = (cars.names() + others.names())[int(both.argmax())]
        b = boxes[i].tolist()
        predictions.append({"x": round(b[0], 2), "y": round(b[1], 2), "yaw": round(b[6], 3),
                            "score": round(float(scores[i]), 4), "kind": kind, "overlaps": overlaps})
    car_in_range = boxes_in_range(cars.boxes, point_cloud_range)
    car_rows = []
    for j in range(len(cars)):
        column = iou[:, j] if len(boxes) else torch.zeros(0)
        best = int(column.argmax()) if len(column) else -1
        x, y = (float(v) for v in cars.boxes[j, :2])
        car_rows.append({
            "type": cars.names()[j], "x": round(x, 2), "y": round(y, 2), "distance_m": round(math.hypot(x, y), 1),
            "in_range": bool(car_in_range[j]), "found": bool(len(column) and float(column.max()) >= iou_thresh),
            "best_iou": round(float(column[best]), 3) if best >= 0 else 0.0,
            "best_score": round(float(scores[best]), 4) if best >= 0 and float(column[best]) > 0 else None,
        })
    kinds = [p["kind"] for p in predictions]
    return {
        "cars": car_rows,
        "cars_in_range": sum(c["in_range"] for c in car_rows),
        "cars_found": sum(c["in_range"] and c["found"] for c in car_rows),
        "detections": len(predictions),
        "matches": kinds.count("match"),
        "false_positives": kinds.count("false_positive"),
        "out_of_view": kinds.count("out_of_view"),
        "in_dontcare": kinds.count("in_dontcare"),
        "predictions": predictions,
        "car_boxes": cars.boxes,
        "other_boxes": others,
        "counted": boxes,
    }


def render_frame(points: torch.Tensor, record: dict, point_cloud_range: list[float], title: str,
                 resolution: float = 0.08) -> np.ndarray:
    """The BEV picture of one classified frame (see the module docstring for the colours).

    Args:
        points: (N, >=3) float32 the points the model saw, metres.
        record: :func:`classify_frame`'s result.
        point_cloud_range: the drawn area, metres.
        title: the title line.
        resolution: metres per pixel.

    Returns:
        (H + legend band, W, 3) uint8 RGB.
    """
    from viewers.render import draw_overlay

    image = render_bev(points, point_cloud_range, resolution=resolution)
    tags = []

    def tag(xy, text: str, color: tuple[int, int, int]) -> None:
        row, col = bev_pixels(np.asarray(xy), point_cloud_range, resolution)[0]
        if 0 <= row < image.shape[0] and 0 <= col < image.shape[1]:
            tags.append(((float(col), float(row)), text, tuple(c / 255 for c in color)))

    others = record["other_boxes"]
    draw_boxes_bev(image, others.boxes, point_cloud_range, OTHER_LABEL_COLOR, resolution)
    for name, box in zip(others.names(), others.boxes):
        tag(box[:2].tolist(), name, OTHER_LABEL_COLOR)
    draw_boxes_bev(image, record["car_boxes"], point_cloud_range, LABEL_COLOR, resolution)
    for car, box in zip(record["cars"], record["car_boxes"]):
        state = "" if not car["in_range"] else (" found" if car["found"] else " missed")
        tag(box[:2].tolist(), f"{car['type']} {car['distance_m']:.0f} m{state}", LABEL_COLOR)
    colors = {"match": MATCH_COLOR, "false_positive": FP_COLOR, "out_of_view": IGNORED_COLOR,
              "in_dontcare": IGNORED_COLOR}
    for pred, box in zip(record["predictions"], record["counted"]):
        draw_boxes_bev(image, box[None], point_cloud_range, colors[pred["kind"]], resolution)
        tag(box[:2].tolist(), f"{pred['score']:.2f}", colors[pred["kind"]])
    image = draw_overlay(image, title, [], tags)
    return _legend_band(image, [("Car / Van label", LABEL_COLOR), ("other label", OTHER_LABEL_COLOR),
                                ("match", MATCH_COLOR), ("false positive", FP_COLOR),
                                (f"out of view / DontCare ({record['out_of_view']} / {record['in_dontcare']}): "
                                 "not counted", IGNORED_COLOR)])


def _legend_band(image: np.ndarray, entries: list[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """The image with a black band below it holding the legend, wrapped into rows (it never covers the scene)."""
    from PIL import Image, ImageDraw, ImageFont

    width = image.shape[1]
    font = ImageFont.load_default(size=max(10, width // 48))
    size = font.size
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    spans = [size + 4 + int(measure.textlength(label, font=font)) + size for label, _ in entries]
    rows, x = [[]], size // 2
    for entry, span in zip(entries, spans):
        if rows[-1] and x + span > width:
            rows.append([])
            x = size // 2
        rows[-1].append(entry)
        x += span
    band = Image.new("RGB", (width, size * (len(rows) + 1)), (0, 0, 0))
    draw = ImageDraw.Draw(band)
    for r, row in enumerate(rows):
        x, y = size // 2, size // 2 + r * size
        for label, color in row:
            draw.rectangle([x, y + 2, x + size - 4, y + size - 2], fill=color)
            x += size + 4
            draw.text((x, y), label, fill=(230, 230, 230), font=font)
            x += int(draw.textlength(label, font=font)) + size
    return np.concatenate([image, np.asarray(band)], 0)


def format_markdown(report: dict) -> str:
    """The report as markdown: a per-frame table with a total row, then the counting rules."""
    s = report["score_thresh"]
    lines = [
        f"| frame | cars in range found | false positives (score >= {s:g}) | out of camera view | in DontCare | "
        f"matches | predictions (score >= {s:g}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in [*report["frames"], {**report["total"], "frame_id": "**total**"}]:
        lines.append(f"| {f['frame_id']} | {f['cars_found']} / {f['cars_in_range']} | {f['false_positives']} | "
                     f"{f['out_of_view']} | {f['in_dontcare']} | {f['matches']} | {f['detections']} |")
    lines += ["", RULES.format(score=s, iou=report["iou_thresh"]), ""]
    lines.append(f"Model input: {report['input']}; range x/y {report['point_cloud_range'][0]:g} to "
                 f"{report['point_cloud_range'][3]:g} m / {report['point_cloud_range'][1]:g} to "
                 f"{report['point_cloud_range'][4]:g} m; folder `{report['folder']}`.")
    return "\n".join(lines) + "\n"


def evaluate_real_frames(
    model: SecondDetector,
    folder: str | os.PathLike,
    out: str | os.PathLike | None = None,
    score_thresh: float = 0.3,
    iou_thresh: float = 0.5,
    fov_only: bool = True,
    progress: bool = True,
) -> dict:
    """Predict on every frame of a labelled KITTI folder and count cars found and false positives.

    Args:
        model: the detector (any device; left in the mode it came in).
        folder: a KITTI ``training``-style folder (``velodyne/``, ``calib/``, ``label_2/``) or its parent.
        out: where to write ``real_scans.md``, ``real_scans.json`` and ``bev/<frame_id>.png`` (atomically), or
            None to write nothing.
        score_thresh: predictions below this score are left out of every count (0 < s < 1).
        iou_thresh: rotated BEV IoU for a prediction to match a car (0 < t <= 1).
        fov_only: feed the model the camera's field of view only, as the data module does in training
            (default); False feeds the whole scan within the range.
        progress: show a progress bar over frames.

    Returns:
        ``frames`` (per frame: ``frame_id``, ``points`` fed, the counts of :func:`classify_frame`, ``cars``,
        ``predictions`` and ``image`` (the PNG path or None)), ``total`` (the counts summed), ``score_thresh``,
        ``iou_thresh``, ``point_cloud_range``, ``input``, ``folder``, ``rules`` and ``markdown``.

    Raises:
        InputError: the folder is not a KITTI object folder, a frame lacks its calib or label file, or a
            file is malformed.
        ValueError: thresholds outside their ranges.
    """
    from tqdm import tqdm

    if not 0.0 < score_thresh < 1.0:
        raise ValueError(f"score_thresh: expected a score in (0, 1), got {score_thresh}")
    if not 0.0 < iou_thresh <= 1.0:
        raise ValueError(f"iou_thresh: expected an IoU in (0, 1], got {iou_thresh}")
    root, split_dir, ids = find_kitti_frames(folder)
    pcr = list(model.point_cloud_range)
    dataset = KittiDetectionDataset(root, ids, model.class_names, pcr, fov_only=fov_only, require_labels=True,
                                    split_dir=split_dir)
    out_dir = None if out is None else Path(out)
    frames = []
    was_training, result_dir, post = model.training, model.result_dir, model.hparams.postprocess
    model.eval()
    model.result_dir = None  # the prediction path writes nothing; this report writes its own files
    model.hparams.postprocess = dataclasses.replace(post, score_thresh=min(float(post.score_thresh), score_thresh))
    try:
        for index in tqdm(range(len(dataset)), desc="real frames", unit="frame", disable=not progress):
            item = dataset.load(index)
            batch = collate_frames([item])
            batch["points"], batch["batch"] = batch["points"].to(model.device), batch["batch"].to(model.device)
            with torch.no_grad():
                pred = model.predict_step(batch, index)[0]
            det = pred["boxes"]
            bbox_2d = np.array([o.bbox for o in pred["objects"]], dtype=np.float64).reshape(-1, 4)
            scores = det.scores if det.scores is not None else torch.ones(len(det))
            record = classify_frame(det.boxes, scores, bbox_2d, item["annos"], item["calib"], item["image_size"],
                                    pcr, score_thresh, iou_thresh)
            image_path = None
            if out_dir is not None:
                title = (f"{item['frame_id']}: {record['cars_found']}/{record['cars_in_range']} cars found, "
                         f"{record['false_positives']} false positives (score >= {score_thresh:g})")
                image = render_frame(item["points"], record, pcr, title)
                image_path = out_dir / "bev" / f"{item['frame_id']}.png"
                _write_png(image_path, image)
            frames.append({"frame_id": item["frame_id"], "points": int(len(item["points"])),
                           **{k: v for k, v in record.items() if k not in ("car_boxes", "other_boxes", "counted")},
                           "image": None if image_path is None else str(image_path)})
    finally:
        model.train(was_training)
        model.result_dir, model.hparams.postprocess = result_dir, post
    counts = ("cars_in_range", "cars_found", "false_positives", "out_of_view", "in_dontcare", "matches", "detections")
    report = {
        "folder": str(root / split_dir),
        "score_thresh": score_thresh,
        "iou_thresh": iou_thresh,
        "point_cloud_range": pcr,
        "input": "the camera field of view within the range (as in training)" if fov_only
        else "the whole scan within the range",
        "rules": RULES.format(score=score_thresh, iou=iou_thresh),
        "frames": frames,
        "total": {"frames": len(frames), **{k: sum(f[k] for f in frames) for k in counts}},
    }
    report["markdown"] = format_markdown(report)
    if out_dir is not None:
        atomic_write_text(out_dir / "real_scans.md", report["markdown"])
        atomic_write_text(out_dir / "real_scans.json", json.dumps(report, indent=2))
    return report


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
