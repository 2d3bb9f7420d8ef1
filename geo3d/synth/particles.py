"""Synthetic particle-dynamics datasets (GNS / GIOROM / LagrangeBench style) simulated with MLS-MPM.

Each trajectory drops one to three bodies of one material into the box ``[0, 1]^D`` metres under gravity and
simulates them with :class:`geo3d.synth.mpm.MPMSimulator` (see :mod:`geo3d.synth.mpm` for the method, the
materials and the walls). What is random per trajectory (all drawn from the trajectory's own
``SeedSequence(seed).spawn`` child, so trajectory i depends only on ``seed``, ``i`` and the dataset parameters):

- Bodies: 1-3, each a box (any orientation), a sphere / disc (an ellipsoid with axis ratios within about
  0.86-1.16) or, in 3D, a cylinder; axis ratios within about 0.7-1.4; placed anywhere in the box without
  overlapping. Their total volume is ``FILL[dim]`` of the box (2D: 0.12, 3D: 0.05), so the particle spacing is
  the same in every trajectory of a dataset: ``h = (FILL / particles)^(1/D)``. Exactly ``particles`` particles
  per trajectory, on a jittered lattice (spacing about h, random phase per body, jitter +-0.1 spacing).
- Initial velocity per body: a translation (horizontal components U(-1, 1) m/s, vertical U(-1.5, 1)) plus a
  rigid rotation (2D: U(-4, 4) rad/s; 3D: each component U(-3, 3)).
- Material parameters (:func:`random_material`): elastic E log-uniform 2e4-2e5 Pa, Poisson ratio 0.2-0.4,
  1000 kg/m^3; fluid 1000 kg/m^3, sound speed 25-35 m/s (bulk modulus rho c^2), viscosity log-uniform
  1e-3-1 Pa s; sand 1600 kg/m^3, E log-uniform 1e5-4e5 Pa, Poisson ratio 0.2-0.35, friction angle 25-45 degrees;
  plasticine 1200 kg/m^3, E log-uniform 5e4-3e5 Pa, Poisson ratio 0.25-0.4, yield stress log-uniform 1e3-2e4 Pa.

The MPM grid has ``dx = 2 h`` (rounded so that a whole number of cells spans the box): about two particles per
cell and axis. Stored frames are ``frame_dt`` seconds apart (default 0.0025 s, as DeepMind's WaterDrop), each an
integer number of MPM substeps (CFL 0.3 on the elastic / sound wave speed plus the largest expected speed). A
rollout that produces a non-finite value or moves a particle more than half a cell per substep is re-simulated
with twice the substeps (at most three times), so written trajectories are finite and inside the box.

Particle types (GNS convention, DeepMind's ``learning_to_simulate`` type ids; GNS embeds 9 types by default):

=========== ==== =====================================================
material    id   note
=========== ==== =====================================================
fluid       5    "water" in DeepMind's datasets
sand        6    "sand"
plasticine  7    "goop" (viscoplastic)
elastic     8    not in DeepMind's datasets (0 there is rigid solids)
=========== ==== =====================================================

No kinematic / boundary particles (id 3) are written: the walls are the box faces given by ``bounds``.

Files under ``OUT`` (each written atomically):

- ``train.h5``, ``valid.h5``, ``test.h5`` (LagrangeBench layout, :func:`geo3d.io.particles.write_lagrangebench`):
  groups ``00000, ...`` with ``position`` (T, N, D) float32 metres and ``particle_type`` (N,) int32. A split with
  no trajectories has no file.
- with ``npz=True`` also ``train.npz`` ... (GNS layout, :func:`geo3d.io.particles.write_gns_npz`), same data.
- ``metadata.json`` (written last: its presence marks a complete dataset): ``bounds`` [[0, 1]] * D, ``dt``
  (= ``frame_dt``, seconds between stored frames) and ``write_every`` 1, ``dim``, ``sequence_length`` (T, the
  number of stored frames per trajectory, as ``sequence_length_<split>``), ``num_particles_max``,
  ``num_trajs_<split>``, ``periodic_boundary_conditions`` [false] * D, ``default_connectivity_radius``
  (``CONNECTIVITY_FACTOR`` = 2.0 times the particle spacing h: about 12 lattice neighbours in 2D and 33 in 3D),
  ``dx`` (= h, the particle spacing, LagrangeBench's meaning), ``vel_mean``, ``vel_std``, ``acc_mean``, ``acc_std``
  (D values each, over every particle and frame of the train split: velocity = ``x[t+1] - x[t]`` in metres per
  stored step and acceleration = ``x[t+1] - 2 x[t] + x[t-1]`` in metres per step^2, the GNS / LagrangeBench
  convention, no division by dt; population standard deviation), ``material``, ``particle_type``,
  ``material_params`` (per split, one dict per trajectory: the material's parameters, the bodies, substeps),
  ``seed``, ``splits``, ``walls``, ``gravity``, ``grid_n`` (MPM cells across the box), ``solver``.
- ``.synth_particles.json``: the generation parameters, written first; a folder made with other parameters is
  refused. ``.partial/`` holds finished trajectories (``NNNNN.npz``) while the run goes on: an interrupted run
  resumes from them, and the folder is removed once ``metadata.json`` is written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_open, claim_folder
from geo3d.io.particles import SPLITS, write_gns_npz, write_lagrangebench
from geo3d.synth.mpm import GRAVITY, MATERIALS, WALLS, Material, MPMSimulator
from geo3d.types import ParticleTrajectory

PARTICLE_TYPES = {"fluid": 5, "sand": 6, "plasticine": 7, "elastic": 8}  # GNS ids (see the module docstring)
DEFAULT_WALLS = {"fluid": "slip", "elastic": "slip", "sand": "sticky", "plasticine": "sticky"}
FILL = {2: 0.12, 3: 0.05}  # share of the box filled with material
CONNECTIVITY_FACTOR = 2.0  # default_connectivity_radius / particle spacing
FRAME_DT = 0.0025  # seconds between stored frames
MAX_BODIES = 3
_CLAIM = ".synth_particles.json"
_PARTIAL = ".partial"
_VERSION = 1


# ------------------------------------------------------------------------------------------ random scenes

def random_material(name: str, rng: np.random.Generator) -> Material:
    """A material of kind ``name`` with parameters drawn from the ranges in the module docstring."""
    def log_uniform(lo: float, hi: float) -> float:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    if name == "elastic":
        return Material("elastic", 1000.0, log_uniform(2e4, 2e5), rng.uniform(0.2, 0.4))
    if name == "fluid":
        c = rng.uniform(25.0, 35.0)
        return Material("fluid", 1000.0, bulk_modulus=1000.0 * c * c, viscosity=log_uniform(1e-3, 1.0))
    if name == "sand":
        return Material("sand", 1600.0, log_uniform(1e5, 4e5), rng.uniform(0.2, 0.35),
                        friction_angle=rng.uniform(25.0, 45.0))
    if name == "plasticine":
        return Material("plasticine", 1200.0, log_uniform(5e4, 3e5), rng.uniform(0.25, 0.4),
                        yield_stress=log_uniform(1e3, 2e4))
    raise InputError(None, f"material: unknown {name!r}; expected one of {', '.join(MATERIALS)}")


def _rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    """A uniformly random (D, D) rotation matrix."""
    if dim == 2:
        a = rng.uniform(0, 2 * np.pi)
        return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _body_shape(rng: np.random.Generator, dim: int, volume: float) -> dict[str, Any]:
    """A body of ``volume`` m^D (m^2 in 2D) centred at the origin: kind, half sizes (D,), bounding radius."""
    kinds = ("box", "sphere") if dim == 2 else ("box", "sphere", "cylinder")
    kind = kinds[rng.integers(len(kinds))]
    ratios = np.exp(rng.uniform(-0.15, 0.15, dim) if kind == "sphere" else rng.uniform(-0.35, 0.35, dim))
    if kind == "box":  # volume = prod(2 a) with a = L ratios / 2
        length = (volume / ratios.prod()) ** (1 / dim)
        half = length * ratios / 2
        radius = float(np.linalg.norm(half))
    elif kind == "sphere":  # an ellipse / ellipsoid with semi-axes L ratios
        unit = math.pi if dim == 2 else 4 / 3 * math.pi
        length = (volume / (unit * ratios.prod())) ** (1 / dim)
        half = length * ratios
        radius = float(half.max())
    else:  # cylinder along local z: radius L r0, half height L r2
        length = (volume / (2 * math.pi * ratios[0] ** 2 * ratios[2])) ** (1 / 3)
        half = length * np.array([ratios[0], ratios[0], ratios[2]])
        radius = float(math.hypot(half[0], half[2]))
    return {"kind": kind, "half": half, "radius": radius}


def _inside(body: dict[str, Any], points: np.ndarray) -> np.ndarray:
    """(M,) bool: which world points (M, D) lie inside ``body``."""
    q = (points - body["centre"]) @ body["rotation"]  # body coordinates
    half = body["half"]
    if body["kind"] == "box":
        return (np.abs(q) <= half).all(1)
    if body["kind"] == "sphere":
        return ((q / half) ** 2).sum(1) <= 1.0
    return (((q[:, :2] / half[:2]) ** 2).sum(1) <= 1.0) & (np.abs(q[:, 2]) <= half[2])


def random_bodies(rng: np.random.Generator, dim: int, spacing: float) -> list[dict[str, Any]]:
    """1-``MAX_BODIES`` non-overlapping bodies filling ``FILL[dim]`` of the box, with initial velocities.

    Args:
        rng: the trajectory's generator.
        dim: 2 or 3.
        spacing: particle spacing h, metres (bodies keep min(1.5 h, 5 cm) from the walls and min(2 h, 5 cm) from
            each other).

    Returns:
        Dicts with ``kind``, ``half`` (D,) half sizes / semi-axes in metres, ``radius`` (bounding), ``centre``
        (D,), ``rotation`` (D, D) body-to-world, ``velocity`` (D,) m/s, ``omega`` (rad/s: a scalar in
        2D, (3,) in 3D).
    """
    margin, gap = min(1.5 * spacing, 0.05), min(2.0 * spacing, 0.05)
    while True:
        count = int(rng.integers(1, MAX_BODIES + 1))
        shares = rng.uniform(0.5, 1.5, count)
        bodies = [_body_shape(rng, dim, FILL[dim] * s / shares.sum()) for s in shares]
        bodies.sort(key=lambda b: -b["radius"])  # place the largest first
        placed: list[dict[str, Any]] = []
        for body in bodies:
            lo, hi = body["radius"] + margin, 1.0 - body["radius"] - margin
            if lo >= hi:
                break
            for _ in range(200):
                centre = rng.uniform(lo, hi, dim)
                if all(np.linalg.norm(centre - o["centre"]) > body["radius"] + o["radius"] + gap
                       for o in placed):
                    break
            else:
                break
            body["centre"] = centre
            body["rotation"] = _rotation(rng, dim)
            placed.append(body)
        if len(placed) == len(bodies):
            break
    for body in placed:
        body["velocity"] = np.concatenate([rng.uniform(-1.0, 1.0, dim - 1), rng.uniform(-1.5, 1.0, 1)])
        body["omega"] = rng.uniform(-4.0, 4.0) if dim == 2 else rng.uniform(-3.0, 3.0, 3)
    return placed


def _lattice(body: dict[str, Any], spacing: float, phase: np.ndarray) -> np.ndarray:
    """(M, D) lattice points (spacing, phase in lattice units) inside ``body``."""
    dim = len(body["centre"])
    r = body["radius"]
    axes = [np.arange(math.floor((c - r) / spacing) - 1, math.ceil((c + r) / spacing) + 2) * spacing + p * spacing
            for c, p in zip(body["centre"], phase)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dim)
    return points[_inside(body, points)]


def sample_particles(rng: np.random.Generator, bodies: list[dict[str, Any]], count: int,
                     spacing: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Exactly ``count`` particles filling ``bodies`` on a jittered lattice.

    The lattice spacing s is the largest (found by bisection near ``spacing``) whose lattice points inside the
    bodies number at least ``count``; the surplus (typically under 1 %) is dropped at random.

    Returns:
        ``positions`` (count, D) float64 metres, ``velocities`` (count, D) float64 m/s (each body's translation
        plus rotation), and the volume per particle s^D (m^D).
    """
    dim = len(bodies[0]["centre"])
    phases = [rng.uniform(0.0, 1.0, dim) for _ in bodies]

    def total(s: float) -> int:
        return sum(len(_lattice(b, s, p)) for b, p in zip(bodies, phases))

    lo, hi = 0.6 * spacing, 1.5 * spacing
    while total(lo) < count:
        lo *= 0.8
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if total(mid) >= count else (lo, mid)
    s = lo
    chunks = [_lattice(b, s, p) for b, p in zip(bodies, phases)]
    owner = np.concatenate([np.full(len(c), i) for i, c in enumerate(chunks)])
    points = np.concatenate(chunks)
    keep = np.sort(rng.choice(len(points), count, replace=False))
    points, owner = points[keep], owner[keep]
    points = np.clip(points + rng.uniform(-0.1, 0.1, points.shape) * s, 0.0, 1.0)
    velocities = np.empty_like(points)
    for i, body in enumerate(bodies):
        mask = owner == i
        r = points[mask] - body["centre"]
        if dim == 2:
            spin = body["omega"] * np.stack([-r[:, 1], r[:, 0]], 1)
        else:
            spin = np.cross(body["omega"], r)
        velocities[mask] = body["velocity"] + spin
        body["particles"] = int(mask.sum())
    return points, velocities, s**dim


