"""Lightning callback: always evaluate after the last training step.

Lightning validates at epoch ends (or every ``val_check_interval`` steps), so a run that stops on
``max_steps`` in the middle of an epoch ends without any evaluation (for example
``geo3d fit ... --trainer.max_steps 4``). Lightning does validate when a stop is *requested*
(``trainer.should_stop``, as early stopping and the ``max_time`` timer do), so this callback requests
the stop on the last step, and the final validation runs over the whole validation split.
"""

from __future__ import annotations

import pytorch_lightning as pl


class ValidateOnLastStep(pl.Callback):
    """Request a stop on the last training step so that Lightning runs a final validation."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        last = trainer.estimated_stepping_batches
        if trainer.global_step >= last and trainer.enable_validation:
            trainer.should_stop = True
