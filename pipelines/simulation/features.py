"""Kinematics and input features of learned Lagrangian simulators (GNS / LagrangeBench conventions).

Units follow GNS (Sanchez-Gonzalez et al. 2020) and LagrangeBench: time is counted in *stored steps*, so a
velocity is a position difference between consecutive stored steps (metres/step) and an acceleration a second
difference (metres/step^2); ``dt`` never enters the model. A model sees a window of ``HISTORY`` positions
(the current one and the 5 before it: 5 velocities) and predicts the acceleration of the next step, which a
semi-implicit Euler step turns into the next position::

    v_{t+1} = v_t + a_t,   p_{t+1} = p_t + v_{t+1}     (v_t = p_t - p_{t-1})

Tensors are torch tensors on any device and dtype; windows are ``(H, N, D)``: H steps oldest first, N particles,
D = 2 or 3 axes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

HISTORY = 6
"""Positions in a model's input window: the current one and 5 previous (5 velocities)."""

KINEMATIC_TYPE = 3
"""GNS particle-type id of kinematic (prescribed, e.g. moving wall) particles: no noise, no loss, not predicted."""


def velocities(history: torch.Tensor) -> torch.Tensor:
    """Finite-difference velocities of a window.

    Args:
        history: (H, N, D) positions, metres, oldest first.

    Returns:
        (H - 1, N, D) velocities, metres/step: ``history[1:] - history[:-1]``.
    """
    return history[1:] - history[:-1]


def next_position(history: torch.Tensor, acceleration: torch.Tensor) -> torch.Tensor:
    """Semi-implicit Euler step: ``p + (v_last + a)`` with ``v_last = p - p_prev``.

    Args:
        history: (H, N, D) positions, metres, H >= 2.
        acceleration: (N, D) metres/step^2.

    Returns:
        (N, D) next positions, metres.
    """
    current = history[-1]
    return current + (current - history[-2]) + acceleration


def target_acceleration(history: torch.Tensor, next_position: torch.Tensor) -> torch.Tensor:
    """The acceleration that :func:`next_position` turns into ``next_position`` (the inverse of that step).

    Args:
        history: (H, N, D) positions, metres, H >= 2.
        next_position: (N, D) positions of the following step, metres.

    Returns:
        (N, D) metres/step^2: ``next - 2 p + p_prev``, computed as ``(next - p) - (p - p_prev)``.
    """
    current = history[-1]
    return (next_position - current) - (current - history[-2])


def boundary_features(position: torch.Tensor, bounds: torch.Tensor, radius: float) -> torch.Tensor:
    """Distances to the walls of the box in connectivity radii, clipped to [-1, 1] (GNS).

    Args:
        position: (N, D) current positions, metres.
        bounds: (D, 2) ``[min, max]`` per axis, metres (or (N, D, 2): per-particle bounds, e.g. a batch's).
        radius: connectivity radius, metres.

    Returns:
        (N, 2D): ``clip((p - min) / r, -1, 1)`` for the D lower walls, then ``clip((max - p) / r, -1, 1)`` for the
        D upper walls. Particles farther than one radius from a wall see 1 for it.
    """
    bounds = bounds.to(position)
    lower = (position - bounds[..., 0]) / radius
    upper = (bounds[..., 1] - position) / radius
    return torch.cat([lower, upper], dim=-1).clamp(-1.0, 1.0)