# ------------------------------------------------------------------------------------------- trajectories

def particle_spacing(dim: int, particles: int) -> float:
    """Nominal particle spacing h = (FILL[dim] / particles)^(1/D), metres."""
    return (FILL[dim] / particles) ** (1.0 / dim)


def grid_cells(dim: int, particles: int) -> int:
    """MPM cells across the box: ``round(1 / (2 h))``, at least 8."""
    return max(8, round(1.0 / (2.0 * particle_spacing(dim, particles))))


def simulate_trajectory(seed: np.random.SeedSequence | int, material: str, dim: int, particles: int, steps: int,
                        frame_dt: float = FRAME_DT, walls: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw and simulate one trajectory.

    Args:
        seed: the trajectory's seed (everything random is drawn from it).
        material: one of :data:`geo3d.synth.mpm.MATERIALS`.
        dim: 2 or 3.
        particles: particles N.
        steps: stored frames T (frame 0 is the initial state).
        frame_dt: seconds between stored frames.
        walls: ``"slip"``, ``"sticky"`` or None (:data:`DEFAULT_WALLS` of the material).

    Returns:
        ``positions`` (T, N, D) float32 metres inside ``[0, 1]^D``, all finite, and a JSON-ready dict of the
        trajectory's parameters (material parameters, bodies, substeps per frame, walls).

    Raises:
        RuntimeError: still not finite after re-simulating with 8 times the substeps (not seen in practice).
    """
    rng = np.random.default_rng(seed)
    walls = DEFAULT_WALLS[material] if walls is None else walls
    mat = random_material(material, rng)
    spacing = particle_spacing(dim, particles)
    bodies = random_bodies(rng, dim, spacing)
    x0, v0, volume = sample_particles(rng, bodies, particles, spacing)
    sim = MPMSimulator(dim, grid_cells(dim, particles), walls=walls)
    sim.set_particles(x0, v0, mat, volume)
    max_speed = math.sqrt(2 * GRAVITY * 1.0) + float(np.linalg.norm(v0, axis=1).max())
    substeps = sim.substeps_for(frame_dt, max_speed)
    for _ in range(4):
        positions = sim.rollout(steps, frame_dt, substeps)
        moved = np.abs(np.diff(positions, axis=0)).max() if steps > 1 else 0.0
        if np.isfinite(positions).all() and moved / substeps <= 0.5 * sim.dx:
            break
        substeps *= 2
        sim.set_particles(x0, v0, mat, volume)
    else:
        raise RuntimeError(f"simulate_trajectory: {material} rollout unstable even with {substeps // 2} substeps")
    params = {**mat.params(), "substeps": substeps, "substep_dt": frame_dt / substeps, "walls": walls,
              "particle_volume": volume,
              "bodies": [{"kind": b["kind"], "centre": b["centre"].tolist(), "half_size": b["half"].tolist(),
                          "rotation": b["rotation"].tolist(), "velocity": b["velocity"].tolist(),
                          "angular_velocity": np.asarray(b["omega"]).tolist(), "particles": b["particles"]}
                         for b in bodies]}
    return positions, params


# ----------------------------------------------------------------------------------------------- datasets

def default_splits(trajectories: int) -> tuple[int, int, int]:
    """(train, valid, test) counts: 10 % each for valid and test (at least one each from 3 trajectories)."""
    if trajectories < 3:
        return trajectories, 0, 0
    held = max(1, round(0.1 * trajectories))
    return trajectories - 2 * held, held, held


def statistics(trajectories: Sequence[np.ndarray]) -> dict[str, list[float]]:
    """Velocity and acceleration statistics per axis (GNS / LagrangeBench ``metadata.json`` convention).

    Args:
        trajectories: positions (T, N, D) per trajectory, metres (T >= 3).

    Returns:
        ``vel_mean``, ``vel_std``, ``acc_mean``, ``acc_std``: D floats each; velocity ``x[t+1] - x[t]`` in metres per
        step, acceleration ``x[t+1] - 2 x[t] + x[t-1]`` in metres per step^2, over all particles and frames of all
        trajectories; population standard deviation; computed in float64 (two passes).
    """
    def diffs(order: int):
        for p in trajectories:
            yield np.diff(np.asarray(p, np.float64), n=order, axis=0).reshape(-1, p.shape[-1])

    out = {}
    for name, order in (("vel", 1), ("acc", 2)):
        count = sum(len(d) for d in diffs(order))
        mean = sum(d.sum(0) for d in diffs(order)) / count
        var = sum(((d - mean) ** 2).sum(0) for d in diffs(order)) / count
        out[f"{name}_mean"], out[f"{name}_std"] = mean.tolist(), np.sqrt(var).tolist()
    return out


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(None, f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _claim(out: Path, meta: dict) -> None:
    """Record the generation parameters in ``out``, refusing a folder made with other ones."""
    foreign = any((out / f"{split}.h5").exists() for split in SPLITS) or (out / "metadata.json").exists()
    claim_folder(out / _CLAIM, meta, foreign, "geo3d synth particles")


def _save_partial(path: Path, positions: np.ndarray, params: dict[str, Any]) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, positions=positions, params=np.array(json.dumps(params)))


def _load_partial(path: Path) -> tuple[np.ndarray, dict[str, Any]] | None:
    """A finished trajectory, or None if the file is unreadable (then it is simulated again)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["positions"], json.loads(str(f["params"]))
    except (OSError, ValueError, KeyError, EOFError):
        return None


def generate_particles(out: str | os.PathLike, material: str = "elastic", dim: int = 2, trajectories: int = 20,
                       particles: int = 2000, steps: int = 200, seed: int = 0,
                       splits: Sequence[int] | None = None, progress: bool = True, npz: bool = False,
                       frame_dt: float = FRAME_DT, walls: str | None = None) -> Path:
    """Simulate a particle-dynamics dataset and write it in the LagrangeBench (and GNS) layout.

    See the module docstring for the scenes, the files and the metadata.

    Args:
        out: output folder (created). Re-running with the same parameters resumes: finished trajectories are
            kept, a complete dataset is left as it is.
        material: ``elastic``, ``fluid``, ``sand`` or ``plasticine``.
        dim: 2 or 3.
        trajectories: number of trajectories.
        particles: particles per trajectory N (>= 64).
        steps: stored frames per trajectory T (>= 3, so accelerations exist), ``frame_dt`` seconds apart.
        seed: random seed; the same seed and parameters write the same positions.
        splits: (train, valid, test) trajectory counts summing to ``trajectories``; None: :func:`default_splits`.
        progress: show a tqdm bar over the trajectories.
        npz: also write GNS ``{split}.npz`` files.
        frame_dt: seconds between stored frames.
        walls: ``slip``, ``sticky`` or None (per material: fluid and elastic slip, sand and plasticine sticky).

    Returns:
        ``out`` as a Path.

    Raises:
        InputError: an unknown material or walls, dim not 2 or 3, counts below their minimum, splits that do not
            add up, or ``out`` holding data generated with other parameters.
    """
    if material not in MATERIALS:
        raise InputError(None, f"material: unknown {material!r}; expected one of {', '.join(MATERIALS)}")
    if dim not in (2, 3) or isinstance(dim, bool):
        raise InputError(None, f"dim: expected 2 or 3, got {dim!r}")
    if walls is not None and walls not in WALLS:
        raise InputError(None, f"walls: unknown {walls!r}; expected one of {', '.join(WALLS)}")
    trajectories = _check_int("trajectories", trajectories, 1)
    particles = _check_int("particles", particles, 64)
    steps = _check_int("steps", steps, 3)
    if not (isinstance(frame_dt, (int, float)) and math.isfinite(frame_dt) and frame_dt > 0):
        raise InputError(None, f"frame_dt: expected a positive number of seconds, got {frame_dt!r}")
    splits = default_splits(trajectories) if splits is None else tuple(int(s) for s in splits)
    if len(splits) != 3 or min(splits) < 0 or sum(splits) != trajectories or splits[0] < 1:
        raise InputError(None, f"splits: expected (train >= 1, valid, test) counts adding up to {trajectories}, "
                               f"got {splits}")
    walls_used = DEFAULT_WALLS[material] if walls is None else walls
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = {"generator": "geo3d.synth.particles", "version": _VERSION, "material": material, "dim": dim,
              "trajectories": trajectories, "particles": particles, "steps": steps, "seed": int(seed),
              "splits": list(splits), "frame_dt": float(frame_dt), "walls": walls_used}
    _claim(out, params)
    written = [out / f"{split}.h5" for split, n in zip(SPLITS, splits) if n]
    written += [out / f"{split}.npz" for split, n in zip(SPLITS, splits) if n and npz]
    if (out / "metadata.json").is_file() and all(p.is_file() for p in written):
        return out  # complete

    partial = out / _PARTIAL
    partial.mkdir(exist_ok=True)
    seeds = np.random.SeedSequence(seed).spawn(trajectories)
    results: list[tuple[np.ndarray, dict[str, Any]]] = []
    with tqdm(total=trajectories, desc=f"synth particles {material} {dim}D", unit="traj",
              disable=not progress) as bar:
        for i, traj_seed in enumerate(seeds):
            path = partial / f"{i:05d}.npz"
            loaded = _load_partial(path) if path.is_file() else None
            if loaded is None:
                loaded = simulate_trajectory(traj_seed, material, dim, particles, steps, frame_dt, walls_used)
                _save_partial(path, *loaded)
            results.append(loaded)
            bar.update()

    spacing = particle_spacing(dim, particles)
    bounds = [[0.0, 1.0]] * dim
    starts = np.cumsum((0,) + splits)
    by_split = {split: results[starts[k]:starts[k + 1]] for k, split in enumerate(SPLITS)}
    metadata = {
        "bounds": bounds, "dt": float(frame_dt), "write_every": 1, "dim": dim, "sequence_length": steps,
        "num_particles_max": particles, "periodic_boundary_conditions": [False] * dim,
        "default_connectivity_radius": CONNECTIVITY_FACTOR * spacing, "dx": spacing,
        **statistics([p for p, _ in by_split["train"]]),
        "material": material, "particle_type": PARTICLE_TYPES[material],
        "material_params": {split: [p for _, p in items] for split, items in by_split.items()},
        "seed": int(seed), "splits": dict(zip(SPLITS, splits)), "walls": walls_used,
        "gravity": [0.0] * (dim - 1) + [-GRAVITY], "grid_n": grid_cells(dim, particles),
        "solver": "MLS-MPM (geo3d.synth.mpm, NVIDIA warp on the CPU)",
    }
    stage = partial / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    types = torch.full((particles,), PARTICLE_TYPES[material], dtype=torch.int64)
    for split, items in by_split.items():
        if not items:
            continue
        trajs = [ParticleTrajectory(torch.from_numpy(p), types, frame_dt, torch.tensor(bounds)) for p, _ in items]
        write_lagrangebench(stage, trajs, metadata, split)
        if npz:
            write_gns_npz(stage / f"{split}.npz", trajs)
    for path in written:  # each move is atomic; metadata.json goes last and marks the dataset complete
        os.replace(stage / path.name, path)
    os.replace(stage / "metadata.json", out / "metadata.json")
    shutil.rmtree(partial, ignore_errors=True)
    return out


__all__ = ["CONNECTIVITY_FACTOR", "DEFAULT_WALLS", "FILL", "FRAME_DT", "PARTICLE_TYPES", "default_splits",
           "generate_particles", "grid_cells", "particle_spacing", "random_bodies", "random_material",
           "sample_particles", "simulate_trajectory", "statistics"]
