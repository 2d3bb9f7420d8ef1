#!/usr/bin/env python
"""Benchmark the splatting pipeline: training iterations per second and turntable rendering time.

Measures, on generated data (``geo3d synth nerf``, toy object, 128 x 128, 4 training views):

1. training: the real ``GaussianSplatting.training_step`` (render, L1 + D-SSIM + mask loss, backward, Adam on
   every group, DefaultStrategy bookkeeping) with about 20k Gaussians (a visual-hull init subsampled to
   ``--gaussians``), densification and floater pruning off so the count stays fixed; iterations per second
   over ``--steps`` steps after a warm-up;
2. rendering: 100 turntable frames at 128 x 128 through ``pipelines.splatting.predict.render_gaussians``.

Usage:
    python scripts/bench_splatting.py                  # CPU
    python scripts/bench_splatting.py --device cuda    # on a GPU machine (gsplat)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--gaussians", type=int, default=20000, help="Gaussian count (default 20000)")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps (default 100)")
    parser.add_argument("--frames", type=int, default=100, help="turntable frames (default 100)")
    args = parser.parse_args(argv)

    import pytorch_lightning as pl
    import torch

    import geo3d  # noqa: F401  (sets OMP_WAIT_POLICY before torch starts its thread pool)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch on this machine")
    from geo3d.synth.nerf import generate_nerf
    from pipelines.splatting.cameras import turntable_cameras
    from pipelines.splatting.data import SplatDataModule
    from pipelines.splatting.module import Densification, FloaterPruning, GaussianSplatting, InitOptions
    from pipelines.splatting.predict import render_gaussians

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        data = generate_nerf(Path(tmp) / "toy", object="toy", res=128, views=40, test_views=4, progress=False)
        dm = SplatDataModule(str(data), views=4, test_views=4, steps_per_epoch=args.steps + 10)
        model = GaussianSplatting(
            init=InitOptions(kind="visual_hull", resolution=64, refine_resolution=160, num_points=args.gaussians),
            densification=Densification(refine_start_iter=10**9), floaters=FloaterPruning(enabled=False),
            export_dir=str(Path(tmp) / "model"), scene=dm.scene)
        times: list[float] = []

        class Clock(pl.Callback):
            def on_train_batch_start(self, *_):
                if args.device == "cuda":
                    torch.cuda.synchronize()
                self.t0 = time.perf_counter()

            def on_train_batch_end(self, *_):
                if args.device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - self.t0)

        trainer = pl.Trainer(max_steps=args.steps + 10, accelerator="gpu" if args.device == "cuda" else "cpu",
                             devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
                             callbacks=[Clock()])
        trainer.fit(model, datamodule=dm)
        n_gauss = len(model.params["means"])
        step_times = times[10:]  # the first steps compile numba kernels and warm caches
        its = len(step_times) / sum(step_times)

        gaussians = model.gaussians()
        cams = dm.train.cameras
        turntable = turntable_cameras(args.frames, torch.zeros(3), 4.0, 20.0, torch.tensor([0.0, 0.0, 1.0]),
                                      cams.K[0], cams.width, cams.height)
        if args.device == "cuda":
            gaussians = gaussians.to("cuda")
            turntable = turntable.to("cuda")
        render_gaussians(gaussians, turntable[:2])  # warm-up
        t0 = time.perf_counter()
        render_gaussians(gaussians, turntable)
        if args.device == "cuda":
            torch.cuda.synchronize()
        render_s = time.perf_counter() - t0

    print(f"# bench_splatting: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {args.device}, load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print("| what | case | result |")
    print("|---|---|---|")
    print(f"| training | 128 x 128, 4 views, {n_gauss:,} Gaussians, {len(step_times)} steps (median "
          f"{sorted(step_times)[len(step_times) // 2] * 1e3:.0f} ms) | {its:.2f} it/s |")
    print(f"| turntable rendering | {args.frames} frames, 128 x 128, {n_gauss:,} Gaussians | {render_s:.2f} s "
          f"({args.frames / render_s:.1f} frames/s) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
