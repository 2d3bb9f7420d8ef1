"""The surface refinement module: data preparation (fusion + targets, cached), training reduces the TSDF error,
refine_volume writes back into the block grid and extracts a mesh."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from geo3d.errors import InputError
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


def test_shipped_configs_parse_and_the_cpu_config_trains_through_the_cli(tmp_path, capsys):
    """``geo3d fit --config configs/surface/*.yaml``: every config resolves; the CPU one runs (tiny data, 2 steps)
    and writes last.ckpt, which ``geo3d reconstruct --method refined`` then uses; with a keep threshold the network
    does not reach, reconstruct fails with one line saying so."""
    from pathlib import Path

    from geo3d.cli import main

    configs = sorted(Path("configs/surface").glob("*.yaml"))
    assert {c.name for c in configs} >= {"unet_tiny_cpu.yaml", "unet_gpu.yaml"}
    for config in configs:
        with pytest.raises(SystemExit) as exit_info:  # LightningCLI exits after printing
            main(["fit", "--config", str(config), "--print_config"])
        assert exit_info.value.code == 0
        assert "pipelines.surface.module.SurfaceRefiner" in capsys.readouterr().out
    train = _scans(tmp_path / "train", [("blob", 0)])
    val = _scans(tmp_path / "val", [("blob", 1)])
    out = tmp_path / "run"
    code = main(["fit", "--config", "configs/surface/unet_tiny_cpu.yaml", "--data.train_dir", str(train),
                 "--data.val_dir", str(val), "--data.voxel_fraction", "0.03125", "--data.batch_size", "1",
                 "--model.base_channels", "4", "--model.levels", "2", "--model.eval_points", "1000",
                 "--model.keep_threshold", "0.05",  # 2 steps: the keep logits are still near 0 (probability 0.5)
                 "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                 "--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir", str(out)])
    assert code == 0
    checkpoints = list(out.rglob("last.ckpt"))
    assert len(checkpoints) == 1
    recon = tmp_path / "recon"
    assert main(["reconstruct", "--input", str(val), "--output", str(recon), "--method", "refined",
                 "--checkpoint", str(checkpoints[0]), "--voxel-fraction", "1/32", "--eval-points", "1000",
                 "--no-progress"]) == 0
    assert (recon / "blob_1" / "mesh.ply").is_file()
    capsys.readouterr()
    model = SurfaceRefiner.load_from_checkpoint(checkpoints[0], map_location="cpu")
    model.hparams.keep_threshold = 0.9999
    volume = fuse_rgbd(val / "blob_1", 1 / 32, 4 / 32, progress=False)
    with pytest.raises(InputError, match="kept no voxel"):
        refine_volume(model, volume)
