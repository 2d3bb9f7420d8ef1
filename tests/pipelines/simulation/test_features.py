"""Simulation features: kinematics round trip, noise that keeps the target consistent, the normaliser against a hand
computation, wall / velocity / edge features."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.simulation.features import (
    HISTORY,
    Normalizer,
    add_random_walk_noise,
    boundary_features,
    edge_features,
    next_position,
    target_acceleration,
    velocities,
    velocity_features,
)


def _window(n: int = 7, dim: int = 2, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(torch.randn(HISTORY + 1, n, dim, generator=g, dtype=dtype) * 0.01, dim=0) + 0.5


def test_velocities_and_round_trip():
    positions = _window(dim=3)
    history, nxt = positions[:HISTORY], positions[HISTORY]
    v = velocities(history)
    assert v.shape == (HISTORY - 1, 7, 3)
    assert torch.equal(v[2], history[3] - history[2])
    a = target_acceleration(history, nxt)
    assert torch.allclose(a, nxt - 2 * history[-1] + history[-2], atol=1e-6)
    assert torch.allclose(next_position(history, a), nxt, atol=1e-6, rtol=0)


def test_noise_keeps_the_target_consistent():
    positions = _window(n=20000, dim=2, dtype=torch.float64)
    history, nxt = positions[:HISTORY], positions[HISTORY]
    noisy = add_random_walk_noise(history, 0.01, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy[0], history[0])  # the oldest position is not moved
    shift = noisy[-1] - history[-1]
    target = target_acceleration(noisy, nxt + shift)
    assert torch.allclose(next_position(noisy, target), nxt + shift, atol=1e-12)
    # the target restores the true next velocity
    assert torch.allclose((noisy[-1] + (noisy[-1] - noisy[-2]) + target) - noisy[-1], nxt - history[-1], atol=1e-12)
    # random walk: the last velocity's noise has std noise_std, the first one std noise_std / sqrt(H - 1)
    dv = velocities(noisy) - velocities(history)
    assert dv[-1].std().item() == pytest.approx(0.01, rel=0.03)
    assert dv[0].std().item() == pytest.approx(0.01 / math.sqrt(HISTORY - 1), rel=0.03)
    # float32, as the datamodule uses it
    h32, n32 = history.float(), nxt.float()
    noisy32 = add_random_walk_noise(h32, 3e-4)
    t32 = target_acceleration(noisy32, n32 + (noisy32[-1] - h32[-1]))
    assert torch.allclose(next_position(noisy32, t32), n32 + (noisy32[-1] - h32[-1]), atol=1e-6, rtol=0)


def test_noise_mask_and_zero():
    history = _window()[:HISTORY]
    mask = torch.tensor([True, False] * 3 + [True])
    noisy = add_random_walk_noise(history, 0.1, mask=mask)
    assert torch.equal(noisy[:, ~mask], history[:, ~mask])
    assert not torch.equal(noisy[:, mask], history[:, mask])
    assert add_random_walk_noise(history, 0.0) is history
    same = add_random_walk_noise(history, 0.1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(same, add_random_walk_noise(history, 0.1, generator=torch.Generator().manual_seed(3)))


def test_normalizer_against_hand_computation():
    meta = {"vel_mean": [0.1, -0.2], "vel_std": [0.3, 0.4], "acc_mean": [0.01, 0.0], "acc_std": [0.02, 0.05]}
    noise = 0.1
    norm = Normalizer.from_metadata(meta, noise)
    assert {k: v.dtype for k, v in norm.state_dict().items()} == {
        "vel_mean": torch.float32, "vel_std": torch.float32, "acc_mean": torch.float32, "acc_std": torch.float32}
    vel_std = [math.sqrt(0.3**2 + 0.01), math.sqrt(0.4**2 + 0.01)]
    acc_std = [math.sqrt(0.02**2 + 0.01), math.sqrt(0.05**2 + 0.01)]
    assert norm.vel_std.tolist() == pytest.approx(vel_std, rel=1e-6)
    assert norm.acc_std.tolist() == pytest.approx(acc_std, rel=1e-6)
    v = torch.tensor([[1.0, 2.0]])
    expected = [(1.0 - 0.1) / vel_std[0], (2.0 + 0.2) / vel_std[1]]
    assert norm.normalize_velocity(v)[0].tolist() == pytest.approx(expected, rel=1e-6)
    a = torch.tensor([[0.5, -0.5]], dtype=torch.float64)
    expected = [(0.5 - 0.01) / acc_std[0], (-0.5 - 0.0) / acc_std[1]]
    assert norm.normalize_acceleration(a)[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(norm.denormalize_acceleration(norm.normalize_acceleration(a)), a, atol=1e-12)
    with pytest.raises(KeyError, match="acc_std"):
        Normalizer.from_metadata({k: v for k, v in meta.items() if k != "acc_std"}, noise)
    with pytest.raises(ValueError, match="> 0"):
        Normalizer.from_metadata({**meta, "acc_std": [0.0, 0.0]}, 0.0)
    identity = Normalizer.identity(3)
    identity.load_state_dict(Normalizer.from_metadata({k: [*v, 1.0] for k, v in meta.items()}, noise).state_dict())
    assert identity.vel_mean.tolist() == pytest.approx([0.1, -0.2, 1.0])


def test_boundary_velocity_and_edge_features():
    bounds = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    p = torch.tensor([[0.05, 1.0], [0.5, 1.95], [-0.2, 0.0]])
    f = boundary_features(p, bounds, 0.1)
    assert f.shape == (3, 4)
    expected = [[0.5, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.5], [-1.0, 0.0, 1.0, 1.0]]
    assert torch.allclose(f, torch.tensor(expected), atol=1e-6)
    per_particle = boundary_features(p, bounds.expand(3, 2, 2), 0.1)  # (N, D, 2) bounds, as in a batch
    assert torch.equal(per_particle, f)

    history = _window(n=3)[:HISTORY]
    norm = Normalizer([0.0, 0.0], [2.0, 2.0], [0.0, 0.0], [1.0, 1.0])
    vf = velocity_features(history, norm)
    assert vf.shape == (3, (HISTORY - 1) * 2)
    assert torch.allclose(vf[1, 4:6], (history[3, 1] - history[2, 1]) / 2.0)

    edges = torch.tensor([[0, 2], [1, 0]])
    ef = edge_features(p, edges, 0.5)
    assert torch.allclose(ef[0], torch.tensor([(0.05 - 0.5) / 0.5, (1.0 - 1.95) / 0.5,
                                               math.hypot(0.45, 0.95) / 0.5]), atol=1e-6)
