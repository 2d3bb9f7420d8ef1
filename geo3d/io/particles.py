"""Particle trajectory datasets: GNS ``.npz`` files and LagrangeBench HDF5 + ``metadata.json``.

* GNS (the PyTorch port of DeepMind's learning_to_simulate, geoelements/gns): an ``.npz`` whose items are
  trajectories ``(positions (T, N, D), particle_type (N,) or scalar[, material_property])`` stored as
  pickled object arrays (``simulation_trajectory_0``, ...), or one object array under ``gns_data``.
  ``metadata.json`` beside it holds ``dt`` and ``bounds``. Reading needs ``allow_pickle``: only open files
  you trust.
* LagrangeBench: ``{train,valid,test}.h5`` with groups ``00000, 00001, ...`` each holding ``position``
  float32 (T, N, D) and ``particle_type`` int32 (N,), plus one ``metadata.json`` per dataset (``dt``,
  ``write_every``, ``bounds``, ``default_connectivity_radius``, velocity/acceleration statistics...).
  Stored steps are ``dt * write_every`` seconds apart (``write_every`` defaults to 1).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_open, atomic_path, atomic_write_text
from geo3d.io.json_file import read_json_object
from geo3d.types import ParticleTrajectory

SPLITS = ("train", "valid", "test")


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read a GNS / LagrangeBench ``metadata.json`` into a dict (InputError naming the file if unreadable)."""
    return read_json_object(path)


