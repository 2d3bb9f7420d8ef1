"""How close synthetic LiDAR frames come to real KITTI scans: the same statistics on both, side by side.

Per data set (frames of a KITTI object folder):

* **points per frame**: every return in the ``.bin`` (all 360 degrees; the file size / 16), and those in the left
  camera's view (``geo3d.io.kitti.points_in_image_fov``: what the labels and the detector see);
* **histograms** over the points in the camera's view, as shares of those points: range (3D distance from the
  sensor, 0-80 m in 2 m bins), height above the ground (-1 to 4 m in 0.1 m bins; see below) and reflectance
  (0-1 in 0.05 bins centred on multiples of 0.05: KITTI rounds reflectance to 0.01); values outside the bins
  are counted in the share's denominator but not drawn;
* **points on a car**: for every fully visible ``Car`` label (KITTI occlusion level 0, as all 4 cars of the shared
  real frames are; ``max_occlusion`` changes it), the returns of the whole scan inside its box
  (:func:`geo3d.types.points_in_boxes`) against the horizontal distance of the box centre from the sensor; the
  median per distance bin (0-10, 10-20, 20-30, 30-40, 40-60 m), and a power law ``n = a / d^b`` fitted by least
  squares of ``log n`` on ``log d`` over the cars with at least one point, evaluated at 10, 20 and 40 m. Real
  samples are few (the three shared frames hold four cars), so the fitted curves compare where the bins cannot.

**Ground**: one plane per frame, by RANSAC on ground candidates. Candidates are the points 3-40 m from the sensor
(horizontally) that lie within 0.25 m of the 10th-percentile height of their 2 m x 2 m cell (this drops walls,
cars and crowns, whose cells are dominated by the ground around them, and keeps a few roofs, which RANSAC
rejects). 200 planes through 3 random candidates (``numpy.random.default_rng(seed)``, so the fit is
deterministic), tilted at most 15 degrees from horizontal, are scored by their candidates within 0.1 m; the best
plane is refined by a least-squares fit (SVD) to its inliers. The height of a point is its signed distance to
the plane (up positive). A frame without a plausible plane falls back to a horizontal plane at the candidates'
median height. One plane per frame is right for KITTI's mostly flat streets within 40 m; slopes and bumps
beyond it show as spread in the height histogram, on both sides alike.

**Comparison** (:func:`compare_statistics`): the relative difference ``(synthetic - real) / real`` of every
statistic with a real value, flagged where it exceeds 25 % (issue 11's target) for the counts it targets (points
per frame, points on a car per distance bin and on the fitted curve); for each histogram, the total-variation
distance (half the L1 distance of the two share vectors: 0 same, 1 disjoint).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from geo3d.io.atomic import atomic_write_text
from geo3d.io.kitti import find_kitti_frames, objects_to_boxes_lidar, points_in_image_fov, read_frame
from geo3d.types.boxes import points_in_boxes

RANGE_BINS = np.arange(0.0, 82.0, 2.0)
HEIGHT_BINS = np.round(np.arange(-1.0, 4.0001, 0.1), 2)
# KITTI stores reflectance rounded to 0.01: bins of 0.05 whose edges lie half a step off the rounded values
# (-0.005, 0.045, ...), so each holds exactly five of them whatever the float rounding.
INTENSITY_BINS = np.round(np.arange(21 + 1) * 0.05 - 0.005, 3)
HISTOGRAMS = {"range_m": RANGE_BINS, "height_m": HEIGHT_BINS, "intensity": INTENSITY_BINS}
DISTANCE_BINS = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 40.0), (40.0, 60.0))
FIT_DISTANCES = (10.0, 20.0, 40.0)
FLAG = 0.25  # relative difference flagged in the table


def ground_candidates(points: np.ndarray, cell: float = 2.0, min_range: float = 3.0, max_range: float = 40.0,
                      percentile: float = 10.0, band: float = 0.25) -> np.ndarray:
    """Points likely on the ground: near their cell's low height (see the module docstring).

    Args:
        points: (N, >=3) ``x, y, z`` metres, LiDAR frame.
        cell: cell size, metres.
        min_range, max_range: horizontal distance band, metres.
        percentile: the cell's reference height percentile.
        band: metres above the reference height still taken.

    Returns:
        (M, 3) float64 candidate points.
    """
    p = np.asarray(points, dtype=np.float64)[:, :3]
    r = np.hypot(p[:, 0], p[:, 1])
    p = p[(r >= min_range) & (r <= max_range)]
    if len(p) == 0:
        return p
    ij = np.floor(p[:, :2] / cell).astype(np.int64)
    key = (ij[:, 0] + 100_000) * 200_003 + (ij[:, 1] + 100_000)
    order = np.lexsort((p[:, 2], key))
    _, start, count = np.unique(key[order], return_index=True, return_counts=True)
    low = p[order, 2][start + np.floor(percentile / 100 * (count - 1)).astype(np.int64)]
    reference = np.repeat(low, count)  # per sorted point, its cell's reference height
    keep = np.empty(len(p), dtype=bool)
    keep[order] = p[order, 2] <= reference + band
    return p[keep]


def fit_ground_plane(points: np.ndarray, seed: int = 0, iterations: int = 200, threshold: float = 0.1,
                     max_tilt_deg: float = 15.0, max_candidates: int = 20000) -> np.ndarray:
    """Fit the ground plane of a LiDAR frame (RANSAC on :func:`ground_candidates`, then least squares).

    Args:
        points: (N, >=3) ``x, y, z`` metres, LiDAR frame (z up).
        seed: RANSAC's random seed.
        iterations: planes tried.
        threshold: inlier distance, metres.
        max_tilt_deg: largest angle between a plane's normal and +z.
        max_candidates: candidates scored per plane (a random subset when there are more).

    Returns:
        (4,) float64 ``nx, ny, nz, d`` with a unit normal, ``nz > 0``: height above ground = ``n . p + d``.
    """
    rng = np.random.default_rng(seed)
    cand = ground_candidates(points)
    if len(cand) < 3:
        z = float(np.median(np.asarray(points)[:, 2])) if len(points) else 0.0
        return np.array([0.0, 0.0, 1.0, -z])
    scored = cand if len(cand) <= max_candidates else cand[rng.choice(len(cand), max_candidates, replace=False)]
    triples = scored[rng.integers(0, len(scored), size=(iterations, 3))]  # (I, 3, 3)
    normal = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    length = np.linalg.norm(normal, axis=1)
    ok = length > 1e-9
    normal[ok] /= length[ok, None]
    normal *= np.sign(normal[:, 2:3] + (normal[:, 2:3] == 0))
    ok &= normal[:, 2] >= math.cos(math.radians(max_tilt_deg))
    if not ok.any():
        return np.array([0.0, 0.0, 1.0, -float(np.median(cand[:, 2]))])
    normal, anchor = normal[ok], triples[ok, 0]
    d = -(normal * anchor).sum(1)
    counts = (np.abs(scored @ normal.T + d) < threshold).sum(0)
    best = int(np.argmax(counts))
    inliers = cand[np.abs(cand @ normal[best] + d[best]) < threshold]
    centre = inliers.mean(0)
    n = np.linalg.svd(inliers - centre, full_matrices=False)[2][2]
    n = n if n[2] > 0 else -n
    return np.array([*n, -float(n @ centre)])


def car_point_counts(points: np.ndarray, boxes: torch.Tensor) -> np.ndarray:
    """(K,) int64 returns inside each (K, 7) LiDAR box (``points``: (N, >=3) metres); chunked over points."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    pts = torch.from_numpy(np.ascontiguousarray(np.asarray(points)[:, :3], dtype=np.float32))
    counts = torch.zeros(len(boxes), dtype=torch.int64)
    for chunk in pts.split(32768):
        counts += points_in_boxes(chunk, boxes.float()).sum(0)
    return counts.numpy()


