"""Where a detector's 3D AP is lost: label-replacement ("oracle") APs, box-size agreement and a bootstrap spread.

* :func:`oracle_aps` replaces some box parameters of every detection that matches a label (the nearest label of the
  class within ``max_distance`` metres on the ground plane) with the label's, and evaluates again. The AP a
  replacement recovers is what errors in those parameters cost.
* :func:`box_agreement` compares the matched detections' sizes and vertical extent with their labels (spread,
  correlation, error).
* :func:`bootstrap_ap` resamples the frames with replacement: the spread of the AP that a set of this many frames
  can resolve.

All in the KITTI camera frame of the label files: ``location`` is the bottom centre, y points down, dimensions are
``(h, w, l)``. ``scripts/detection_error_analysis.py`` runs the three on a prediction folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from geo3d.io.kitti import KittiObject
from pipelines.detection.kitti_eval import kitti_eval

FIELDS = ("bottom", "height", "ground_position", "width_length", "heading")
"""Box parameters :func:`oracle_aps` can take from the label."""


def match_to_labels(gt_annos: Sequence[Sequence[KittiObject]], dt_annos: Sequence[Sequence[KittiObject]],
                    cls: str = "Car", max_distance: float = 1.0,
                    min_score: float = 0.0) -> list[list[int | None]]:
    """The label each detection matches: the nearest ``cls`` label by ground-plane (x, z) distance.

    Args:
        gt_annos: per frame, label objects (camera frame).
        dt_annos: per frame, detections (same order).
        cls: the class of both.
        max_distance: metres; a nearest label farther than this leaves the detection unmatched.
        min_score: detections scoring less are left unmatched.

    Returns:
        Per frame, per detection, the index into that frame's ``gt_annos`` or None.
    """
    out = []
    for gts, dts in zip(gt_annos, dt_annos, strict=True):
        labels = [(i, g) for i, g in enumerate(gts) if g.type == cls]
        frame: list[int | None] = []
        for d in dts:
            best, best_distance = None, max_distance
            if d.type == cls and (d.score is None or d.score >= min_score):
                for i, g in labels:
                    distance = float(np.hypot(d.location[0] - g.location[0], d.location[2] - g.location[2]))
                    if distance <= best_distance:
                        best, best_distance = i, distance
            frame.append(best)
        out.append(frame)
    return out


def replace_fields(detection: KittiObject, label: KittiObject, fields: Sequence[str]) -> KittiObject:
    """A copy of ``detection`` with the named :data:`FIELDS` taken from ``label``.

    ``bottom`` is the location's y (the bottom face), ``height`` the h dimension (the bottom stays),
    ``ground_position`` the location's x and z, ``width_length`` w and l, ``heading`` rotation_y.
    """
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; expected some of {FIELDS}")
    x, y, z = detection.location
    h, w, length = detection.dimensions
    ry = detection.rotation_y
    if "bottom" in fields:
        y = label.location[1]
    if "height" in fields:
        h = label.dimensions[0]
    if "ground_position" in fields:
        x, z = label.location[0], label.location[2]
    if "width_length" in fields:
        w, length = label.dimensions[1], label.dimensions[2]
    if "heading" in fields:
        ry = label.rotation_y
    return dataclasses.replace(detection, location=(x, y, z), dimensions=(h, w, length), rotation_y=ry)


def oracle_aps(gt_annos: Sequence[Sequence[KittiObject]], dt_annos: Sequence[Sequence[KittiObject]],
               variants: Sequence[Sequence[str]], cls: str = "Car", max_distance: float = 1.0,
               difficulty: str = "moderate") -> list[dict[str, float]]:
    """3D and BEV AP (R40, official overlaps) with matched detections' parameters replaced by their labels'.

    Args:
        gt_annos, dt_annos: per frame, labels and detections (camera frame; detections with scores).
        variants: each a list of :data:`FIELDS` to replace (empty: the detections as they are).
        cls: the class evaluated and matched.
        max_distance: ground-plane matching radius, metres (:func:`match_to_labels`).
        difficulty: ``easy``, ``moderate`` or ``hard``.

    Returns:
        Per variant ``{"3d": AP, "bev": AP}`` in percent.
    """
    matches = match_to_labels(gt_annos, dt_annos, cls, max_distance)
    out = []
    for fields in variants:
        replaced = [[d if m is None else replace_fields(d, gts[m], fields) for d, m in zip(dts, frame)]
                    for gts, dts, frame in zip(gt_annos, dt_annos, matches)]
        ap = kitti_eval(gt_annos, replaced, classes=(cls,), metrics=("bev", "3d"))
        out.append({"3d": ap[f"{cls}_3d_R40_{difficulty}"], "bev": ap[f"{cls}_bev_R40_{difficulty}"]})
    return out


def box_agreement(gt_annos: Sequence[Sequence[KittiObject]], dt_annos: Sequence[Sequence[KittiObject]],
                  cls: str = "Car", max_distance: float = 1.0, min_score: float = 0.3) -> dict[str, dict[str, float]]:
    """How the matched detections' height, width, length, bottom and top agree with their labels'.

    Args:
        gt_annos, dt_annos: per frame, labels and detections (camera frame).
        cls, max_distance: matching (:func:`match_to_labels`).
        min_score: detections scoring less are left out.

    Returns:
        Per quantity (``height``, ``width``, ``length``, ``bottom``, ``top``; metres, bottom and top as heights,
        up positive): ``label_std``, ``pred_std``, ``correlation`` (Pearson; NaN when either spread is 0),
        ``error_mean`` and ``error_std`` (prediction minus label), ``error_median_abs``; and ``"count"`` (the
        number of pairs, under every quantity). Empty dict when nothing matches.
    """
    matches = match_to_labels(gt_annos, dt_annos, cls, max_distance, min_score)
    pairs = [(d, gts[m]) for gts, dts, frame in zip(gt_annos, dt_annos, matches)
             for d, m in zip(dts, frame) if m is not None]
    if not pairs:
        return {}

    def quantities(o: KittiObject) -> list[float]:
        h, w, length = o.dimensions
        return [h, w, length, -o.location[1], -o.location[1] + h]  # camera y points down

    pred = np.array([quantities(d) for d, _ in pairs], dtype=np.float64)
    label = np.array([quantities(g) for _, g in pairs], dtype=np.float64)
    out = {}
    for k, name in enumerate(("height", "width", "length", "bottom", "top")):
        p, g = pred[:, k], label[:, k]
        spread = p.std() > 0 and g.std() > 0
        error = p - g
        out[name] = {"label_std": float(g.std()), "pred_std": float(p.std()),
                     "correlation": float(np.corrcoef(p, g)[0, 1]) if spread else float("nan"),
                     "error_mean": float(error.mean()), "error_std": float(error.std()),
                     "error_median_abs": float(np.median(np.abs(error))), "count": float(len(pairs))}
    return out


def bootstrap_ap(gt_annos: Sequence[Sequence[KittiObject]], dt_annos: Sequence[Sequence[KittiObject]],
                 draws: int = 200, seed: int = 0, cls: str = "Car", metric: str = "3d",
                 difficulty: str = "moderate") -> dict[str, float]:
    """The spread of an AP over frame sets resampled with replacement.

    Args:
        gt_annos, dt_annos: per frame, labels and detections.
        draws: resampled sets.
        seed: numpy generator seed (the same seed gives the same numbers).
        cls, metric, difficulty: the AP (R40, official overlaps), e.g. Car 3D moderate.

    Returns:
        ``ap`` (on all frames), ``std``, ``p05`` and ``p95`` (percentiles of the resampled APs), in percent.
    """
    key = f"{cls}_{metric}_R40_{difficulty}"
    full = kitti_eval(gt_annos, dt_annos, classes=(cls,), metrics=(metric,))[key]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        index = rng.integers(0, len(gt_annos), len(gt_annos))
        sample = kitti_eval([gt_annos[i] for i in index], [dt_annos[i] for i in index], classes=(cls,),
                            metrics=(metric,))
        values.append(sample[key])
    values = np.array(values)
    return {"ap": float(full), "std": float(values.std()), "p05": float(np.percentile(values, 5)),
            "p95": float(np.percentile(values, 95))}
