"""The one-cycle learning-rate schedule by steps, for schedulers that Lightning steps every optimizer step.

Every training config trains for a fixed number of steps (``trainer.max_steps``, seeded), so the same config gives
the same model on any machine; ``max_time`` is only a guard well above the measured time. A run the guard cuts
short therefore ends un-annealed (and says so in its log), which is the honest outcome: the schedule never
stretches or compresses with the machine's speed. (Before issue 27 it did: the tiny configs annealed in their
wall-clock budget, so a slower or busier machine trained fewer steps and gave a weaker model.)

:func:`one_cycle_factor` is the shape of torch's ``OneCycleLR`` as a function of progress; :func:`step_one_cycle`
wraps it in a ``LambdaLR`` (learning rate only, per parameter group: the depth pipeline's). Detection uses torch's
``OneCycleLR`` itself (momentum cycling too).
"""

from __future__ import annotations

import math

import torch

DEFAULT_STEPS = 1000  # progress by steps over this many when the trainer sets no max_steps


def one_cycle_factor(progress: float, pct_start: float = 0.05, div_factor: float = 25.0,
                     final_div_factor: float = 1e4) -> float:
    """The learning rate over its peak at ``progress`` in [0, 1] of a one-cycle schedule.

    The shape of torch's ``OneCycleLR`` (cosine annealing, two phases): from ``1 / div_factor`` up to 1 over
    the first ``pct_start`` of the run, then down to ``1 / (div_factor * final_div_factor)`` at its end;
    progress outside [0, 1] is clamped.

    Args:
        progress: share of the run done, 0 to 1.
        pct_start: share of the run spent warming up.
        div_factor, final_div_factor: as OneCycleLR's.

    Returns:
        The factor, in (0, 1].
    """
    progress = min(max(progress, 0.0), 1.0)
    start, peak, end = 1.0 / div_factor, 1.0, 1.0 / (div_factor * final_div_factor)
    if progress < pct_start:
        a, b, t = start, peak, progress / pct_start
    else:
        a, b, t = peak, end, (progress - pct_start) / (1.0 - pct_start)
    return b + (a - b) / 2.0 * (1.0 + math.cos(math.pi * t))


def step_progress(max_steps: int | None, step: int) -> float:
    """How far a run is, in [0, 1]: ``step / max_steps`` (over :data:`DEFAULT_STEPS` when ``max_steps`` is unset).

    Args:
        max_steps: the trainer's ``max_steps`` (``-1`` or ``None``: unset).
        step: optimizer steps done.

    Returns:
        The progress, clamped to 1.
    """
    total = max_steps if max_steps is not None and max_steps > 0 else DEFAULT_STEPS
    return min(step / total, 1.0)


def step_one_cycle(optimizer: torch.optim.Optimizer, max_steps: int | None, pct_start: float = 0.05,
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler: each group's learning rate is its initial ``lr`` times
    :func:`one_cycle_factor` of :func:`step_progress`.

    Args:
        optimizer: its groups' ``lr`` are the peaks.
        max_steps: the run's length in optimizer steps (the trainer's ``max_steps``).
        pct_start: share of the run spent warming up.

    Returns:
        A ``LambdaLR``; step it every optimizer step (Lightning: ``"interval": "step"``).
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: one_cycle_factor(step_progress(max_steps, step), pct_start))
