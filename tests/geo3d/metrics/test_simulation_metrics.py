"""Rollout metrics against brute-force NumPy references (float64, 1e-9): MSE at horizons, Chamfer, kinetic energy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.metrics import rollout_metrics
from geo3d.metrics.simulation import CHAMFER_MAX_POINTS, chamfer_distance, kinetic_energy


def _brute_mse(pred: np.ndarray, true: np.ndarray, step: int) -> float:
    total, count = 0.0, 0
    for i in range(pred.shape[1]):
        for k in range(pred.shape[2]):
            total += (pred[step, i, k] - true[step, i, k]) ** 2
            count += 1
    return total / count


def _brute_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    def one_way(x, y):
        return sum(min(float(np.sum((p - q) ** 2)) for q in y) for p in x) / len(x)

    return one_way(a, b) + one_way(b, a)


def _brute_ekin(x: np.ndarray, mass: float) -> list[float]:
    out = []
    for t in range(1, len(x)):
        e = 0.0
        for i in range(x.shape[1]):
            e += 0.5 * mass * sum((x[t, i, k] - x[t - 1, i, k]) ** 2 for k in range(x.shape[2]))
        out.append(e)
    return out


@pytest.mark.parametrize("dim", [2, 3])
def test_against_brute_force(dim):
    rng = np.random.default_rng(dim)
    true = np.cumsum(rng.normal(0, 0.01, (25, 17, dim)), axis=0)
    pred = true + rng.normal(0, 0.003, true.shape) * np.arange(1, 26)[:, None, None]
    m = rollout_metrics(torch.from_numpy(pred), true, particle_mass=0.7)
    for k in (1, 5, 20):
        assert m[f"mse_{k}"] == pytest.approx(_brute_mse(pred, true, k - 1), rel=1e-9, abs=1e-12)
    assert m["mse_full"] == pytest.approx(np.mean([_brute_mse(pred, true, t) for t in range(25)]), rel=1e-9)
    chamfer = np.mean([_brute_chamfer(pred[t], true[t]) for t in range(25)])
    assert m["chamfer"] == pytest.approx(chamfer, rel=1e-9)
    ekin = np.mean(np.abs(np.subtract(_brute_ekin(pred, 0.7), _brute_ekin(true, 0.7))))
    assert m["ekin_error"] == pytest.approx(ekin, rel=1e-9)
    assert kinetic_energy(true, 0.7) == pytest.approx(_brute_ekin(true, 0.7), rel=1e-9)


def test_short_rollouts_and_identity():
    x = np.random.default_rng(0).random((3, 5, 2))
    m = rollout_metrics(x, x)
    assert m["mse_1"] == 0 and m["mse_full"] == 0 and m["chamfer"] == 0 and m["ekin_error"] == 0
    assert math.isnan(m["mse_5"]) and math.isnan(m["mse_20"])
    one = rollout_metrics(x[:1], x[:1] + 1.0)
    assert one["mse_1"] == pytest.approx(1.0) and math.isnan(one["ekin_error"])
    with pytest.raises(ValueError, match="same shape"):
        rollout_metrics(x, x[:, :4])


def test_chamfer_ignores_particle_order_and_subsamples_large_clouds():
    rng = np.random.default_rng(1)
    a = rng.random((40, 3))
    assert chamfer_distance(a, a[rng.permutation(40)]) == 0.0
    n = CHAMFER_MAX_POINTS + 50
    true = rng.random((2, n, 2))
    pred = true + rng.normal(0, 0.01, true.shape)
    subset = np.sort(np.random.default_rng(0).choice(n, CHAMFER_MAX_POINTS, replace=False))  # documented subset
    expected = np.mean([chamfer_distance(pred[t, subset], true[t, subset]) for t in range(2)])
    assert rollout_metrics(pred, true)["chamfer"] == pytest.approx(expected, rel=1e-12)
