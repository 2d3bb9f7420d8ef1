"""The surface refinement module: data preparation (fusion + targets, cached), training reduces the TSDF error and
brings the refined mesh closer to the truth than raw fusion, refine_volume writes back into the block grid, the
settings groups (and old flat checkpoints), the shipped configs through the CLI."""

from __future__ import annotations

import dataclasses

import pytest
import pytorch_lightning as pl
import torch

from geo3d.errors import InputError
from geo3d.io import read_mesh
from geo3d.metrics.geometry import canonical_mesh, mesh_metrics
from geo3d.synth.rgbd import generate_rgbd
from pipelines.surface.data import SurfaceDataModule, collate_scans, list_scans, prepare_scan
from pipelines.surface.fusion import fuse_rgbd
from pipelines.surface.module import (
    Evaluation,
    Extraction,
    LossWeights,
    NetworkSettings,
    Optimisation,
    SurfaceRefiner,
    refine_volume,
)


def _scans(root, names):
    for obj, seed in names:
        generate_rgbd(root / f"{obj}_{seed}", object=obj, frames=4, seed=seed, width=64, height=48, progress=False)
    return root


def test_prepare_scan_caches_fusion_and_targets(tmp_path):
    root = _scans(tmp_path / "scans", [("blob", 0)])
    scan = list_scans(root)[0]
    first = prepare_scan(scan, voxel_fraction=1 / 32)
    assert first["voxel_size"] == 1 / 32 and first["sdf_trunc"] == 4 / 32 and first["diagonal"] == 1.0
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


