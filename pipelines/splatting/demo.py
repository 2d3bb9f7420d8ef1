"""The splatting stage of ``geo3d demo``: a synthetic object from 4 views, trained from scratch on the CPU in a
short run: the demo's one training run (the other stages run the model zoo's weights).

1. Data: ``geo3d synth nerf`` (the "robot" object, 96 x 96 RGBA, 40 candidate and 10 test views, cameras 4 m from
   the object, as the NeRF-synthetic scenes).
2. Training: the settings of ``configs/splatting/object_4view_cpu.yaml`` (strict visual hull, floater pruning,
   DefaultStrategy densification, random background, SH degree 0) with a short schedule sized to ``max_seconds``
   (the config's full run, 3000 steps at 128 x 128, gives the README's numbers); the test views are evaluated at
   the end (PSNR/SSIM).
3. Outputs: the 3DGS PLY (``OUT/splatting/model/gaussians.ply``: the ``chain`` stage renders it to RGB-D and meshes
   it), ground truth | render PNGs of the test views and a viewer PNG of the Gaussians.

:func:`run_stage` is the stage (``geo3d demo --stages splatting``); :func:`run_splatting_demo` does steps 1-2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytorch_lightning as pl

from geo3d.report import StageResult
from geo3d.synth.nerf import generate_nerf
from geo3d.timed_fit import timed_fit
from pipelines.splatting.data import SplatDataModule
from pipelines.splatting.module import (
    Densification,
    FloaterPruning,
    GaussianSplatting,
    InitOptions,
    LearningRates,
    LossWeights,
)

# Training cost per step at 96 x 96 with ~10k Gaussians on the 2-core reference machine: measured 0.05 s idle;
# max_time stops a slower machine anyway.
SECONDS_PER_STEP = 0.06
SHOWS = ("the one short training run from scratch (not a full-quality number): 3D Gaussians of a freshly generated "
         "synthetic object from 4 views on the CPU rasterizer, PSNR/SSIM on held-out views, with renders")


def run_splatting_demo(out_dir: str | os.PathLike, max_seconds: float = 45.0, res: int = 96, seed: int = 0) -> dict:
    """Generate data, train, evaluate; returns ``{"text", "metrics", "ply", "renders": [PNG paths]}``."""
    out = Path(out_dir)
    data = out / "data"
    if not (data / "transforms_test.json").is_file():
        generate_nerf(data, object="robot", res=res, views=40, test_views=10, seed=seed, progress=False)
    steps = max(int(max_seconds / SECONDS_PER_STEP), 100)
    dm = SplatDataModule(str(data), views=4, test_views=10, val_views=2, background="white", seed=seed,
                         steps_per_epoch=steps)
    refine_stop = int(steps * 0.7)
    model = GaussianSplatting(
        init=InitOptions(kind="visual_hull", resolution=48, refine_resolution=96, min_views=4, num_points=10000,
                         seed=seed),
        lr=LearningRates(means=8e-4, means_final=8e-6),
        densification=Densification(refine_start_iter=min(300, steps // 4), refine_stop_iter=refine_stop,
                                    refine_every=100, max_gaussians=30000),
        floaters=FloaterPruning(every=200, start=min(200, steps // 4), stop=refine_stop),
        loss=LossWeights(mask=0.5, random_background=True), sh_degree=0, export_dir=str(out / "model"),
        scene=dm.scene,
    )
    pl.seed_everything(seed, verbose=False)
    _, seconds = timed_fit(model, dm, max_seconds, max_steps=steps)
    summary = json.loads((out / "model" / "test_metrics.json").read_text())
    mean = summary["mean"]
    metrics = {
        "train_views": 4, "test_views": summary["num_views"], "resolution": f"{res}x{res}",
        "steps": summary["steps"], "train_and_eval_seconds": round(seconds, 1),
        "gaussians": summary["num_gaussians"], "test_psnr_db": mean["psnr"], "test_ssim": mean["ssim"],
        "test_psnr_masked_db": mean.get("psnr_masked"), "lpips": summary["lpips"],
    }
    renders = sorted((out / "model" / "test_renders").glob("*.png"))[:3]
    text = (f"A short training run from scratch, the demo's one training run: a synthetic object (`geo3d synth nerf "
            f"--object robot --res {res}`) reconstructed as 3D Gaussians from 4 views picked by farthest-point "
            f"sampling on the camera centres, visual-hull initialisation, floater pruning and gsplat's "
            f"DefaultStrategy densification, on the op layer's CPU rasterizer. The short schedule "
            f"({summary['steps']} steps, {seconds:.0f} s including evaluation) reaches {mean['psnr']:.2f} dB PSNR on "
            f"{summary['num_views']} held-out views: a short run, not the full-quality number (the 4-view config "
            f"`configs/splatting/object_4view_cpu.yaml`, 128 x 128, 3000 steps, gives the README's). Renders: ground "
            f"truth (left) | render.")
    return {"text": text, "metrics": metrics, "ply": out / "model" / "gaussians.ply", "renders": renders,
            "data": data}


def run_stage(out: Path, max_seconds: float = 45.0, res: int = 96) -> StageResult:
    """The splatting stage of ``geo3d demo``: :func:`run_splatting_demo` into ``out``, then a ``geo3d view`` picture
    of the exported PLY.

    Args:
        out: the stage's folder, ``<report folder>/splatting`` (data, model).
        max_seconds: training budget (the schedule's length is sized to it).
        res: image side of the generated views, pixels.

    Returns:
        The stage's text and metrics, and its images in the report folder: up to three test renders
        ``splatting_test_<i>.png`` (ground truth | render), then ``splatting_gaussians.png`` (the Gaussian centres
        in their colours).
    """
    from viewers.files import view_files

    out = Path(out)
    report_dir = out.parent
    result = run_splatting_demo(out, max_seconds=max_seconds, res=res)
    images = []
    for i, render in enumerate(result["renders"]):
        target = report_dir / f"splatting_test_{i}.png"
        target.write_bytes(render.read_bytes())
        images.append(target)
    images.append(view_files([result["ply"]], out=report_dir / "splatting_gaussians.png", width=960, height=540))
    text = (result["text"] + " The last picture is `geo3d view` of the exported PLY (Gaussian centres in their "
            "colours); the `chain` stage renders it to RGB-D and meshes it.")
    return StageResult("splatting", text, result["metrics"], images)
