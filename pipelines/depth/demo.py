"""The depth stage of ``geo3d demo`` (:func:`run_stage`): the model zoo's depth completion on the shared real
frames against IP-Basic and linear interpolation, beside its model card.

The real part of ``scripts/bench_depth.py``'s protocol (the card's benchmark), with the model ``zoo:omni_dc``
(:func:`geo3d.zoo.checkpoint_path`, completed through :func:`pipelines.depth.predict.complete_frame` as the
benchmark and ``geo3d complete`` do), no training here:

* the KITTI depth-completion frame (``../shared/data/depth/kitti_dc``) from its own LiDAR input, IP-Basic with
  extrapolation and a 100 m maximum depth;
* the indoor frame (``../shared/data/depth/indoor``) from its own 100 points, and from 500 random points and a
  16-beam LiDAR pattern drawn from its ground truth (seed 0), IP-Basic's bilateral variant without extrapolation;
* RMSE and MAE against the ground truth (not capped), as a table, and a comparison picture per frame (image,
  sparse input, completion, ground truth, error, uncertainty).

Without the shared frames the stage says so and shows nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from geo3d.io.shared_data import shared_data_dir
from geo3d.report import StageResult, card_checks

ZOO_MODEL = "omni_dc"
METHODS = {"model": "model", "ip_basic": "IP-Basic", "linear": "linear"}
"""The methods compared (``complete_frame``'s name -> the name on the card)."""
SHOWS = ("the model zoo's depth completion (`zoo:omni_dc`) on the real KITTI and indoor frames against IP-Basic and "
         "linear interpolation (RMSE and MAE), with pictures, beside its model card")


def real_inputs(folder: Path) -> list[dict[str, Any]]:
    """The benchmark's real inputs found under ``folder`` (``../shared/data/depth``).

    Returns:
        Per input: ``set`` (``kitti`` / ``indoor``), ``pattern`` (the benchmark's name), ``card`` (its name on the
        card), ``image`` (H, W, 3) uint8, ``sparse`` and ``gt`` (H, W) float32 metres, and ``ip_basic`` (IP-Basic's
        keyword arguments there).
    """
    from geo3d.synth.patterns import sample_sparse
    from pipelines.depth.data import read_image, read_sparse

    inputs = []
    kitti = folder / "kitti_dc"
    if (kitti / "gt_depth.png").is_file():
        image = read_image(kitti / "rgb.png")
        inputs.append({"set": "kitti", "pattern": "kitti lidar (its own)", "card": "KITTI frame", "image": image,
                       "sparse": read_sparse(kitti / "sparse_depth.png", 256.0, image.shape[:2]),
                       "gt": read_sparse(kitti / "gt_depth.png", 256.0, image.shape[:2]),
                       "ip_basic": {"max_depth": 100.0}})
    indoor = folder / "indoor"
    if (indoor / "gt.npy").is_file():
        image = read_image(indoor / "image.png")
        gt = read_sparse(indoor / "gt.npy", shape=image.shape[:2])
        sparse = {"100 points (its own)": read_sparse(indoor / "sparse_100.npy", shape=image.shape[:2])}
        for pattern in ("random:500", "lidar:16"):
            sparse[pattern] = sample_sparse(gt, pattern, np.random.default_rng(0), image=image)
        names = {"100 points (its own)": "indoor 100 points", "random:500": "indoor random 500",
                 "lidar:16": "indoor LiDAR 16"}
        for pattern, points in sparse.items():
            inputs.append({"set": "indoor", "pattern": pattern, "card": names[pattern], "image": image,
                           "sparse": torch.as_tensor(points), "gt": torch.as_tensor(gt),
                           "ip_basic": {"max_depth": 100.0, "extrapolate": False, "blur": "bilateral"}})
    return inputs


def _table(rows: dict[tuple[str, str], dict[str, dict[str, float]]], key: str) -> list[str]:
    """Markdown: one row per input, one column per method, ``key`` in metres (best in bold)."""
    lines = [f"| {key.split('_')[0].upper()} (m) | " + " | ".join(METHODS.values()) + " |",
             "|---|" + "---|" * len(METHODS)]
    for (data, pattern), by_method in rows.items():
        values = {m: by_method[m][key] / 1000 for m in METHODS}
        best = min(values.values())
        cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in values.values()]
        lines.append(f"| {data}: {pattern} | " + " | ".join(cells) + " |")
    return lines


