"""The splatting LightningModule: training improves held-out views, densification and floater pruning keep the
optimizers consistent, export round-trips, checkpoints resume with a changed Gaussian count, old checkpoints load,
the CLI links the scene, CLI errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import pytorch_lightning as pl
import torch

from geo3d.cli import main
from geo3d.io import read_gaussian_ply
from geo3d.io.checkpoint import load_module
from pipelines.splatting import module as splatting_module
from pipelines.splatting.data import SplatDataModule
from pipelines.splatting.module import PARAM_NAMES, Densification, FloaterPruning, GaussianSplatting, InitOptions


def _trainer(steps: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                      num_sanity_val_steps=0, **kwargs)


def _model(tmp_path, **kwargs) -> GaussianSplatting:
    defaults = dict(init=InitOptions(kind="visual_hull", resolution=24, refine_resolution=48, num_points=3000),
                    densification=Densification(refine_start_iter=20, refine_stop_iter=60, refine_every=20),
                    floaters=FloaterPruning(every=30, start=30, stop=60, k=4), export_dir=str(tmp_path / "model"))
    defaults.update(kwargs)
    return GaussianSplatting(**defaults)


def _optimizers_match(model: GaussianSplatting, trainer: pl.Trainer) -> None:
    for name, opt in zip(PARAM_NAMES, trainer.optimizers):
        param = opt.param_groups[0]["params"][0]
        assert param is model.params[name], f"{name}: the optimizer holds a stale tensor"
        for key in ("exp_avg", "exp_avg_sq"):
            if key in opt.state[param]:
                assert opt.state[param][key].shape == param.shape, f"{name}.{key} shape"


def test_training_improves_test_views_and_exports(tiny_nerf, tmp_path):
    torch.manual_seed(0)
    dm = SplatDataModule(str(tiny_nerf), views=4, test_views=4, steps_per_epoch=1000)
    model = _model(tmp_path, scene=dm.scene)
    trainer = _trainer(1)
    trainer.fit(model, datamodule=dm)  # one step: about the initial Gaussians, evaluated and exported
    before = json.loads((tmp_path / "model" / "test_metrics.json").read_text())["mean"]["psnr"]
    trainer = _trainer(120)
    trainer.fit(model, datamodule=dm)
    summary = json.loads((tmp_path / "model" / "test_metrics.json").read_text())
    assert summary["steps"] == 120 and summary["num_views"] == 4
    assert summary["mean"]["psnr"] > before + 3.0, (before, summary["mean"])
    _optimizers_match(model, trainer)
    # the export is a standard 3DGS PLY holding exactly the trained Gaussians, plus the split
    ply = read_gaussian_ply(tmp_path / "model" / "gaussians.ply")
    assert torch.equal(ply.means, model.params["means"].detach())
    assert torch.equal(ply.sh[:, 0], model.params["sh0"].detach()[:, 0])
    split = json.loads((tmp_path / "model" / "split.json").read_text())
    assert split["train"] == dm.train.names and len(split["test"]) == 4
    assert len(list((tmp_path / "model" / "test_renders").glob("*.png"))) == 4


def test_densification_and_floater_pruning_keep_optimizers_consistent(tiny_nerf, tmp_path):
    dm = SplatDataModule(str(tiny_nerf), views=4, test_views=2, steps_per_epoch=1000)
    # grow_grad2d = 0: every visible Gaussian is duplicated or split at each refinement
    model = _model(tmp_path, scene=dm.scene,
                   densification=Densification(refine_start_iter=5, refine_stop_iter=30, refine_every=10,
                                               grow_grad2d=0.0, max_gaussians=100000),
                   floaters=FloaterPruning(every=15, start=15, stop=30, k=4, lam_start=0.5, lam_end=0.5))
    trainer = _trainer(21)  # refinements at steps 10 and 20, floater pruning between them (after step 14)
    trainer.fit(model, datamodule=dm)
    n0 = 3000
    assert len(model.params["means"]) > n0  # it grew
    _optimizers_match(model, trainer)


def test_checkpoint_resume_with_a_changed_gaussian_count(tiny_nerf, tmp_path):
    dm = SplatDataModule(str(tiny_nerf), views=4, test_views=2, steps_per_epoch=1000)
    model = _model(tmp_path, scene=dm.scene, densification=Densification(refine_start_iter=5, refine_stop_iter=30,
                                                                          refine_every=10, grow_grad2d=0.0))
    trainer = _trainer(21)  # refinements at steps 10 and 20: about 4x the initial 3000 Gaussians
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "state.ckpt"
    trainer.save_checkpoint(ckpt)
    grown = len(model.params["means"])
    dm = SplatDataModule(str(tiny_nerf), views=4, test_views=2)
    resumed = _model(tmp_path, scene=dm.scene)
    trainer = _trainer(24)
    trainer.fit(resumed, datamodule=dm, ckpt_path=ckpt)
    assert trainer.global_step == 24
    assert len(resumed.params["means"]) >= grown * 0.5  # restored from the checkpoint, not re-initialised (3000)
    _optimizers_match(resumed, trainer)


def test_cli_errors_are_one_line(tiny_nerf, tmp_path, capsys):
    config = "configs/splatting/object_4view_cpu.yaml"
    code = main(["fit", "--config", config, "--data.path", str(tiny_nerf), "--data.views", "99",
                 "--trainer.logger", "false", "--model.export_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "views" in err[0] and "12 images" in err[0]
    (tmp_path / "transforms.json").write_text("{}")
    code = main(["fit", "--config", config, "--data.path", str(tmp_path / "transforms.json"),
                 "--trainer.logger", "false", "--model.export_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "transforms.json" in err[0] and "frames" in err[0]


def test_cli_links_the_scene_and_fits_two_steps(tiny_nerf, tmp_path, capsys):
    config = "configs/splatting/object_4view_cpu.yaml"
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", config, "--data.path", str(tiny_nerf), "--print_config"])
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    assert "scene:" not in printed and "views: 4" in printed  # the scene is no setting: the data's files give it
    code = main(["fit", "--config", config, "--data.path", str(tiny_nerf), "--trainer.max_steps", "2",
                 "--trainer.max_time", "null", "--trainer.logger", "false", "--trainer.default_root_dir",
                 str(tmp_path), "--model.export_dir", str(tmp_path / "model"), "--model.init.resolution", "24",
                 "--model.init.refine_resolution", "48"])
    assert code in (0, None), capsys.readouterr().err[-2000:]
    # what only the scene holds reached the model: the split, and the test views it evaluated
    scene = SplatDataModule(str(tiny_nerf), views=4, test_views=25).scene
    assert json.loads((tmp_path / "model" / "split.json").read_text()) == scene.split
    summary = json.loads((tmp_path / "model" / "test_metrics.json").read_text())
    assert summary["steps"] == 2 and [v["name"] for v in summary["views"]] == scene.test.names
    assert "scene:" not in (tmp_path / "config.yaml").read_text()


def _old_checkpoint(path, hparams: dict, n: int = 5) -> dict:
    """A checkpoint as the code before typed frozen settings wrote it: n Gaussians of SH degree 0."""
    g = torch.Generator().manual_seed(0)
    state = {"scene_center": torch.tensor([0.1, 0.2, 0.3]), "scene_scale": torch.tensor(4.4),
             "background": torch.zeros(3), "params.means": torch.randn(n, 3, generator=g),
             "params.scales": torch.randn(n, 3, generator=g), "params.quats": torch.randn(n, 4, generator=g),
             "params.opacities": torch.randn(n, generator=g), "params.sh0": torch.randn(n, 1, 3, generator=g),
             "params.shN": torch.zeros(n, 0, 3)}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "pytorch-lightning_version": pl.__version__,
                "epoch": 0, "global_step": 40}, path)
    return state


OLD_CLI_HPARAMS = {  # hyper_parameters of a checkpoint that `geo3d fit` wrote before (groups as the YAML's dicts)
    "_class_path": "pipelines.splatting.module.GaussianSplatting",
    "init": {"kind": "visual_hull", "resolution": 64, "refine_resolution": 128, "min_views": 4, "num_points": 20000,
             "points_path": None, "opacity": 0.1, "seed": 0},
    "lr": {"means": 0.0008, "means_final": 8e-06, "scales": 0.005, "quats": 0.001, "opacities": 0.05, "sh0": 0.0025,
           "shN": 0.000125},
    "densification": {"refine_start_iter": 10, "refine_stop_iter": 30, "refine_every": 10, "grow_grad2d": 0.0002,
                      "grow_scale3d": 0.01, "prune_opa": 0.005, "prune_scale3d": 0.1, "reset_every": 3000,
                      "max_gaussians": 60000},
    "floaters": {"enabled": True, "every": 15, "start": 15, "stop": None, "k": 8, "lam_start": 3.0, "lam_end": 1.5},
    "loss": {"ssim": 0.2, "mask": 0.5, "opacity": 0.0, "scale": 0.0, "random_background": True},
    "sh_degree": 0, "sh_increase_every": 1000, "export_dir": "/tmp/old/export", "log_images": 3,
    "_instantiator": "pytorch_lightning.cli.instantiate_module",
}


@pytest.mark.parametrize("kind", ["cli", "python", "flat"])
def test_old_checkpoints_load_through_load_module(tmp_path, kind):
    groups = {"init": InitOptions(min_views=4, opacity=0.1),
              "lr": splatting_module.LearningRates(means=8e-4, means_final=8e-6),
              "densification": Densification(refine_start_iter=10, refine_stop_iter=30, refine_every=10,
                                             max_gaussians=60000),
              "floaters": FloaterPruning(every=15, start=15),
              "loss": splatting_module.LossWeights(mask=0.5, random_background=True)}
    if kind == "cli":
        hparams = OLD_CLI_HPARAMS
    elif kind == "python":  # GaussianSplatting(init=InitOptions(...), ...) built in Python: the groups pickled
        hparams = {**groups, "sh_degree": 0, "sh_increase_every": 1000, "export_dir": None, "log_images": 3}
    else:  # flat keys (hand-written or flattened hyper-parameters) go into their groups
        hparams = {"min_views": 4, "opacity": 0.1, "means": 8e-4, "means_final": 8e-6, "refine_start_iter": 10,
                   "refine_stop_iter": 30, "refine_every": 10, "max_gaussians": 60000, "every": 15, "start": 15,
                   "mask": 0.5, "random_background": True, "sh_degree": 0}
        assert GaussianSplatting.upgrade_hparams(hparams) == {"sh_degree": 0, **groups}
    if kind != "flat":
        assert GaussianSplatting.upgrade_hparams(hparams) == hparams  # already grouped: nothing to upgrade
    state = _old_checkpoint(tmp_path / "old.ckpt", hparams)
    model = load_module(tmp_path / "old.ckpt", GaussianSplatting)
    assert not model.training and model.scene is None and model.sh_degree == 0
    for name, group in groups.items():
        assert model.hparams[name] == group, name  # typed groups, equal to the old values
    assert model.init_options == groups["init"] and model.loss_weights == groups["loss"]
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state.items())


def test_settings_are_frozen_validated_and_the_scene_is_no_hyperparameter(tiny_nerf):
    with pytest.raises(dataclasses.FrozenInstanceError):
        InitOptions().kind = "random"
    with pytest.raises(ValueError, match="init.points_path: required"):
        InitOptions(kind="points")
    with pytest.raises(ValueError, match="init.kind"):
        InitOptions(kind="sphere")
    with pytest.raises(ValueError, match="sh_degree"):
        GaussianSplatting(sh_degree=4)
    model = GaussianSplatting(scene=SplatDataModule(str(tiny_nerf), views=2, test_views=1).scene)
    assert "scene" not in model.hparams and model.init_options == InitOptions()
    with pytest.raises(ValueError, match="no Gaussians"):  # no scene and no checkpoint: nothing to start from
        GaussianSplatting().configure_optimizers()


def test_sh_degree_schedule():
    model = GaussianSplatting(sh_degree=2, sh_increase_every=100)
    assert [model.current_sh_degree(s) for s in (0, 99, 100, 199, 200, 5000)] == [0, 0, 1, 1, 2, 2]


def test_floater_pruning_removes_planted_outliers(tiny_nerf, tmp_path):
    from geo3d.io import write_point_cloud
    from geo3d.types import PointCloud

    g = torch.Generator().manual_seed(0)
    body = torch.rand(3000, 3, generator=g) - 0.5  # a 1 m cube around the origin, where the object is
    outliers = torch.tensor([[1.6, 0.0, 0.2], [-1.5, 0.4, 0.9], [0.2, 1.7, -0.3], [0.0, -1.4, 1.4]])
    write_point_cloud(tmp_path / "init.ply", PointCloud(torch.cat([body, outliers]), torch.full((3004, 3), 0.5)))
    dm = SplatDataModule(str(tiny_nerf), views=4, test_views=2, steps_per_epoch=1000)
    model = _model(tmp_path, init=InitOptions(kind="points", points_path=str(tmp_path / "init.ply")),
                   densification=Densification(refine_start_iter=10**6), scene=dm.scene,
                   floaters=FloaterPruning(every=10, start=10, stop=10, k=8, lam_start=3.0, lam_end=3.0))
    trainer = _trainer(11)
    # plain dataloaders, no datamodule: everything the model needs of the data comes in as its scene
    trainer.fit(model, train_dataloaders=dm.train_dataloader())
    means = model.params["means"].detach()
    nearest = torch.cdist(outliers, means).min(1).values
    assert bool((nearest > 0.5).all()), nearest  # every planted outlier is gone
    assert len(means) >= 2990  # and (almost) nothing of the body
    _optimizers_match(model, trainer)
