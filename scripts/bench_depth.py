#!/usr/bin/env python
"""The depth-completion benchmark: every sparse pattern, every method, held-out synthetic frames and real samples.

Protocol (fixed so anyone can rerun it):

* **Synthetic, Robust-DC style:** the first ``--frames`` frames of a held-out ``geo3d synth depth`` folder (default
  ``data/depth/val``: seed 1000, never used in training), each completed from every pattern of
  ``geo3d.synth.patterns.PATTERNS_EVAL`` (random 0.7 % / 0.1 % / 0.03 % of the pixels, LiDAR 64 / 16 / 8 beams,
  LiDAR 64 beams mounted where KITTI's is (``lidar_offset:64``: some returns see past near edges), ORB and SIFT
  keypoints, 0.7 % random points with 5 % / 10 % outliers), the sparse input drawn with a fixed seed
  per frame and pattern (:class:`pipelines.depth.data.DepthFrames`), so every method sees the same points.
* **Real:** the KITTI depth-completion frame of ``../shared/data/depth/kitti_dc`` with its own LiDAR input; the
  indoor frame of ``../shared/data/depth/indoor`` with its 100 points, and with random 500 points and a 16-beam
  LiDAR pattern drawn from its ground truth (seed 0; the indoor frame has no intrinsics, so the LiDAR pattern uses
  the KITTI-like default K of :func:`geo3d.synth.patterns.kitti_like_K`).
* Methods: nearest, linear, IP-Basic (Gaussian blur with extrapolation, max depth 100 m, on KITTI and the
  synthetic frames; the paper's default bilateral variant without extrapolation on the indoor frame, as in the
  issue's reference numbers) and the model (``--ckpt``).
* Metrics: :func:`geo3d.metrics.depth_metrics` per image, averaged over the frames of each pattern; the synthetic
  frames are capped at 80 m (their ground truth's range), the real ones are not capped.
* Timing: the model's CPU inference at 352 x 1216 on the KITTI frame (median of 5 runs after a warm-up).

Usage:
    python scripts/bench_depth.py --ckpt CKPT --out out/bench_depth
    python scripts/bench_depth.py --ckpt zoo:omni_dc --json out/zoo/omni_dc/bench_depth.json   # the zoo's model
    python scripts/bench_depth.py --frames 5               # baselines only, fewer frames
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as geo3d sets it, before torch starts its thread pool

BASELINES = ("nearest", "linear", "ip_basic")


def _complete(method: str, image, sparse, ckpt, ip_basic_kwargs: dict):
    from pipelines.depth.baselines import complete_baseline
    from pipelines.depth.predict import complete_frame

    if method == "model":
        return complete_frame(image, sparse, "model", ckpt).depth
    kwargs = ip_basic_kwargs if method == "ip_basic" else {}
    return complete_baseline(method, sparse, **kwargs)


def synthetic_rows(args, methods) -> list[dict]:
    from tqdm import tqdm

    from geo3d.metrics.depth import depth_metrics
    from geo3d.synth.patterns import PATTERNS_EVAL
    from pipelines.depth.data import DepthFrames

    data = DepthFrames(args.data, PATTERNS_EVAL, repeat=True)
    data.ids = data.ids[: args.frames]
    rows = []
    for index in tqdm(range(len(data)), desc="synthetic", unit="input"):
        item = data[index]
        image = (item["image"].permute(1, 2, 0) * 255).round().byte().numpy()
        sparse, gt = item["sparse"][0], item["gt"][0]
        for method in methods:
            pred = _complete(method, image, sparse, args.ckpt, {"max_depth": 100.0})
            m = depth_metrics(pred, gt, max_depth=80.0)
            rows.append({"set": "synthetic", "frame": item["frame"], "pattern": item["pattern"], "method": method,
                         "points": int((sparse > 0).sum()), **m})
    return rows


def real_rows(args, methods) -> list[dict]:
    from geo3d.metrics.depth import depth_metrics
    from pipelines.depth.demo import real_inputs

    inputs = real_inputs(args.shared)  # the same inputs as geo3d demo's depth stage
    for name, folder in (("kitti", "kitti_dc"), ("indoor", "indoor")):
        if not any(i["set"] == name for i in inputs):
            print(f"skipped {'KITTI' if name == 'kitti' else name}: {args.shared / folder} not found", file=sys.stderr)
    rows = []
    for item in inputs:
        for method in methods:
            pred = _complete(method, item["image"], item["sparse"], args.ckpt, item["ip_basic"])
            rows.append({"set": item["set"], "frame": "kitti_dc" if item["set"] == "kitti" else "indoor",
                         "pattern": item["pattern"], "method": method, "points": int((item["sparse"] > 0).sum()),
                         **depth_metrics(pred, item["gt"])})
    return rows


def model_timing(args) -> dict | None:
    from pipelines.depth.data import read_image, read_sparse
    from pipelines.depth.predict import complete_frame

    kitti = args.shared / "kitti_dc"
    if args.ckpt is None or not (kitti / "rgb.png").is_file():
        return None
    import torch

    image = read_image(kitti / "rgb.png")
    sparse = read_sparse(kitti / "sparse_depth.png", 256.0, image.shape[:2])
    complete_frame(image, sparse, "model", args.ckpt)  # warm-up
    seconds = [complete_frame(image, sparse, "model", args.ckpt).seconds for _ in range(5)]
    return {"size": f"{image.shape[0]} x {image.shape[1]}", "median_seconds": statistics.median(seconds),
            "threads": torch.get_num_threads()}


def mean_metrics(rows: list[dict]) -> dict[str, float]:
    """The mean of every metric per (set, pattern, method): ``"set/pattern/method/metric" -> value`` (metric keys as
    :func:`geo3d.metrics.depth_metrics` names them, e.g. ``rmse_mm``)."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        for key, value in r.items():
            if key not in ("set", "frame", "pattern", "method", "points") and isinstance(value, (int, float)):
                groups.setdefault(f"{r['set']}/{r['pattern']}/{r['method']}/{key}", []).append(float(value))
    return {key: sum(values) / len(values) for key, values in groups.items()}