def frame_statistics(points: np.ndarray, objects: list, calib, image_size: tuple[int, int],
                     car_types: tuple[str, ...] = ("Car",), seed: int = 0, max_occlusion: int | None = 0) -> dict:
    """The statistics of one frame.

    Args:
        points: (N, 4) float32 ``x, y, z, reflectance`` (metres; reflectance in [0, 1]), LiDAR frame.
        objects: the frame's KITTI label objects (None or empty: no cars).
        calib: the frame's calibration.
        image_size: (width, height) pixels of the left image.
        car_types: label types counted as cars.
        seed: the ground fit's seed.
        max_occlusion: count only cars whose KITTI occlusion level is at most this (default 0: fully visible,
            like all 4 cars of the shared real frames; points on a partly hidden car depend on what hides it, not
            on the sensor); None: every car.

    Returns:
        ``points`` (N), ``points_in_view``, ``ground`` (the plane, 4 floats), ``values`` (dict of (M,) float64
        arrays over the points in view: ``range_m``, ``height_m``, ``intensity``) and ``cars`` (per car:
        ``type``, ``distance_m`` horizontal, ``points``).
    """
    points = np.asarray(points)
    view = points[points_in_image_fov(points[:, :3], calib, image_size)]
    plane = fit_ground_plane(points, seed=seed)
    values = {
        "range_m": np.linalg.norm(view[:, :3].astype(np.float64), axis=1),
        "height_m": view[:, :3].astype(np.float64) @ plane[:3] + plane[3],
        "intensity": view[:, 3].astype(np.float64),
    }
    objects = [o for o in objects or [] if max_occlusion is None or o.type not in car_types
               or 0 <= o.occluded <= max_occlusion]
    cars = objects_to_boxes_lidar(objects, calib, car_types)
    counts = car_point_counts(points, cars.boxes)
    car_rows = [{"type": name, "distance_m": float(math.hypot(*cars.boxes[j, :2].tolist())), "points": int(counts[j])}
                for j, name in enumerate(cars.names())]
    return {"points": int(len(points)), "points_in_view": int(len(view)), "ground": plane.tolist(),
            "values": values, "cars": car_rows}


