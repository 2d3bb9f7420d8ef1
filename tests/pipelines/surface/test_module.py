"""The surface refinement module: data preparation (fusion + targets, cached), training reduces the TSDF error,
refine_volume writes back into the block grid and extracts a mesh."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from geo3d.synth.rgbd import generate_rgbd
from pipelines.surface.data import SurfaceDataModule, collate_scans, list_scans, prepare_scan
from pipelines.surface.fusion import fuse_rgbd
from pipelines.surface.module import SurfaceRefiner, refine_volume


def _scans(root, names):
    for obj, seed in names:
        generate_rgbd(root / f"{obj}_{seed}", object=obj, frames=4, seed=seed, width=64, height=48, progress=False)
    return root


def test_prepare_scan_caches_fusion_and_targets(tmp_path):
    root = _scans(tmp_path / "scans", [("blob", 0)])
    scan = list_scans(root)[0]
    first = prepare_scan(scan, voxel_fraction=1 / 32)
    assert first["voxel_size"] == 1 / 32 and first["sdf_trunc"] == 4 / 32
    cached = list(scan.glob("fused_*.npz"))
    assert len(cached) == 1
    again = prepare_scan(scan, voxel_fraction=1 / 32)
    for key in ("coords", "tsdf", "target_tsdf", "occupancy"):
        assert torch.equal(first[key], again[key])
    # targets: the fused TSDF is noisy but agrees with the truth on the sign far more often than not
    band = first["target_tsdf"].abs() < 0.5
    agree = (first["tsdf"][band].sign() == first["target_tsdf"][band].sign()).float().mean()
    assert agree > 0.8
    batch = collate_scans([first, again])
    assert batch["coords"].shape[0] == 2 * first["coords"].shape[0]
    assert int(batch["batch"].max()) == 1


def test_training_reduces_the_tsdf_error_and_refines_a_volume(tmp_path):
    root = _scans(tmp_path / "train", [("blob", 0), ("blob", 1)])
    val = _scans(tmp_path / "val", [("blob", 2)])
    dm = SurfaceDataModule(str(root), str(val), voxel_fraction=1 / 32, batch_size=2)
    pl.seed_everything(0, verbose=False)
    model = SurfaceRefiner(base_channels=4, levels=2, lr=1e-2, eval_points=2000)
    dm.setup("fit")
    batch = collate_scans([prepare_scan(s, 1 / 32) for s in dm.train_scans])
    model.eval()
    with torch.no_grad():
        before = model._loss(batch)[1]["sdf_l1"]  # an untrained network returns the fused TSDF
    model.train()
    trainer = pl.Trainer(max_steps=60, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    model.eval()
    with torch.no_grad():
        after = model._loss(batch)[1]["sdf_l1"]
    assert after < 0.8 * before, (before, after)
    volume = fuse_rgbd(dm.val_scans[0], 1 / 32, 4 / 32, progress=False)
    mesh = refine_volume(model, volume)
    assert mesh.num_faces > 100


def test_dilation_adds_exactly_the_unobserved_voxels_near_the_band():
    from pipelines.surface.data import candidate_voxels, dilate_voxels

    g = torch.Generator().manual_seed(0)
    coords = torch.unique(torch.randint(-6, 6, (60, 3), generator=g), dim=0)
    ref = {(x + i, y + j, z + k) for x, y, z in coords.tolist()
           for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)}
    assert set(map(tuple, dilate_voxels(coords, 2).tolist())) == ref  # brute force
    tsdf = torch.where(torch.arange(len(coords)) % 2 == 0, 0.3, 1.0)  # every other voxel in the band
    weight, color = torch.ones(len(coords)), torch.rand(len(coords), 3, generator=g)
    c, t, w, col = candidate_voxels(coords, tsdf, weight, color, radius=1)
    band = coords[tsdf.abs() < 1]
    expected_new = {(x + i, y + j, z + k) for x, y, z in band.tolist()
                    for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)} - set(map(tuple, coords.tolist()))
    assert torch.equal(c[:len(coords)], coords) and torch.equal(t[:len(coords)], tsdf)
    assert set(map(tuple, c[len(coords):].tolist())) == expected_new and len(c) == len(coords) + len(expected_new)
    assert bool((w[len(coords):] == 0).all()) and bool((t[len(coords):] == 0).all())


def test_trust_weight_keeps_the_fused_tsdf_of_observed_voxels(tmp_path):
    root = _scans(tmp_path / "scan", [("blob", 3)])
    scan = list_scans(root)[0]
    torch.manual_seed(0)
    model = SurfaceRefiner(base_channels=4, levels=2, dilation=1)
    with torch.no_grad():  # make the network's TSDF visibly different from fusion's
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    volume = fuse_rgbd(scan, 1 / 32, 4 / 32, progress=False)
    coords, tsdf, weight, _ = volume.voxels()
    refine_volume(model, volume, keep_threshold=-1.0, trust_weight=1.0)  # keep everything (sigmoid can round to 0)
    after_coords, after_tsdf, _, _ = volume.voxels()
    lookup = {tuple(c): float(t) for c, t in zip(after_coords.tolist(), after_tsdf)}
    assert all(abs(lookup[tuple(c)] - float(t)) < 1e-6 for c, t in zip(coords.tolist(), tsdf))
    assert len(after_coords) > len(coords)  # dilated voxels were added (kept, weight 1)