def add_random_walk_noise(history: torch.Tensor, noise_std: float, generator: torch.Generator | None = None,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """GNS training noise: a random walk on the window's velocities, integrated into its positions.

    Each of the ``H - 1`` velocities gets the cumulative sum of i.i.d. normal increments of standard deviation
    ``noise_std / sqrt(H - 1)``, so the last velocity's noise has standard deviation ``noise_std``; the positions
    get the cumulative sum of the velocity noise (the oldest position is unchanged, the current one moves by
    ``noisy[-1] - history[-1]``).

    Keeping the target consistent (as GNS): shift the true next position by the same noise as the current
    position, ``next' = next + (noisy[-1] - history[-1])``, and train on ``target_acceleration(noisy, next')``.
    The target velocity ``next' - noisy[-1]`` is then the true one, so the model learns to undo the velocity
    noise, and ``next_position(noisy, target) == next'`` exactly (up to rounding).

    Args:
        history: (H, N, D) positions, metres.
        noise_std: standard deviation of the last velocity's noise, metres/step (0: return ``history``).
        generator: torch random generator (None: the global one); draws on ``history``'s device.
        mask: (N,) bool, particles that get noise (None: all). GNS leaves kinematic particles noise-free.

    Returns:
        (H, N, D) noisy positions, same dtype and device as ``history``.
    """
    if noise_std == 0 or history.shape[0] < 2:
        return history
    steps = history.shape[0] - 1
    increments = torch.randn(history[1:].shape, generator=generator, dtype=history.dtype, device=history.device)
    velocity_noise = torch.cumsum(increments * (noise_std / math.sqrt(steps)), dim=0)
    position_noise = torch.cat([torch.zeros_like(history[:1]), torch.cumsum(velocity_noise, dim=0)])
    if mask is not None:
        position_noise = position_noise * mask.to(history.device, history.dtype)[None, :, None]
    return history + position_noise


@dataclass(frozen=True)
class NormalizerStatistics:
    """A dataset's velocity and acceleration statistics, as a model receives them (and its checkpoint keeps them).

    The DataModule computes them (:attr:`~pipelines.simulation.data.SimulationDataModule.statistics`: the
    metadata's statistics widened by the training noise); the command line links them into the model's
    constructor.

    Attributes:
        vel_mean: (D,) mean velocity per axis, metres/step.
        vel_std: (D,) velocity standard deviation per axis, metres/step, > 0.
        acc_mean: (D,) mean acceleration per axis, metres/step^2.
        acc_std: (D,) acceleration standard deviation per axis, metres/step^2, > 0.
    """

    vel_mean: tuple[float, ...]
    vel_std: tuple[float, ...]
    acc_mean: tuple[float, ...]
    acc_std: tuple[float, ...]

    def __post_init__(self) -> None:
        d = len(self.vel_mean)
        if any(len(getattr(self, n)) != d for n in ("vel_std", "acc_mean", "acc_std")):
            raise ValueError(f"NormalizerStatistics: all statistics must have D = {d} values, got "
                             f"{[len(getattr(self, n)) for n in ('vel_std', 'acc_mean', 'acc_std')]}")

    @property
    def dim(self) -> int:
        """Number of axes D."""
        return len(self.vel_mean)


class Normalizer(torch.nn.Module):
    """Per-axis standardisation of velocities and accelerations (buffers, saved with the model).

    Buffers ``vel_mean``, ``vel_std``, ``acc_mean``, ``acc_std``: (D,) float32, metres/step and metres/step^2.
    :meth:`from_metadata` combines the data's standard deviations with the training noise as GNS does,
    ``std' = sqrt(std^2 + noise_std^2)`` (for both velocity and acceleration): the noise widens the distribution
    the model sees and keeps the scale away from 0 on (nearly) constant data.

    Args:
        vel_mean, vel_std, acc_mean, acc_std: (D,) statistics (stds are used as given: must be > 0).
    """

    def __init__(self, vel_mean: Any, vel_std: Any, acc_mean: Any, acc_std: Any):
        super().__init__()
        for name, value in (("vel_mean", vel_mean), ("vel_std", vel_std), ("acc_mean", acc_mean),
                            ("acc_std", acc_std)):
            value = torch.as_tensor(value, dtype=torch.float32).reshape(-1).clone()
            self.register_buffer(name, value)
        d = self.vel_mean.shape[0]
        if any(getattr(self, n).shape != (d,) for n in ("vel_std", "acc_mean", "acc_std")):
            raise ValueError(f"Normalizer: all statistics must have D = {d} values, got "
                             f"{[tuple(getattr(self, n).shape) for n in ('vel_std', 'acc_mean', 'acc_std')]}")
        if not bool((self.vel_std > 0).all() and (self.acc_std > 0).all()):
            raise ValueError("Normalizer: vel_std and acc_std must be > 0 (pass noise_std > 0 for constant data)")

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], noise_std: float) -> Normalizer:
        """Build from a GNS / LagrangeBench ``metadata.json`` dict.

        Args:
            metadata: with ``vel_mean``, ``vel_std``, ``acc_mean``, ``acc_std`` (D values each, per stored step:
                metres/step and metres/step^2, as GNS and LagrangeBench write them).
            noise_std: the training noise (:func:`add_random_walk_noise`), metres/step.

        Returns:
            The normalizer with ``vel_std = sqrt(vel_std^2 + noise_std^2)`` and ``acc_std`` likewise.

        Raises:
            KeyError: a statistic is missing. ValueError: inconsistent lengths or a zero std.
        """
        stats = {}
        for key in ("vel_mean", "vel_std", "acc_mean", "acc_std"):
            if key not in metadata:
                raise KeyError(f"Normalizer.from_metadata: missing {key!r}")
            stats[key] = torch.as_tensor(metadata[key], dtype=torch.float64).reshape(-1)
        for key in ("vel_std", "acc_std"):
            stats[key] = torch.sqrt(stats[key] ** 2 + float(noise_std) ** 2)
        return cls(**stats)

    @classmethod
    def from_statistics(cls, statistics: NormalizerStatistics) -> Normalizer:
        """Build from :class:`NormalizerStatistics` (used as given: stds must be > 0)."""
        return cls(statistics.vel_mean, statistics.vel_std, statistics.acc_mean, statistics.acc_std)

    def statistics(self) -> NormalizerStatistics:
        """The buffers as :class:`NormalizerStatistics` (float32 values as Python floats, exactly)."""
        return NormalizerStatistics(*(tuple(getattr(self, n).tolist())
                                      for n in ("vel_mean", "vel_std", "acc_mean", "acc_std")))

    @classmethod
    def identity(cls, dim: int) -> Normalizer:
        """Mean 0, std 1 on ``dim`` axes: a placeholder until real statistics are copied in (``load_state_dict``)."""
        return cls(torch.zeros(dim), torch.ones(dim), torch.zeros(dim), torch.ones(dim))

    @property
    def dim(self) -> int:
        """Number of axes D."""
        return self.vel_mean.shape[0]

    def normalize_velocity(self, velocity: torch.Tensor) -> torch.Tensor:
        """(..., D) metres/step -> (..., D) standardised."""
        return (velocity - self.vel_mean.to(velocity)) / self.vel_std.to(velocity)

    def normalize_acceleration(self, acceleration: torch.Tensor) -> torch.Tensor:
        """(..., D) metres/step^2 -> (..., D) standardised."""
        return (acceleration - self.acc_mean.to(acceleration)) / self.acc_std.to(acceleration)

    def denormalize_acceleration(self, acceleration: torch.Tensor) -> torch.Tensor:
        """(..., D) standardised -> (..., D) metres/step^2."""
        return acceleration * self.acc_std.to(acceleration) + self.acc_mean.to(acceleration)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def velocity_features(history: torch.Tensor, normalizer: Normalizer) -> torch.Tensor:
    """GNS node features from the velocities of a window: standardised, oldest first, flattened per particle.

    Args:
        history: (H, N, D) positions, metres.
        normalizer: supplies ``vel_mean`` / ``vel_std``.

    Returns:
        (N, (H - 1) D): particle i's row is ``[v_1 (D), ..., v_{H-1} (D)]`` standardised.
    """
    v = normalizer.normalize_velocity(velocities(history))
    return v.permute(1, 0, 2).reshape(history.shape[1], -1)