def fit_power_law(distance: np.ndarray, points: np.ndarray) -> dict | None:
    """Least-squares fit of ``log n = log a - b log d`` over the cars with ``n >= 1``.

    Args:
        distance: (K,) metres.
        points: (K,) returns per car.

    Returns:
        ``{"a", "b", "cars"}``, or None with fewer than 2 usable cars at distinct distances.
    """
    d, n = np.asarray(distance, float), np.asarray(points, float)
    ok = (n >= 1) & (d > 0)
    if ok.sum() < 2 or np.ptp(np.log(d[ok])) < 1e-9:
        return None
    slope, intercept = np.polyfit(np.log(d[ok]), np.log(n[ok]), 1)
    return {"a": float(math.exp(intercept)), "b": float(-slope), "cars": int(ok.sum())}


def dataset_statistics(folder: str | os.PathLike, frames: int | None = None, car_types: tuple[str, ...] = ("Car",),
                       seed: int = 0, progress: bool = False, max_occlusion: int | None = 0) -> dict:
    """The statistics of a KITTI folder's frames, pooled.

    Args:
        folder: a KITTI ``training``-style folder or its parent (velodyne/, calib/, label_2/ optional).
        frames: use the first ``frames`` frame ids (sorted); None: all.
        car_types: label types counted as cars.
        seed: the ground fits' seed.
        progress: show a progress bar.
        max_occlusion: see :func:`frame_statistics` (default 0: fully visible cars only).

    Returns:
        A JSON-ready dict: ``folder``, ``frame_ids``, ``points_per_frame``, ``points_in_view_per_frame`` (lists),
        ``mean_points``, ``mean_points_in_view``, ``histograms`` (name -> ``edges``, ``share``), ``medians``
        (name -> float), ``cars`` (per car: ``frame_id``, ``type``, ``distance_m``, ``points``), ``distance_bins``
        (per bin: ``bin`` "lo-hi", ``cars``, ``median_points`` or None), ``fit`` (:func:`fit_power_law`) and
        ``fitted_points`` (``"10"``, ``"20"``, ``"40"`` m -> points on the curve, or None).

    Raises:
        InputError: not a KITTI folder, or a malformed file.
    """
    from tqdm import tqdm

    root, split_dir, ids = find_kitti_frames(folder)
    if frames is not None:
        if frames < 1:
            raise ValueError(f"frames: expected at least 1, got {frames}")
        ids = ids[:frames]
    per_frame, pooled, cars = [], {k: [] for k in HISTOGRAMS}, []
    for frame_id in tqdm(ids, desc=f"statistics {Path(folder).name}", unit="frame", disable=not progress):
        frame = read_frame(root, frame_id, split_dir=split_dir)
        stats = frame_statistics(frame.points, frame.objects, frame.calib, frame.image_size, car_types, seed,
                                 max_occlusion)
        per_frame.append(stats)
        for k in HISTOGRAMS:
            pooled[k].append(stats["values"][k])
        cars += [{"frame_id": frame_id, **c} for c in stats["cars"]]
    values = {k: np.concatenate(v) for k, v in pooled.items()}
    histograms = {k: {"edges": edges.tolist(),
                      "share": (np.histogram(values[k], edges)[0] / max(len(values[k]), 1)).tolist()}
                  for k, edges in HISTOGRAMS.items()}
    distance = np.array([c["distance_m"] for c in cars])
    counts = np.array([c["points"] for c in cars])
    bins = []
    for lo, hi in DISTANCE_BINS:
        sel = (distance >= lo) & (distance < hi) if len(cars) else np.zeros(0, dtype=bool)
        bins.append({"bin": f"{lo:g}-{hi:g}", "cars": int(sel.sum()),
                     "median_points": float(np.median(counts[sel])) if sel.any() else None})
    fit = fit_power_law(distance, counts)
    return {
        "folder": str(root / split_dir),
        "frame_ids": ids,
        "points_per_frame": [s["points"] for s in per_frame],
        "points_in_view_per_frame": [s["points_in_view"] for s in per_frame],
        "mean_points": float(np.mean([s["points"] for s in per_frame])),
        "mean_points_in_view": float(np.mean([s["points_in_view"] for s in per_frame])),
        "ground_planes": [s["ground"] for s in per_frame],
        "histograms": histograms,
        "medians": {k: float(np.median(v)) if len(v) else float("nan") for k, v in values.items()},
        "cars": cars,
        "distance_bins": bins,
        "fit": fit,
        "fitted_points": {f"{d:g}": (fit["a"] / d ** fit["b"] if fit else None) for d in FIT_DISTANCES},
    }


