"""A Lightning callback that records what every DDP rank trained with, to check that the ranks agree.

Under DDP every rank must apply the same update with the same learning rate, so after training all ranks hold the
same weights. :class:`RankAgreement` writes, per rank, the learning rates at every training batch and a sha256 of the
final weights to ``<out_dir>/rank<R>.json``; two ranks agree when their files are equal. Use it to check a
multi-node set-up::

    geo3d fit --config CONFIG --trainer.strategy ddp --trainer.devices 2 \\
        --trainer.callbacks+=geo3d.rank_agreement.RankAgreement --trainer.callbacks.out_dir out/ranks
    cmp out/ranks/rank0.json out/ranks/rank1.json
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from geo3d.io.atomic import atomic_write_text


def weights_sha256(module: pl.LightningModule, buffers: bool = False) -> str:
    """sha256 over the module's parameters (``buffers``: its buffers instead, e.g. batch-norm running statistics),
    hashing names, dtypes, shapes and bytes in name order."""
    digest = hashlib.sha256()
    tensors = module.named_buffers() if buffers else module.named_parameters()
    for name, tensor in sorted(tensors):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # the raw bytes, any dtype
    return digest.hexdigest()


class RankAgreement(pl.Callback):
    """Write each rank's learning rates (at every training batch) and final weights digest to ``out_dir``.

    Args:
        out_dir: folder for ``rank<R>.json``: ``{"rank", "world_size", "global_step", "lrs": [[step, lr of each
            param group], ...], "weights_sha256"}``.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.lrs: list[list[Any]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        for optimizer in trainer.optimizers:
            self.lrs.append([trainer.global_step, [group["lr"] for group in optimizer.param_groups]])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "global_step": trainer.global_step,
                  "lrs": self.lrs, "weights_sha256": weights_sha256(pl_module),
                  "buffers_sha256": weights_sha256(pl_module, buffers=True)}
        atomic_write_text(self.out_dir / f"rank{trainer.global_rank}.json", json.dumps(record, indent=1) + "\n")