def load_statistics(model: torch.nn.Module, normalizer: Normalizer, radius: float) -> None:
    """Copy a dataset's normaliser statistics and connectivity radius (metres) into a model's ``normalizer`` and
    ``radius`` buffers (GNS and GIOROM), so that checkpoints carry them.

    Raises:
        ValueError: the normaliser's number of axes is not the model's ``dim``.
    """
    if normalizer.dim != model.dim:
        raise ValueError(f"{type(model).__name__}: normalizer has {normalizer.dim} axes, the model {model.dim}")
    model.normalizer.load_state_dict(normalizer.state_dict())
    model.radius.fill_(float(radius))


def node_features(history: torch.Tensor, type_features: torch.Tensor, bounds: torch.Tensor, radius: float,
                  normalizer: Normalizer) -> torch.Tensor:
    """GNS node features: standardised velocities, wall distances and the particle-type features, concatenated.

    Args:
        history: (H, N, D) positions, metres.
        type_features: (N, E) e.g. the particle-type embedding.
        bounds: (D, 2) ``[min, max]`` metres, or (N, D, 2) per particle.
        radius: metres, the unit of the wall distances.
        normalizer: velocity statistics.

    Returns:
        (N, (H-1) D + 2 D + E): :func:`velocity_features`, :func:`boundary_features`, ``type_features``.
    """
    position = history[-1]
    return torch.cat([velocity_features(history, normalizer), boundary_features(position, bounds, radius),
                      type_features.to(position.dtype)], dim=-1)


def edge_features(position: torch.Tensor, edge_index: torch.Tensor, radius: float) -> torch.Tensor:
    """GNS edge features: relative displacement and distance, in connectivity radii.

    Args:
        position: (N, D) current positions, metres.
        edge_index: (2, E) int64 ``[sender, receiver]``.
        radius: connectivity radius, metres.

    Returns:
        (E, D + 1): ``(p_sender - p_receiver) / r`` then ``|p_sender - p_receiver| / r``.
    """
    displacement = (position[edge_index[0]] - position[edge_index[1]]) / radius
    return torch.cat([displacement, displacement.norm(dim=-1, keepdim=True)], dim=-1)
