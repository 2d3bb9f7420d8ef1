"""The splatting stage of ``geo3d demo`` with a tiny budget: data, training, evaluation, viewer PNG.

The stage's numbers are checked against references computed here from its own files: the test PSNR against
the PSNR of the ground-truth | render PNGs it wrote, and against an empty model (only the background).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from geo3d.metrics import psnr
from geo3d.report import Report
from pipelines.splatting.data import SplatDataModule
from pipelines.splatting.demo import run_stage


def test_run_stage_reports_what_it_wrote(tmp_path):
    result = run_stage(tmp_path / "splatting", max_seconds=6.0, res=32)
    metrics = result.metrics
    assert result.title == "splatting"
    assert metrics["train_views"] == 4 and metrics["test_views"] == 10 and 1 <= metrics["steps"] <= 100
    # every image lies in the report folder, in the order the report shows them
    assert [p.name for p in result.images] == [*(f"splatting_test_{i}.png" for i in range(3)),
                                               "splatting_gaussians.png"]
    assert all(p.parent == tmp_path for p in result.images)
    assert (tmp_path / "splatting_gaussians.png").stat().st_size > 1000
    assert "short training run" in result.text and "not the full-quality number" in result.text

    # the test PSNR is the mean over the written renders (ground truth | render, 8-bit), and beats the background
    model = tmp_path / "splatting" / "model"
    renders = sorted((model / "test_renders").glob("*.png"))
    assert len(renders) == 10 and (model / "gaussians.ply").is_file()
    sides = torch.from_numpy(np.stack([np.asarray(Image.open(p), dtype=np.float32) / 255 for p in renders]))
    truth, render = sides[:, :, :32], sides[:, :, 32:]
    assert abs(float(psnr(render, truth).mean()) - metrics["test_psnr_db"]) < 0.3
    views = SplatDataModule(str(tmp_path / "splatting" / "data"), views=4, test_views=10).scene.test
    background_only = float(psnr(torch.ones_like(views.images), views.images).mean())
    assert metrics["test_psnr_db"] > background_only + 3.0, (metrics["test_psnr_db"], background_only)

    report = Report(tmp_path)
    report.add(result)
    text = (tmp_path / "report.md").read_text()
    assert "## splatting" in text and "![splatting_gaussians](splatting_gaussians.png)" in text
