"""Particle trajectories for Lagrangian simulation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geo3d.types._checks import as_tensor, check_finite, check_tensor
from geo3d.types.base import TensorDataclass


@dataclass
class ParticleTrajectory(TensorDataclass):
    """One trajectory of N particles over T steps.

    Attributes:
        positions: (T, N, D) float32 metres (D = 2 or 3).
        particle_types: (N,) int64 material/type ids.
        dt: time between stored steps, seconds.
        bounds: (D, 2) float32 domain ``[min, max]`` per axis, metres, or None.
    """

    positions: torch.Tensor
    particle_types: torch.Tensor
    dt: float
    bounds: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.positions = as_tensor(self.positions, torch.float32)
        check_tensor("ParticleTrajectory.positions", self.positions, (None, None, None))
        t, n, d = self.positions.shape
        if d not in (2, 3):
            raise ValueError(f"ParticleTrajectory.positions: expected D = 2 or 3, got {d}")
        check_finite("ParticleTrajectory.positions", self.positions)
        self.particle_types = as_tensor(self.particle_types, torch.int64).reshape(-1)
        check_tensor("ParticleTrajectory.particle_types", self.particle_types, (n,))
        self.dt = float(self.dt)
        if not self.dt > 0:
            raise ValueError(f"ParticleTrajectory.dt: must be positive, got {self.dt}")
        if self.bounds is not None:
            self.bounds = as_tensor(self.bounds, torch.float32)
            check_tensor("ParticleTrajectory.bounds", self.bounds, (d, 2))

    @property
    def num_steps(self) -> int:
        return self.positions.shape[0]

    @property
    def num_particles(self) -> int:
        return self.positions.shape[1]

    @property
    def dim(self) -> int:
        return self.positions.shape[2]

    def velocities(self) -> torch.Tensor:
        """(T - 1, N, D) float32 finite-difference velocities, metres per second."""
        return (self.positions[1:] - self.positions[:-1]) / self.dt
