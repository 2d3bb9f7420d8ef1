"""KITTI object detection evaluation on the CPU: 2D bbox, BEV and 3D AP (R11 and R40) and AOS.

The protocol is the official KITTI one, as ``kitti_object_eval_python`` (OpenPCDet, mmdetection3d)
implements it, re-written here:

* Per class and difficulty (easy / moderate / hard: minimum 2D box height 40 / 25 / 25 px, maximum
  occlusion 0 / 1 / 2, maximum truncation 0.15 / 0.30 / 0.50) every ground truth (GT) is *valid*
  (it counts), *ignored* (a neighbouring class: Van for Car, Person_sitting for Pedestrian; or the class
  itself failing the difficulty filter) or *not evaluated* (any other type). A detection lower than the
  minimum height is ignored (whatever its class, as in the official code), else it is valid when of the
  class and not evaluated otherwise.
* Matching is greedy in label order: each GT takes one free detection whose overlap is above the
  class threshold (IoU 0.7 Car, 0.5 Pedestrian and Cyclist; the "loose" set 0.5 / 0.25 for bev/3d).
  A match involving an ignored GT or an ignored detection is neither a true positive (TP) nor a false
  positive (FP); an unmatched valid GT is a false negative, an unmatched valid detection a FP unless
  its 2D box lies in a DontCare region (intersection over its own area above the threshold).
* Score thresholds: a first matching without threshold (each GT takes its highest-scoring detection)
  gives the TP scores; of them, up to 41 are kept, one per 1/40 step of recall (the official
  ``get_thresholds``). At each threshold the matching is redone with the detections scoring at least
  that much (each GT now takes the valid detection of highest overlap), giving a precision; precision
  is made non-increasing (max to the right). AP_R11 averages points 0, 4, ..., 40 and AP_R40 points
  1 ... 40, in percent. AOS is the same curve with each TP weighted by (1 + cos(alpha_gt - alpha_dt)) / 2
  (bbox matching), reported when the detections carry an alpha (not KITTI's "unknown" -10).

Deliberate differences from ``kitti_object_eval_python``:

* Rotated BEV / 3D IoU is exact (``ops.boxes`` polygon clipping). The official numba kernel returns
  about 0 for identical rotated boxes (OpenPCDet #972).
* A score threshold at which no detection is counted gives precision 0 (the official code divides 0 by
  0 and returns NaN).
* ``dontcare_all_metrics=True`` applies the DontCare rule to bev and 3d too, as the official C++
  devkit (``evaluate_object.cpp``) does; the Python port, and so the default here, applies it to the
  bbox metric only.

Why our own code: no maintained library implements this protocol without the #972 kernel. The greedy
match runs for every frame x 41 thresholds x class x difficulty x metric, so it is a numba loop (a
padded numpy version would allocate frames x thresholds x detections arrays per GT and be slower).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np
import torch

from ops.boxes import boxes_iou_3d, boxes_iou_bev

if TYPE_CHECKING:
    from geo3d.io.kitti import KittiObject

METRICS = ("bbox", "bev", "3d")
DIFFICULTIES = ("easy", "moderate", "hard")

#: Minimum overlap per class for the metrics (bbox, bev, 3d): the official set, then the "loose" set.
MIN_OVERLAPS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "Car": ((0.7, 0.7, 0.7), (0.7, 0.5, 0.5)),
    "Pedestrian": ((0.5, 0.5, 0.5), (0.5, 0.25, 0.25)),
    "Cyclist": ((0.5, 0.5, 0.5), (0.5, 0.25, 0.25)),
    "Van": ((0.7, 0.7, 0.7), (0.7, 0.5, 0.5)),
    "Person_sitting": ((0.5, 0.5, 0.5), (0.5, 0.25, 0.25)),
    "Truck": ((0.7, 0.7, 0.7), (0.5, 0.5, 0.5)),
}

_MIN_HEIGHT = (40.0, 25.0, 25.0)  # pixels, per difficulty
_MAX_OCCLUSION = (0, 1, 2)
_MAX_TRUNCATION = (0.15, 0.3, 0.5)
_NEIGHBOUR = {"car": "van", "pedestrian": "person_sitting"}
_NUM_POINTS = 41  # recall sample points 0, 1/40, ..., 1
_NO_ALPHA = -10.0  # KITTI's value for "alpha unknown"

# Object states per class and difficulty (the official codes).
_VALID, _IGNORED, _OTHER = 0, 1, -1


def camera_to_z_up_boxes(location: np.ndarray, dimensions: np.ndarray, rotation_y: np.ndarray) -> np.ndarray:
    """Map KITTI camera-frame boxes to z-up boxes by a fixed rotation of the axes (no calibration).

    The camera frame is x right, y down, z forward; the z-up frame is ``X = z, Y = -x, Z = -y`` (a proper
    rotation, so IoUs are unchanged). The KITTI heading ``(cos ry, 0, -sin ry)`` becomes
    ``yaw = -ry - pi / 2`` about +Z.

    Args:
        location: (N, 3) float, metres: the bottom centre ``(x, y, z)`` in the rectified camera frame.
        dimensions: (N, 3) float, metres: ``(h, w, l)``.
        rotation_y: (N,) float, radians about the camera y axis.

    Returns:
        (N, 7) float64 ``(x, y, z, dx, dy, dz, yaw)`` with z at the box centre, ``dx = l, dy = w, dz = h``.
    """
    location = np.asarray(location, dtype=np.float64).reshape(-1, 3)
    h, w, length = np.asarray(dimensions, dtype=np.float64).reshape(-1, 3).T
    ry = np.asarray(rotation_y, dtype=np.float64).reshape(-1)
    x, y, z = location.T
    return np.stack([z, -x, h / 2 - y, length, w, h, -ry - math.pi / 2], axis=1)


def box2d_overlap(a: np.ndarray, b: np.ndarray, over_first_area: bool = False) -> np.ndarray:
    """Overlap of axis-aligned image boxes.

    Args:
        a: (N, 4) float ``(left, top, right, bottom)`` pixels.
        b: (M, 4) float, same layout.
        over_first_area: divide the intersection by the area of the box of ``a`` instead of the union
            (the official DontCare test).

    Returns:
        (N, M) float64 IoU (or intersection over the area of ``a``); 0 where a denominator is 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    denom = np.broadcast_to(area_a[:, None], inter.shape) if over_first_area else (
        area_a[:, None] + area_b[None, :] - inter
    )
    return np.divide(inter, denom, out=np.zeros_like(inter), where=(inter > 0) & (denom > 0))


