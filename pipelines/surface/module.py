"""The learned TSDF refinement (LightningModule) and the refined reconstruction of a scan.

The network (:class:`~pipelines.surface.unet.SparseUNet3d`) sees the fused voxels of a scan (TSDF, weight,
colour) plus the unobserved voxels within ``dilation`` voxels of the fused surface band
(:func:`~pipelines.surface.data.candidate_voxels`: where holes are) and predicts, per voxel, a corrected TSDF and a
keep logit. Loss: L1 between the predicted and the true TSDF (both in truncation units, clamped to [-1, 1]), with
the observed voxels weighted ``loss.observed_sdf_weight`` relative to the unobserved ones, times
``loss.sdf_weight``; plus binary cross-entropy of the keep logit against "inside the true surface's truncation band",
times ``loss.occupancy_weight``. The settings are typed groups (frozen dataclasses: :class:`NetworkSettings`,
:class:`LossWeights`, :class:`Optimisation`, :class:`Extraction`, :class:`Evaluation`), nested by group in the YAML.

:func:`refine_volume` writes the prediction back into the fused voxel-block grid (observed voxels with weight >=
``extraction.trust_weight`` keep their fused TSDF; dropped voxels get weight 0; kept unobserved ones weight 1) and
Open3D's marching cubes extracts the mesh, so raw and refined meshes come out of the same extractor (welded
vertices, colours, no cracks). Validation reports point-to-mesh Chamfer and F-score
(``geo3d.metrics.mesh_metrics``) of both the raw fusion and the refinement against the ground-truth mesh, the
F-score threshold a fraction of each scan's diagonal (which the batches carry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from geo3d.errors import InputError
from geo3d.io import read_mesh
from geo3d.io.checkpoint import regroup_hparams
from geo3d.metrics.distributed import SampleMeans
from geo3d.metrics.geometry import canonical_mesh, mesh_metrics
from geo3d.schedule import step_one_cycle
from geo3d.types import Mesh
from pipelines.surface.data import candidate_voxels
from pipelines.surface.fusion import TSDFVolume, fuse_rgbd
from pipelines.surface.unet import SparseUNet3d, make_input


@dataclass(frozen=True)
class NetworkSettings:
    """The sparse U-Net's size (:class:`~pipelines.surface.unet.SparseUNet3d`).

    Attributes:
        base_channels: channels at full resolution (level l has ``base_channels * 2**l``).
        levels: stride-2 downsamplings; the coarsest grid has stride ``2**levels`` voxels.
    """

    base_channels: int = 16
    levels: int = 3

    def __post_init__(self) -> None:
        if self.base_channels < 1 or self.levels < 1:
            raise ValueError(f"network: base_channels and levels must be >= 1, got {self.base_channels}, "
                             f"{self.levels}")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the training loss terms (the TSDF L1 is in truncation units).

    Attributes:
        sdf_weight: weight of the TSDF L1 term.
        occupancy_weight: weight of the keep-logit binary cross-entropy term.
        observed_sdf_weight: weight of the TSDF L1 on voxels fusion observed, relative to the unobserved ones
            (1: all alike; small when ``extraction.trust_weight`` keeps the fused TSDF there anyway).
    """

    sdf_weight: float = 1.0
    occupancy_weight: float = 0.5
    observed_sdf_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("sdf_weight", "occupancy_weight", "observed_sdf_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"loss.{name}: expected a weight >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Optimisation:
    """AdamW with a one-cycle learning-rate schedule over ``trainer.max_steps`` (1000 steps when unset; any count
    from 1 up: :func:`geo3d.schedule.step_one_cycle`, 10 % warm-up).

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
    """

    lr: float = 2e-3
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise ValueError(f"optimisation: expected lr > 0 and weight_decay >= 0, got {self.lr!r}, "
                             f"{self.weight_decay!r}")


@dataclass(frozen=True)
class Extraction:
    """How :func:`refine_volume` turns the network's output into a mesh (its defaults).

    Attributes:
        keep_threshold: keep probability above which a voxel is kept at extraction.
        trust_weight: voxels fused from at least this many observations keep their fused TSDF (the network
            still decides whether they are kept); None: the network's TSDF everywhere.
    """

    keep_threshold: float = 0.5
    trust_weight: float | None = None


@dataclass(frozen=True)
class Evaluation:
    """The validation metrics (raw fusion and refinement against the ground-truth mesh).

    Attributes:
        eval_points: surface samples per mesh.
        fscore_fraction: F-score threshold as a fraction of the scan's diagonal (0.0025: 0.25 %).
    """

    eval_points: int = 20000
    fscore_fraction: float = 0.0025

    def __post_init__(self) -> None:
        if not (self.eval_points >= 1 and self.fscore_fraction > 0):
            raise ValueError(f"evaluation: expected eval_points >= 1 and fscore_fraction > 0, got "
                             f"{self.eval_points!r}, {self.fscore_fraction!r}")


SETTINGS_GROUPS = {"network": NetworkSettings, "loss": LossWeights, "optimisation": Optimisation,
                   "extraction": Extraction, "evaluation": Evaluation}
"""The constructor's settings groups (argument name -> dataclass), for :meth:`SurfaceRefiner.upgrade_hparams`."""

# Checkpoints hold the hyper-parameters, these dataclasses among them; torch.load(weights_only=True) (Lightning's
# first read of a --ckpt_path) rebuilds only allow-listed classes.
torch.serialization.add_safe_globals(list(SETTINGS_GROUPS.values()))


class SurfaceRefiner(pl.LightningModule):
    """Sparse 3D U-Net refinement of fused TSDF voxels.

    Args:
        network: the U-Net's size.
        loss: loss term weights.
        optimisation: AdamW learning rate and weight decay.
        extraction: keep threshold and trust weight, the defaults of :func:`refine_volume`.
        evaluation: validation metric settings.
        dilation: the refinement also predicts the unobserved voxels within this many voxels of the fused surface
            band (:func:`pipelines.surface.data.candidate_voxels`), so it can close holes. In ``geo3d fit`` it is
            not a model setting: it comes from the data's ``dilation`` (a link in ``geo3d/cli/lightning.py``), so
            training data and model always agree, and the checkpoint carries it for inference.
    """

    def __init__(self, network: NetworkSettings = NetworkSettings(), loss: LossWeights = LossWeights(),
                 optimisation: Optimisation = Optimisation(), extraction: Extraction = Extraction(),
                 evaluation: Evaluation = Evaluation(), dilation: int = 0):
        super().__init__()
        if dilation < 0:
            raise ValueError(f"dilation: expected voxels >= 0, got {dilation}")
        self.network_settings, self.loss_weights, self.optimisation = network, loss, optimisation
        self.extraction, self.evaluation, self.dilation = extraction, evaluation, dilation
        self.save_hyperparameters()
        self._eval_means = SampleMeans()  # validation metrics per scan, exact under DDP
        self.net = SparseUNet3d(in_channels=5, base_channels=network.base_channels, levels=network.levels,
                                out_channels=2)
        self.levels = network.levels

    @staticmethod
    def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
        """Group the flat hyper-parameters of a checkpoint written before the settings groups (12 flat arguments:
        ``base_channels, levels, lr, ..., trust_weight``) into this signature's groups; new checkpoints pass
        unchanged.

        Example:
            >>> SurfaceRefiner.upgrade_hparams({"base_channels": 8, "lr": 0.003, "dilation": 3})  # doctest: +ELLIPSIS
            {'dilation': 3, 'network': NetworkSettings(base_channels=8, levels=3), 'optimisation': Optimisation(...)}
        """
        return regroup_hparams(hparams, SETTINGS_GROUPS)

    def forward(self, coords: torch.Tensor, tsdf: torch.Tensor, weight: torch.Tensor, color: torch.Tensor,
                batch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Refine fused voxels.

        Args:
            coords: (M, 3) int64 global voxel indices (x, y, z).
            tsdf: (M,) float32 fused TSDF, truncation units.
            weight: (M,) float32 integration weights.
            color: (M, 3) float32 RGB in [0, 1].
            batch: (M,) int64 scan index, or None for one scan.

        Returns:
            ``(tsdf (M,) float32 in (-1, 1), keep_logit (M,) float32)``.
        """
        x, _ = make_input(coords, tsdf, weight, color, batch, levels=self.levels)
        out = self.net(x)
        return out[:, 0], out[:, 1]

    def _loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        pred, keep = self(batch["coords"], batch["tsdf"], batch["weight"], batch["color"], batch["batch"])
        observed = batch["weight"] > 0
        w = torch.where(observed, self.loss_weights.observed_sdf_weight, 1.0)
        sdf_l1 = ((pred - batch["target_tsdf"]).abs() * w).sum() / w.sum()
        raw_l1 = (batch["tsdf"] - batch["target_tsdf"]).abs().mean()
        bce = F.binary_cross_entropy_with_logits(keep, batch["occupancy"].float())
        loss = self.loss_weights.sdf_weight * sdf_l1 + self.loss_weights.occupancy_weight * bce
        return loss, {"sdf_l1": sdf_l1, "raw_sdf_l1": raw_l1, "occupancy_bce": bce}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, parts = self._loss(batch)
        n = len(batch["scan"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """One held-out scan (batch size 1): loss terms and raw vs refined mesh metrics, recorded by the scan's
        path; averaged over the scans at the epoch's end (every scan once under DDP)."""
        loss, parts = self._loss(batch)
        values = {"val/loss": loss, **{f"val/{k}": v for k, v in parts.items()}}
        scan = batch["scan"][0]
        gt = read_mesh(f"{scan}/mesh.ply")
        diag = batch["diagonal"][0]
        threshold = self.evaluation.fscore_fraction * diag
        volume = fuse_rgbd(scan, batch["voxel_size"][0], batch["sdf_trunc"][0], progress=False)
        points = self.evaluation.eval_points
        # canonical triangle order: marching cubes' order varies run to run, and with it the seeded sampling of
        # the metrics (the same numbers in every process: bench_surface.py does the same)
        raw = mesh_metrics(canonical_mesh(volume.extract_mesh()), gt, num_points=points, fscore_threshold=threshold)
        try:
            refined = mesh_metrics(canonical_mesh(refine_volume(self, volume)), gt, num_points=points,
                                   fscore_threshold=threshold)
            empty = 0.0
        except InputError:  # early in training the network may keep nothing: an empty mesh, not a crash
            refined, empty = {"chamfer": float("inf"), "fscore": 0.0}, 1.0
        values["val/refined_empty"] = empty
        for name, m in (("raw", raw), ("refined", refined)):
            values[f"val/{name}_chamfer_rel"] = m["chamfer"] / diag
            values[f"val/{name}_fscore"] = m["fscore"]
        values["val/chamfer_ratio"] = refined["chamfer"] / max(raw["chamfer"], 1e-12)
        self._eval_means.add(str(scan), values)

    def on_validation_epoch_end(self) -> None:
        means = self._eval_means.compute("val/num_samples")
        self.log("val/chamfer_ratio", means.pop("val/chamfer_ratio"), prog_bar=True, sync_dist=True)
        self.log_dict(means, sync_dist=True)  # the same on every rank: sync_dist only averages equal values

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.optimisation.lr, weight_decay=self.optimisation.weight_decay)
        sched = step_one_cycle(opt, self.trainer.max_steps, pct_start=0.1)  # by steps: the same on any machine
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@torch.no_grad()
def refine_volume(model: SurfaceRefiner, volume: TSDFVolume, keep_threshold: float | None = None,
                  trust_weight: float | None = None) -> Mesh:
    """Run the refinement on a fused volume in place and extract its mesh.

    Args:
        model: a trained :class:`SurfaceRefiner`.
        volume: the fused TSDF volume (its voxels are overwritten: refined TSDF, weight 0 for dropped voxels).
        keep_threshold: keep probability threshold (None: the model's ``extraction.keep_threshold``).
        trust_weight: voxels fused from at least this many observations keep their fused TSDF (the network
            still decides whether they are kept); None: the model's ``extraction.trust_weight`` (None there: the
            network's TSDF everywhere).

    Returns:
        The refined mesh (metres, colours from fusion).

    Raises:
        InputError: the network kept no voxel.
    """
    was_training = model.training
    model.eval()
    coords, tsdf, weight, color = candidate_voxels(*volume.voxels(), model.dilation)
    device = model.device
    pred, keep = model(coords.to(device), tsdf.to(device), weight.to(device), color.to(device))
    threshold = model.extraction.keep_threshold if keep_threshold is None else keep_threshold
    trust_weight = model.extraction.trust_weight if trust_weight is None else trust_weight
    if trust_weight is not None:
        pred = torch.where(weight.to(device) >= trust_weight, tsdf.to(device), pred)
    kept = torch.sigmoid(keep) > threshold
    if not bool(kept.any()):
        raise InputError(None, f"refine_volume: the network kept no voxel (keep probability <= {threshold} "
                               "everywhere): an untrained checkpoint, or one trained with other settings?")
    # kept voxels that fusion never observed get weight 1, so the extraction uses them
    new_weight = torch.where(kept, weight.to(device).clamp_min(1.0), torch.zeros_like(weight, device=device))
    volume.set_voxels(coords, pred.clamp(-1, 1).cpu(), new_weight.cpu())
    model.train(was_training)
    return volume.extract_mesh()
