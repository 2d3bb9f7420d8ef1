"""Particle-trajectory datasets for learned simulators: training windows cut on the fly, whole trajectories for
rollouts, and a collate that batches graphs of different sizes.

A dataset folder is either LagrangeBench (``{train,valid,test}.h5`` + ``metadata.json``) or GNS
(``{train,valid,test}.npz`` + ``metadata.json``), detected by the files present (:func:`detect_format`). The
metadata must give ``bounds`` (the model's wall features and the rollout's clamping need them) and, unless
``radius`` is passed, ``default_connectivity_radius``. Velocity / acceleration statistics (``vel_mean``,
``vel_std``, ``acc_mean``, ``acc_std``, per stored step) are taken from the metadata when present, otherwise
computed from the training split (:func:`trajectory_statistics`).

Training items are windows ``(trajectory, start)``: positions ``start .. start + H - 1`` are the input and
``start + H`` the target, so a trajectory of T steps gives ``T - H`` windows; nothing is copied up front, each
item slices the loaded trajectory. Validation and test items are whole trajectories (batch size 1) for rollouts.

Periodic boundaries (``periodic_boundary_conditions`` in LagrangeBench metadata) are not modelled: such data loads,
with a warning, but a particle wrapping around the box shows up as a velocity of a box length.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from geo3d.errors import InputError
from geo3d.io.particles import SPLITS, read_gns_npz, read_lagrangebench, read_metadata
from geo3d.types import ParticleTrajectory
from pipelines.simulation.features import (
    HISTORY,
    KINEMATIC_TYPE,
    Normalizer,
    NormalizerStatistics,
    add_random_walk_noise,
)

STAT_KEYS = ("vel_mean", "vel_std", "acc_mean", "acc_std")


def detect_format(path: str | os.PathLike) -> str:
    """``"lagrangebench"`` when ``path`` holds ``*.h5`` splits, ``"gns"`` when it holds ``*.npz`` splits.

    Raises:
        InputError: not a folder, or no ``{train,valid,test}.h5`` / ``.npz`` in it.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "dataset folder not found (expected {train,valid,test}.h5 or .npz + metadata.json)")
    if any((path / f"{s}.h5").is_file() for s in SPLITS):
        return "lagrangebench"
    if any((path / f"{s}.npz").is_file() for s in SPLITS):
        return "gns"
    raise InputError(path, "no dataset splits: expected LagrangeBench {train,valid,test}.h5 or GNS "
                           "{train,valid,test}.npz beside a metadata.json")


def split_file(path: str | os.PathLike, split: str) -> Path:
    """The file of ``split`` in a dataset folder (``.h5`` or ``.npz`` by :func:`detect_format`)."""
    return Path(path) / f"{split}.{'h5' if detect_format(path) == 'lagrangebench' else 'npz'}"


def load_split(path: str | os.PathLike, split: str) -> list[ParticleTrajectory]:
    """Read one split of a LagrangeBench or GNS dataset folder.

    Returns:
        The trajectories (positions (T, N, D) float32 metres, types (N,) int64, bounds (D, 2) from metadata).

    Raises:
        InputError: naming the file and field (see :func:`geo3d.io.read_lagrangebench` / ``read_gns_npz``).
    """
    if detect_format(path) == "lagrangebench":
        return read_lagrangebench(path, split)
    return read_gns_npz(Path(path) / f"{split}.npz")


