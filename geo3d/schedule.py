"""One-cycle learning-rate schedules that finish inside a wall-clock budget.

The tiny CPU configs train for "at most N minutes here", and machines differ: a step-count schedule
(torch's ``OneCycleLR`` over ``max_steps``) that does not fit in the trainer's ``max_time`` is cut off
before its learning rate comes down, which costs more than the missing steps. :func:`budget_one_cycle`
anneals over whichever runs out first, the steps or the time: its progress is
``max(step / max_steps, elapsed / (ANNEAL_SHARE * max_time))``. On a machine fast enough for all the
steps it is the step schedule; on a slower one it is the same curve, compressed into the time there is.
Lightning's own schedulers are step-based, hence this module.

Two forms of the one idea: :func:`budget_one_cycle` (a ``LambdaLR``: learning rate only; the depth pipeline's,
trained with it) and :class:`BudgetOneCycleLR` (torch's ``OneCycleLR`` itself, momentum cycling included, made to
jump ahead in time; detection's, which must stay exactly its old schedule when the time does not bind). They differ
in where a step sits on the curve by at most one step; merging them would change the depth model's schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

ANNEAL_SHARE = 0.97  # the time schedule reaches its end at this share of max_time (the rest: last checkpoint)
DEFAULT_STEPS = 1000  # progress by steps when the trainer sets neither max_steps nor max_time


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


def trainer_progress(trainer, step: int) -> float:
    """How far a Lightning run is, in [0, 1]: ``max(step / max_steps, elapsed / (ANNEAL_SHARE * max_time))``.

    Args:
        trainer: a ``pytorch_lightning.Trainer`` (its ``max_steps`` and, when ``max_time`` is set, its ``Timer``
            callback's training time, which includes the validation runs inside training).
        step: optimizer steps done.

    Returns:
        The progress; by steps over ``DEFAULT_STEPS`` when the trainer sets neither limit.
    """
    from pytorch_lightning.callbacks import Timer

    max_steps = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
    progress = step / max_steps if max_steps else 0.0
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is not None:
        elapsed = timer.time_elapsed("train")
        budget = elapsed + (timer.time_remaining("train") or 0.0)
        if budget > 0:
            progress = max(progress, elapsed / (ANNEAL_SHARE * budget))
    elif max_steps is None:
        progress = step / DEFAULT_STEPS
    return min(progress, 1.0)


def budget_one_cycle(optimizer: torch.optim.Optimizer, progress: Callable[[int], float], pct_start: float = 0.05,
                     ) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler: each group's learning rate is its initial ``lr`` times
    :func:`one_cycle_factor` of ``progress(step)`` (e.g. ``lambda s: trainer_progress(trainer, s)``).

    Args:
        optimizer: its groups' ``lr`` are the peaks.
        progress: step -> share of the run done.
        pct_start: share of the run spent warming up.

    Returns:
        A ``LambdaLR``; step it every optimizer step (Lightning: ``"interval": "step"``).
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: one_cycle_factor(progress(step), pct_start))


class BudgetOneCycleLR(torch.optim.lr_scheduler.OneCycleLR):
    """torch's ``OneCycleLR`` (learning rate and momentum), whose position in the cycle jumps ahead to the share of
    the time budget used when that is further than the steps taken.

    While the steps lead, it is ``OneCycleLR`` exactly (same learning rates and momenta, step for step); a run that
    its ``max_time`` would cut short is compressed into the time instead, so it still ends annealed.

    Args:
        optimizer: as ``OneCycleLR``'s.
        time_progress: () -> share of the time budget used, in [0, 1] (e.g. ``lambda: trainer_progress(trainer,
            0)``, which is 0 without ``max_time``).
        **kwargs: ``OneCycleLR``'s (``max_lr``, ``total_steps``, ``pct_start``, ``div_factor``, ...).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, time_progress: Callable[[], float], **kwargs):
        self.time_progress = time_progress
        super().__init__(optimizer, **kwargs)

    def state_dict(self) -> dict:
        """OneCycleLR's state without ``time_progress`` (a closure over the trainer: not saved in checkpoints)."""
        state = super().state_dict()
        state.pop("time_progress", None)
        return state

    def get_lr(self) -> list[float]:
        steps = self.last_epoch
        by_time = round(min(max(self.time_progress(), 0.0), 1.0) * (self.total_steps - 1))
        self.last_epoch = max(steps, by_time)
        try:
            return super().get_lr()
        finally:
            self.last_epoch = steps
