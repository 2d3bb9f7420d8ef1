"""The simulation LightningModules: :class:`GNSModule` and :class:`GIOROMModule`, on one base class.

Both train a one-step simulator (:class:`~pipelines.simulation.gns.GNS`, :class:`~pipelines.simulation.giorom.GIOROM`)
on the noisy windows of a :class:`~pipelines.simulation.data.SimulationDataModule`: MSE between the predicted and
the target standardised acceleration, kinematic particles (type 3) masked out. :class:`SimulatorModule`, their base,
holds everything else they share: validation and test by rolling trajectories out (every particle) beside the
constant-velocity baseline and logging :func:`geo3d.metrics.simulation.rollout_metrics`, the full rollouts of
``predict`` (written by :class:`~pipelines.simulation.predict.RolloutWriter`), the Adam optimiser with GNS's
exponential decay, and the upgrade of checkpoints written before the settings were grouped.

Settings are typed groups (frozen dataclasses; YAML nests them by group and gives only non-defaults):
:class:`~pipelines.simulation.gns.NetworkSettings` (both), :class:`~pipelines.simulation.giorom.SamplingSettings`
and :class:`~pipelines.simulation.giorom.QuerySettings` (GIOROM), :class:`OptimSettings` and
:class:`EvaluationSettings` (both). What the model needs from the data (the number of axes ``dim``, the
connectivity ``radius`` and the normaliser ``statistics``) is computed by the DataModule from its files and
linked into the constructor by the command line (:mod:`geo3d.cli.lightning`), so the checkpoint's hyper-parameters
carry it too; code that builds a module in Python passes them, e.g.
``GIOROMModule(dim=dm.dim, radius=dm.radius, statistics=dm.statistics)``. No module reads ``trainer.datamodule``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from geo3d.io.checkpoint import regroup_hparams
from geo3d.metrics.distributed import SampleMeans
from geo3d.metrics.simulation import rollout_metrics
from pipelines.simulation.features import KINEMATIC_TYPE, Normalizer, NormalizerStatistics
from pipelines.simulation.giorom import GIOROM, QuerySettings, SamplingSettings, resolve_count
from pipelines.simulation.giorom import NETWORK as GIOROM_NETWORK
from pipelines.simulation.gns import GNS, NetworkSettings
from pipelines.simulation.rollout import RolloutError, constant_velocity_step, rollout


@dataclass(frozen=True)
class OptimSettings:
    """Adam with GNS's exponential learning-rate decay (the defaults are GNS's).

    Attributes:
        lr: learning rate at step 0.
        lr_final: learning rate reached at ``trainer.max_steps`` (at step 100000 when the trainer sets no
            ``max_steps``), kept after it.
    """

    lr: float = 1e-4
    lr_final: float = 1e-6


@dataclass(frozen=True)
class EvaluationSettings:
    """Validation, test and predict rollouts.

    Attributes:
        val_rollout_steps: steps rolled out per validation trajectory.
        test_rollout_steps: steps rolled out per test (and predict) trajectory (None: to the end).
        val_windows: clean one-step windows per validation trajectory for ``val/loss``.
        particle_mass: particle mass for the kinetic-energy error, kg.
    """

    val_rollout_steps: int = 20
    test_rollout_steps: int | None = None
    val_windows: int = 16
    particle_mass: float = 1.0


# Checkpoints hold these in their hyper-parameters; torch.load(weights_only=True) rebuilds only allow-listed classes.
torch.serialization.add_safe_globals([NetworkSettings, SamplingSettings, QuerySettings, OptimSettings,
                                      EvaluationSettings, NormalizerStatistics])


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not math.isnan(v)}


class SimulatorModule(pl.LightningModule):
    """Training step, rollout evaluation, prediction and optimiser shared by the simulation modules.

    A subclass builds ``self.model`` (a module with ``history``, ``normalizer``, ``radius`` and
    ``step(history, particle_types, bounds)``), calls :meth:`_set_statistics`, and defines :meth:`one_step_loss`
    and ``forward``. ``upgrade_hparams`` uses its ``HPARAM_GROUPS`` and ``HPARAM_RENAMES``.

    Args:
        optim: the optimiser.
        evaluation: validation / test rollouts.
    """

    model: GNS | GIOROM
    HPARAM_GROUPS: dict[str, type] = {}
    HPARAM_RENAMES: dict[str, tuple[str, str]] = {}

    def __init__(self, optim: OptimSettings, evaluation: EvaluationSettings):
        super().__init__()
        self.optim, self.evaluation = optim, evaluation
        self._eval_means = SampleMeans()  # validation/test metrics per trajectory, exact under DDP

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """Upgrade the hyper-parameters of a checkpoint written before the typed settings (a no-op on newer ones):
        flat settings move into their groups, and the class path of a ``geo3d fit`` checkpoint moves from
        ``pipelines.simulation.gns`` / ``.giorom`` to this module. :func:`geo3d.io.checkpoint.load_module`
        calls it.

        Example:
            >>> GNSModule.upgrade_hparams({"dim": 2, "latent": 64, "lr": 1e-3, "lr_final": 1e-5})["optim"]
            OptimSettings(lr=0.001, lr_final=1e-05)
        """
        out = regroup_hparams(hparams, cls.HPARAM_GROUPS, cls.HPARAM_RENAMES)
        if out.get("_class_path") in (f"pipelines.simulation.gns.{cls.__name__}",
                                      f"pipelines.simulation.giorom.{cls.__name__}"):
            out["_class_path"] = f"{cls.__module__}.{cls.__name__}"
        return out

    def _set_statistics(self, statistics: NormalizerStatistics | None) -> None:
        """Copy the data's normaliser statistics (when given) into the model's buffers."""
        if statistics is not None:
            if statistics.dim != self.model.dim:
                raise ValueError(f"{type(self).__name__}: statistics have {statistics.dim} axes but dim is "
                                 f"{self.model.dim} (the data's number of axes)")
            self.model.set_statistics(Normalizer.from_statistics(statistics), float(self.model.radius))

    def on_fit_start(self) -> None:
        """Refuse to train without the data's radius and statistics (the placeholders would train silently)."""
        if self.hparams.get("radius") is None or self.hparams.get("statistics") is None:
            raise ValueError(f"{type(self).__name__}: training needs the data's connectivity radius and normaliser "
                             "statistics: pass radius=dm.radius, statistics=dm.statistics (geo3d fit links them)")

    def one_step_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """MSE of the standardised acceleration over non-kinematic particles and axes (scalar)."""
        raise NotImplementedError

    def _masked_mse(self, pred: torch.Tensor, target_acceleration: torch.Tensor,
                    particle_types: torch.Tensor) -> torch.Tensor:
        """Mean of ``(pred - standardised target)^2`` over the non-kinematic rows (0 with a graph when none).

        Args:
            pred: (Q, D) standardised accelerations.
            target_acceleration: (Q, D) metres/step^2.
            particle_types: (Q,) int64.
        """
        err = ((pred - self.model.normalizer.normalize_acceleration(target_acceleration)) ** 2)[
            particle_types != KINEMATIC_TYPE]
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
        starts = np.unique(np.linspace(0, count - 1, min(self.evaluation.val_windows, count)).round().astype(int))
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
        """One trajectory's one-step loss and rollout metrics (model and constant-velocity baseline), recorded by
        its index; averaged over the trajectories at the epoch's end (every trajectory once under DDP)."""
        windows = self._clean_windows(traj)
        if windows is None:
            return
        values: dict[str, Any] = {f"{prefix}/loss": self.one_step_loss(windows)}
        mass = self.evaluation.particle_mass
        try:
            pred, baseline, true = self.rollout_trajectory(traj, steps)
        except RolloutError:  # early in training: NaN positions. Log inf so that checkpoint monitors still see keys
            values[f"{prefix}/rollout_failed"] = 1.0
            available = traj["positions"].shape[0] - self.model.history
            s = available if steps is None else min(steps, available)
            shape_only = rollout_metrics(torch.zeros(s, 1, 1), torch.zeros(s, 1, 1))  # which keys this length has
            metrics, baseline_metrics = {k: math.inf for k, v in shape_only.items() if not math.isnan(v)}, {}
        else:
            values[f"{prefix}/rollout_failed"] = 0.0
            metrics, baseline_metrics = rollout_metrics(pred, true, mass), rollout_metrics(baseline, true, mass)
        values.update({f"{prefix}/{key}": value for key, value in _finite(metrics).items()})
        values.update({f"{prefix}/baseline_{key}": value for key, value in _finite(baseline_metrics).items()})
        self._eval_means.add(int(traj["trajectory"]), values)  # its index in the split (TrajectoryDataset)

    def _log_eval_means(self, prefix: str) -> None:
        means = self._eval_means.compute(f"{prefix}/num_samples")
        if f"{prefix}/mse_5" in means:
            self.log(f"{prefix}/mse_5", means.pop(f"{prefix}/mse_5"), prog_bar=True, sync_dist=True)
        self.log_dict(means, sync_dist=True)  # the same on every rank: sync_dist only averages equal values

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.evaluation.val_rollout_steps)

    def on_validation_epoch_end(self) -> None:
        self._log_eval_means("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.evaluation.test_rollout_steps)

    def on_test_epoch_end(self) -> None:
        self._log_eval_means("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Full rollout of a test trajectory, on the CPU: ``{"pred", "baseline", "true"}`` (S, N, D) metres, the
        input ``"history"`` (H, N, D) metres, ``"particle_types"`` (N,), ``"bounds"`` (D, 2) metres, ``"dt"``
        seconds (None when the batch has none), ``"trajectory"`` its index and ``"model"`` the class name."""
        pred, baseline, true = self.rollout_trajectory(batch, self.evaluation.test_rollout_steps)
        return {"pred": pred.cpu(), "baseline": baseline.cpu(), "true": true.cpu(),
                "history": batch["positions"][: self.model.history].cpu(),
                "particle_types": batch["particle_types"].cpu(), "bounds": batch["bounds"].cpu(),
                "dt": batch.get("dt"), "trajectory": batch.get("trajectory", batch_idx),
                "model": type(self.model).__name__}

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.optim.lr)
        total = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else 100_000
        ratio = self.optim.lr_final / self.optim.lr
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: ratio ** min(step / total, 1.0))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class GNSModule(SimulatorModule):
    """Training and evaluation of :class:`~pipelines.simulation.gns.GNS`.

    Args:
        dim: number of axes D (``geo3d fit`` links it from the data).
        network: the graph network (GNS's sizes by default).
        optim: the optimiser (GNS's learning rates by default).
        evaluation: validation / test rollouts.
        radius: connectivity radius, metres (``geo3d fit`` links the data's; None: a placeholder until
            :meth:`~pipelines.simulation.gns.GNS.set_statistics` or a checkpoint's buffers set it).
        statistics: the data's normaliser statistics (linked like ``radius``; None: identity until set).
    """

    HPARAM_GROUPS = {"network": NetworkSettings, "optim": OptimSettings, "evaluation": EvaluationSettings}

    def __init__(self, dim: int = 2, network: NetworkSettings = NetworkSettings(),
                 optim: OptimSettings = OptimSettings(), evaluation: EvaluationSettings = EvaluationSettings(),
                 radius: float | None = None, statistics: NormalizerStatistics | None = None):
        super().__init__(optim, evaluation)
        self.save_hyperparameters()
        self.model = GNS(dim, network, radius=radius if radius is not None else 1.0)
        self._set_statistics(statistics)

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
        return self._masked_mse(pred, batch["target_acceleration"], batch["particle_types"])


class GIOROMModule(SimulatorModule):
    """Training (sparse) and full-resolution evaluation of :class:`~pipelines.simulation.giorom.GIOROM`.

    Training: every noisy window of the datamodule is re-sampled (a fresh random FPS start or random subset), the
    processor runs on the samples, and the loss is the MSE of the standardised acceleration at the query points:
    all particles of the window, or ``train_queries`` of them drawn at random (kinematic particles masked out).
    Evaluation is :class:`SimulatorModule`'s: one-step ``val/loss`` on clean windows at all particles, rollouts of
    every particle (deterministic sampling, seed ``sampling.seed``), ``rollout_metrics`` (``mse_1/5/20/full``,
    ``chamfer``, ``ekin_error``) and the constant-velocity ``baseline_*``.

    Args:
        dim: number of axes D (``geo3d fit`` links it from the data).
        network: the processor on the samples (latent 64, 4 steps by default).
        sampling: the samples and the sparse graph's radius.
        query: the kernel-integral query stage.
        acceleration_features: feed every node its standardised past accelerations (see
            :class:`~pipelines.simulation.giorom.GIOROM`).
        train_queries: query points per training batch: None = all particles, an int a count, a float in (0, 1]
            a fraction of the batch's particles.
        optim: the optimiser (lr 1e-3 decaying to 1e-5 by default).
        evaluation: validation / test rollouts.
        radius: connectivity radius, metres (``geo3d fit`` links the data's; None: a placeholder until set).
        statistics: the data's normaliser statistics (linked like ``radius``; None: identity until set).
    """

    HPARAM_GROUPS = {"network": NetworkSettings, "sampling": SamplingSettings, "query": QuerySettings,
                     "optim": OptimSettings, "evaluation": EvaluationSettings}
    HPARAM_RENAMES = {"latent": ("network", "latent"), "sample": ("sampling", "method"),
                      "sample_seed": ("sampling", "seed"), "query_neighbors": ("query", "neighbors"),
                      "query_latent": ("query", "latent"), "query_layers": ("query", "layers")}

    def __init__(self, dim: int = 2, network: NetworkSettings = GIOROM_NETWORK,
                 sampling: SamplingSettings = SamplingSettings(), query: QuerySettings = QuerySettings(),
                 acceleration_features: bool = True, train_queries: int | float | None = None,
                 optim: OptimSettings = OptimSettings(lr=1e-3, lr_final=1e-5),
                 evaluation: EvaluationSettings = EvaluationSettings(), radius: float | None = None,
                 statistics: NormalizerStatistics | None = None):
        super().__init__(optim, evaluation)
        self.save_hyperparameters()
        if train_queries is not None:
            resolve_count(train_queries, 1)  # validates
        self.train_queries = train_queries
        self.model = GIOROM(dim, network, sampling, query, radius=radius if radius is not None else 1.0,
                            acceleration_features=acceleration_features)
        self._set_statistics(statistics)

    def forward(self, history: torch.Tensor, particle_types: torch.Tensor, bounds: torch.Tensor,
                query_history: torch.Tensor | None = None, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Accelerations (Q, D), metres/step^2 (:meth:`GIOROM.predict_acceleration`)."""
        return self.model.predict_acceleration(history, particle_types, bounds, query_history, batch=batch)

    def one_step_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """MSE of the standardised acceleration over non-kinematic query particles and axes (scalar).

        In training mode with ``train_queries`` set, the queries are a random subset of the batch's particles;
        otherwise all of them.

        Args:
            batch: :func:`~pipelines.simulation.data.collate_windows` output (target in metres/step^2).
        """
        history, types, bounds = batch["history"], batch["particle_types"], batch["bounds"]
        items = batch.get("batch")
        target = batch["target_acceleration"]
        kwargs: dict[str, Any] = {"batch": items}
        if self.training and self.train_queries is not None:
            n = history.shape[1]
            chosen = torch.randperm(n)[:resolve_count(self.train_queries, n)].to(history.device)
            types_q, target = types[chosen], target[chosen]
            kwargs.update(query_history=history[:, chosen], query_types=types_q,
                          query_batch=items[chosen] if items is not None else None)
        else:
            types_q = types
        pred = self.model(history, types, bounds, **kwargs)
        return self._masked_mse(pred, target, types_q)
