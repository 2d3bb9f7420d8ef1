"""Autoregressive rollouts of a one-step simulator, and the constant-velocity baseline.

A step function maps the current window of ``HISTORY`` positions (H, N, D) to the next positions (N, D);
:func:`rollout` feeds its outputs back into a rolling window for a number of steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class RolloutError(RuntimeError):
    """The step function produced NaN/infinite positions or a wrong shape (the message names the step)."""


def constant_velocity_step(history: torch.Tensor) -> torch.Tensor:
    """Baseline step: keep the last velocity, ``p + (p - p_prev)``.

    Args:
        history: (H, N, D) positions, metres, H >= 2.

    Returns:
        (N, D) next positions, metres.
    """
    return history[-1] + (history[-1] - history[-2])


def rollout(step_fn: Callable[[torch.Tensor], torch.Tensor], initial_history: torch.Tensor, steps: int,
            bounds: torch.Tensor | None = None, kinematic_mask: torch.Tensor | None = None,
            kinematic_positions: torch.Tensor | None = None) -> torch.Tensor:
    """Roll a one-step simulator out for ``steps`` steps.

    Each step calls ``step_fn(window)`` on the last H positions (the initial history, then the predictions),
    clamps the result into ``bounds`` (so no particle ever leaves the box), and appends it to the window.

    Args:
        step_fn: (H, N, D) positions, metres -> (N, D) next positions, metres.
        initial_history: (H, N, D) the first window, metres.
        steps: number of steps to predict, >= 0.
        bounds: (D, 2) ``[min, max]`` per axis, metres, or None (no clamping).
        kinematic_mask: (N,) bool, particles whose positions are prescribed (GNS kinematic particles) rather
            than predicted; needs ``kinematic_positions``.
        kinematic_positions: (steps, N, D) the prescribed positions (e.g. the ground truth), metres.

    Returns:
        (steps, N, D) predicted positions, metres, same dtype and device as ``initial_history``.

    Raises:
        RolloutError: ``step_fn`` returned a wrong shape or NaN/infinite values (the message names the step,
            1-based, and how many particles).
    """
    if initial_history.dim() != 3 or initial_history.shape[0] < 2:
        raise ValueError(f"rollout: initial_history must be (H >= 2, N, D), got {tuple(initial_history.shape)}")
    if (kinematic_mask is None) != (kinematic_positions is None):
        raise ValueError("rollout: kinematic_mask and kinematic_positions: give both or neither")
    if kinematic_positions is not None and kinematic_positions.shape[0] < steps:
        raise ValueError(f"rollout: kinematic_positions has {kinematic_positions.shape[0]} steps, need {steps}")
    _, n, d = initial_history.shape
    window = initial_history
    if bounds is not None:
        bounds = bounds.to(initial_history)
        if bounds.shape != (d, 2):
            raise ValueError(f"rollout: bounds must be ({d}, 2), got {tuple(bounds.shape)}")
    out = []
    for step in range(steps):
        position = step_fn(window)
        if position.shape != (n, d):
            raise RolloutError(f"rollout: step {step + 1} of {steps}: step_fn returned shape "
                               f"{tuple(position.shape)}, expected ({n}, {d})")
        bad = ~torch.isfinite(position).all(dim=-1)
        if bool(bad.any()):
            raise RolloutError(f"rollout: step {step + 1} of {steps}: NaN or infinite positions for "
                               f"{int(bad.sum())} of {n} particles")
        position = position.to(initial_history)
        if bounds is not None:
            position = torch.maximum(torch.minimum(position, bounds[:, 1]), bounds[:, 0])
        if kinematic_mask is not None:
            position = torch.where(kinematic_mask[:, None].to(position.device),
                                   kinematic_positions[step].to(position), position)
        out.append(position)
        window = torch.cat([window[1:], position[None]])
    if not out:
        return initial_history.new_zeros((0, n, d))
    return torch.stack(out)
