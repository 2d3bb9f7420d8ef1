"""``geo3d predict`` for the simulation models: one rollout file per test trajectory.

The simulation configs list :class:`RolloutWriter` among the trainer callbacks, so::

    geo3d predict --config configs/simulation/giorom_elastic_tiny_cpu.yaml --ckpt_path CKPT

rolls every test trajectory out to its end (:meth:`~pipelines.simulation.module.SimulatorModule.predict_step`;
GIOROM evaluates every particle) and writes ``<output_dir>/rollout_<i>.h5`` (:mod:`geo3d.io.rollout`: prediction,
ground truth and the constant-velocity baseline), which ``geo3d view rollout_<i>.h5 [--out rollout.gif]`` plays.
The checkpoint is checked by :func:`geo3d.io.checkpoint.check_checkpoint` before Lightning loads its weights; to
load one in Python, use :func:`geo3d.io.checkpoint.load_module` (``load_module(path, GIOROMModule)``), which also
upgrades checkpoints written before the settings were grouped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from geo3d.io.rollout import Rollout, write_rollout


def rollout_from_prediction(prediction: dict[str, Any], dt: float) -> Rollout:
    """A :class:`~geo3d.io.rollout.Rollout` from :meth:`~pipelines.simulation.module.SimulatorModule.predict_step`'s
    output.

    Args:
        prediction: ``{"history": (H, N, D), "pred"/"true"/"baseline": (S, N, D) metres, "particle_types": (N,),
            "bounds": (D, 2) metres, "model": str}``.
        dt: seconds between frames (used when the prediction carries no ``"dt"``).

    Returns:
        The rollout: each version is the H input frames followed by its S steps, so frame 0 is the first input.
    """
    history = prediction["history"].float()

    def whole(steps: torch.Tensor) -> torch.Tensor:
        return torch.cat([history, steps.to(history)])

    return Rollout(whole(prediction["pred"]), prediction["particle_types"].long(), prediction["bounds"].float(),
                   float(prediction.get("dt") or dt), history.shape[0], whole(prediction["true"]),
                   whole(prediction["baseline"]), str(prediction.get("model", "")))


class RolloutWriter(BasePredictionWriter):
    """Writes ``geo3d predict`` rollouts: ``output_dir/rollout_<trajectory:05d>.h5``, atomically.

    Args:
        output_dir: the folder (created).
        dt: seconds between frames when the data does not say (LagrangeBench/GNS data always does).
    """

    def __init__(self, output_dir: str = "out/simulation/rollouts", dt: float = 1.0):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.dt = dt

    def write_on_batch_end(self, trainer, pl_module, prediction: dict, batch_indices, batch, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        index = int(prediction.get("trajectory", batch_idx))
        path = write_rollout(self.output_dir / f"rollout_{index:05d}.h5", rollout_from_prediction(prediction, self.dt))
        print(f"wrote {path}")