def run_stage(out: Path) -> StageResult:
    """Run the stage into ``out`` (its pictures go to the report folder ``out.parent``).

    Args:
        out: the stage's folder (``geo3d demo`` passes ``<report folder>/depth``).

    Returns:
        The report section: ``title`` "depth", the text with the RMSE and MAE tables, ``metrics``
        (``<set>/<pattern>/<method>/rmse_m`` and ``.../mae_m`` in metres, the model's seconds per frame), the
        pictures ``depth_kitti.png`` and ``depth_indoor.png`` (when the frames are there) and the numbers beside
        the ``omni_dc`` card (in millimetres, as the card has them).
    """
    from geo3d import zoo
    from geo3d.metrics.depth import depth_metrics
    from pipelines.depth.baselines import complete_baseline
    from pipelines.depth.predict import complete_frame
    from viewers.depth import depth_comparison_png

    out = Path(out)
    folder = shared_data_dir() / "depth"
    inputs = real_inputs(folder)
    if not inputs:
        return StageResult("depth", f"The depth stage was skipped: no KITTI or indoor frame under `{folder}` (set "
                                    "GEO3D_SHARED_DATA to the shared data folder).", {"real_frames": "skipped"})
    if zoo.entry(ZOO_MODEL).pending:  # the weights are not trained yet: say so, don't fail the demo
        return StageResult("depth", f"The depth stage was skipped: the zoo's `{ZOO_MODEL}` weights are not "
                                    "shipped yet (MODELS.md: pending).", {"zoo_weights": "pending"})
    checkpoint = zoo.checkpoint_path(ZOO_MODEL)
    metrics: dict[str, Any] = {}
    rows: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    measured: dict[str, float] = {}
    images = []
    model_seconds = []
    for item in inputs:
        for method, card_name in METHODS.items():
            if method == "model":
                completion = complete_frame(item["image"], item["sparse"], "model", checkpoint)
                depth, std = completion.depth, completion.uncertainty
                model_seconds.append(completion.seconds)
            else:
                depth = complete_baseline(method, item["sparse"], **(item["ip_basic"] if method == "ip_basic" else {}))
            m = depth_metrics(depth, item["gt"])
            rows.setdefault((item["set"], item["pattern"]), {})[method] = m
            for key in ("rmse_mm", "mae_mm"):
                metrics[f"{item['set']}/{item['pattern']}/{method}/{key[:-3]}_m"] = round(m[key] / 1000, 4)
                measured[f"{item['card']} {key.split('_')[0].upper()} mm, {card_name}"] = m[key]
            if method == "model" and item["pattern"] in ("kitti lidar (its own)", "100 points (its own)"):
                images.append(depth_comparison_png(item["image"], item["sparse"], depth,
                                                   out.parent / f"depth_{item['set']}.png", gt=item["gt"],
                                                   uncertainty=std))
    metrics["model_seconds_per_frame"] = round(float(np.median(model_seconds)), 3)
    wins = sum(all(r["model"][k] < r[m][k] for m in ("ip_basic", "linear") for k in ("rmse_mm", "mae_mm"))
               for r in rows.values())
    text = "\n".join([
        f"The depth-completion model of the model zoo (`zoo:{ZOO_MODEL}`, no training here) on the real frames of "
        "`scripts/bench_depth.py` (its protocol: the KITTI frame from its own LiDAR input; the indoor frame from "
        "its own 100 points and from 500 random points and a 16-beam pattern drawn from its ground truth, seed 0), "
        f"against IP-Basic and linear interpolation. The model beats both in RMSE and MAE on {wins} of the "
        f"{len(rows)} inputs; it took {metrics['model_seconds_per_frame']:.2f} s per frame on the CPU "
        f"({torch.get_num_threads()} torch thread(s)). Pictures: image, sparse input, the model's completion, "
        "ground truth, error, uncertainty.", "", *_table(rows, "rmse_mm"), "", *_table(rows, "mae_mm")])
    return StageResult("depth", text, metrics, images, card_checks(ZOO_MODEL, measured))
