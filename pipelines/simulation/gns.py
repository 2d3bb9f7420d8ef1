"""GNS (Sanchez-Gonzalez et al. 2020, "Learning to Simulate Complex Physics with Graph Networks") on PyTorch.

The model sees a window of ``HISTORY`` positions of every particle and predicts each particle's acceleration:

* graph: all pairs of particles within the connectivity radius at the current step (:func:`ops.radius_graph`,
  per batch item, with self loops as GNS), edges ``[sender, receiver]``;
* node features: the 5 standardised previous velocities (5 D), the clipped distances to the 2 D walls in radii
  (:func:`~pipelines.simulation.features.boundary_features`), and a learned 16-d embedding of the particle type;
* edge features: relative displacement ``(p_s - p_r) / r`` and distance ``|p_s - p_r| / r``;
* network: :class:`~pipelines.simulation.layers.EncodeProcessDecode` (latent 128, 10 unshared message-passing
  steps by default), decoding the standardised acceleration;
* integration: semi-implicit Euler on the de-standardised acceleration (metres/step^2).

Every input is relative (velocities, wall distances, displacements), so the model is translation invariant.

:class:`GNSModule` trains it on noisy one-step windows (:class:`~pipelines.simulation.data.SimulationDataModule`):
MSE between the predicted and the target standardised acceleration, kinematic particles (type 3) masked out; it
validates by rolling out validation trajectories and logs :func:`geo3d.metrics.simulation.rollout_metrics` beside
those of the constant-velocity baseline.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from geo3d.errors import InputError
from geo3d.metrics.simulation import rollout_metrics
from ops.neighbors import radius_graph
from pipelines.simulation.features import (
    HISTORY,
    KINEMATIC_TYPE,
    Normalizer,
    edge_features,
    load_statistics,
    next_position,
    node_features,
)
from pipelines.simulation.layers import EncodeProcessDecode
from pipelines.simulation.rollout import RolloutError, constant_velocity_step, rollout


def particle_bounds(bounds: torch.Tensor, batch: torch.Tensor | None, n: int) -> torch.Tensor:
    """Bounds for the wall features: (D, 2) as is, or (B, D, 2) gathered per particle to (N, D, 2) by ``batch``."""
    if bounds.dim() == 2:
        return bounds
    if batch is None:
        if bounds.shape[0] != 1:
            raise ValueError(f"GNS: bounds of shape {tuple(bounds.shape)} need a batch vector")
        return bounds[0]
    return bounds[batch]


class GNS(nn.Module):
    """Graph network simulator: windows of positions -> accelerations.

    Args:
        dim: number of axes D (2 or 3).
        latent: latent width of nodes and edges.
        steps: message-passing steps.
        mlp_layers: hidden layers per MLP.
        num_particle_types: size of the type embedding table (GNS: 9); type ids must be below it.
        type_embedding: width of the particle-type embedding.
        radius: connectivity radius, metres (a buffer: saved with the weights; :meth:`set_statistics` updates it).
        history: window length H.
        max_neighbors: keep at most this many neighbours per particle (None: all within the radius).

    Buffers: ``radius`` (scalar) and ``normalizer.*`` (D,) statistics, identity until :meth:`set_statistics`.
    """

    def __init__(self, dim: int = 2, latent: int = 128, steps: int = 10, mlp_layers: int = 2,
                 num_particle_types: int = 9, type_embedding: int = 16, radius: float = 0.015,
                 history: int = HISTORY, max_neighbors: int | None = None):
        super().__init__()
        self.dim, self.history, self.max_neighbors = dim, history, max_neighbors
        self.num_particle_types = num_particle_types
        self.normalizer = Normalizer.identity(dim)
        self.register_buffer("radius", torch.tensor(float(radius), dtype=torch.float64))
        self.type_embedding = nn.Embedding(num_particle_types, type_embedding)
        node_in = (history - 1) * dim + 2 * dim + type_embedding
        self.net = EncodeProcessDecode(node_in, dim + 1, latent, steps, dim, mlp_layers)

    def set_statistics(self, normalizer: Normalizer, radius: float) -> None:
        """Copy a dataset's normaliser statistics and connectivity radius into the buffers (:func:`load_statistics`)."""
        load_statistics(self, normalizer, radius)

    def graph(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
              batch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input graph of a window.

        Args:
            history: (H, N, D) positions, metres.
            particle_types: (N,) int64 type ids.
            bounds: (D, 2) ``[min, max]`` metres, or (B, D, 2) per batch item with ``batch``.
            batch: (N,) int64 batch item of each particle (None: one item).

        Returns:
            ``(node_features (N, (H-1) D + 2 D + type_embedding), edge_index (2, E) [sender, receiver],
            edge_features (E, D + 1))``.
        """
        if history.dim() != 3 or history.shape[0] != self.history or history.shape[2] != self.dim:
            raise ValueError(f"GNS: history must be ({self.history}, N, {self.dim}), got {tuple(history.shape)}")
        n = history.shape[1]
        if particle_types.shape != (n,):
            raise ValueError(f"GNS: particle_types must be ({n},), got {tuple(particle_types.shape)}")
        if n and (int(particle_types.min()) < 0 or int(particle_types.max()) >= self.num_particle_types):
            raise InputError(None, f"GNS: particle types must lie in [0, {self.num_particle_types}), got "
                                   f"[{int(particle_types.min())}, {int(particle_types.max())}]: raise "
                                   "num_particle_types")
        radius = float(self.radius)
        position = history[-1]
        edge_index = radius_graph(position.detach(), radius, max_neighbors=self.max_neighbors, batch=batch,
                                  loop=True)
        nodes = node_features(history, self.type_embedding(particle_types.to(position.device)),
                              particle_bounds(bounds, batch, n), radius, self.normalizer)
        return nodes, edge_index, edge_features(position, edge_index, radius)

    def forward(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
                batch: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised accelerations (N, D) (see :meth:`graph` for the arguments)."""
        nodes, edge_index, edges = self.graph(history, particle_types, bounds, batch)
        return self.net(nodes, edge_index, edges)

    def predict_acceleration(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
                             batch: torch.Tensor | None = None) -> torch.Tensor:
        """Accelerations in metres/step^2.

        Args:
            history: (H, N, D) positions, metres.
            particle_types: (N,) int64.
            bounds: (D, 2) metres, or (B, D, 2) with ``batch``.
            batch: (N,) int64 or None.

        Returns:
            (N, D) metres/step^2.
        """
        return self.normalizer.denormalize_acceleration(self(history, particle_types, bounds, batch))

    def step(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
             batch: torch.Tensor | None = None) -> torch.Tensor:
        """Next positions (N, D), metres: semi-implicit Euler on :meth:`predict_acceleration`."""
        return next_position(history, self.predict_acceleration(history, particle_types, bounds, batch))


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not math.isnan(v)}


