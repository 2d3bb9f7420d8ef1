"""SimulationDataModule: windows cut on the fly (count and content), the collate of different particle counts, GNS
.npz folders, statistics, one-line errors for bad metadata, and the shared LagrangeBench sample."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from geo3d.cli import main
from geo3d.errors import InputError
from geo3d.io.particles import write_gns_npz, write_lagrangebench
from geo3d.types import ParticleTrajectory
from pipelines.simulation.data import (
    SimulationDataModule,
    WindowDataset,
    analytic_trajectories,
    collate_windows,
    detect_format,
    trajectory_statistics,
    write_analytic_dataset,
)
from pipelines.simulation.features import HISTORY, target_acceleration

META = {"default_connectivity_radius": 0.2, "bounds": [[0.0, 1.0], [0.0, 1.0]]}


def _trajs(lengths=(10, 13), counts=(4, 6), dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [ParticleTrajectory(torch.rand(t, n, dim, generator=g), torch.arange(n) % 2, 0.01,
                               torch.tensor([[0.0, 1.0]] * dim)) for t, n in zip(lengths, counts)]


def test_windows_count_and_content(tmp_path):
    train = _trajs()
    write_lagrangebench(tmp_path, train, META)
    write_lagrangebench(tmp_path, _trajs((9,), (5,), seed=1), split="valid")
    dm = SimulationDataModule(str(tmp_path), noise_std=0.0)
    dm.setup("fit")
    assert len(dm.train_set) == (10 - HISTORY) + (13 - HISTORY)
    for index in range(len(dm.train_set)):
        traj, start = dm.train_set.window(index)
        item = dm.train_set[index]
        p = train[traj].positions
        assert torch.equal(item["history"], p[start:start + HISTORY])
        expected = target_acceleration(p[start:start + HISTORY], p[start + HISTORY])
        assert torch.allclose(item["target_acceleration"], expected, atol=1e-6)
        assert torch.equal(item["particle_types"], train[traj].particle_types)
        assert item["bounds"].tolist() == META["bounds"]
    assert dm.train_set.window(10 - HISTORY) == (1, 0)
    # max_train_windows: evenly spaced subset
    assert len(WindowDataset(train, max_windows=3)) == 3
    # validation items are whole trajectories
    (val,) = list(dm.val_dataloader())
    assert val["positions"].shape == (9, 5, 2)


def test_noisy_windows_and_collate(tmp_path):
    train = _trajs()
    write_lagrangebench(tmp_path, train, META)
    dm = SimulationDataModule(str(tmp_path), noise_std=0.01, batch_size=2)
    dm.setup("fit")
    assert dm.val_dataloader() == []  # no valid split: no validation
    item = dm.train_set[len(dm.train_set) - 1]
    traj, start = dm.train_set.window(len(dm.train_set) - 1)
    p = train[traj].positions
    history = item["history"]
    assert torch.equal(history[0], p[start]) and not torch.equal(history[-1], p[start + HISTORY - 1])
    shifted = p[start + HISTORY] + (history[-1] - p[start + HISTORY - 1])
    assert torch.allclose(target_acceleration(history, shifted), item["target_acceleration"], atol=1e-6)
    batch = collate_windows([dm.train_set[0], dm.train_set[len(dm.train_set) - 1]])
    assert batch["history"].shape == (HISTORY, 4 + 6, 2)
    assert batch["batch"].tolist() == [0] * 4 + [1] * 6
    assert batch["target_acceleration"].shape == (10, 2) and batch["particle_types"].shape == (10,)
    assert batch["bounds"].shape == (2, 2, 2) and batch["num_particles"].tolist() == [4, 6]
    loader = dm.train_dataloader()
    assert next(iter(loader))["history"].shape[0] == HISTORY


def test_statistics_from_data_or_metadata(tmp_path):
    train = _trajs()
    write_lagrangebench(tmp_path, train, META)
    dm = SimulationDataModule(str(tmp_path), noise_std=0.0)
    stats = trajectory_statistics(train)
    v = np.concatenate([np.diff(t.positions.double().numpy(), axis=0).reshape(-1, 2) for t in train])
    assert stats["vel_std"] == pytest.approx(v.std(0).tolist(), rel=1e-9)
    assert dm.normalizer().vel_std.tolist() == pytest.approx(v.std(0).tolist(), rel=1e-6)
    given = {"vel_mean": [0.0, 0.0], "vel_std": [2.0, 2.0], "acc_mean": [0.0, 0.0], "acc_std": [1.0, 1.0]}
    write_lagrangebench(tmp_path, train, given)
    norm = SimulationDataModule(str(tmp_path), noise_std=1.5).normalizer()
    assert norm.vel_std.tolist() == pytest.approx([2.5, 2.5])
    assert norm.acc_std.tolist() == pytest.approx([3.25**0.5] * 2)
    assert SimulationDataModule(str(tmp_path)).radius == 0.2
    assert SimulationDataModule(str(tmp_path), radius=0.05).radius == 0.05


def test_gns_npz_folder(tmp_path):
    train = _trajs(dim=3)
    write_gns_npz(tmp_path / "train.npz", train)
    write_gns_npz(tmp_path / "valid.npz", train[:1])
    (tmp_path / "metadata.json").write_text(json.dumps({"dt": 0.01, "bounds": [[0, 1]] * 3,
                                                        "default_connectivity_radius": 0.3}))
    assert detect_format(tmp_path) == "gns"
    dm = SimulationDataModule(str(tmp_path), noise_std=0.0)
    dm.setup("fit")
    assert dm.dim == 3 and len(dm.train_set) == (10 - HISTORY) + (13 - HISTORY)
    assert torch.equal(dm.train_set[0]["history"], train[0].positions[:HISTORY])
    assert len(dm.val_set) == 1


def test_bad_metadata_and_data_raise_one_line_input_errors(tmp_path):
    write_lagrangebench(tmp_path / "nobounds", _trajs(), {"default_connectivity_radius": 0.2})
    meta = json.loads((tmp_path / "nobounds" / "metadata.json").read_text())
    meta.pop("bounds")
    (tmp_path / "nobounds" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"nobounds/metadata\.json: no 'bounds'"):
        SimulationDataModule(str(tmp_path / "nobounds")).setup("fit")

    write_lagrangebench(tmp_path / "axes", _trajs(), {**META, "bounds": [[0, 1]] * 3})
    with pytest.raises(InputError, match=r"metadata\.json: 'dim' is 2 but 'bounds' has 3 axes"):
        SimulationDataModule(str(tmp_path / "axes")).setup("fit")

    write_lagrangebench(tmp_path / "stats", _trajs(), {**META, "vel_std": [1.0, 2.0, 3.0]})
    with pytest.raises(InputError, match=r"metadata\.json: 'vel_std': expected 2 finite numbers"):
        SimulationDataModule(str(tmp_path / "stats")).setup("fit")

    write_lagrangebench(tmp_path / "radius", _trajs(), {"bounds": META["bounds"]})
    with pytest.raises(InputError, match=r"no 'default_connectivity_radius'"):
        SimulationDataModule(str(tmp_path / "radius")).setup("fit")

    write_lagrangebench(tmp_path / "short", _trajs((HISTORY, 3), (4, 4)), META)
    with pytest.raises(InputError, match=r"train\.h5: position: every trajectory has at most 6 steps"):
        SimulationDataModule(str(tmp_path / "short")).setup("fit")

    nan = tmp_path / "nan"
    write_lagrangebench(nan, _trajs(), META)
    with h5py.File(nan / "train.h5", "r+") as f:
        f["00001/position"][3, 2, 0] = np.nan
    with pytest.raises(InputError, match=r"train\.h5: 00001: .*positions: contains NaN"):
        SimulationDataModule(str(nan)).setup("fit")

    with pytest.raises(InputError, match="no dataset splits"):
        SimulationDataModule(str(tmp_path)).setup("fit")

    # through the command line: one line on stderr, exit code 2
    config = tmp_path / "fit.yaml"
    config.write_text(
        "trainer: {max_steps: 1, logger: false, enable_checkpointing: false, enable_progress_bar: false}\n"
        "model: {class_path: pipelines.simulation.module.GNSModule, init_args: {network: {latent: 8, steps: 1}}}\n"
        f"data: {{class_path: pipelines.simulation.data.SimulationDataModule, init_args: {{path: '{nan}'}}}}\n")
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["fit", "--config", str(config)]) == 2
    lines = err.getvalue().strip().splitlines()
    assert lines[-1].startswith("geo3d: error: ") and "train.h5: 00001" in lines[-1] and "NaN" in lines[-1]


def test_analytic_dataset_loads(tmp_path):
    write_analytic_dataset(tmp_path, "springs", {"train": 2, "valid": 1}, steps=12)
    dm = SimulationDataModule(str(tmp_path))
    dm.setup("fit")
    assert len(dm.train_set) == 2 * (12 - HISTORY) and dm.radius == 0.15
    assert not dm.periodic
    (traj,) = analytic_trajectories("springs", count=1, steps=12, seed=0)
    assert torch.equal(dm.trajectories("train")[0].positions, traj.positions)


def test_lagrangebench_sample_loads(shared_data):
    root = shared_data / "particles" / "lagrangebench_3D_LJ"
    dm = SimulationDataModule(str(root), batch_size=2)
    with pytest.warns(UserWarning, match="periodic"):
        dm.setup(None)
    assert dm.dim == 3 and dm.radius == 3.0 and dm.bounds.tolist() == [[0.0, 5.0]] * 3
    assert len(dm.train_set) == 1214 - HISTORY
    batch = next(iter(dm.train_dataloader()))
    assert batch["history"].shape == (HISTORY, 6, 3) and batch["batch"].tolist() == [0, 0, 0, 1, 1, 1]
    (val,) = list(dm.val_dataloader())
    assert val["positions"].shape == (405, 3, 3)
    (test,) = list(dm.test_dataloader())
    assert test["positions"].shape == (405, 3, 3)
    norm = dm.normalizer()
    assert norm.vel_std[0].item() == pytest.approx((0.006350979674607515**2 + 3e-4**2) ** 0.5, rel=1e-6)
