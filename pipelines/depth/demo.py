"""The depth stage of ``geo3d demo`` (:func:`run_stage`): synthetic frames, a short training run, the baselines, the
real KITTI frame.

1. ``geo3d synth depth``: 48 training and 3 held-out frames at 96 x 320 (streets and rooms).
2. The model (``configs/depth/omni_tiny_cpu.yaml``'s network at base 8 channels) trained for ``seconds`` (default
   60) on random patterns. This is a smoke-sized run, not the benchmark model (that one trains 20 minutes); the
   report says which numbers came from it.
3. Every held-out frame completed from three patterns (random 0.7 %, LiDAR 16 beams, SIFT keypoints) by nearest,
   linear, IP-Basic and the model: RMSE and MAE per pattern.
4. The real KITTI frame (``../shared/data/depth/kitti_dc``) completed from its LiDAR by IP-Basic and the model,
   with a comparison picture (image, sparse input, completion, ground truth, error, uncertainty).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from geo3d.io.shared_data import shared_data_dir
from geo3d.report import StageResult
from geo3d.synth.depth import generate_depth
from geo3d.timed_fit import timed_fit

DEMO_PATTERNS = ("random:0.007", "lidar:16", "keypoints:sift")


def run_stage(out: Path, seconds: float = 60.0) -> StageResult:
    """Run the stage into ``out`` (the report folder's ``depth/``: data, pictures).

    Args:
        out: the stage's folder (created); its pictures are written there, inside the report folder ``out.parent``.
        seconds: the training budget, seconds.

    Returns:
        The report section: ``title`` "depth", the text, ``metrics`` (training steps and seconds, RMSE per
        held-out pattern and method in metres, the KITTI frame's RMSE and MAE by the model and IP-Basic and the
        model's time on it) and ``images`` (the synthetic LiDAR-16 comparison, then the KITTI model and IP-Basic
        comparisons when the shared frame is there).
    """
    from geo3d.metrics.depth import depth_metrics
    from pipelines.depth.baselines import complete_baseline
    from pipelines.depth.data import DepthDataModule, DepthFrames, read_image, read_sparse
    from pipelines.depth.model import NetworkSettings
    from pipelines.depth.module import DepthCompletion, OptimSettings, uncertainty
    from viewers.depth import depth_comparison_png

    out = Path(out)
    generate_depth(out / "train", frames=48, seed=0, width=320, height=96, progress=False)
    generate_depth(out / "val", frames=3, seed=1000, width=320, height=96, progress=False)
    pl.seed_everything(0, verbose=False)
    data = DepthDataModule(str(out / "train"), str(out / "val"), crop=(96, 320), batch_size=4)
    model = DepthCompletion(NetworkSettings(base_channels=8, sparse_channels=8), optim=OptimSettings(lr=3e-3))
    train_steps, train_seconds = timed_fit(model, data, seconds, max_steps=10_000, accelerator="cpu")
    model.eval()
    metrics: dict = {"train_steps": train_steps, "train_seconds": round(train_seconds, 1)}
    held_out = DepthFrames(out / "val", DEMO_PATTERNS, repeat=True)
    sums: dict[tuple[str, str], list[float]] = {}
    for i in range(len(held_out)):
        item = held_out[i]
        with torch.no_grad():
            preds = {"model": model(item["image"][None], item["sparse"][None])["depth"][0, 0]}
        for method in ("nearest", "linear", "ip_basic"):
            preds[method] = complete_baseline(method, item["sparse"][0])
        for method, pred in preds.items():
            m = depth_metrics(pred, item["gt"][0], max_depth=80.0)
            sums.setdefault((item["pattern"], method), []).append(m["rmse_mm"] / 1000)
    for (pattern, method), values in sums.items():
        metrics[f"rmse_m/{pattern}/{method}"] = round(sum(values) / len(values), 3)
    images = []
    kitti = shared_data_dir() / "depth" / "kitti_dc"
    if (kitti / "gt_depth.png").is_file():
        image = read_image(kitti / "rgb.png")
        sparse = read_sparse(kitti / "sparse_depth.png", 256.0, image.shape[:2])
        gt = read_sparse(kitti / "gt_depth.png", 256.0, image.shape[:2])
        img = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
        start = time.perf_counter()
        with torch.no_grad():
            result = model(img, sparse[None, None])
        metrics["kitti_model_seconds"] = round(time.perf_counter() - start, 3)
        depth, std = result["depth"][0, 0], uncertainty(result)[0, 0]
        ip = complete_baseline("ip_basic", sparse)
        for name, pred in (("model", depth), ("ip_basic", ip)):
            m = depth_metrics(pred, gt)
            metrics[f"kitti_rmse_m/{name}"] = round(m["rmse_mm"] / 1000, 3)
            metrics[f"kitti_mae_m/{name}"] = round(m["mae_mm"] / 1000, 3)
        images.append(depth_comparison_png(image, sparse, depth, out / "kitti_model.png", gt=gt, uncertainty=std))
        images.append(depth_comparison_png(image, sparse, ip, out / "kitti_ip_basic.png", gt=gt))
    else:
        metrics["kitti"] = f"skipped ({kitti} not found)"
    item = held_out[len(held_out) // 3]  # a LiDAR-16 input
    with torch.no_grad():
        result = model(item["image"][None], item["sparse"][None])
    image = (item["image"].permute(1, 2, 0) * 255).round().byte().numpy()
    images.insert(0, depth_comparison_png(image, item["sparse"][0], result["depth"][0, 0],
                                          out / "synthetic_lidar16.png", gt=item["gt"][0],
                                          uncertainty=uncertainty(result)[0, 0]))
    text = (f"`geo3d synth depth` wrote 48 training and 3 held-out frames (96 x 320); the depth-completion network "
            f"(base 8 channels) trained {train_steps} steps in {train_seconds:.0f} s, a smoke-sized run: "
            "the 20-minute model of `configs/depth/omni_tiny_cpu.yaml` and its benchmark are in the README. "
            "RMSE per pattern on the held-out frames (`rmse_m/<pattern>/<method>`), and the real KITTI frame "
            "completed from its LiDAR by the model and by IP-Basic.")
    return StageResult(title="depth", text=text, metrics=metrics, images=images)
