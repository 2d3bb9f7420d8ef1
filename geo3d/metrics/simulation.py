"""Rollout metrics of particle simulators: position MSE at fixed horizons, Chamfer distance, kinetic energy.

Conventions (GNS / LagrangeBench): a rollout is (T, N, D) positions in metres, one row per *predicted* stored step,
with particle ``i`` of the prediction the same particle as ``i`` of the ground truth. Velocities are position
differences per stored step (metres/step). Everything is computed in float64 NumPy and returned as Python floats.

* ``mse_k``: mean over particles and axes of the squared position error at the k-th predicted step (1-based,
  GNS's and LagrangeBench's per-element mean); NaN when the rollout has fewer than k steps.
* ``mse_full``: the same averaged over all steps.
* ``chamfer``: mean over steps of the symmetric Chamfer distance between the predicted and true clouds,
  ``mean_p min_q |p - q|^2 + mean_q min_p |p - q|^2`` (squared metres, like the MSE; it ignores which particle is
  which, so it measures the shape of the material rather than particle identities). Nearest neighbours come from
  SciPy KD-trees; the squared distances are recomputed in float64 from the neighbours found. Clouds of more than
  ``CHAMFER_MAX_POINTS`` (5000) particles use the same seeded random subset of particle indices (seed 0) in both
  clouds at every step, so the value is deterministic.
* ``ekin_error``: mean over steps of ``|E(pred) - E(true)|`` with ``E = 0.5 m sum_i |v_i|^2`` (``m`` =
  ``particle_mass``, velocities = position differences, metres/step), i.e. energy in ``kg m^2 / step^2``. It
  needs two positions per velocity, so it covers the T - 1 velocities inside the rollout (NaN when T < 2).
  (LagrangeBench's ``e_kin`` instead reports the squared difference of ``sum |v / dt|^2``; the absolute error is
  kept here because it has the units of an energy and does not vanish for small energies.)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree

MSE_STEPS = (1, 5, 20)
CHAMFER_MAX_POINTS = 5000


def _as_numpy(name: str, x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"rollout_metrics: {name} must be (T, N, D), got shape {x.shape}")
    return x


def _one_sided(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the points of ``a`` (n, D) of the squared distance to the nearest point of ``b`` (m, D)."""
    _, index = cKDTree(b).query(a, k=1)
    diff = a - b[index]
    return float(np.mean(np.sum(diff * diff, axis=-1)))


def chamfer_distance(a, b) -> float:
    """Symmetric Chamfer distance ``mean_a min_b |a - b|^2 + mean_b min_a |a - b|^2`` of two clouds.

    Args:
        a: (n, D) points, metres (tensor or array).
        b: (m, D) points, metres.

    Returns:
        Squared metres (float64), no subsampling.
    """
    a = np.asarray(a.detach().cpu().double() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu().double() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    return _one_sided(a, b) + _one_sided(b, a)


def kinetic_energy(positions, particle_mass: float = 1.0) -> np.ndarray:
    """Kinetic energy of each step of a trajectory from its position differences.

    Args:
        positions: (T, N, D) metres.
        particle_mass: mass of every particle, kg.

    Returns:
        (T - 1,) float64 ``0.5 m sum_i |p_{t+1, i} - p_{t, i}|^2``, kg m^2/step^2.
    """
    p = _as_numpy("positions", positions)
    v = p[1:] - p[:-1]
    return 0.5 * particle_mass * np.sum(v * v, axis=(1, 2))


def rollout_metrics(pred, true, particle_mass: float = 1.0) -> dict[str, float]:
    """Compare a predicted rollout with the ground truth (see the module docstring for the definitions).

    Args:
        pred: (T, N, D) predicted positions, metres (tensor or array), row t = the (t+1)-th predicted step.
        true: (T, N, D) true positions at the same steps.
        particle_mass: mass of every particle, kg (kinetic energy only).

    Returns:
        ``{"mse_1", "mse_5", "mse_20", "mse_full", "chamfer", "ekin_error"}`` as floats: m^2, m^2, m^2, m^2, m^2,
        kg m^2/step^2. ``mse_k`` is NaN when T < k; ``ekin_error`` is NaN when T < 2; all are NaN when T = 0.

    Raises:
        ValueError: shapes differ or are not (T, N, D).
    """
    p, t = _as_numpy("pred", pred), _as_numpy("true", true)
    if p.shape != t.shape:
        raise ValueError(f"rollout_metrics: pred {p.shape} and true {t.shape} must have the same shape")
    steps, n, _ = p.shape
    nan = math.nan
    per_step = np.mean((p - t) ** 2, axis=(1, 2)) if steps and n else np.full(steps, nan)
    out = {f"mse_{k}": float(per_step[k - 1]) if steps >= k else nan for k in MSE_STEPS}
    out["mse_full"] = float(per_step.mean()) if steps else nan
    if steps and n:
        subset = slice(None)
        if n > CHAMFER_MAX_POINTS:
            subset = np.sort(np.random.default_rng(0).choice(n, CHAMFER_MAX_POINTS, replace=False))
        out["chamfer"] = float(np.mean([chamfer_distance(p[i, subset], t[i, subset]) for i in range(steps)]))
    else:
        out["chamfer"] = nan
    if steps >= 2:
        out["ekin_error"] = float(np.mean(np.abs(kinetic_energy(p, particle_mass) - kinetic_energy(t, particle_mass))))
    else:
        out["ekin_error"] = nan
    return out