@dataclass
class _Objects:
    """The objects of one side (GTs or detections) over all frames, flattened.

    Frame ``f`` owns rows ``offsets[f]:offsets[f + 1]``. ``names`` are lower-case, ``bbox`` is
    (N, 4) pixels, ``boxes`` (N, 7) z-up (see :func:`camera_to_z_up_boxes`), the rest (N,).
    """

    names: np.ndarray
    truncated: np.ndarray
    occluded: np.ndarray
    alpha: np.ndarray
    bbox: np.ndarray
    boxes: np.ndarray
    score: np.ndarray
    offsets: np.ndarray


def _flatten(annos: Sequence[Sequence[KittiObject]], what: str, need_score: bool) -> _Objects:
    """Stack per-frame object lists into flat arrays, checking the fields the evaluation reads."""
    rows, counts = [], []
    for f, frame in enumerate(annos):
        if isinstance(frame, (str, bytes)) or not isinstance(frame, Sequence):
            raise ValueError(f"{what}[{f}]: expected a list of KittiObject, got {type(frame).__name__}")
        counts.append(len(frame))
        for i, obj in enumerate(frame):
            score = getattr(obj, "score", None)
            if need_score and score is None:
                raise ValueError(f"{what}[{f}][{i}].score: expected a float confidence, got None")
            try:
                row = (
                    float(obj.truncated), float(obj.occluded), float(obj.alpha), *map(float, obj.bbox),
                    *map(float, obj.location), *map(float, obj.dimensions), float(obj.rotation_y),
                    float(score) if score is not None else 0.0,
                )
            except (AttributeError, TypeError, ValueError) as err:
                raise ValueError(f"{what}[{f}][{i}]: expected a KittiObject with numeric fields ({err})") from err
            if len(row) != 15:
                raise ValueError(f"{what}[{f}][{i}]: expected bbox of 4 and location, dimensions of 3 values")
            if not all(map(math.isfinite, row)):
                raise ValueError(f"{what}[{f}][{i}]: expected finite numbers, got {row}")
            rows.append((str(obj.type).lower(), row))
    # Columns are copied out contiguous so the numba kernels always see the same array layout.
    values = np.array([r for _, r in rows], dtype=np.float64).reshape(-1, 15).T.copy()
    return _Objects(
        names=np.array([n for n, _ in rows], dtype=object),
        truncated=values[0],
        occluded=values[1],
        alpha=values[2],
        bbox=values[3:7].T,
        boxes=camera_to_z_up_boxes(values[7:10].T, values[10:13].T, values[13]),
        score=values[14],
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    )