def test_training_reduces_the_tsdf_error_and_the_refined_mesh_is_closer_to_the_truth(tmp_path):
    """60 steps on two 4-view blob scans (the tiny config's recipe: dilation, observed voxels trusted and weighted
    0.1): the TSDF error falls, and on a held-out scan the refined mesh is closer to the ground-truth mesh (Chamfer,
    point-to-mesh) than raw fusion's, which has holes where the 4 views did not look."""
    root = _scans(tmp_path / "train", [("blob", 0), ("blob", 1)])
    val = _scans(tmp_path / "val", [("blob", 2)])
    dm = SurfaceDataModule(str(root), str(val), voxel_fraction=1 / 32, dilation=1, batch_size=2)
    pl.seed_everything(0, verbose=False)
    model = SurfaceRefiner(NetworkSettings(base_channels=4, levels=2), loss=LossWeights(observed_sdf_weight=0.1),
                           optimisation=Optimisation(lr=1e-2), extraction=Extraction(trust_weight=1.0), dilation=1)
    dm.setup("fit")
    batch = collate_scans([prepare_scan(s, 1 / 32, dilation=1) for s in dm.train_scans])
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
    scan = dm.val_scans[0]
    volume = fuse_rgbd(scan, 1 / 32, 4 / 32, progress=False)
    raw = canonical_mesh(volume.extract_mesh())
    refined = canonical_mesh(refine_volume(model, volume))
    gt = read_mesh(scan / "mesh.ply")
    raw_m, refined_m = (mesh_metrics(m, gt, num_points=10000, fscore_threshold=0.01) for m in (raw, refined))
    assert refined_m["completeness"] < 0.6 * raw_m["completeness"], (raw_m, refined_m)  # the holes are filled
    assert refined_m["chamfer"] < 0.85 * raw_m["chamfer"], (raw_m, refined_m)


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
    model = SurfaceRefiner(NetworkSettings(base_channels=4, levels=2), dilation=1)
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
    """``geo3d fit --config configs/surface/*.yaml``: every config resolves, with ``dilation`` written once (under
    data; the model's comes from it through the CLI's link); the CPU one runs (tiny data, 2 steps) and writes
    last.ckpt, whose model has the data's dilation and which ``geo3d reconstruct --method refined`` then uses; with
    a keep threshold the network does not reach, reconstruct fails with one line saying so."""
    from pathlib import Path

    import yaml

    from geo3d.cli import main
    from geo3d.io.checkpoint import load_module

    overlays = {"unet_zoo_cpu.yaml": "unet_tiny_cpu.yaml"}  # given after the config they override
    configs = sorted(Path("configs/surface").glob("*.yaml"))
    assert {c.name for c in configs} >= {"unet_tiny_cpu.yaml", "unet_gpu.yaml", *overlays}
    for config in configs:
        base = ["--config", str(config.parent / overlays[config.name])] if config.name in overlays else []
        with pytest.raises(SystemExit) as exit_info:  # LightningCLI exits after printing
            main(["fit", *base, "--config", str(config), "--print_config"])
        assert exit_info.value.code == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["model"]["class_path"] == "pipelines.surface.module.SurfaceRefiner"
        assert "dilation" not in printed["model"]["init_args"] and printed["data"]["init_args"]["dilation"] == 3
        assert printed["trainer"]["max_steps"] > 0, config  # a fixed number of steps: the same model anywhere
        if config.name in overlays:  # the overlay's own settings win, the rest is the base config's
            assert printed["trainer"]["default_root_dir"] == f"out/surface/{config.stem}"
            assert printed["model"]["init_args"]["network"]["base_channels"] == 16
            assert printed["model"]["init_args"]["loss"]["observed_sdf_weight"] == 0.1
    train = _scans(tmp_path / "train", [("blob", 0)])
    val = _scans(tmp_path / "val", [("blob", 1)])
    out = tmp_path / "run"
    code = main(["fit", "--config", "configs/surface/unet_tiny_cpu.yaml", "--data.train_dir", str(train),
                 "--data.val_dir", str(val), "--data.voxel_fraction", "0.03125", "--data.batch_size", "1",
                 "--data.dilation", "1", "--model.network.base_channels", "4", "--model.network.levels", "2",
                 "--model.evaluation.eval_points", "1000",
                 # 2 steps: the keep logits are still near 0 (probability 0.5)
                 "--model.extraction.keep_threshold", "0.05",
                 "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                 "--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir", str(out)])
    assert code == 0
    checkpoints = list(out.rglob("last.ckpt"))
    assert len(checkpoints) == 1
    model = load_module(checkpoints[0], SurfaceRefiner)
    assert model.dilation == 1 and model.network_settings == NetworkSettings(base_channels=4, levels=2)
    assert model.extraction == Extraction(keep_threshold=0.05, trust_weight=1.0)
    recon = tmp_path / "recon"
    assert main(["reconstruct", "--input", str(val), "--output", str(recon), "--method", "refined",
                 "--checkpoint", str(checkpoints[0]), "--voxel-fraction", "1/32", "--eval-points", "1000",
                 "--no-progress"]) == 0
    assert (recon / "blob_1" / "mesh.ply").is_file()
    capsys.readouterr()
    volume = fuse_rgbd(val / "blob_1", 1 / 32, 4 / 32, progress=False)
    with pytest.raises(InputError, match="kept no voxel"):
        refine_volume(model, volume, keep_threshold=0.9999)


# The hyper-parameters that the code before the settings groups (commit b019f9c) saved, from Python
# (``dict(model.hparams)``: its 12 flat arguments) and from ``geo3d fit --config configs/surface/unet_tiny_cpu.yaml``
# (the Lightning CLI adds ``_class_path`` and ``_instantiator``): the keys as read from a checkpoint that code wrote,
# the network made smaller (4 channels, 2 levels) for the test.
OLD_FLAT_HPARAMS = {"base_channels": 4, "levels": 2, "lr": 0.003, "weight_decay": 0.0001, "sdf_weight": 1.0,
                    "occupancy_weight": 0.5, "keep_threshold": 0.7, "eval_points": 5000, "fscore_fraction": 0.0025,
                    "dilation": 3, "observed_sdf_weight": 0.1, "trust_weight": 1.0}
OLD_CLI_KEYS = {"_class_path": "pipelines.surface.module.SurfaceRefiner",
                "_instantiator": "pytorch_lightning.cli.instantiate_module"}


@pytest.mark.parametrize("cli", [False, True], ids=["python", "cli"])
def test_a_checkpoint_with_the_old_flat_hyperparameters_loads_into_the_groups(tmp_path, cli):
    import pytorch_lightning as pl

    from geo3d.io.checkpoint import load_module

    torch.manual_seed(0)
    weights = SurfaceRefiner(NetworkSettings(base_channels=4, levels=2)).state_dict()  # same names as before
    hparams = {**OLD_CLI_KEYS, **OLD_FLAT_HPARAMS} if cli else dict(OLD_FLAT_HPARAMS)
    torch.save({"state_dict": weights, "hyper_parameters": hparams, "pytorch-lightning_version": pl.__version__},
               tmp_path / "old.ckpt")
    model = load_module(tmp_path / "old.ckpt", SurfaceRefiner)
    assert model.network_settings == NetworkSettings(base_channels=4, levels=2)
    assert model.loss_weights == LossWeights(sdf_weight=1.0, occupancy_weight=0.5, observed_sdf_weight=0.1)
    assert model.optimisation == Optimisation(lr=0.003, weight_decay=0.0001)
    assert model.extraction == Extraction(keep_threshold=0.7, trust_weight=1.0)
    assert model.evaluation == Evaluation(eval_points=5000, fscore_fraction=0.0025)
    assert model.dilation == 3 and not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    # a checkpoint of the grouped signature passes through the upgrade unchanged
    assert SurfaceRefiner.upgrade_hparams(dict(model.hparams)) == dict(model.hparams)


def test_settings_groups_refuse_bad_values():
    with pytest.raises(ValueError, match="levels"):
        NetworkSettings(levels=0)
    with pytest.raises(ValueError, match="observed_sdf_weight"):
        LossWeights(observed_sdf_weight=-1.0)
    with pytest.raises(ValueError, match="lr"):
        Optimisation(lr=0.0)
    with pytest.raises(ValueError, match="eval_points"):
        Evaluation(eval_points=0)
    with pytest.raises(ValueError, match="dilation"):
        SurfaceRefiner(dilation=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Extraction().keep_threshold = 0.9


@pytest.mark.parametrize("max_steps", [1, 3, 10, 600])
def test_one_cycle_schedule_runs_any_step_count(max_steps):
    """The learning rate warms up over the first 10 % of ``trainer.max_steps``, peaks at ``optimisation.lr`` and
    anneals to about 0 at the end, for any count (torch's OneCycleLR divided by zero below 10 steps)."""
    model = SurfaceRefiner(NetworkSettings(base_channels=4, levels=2), optimisation=Optimisation(lr=3e-3))
    model.trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False)
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(max_steps + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = max(range(len(rates)), key=rates.__getitem__)
    assert rates[0] == pytest.approx(3e-3 / 25) and max(rates) <= 3e-3 * (1 + 1e-9)
    assert rates[-1] < 3e-3 / 1e4 and all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:]))
    if max_steps >= 10:  # a warm-up step or more
        assert rates[peak] == pytest.approx(3e-3) and peak == max_steps // 10
