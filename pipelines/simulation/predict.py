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


PROBE_SEED = 27
"""The seed of :func:`zoo_probe`'s particle window."""
PROBE_STEPS = 5
"""Rollout steps of :func:`zoo_probe`."""


@torch.no_grad()
def zoo_probe(module) -> dict[str, Any]:
    """The model zoo's probe: a few rollout steps of one fixed small particle window.

    The window is built in code: a jittered square (cube in 3D) lattice block of 20 x 20 particles (8 x 8 x 8 in
    3D) at the spacing of ``geo3d synth particles`` data with 2000 particles (7.7 mm in 2D, 29 mm in 3D), thrown
    at (0.3, -0.5) m/s (0 on a third axis) with 1 cm/s of per-particle noise (seed :data:`PROBE_SEED`), falling
    under gravity (9.81 m/s^2 along the last axis), sampled every 2.5 ms (the data's frame time) for the model's
    history, every particle of GNS type 8 (elastic) and the box ``[0, 1]^D``. It is the same input for every
    simulation model: the probe tells that code and weights give the stored output, not how good the physics is.
    The module rolls it out for :data:`PROBE_STEPS` steps in eval mode (GIOROM's sampling is seeded there).

    Args:
        module: a simulation LightningModule (:class:`~pipelines.simulation.module.GIOROMModule` or
            :class:`~pipelines.simulation.module.GNSModule`).

    Returns:
        ``positions``: (PROBE_STEPS, N, D) float32 predicted positions, metres.
    """
    import numpy as np

    from pipelines.simulation.rollout import rollout

    dim, history = module.model.dim, module.model.history
    side, spacing = (20, 0.12 / 2000) if dim == 2 else (8, 0.05 / 2000)
    spacing = spacing ** (1.0 / dim)
    rng = np.random.default_rng(PROBE_SEED)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * dim, indexing="ij"), -1).reshape(-1, dim)
    start = 0.5 + (grid - (side - 1) / 2 + rng.uniform(-0.1, 0.1, grid.shape)) * spacing
    velocity = np.array([0.3, -0.5, 0.0][:dim]) + rng.normal(0.0, 0.01, grid.shape)
    gravity = np.zeros(dim)
    gravity[-1] = -9.81
    times = (np.arange(history) - (history - 1)) * 0.0025
    positions = start + velocity * times[:, None, None] + 0.5 * gravity * times[:, None, None] ** 2
    window = torch.from_numpy(positions).float()
    types = torch.full((window.shape[1],), 8, dtype=torch.int64)
    bounds = torch.tensor([[0.0, 1.0]] * dim)
    was_training = module.training
    module.eval()
    try:
        out = rollout(lambda w: module.model.step(w, types, bounds), window, PROBE_STEPS, bounds)
    finally:
        module.train(was_training)
    return {"positions": out.numpy()}