def _relative(real: float | None, synth: float | None) -> float | None:
    if real is None or synth is None or not math.isfinite(real) or not math.isfinite(synth) or real == 0:
        return None
    return (synth - real) / real


def compare_statistics(real: dict, synth: dict, flag: float = FLAG) -> dict:
    """Side-by-side rows of two :func:`dataset_statistics` results.

    Returns:
        ``rows``: per statistic ``statistic``, ``real``, ``synth`` (numbers or None), ``relative`` ((synth - real) /
        real, or None without a real value or for the median height, whose real value is near 0), ``target``
        (whether issue 11's 25 % bound applies), ``flag`` (target and ``|relative| > flag``, or None when there is
        no relative difference), ``note``; ``histogram_distance``: name -> total-variation distance; ``flagged``:
        the flagged statistics' names; ``unknown``: target statistics without a relative difference (no real
        cars in a bin).
    """
    rows = []

    def add(name: str, r, s, target: bool, note: str = "", relative: bool = True) -> None:
        rel = _relative(r, s) if relative else None
        rows.append({"statistic": name, "real": r, "synth": s, "relative": rel, "target": target,
                     "flag": None if rel is None or not target else abs(rel) > flag, "note": note})

    add("points per frame (mean)", real["mean_points"], synth["mean_points"], True)
    add("points in camera view per frame (mean)", real["mean_points_in_view"], synth["mean_points_in_view"], True)
    add("median range in view (m)", real["medians"]["range_m"], synth["medians"]["range_m"], False)
    # a height near 0 makes a relative difference meaningless: the table shows the difference in metres
    add("median height above ground in view (m)", real["medians"]["height_m"], synth["medians"]["height_m"], False,
        relative=False)
    add("median reflectance in view", real["medians"]["intensity"], synth["medians"]["intensity"], False)
    for rb, sb in zip(real["distance_bins"], synth["distance_bins"]):
        add(f"points on a car, {rb['bin']} m (median)", rb["median_points"], sb["median_points"], True,
            f"cars: {rb['cars']} real, {sb['cars']} synthetic")
    for d in FIT_DISTANCES:
        key = f"{d:g}"
        add(f"points on a car at {key} m (fitted a / d^b)", real["fitted_points"][key], synth["fitted_points"][key],
            True)
    distance = {}
    for name in HISTOGRAMS:
        p = np.asarray(real["histograms"][name]["share"])
        q = np.asarray(synth["histograms"][name]["share"])
        distance[name] = float(0.5 * np.abs(p / max(p.sum(), 1e-12) - q / max(q.sum(), 1e-12)).sum())
    return {
        "rows": rows,
        "histogram_distance": distance,
        "flagged": [r["statistic"] for r in rows if r["flag"]],
        "unknown": [r["statistic"] for r in rows if r["target"] and r["flag"] is None],
    }


