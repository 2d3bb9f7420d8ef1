"""Particle trajectories: GNS npz and LagrangeBench HDF5 + metadata.json."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from geo3d.errors import InputError
from geo3d.io.particles import read_gns_npz, read_lagrangebench, write_gns_npz, write_lagrangebench
from geo3d.types import ParticleTrajectory


def _trajectories(count: int = 2, steps: int = 6, n: int = 5, dim: int = 2, dt: float = 0.01):
    g = torch.Generator().manual_seed(0)
    bounds = torch.tensor([[0.0, 1.0]] * dim)
    return [
        ParticleTrajectory(torch.rand(steps + i, n + i, dim, generator=g), torch.randint(0, 3, (n + i,), generator=g),
                           dt, bounds)
        for i in range(count)
    ]


def _assert_same(a: list[ParticleTrajectory], b: list[ParticleTrajectory], bounds: bool = True) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.positions, y.positions)
        assert torch.equal(x.particle_types, y.particle_types)
        assert x.dt == pytest.approx(y.dt, rel=1e-12)
        if bounds:
            assert torch.equal(x.bounds, y.bounds)


def test_lagrangebench_sample(shared_data):
    root = shared_data / "particles" / "lagrangebench_3D_LJ"
    train = read_lagrangebench(root)
    assert len(train) == 1
    traj = train[0]
    with h5py.File(root / "train.h5", "r") as f:
        positions, types = f["00000/position"][()], f["00000/particle_type"][()]
    assert traj.positions.shape == (1214, 3, 3) and traj.dim == 3
    assert torch.equal(traj.positions, torch.from_numpy(positions))
    assert torch.equal(traj.particle_types, torch.from_numpy(types).long())
    assert traj.dt == 0.005  # metadata dt, no write_every
    assert traj.bounds.tolist() == [[0.0, 5.0]] * 3
    for split in ("valid", "test"):
        (other,) = read_lagrangebench(root, split=split)
        assert other.positions.shape == (405, 3, 3)
    (direct,) = read_lagrangebench(root / "test.h5")
    assert direct.num_steps == 405


def test_lagrangebench_round_trip_and_metadata(tmp_path):
    train, valid = _trajectories(2), _trajectories(1, steps=9)
    write_lagrangebench(tmp_path, train, {"default_connectivity_radius": 0.1, "vel_std": [1.0, 2.0]})
    write_lagrangebench(tmp_path, valid, split="valid")
    _assert_same(read_lagrangebench(tmp_path), train)
    _assert_same(read_lagrangebench(tmp_path, split="valid"), valid)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["dim"] == 2 and meta["dt"] == 0.01 and meta["write_every"] == 1
    assert meta["bounds"] == [[0.0, 1.0], [0.0, 1.0]]
    assert meta["default_connectivity_radius"] == 0.1  # kept across the second write
    assert meta["num_trajs_train"] == 2 and meta["num_trajs_valid"] == 1
    assert meta["sequence_length_valid"] == 9 and meta["num_particles_max"] == 6
    with h5py.File(tmp_path / "train.h5", "r") as f:
        assert sorted(f.keys()) == ["00000", "00001"]
        assert f["00000/position"].dtype == np.float32 and f["00000/particle_type"].dtype == np.int32


def test_write_every_sets_the_step(tmp_path):
    trajs = _trajectories(1, dt=0.04)
    write_lagrangebench(tmp_path, trajs, {"write_every": 100})
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["dt"] == pytest.approx(0.0004)
    assert read_lagrangebench(tmp_path)[0].dt == pytest.approx(0.04)
    with pytest.raises(ValueError, match="dt \\* write_every"):
        write_lagrangebench(tmp_path / "x", trajs, {"dt": 0.001, "write_every": 1})


def test_gns_npz_round_trip(tmp_path):
    trajs = _trajectories(3, dim=3)
    write_gns_npz(tmp_path / "train.npz", trajs)
    _assert_same(read_gns_npz(tmp_path / "train.npz", dt=0.01), trajs, bounds=False)
    # The layout GNS's load_npz_data expects: items unpack as (positions, particle_type).
    with np.load(tmp_path / "train.npz", allow_pickle=True) as archive:
        assert archive.files == ["simulation_trajectory_0", "simulation_trajectory_1", "simulation_trajectory_2"]
        positions, types = archive["simulation_trajectory_1"]
    assert positions.shape == (7, 6, 3) and types.shape == (6,)
    # dt and bounds come from metadata.json beside the file when not given.
    (tmp_path / "metadata.json").write_text(json.dumps({"dt": 0.0025, "write_every": 4, "bounds": [[0, 1]] * 3}))
    _assert_same(read_gns_npz(tmp_path / "train.npz"), trajs)


def test_gns_variants(tmp_path):
    positions = np.random.default_rng(0).random((4, 3, 2)).astype(np.float32)
    structured = np.empty(2, dtype=object)
    structured[0] = (positions, 6)  # scalar particle type, as geoelements/gns allows
    structured[1] = (positions, np.array([1, 2, 3]), 0.5)  # with a material property
    np.savez(tmp_path / "data.npz", gns_data=structured)
    with pytest.warns(UserWarning, match="material_property"):
        trajs = read_gns_npz(tmp_path / "data.npz", dt=0.1)
    assert trajs[0].particle_types.tolist() == [6, 6, 6]
    assert trajs[1].particle_types.tolist() == [1, 2, 3]
    assert torch.equal(trajs[0].positions, torch.from_numpy(positions))


def test_bad_inputs_raise_input_error(tmp_path):
    write_gns_npz(tmp_path / "a.npz", _trajectories(1))
    with pytest.raises(InputError, match=r"a\.npz: no dt"):
        read_gns_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "flat.npz", trajectory=np.zeros((5, 4, 2)))
    with pytest.raises(InputError, match=r"flat\.npz: trajectory: expected a \(positions"):
        read_gns_npz(tmp_path / "flat.npz", dt=0.1)
    bad = np.empty(2, dtype=object)
    bad[0], bad[1] = np.zeros((5, 4)), np.zeros(4)
    np.savez(tmp_path / "shape.npz", t=bad)
    with pytest.raises(InputError, match=r"shape\.npz: t: positions: expected shape \(T, N, D\)"):
        read_gns_npz(tmp_path / "shape.npz", dt=0.1)
    bad[0], bad[1] = np.zeros((5, 4, 2)), np.zeros(3)
    np.savez(tmp_path / "types.npz", t=bad)
    with pytest.raises(InputError, match=r"types\.npz: t: particle_type: expected shape \(4,\) or a scalar"):
        read_gns_npz(tmp_path / "types.npz", dt=0.1)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"junk\.npz: not a readable"):
        read_gns_npz(tmp_path / "junk.npz", dt=0.1)

    lb = tmp_path / "lb"
    write_lagrangebench(lb, _trajectories(1))
    with pytest.raises(InputError, match=r"test\.h5: file not found"):
        read_lagrangebench(lb, split="test")
    with h5py.File(lb / "valid.h5", "w") as f:
        f.create_dataset("00000/position", data=np.zeros((3, 2, 2), np.float32))
    with pytest.raises(InputError, match=r"valid\.h5: 00000: missing dataset 'particle_type'"):
        read_lagrangebench(lb, split="valid")
    (lb / "metadata.json").write_text(json.dumps({"bounds": [[0, 1], [0, 1]]}))
    with pytest.raises(InputError, match=r"metadata\.json: missing 'dt'"):
        read_lagrangebench(lb)
