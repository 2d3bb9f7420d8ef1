"""A quiet, time-boxed ``Trainer.fit`` for the ``geo3d demo`` stages.

The demo stages train small models for a fixed wall-clock budget with no logger, checkpoints, progress bar or
validation: they report their own held-out numbers afterwards. One helper keeps those trainer settings in one place.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl


def timed_fit(model: pl.LightningModule, datamodule: pl.LightningDataModule, seconds: float, max_steps: int,
              accelerator: str = "auto") -> tuple[int, float]:
    """Train ``model`` for at most ``max_steps`` optimizer steps or ``seconds`` of wall-clock time.

    Args:
        model: the Lightning module (trained in place).
        datamodule: its data.
        seconds: wall-clock budget, seconds (Lightning's ``max_time``: checked after each step).
        max_steps: step budget.
        accelerator: Lightning accelerator (``"auto"`` takes a GPU when there is one).

    Returns:
        ``(steps, seconds)``: the optimizer steps taken and the wall-clock seconds of the fit.
    """
    trainer = pl.Trainer(max_steps=max_steps, max_time={"seconds": seconds}, accelerator=accelerator, devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    return trainer.global_step, time.perf_counter() - start