def _rotated_iou(dt_boxes: np.ndarray, gt_boxes: np.ndarray, metric: str) -> np.ndarray:
    """(D, G) float64 BEV or 3D IoU of z-up boxes; 0 for boxes without positive size (DontCare)."""
    out = np.zeros((len(dt_boxes), len(gt_boxes)))
    ok_dt = (dt_boxes[:, 3:6] > 0).all(axis=1)
    ok_gt = (gt_boxes[:, 3:6] > 0).all(axis=1)
    if ok_dt.any() and ok_gt.any():
        iou_fn = boxes_iou_bev if metric == "bev" else boxes_iou_3d
        iou = iou_fn(torch.from_numpy(dt_boxes[ok_dt]), torch.from_numpy(gt_boxes[ok_gt]))  # float64 in and out
        out[np.ix_(ok_dt, ok_gt)] = iou.numpy()
    return out


def _frame_overlaps(gt: _Objects, dt: _Objects, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Detection-by-GT overlaps of every frame, each (D_f, G_f) block flattened row-major.

    Returns:
        flat: (sum_f D_f * G_f,) float64; offsets: (F + 1,) int64 into ``flat``.
    """
    blocks = []
    for f in range(len(gt.offsets) - 1):
        g = slice(gt.offsets[f], gt.offsets[f + 1])
        d = slice(dt.offsets[f], dt.offsets[f + 1])
        if metric == "bbox":
            blocks.append(box2d_overlap(dt.bbox[d], gt.bbox[g]).ravel())
        else:
            blocks.append(_rotated_iou(dt.boxes[d], gt.boxes[g], metric).ravel())
    sizes = [len(b) for b in blocks]
    flat = np.concatenate(blocks) if blocks else np.zeros(0)
    return flat, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _dontcare_overlap(gt: _Objects, dt: _Objects) -> np.ndarray:
    """(D,) float64: per detection, the largest share of its 2D box inside one DontCare box of its frame."""
    out = np.zeros(len(dt.score))
    for f in range(len(gt.offsets) - 1):
        g0, g1 = gt.offsets[f], gt.offsets[f + 1]
        d0, d1 = dt.offsets[f], dt.offsets[f + 1]
        regions = gt.bbox[g0:g1][gt.names[g0:g1] == "dontcare"]
        if len(regions) and d1 > d0:
            out[d0:d1] = box2d_overlap(dt.bbox[d0:d1], regions, over_first_area=True).max(axis=1)
    return out


def _gt_states(gt: _Objects, cls: str, difficulty: int) -> np.ndarray:
    """(G,) int64 state of each GT for ``cls`` (lower-case) at ``difficulty``: valid, ignored or other."""
    height = gt.bbox[:, 3] - gt.bbox[:, 1]
    too_hard = (
        (gt.occluded > _MAX_OCCLUSION[difficulty])
        | (gt.truncated > _MAX_TRUNCATION[difficulty])
        | (height <= _MIN_HEIGHT[difficulty])
    )
    state = np.full(len(gt.names), _OTHER, dtype=np.int64)
    state[gt.names == _NEIGHBOUR.get(cls, "")] = _IGNORED
    is_cls = gt.names == cls
    state[is_cls] = np.where(too_hard[is_cls], _IGNORED, _VALID)
    return state


def _dt_states(dt: _Objects, cls: str, difficulty: int) -> np.ndarray:
    """(D,) int64 state of each detection for ``cls`` (lower-case) at ``difficulty``."""
    height = np.abs(dt.bbox[:, 3] - dt.bbox[:, 1])
    state = np.where(dt.names == cls, _VALID, _OTHER).astype(np.int64)
    state[height < _MIN_HEIGHT[difficulty]] = _IGNORED
    return state


@numba.njit(cache=True)
def _greedy_match(overlap, gt_state, dt_state, dt_score, min_overlap, score_threshold, by_score):
    """The official greedy matching in one frame.

    Args:
        overlap: (D, G) float64. gt_state: (G,) int64. dt_state, dt_score: (D,).
        min_overlap: a match needs ``overlap > min_overlap``.
        score_threshold: detections scoring below it take no part.
        by_score: each GT takes the highest-scoring candidate (threshold pass); else the valid candidate
            of highest overlap, or failing that the first ignored candidate (counting pass).

    Returns:
        det_of_gt: (G,) int64 matched detection per GT, -1 for none; taken: (D,) bool.
    """
    num_dt, num_gt = overlap.shape
    taken = np.zeros(num_dt, dtype=np.bool_)
    det_of_gt = np.full(num_gt, -1, dtype=np.int64)
    for g in range(num_gt):
        if gt_state[g] == _OTHER:
            continue
        best, best_key, best_is_valid = -1, -np.inf, False
        for d in range(num_dt):
            if dt_state[d] == _OTHER or taken[d] or dt_score[d] < score_threshold:
                continue
            if overlap[d, g] <= min_overlap:
                continue
            if by_score:
                if dt_score[d] > best_key:
                    best, best_key = d, dt_score[d]
            elif dt_state[d] == _VALID:
                if not best_is_valid or overlap[d, g] > best_key:
                    best, best_key, best_is_valid = d, overlap[d, g], True
            elif best == -1:
                best = d
        if best >= 0:
            taken[best] = True
            det_of_gt[g] = best
    return det_of_gt, taken


@numba.njit(cache=True)
def _true_positive_scores(overlaps, overlap_offsets, gt_offsets, dt_offsets, gt_state, dt_state, dt_score,
                          min_overlap):
    """Scores of the TPs of the threshold pass over all frames: (K,) float64."""
    scores = np.empty(len(gt_state))
    count = 0
    for f in range(len(gt_offsets) - 1):
        g0, g1, d0, d1 = gt_offsets[f], gt_offsets[f + 1], dt_offsets[f], dt_offsets[f + 1]
        block = overlaps[overlap_offsets[f]:overlap_offsets[f + 1]].reshape((d1 - d0, g1 - g0))
        det_of_gt, _ = _greedy_match(block, gt_state[g0:g1], dt_state[d0:d1], dt_score[d0:d1], min_overlap,
                                     -np.inf, True)
        for g in range(g1 - g0):
            d = det_of_gt[g]
            if d >= 0 and gt_state[g0 + g] == _VALID and dt_state[d0 + d] == _VALID:
                scores[count] = dt_score[d0 + d]
                count += 1
    return scores[:count]


@numba.njit(cache=True)
def _counts_at_thresholds(overlaps, overlap_offsets, gt_offsets, dt_offsets, gt_state, dt_state, dt_score,
                          gt_alpha, dt_alpha, dt_dontcare, min_overlap, thresholds):
    """TP, FP, FN and summed orientation similarity at each score threshold: (T, 4) float64."""
    counts = np.zeros((len(thresholds), 4))
    for f in range(len(gt_offsets) - 1):
        g0, g1, d0, d1 = gt_offsets[f], gt_offsets[f + 1], dt_offsets[f], dt_offsets[f + 1]
        block = overlaps[overlap_offsets[f]:overlap_offsets[f + 1]].reshape((d1 - d0, g1 - g0))
        for t in range(len(thresholds)):
            det_of_gt, taken = _greedy_match(block, gt_state[g0:g1], dt_state[d0:d1], dt_score[d0:d1],
                                             min_overlap, thresholds[t], False)
            for g in range(g1 - g0):
                if gt_state[g0 + g] != _VALID:
                    continue
                d = det_of_gt[g]
                if d < 0:
                    counts[t, 2] += 1
                elif dt_state[d0 + d] == _VALID:
                    counts[t, 0] += 1
                    counts[t, 3] += (1.0 + math.cos(gt_alpha[g0 + g] - dt_alpha[d0 + d])) / 2.0
            for d in range(d1 - d0):
                j = d0 + d
                if (dt_state[j] == _VALID and not taken[d] and dt_score[j] >= thresholds[t]
                        and dt_dontcare[j] <= min_overlap):
                    counts[t, 1] += 1
    return counts


def score_thresholds(tp_scores: np.ndarray, num_valid_gt: int) -> np.ndarray:
    """The official choice of score thresholds: one per 1/40 step of recall.

    Walking the TP scores from the highest, score ``i`` (recall ``(i + 1) / n``) becomes the next
    threshold unless recall ``(i + 2) / n`` is strictly nearer the next sample recall; the last score is
    always kept.

    Args:
        tp_scores: (K,) float, scores of the TPs of the threshold pass.
        num_valid_gt: ``n``, the number of valid GTs.

    Returns:
        (T,) float64 thresholds, descending, ``T <= 41``.
    """
    scores = np.sort(np.asarray(tp_scores, dtype=np.float64))[::-1]
    kept, sample_recall = [], 0.0
    for i, score in enumerate(scores):
        last = i == len(scores) - 1
        recall_here = (i + 1) / num_valid_gt
        recall_next = recall_here if last else (i + 2) / num_valid_gt
        if not last and recall_next - sample_recall < sample_recall - recall_here:
            continue
        kept.append(score)
        sample_recall += 1 / (_NUM_POINTS - 1.0)
    return np.array(kept, dtype=np.float64)


def interpolated_ap(values: np.ndarray) -> tuple[float, float]:
    """AP_R11 and AP_R40 of a precision (or orientation similarity) curve, in percent.

    Args:
        values: (T,) float, T <= 41, one per score threshold; missing points count as 0.

    Returns:
        ``(ap_r11, ap_r40)``: the max-to-the-right curve averaged at points 0, 4, ..., 40, and at 1 ... 40.
    """
    curve = np.zeros(_NUM_POINTS)
    curve[: len(values)] = values
    curve = np.maximum.accumulate(curve[::-1])[::-1]
    return float(curve[::4].sum() / 11 * 100), float(curve[1:].sum() / 40 * 100)


def _curves(overlaps: tuple[np.ndarray, np.ndarray], gt: _Objects, dt: _Objects, gt_state: np.ndarray,
            dt_state: np.ndarray, in_dontcare: np.ndarray, min_overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """Precision and mean orientation similarity at each score threshold: two (T,) float64, T <= 41.

    ``overlaps`` is :func:`_frame_overlaps`' output, the states are for one class and difficulty,
    ``in_dontcare`` (D,) is each detection's DontCare share (zeros to disable the rule).
    """
    frames = (*overlaps, gt.offsets, dt.offsets, gt_state, dt_state, dt.score)
    tp_scores = _true_positive_scores(*frames, min_overlap)
    levels = score_thresholds(tp_scores, int((gt_state == _VALID).sum()))
    counts = _counts_at_thresholds(*frames, gt.alpha, dt.alpha, in_dontcare, min_overlap, levels)
    counted = counts[:, 0] + counts[:, 1]  # TP + FP
    precision = np.divide(counts[:, 0], counted, out=np.zeros(len(levels)), where=counted > 0)
    similarity = np.divide(counts[:, 3], counted, out=np.zeros(len(levels)), where=counted > 0)
    return precision, similarity


def _check_arguments(gt_annos, dt_annos, classes, metrics) -> None:
    if len(gt_annos) != len(dt_annos):
        raise ValueError(f"dt_annos: expected one list per frame of gt_annos ({len(gt_annos)}), got {len(dt_annos)}")
    for cls in classes:
        if cls not in MIN_OVERLAPS:
            raise ValueError(f"classes: expected names among {tuple(MIN_OVERLAPS)}, got {cls!r}")
    for metric in metrics:
        if metric not in METRICS:
            raise ValueError(f"metrics: expected names among {METRICS}, got {metric!r}")


def kitti_eval(
    gt_annos: Sequence[Sequence[KittiObject]],
    dt_annos: Sequence[Sequence[KittiObject]],
    classes: Sequence[str] = ("Car", "Pedestrian", "Cyclist"),
    metrics: Sequence[str] = METRICS,
    dontcare_all_metrics: bool = False,
) -> dict[str, float]:
    """The KITTI 3D object benchmark average precisions (see the module docstring for the rules).

    Args:
        gt_annos: per frame, the ground-truth label objects (camera frame, any types incl. DontCare).
        dt_annos: per frame (same order), the detections; each needs a ``score``.
        classes: class names to evaluate, among :data:`MIN_OVERLAPS`.
        metrics: any of ``"bbox"`` (2D image boxes), ``"bev"`` and ``"3d"`` (rotated boxes).
        dontcare_all_metrics: apply the DontCare rule to bev and 3d too (C++ devkit) instead of to bbox
            only (``kitti_object_eval_python``).

    Returns:
        AP in percent (0 for a class without valid GT), keys ``{class}_{metric}_{R11|R40}_{difficulty}``,
        e.g. ``Car_3d_R40_moderate``, for the official overlaps, the same keys ending in ``_loose`` for
        the loose ones (0.5 / 0.25 bev and 3d), and ``{class}_aos_{R11|R40}_{difficulty}`` when
        ``"bbox"`` is evaluated and the detections carry an alpha.

    Raises:
        ValueError: frame counts differ, an unknown class or metric, a detection without score, or a
            non-finite field (the message names ``dt_annos[frame][index]`` or ``gt_annos[...]``).
    """
    _check_arguments(gt_annos, dt_annos, classes, metrics)
    gt = _flatten(gt_annos, "gt_annos", need_score=False)
    dt = _flatten(dt_annos, "dt_annos", need_score=True)
    overlaps = {metric: _frame_overlaps(gt, dt, metric) for metric in metrics}
    dontcare = _dontcare_overlap(gt, dt)
    no_dontcare = np.zeros_like(dontcare)
    with_aos = "bbox" in metrics and bool((dt.alpha != _NO_ALPHA).any())

    results: dict[str, float] = {}
    for cls in classes:
        for level, difficulty in enumerate(DIFFICULTIES):
            gt_state = _gt_states(gt, cls.lower(), level)
            dt_state = _dt_states(dt, cls.lower(), level)
            for metric in metrics:
                in_dontcare = dontcare if metric == "bbox" or dontcare_all_metrics else no_dontcare
                for suffix, overlap_set in zip(("", "_loose"), MIN_OVERLAPS[cls]):
                    min_overlap = overlap_set[METRICS.index(metric)]
                    precision, similarity = _curves(overlaps[metric], gt, dt, gt_state, dt_state, in_dontcare,
                                                    min_overlap)
                    key = f"_{difficulty}{suffix}"
                    results[f"{cls}_{metric}_R11{key}"], results[f"{cls}_{metric}_R40{key}"] = interpolated_ap(
                        precision
                    )
                    if metric == "bbox" and with_aos:
                        results[f"{cls}_aos_R11{key}"], results[f"{cls}_aos_R40{key}"] = interpolated_ap(
                            similarity
                        )
    return results


_KEY = re.compile(r"^(?P<cls>.+)_(?P<metric>bbox|bev|3d|aos)_(?P<points>R11|R40)_(?P<level>easy|moderate|hard)"
                  r"(?P<loose>_loose)?$")


def format_kitti_table(results: dict[str, float]) -> str:
    """A plain-text table of :func:`kitti_eval` results, laid out like OpenPCDet's log.

    One block per class, overlap set and recall-point count (R11 / R40), one row per metric, columns
    easy / moderate / hard, e.g.::

        Car AP_R40@0.70, 0.70, 0.70               easy  moderate      hard
        bbox AP                                95.1234   90.0000   85.5000

    Args:
        results: the dictionary returned by :func:`kitti_eval` (other keys are skipped).

    Returns:
        The table, lines joined with ``"\\n"``.
    """
    table: dict[tuple[str, bool, str], dict[str, dict[str, float]]] = {}
    for key, value in results.items():
        match = _KEY.match(key)
        if match:
            block = table.setdefault((match["cls"], bool(match["loose"]), match["points"]), {})
            block.setdefault(match["metric"], {})[match["level"]] = value
    lines = []
    for (cls, loose, points), rows in table.items():
        overlaps = MIN_OVERLAPS.get(cls, ((math.nan,) * 3,) * 2)[int(loose)]
        title = f"{cls} AP_{points}@" + ", ".join(f"{o:.2f}" for o in overlaps)
        lines.append(f"{title:<36}" + "".join(f"{level:>10}" for level in DIFFICULTIES))
        for metric in (*METRICS, "aos"):
            if metric in rows:
                cells = "".join(f"{rows[metric].get(level, math.nan):>10.4f}" for level in DIFFICULTIES)
                lines.append(f"{metric + ' AP':<36}{cells}")
    return "\n".join(lines)