def _step_and_bounds(path: Path, metadata: dict[str, Any]) -> tuple[float, np.ndarray | None]:
    """Seconds between stored steps (``dt * write_every``) and (D, 2) bounds or None, from metadata."""
    try:
        dt = float(metadata["dt"]) * float(metadata.get("write_every", 1))
    except KeyError:
        raise InputError(path, "missing 'dt'") from None
    except (TypeError, ValueError):
        raise InputError(path, f"'dt' and 'write_every' must be numbers, got {metadata.get('dt')!r}, "
                               f"{metadata.get('write_every')!r}") from None
    if not (math.isfinite(dt) and dt > 0):
        raise InputError(path, f"'dt' * 'write_every' must be positive, got {dt}")
    bounds = metadata.get("bounds")
    if bounds is None:
        return dt, None
    try:
        bounds = np.asarray(bounds, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(path, "'bounds' must be a list of [min, max] pairs") from None
    if bounds.ndim != 2 or bounds.shape[1] != 2:
        raise InputError(path, f"'bounds' must be a list of [min, max] pairs, got shape {bounds.shape}")
    return dt, bounds


def _trajectory(path: Path, where: str, positions, types, dt: float, bounds) -> ParticleTrajectory:
    try:
        positions = np.asarray(positions, dtype=np.float32)
        if positions.ndim != 3:
            raise ValueError(f"positions: expected shape (T, N, D), got {positions.shape}")
        types = np.asarray(types, dtype=np.int64)
        if types.ndim == 0:  # one type for every particle (allowed by GNS)
            types = np.full(positions.shape[1], types)
        if types.shape != positions.shape[1:2]:
            raise ValueError(f"particle_type: expected shape ({positions.shape[1]},) or a scalar, got {types.shape}")
        if bounds is not None and bounds.shape[0] != positions.shape[2]:
            raise ValueError(f"bounds: {bounds.shape[0]} axes for {positions.shape[2]}D positions")
        return ParticleTrajectory(torch.from_numpy(positions), torch.from_numpy(types.copy()), dt,
                                  None if bounds is None else torch.from_numpy(bounds))
    except (TypeError, ValueError) as e:
        raise InputError(path, f"{where}: {e}") from None


def read_gns_npz(
    path: str | os.PathLike, dt: float | None = None, bounds: Sequence[Sequence[float]] | None = None
) -> list[ParticleTrajectory]:
    """Read a GNS ``.npz`` trajectory file.

    Args:
        path: the ``.npz`` file (pickled object arrays: trusted files only).
        dt: seconds between stored steps; None reads ``dt`` (times ``write_every``) from ``metadata.json``
            in the same folder.
        bounds: (D, 2) domain bounds in metres; None takes them from that ``metadata.json`` if present.

    Returns:
        One ParticleTrajectory per item, in file order: positions (T, N, D) float32 metres, particle types
        (N,) int64 (a scalar type is broadcast to all particles). A third ``material_property`` element is
        not kept (a warning says so).

    Raises:
        InputError: naming the file and item: unreadable, not (positions, types) pairs, bad shapes, or
            no ``dt`` given or found.
    """
    path = Path(path)
    meta_path = path.parent / "metadata.json"
    if dt is None:
        if not meta_path.is_file():
            raise InputError(path, "no dt: pass dt= or put a metadata.json with 'dt' beside the file")
        dt, meta_bounds = _step_and_bounds(meta_path, read_metadata(meta_path))
        bounds = meta_bounds if bounds is None else bounds
    bounds = None if bounds is None else np.asarray(bounds, dtype=np.float32)
    if not path.is_file():
        raise InputError(path, "file not found")
    if not zipfile.is_zipfile(path):  # np.load would otherwise try to unpickle arbitrary files
        raise InputError(path, "not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=True) as archive:
            items = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise InputError(path, f"not a readable .npz file ({e})") from None
    if "gns_data" in items:
        items = {f"gns_data[{i}]": item for i, item in enumerate(items["gns_data"])}
    if not items:
        raise InputError(path, "no trajectories in the file")
    out, dropped = [], False
    for key, item in items.items():
        if isinstance(item, np.ndarray) and item.dtype == object and item.ndim == 0:
            item = item.item()
        if not isinstance(item, (tuple, list, np.ndarray)) or len(item) not in (2, 3):
            raise InputError(path, f"{key}: expected a (positions, particle_type[, material_property]) tuple")
        dropped |= len(item) == 3
        out.append(_trajectory(path, key, item[0], item[1], float(dt), bounds))
    if dropped:
        warnings.warn(f"{path}: material_property values are not kept by ParticleTrajectory", stacklevel=2)
    return out


def write_gns_npz(path: str | os.PathLike, trajectories: Sequence[ParticleTrajectory], compressed: bool = True) -> None:
    """Write trajectories as a GNS ``.npz`` (items ``simulation_trajectory_<i>``), atomically.

    Each item is a 2-element object array ``(positions (T, N, D) float32, particle_type (N,) int64)``, the
    layout GNS's ``load_npz_data`` reads. ``dt`` and bounds are not stored in the file: write them to
    ``metadata.json`` beside it (:func:`write_lagrangebench` does for its format).

    Args:
        path: output ``.npz`` file.
        trajectories: the trajectories.
        compressed: use ``np.savez_compressed``.
    """
    items = {}
    for i, traj in enumerate(trajectories):
        item = np.empty(2, dtype=object)
        item[0] = traj.positions.detach().cpu().numpy().astype(np.float32)
        item[1] = traj.particle_types.detach().cpu().numpy().astype(np.int64)
        items[f"simulation_trajectory_{i}"] = item
    with atomic_open(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **items)


def _h5_path(dir_or_h5: Path, split: str) -> Path:
    if dir_or_h5.suffix in (".h5", ".hdf5"):
        return dir_or_h5
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return dir_or_h5 / f"{split}.h5"


def read_lagrangebench(dir_or_h5: str | os.PathLike, split: str = "train") -> list[ParticleTrajectory]:
    """Read one split of a LagrangeBench dataset.

    Args:
        dir_or_h5: the dataset folder (holding ``{split}.h5`` and ``metadata.json``), or an ``.h5`` file
            (``metadata.json`` is then looked up beside it and ``split`` is ignored).
        split: ``"train"``, ``"valid"`` or ``"test"``.

    Returns:
        One ParticleTrajectory per group, in sorted group order: positions (T, N, D) float32 metres,
        particle types (N,) int64, ``dt = metadata dt * write_every`` seconds, bounds (D, 2) from metadata.

    Raises:
        InputError: naming the file and field: missing files, a group without ``position`` or
            ``particle_type``, bad shapes, metadata without ``dt``.
    """
    h5_path = _h5_path(Path(dir_or_h5), split)
    meta_path = h5_path.parent / "metadata.json"
    dt, bounds = _step_and_bounds(meta_path, read_metadata(meta_path))
    if not h5_path.is_file():
        raise InputError(h5_path, "file not found")
    out = []
    try:
        with h5py.File(h5_path, "r") as f:
            for key in sorted(f.keys()):
                group = f[key]
                for field in ("position", "particle_type"):
                    if not isinstance(group, h5py.Group) or field not in group:
                        raise InputError(h5_path, f"{key}: missing dataset '{field}'")
                out.append(_trajectory(h5_path, key, group["position"][()], group["particle_type"][()], dt, bounds))
    except OSError as e:
        raise InputError(h5_path, f"not a readable HDF5 file ({e})") from None
    if not out:
        raise InputError(h5_path, "no trajectory groups")
    return out


def write_lagrangebench(
    directory: str | os.PathLike, trajectories: Sequence[ParticleTrajectory], metadata: dict[str, Any] | None = None,
    split: str = "train",
) -> None:
    """Write one split of a LagrangeBench dataset: ``{split}.h5`` and ``metadata.json``, each atomically.

    ``metadata.json`` is shared by the splits: keys already in the folder's file are kept unless
    ``metadata`` overrides them. Written: that, plus what the trajectories determine: ``dim``, ``dt``
    (with ``write_every`` = 1 unless given, so that ``dt * write_every`` is the trajectories' step),
    ``bounds`` (from the first trajectory, unless given), ``num_particles_max``, ``sequence_length_<split>`` and
    ``num_trajs_<split>``. Statistics such as ``vel_mean``/``acc_std`` are the caller's to supply.

    Args:
        directory: dataset folder (created if needed).
        trajectories: trajectories sharing dt and dimension.
        metadata: other metadata keys (e.g. ``default_connectivity_radius``, ``periodic_boundary_conditions``).
        split: ``"train"``, ``"valid"`` or ``"test"``.

    Raises:
        ValueError: no trajectories, mixed dt or dimension, or a ``dt``/``write_every`` in ``metadata``
            that disagrees with the trajectories' step.
    """
    if split not in SPLITS:
        raise ValueError(f"write_lagrangebench: split must be one of {SPLITS}, got {split!r}")
    if not trajectories:
        raise ValueError("write_lagrangebench: no trajectories")
    step, dim = trajectories[0].dt, trajectories[0].dim
    if any(not math.isclose(t.dt, step, rel_tol=1e-9) or t.dim != dim for t in trajectories):
        raise ValueError("write_lagrangebench: all trajectories must share dt and dimension")
    directory = Path(directory)
    meta_path = directory / "metadata.json"
    meta = {**(read_metadata(meta_path) if meta_path.is_file() else {}), **(metadata or {})}
    write_every = float(meta.setdefault("write_every", 1))
    meta.setdefault("dt", step / write_every)
    if not math.isclose(float(meta["dt"]) * write_every, step, rel_tol=1e-6):
        raise ValueError(f"write_lagrangebench: metadata dt * write_every = {float(meta['dt']) * write_every} "
                         f"but the trajectories are {step} s apart")
    meta["dim"] = dim
    if "bounds" not in meta and trajectories[0].bounds is not None:
        meta["bounds"] = trajectories[0].bounds.tolist()
    meta["num_particles_max"] = max(int(meta.get("num_particles_max", 0)),
                                    max(t.num_particles for t in trajectories))
    meta[f"sequence_length_{split}"] = trajectories[0].num_steps
    meta[f"num_trajs_{split}"] = len(trajectories)

    with atomic_path(directory / f"{split}.h5") as tmp, h5py.File(tmp, "w") as f:
        for i, traj in enumerate(trajectories):
            group = f.create_group(f"{i:05d}")
            group.create_dataset("position", data=traj.positions.detach().cpu().numpy().astype(np.float32))
            group.create_dataset("particle_type", data=traj.particle_types.detach().cpu().numpy().astype(np.int32))
    atomic_write_text(meta_path, json.dumps(meta, indent=4) + "\n")