def _num(v) -> str:
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def format_markdown(real: dict, synth: dict, comparison: dict, flag: float = FLAG) -> str:
    """The comparison as a markdown table, with the fits and the histogram distances below it."""
    lines = [f"| statistic | real ({len(real['frame_ids'])} frames) | synthetic ({len(synth['frame_ids'])} frames) | "
             f"synthetic vs real | over {flag:.0%} |", "|---|---|---|---|---|"]
    for r in comparison["rows"]:
        if r["relative"] is not None:
            rel = f"{r['relative']:+.1%}"
        elif r["real"] is not None and r["synth"] is not None and r["statistic"].endswith("(m)"):
            rel = f"{r['synth'] - r['real']:+.2f} m"
        else:
            rel = "n/a"
        mark = "" if not r["target"] else ("n/a" if r["flag"] is None else ("**yes**" if r["flag"] else "no"))
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"| {r['statistic']}{note} | {_num(r['real'])} | {_num(r['synth'])} | {rel} | {mark} |")
    lines.append("")
    for name, stats in (("real", real), ("synthetic", synth)):
        fit = stats["fit"]
        text = (f"points on a car = {fit['a']:.4g} / d^{fit['b']:.3g} (d in metres, {fit['cars']} cars)" if fit
                else "too few cars with points to fit")
        lines.append(f"- {name}: {text}; cars with 0 points: {sum(c['points'] == 0 for c in stats['cars'])} of "
                     f"{len(stats['cars'])}.")
    hist = comparison["histogram_distance"]
    lines.append("- histogram total-variation distance (0 same, 1 disjoint), points in camera view: range "
                 f"{hist['range_m']:.2f}, height above ground {hist['height_m']:.2f}, reflectance "
                 f"{hist['intensity']:.2f}.")
    lines.append(f"- flagged (over {flag:.0%}): {', '.join(comparison['flagged']) or 'none'}; no real value to "
                 f"compare: {', '.join(comparison['unknown']) or 'none'}.")
    lines.append(f"- real: `{real['folder']}`; synthetic: `{synth['folder']}`.")
    return "\n".join(lines) + "\n"


def compare_kitti_folders(real: str | os.PathLike, synth: str | os.PathLike, synth_frames: int | None = None,
                          real_frames: int | None = None, seed: int = 0, progress: bool = False) -> dict:
    """Statistics of a real and a synthetic KITTI folder, compared.

    Args:
        real: the real frames' folder (KITTI ``training``-style or its parent).
        synth: the synthetic frames' folder.
        synth_frames: the first this many synthetic frames (None: all).
        real_frames: the first this many real frames (None: all).
        seed: the ground fits' seed.
        progress: progress bars.

    Returns:
        ``real``, ``synth`` (:func:`dataset_statistics`), ``comparison`` (:func:`compare_statistics`) and
        ``markdown`` (:func:`format_markdown`).
    """
    real_stats = dataset_statistics(real, real_frames, seed=seed, progress=progress)
    synth_stats = dataset_statistics(synth, synth_frames, seed=seed, progress=progress)
    comparison = compare_statistics(real_stats, synth_stats)
    return {"real": real_stats, "synth": synth_stats, "comparison": comparison,
            "markdown": format_markdown(real_stats, synth_stats, comparison)}


def write_report(result: dict, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write :func:`compare_kitti_folders`'s result as ``out/realism.md`` and ``out/realism.json`` (atomically)."""
    out = Path(out)
    md, js = out / "realism.md", out / "realism.json"
    atomic_write_text(md, "# Synthetic vs real LiDAR statistics\n\n" + result["markdown"])
    atomic_write_text(js, json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=2))
    return md, js
