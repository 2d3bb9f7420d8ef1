"""Rollout files: a learned simulator's predicted trajectory beside the ground truth, in one HDF5 file.

``geo3d predict`` with a simulation config writes one ``rollout_<i>.h5`` per test trajectory
(:class:`pipelines.simulation.predict.RolloutWriter`); ``geo3d view rollout.h5`` plays it. Layout::

    rollout.h5
      attrs: format = "geo3d-rollout", version = 1, dt (s between frames), history (H), model (str)
      bounds          (D, 2) float32   box [min, max] per axis, metres
      particle_type   (N,) int32
      predicted       (T, N, D) float32  the H input frames (ground truth), then the T - H predicted ones, metres
      ground_truth    (T, N, D) float32  optional: the simulator's positions for the same frames
      baseline        (T, N, D) float32  optional: the constant-velocity baseline's

HDF5 rather than LagrangeBench's layout because a rollout is one trajectory with several versions of it,
and ``dt``/``bounds`` have to travel with the file (a LagrangeBench split needs its ``metadata.json``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from geo3d.errors import InputError
from geo3d.io.atomic import atomic_path

FORMAT = "geo3d-rollout"
VERSION = 1
_VERSIONS = ("predicted", "ground_truth", "baseline")


@dataclass
class Rollout:
    """A predicted particle trajectory and what to compare it with.

    Attributes:
        predicted: (T, N, D) float32 positions, metres; the first ``history`` frames are the model's input.
        particle_types: (N,) int64 particle type ids.
        bounds: (D, 2) float32 box ``[min, max]`` per axis, metres.
        dt: seconds between frames.
        history: number of input frames at the start of ``predicted``.
        ground_truth: (T, N, D) float32 positions, metres, or None.
        baseline: (T, N, D) float32 constant-velocity positions, metres, or None.
        model: name of the model that predicted (e.g. ``"GIOROM"``), or ``""``.
    """

    predicted: torch.Tensor
    particle_types: torch.Tensor
    bounds: torch.Tensor
    dt: float
    history: int
    ground_truth: torch.Tensor | None = None
    baseline: torch.Tensor | None = None
    model: str = ""


def is_rollout_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file whose ``format`` attribute says it is a rollout (False if unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except (OSError, ValueError):
        return False


def write_rollout(path: str | os.PathLike, rollout: Rollout) -> Path:
    """Write a rollout file atomically (layout in the module docstring).

    Args:
        path: the ``.h5`` file to write (folders are created).
        rollout: what to write; ``ground_truth`` and ``baseline``, when given, must match ``predicted``'s shape.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: inconsistent shapes, a non-positive ``dt`` or ``history`` outside ``[0, T]``.
    """
    path = Path(path)
    t, n, d = rollout.predicted.shape
    for name in _VERSIONS[1:]:
        value = getattr(rollout, name)
        if value is not None and tuple(value.shape) != (t, n, d):
            raise ValueError(f"write_rollout: {name} has shape {tuple(value.shape)}, predicted {(t, n, d)}")
    if tuple(rollout.particle_types.shape) != (n,) or tuple(rollout.bounds.shape) != (d, 2):
        raise ValueError(f"write_rollout: particle_types {tuple(rollout.particle_types.shape)} and bounds "
                         f"{tuple(rollout.bounds.shape)} must be ({n},) and ({d}, 2)")
    if not (rollout.dt > 0 and 0 <= rollout.history <= t):
        raise ValueError(f"write_rollout: dt must be > 0 and history in [0, {t}], got {rollout.dt}, {rollout.history}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(format=FORMAT, version=VERSION, dt=float(rollout.dt), history=int(rollout.history),
                       model=rollout.model)
        f.create_dataset("bounds", data=rollout.bounds.detach().cpu().numpy().astype(np.float32))
        f.create_dataset("particle_type", data=rollout.particle_types.detach().cpu().numpy().astype(np.int32))
        for name in _VERSIONS:
            value = getattr(rollout, name)
            if value is not None:
                f.create_dataset(name, data=value.detach().cpu().numpy().astype(np.float32), compression="gzip",
                                 compression_opts=1)
    return path


def _array(path: Path, f: h5py.File, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """Dataset ``name`` as a numpy array with the given shape (None: any size), else an InputError."""
    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise InputError(path, f"missing dataset '{name}'")
    value = f[name][()]
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape, strict=True)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise InputError(path, f"'{name}' has shape {value.shape}, expected {want}")
    if value.dtype.kind not in "fiu":
        raise InputError(path, f"'{name}' must be numeric, got dtype {value.dtype}")
    if not np.isfinite(value).all():
        raise InputError(path, f"'{name}' holds NaN or infinite values")
    return value


def read_rollout(path: str | os.PathLike) -> Rollout:
    """Read a rollout file written by :func:`write_rollout`.

    Args:
        path: the ``.h5`` file.

    Returns:
        The :class:`Rollout`.

    Raises:
        InputError: naming the file and the field: not found, not HDF5, not a rollout file, missing or
            misshapen datasets, NaN positions, a bad ``dt`` or ``history``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise InputError(path, f"not a rollout file (attribute 'format' is not {FORMAT!r})")
            predicted = _array(path, f, "predicted", (None, None, None))
            t, n, d = predicted.shape
            versions = {name: _array(path, f, name, (t, n, d)) if name in f else None for name in _VERSIONS[1:]}
            bounds = _array(path, f, "bounds", (d, 2))
            types = _array(path, f, "particle_type", (n,))
            missing = [name for name in ("dt", "history") if name not in f.attrs]
            if missing:
                raise InputError(path, f"missing attribute '{missing[0]}'")
            dt, history, model = float(f.attrs["dt"]), int(f.attrs["history"]), str(f.attrs.get("model", ""))
    except OSError as e:
        raise InputError(path, f"not a readable HDF5 file ({e})") from None
    if not (math.isfinite(dt) and dt > 0):
        raise InputError(path, f"attribute 'dt' must be positive, got {dt}")
    if not 0 <= history <= t:
        raise InputError(path, f"attribute 'history' must be in [0, {t}], got {history}")
    if (bounds[:, 1] <= bounds[:, 0]).any():
        raise InputError(path, f"'bounds' must have min < max on every axis, got {bounds.tolist()}")

    def tensor(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return Rollout(tensor(predicted), torch.from_numpy(types.astype(np.int64)), tensor(bounds), dt, history,
                   tensor(versions["ground_truth"]), tensor(versions["baseline"]), model)