def table(rows: list[dict], methods: list[str], key: str, scale: float, unit: str) -> list[str]:
    """Markdown: one row per (set, pattern), one column per method, the mean of ``key`` / ``scale``."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["pattern"]), {}).setdefault(r["method"], []).append(r[key] / scale)
    lines = [f"| data | pattern | {' | '.join(methods)} |", "|---|---|" + "---|" * len(methods)]
    for (data, pattern), by_method in groups.items():
        means = {m: sum(v) / len(v) for m, v in by_method.items()}
        best = min(means.values())
        cells = [(f"**{means[m]:.3f}**" if means[m] == best else f"{means[m]:.3f}") for m in methods]
        n = len(next(iter(by_method.values())))
        lines.append(f"| {data} ({n}) | {pattern} | {' | '.join(cells)} |")
    return [f"{key.split('_')[0].upper()} ({unit}); best in bold; (n) = images averaged", "", *lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="DepthCompletion checkpoint, or zoo:NAME (without it: baselines only)")
    parser.add_argument("--data", type=Path, default=Path("data/depth/val"), help="held-out synthetic frames")
    parser.add_argument("--frames", type=int, default=10, help="synthetic frames per pattern (default 10)")
    parser.add_argument("--shared", type=Path, help="the real samples (default: geo3d's shared data folder /depth, "
                                                    "../shared/data/depth)")
    parser.add_argument("--out", type=Path, help="also write bench_depth.md and bench_depth.json here")
    parser.add_argument("--no-synthetic", action="store_true", help="real samples only")
    parser.add_argument("--json", type=Path, metavar="OUT",
                        help="also write the table's means as one JSON object: 'set/pattern/method/metric' -> value "
                             "(e.g. 'kitti/kitti lidar (its own)/model/rmse_mm'; what make_weights.py --check reads)")
    args = parser.parse_args(argv)
    import torch

    from geo3d.errors import InputError
    from geo3d.io.shared_data import shared_data_dir
    from geo3d.zoo import resolve

    args.shared = args.shared or shared_data_dir() / "depth"
    try:
        args.ckpt = None if args.ckpt is None else resolve(args.ckpt)  # zoo:NAME -> the verified weights file
    except InputError as err:
        parser.error(str(err))
    if args.ckpt is not None and not args.ckpt.is_file():
        parser.error(f"{args.ckpt}: checkpoint not found")
    methods = [*BASELINES, *(["model"] if args.ckpt else [])]
    start = time.perf_counter()
    rows = [] if args.no_synthetic else synthetic_rows(args, methods)
    rows += real_rows(args, methods)
    timing = model_timing(args)
    lines = [f"# bench_depth: torch {torch.__version__}, {torch.get_num_threads()} threads"
             + (f", model {args.ckpt}" if args.ckpt else ""), ""]
    lines += table(rows, methods, "rmse_mm", 1000.0, "m") + [""]
    lines += table(rows, methods, "mae_mm", 1000.0, "m") + [""]
    if timing:
        lines.append(f"Model CPU inference at {timing['size']}: {timing['median_seconds']:.3f} s "
                     f"(median of 5, {timing['threads']} threads)")
    lines.append(f"Benchmark wall time {time.perf_counter() - start:.0f} s.")
    text = "\n".join(lines)
    print(text)
    if args.out:
        from geo3d.io.atomic import atomic_write_text

        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "bench_depth.md", text + "\n")
        atomic_write_text(args.out / "bench_depth.json", json.dumps({"rows": rows, "timing": timing}, indent=1))
    if args.json:
        from geo3d.io.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(mean_metrics(rows), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
