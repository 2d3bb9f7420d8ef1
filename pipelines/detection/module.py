"""``SecondDetector``: the SECOND voxel detector as a LightningModule, with its typed settings groups.

points -> ``ops.voxelize.hard_voxelize`` -> VFE (mean or stacked) -> sparse 3D backbone (stride 8)
-> height compression -> 2D backbone + upsampling neck -> anchor head -> losses (training) or
decoding + rotated NMS (evaluation). Validation and test run the KITTI evaluation over the whole
split: every rank keeps its frames' ground truth and detections, the lists are gathered to all ranks
(``torch.distributed.all_gather_object``) and de-duplicated by frame id (DistributedSampler pads the
last batch with repeats), so every rank computes and logs the same APs. Prediction writes KITTI
result files (``geo3d.io.kitti.write_label``, score in column 16) and BEV images when ``result_dir``
is set.

The settings come in frozen dataclass groups (:class:`VoxelSettings`, :class:`BackboneSettings`,
:class:`AnchorSettings`, :class:`LossSettings`, :class:`PostProcessSettings`, :class:`OptimSettings`,
:class:`RunSettings`) that LightningCLI fills from the YAML's nested keys (``model.init_args.anchors.sizes``).
``class_names`` and ``point_cloud_range`` are written once, in the data module's config, and linked into the
model by ``geo3d.cli.lightning``. Checkpoints written with the old flat signature load through
``geo3d.io.checkpoint.load_module``, which calls :meth:`SecondDetector.upgrade_hparams`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from geo3d.io.atomic import atomic_path
from geo3d.io.checkpoint import regroup_hparams
from geo3d.io.kitti import boxes_lidar_to_objects, write_label
from geo3d.types import Boxes3D
from ops.voxelize import grid_size, hard_voxelize
from pipelines.detection.anchors import generate_anchors
from pipelines.detection.backbone3d import SparseBackbone3D
from pipelines.detection.bev import BEVBackbone, height_compression
from pipelines.detection.box_coder import ResidualCoder
from pipelines.detection.head import AnchorHead
from pipelines.detection.kitti_eval import format_kitti_table, kitti_eval
from pipelines.detection.losses import detection_losses, direction_targets
from pipelines.detection.postprocess import decode_frame
from pipelines.detection.refine import ground_offsets, ground_tolerances, refine_vertical
from pipelines.detection.render import render_bev
from pipelines.detection.targets import assign_targets
from pipelines.detection.vfe import build_vfe


def _as_tuples(settings: Any, *names: str) -> None:
    """Store the list-valued fields ``names`` of a frozen dataclass as (nested) tuples, so that a group built
    from Python lists equals one built by the CLI and stays immutable."""

    def freeze(value: Any) -> Any:
        return tuple(freeze(v) for v in value) if isinstance(value, (list, tuple)) else value

    for name in names:
        value = getattr(settings, name)
        if value is not None:
            object.__setattr__(settings, name, freeze(value))


def _group(cls: type, value: Any) -> Any:
    """A settings group: ``value`` itself, or the dataclass ``cls`` built from a mapping (a checkpoint's dict)."""
    return cls(**value) if isinstance(value, Mapping) else value


@dataclass(frozen=True)
class VoxelSettings:
    """How points become voxels (``ops.voxelize.hard_voxelize``).

    Attributes:
        size: ``[vx, vy, vz]`` voxel size, metres; the x/y grid must be a multiple of 8 cells.
        max_points_per_voxel: points kept per voxel.
        max_voxels_train: voxels kept per frame in training.
        max_voxels_eval: voxels kept per frame in evaluation.
        num_point_features: point feature size (4: ``x, y, z, reflectance``).
    """

    size: tuple[float, float, float] = (0.05, 0.05, 0.1)
    max_points_per_voxel: int = 5
    max_voxels_train: int = 16000
    max_voxels_eval: int = 40000
    num_point_features: int = 4

    def __post_init__(self) -> None:
        _as_tuples(self, "size")


@dataclass(frozen=True)
class BackboneSettings:
    """The voxel feature encoder, the sparse 3D backbone and the 2D BEV backbone with its upsampling neck.

    Attributes:
        vfe: ``"mean"`` (SECOND) or ``"stacked"`` (VoxelNet VFE layers).
        vfe_filters: output sizes of the stacked VFE layers.
        channels: ``[c1, c2, c3, c4, c_out]`` of the sparse 3D backbone.
        z_paddings: z padding of its three strided stages.
        bev_layer_nums: 2D blocks per BEV stage (see ``bev.BEVBackbone``).
        bev_layer_strides: stride of each BEV stage.
        bev_num_filters: channels of each BEV stage.
        bev_upsample_strides: upsampling factor of each stage's neck branch.
        bev_num_upsample_filters: channels of each neck branch.
        bn_momentum: BatchNorm momentum everywhere (OpenPCDet: 0.01; short CPU schedules need ~0.1 for the
            running statistics to catch up with the weights).
    """

    vfe: str = "mean"
    vfe_filters: tuple[int, ...] = (32, 64)
    channels: tuple[int, int, int, int, int] = (16, 32, 64, 64, 128)
    z_paddings: tuple[int, int, int] = (1, 1, 0)
    bev_layer_nums: tuple[int, ...] = (5, 5)
    bev_layer_strides: tuple[int, ...] = (1, 2)
    bev_num_filters: tuple[int, ...] = (128, 256)
    bev_upsample_strides: tuple[int, ...] = (1, 2)
    bev_num_upsample_filters: tuple[int, ...] = (256, 256)
    bn_momentum: float = 0.01

    def __post_init__(self) -> None:
        _as_tuples(self, "vfe_filters", "channels", "z_paddings", "bev_layer_nums", "bev_layer_strides",
                   "bev_num_filters", "bev_upsample_strides", "bev_num_upsample_filters")


@dataclass(frozen=True)
class AnchorSettings:
    """Anchors, their target assignment and the box encoding of the head (OpenPCDet's KITTI values).

    Attributes:
        sizes: ``[dx, dy, dz]`` metres per class, in ``class_names`` order.
        bottom_heights: anchor bottom z (metres) per class.
        rotations: anchor yaws (radians), shared by all classes.
        matched_thresholds: BEV IoU for a positive anchor, per class.
        unmatched_thresholds: BEV IoU below which an anchor is negative, per class.
        angle_encoding: ``"residual"`` (with the sin-difference loss) or ``"sincos"``.
        num_dir_bins: direction classifier bins (0 disables it).
        dir_offset: direction-bin offset, radians.
    """

    sizes: tuple[tuple[float, float, float], ...] = ((3.9, 1.6, 1.56), (0.8, 0.6, 1.73), (1.76, 0.6, 1.73))
    bottom_heights: tuple[float, ...] = (-1.78, -0.6, -0.6)
    rotations: tuple[float, ...] = (0.0, 1.57079633)
    matched_thresholds: tuple[float, ...] = (0.6, 0.5, 0.5)
    unmatched_thresholds: tuple[float, ...] = (0.45, 0.35, 0.35)
    angle_encoding: str = "residual"
    num_dir_bins: int = 2
    dir_offset: float = 0.78539816

    def __post_init__(self) -> None:
        _as_tuples(self, "sizes", "bottom_heights", "rotations", "matched_thresholds", "unmatched_thresholds")


@dataclass(frozen=True)
class LossSettings:
    """Loss weights (:func:`~pipelines.detection.losses.detection_losses`).

    Attributes:
        weights: ``[classification, box, direction]`` weights.
        code_weights: factors on each box code entry's regression loss (``x, y, z, dx, dy, dz`` then the angle
            entries; OpenPCDet's ``code_weights``), None for all 1.
        hard_negative_weight: classification-loss factor of background anchors scoring at least
            ``hard_negative_score`` (1 disables it).
        hard_negative_score: the score from which a background anchor is a hard negative.
    """

    weights: tuple[float, float, float] = (1.0, 2.0, 0.2)
    code_weights: tuple[float, ...] | None = None
    hard_negative_weight: float = 1.0
    hard_negative_score: float = 0.3

    def __post_init__(self) -> None:
        _as_tuples(self, "weights", "code_weights")
        if len(self.weights) != 3:
            raise ValueError(f"model.losses.weights: expected [cls, box, dir], got {list(self.weights)}")


@dataclass(frozen=True)
class PostProcessSettings:
    """Decoding, NMS and the optional vertical refinement of validation, test and prediction.

    Attributes:
        score_thresh: minimum detection score.
        nms_thresh: rotated BEV IoU threshold of NMS.
        nms_pre_max: boxes kept before NMS.
        nms_post_max: boxes kept after NMS.
        per_class_nms: NMS within each class instead of across classes.
        vertical_refinement: move each detection's bottom onto the ground around it and clip its top to the scan
            (:func:`~pipelines.detection.refine.refine_vertical`).
        off_ground_score_factor: with ``vertical_refinement``, the scores of detections whose bottom lies farther
            above or below the ground around them than ``refine.ground_tolerances`` (0.3 m; 0.9 % of the range
            beyond 33 m) are multiplied by this (0 drops them: a car stands on the ground); 1 leaves scores alone.
    """

    score_thresh: float = 0.1
    nms_thresh: float = 0.01
    nms_pre_max: int = 4096
    nms_post_max: int = 500
    per_class_nms: bool = False
    vertical_refinement: bool = False
    off_ground_score_factor: float = 1.0

    def __post_init__(self) -> None:
        factor = self.off_ground_score_factor
        if not (math.isfinite(factor) and 0 <= factor <= 1):
            raise ValueError(f"model.postprocess.off_ground_score_factor: expected a value in [0, 1], got {factor}")
        if factor != 1 and not self.vertical_refinement:
            raise ValueError("model.postprocess.off_ground_score_factor needs model.postprocess.vertical_refinement: "
                             "true (it uses the refinement's ground estimates)")


@dataclass(frozen=True)
class RunSettings:
    """Options of a run that change neither the weights nor the detections; not saved in checkpoints (Lightning's
    CLI lets a ``--ckpt_path`` checkpoint's hyper-parameters override the command line).

    Attributes:
        num_threads: ``torch.set_num_threads`` at setup (None keeps the default).
        log_images: BEV images logged per validation (0 disables).
        eval_classes: classes reported by the KITTI evaluation (None: ``class_names``).
    """

    num_threads: int | None = None
    log_images: int = 1
    eval_classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _as_tuples(self, "eval_classes")


@dataclass(frozen=True)
class OptimSettings:
    """AdamW with torch's one-cycle learning rate over the run's steps (``trainer.max_steps`` or ``max_epochs``).

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        div_factor: initial lr = ``lr / div_factor``.
        pct_start: fraction of the steps spent warming up.
    """

    lr: float = 0.003
    weight_decay: float = 0.01
    div_factor: float = 10.0
    pct_start: float = 0.4


SETTINGS_GROUPS: dict[str, type] = {"voxels": VoxelSettings, "backbone": BackboneSettings, "anchors": AnchorSettings,
                                    "losses": LossSettings, "postprocess": PostProcessSettings,
                                    "optim": OptimSettings, "runtime": RunSettings}
"""Constructor argument -> its settings dataclass."""
FLAT_RENAMES: dict[str, tuple[str, str]] = {
    "voxel_size": ("voxels", "size"), "backbone_channels": ("backbone", "channels"),
    "backbone_z_paddings": ("backbone", "z_paddings"), "anchor_sizes": ("anchors", "sizes"),
    "anchor_bottom_heights": ("anchors", "bottom_heights"), "anchor_rotations": ("anchors", "rotations"),
    "loss_weights": ("losses", "weights"),
}
"""Flat hyper-parameters of checkpoints written before the groups whose name changed: old key -> (group, field)."""

# Checkpoints hold the hyperparameters, these dataclasses among them; torch.load(weights_only=True), the default
# since torch 2.6 and what Lightning's CLI uses on a --ckpt_path, rebuilds only allow-listed classes.
torch.serialization.add_safe_globals([VoxelSettings, BackboneSettings, AnchorSettings, LossSettings,
                                      PostProcessSettings, OptimSettings, RunSettings])


class SecondDetector(pl.LightningModule):
    """SECOND (Yan et al. 2018) with OpenPCDet's KITTI hyperparameters as defaults.

    Args:
        class_names: classes to detect, in anchor order (the CLI links it from ``data.class_names``).
        point_cloud_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]`` metres (linked from
            ``data.point_cloud_range``).
        voxels: voxelization.
        backbone: VFE, sparse 3D backbone, BEV backbone and neck.
        anchors: anchors, target assignment and box encoding.
        losses: loss weights.
        postprocess: decoding, NMS, vertical refinement and the off-ground filter.
        optim: optimizer and learning-rate schedule.
        runtime: threads, logged images and evaluated classes (not saved in checkpoints).
        result_dir: where prediction writes ``<frame_id>.txt`` results and ``bev/<frame_id>.png``, or None
            (not saved in checkpoints).

    Raises:
        ValueError: a per-class setting without one value per class, ``code_weights`` of the wrong length or
            negative, a voxel grid that does not fit the range.

    Example:
        >>> model = SecondDetector(["Car"], [0.0, -12.8, -3.0, 25.6, 12.8, 1.0], VoxelSettings(size=(0.2, 0.2, 0.2)),
        ...                        BackboneSettings(channels=(4, 4, 4, 4, 8), z_paddings=(1, 1, 1),
        ...                                         bev_layer_nums=(1, 1), bev_num_filters=(8, 8),
        ...                                         bev_num_upsample_filters=(8, 8)),
        ...                        AnchorSettings(sizes=((3.9, 1.6, 1.56),), bottom_heights=(-1.78,),
        ...                                       matched_thresholds=(0.6,), unmatched_thresholds=(0.45,)))
        >>> model.anchors.shape  # 16 x 16 BEV cells (0.2 m voxels, stride 8) x 2 rotations
        torch.Size([512, 7])
        >>> model.hparams.anchors.sizes
        ((3.9, 1.6, 1.56),)
    """

    def __init__(
        self,
        class_names: Sequence[str] = ("Car", "Pedestrian", "Cyclist"),
        point_cloud_range: Sequence[float] = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0),
        voxels: VoxelSettings = VoxelSettings(),
        backbone: BackboneSettings = BackboneSettings(),
        anchors: AnchorSettings = AnchorSettings(),
        losses: LossSettings = LossSettings(),
        postprocess: PostProcessSettings = PostProcessSettings(),
        optim: OptimSettings = OptimSettings(),
        runtime: RunSettings = RunSettings(),
        result_dir: str | None = None,
    ):
        super().__init__()
        # Groups may come as the plain dicts a checkpoint stores (see on_save_checkpoint).
        voxels, backbone = _group(VoxelSettings, voxels), _group(BackboneSettings, backbone)
        anchors, losses = _group(AnchorSettings, anchors), _group(LossSettings, losses)
        postprocess, optim = _group(PostProcessSettings, postprocess), _group(OptimSettings, optim)
        self.runtime = _group(RunSettings, runtime)
        self.result_dir = result_dir
        # Run-time options stay out of the checkpoint: Lightning's CLI lets the hyperparameters stored in a
        # --ckpt_path checkpoint override the command line, so a stored result_dir would win over a new one.
        self.save_hyperparameters(ignore=["runtime", "result_dir"])
        # The groups as dataclasses, also under the CLI (which saves its config: plain dicts).
        self.hparams.update(voxels=voxels, backbone=backbone, anchors=anchors, losses=losses, postprocess=postprocess,
                            optim=optim)
        self.class_names = list(class_names)
        self.point_cloud_range = [float(v) for v in point_cloud_range]
        self.voxel_size = [float(v) for v in voxels.size]
        k = len(self.class_names)
        for name, value in (("sizes", anchors.sizes), ("bottom_heights", anchors.bottom_heights),
                            ("matched_thresholds", anchors.matched_thresholds),
                            ("unmatched_thresholds", anchors.unmatched_thresholds)):
            if len(value) != k:
                raise ValueError(f"model.anchors.{name}: expected one value per class ({k}: {self.class_names}), "
                                 f"got {len(value)}")
        nx, ny, nz = (int(v) for v in grid_size(self.voxel_size, self.point_cloud_range))

        self.coder = ResidualCoder(anchors.angle_encoding)
        if losses.code_weights is not None and (len(losses.code_weights) != self.coder.code_size
                                                or not all(math.isfinite(w) and w >= 0 for w in losses.code_weights)):
            raise ValueError(f"model.losses.code_weights: expected {self.coder.code_size} finite values >= 0 for "
                             f"angle_encoding {anchors.angle_encoding!r}, got {list(losses.code_weights)}")
        self.vfe = build_vfe(backbone.vfe, voxels.num_point_features, list(backbone.vfe_filters), self.voxel_size,
                             self.point_cloud_range, backbone.bn_momentum)
        self.backbone3d = SparseBackbone3D(self.vfe.out_channels, (nx, ny, nz), list(backbone.channels),
                                           list(backbone.z_paddings), backbone.bn_momentum)
        self.bev_backbone = BEVBackbone(self.backbone3d.bev_channels, list(backbone.bev_layer_nums),
                                        list(backbone.bev_layer_strides), list(backbone.bev_num_filters),
                                        list(backbone.bev_upsample_strides), list(backbone.bev_num_upsample_filters),
                                        backbone.bn_momentum)
        feature_size = (round(ny / 8 / self.bev_backbone.stride), round(nx / 8 / self.bev_backbone.stride))
        anchor_boxes, anchor_class = generate_anchors(self.point_cloud_range, feature_size,
                                                      [list(s) for s in anchors.sizes], list(anchors.rotations),
                                                      list(anchors.bottom_heights))
        h, w, a, _ = anchor_boxes.shape
        self.register_buffer("anchors", anchor_boxes.reshape(-1, 7), persistent=False)
        self.register_buffer("anchor_class", anchor_class.repeat(h * w), persistent=False)
        self.head = AnchorHead(self.bev_backbone.out_channels, a, k, self.coder.code_size, anchors.num_dir_bins)
        self._eval_records: list[tuple[str, list, list]] = []

    @staticmethod
    def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
        """Group the flat hyper-parameters of a checkpoint written before the settings groups.

        Called by :func:`geo3d.io.checkpoint.load_module`; a no-op on new checkpoints.

        Args:
            hparams: the checkpoint's ``hyper_parameters``.

        Returns:
            The hyper-parameters of the grouped signature.

        Example:
            >>> new = SecondDetector.upgrade_hparams({"class_names": ["Car"], "voxel_size": [0.16, 0.16, 0.2],
            ...                                       "lr": 0.01, "score_thresh": 0.2})
            >>> new["voxels"].size, new["optim"].lr, new["postprocess"].score_thresh
            ((0.16, 0.16, 0.2), 0.01, 0.2)
            >>> SecondDetector.upgrade_hparams(new) == new
            True
        """
        return regroup_hparams(hparams, SETTINGS_GROUPS, FLAT_RENAMES)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the settings groups as plain dicts: Lightning's CLI re-parses a ``--ckpt_path``'s hyper-parameters
        with jsonargparse, which takes dicts there but not dataclass instances (``__init__`` takes both)."""
        hparams = checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY)
        if hparams:
            checkpoint[self.CHECKPOINT_HYPER_PARAMS_KEY] = {
                k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in hparams.items()}

    # ------------------------------------------------------------------------------------------ model

    def forward(self, points: torch.Tensor, batch: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
        """Run the network.

        Args:
            points: (N, C) float32 ``x, y, z, reflectance`` metres, LiDAR frame.
            batch: (N,) int64 frame index of each point.
            batch_size: number of frames B.

        Returns:
            Head outputs ``cls`` (B, A_total, K), ``box`` (B, A_total, code), ``dir`` (B, A_total, bins),
            one row per anchor in ``self.anchors`` order.
        """
        vox = self.hparams.voxels
        max_voxels = vox.max_voxels_train if self.training else vox.max_voxels_eval
        with torch.no_grad():
            voxels, coords, num_points = hard_voxelize(points, batch, self.voxel_size, self.point_cloud_range,
                                                       vox.max_points_per_voxel, max_voxels)
        features = self.vfe(voxels, num_points, coords)
        x = self.backbone3d(features, coords, batch_size)
        x = self.bev_backbone(height_compression(x))
        return self.head(x)

    def compute_losses(self, preds: dict[str, torch.Tensor], gt_boxes: list[torch.Tensor],
                       gt_labels: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Assign anchor targets and compute the SECOND losses.

        Args:
            preds: head outputs of :meth:`forward`.
            gt_boxes: per frame (M_i, 7) float32 ground-truth boxes.
            gt_labels: per frame (M_i,) int64 class indices.

        Returns:
            ``loss`` and its terms (scalars).
        """
        anchors, losses = self.hparams.anchors, self.hparams.losses
        labels, boxes = [], []
        for b, l in zip(gt_boxes, gt_labels):
            t = assign_targets(self.anchors, self.anchor_class, b, l, list(anchors.matched_thresholds),
                               list(anchors.unmatched_thresholds))
            labels.append(t.labels)
            boxes.append(torch.where((t.labels > 0)[:, None], t.matched_boxes, self.anchors))
        labels = torch.stack(labels)
        matched = torch.stack(boxes)
        box_targets = self.coder.encode(matched, self.anchors[None])
        dir_targets = None
        if anchors.num_dir_bins > 0:
            dir_targets = direction_targets(matched[..., 6], anchors.dir_offset, anchors.num_dir_bins)
        w_cls, w_box, w_dir = losses.weights
        return detection_losses(preds, labels, box_targets, dir_targets,
                                sin_difference=anchors.angle_encoding == "residual",
                                cls_weight=w_cls, box_weight=w_box, dir_weight=w_dir,
                                hard_negative_weight=losses.hard_negative_weight,
                                hard_negative_score=losses.hard_negative_score, code_weights=losses.code_weights)

    def detect(self, preds: dict[str, torch.Tensor], points: torch.Tensor | None = None,
               batch: torch.Tensor | None = None) -> list[Boxes3D]:
        """Decode head outputs into per-frame detections (LiDAR frame).

        Args:
            preds: head outputs of :meth:`forward` for B frames.
            points: (N, C) float32 the points of the B frames, metres (needed by ``vertical_refinement``).
            batch: (N,) int64 frame index of each point.

        Returns:
            B :class:`Boxes3D` with scores and labels, sorted by descending score.
        """
        hp, dir_offset = self.hparams.postprocess, self.hparams.anchors.dir_offset
        out = []
        for i in range(preds["cls"].shape[0]):
            boxes, scores, labels = decode_frame(
                preds["cls"][i].float(), preds["box"][i].float(),
                preds["dir"][i].float() if "dir" in preds else None, self.anchors, self.coder,
                dir_offset=dir_offset, score_thresh=hp.score_thresh, nms_thresh=hp.nms_thresh,
                nms_pre_max=hp.nms_pre_max, nms_post_max=hp.nms_post_max, per_class_nms=hp.per_class_nms)
            boxes, scores = boxes.detach(), scores.detach()
            if hp.vertical_refinement:
                if points is None or batch is None:
                    raise ValueError("model.vertical_refinement needs the frames' points: detect(preds, points, batch)")
                frame_points = points[batch == i].float()
                offsets = ground_offsets(frame_points, boxes)
                boxes = refine_vertical(frame_points, boxes, offsets)
                factor = hp.off_ground_score_factor
                if factor != 1.0:
                    off_ground = (offsets.abs() > ground_tolerances(boxes)).to(scores.device)  # False for NaN
                    scores = torch.where(off_ground, scores * factor, scores)
                    order = scores.argsort(descending=True)
                    order = order[scores[order] >= hp.score_thresh]
                    boxes, scores, labels = boxes[order], scores[order], labels[order]
            out.append(Boxes3D(boxes, labels, scores, tuple(self.class_names)))
        return out

    # -------------------------------------------------------------------------------------- lightning

    def setup(self, stage: str) -> None:
        """Set the CPU threads (``runtime.num_threads``)."""
        if self.runtime.num_threads:
            torch.set_num_threads(self.runtime.num_threads)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        preds = self(batch["points"], batch["batch"], batch["batch_size"])
        losses = self.compute_losses(preds, batch["gt_boxes"], batch["gt_labels"])
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=batch["batch_size"])
        return losses["loss"]

    def _eval_step(self, batch: dict, batch_idx: int, prefix: str) -> None:
        preds = self(batch["points"], batch["batch"], batch["batch_size"])
        detections = self.detect(preds, batch["points"], batch["batch"])
        for i, det in enumerate(detections):
            objects = boxes_lidar_to_objects(det.to("cpu"), batch["calib"][i], batch["image_size"][i])
            self._eval_records.append((batch["frame_id"][i], batch["annos"][i], objects))
        if batch_idx < self.runtime.log_images and self.global_rank == 0:
            self._log_bev(f"{prefix}/bev_{batch_idx}", batch, detections[0])

    def _log_bev(self, tag: str, batch: dict, detections: Boxes3D) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if self.trainer.sanity_checking or not hasattr(experiment, "add_image"):
            return
        image = render_bev(batch["points"][batch["batch"] == 0], self.point_cloud_range,
                           batch["gt_boxes"][0], detections.boxes, resolution=0.1)
        experiment.add_image(tag, image, self.global_step, dataformats="HWC")

    def _eval_epoch_end(self, prefix: str) -> dict[str, float]:
        records = self._eval_records
        self._eval_records = []
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, records)
            records = [r for part in gathered for r in part]
        unique = {frame_id: (gt, dt) for frame_id, gt, dt in sorted(records, key=lambda r: r[0])}
        gt_annos = [gt for gt, _ in unique.values()]
        dt_annos = [dt for _, dt in unique.values()]
        classes = tuple(self.runtime.eval_classes or self.class_names)
        results = kitti_eval(gt_annos, dt_annos, classes=classes)
        metrics = {f"{prefix}/{k}": float(v) for k, v in results.items()}
        metrics[f"{prefix}/num_frames"] = float(len(unique))
        # Identical on every rank; sync_dist only averages equal values (and keeps Lightning quiet).
        self.log_dict(metrics, sync_dist=True)
        if self.global_rank == 0 and not self.trainer.sanity_checking:
            print(f"\n{prefix}: KITTI evaluation over {len(unique)} frames\n{format_kitti_table(results)}")
        return results

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        """Detect and (with ``result_dir``) write ``<frame_id>.txt`` KITTI results and ``bev/<frame_id>.png``.

        Returns:
            Per frame ``{"frame_id", "boxes" (Boxes3D, LiDAR frame), "objects" (KITTI objects, camera frame)}``.
        """
        preds = self(batch["points"], batch["batch"], batch["batch_size"])
        out = []
        for i, det in enumerate(self.detect(preds, batch["points"], batch["batch"])):
            det = det.to("cpu")
            objects = boxes_lidar_to_objects(det, batch["calib"][i], batch["image_size"][i])
            frame_id = batch["frame_id"][i]
            if self.result_dir:
                root = Path(self.result_dir)
                write_label(root / f"{frame_id}.txt", objects)
                image = render_bev(batch["points"][batch["batch"] == i], self.point_cloud_range,
                                   batch["gt_boxes"][i], det.boxes)
                _write_png(root / "bev" / f"{frame_id}.png", image)
            out.append({"frame_id": frame_id, "boxes": det, "objects": objects})
        return out

    def configure_optimizers(self):
        optim = self.hparams.optim
        optimizer = torch.optim.AdamW(self.parameters(), lr=optim.lr, betas=(0.95, 0.99),
                                      weight_decay=optim.weight_decay)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total < 1:
            raise ValueError("trainer: set max_epochs or max_steps so the one-cycle schedule knows its length")
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=optim.lr, total_steps=int(total),
            pct_start=optim.pct_start, div_factor=optim.div_factor, base_momentum=0.85,
            max_momentum=0.95)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _write_png(path: Path, image) -> None:
    """Write an (H, W, 3) uint8 image atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
