"""The splatting pipeline on a GPU: gsplat renders what the CPU rasterizer renders, and training runs.

Marked ``cuda``: skipped without a GPU (none on the development machine; run on a lent GPU machine).
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from geo3d.types import Gaussians
from pipelines.splatting.data import SplatDataModule, read_view_pool
from pipelines.splatting.module import Densification, FloaterPruning, GaussianSplatting, InitOptions
from pipelines.splatting.predict import render_gaussians

pytestmark = pytest.mark.cuda


def test_render_gaussians_cuda_matches_cpu(tiny_nerf):
    g = torch.Generator().manual_seed(0)
    n = 2000
    gaussians = Gaussians(torch.randn(n, 3, generator=g) * 0.4, torch.randn(n, 4, generator=g),
                          torch.full((n, 3), -3.0) + 0.3 * torch.randn(n, 3, generator=g),
                          torch.randn(n, generator=g), torch.randn(n, 4, 3, generator=g) * 0.5)
    cameras = read_view_pool(tiny_nerf).cameras[torch.arange(3)]
    cpu = render_gaussians(gaussians, cameras, with_depth=True)
    gpu = render_gaussians(gaussians.to("cuda"), cameras.to("cuda"), with_depth=True)
    assert torch.allclose(gpu.rgb.cpu(), cpu.rgb, atol=2e-3)
    assert torch.allclose(gpu.alpha.cpu(), cpu.alpha, atol=2e-3)


def test_training_runs_on_cuda(tiny_nerf, tmp_path):
    dm = SplatDataModule(str(tiny_nerf), views=4, test_views=2, steps_per_epoch=100)
    model = GaussianSplatting(init=InitOptions(resolution=24, refine_resolution=48, num_points=2000),
                              densification=Densification(refine_start_iter=10, refine_stop_iter=40, refine_every=10),
                              floaters=FloaterPruning(every=20, start=20, stop=40, k=4), export_dir=str(tmp_path),
                              scene=dm.scene)
    trainer = pl.Trainer(max_steps=50, accelerator="gpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert model.params["means"].is_cuda
    assert (tmp_path / "gaussians.ply").is_file() and (tmp_path / "test_metrics.json").is_file()
