"""Rollouts: the rolling window, clamping into the box, NaN detection naming the step, kinematic particles, and the
constant-velocity baseline (exact on ballistic motion without gravity)."""

from __future__ import annotations

import pytest
import torch

from pipelines.simulation.data import analytic_trajectories
from pipelines.simulation.features import HISTORY
from pipelines.simulation.rollout import RolloutError, constant_velocity_step, rollout


def test_constant_velocity_exact_on_ballistic_motion():
    g = torch.Generator().manual_seed(0)
    p0 = torch.rand(9, 3, generator=g, dtype=torch.float64) * 0.5 + 0.25
    v = (torch.rand(9, 3, generator=g, dtype=torch.float64) - 0.5) * 0.01
    t = torch.arange(HISTORY + 20, dtype=torch.float64)[:, None, None]
    positions = p0 + t * v
    pred = rollout(constant_velocity_step, positions[:HISTORY], 20, torch.tensor([[0.0, 1.0]] * 3))
    assert pred.shape == (20, 9, 3) and pred.dtype == torch.float64
    assert torch.allclose(pred, positions[HISTORY:], atol=1e-12, rtol=0)
    # the analytic ballistic data set (float32 storage, no gravity, no wall hit in 30 steps)
    (traj,) = analytic_trajectories("ballistic", count=1, steps=30, gravity=0.0)
    p = traj.positions
    assert torch.allclose(rollout(constant_velocity_step, p[:HISTORY], 24, traj.bounds), p[HISTORY:], atol=1e-5)


def test_window_rolls_and_clamps():
    seen = []

    def step(window):
        seen.append(window.clone())
        return window[-1] + torch.tensor([0.3, -0.3])

    initial = torch.full((HISTORY, 2, 2), 0.5)
    bounds = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    pred = rollout(step, initial, 4, bounds)
    assert pred.shape == (4, 2, 2)
    assert (pred[..., 0] <= 1.0).all() and (pred[..., 1] >= 0.0).all()
    assert torch.allclose(pred[:, 0], torch.tensor([[0.8, 0.2], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
    assert torch.equal(seen[0], initial)
    assert torch.equal(seen[3][-3:], pred[:3]) and torch.equal(seen[3][:-3], initial[3:])
    assert rollout(step, initial, 0).shape == (0, 2, 2)


def test_nan_and_shape_errors_name_the_step():
    calls = []

    def step(window):
        calls.append(1)
        out = window[-1] + 0.01
        if len(calls) == 3:
            out[1, 0] = float("nan")
        return out

    with pytest.raises(RolloutError, match=r"step 3 of 5: NaN or infinite positions for 1 of 4 particles"):
        rollout(step, torch.zeros(HISTORY, 4, 2), 5)
    with pytest.raises(RolloutError, match=r"step 1 of 2: step_fn returned shape \(3, 2\)"):
        rollout(lambda w: w[-1, :3], torch.zeros(HISTORY, 4, 2), 2)
    with pytest.raises(ValueError, match="initial_history"):
        rollout(constant_velocity_step, torch.zeros(4, 2), 2)


def test_kinematic_particles_follow_their_prescribed_positions():
    initial = torch.zeros(HISTORY, 3, 2)
    prescribed = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([False, True, False])
    pred = rollout(lambda w: w[-1] + 1.0, initial, 2, kinematic_mask=mask, kinematic_positions=prescribed)
    assert torch.equal(pred[:, 1], prescribed[:, 1])
    assert torch.equal(pred[0, 0], torch.ones(2)) and torch.equal(pred[1, 2], torch.full((2,), 2.0))
    with pytest.raises(ValueError, match="both or neither"):
        rollout(constant_velocity_step, initial, 2, kinematic_mask=mask)