class GNSModule(pl.LightningModule):
    """Training and evaluation of :class:`GNS` on a :class:`~pipelines.simulation.data.SimulationDataModule`.

    At ``setup`` the module copies the datamodule's normaliser (statistics widened by its ``noise_std``) and
    connectivity radius into the model's buffers, so a checkpoint carries them.

    Args:
        dim, latent, steps, mlp_layers, num_particle_types, type_embedding, max_neighbors: see :class:`GNS`.
        radius: connectivity radius, metres (None: the datamodule's).
        lr: Adam learning rate at step 0.
        lr_final: learning rate reached at ``trainer.max_steps`` (exponential decay, as GNS).
        val_rollout_steps: steps rolled out per validation trajectory.
        test_rollout_steps: steps rolled out per test trajectory (None: to the end of the trajectory).
        val_windows: clean one-step windows per validation trajectory for ``val/loss``.
        particle_mass: particle mass for the kinetic-energy error, kg.
    """

    def __init__(self, dim: int = 2, latent: int = 128, steps: int = 10, mlp_layers: int = 2,
                 num_particle_types: int = 9, type_embedding: int = 16, max_neighbors: int | None = None,
                 radius: float | None = None, lr: float = 1e-4, lr_final: float = 1e-6, val_rollout_steps: int = 20,
                 test_rollout_steps: int | None = None, val_windows: int = 16, particle_mass: float = 1.0):
        super().__init__()
        self.save_hyperparameters()
        self.model = GNS(dim, latent, steps, mlp_layers, num_particle_types, type_embedding,
                         radius=radius if radius is not None else 1.0, max_neighbors=max_neighbors)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "normalizer"):
            return
        if dm.dim != self.hparams.dim:
            raise InputError(dm.metadata_path, f"the data is {dm.dim}D but the model has dim={self.hparams.dim}")
        radius = self.hparams.radius if self.hparams.radius is not None else dm.radius
        self.model.set_statistics(dm.normalizer(), radius)

    def forward(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
                batch: torch.Tensor | None = None) -> torch.Tensor:
        """Accelerations (N, D), metres/step^2 (:meth:`GNS.predict_acceleration`)."""
        return self.model.predict_acceleration(history, particle_types, bounds, batch)

    def one_step_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """MSE of the standardised acceleration over non-kinematic particles and axes (scalar).

        Args:
            batch: :func:`~pipelines.simulation.data.collate_windows` output (target in metres/step^2).
        """
        pred = self.model(batch["history"], batch["particle_types"], batch["bounds"], batch.get("batch"))
        target = self.model.normalizer.normalize_acceleration(batch["target_acceleration"])
        mask = batch["particle_types"] != KINEMATIC_TYPE
        err = ((pred - target) ** 2)[mask]
        return err.mean() if err.numel() else pred.sum() * 0.0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.one_step_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["num_particles"]))
        return loss

    def _clean_windows(self, traj: dict[str, Any]) -> dict[str, Any] | None:
        positions, h = traj["positions"], self.model.history
        count = positions.shape[0] - h
        if count < 1:
            return None
        starts = np.unique(np.linspace(0, count - 1, min(self.hparams.val_windows, count)).round().astype(int))
        n = positions.shape[1]
        history = torch.cat([positions[s:s + h] for s in starts], dim=1)
        nxt = torch.cat([positions[s + h] for s in starts])
        target = (nxt - history[-1]) - (history[-1] - history[-2])
        return {"history": history, "target_acceleration": target,
                "particle_types": traj["particle_types"].repeat(len(starts)),
                "batch": torch.arange(len(starts), device=positions.device).repeat_interleave(n),
                "bounds": traj["bounds"][None].expand(len(starts), -1, -1)}

    def rollout_trajectory(self, traj: dict[str, Any], steps: int | None) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor]:
        """Roll the model and the constant-velocity baseline out on a trajectory.

        Args:
            traj: ``{"positions": (T, N, D), "particle_types": (N,), "bounds": (D, 2)}``.
            steps: steps to predict (None or more than available: to the end, ``T - H``).

        Returns:
            ``(pred (S, N, D), baseline (S, N, D), true (S, N, D))`` metres; kinematic particles follow the truth.

        Raises:
            RolloutError: NaN positions (naming the step).
        """
        positions, types, bounds = traj["positions"], traj["particle_types"], traj["bounds"]
        h = self.model.history
        available = positions.shape[0] - h
        steps = available if steps is None else min(steps, available)
        true = positions[h:h + steps]
        kinematic = types == KINEMATIC_TYPE
        kin = {"kinematic_mask": kinematic, "kinematic_positions": true} if bool(kinematic.any()) else {}
        pred = rollout(lambda w: self.model.step(w, types, bounds), positions[:h], steps, bounds, **kin)
        baseline = rollout(constant_velocity_step, positions[:h], steps, bounds, **kin)
        return pred, baseline, true

    def _evaluate(self, traj: dict[str, Any], prefix: str, steps: int | None) -> None:
        windows = self._clean_windows(traj)
        if windows is None:
            return
        self.log(f"{prefix}/loss", self.one_step_loss(windows), batch_size=1)
        mass = self.hparams.particle_mass
        try:
            pred, baseline, true = self.rollout_trajectory(traj, steps)
        except RolloutError:  # early in training: NaN positions. Log inf so that checkpoint monitors still see keys
            self.log(f"{prefix}/rollout_failed", 1.0, batch_size=1)
            available = traj["positions"].shape[0] - self.model.history
            s = available if steps is None else min(steps, available)
            shape_only = rollout_metrics(torch.zeros(s, 1, 1), torch.zeros(s, 1, 1))  # which keys this length has
            metrics, baseline_metrics = {k: math.inf for k, v in shape_only.items() if not math.isnan(v)}, {}
        else:
            self.log(f"{prefix}/rollout_failed", 0.0, batch_size=1)
            metrics, baseline_metrics = rollout_metrics(pred, true, mass), rollout_metrics(baseline, true, mass)
        for key, value in _finite(metrics).items():
            self.log(f"{prefix}/{key}", value, batch_size=1, prog_bar=key == "mse_5")
        for key, value in _finite(baseline_metrics).items():
            self.log(f"{prefix}/baseline_{key}", value, batch_size=1)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.hparams.val_rollout_steps)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.hparams.test_rollout_steps)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Full rollout of a test trajectory, on the CPU: ``{"pred", "baseline", "true"}`` (S, N, D) metres, the
        input ``"history"`` (H, N, D) metres, ``"particle_types"`` (N,), ``"bounds"`` (D, 2) metres, ``"dt"``
        seconds (None when the batch has none), ``"trajectory"`` its index and ``"model"`` the class name."""
        pred, baseline, true = self.rollout_trajectory(batch, self.hparams.test_rollout_steps)
        return {"pred": pred.cpu(), "baseline": baseline.cpu(), "true": true.cpu(),
                "history": batch["positions"][: self.model.history].cpu(),
                "particle_types": batch["particle_types"].cpu(), "bounds": batch["bounds"].cpu(),
                "dt": batch.get("dt"), "trajectory": batch.get("trajectory", batch_idx),
                "model": type(self.model).__name__}

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        total = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else 100_000
        ratio = self.hparams.lr_final / self.hparams.lr
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: ratio ** min(step / total, 1.0))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
