"""Tests of the MLS-MPM simulator (geo3d.synth.mpm) and the particle dataset generator (geo3d.synth.particles)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from geo3d.cli import main
from geo3d.errors import InputError
from geo3d.io.particles import read_gns_npz, read_lagrangebench, read_metadata
from geo3d.synth import particles as synth
from geo3d.synth.mpm import GRAVITY, MATERIALS, Material, MPMSimulator
from geo3d.synth.particles import PARTICLE_TYPES, generate_particles, simulate_trajectory

FRAME_DT = 0.0025


def _block(lo, hi, spacing: float) -> np.ndarray:
    """Lattice points (cell centres) of spacing ``spacing`` filling the box [lo, hi] (D,)."""
    axes = [np.arange(a + spacing / 2, b, spacing) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(lo))


def _sim(x: np.ndarray, material: Material, n_grid: int = 20, v=None, walls: str = "slip") -> MPMSimulator:
    sim = MPMSimulator(x.shape[1], n_grid, walls=walls)
    h = 0.5 / n_grid  # two particles per cell and axis
    sim.set_particles(x, np.zeros_like(x) if v is None else v, material, volume=h ** x.shape[1])
    return sim


# ------------------------------------------------------------------------------------------------ simulator

def test_trajectory_is_deterministic_by_seed():
    a, pa = simulate_trajectory(7, "elastic", 2, 200, 20)
    b, pb = simulate_trajectory(7, "elastic", 2, 200, 20)
    c, _ = simulate_trajectory(8, "elastic", 2, 200, 20)
    assert a.shape == (20, 200, 2) and a.dtype == np.float32
    assert np.array_equal(a, b) and pa == pb
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("material", MATERIALS)
def test_rollouts_finite_and_inside_bounds(material):
    positions, params = simulate_trajectory(3, material, 2, 200, 40)
    assert np.isfinite(positions).all()
    assert positions.min() >= 0.0 and positions.max() <= 1.0
    assert params["material"] == material and params["substeps"] >= 1
    assert sum(b["particles"] for b in params["bodies"]) == 200
    assert np.isclose(params["substep_dt"] * params["substeps"], FRAME_DT)


def test_elastic_block_falls_and_is_stopped_by_the_floor():
    n_grid = 20
    x = _block((0.35, 0.25), (0.65, 0.55), 0.5 / n_grid)  # 144 particles, bottom 0.25 m above the floor
    sim = _sim(x, Material("elastic", 1000.0, 5e4, 0.3), n_grid, walls="sticky")
    steps = 200  # 0.5 s: free fall to the floor takes about 0.23 s
    com = sim.rollout(steps, FRAME_DT, sim.substeps_for(FRAME_DT, 3.0)).mean(1)[:, 1]
    t = np.arange(steps) * FRAME_DT
    free = com[0] - 0.5 * GRAVITY * t**2
    landing = int(np.argmin(com))
    assert np.all(np.diff(com[:landing]) < 0) and com[landing] < com[0] - 0.2  # it falls about 0.25 m...
    assert com.min() > 0.09  # ...its centre never gets much below its half height (0.15 m)...
    assert com[-1] > free[-1] + 0.9  # (free fall would have taken it 1.2 m down by now)
    assert landing < steps - 20 and com[landing + 20] > com[landing] + 0.01  # ...and the floor pushes it back up
    assert com.max() <= com[0] + 1e-6  # an elastic bounce does not gain energy


def test_free_fall_follows_half_g_t_squared():
    """Before it touches anything, the body's centre of mass falls as g t^2 / 2 and it moves rigidly.

    MPM adds ``dt g`` to every node velocity and G2P interpolates with weights summing to 1, so each particle
    velocity gains exactly ``g dt`` per substep: the centre follows the symplectic Euler solution
    ``y0 + v0 t - g t^2 / 2 - g t dt / 2`` (dt the substep). The tolerance 2e-5 m is float32 rounding of positions
    near 0.5 m over a few hundred substeps; the continuum parabola differs by ``g t dt / 2`` (under 2e-4 m here).
    """
    n_grid = 20
    x = _block((0.4, 0.6), (0.6, 0.8), 0.5 / n_grid)
    v0 = np.array([0.3, 0.5])
    sim = _sim(x, Material("elastic", 1000.0, 1e5, 0.3), n_grid, v=np.tile(v0, (len(x), 1)))
    substeps = sim.substeps_for(FRAME_DT, 3.0)
    dt = FRAME_DT / substeps
    positions = sim.rollout(60, FRAME_DT, substeps)  # 0.15 s: the top stays below 0.9 m, no wall is reached
    assert positions[..., 1].max() < 0.95 and positions[..., 0].max() < 0.95
    t = np.arange(60) * FRAME_DT
    com = positions.mean(1).astype(np.float64)
    y_discrete = com[0, 1] + v0[1] * t - 0.5 * GRAVITY * t**2 - 0.5 * GRAVITY * t * dt
    assert np.abs(com[:, 1] - y_discrete).max() < 2e-5
    assert np.abs(com[:, 1] - (com[0, 1] + v0[1] * t - 0.5 * GRAVITY * t**2)).max() < 0.5 * GRAVITY * t[-1] * dt + 2e-5
    assert np.abs(com[:, 0] - (com[0, 0] + v0[0] * t)).max() < 2e-5  # horizontal momentum conserved
    shape = positions - positions.mean(1, keepdims=True)  # no deformation, no spurious internal energy
    assert np.abs(shape - shape[0]).max() < 2e-5
    velocities = sim.velocities()
    assert np.abs(velocities - velocities.mean(0)).max() < 1e-3


def _column_width(material: Material, steps: int = 60) -> tuple[float, float]:
    n_grid = 20
    x = _block((0.0, 0.0), (0.2, 0.4), 0.5 / n_grid)  # a column against the left wall, on the floor
    sim = _sim(x, material, n_grid)
    positions = sim.rollout(steps, FRAME_DT, sim.substeps_for(FRAME_DT, 3.0))
    assert np.isfinite(positions).all() and positions.min() >= 0 and positions.max() <= 1
    return float(np.ptp(positions[0, :, 0])), float(np.ptp(positions[-1, :, 0]))


def test_fluid_column_spreads():
    before, after = _column_width(Material("fluid", 1000.0, bulk_modulus=1000.0 * 30.0**2, viscosity=0.01), 100)
    assert after > 2.5 * before  # 0.25 s after a dam break of a 0.4 m column the front has run about 0.4 m


def test_sand_column_spreads_less_than_fluid():
    _, fluid = _column_width(Material("fluid", 1000.0, bulk_modulus=1000.0 * 30.0**2, viscosity=0.01), 100)
    before, sand = _column_width(Material("sand", 1600.0, 2e5, 0.3, friction_angle=40.0), 100)
    assert before * 1.1 < sand < fluid


def test_simulator_rejects_bad_input():
    with pytest.raises(ValueError):
        MPMSimulator(4, 16)
    with pytest.raises(ValueError):
        Material("water")
    sim = MPMSimulator(2, 16)
    with pytest.raises(ValueError):
        sim.set_particles(np.full((4, 2), 1.5), np.zeros((4, 2)), Material("elastic"), 1e-4)


# ------------------------------------------------------------------------------------------------ datasets

def _generate(out, **kwargs):
    args = {"material": "elastic", "dim": 2, "trajectories": 4, "particles": 200, "steps": 12, "seed": 1,
            "splits": (2, 1, 1), "progress": False, "npz": True} | kwargs
    return generate_particles(out, **args)


def test_dataset_files_and_metadata(tmp_path):
    out = _generate(tmp_path / "ds")
    for split in ("train", "valid", "test"):
        assert (out / f"{split}.h5").is_file() and (out / f"{split}.npz").is_file()
    assert not (out / ".partial").exists()
    meta = read_metadata(out / "metadata.json")
    assert meta["bounds"] == [[0.0, 1.0], [0.0, 1.0]] and meta["dim"] == 2 and meta["dt"] == FRAME_DT
    assert meta["sequence_length"] == 12 and meta["num_particles_max"] == 200
    assert meta["periodic_boundary_conditions"] == [False, False]
    spacing = (synth.FILL[2] / 200) ** 0.5
    assert meta["default_connectivity_radius"] == pytest.approx(2.0 * spacing)
    assert meta["material"] == "elastic" and meta["seed"] == 1
    assert [len(meta["material_params"][s]) for s in ("train", "valid", "test")] == [2, 1, 1]
    assert meta["num_trajs_train"] == 2 and meta["sequence_length_train"] == 12
    with h5py.File(out / "train.h5") as f:
        assert sorted(f.keys()) == ["00000", "00001"]
        assert f["00000/position"].shape == (12, 200, 2) and f["00000/position"].dtype == np.float32
        assert (f["00000/particle_type"][()] == PARTICLE_TYPES["elastic"]).all()
    # the stored trajectories are the simulated ones: trajectory i of the dataset is spawn child i
    first, params = simulate_trajectory(np.random.SeedSequence(1).spawn(4)[0], "elastic", 2, 200, 12)
    assert np.array_equal(read_lagrangebench(out, "train")[0].positions.numpy(), first)
    assert meta["material_params"]["train"][0] == json.loads(json.dumps(params))


def test_metadata_statistics_match_numpy(tmp_path):
    out = _generate(tmp_path / "ds", trajectories=3, splits=(2, 1, 0), npz=False)
    assert not (out / "test.h5").exists()
    meta = read_metadata(out / "metadata.json")
    with h5py.File(out / "train.h5") as f:
        positions = np.stack([f[k]["position"][()] for k in sorted(f.keys())]).astype(np.float64)
    vel = np.diff(positions, axis=1).reshape(-1, 2)
    acc = (positions[:, 2:] - 2 * positions[:, 1:-1] + positions[:, :-2]).reshape(-1, 2)
    for key, value in (("vel_mean", vel.mean(0)), ("vel_std", vel.std(0)), ("acc_mean", acc.mean(0)),
                       ("acc_std", acc.std(0))):
        np.testing.assert_allclose(meta[key], value, rtol=1e-6, atol=1e-12, err_msg=key)


def test_h5_and_npz_read_back_identically(tmp_path):
    out = _generate(tmp_path / "ds", material="fluid")
    for split in ("train", "valid", "test"):
        h5, npz = read_lagrangebench(out, split), read_gns_npz(out / f"{split}.npz")
        assert len(h5) == len(npz) > 0
        for a, b in zip(h5, npz):
            assert np.array_equal(a.positions.numpy(), b.positions.numpy())
            assert np.array_equal(a.particle_types.numpy(), b.particle_types.numpy())
            assert (a.particle_types == PARTICLE_TYPES["fluid"]).all()
            assert a.dt == b.dt == FRAME_DT
            assert np.array_equal(a.bounds.numpy(), b.bounds.numpy())


def test_3d_dataset(tmp_path):
    out = _generate(tmp_path / "ds3", material="sand", dim=3, trajectories=1, splits=(1, 0, 0), steps=8)
    (traj,) = read_lagrangebench(out, "train")
    assert traj.positions.shape == (8, 200, 3)
    assert traj.positions.isfinite().all() and traj.positions.min() >= 0 and traj.positions.max() <= 1
    assert read_metadata(out / "metadata.json")["bounds"] == [[0.0, 1.0]] * 3


def test_resume_after_interruption(tmp_path, monkeypatch):
    reference = _generate(tmp_path / "ref")
    calls = []
    real = synth.simulate_trajectory

    def flaky(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "simulate_trajectory", flaky)
    with pytest.raises(KeyboardInterrupt):
        _generate(tmp_path / "ds")
    out = tmp_path / "ds"
    assert not (out / "metadata.json").exists() and not list(out.glob("*.h5"))  # nothing that looks complete
    assert len(list((out / ".partial").glob("*.npz"))) == 2
    monkeypatch.setattr(synth, "simulate_trajectory", real)
    _generate(out)
    for split in ("train", "valid", "test"):
        for a, b in zip(read_lagrangebench(out, split), read_lagrangebench(reference, split)):
            assert np.array_equal(a.positions.numpy(), b.positions.numpy())
    assert read_metadata(out / "metadata.json") == read_metadata(reference / "metadata.json")
    with pytest.raises(InputError, match="generated with"):
        _generate(out, seed=2)


@pytest.mark.parametrize("kwargs", [{"material": "water"}, {"dim": 4}, {"particles": 0}, {"steps": 2},
                                    {"splits": (2, 1, 2)}, {"walls": "bouncy"}])
def test_bad_parameters_raise_input_error(tmp_path, kwargs):
    with pytest.raises(InputError):
        _generate(tmp_path / "bad", **kwargs)


# ------------------------------------------------------------------------------------------------ CLI

def test_cli_writes_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["synth", "particles", str(out), "--material", "plasticine", "--dim", "2", "--trajectories", "3",
                 "--particles", "150", "--steps", "6", "--seed", "4", "--npz"])
    assert code == 0
    assert "wrote particles data" in capsys.readouterr().out
    meta = read_metadata(out / "metadata.json")
    assert meta["material"] == "plasticine" and meta["splits"] == {"train": 1, "valid": 1, "test": 1}
    assert len(read_lagrangebench(out, "train")) == 1 and (out / "train.npz").is_file()


@pytest.mark.parametrize("args", [["--dim", "4"], ["--material", "water"], ["--particles", "0"],
                                  ["--walls", "bouncy"]])
def test_cli_bad_arguments_one_line_error(tmp_path, capsys, args):
    code = main(["synth", "particles", str(tmp_path / "bad"), "--steps", "5", *args])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("geo3d: error: ") and len(err.splitlines()) == 1
