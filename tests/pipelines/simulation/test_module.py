"""The simulation LightningModules' settings: checkpoints of the old flat signature load into the typed groups
(through geo3d.io.checkpoint.load_module), and `geo3d fit` links the data's dim, radius and normaliser statistics
into the model (written once: absent from the model's config, present in its checkpoint)."""

from __future__ import annotations

import dataclasses

import pytest
import pytorch_lightning as pl
import torch
import yaml

from geo3d.cli import main
from geo3d.errors import InputError
from geo3d.io.checkpoint import load_module
from pipelines.simulation.data import SimulationDataModule, write_analytic_dataset
from pipelines.simulation.features import NormalizerStatistics
from pipelines.simulation.giorom import QuerySettings, SamplingSettings
from pipelines.simulation.gns import NetworkSettings
from pipelines.simulation.module import EvaluationSettings, GIOROMModule, GNSModule, OptimSettings

STATISTICS = NormalizerStatistics((1e-3, -2e-3), (3e-3, 4e-3), (5e-5, -6e-5), (7e-4, 8e-4))

# The hyper-parameters `geo3d fit` saved with the flat signatures (before the typed groups), sizes made small.
OLD_GNS = {"_class_path": "pipelines.simulation.gns.GNSModule", "dim": 2, "latent": 8, "steps": 1, "mlp_layers": 1,
           "num_particle_types": 9, "type_embedding": 4, "max_neighbors": None, "radius": None, "lr": 0.001,
           "lr_final": 1e-05, "val_rollout_steps": 20, "test_rollout_steps": None, "val_windows": 16,
           "particle_mass": 1.0, "_instantiator": "pytorch_lightning.cli.instantiate_module"}
OLD_GIOROM = {"_class_path": "pipelines.simulation.giorom.GIOROMModule", "dim": 2, "latent": 8, "steps": 1,
              "mlp_layers": 1, "num_particle_types": 9, "type_embedding": 4, "num_samples": 0.25, "sample": "random",
              "fps_candidates": 4, "sparse_radius": None, "radius_factor": 1.5, "max_neighbors": None,
              "query_neighbors": 3, "kernel_width": 8, "query_latent": 6, "query_layers": 1, "sample_seed": 7,
              "train_queries": 0.5, "radius": None, "lr": 0.002, "lr_final": 2e-05, "val_rollout_steps": 10,
              "test_rollout_steps": 30, "val_windows": 4, "particle_mass": 2.0, "acceleration_features": False,
              "_instantiator": "pytorch_lightning.cli.instantiate_module"}
NETWORK = NetworkSettings(latent=8, steps=1, mlp_layers=1, type_embedding=4)


def _new(cls: type) -> GNSModule | GIOROMModule:
    """The module the old hyper-parameters describe, built with the grouped signature."""
    if cls is GNSModule:
        return GNSModule(2, NETWORK, OptimSettings(lr=0.001, lr_final=1e-05))
    return GIOROMModule(2, NETWORK, SamplingSettings(num_samples=0.25, method="random", radius_factor=1.5, seed=7),
                        QuerySettings(neighbors=3, kernel_width=8, latent=6), acceleration_features=False,
                        train_queries=0.5, optim=OptimSettings(lr=0.002, lr_final=2e-05),
                        evaluation=EvaluationSettings(val_rollout_steps=10, test_rollout_steps=30, val_windows=4,
                                                      particle_mass=2.0))


@pytest.mark.parametrize("cls, old", [(GNSModule, OLD_GNS), (GIOROMModule, OLD_GIOROM)], ids=["gns", "giorom"])
@pytest.mark.parametrize("cli", [True, False], ids=["lightning-cli", "python"])
def test_old_flat_checkpoints_load_into_the_groups(tmp_path, cls, old, cli):
    torch.manual_seed(1)
    new = _new(cls)
    hparams = dict(old) if cli else {k: v for k, v in old.items() if not k.startswith("_")}
    upgraded = cls.upgrade_hparams(hparams)
    grouped = {k: v for k, v in upgraded.items() if not k.startswith("_")}
    assert grouped == {k: v for k, v in new.hparams.items() if k not in ("statistics",)}
    assert cls.upgrade_hparams(upgraded) == upgraded  # new checkpoints are left as they are
    if cli:
        assert upgraded["_class_path"] == f"pipelines.simulation.module.{cls.__name__}"
    # a checkpoint with the old hyper-parameters and the weights and buffers the old module saved (same keys)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in new.state_dict().items()}
    state["model.radius"] = torch.tensor(0.04, dtype=torch.float64)
    torch.save({"state_dict": state, "hyper_parameters": hparams, "pytorch-lightning_version": pl.__version__},
               tmp_path / "old.ckpt")
    model = load_module(tmp_path / "old.ckpt", cls)
    assert [model.hparams[k] for k in grouped] == list(grouped.values())
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert model.model.radius.item() == 0.04
    other = GIOROMModule if cls is GNSModule else GNSModule
    with pytest.raises(InputError, match=f"old.ckpt: not a {other.__name__} checkpoint"):
        load_module(tmp_path / "old.ckpt", other)