def trajectory_statistics(trajectories: list[ParticleTrajectory]) -> dict[str, list[float]]:
    """Per-axis mean and standard deviation of velocities and accelerations over all steps and particles.

    Args:
        trajectories: trajectories of D axes (those with < 3 steps contribute no acceleration).

    Returns:
        ``{"vel_mean", "vel_std", "acc_mean", "acc_std"}``: D floats each, metres/step and metres/step^2
        (the metadata keys GNS and LagrangeBench use), accumulated in float64.
    """
    d = trajectories[0].dim
    sums = {k: np.zeros((3, d)) for k in ("vel", "acc")}  # count, sum, sum of squares
    for traj in trajectories:
        p = traj.positions.double().numpy()
        v = p[1:] - p[:-1]
        for key, x in (("vel", v), ("acc", v[1:] - v[:-1])):
            x = x.reshape(-1, d)
            sums[key] += [np.full(d, len(x)), x.sum(0), (x * x).sum(0)]
    out = {}
    for key, (count, total, squares) in sums.items():
        count = np.maximum(count, 1)
        mean = total / count
        out[f"{key}_mean"] = mean.tolist()
        out[f"{key}_std"] = np.sqrt(np.maximum(squares / count - mean**2, 0.0)).tolist()
    return out


class WindowDataset(Dataset):
    """Training windows of trajectories, cut on the fly.

    Item ``i`` is window ``(trajectory, start)`` (:meth:`window`): ``{"history": (H, N, D) float32 metres with
    random-walk noise (:func:`~pipelines.simulation.features.add_random_walk_noise`, none on kinematic particles),
    "target_acceleration": (N, D) float32 metres/step^2, *not* normalised (the model owns the normaliser), computed
    against the noisy window with GNS's correction (the true next velocity minus the noisy last velocity, so
    ``next_position(history, target)`` is the true next position shifted by the current position's noise),
    "particle_types": (N,) int64, "bounds": (D, 2) float32, "trajectory": int, "start": int}``.

    Args:
        trajectories: the trajectories (kept by reference).
        history: window length H.
        noise_std: random-walk noise, metres/step (0: clean windows).
        max_windows: keep this many windows, evenly spaced over all of them (None: all).
    """

    def __init__(self, trajectories: list[ParticleTrajectory], history: int = HISTORY, noise_std: float = 0.0,
                 max_windows: int | None = None):
        self.trajectories = trajectories
        self.history = history
        self.noise_std = float(noise_std)
        counts = np.array([max(t.num_steps - history, 0) for t in trajectories], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        total = int(self.offsets[-1])
        self.indices = None  # flat window ids to use (None: all of them)
        if max_windows is not None and max_windows < total:
            self.indices = np.unique(np.linspace(0, total - 1, max(int(max_windows), 1)).round().astype(np.int64))

    @property
    def total_windows(self) -> int:
        """``sum(max(T - H, 0))`` over the trajectories (before ``max_windows``)."""
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return self.total_windows if self.indices is None else len(self.indices)

    def window(self, index: int) -> tuple[int, int]:
        """``(trajectory, start)`` of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        flat = int(index if self.indices is None else self.indices[index])
        traj = int(np.searchsorted(self.offsets, flat, side="right") - 1)
        return traj, flat - int(self.offsets[traj])

    def __getitem__(self, index: int) -> dict[str, Any]:
        traj_id, start = self.window(index)
        traj = self.trajectories[traj_id]
        history = traj.positions[start:start + self.history]
        nxt = traj.positions[start + self.history]
        free = traj.particle_types != KINEMATIC_TYPE
        noisy = add_random_walk_noise(history, self.noise_std, mask=free)
        # == target_acceleration(noisy, nxt + (noisy[-1] - history[-1])), with less rounding
        target = (nxt - history[-1]) - (noisy[-1] - noisy[-2])
        return {"history": noisy, "target_acceleration": target, "particle_types": traj.particle_types,
                "bounds": traj.bounds, "trajectory": traj_id, "start": start}


def collate_windows(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch windows of different particle counts by concatenating particles (PyG style).

    Returns:
        ``{"history": (H, N_total, D), "target_acceleration": (N_total, D), "particle_types": (N_total,),
        "batch": (N_total,) int64 item of each particle, "bounds": (B, D, 2), "num_particles": (B,) int64,
        "trajectory": (B,) int64, "start": (B,) int64}``.
    """
    counts = torch.tensor([it["particle_types"].shape[0] for it in items], dtype=torch.int64)
    return {
        "history": torch.cat([it["history"] for it in items], dim=1),
        "target_acceleration": torch.cat([it["target_acceleration"] for it in items]),
        "particle_types": torch.cat([it["particle_types"] for it in items]),
        "batch": torch.repeat_interleave(torch.arange(len(items)), counts),
        "bounds": torch.stack([it["bounds"] for it in items]),
        "num_particles": counts,
        "trajectory": torch.tensor([it["trajectory"] for it in items], dtype=torch.int64),
        "start": torch.tensor([it["start"] for it in items], dtype=torch.int64),
    }


class TrajectoryDataset(Dataset):
    """Whole trajectories: item ``i`` is ``{"positions": (T, N, D) float32 metres, "particle_types": (N,) int64,
    "bounds": (D, 2) float32, "dt": seconds between frames, "trajectory": i}``."""

    def __init__(self, trajectories: list[ParticleTrajectory]):
        self.trajectories = trajectories

    def __len__(self) -> int:
        return len(self.trajectories)

    def __getitem__(self, index: int) -> dict[str, Any]:
        t = self.trajectories[index]
        return {"positions": t.positions, "particle_types": t.particle_types, "bounds": t.bounds, "dt": t.dt,
                "trajectory": index}


def collate_trajectory(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch size 1: the single trajectory's dict, unchanged."""
    if len(items) != 1:
        raise ValueError(f"collate_trajectory: trajectories are rolled out one at a time, got a batch of {len(items)}")
    return items[0]


class SimulationDataModule(pl.LightningDataModule):
    """A LagrangeBench / GNS dataset folder for training one-step simulators and evaluating rollouts.

    Args:
        path: the dataset folder (``{train,valid,test}.h5`` or ``.npz``, plus ``metadata.json``).
        batch_size: training windows per batch.
        noise_std: random-walk noise on training windows, metres/step (also widens the normaliser's stds).
        max_train_windows: use this many training windows, evenly spaced (None: all ``sum(T - H)``).
        num_workers: DataLoader workers.
        radius: connectivity radius, metres (None: metadata ``default_connectivity_radius``).
        history: window length H (default :data:`~pipelines.simulation.features.HISTORY`).
        max_val_trajectories: validate on the first this many ``valid`` trajectories (None: all).

    Properties (the files are read and checked on first use, raising InputError naming the file and field):
        metadata: the ``metadata.json`` dict, with computed statistics filled in when it lacks them.
        dim, bounds ((D, 2) float32 metres), radius (metres), periodic (bool), statistics (the normaliser's).
        ``geo3d fit`` links ``dim``, ``radius`` and ``statistics`` into the model's constructor
        (:mod:`geo3d.cli.lightning`), so they are written once, here, and saved in the model's checkpoint.
    """

    def __init__(self, path: str, batch_size: int = 2, noise_std: float = 3e-4, max_train_windows: int | None = None,
                 num_workers: int = 0, radius: float | None = None, history: int = HISTORY,
                 max_val_trajectories: int | None = 2):
        super().__init__()
        self.path = Path(path)
        self.batch_size, self.noise_std, self.num_workers = batch_size, float(noise_std), num_workers
        self.max_train_windows, self.max_val_trajectories = max_train_windows, max_val_trajectories
        self.history = history
        self._radius = radius
        self._splits: dict[str, list[ParticleTrajectory] | None] = {}
        self._metadata: dict[str, Any] | None = None

    # --- loading and checks --------------------------------------------------------------------------

    @property
    def metadata_path(self) -> Path:
        return self.path / "metadata.json"

    def trajectories(self, split: str) -> list[ParticleTrajectory] | None:
        """The checked trajectories of ``split`` (None when its file is absent; train is required).

        Raises:
            InputError: missing train split, no bounds, shapes inconsistent with the metadata or between
                splits, negative particle types, trajectories too short for one window (train).
        """
        if split not in self._splits:
            self._check_metadata()
            file = split_file(self.path, split)
            if not file.is_file():
                if split == "train":
                    raise InputError(file, "file not found (the training split is required)")
                self._splits[split] = None
                return None
            trajs = load_split(self.path, split)
            for i, t in enumerate(trajs):
                where = f"trajectory {i}"
                if t.bounds is None:
                    raise InputError(self.metadata_path, "no 'bounds': the simulator needs the domain box "
                                                         "[[min, max] per axis] in metadata.json")
                if t.dim != self.dim:
                    raise InputError(file, f"{where}: positions are {t.dim}D but metadata 'dim' / bounds say "
                                           f"{self.dim}D")
                if t.num_particles == 0:
                    raise InputError(file, f"{where}: position: no particles")
                if int(t.particle_types.min()) < 0:
                    raise InputError(file, f"{where}: particle_type: negative type ids")
            if split == "train" and all(t.num_steps <= self.history for t in trajs):
                raise InputError(file, f"position: every trajectory has at most {max(t.num_steps for t in trajs)} "
                                       f"steps; a training window needs {self.history + 1}")
            self._splits[split] = trajs
        return self._splits[split]

    def _check_metadata(self) -> dict[str, Any]:
        if self._metadata is not None:
            return self._metadata
        detect_format(self.path)
        meta = read_metadata(self.metadata_path)
        where = self.metadata_path
        bounds = meta.get("bounds")
        if bounds is None:
            raise InputError(where, "no 'bounds': the simulator needs the domain box [[min, max] per axis]")
        try:
            bounds = np.asarray(bounds, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(where, "'bounds' must be a list of [min, max] pairs") from None
        if bounds.ndim != 2 or bounds.shape[1] != 2 or bounds.shape[0] not in (2, 3):
            raise InputError(where, f"'bounds' must be 2 or 3 [min, max] pairs, got shape {bounds.shape}")
        if not (np.isfinite(bounds).all() and (bounds[:, 1] > bounds[:, 0]).all()):
            raise InputError(where, f"'bounds' must be finite with min < max on every axis, got {bounds.tolist()}")
        dim = bounds.shape[0]
        if "dim" in meta and meta["dim"] != dim:
            raise InputError(where, f"'dim' is {meta['dim']} but 'bounds' has {dim} axes")
        radius = self._radius if self._radius is not None else meta.get("default_connectivity_radius")
        if radius is None:
            raise InputError(where, "no 'default_connectivity_radius': add it or pass radius=")
        if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not (math.isfinite(radius)
                                                                                   and radius > 0):
            raise InputError(where, f"'default_connectivity_radius' (or radius=) must be a number > 0, got {radius!r}")
        for key in STAT_KEYS:
            if key in meta:
                value = np.asarray(meta[key], dtype=np.float64).reshape(-1) if _numeric(meta[key]) else None
                if value is None or value.shape != (dim,) or not np.isfinite(value).all():
                    raise InputError(where, f"'{key}': expected {dim} finite numbers, got {meta[key]!r}")
                if key.endswith("std") and (value < 0).any():
                    raise InputError(where, f"'{key}': standard deviations must be >= 0, got {meta[key]!r}")
        periodic = meta.get("periodic_boundary_conditions")
        periodic = bool(np.any(periodic)) if periodic is not None else False
        if periodic:
            warnings.warn(f"{where}: periodic_boundary_conditions are not modelled (the box is treated as walls; "
                          "wrapping particles look like jumps of a box length)", stacklevel=3)
        self._info = {"dim": dim, "radius": float(radius), "periodic": periodic,
                      "bounds": torch.from_numpy(bounds.astype(np.float32))}
        self._metadata = dict(meta)
        return self._metadata

    @property
    def dim(self) -> int:
        """Number of axes D (from the metadata's bounds)."""
        self._check_metadata()
        return self._info["dim"]

    @property
    def radius(self) -> float:
        """Connectivity radius, metres (``radius=`` or metadata ``default_connectivity_radius``)."""
        self._check_metadata()
        return self._info["radius"]

    @property
    def bounds(self) -> torch.Tensor:
        """(D, 2) float32 domain ``[min, max]`` per axis, metres."""
        self._check_metadata()
        return self._info["bounds"].clone()

    @property
    def periodic(self) -> bool:
        """Whether the metadata declares periodic boundaries (loaded, not modelled)."""
        self._check_metadata()
        return self._info["periodic"]

    @property
    def metadata(self) -> dict[str, Any]:
        """``metadata.json`` with ``vel_mean``..``acc_std`` computed from the training split when absent."""
        meta = self._check_metadata()
        if any(k not in meta for k in STAT_KEYS):
            stats = trajectory_statistics(self.trajectories("train"))
            for key in STAT_KEYS:
                meta.setdefault(key, stats[key])
        return meta

    def normalizer(self) -> Normalizer:
        """The :class:`~pipelines.simulation.features.Normalizer` of this dataset and ``noise_std``."""
        return Normalizer.from_metadata(self.metadata, self.noise_std)

    @property
    def statistics(self) -> NormalizerStatistics:
        """The :meth:`normalizer`'s statistics (stds widened by ``noise_std``), as the models take them (the command
        line links this into the model's ``statistics``, with :attr:`dim` and :attr:`radius`)."""
        return self.normalizer().statistics()

    # --- Lightning hooks -----------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.train_set = WindowDataset(self.trajectories("train"), self.history, self.noise_std,
                                           self.max_train_windows)
        if stage in (None, "fit", "validate"):
            valid = self.trajectories("valid") or []
            if self.max_val_trajectories is not None:
                valid = valid[: self.max_val_trajectories]
            self.val_set = TrajectoryDataset(valid)
        if stage in (None, "test", "predict"):
            test = self.trajectories("test")
            if test is None:
                raise InputError(split_file(self.path, "test"), "file not found")
            self.test_set = TrajectoryDataset(test)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          collate_fn=collate_windows, drop_last=len(self.train_set) >= self.batch_size,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader | list:
        if not len(self.val_set):
            return []
        return DataLoader(self.val_set, batch_size=1, collate_fn=collate_trajectory)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=1, collate_fn=collate_trajectory)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


def _numeric(value: Any) -> bool:
    try:
        np.asarray(value, dtype=np.float64)
        return True
    except (TypeError, ValueError):
        return False


# --- small analytic datasets (tests, smoke runs) ---------------------------------------------------------

def analytic_trajectories(kind: str = "springs", count: int = 2, steps: int = 40, dim: int = 2, seed: int = 0,
                          side: int = 4, gravity: float = -1.0, dt: float = 0.01) -> list[ParticleTrajectory]:
    """Tiny trajectories with known physics in the unit box, integrated in NumPy (float64, stored as float32).

    Kinds:
        ``"ballistic"``: ``side^D`` free particles with random positions in [0.3, 0.7]^D and velocities of at
            most 0.2 m/s, under ``gravity`` (m/s^2 along the last axis), reflected elastically by the walls.
            With ``gravity=0`` and no wall hit the constant-velocity step is exact.
        ``"springs"``: a ``side^D`` lattice (spacing 0.1 m) of unit masses joined to their axis and diagonal
            neighbours by damped springs, falling under ``gravity`` onto the walls (inelastic bounce); a random
            initial offset, rotation-free shear and velocity per trajectory. Needs interactions to predict.

    Args:
        kind: ``"ballistic"`` or ``"springs"``.
        count: number of trajectories.
        steps: stored steps T per trajectory.
        dim: D (2 or 3).
        seed: NumPy seed.
        side: particles per axis.
        gravity: m/s^2 along the last axis.
        dt: seconds between stored steps (integrated with 10 sub-steps).

    Returns:
        ``count`` trajectories: positions (T, side^D, D) metres, type 0 everywhere (5 for the ballistic kind),
        bounds ``[[0, 1]] * D``.
    """
    if kind not in ("ballistic", "springs"):
        raise ValueError(f"analytic_trajectories: kind must be 'ballistic' or 'springs', got {kind!r}")
    rng = np.random.default_rng(seed)
    g = np.zeros(dim)
    g[-1] = gravity
    grid = np.stack(np.meshgrid(*[np.arange(side)] * dim, indexing="ij"), -1).reshape(-1, dim).astype(np.float64)
    n = len(grid)
    out = []
    for _ in range(count):
        if kind == "ballistic":
            p = rng.uniform(0.3, 0.7, (n, dim))
            v = rng.uniform(-0.2, 0.2, (n, dim))
            springs = np.zeros((0, 2), dtype=np.int64)
        else:
            p = 0.5 + (grid - (side - 1) / 2) * 0.1 + rng.uniform(-0.15, 0.15, dim)
            p = p + rng.normal(0, 0.005, p.shape)
            v = rng.uniform(-0.5, 0.5, dim) + rng.normal(0, 0.05, (n, dim))
            diff = grid[:, None] - grid[None]
            cheb = np.abs(diff).max(-1)
            i, j = np.nonzero((cheb == 1) & (np.arange(n)[:, None] < np.arange(n)[None]))
            springs = np.stack([i, j], 1)
            rest = np.linalg.norm((grid[i] - grid[j]) * 0.1, axis=-1)
        frames, sub = [p.copy()], 10
        h = dt / sub
        for _ in range(steps - 1):
            for _ in range(sub):
                force = np.tile(g, (n, 1))
                if len(springs):
                    d = p[springs[:, 1]] - p[springs[:, 0]]
                    length = np.linalg.norm(d, axis=-1, keepdims=True)
                    unit = d / np.maximum(length, 1e-9)
                    rel = np.sum((v[springs[:, 1]] - v[springs[:, 0]]) * unit, -1, keepdims=True)
                    f = (300.0 * (length - rest[:, None]) + 2.0 * rel) * unit
                    np.add.at(force, springs[:, 0], f)
                    np.add.at(force, springs[:, 1], -f)
                v = v + h * force
                p = p + h * v
                restitution = 1.0 if kind == "ballistic" else 0.5
                low, high = p < 0.0, p > 1.0
                p = np.where(low, -p, np.where(high, 2.0 - p, p))
                v = np.where(low | high, -restitution * v, v)
            frames.append(p.copy())
        types = np.full(n, 5 if kind == "ballistic" else 0)
        out.append(ParticleTrajectory(torch.from_numpy(np.stack(frames).astype(np.float32)), torch.from_numpy(types),
                                      dt, torch.tensor([[0.0, 1.0]] * dim)))
    return out


def write_analytic_dataset(path: str | os.PathLike, kind: str = "springs", counts: dict[str, int] | None = None,
                           steps: int = 40, dim: int = 2, seed: int = 0, side: int = 4, gravity: float = -1.0,
                           radius: float = 0.15, statistics: bool = True) -> Path:
    """Write :func:`analytic_trajectories` as a LagrangeBench dataset folder (train / valid / test).

    Args:
        path: output folder.
        kind, steps, dim, side, gravity: see :func:`analytic_trajectories`.
        counts: trajectories per split (default ``{"train": 3, "valid": 1, "test": 1}``); split ``i`` uses seed
            ``seed + 1000 i``.
        radius: ``default_connectivity_radius``, metres.
        statistics: also write ``vel_mean`` .. ``acc_std`` of the training split (else the datamodule computes
            them).

    Returns:
        The folder.
    """
    from geo3d.io.particles import write_lagrangebench

    counts = counts or {"train": 3, "valid": 1, "test": 1}
    meta: dict[str, Any] = {"default_connectivity_radius": radius, "periodic_boundary_conditions": [False] * dim}
    for i, (split, count) in enumerate(counts.items()):
        trajs = analytic_trajectories(kind, count, steps, dim, seed + 1000 * i, side, gravity)
        if split == "train" and statistics:
            meta.update(trajectory_statistics(trajs))
        write_lagrangebench(path, trajs, meta if split == "train" else None, split=split)
    return Path(path)