def test_data_values_go_into_the_buffers_and_are_checked(tmp_path):
    module = GIOROMModule(2, NETWORK, radius=0.04, statistics=STATISTICS)
    assert module.model.radius.item() == 0.04
    assert module.model.normalizer.statistics() == NormalizerStatistics(
        *(tuple(torch.tensor(v, dtype=torch.float32).tolist()) for v in dataclasses.astuple(STATISTICS)))
    with pytest.raises(ValueError, match="GNSModule: statistics have 2 axes but dim is 3"):
        GNSModule(3, NETWORK, statistics=STATISTICS)
    with pytest.raises(ValueError, match="D = 2 values"):
        NormalizerStatistics((0.0, 0.0), (1.0,), (0.0, 0.0), (1.0, 1.0))
    # no model reads the datamodule: one built without the data's values refuses to train
    data = write_analytic_dataset(tmp_path / "springs", "springs", {"train": 1}, steps=8, side=2)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    with pytest.raises(ValueError, match="GNSModule: training needs the data's connectivity radius"):
        trainer.fit(GNSModule(2, NETWORK), SimulationDataModule(str(data)))


def _two_step_config(tmp_path, data, model: str, model_args: dict, **data_args) -> str:
    """A `geo3d fit` config: ``model`` (a class of pipelines.simulation.module) on ``data``, 2 steps, no
    validation, written to tmp_path/fit.yaml; returns its path."""
    config = tmp_path / "fit.yaml"
    config.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "trainer": {"max_steps": 2, "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "limit_val_batches": 0, "accelerator": "cpu", "default_root_dir": str(tmp_path / "out")},
        "model": {"class_path": f"pipelines.simulation.module.{model}", "init_args": model_args},
        "data": {"class_path": "pipelines.simulation.data.SimulationDataModule",
                 "init_args": {"path": str(data), "batch_size": 2, "max_train_windows": 4, **data_args}}}))
    return config


def test_fit_links_the_data_values_into_the_model(tmp_path, capsys):
    data = write_analytic_dataset(tmp_path / "springs", "springs", {"train": 2, "valid": 1, "test": 1}, steps=12,
                                  side=3, radius=0.17)
    config = _two_step_config(tmp_path, data, "GIOROMModule", {"network": {"latent": 8, "steps": 1},
                                                               "query": {"latent": 6}}, noise_std=2e-4)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert {"dim", "radius", "statistics"}.isdisjoint(printed["model"]["init_args"])  # written once: the data's
    assert printed["model"]["init_args"]["network"]["latent"] == 8 and printed["data"]["init_args"]["radius"] is None
    main(["fit", "--config", str(config)])
    (ckpt,) = (tmp_path / "out").rglob("*.ckpt")
    model = load_module(ckpt, GIOROMModule)
    dm = SimulationDataModule(str(data), noise_std=2e-4)
    assert model.hparams.dim == 2 and model.hparams.radius == 0.17 and model.hparams.statistics == dm.statistics
    assert model.model.radius.item() == 0.17 and model.model.normalizer.statistics() == dm.statistics


def test_cli_test_takes_an_old_flat_checkpoint(tmp_path, capsys):
    """`geo3d test --ckpt_path OLD.ckpt`: Lightning merges the checkpoint's hyper-parameters into the config, so
    those of the flat signature are upgraded first (GeoLightningCLI); the metrics equal the new checkpoint's."""
    data = write_analytic_dataset(tmp_path / "springs", "springs", {"train": 2, "valid": 1, "test": 1}, steps=10,
                                  side=3, radius=0.17)
    config = _two_step_config(tmp_path, data, "GNSModule", {"network": {"latent": 8, "steps": 1}})
    main(["fit", "--config", str(config)])
    (new,) = (tmp_path / "out").rglob("*.ckpt")
    ckpt = torch.load(new, weights_only=False)
    grouped = ckpt["hyper_parameters"]
    flat = {"_class_path": "pipelines.simulation.gns.GNSModule", "dim": grouped["dim"], "radius": None,
            **grouped["network"], **grouped["optim"], **grouped["evaluation"],
            "_instantiator": grouped["_instantiator"]}
    assert set(flat) - {"_class_path", "_instantiator"} == set(OLD_GNS) - {"_class_path", "_instantiator"}
    ckpt["hyper_parameters"] = flat
    torch.save(ckpt, tmp_path / "old.ckpt")
    capsys.readouterr()
    tables = []
    for path in (new, tmp_path / "old.ckpt"):
        assert main(["test", "--config", str(config), "--ckpt_path", str(path)]) == 0
        tables.append([line for line in capsys.readouterr().out.splitlines() if "test/" in line])
    assert len(tables[0]) > 5 and tables[0] == tables[1]
