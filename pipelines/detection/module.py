"""``SecondDetector``: the SECOND voxel detector as a LightningModule.

points -> ``ops.voxelize.hard_voxelize`` -> VFE (mean or stacked) -> sparse 3D backbone (stride 8)
-> height compression -> 2D backbone + upsampling neck -> anchor head -> losses (training) or
decoding + rotated NMS (evaluation). Validation and test run the KITTI evaluation over the whole
split: every rank keeps its frames' ground truth and detections, the lists are gathered to all ranks
(``torch.distributed.all_gather_object``) and de-duplicated by frame id (DistributedSampler pads the
last batch with repeats), so every rank computes and logs the same APs. Prediction writes KITTI
result files (``geo3d.io.kitti.write_label``, score in column 16) and BEV images when ``result_dir``
is set. The ``__init__`` arguments are plain typed values so LightningCLI can read them from YAML.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from geo3d.io.atomic import atomic_path
from geo3d.io.kitti import boxes_lidar_to_objects, write_label
from geo3d.schedule import BudgetOneCycleLR, trainer_progress
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


class SecondDetector(pl.LightningModule):
    """SECOND (Yan et al. 2018) with OpenPCDet's KITTI hyperparameters as defaults.

    Args:
        class_names: classes to detect, in anchor order (must equal the data module's).
        point_cloud_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]`` metres (must equal the data module's).
        voxel_size: ``[vx, vy, vz]`` metres; the x/y grid must be a multiple of 8 cells.
        max_points_per_voxel: points kept per voxel.
        max_voxels_train: voxels kept per frame in training.
        max_voxels_eval: voxels kept per frame in evaluation.
        num_point_features: point feature size (4: ``x, y, z, reflectance``).
        vfe: ``"mean"`` (SECOND) or ``"stacked"`` (VoxelNet VFE layers).
        vfe_filters: output sizes of the stacked VFE layers.
        backbone_channels: ``[c1, c2, c3, c4, c_out]`` of the sparse 3D backbone.
        backbone_z_paddings: z padding of its three strided stages.
        bev_layer_nums, bev_layer_strides, bev_num_filters, bev_upsample_strides, bev_num_upsample_filters:
            the 2D backbone and neck (see ``bev.BEVBackbone``).
        bn_momentum: BatchNorm momentum everywhere (OpenPCDet: 0.01; short CPU schedules need ~0.1 for the
            running statistics to catch up with the weights).
        anchor_sizes: ``[dx, dy, dz]`` metres per class.
        anchor_bottom_heights: anchor bottom z (metres) per class.
        anchor_rotations: anchor yaws (radians), shared by all classes.
        matched_thresholds: BEV IoU for a positive anchor, per class.
        unmatched_thresholds: BEV IoU below which an anchor is negative, per class.
        angle_encoding: ``"residual"`` (with the sin-difference loss) or ``"sincos"``.
        num_dir_bins: direction classifier bins (0 disables it).
        dir_offset: direction-bin offset, radians.
        loss_weights: ``[classification, box, direction]`` weights.
        code_weights: factors on each box code entry's regression loss (``x, y, z, dx, dy, dz`` then the angle
            entries; OpenPCDet's ``code_weights``), None for all 1.
        hard_negative_weight: classification-loss factor of background anchors scoring at least
            ``hard_negative_score`` (:func:`~pipelines.detection.losses.detection_losses`; 1 disables it).
        hard_negative_score: the score from which a background anchor is a hard negative.
        lr: peak learning rate of the one-cycle schedule (AdamW).
        weight_decay: AdamW weight decay.
        div_factor: initial lr = ``lr / div_factor``.
        pct_start: fraction of the steps spent warming up.
        score_thresh: minimum detection score.
        nms_thresh: rotated BEV IoU threshold of NMS.
        nms_pre_max: boxes kept before NMS.
        nms_post_max: boxes kept after NMS.
        per_class_nms: NMS within each class instead of across classes.
        vertical_refinement: move each detection's bottom onto the ground around it and clip its top to the scan
            (:func:`~pipelines.detection.refine.refine_vertical`) in validation, test and prediction.
        off_ground_score_factor: with ``vertical_refinement``, the scores of detections whose bottom lies farther
            above or below the ground around them than ``refine.ground_tolerances`` (0.3 m; 0.9 % of the range beyond
            33 m) are multiplied by this (0 drops them: a car stands on the ground); 1 leaves scores alone.
        eval_classes: classes reported by the KITTI evaluation (default: ``class_names``).
        result_dir: where prediction writes ``<frame_id>.txt`` results and ``bev/<frame_id>.png``, or None.
        num_threads: ``torch.set_num_threads`` at setup (None keeps the default).
        log_images: BEV images logged per validation (0 disables).
    """

    def __init__(
        self,
        class_names: Sequence[str] = ("Car", "Pedestrian", "Cyclist"),
        point_cloud_range: Sequence[float] = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0),
        voxel_size: Sequence[float] = (0.05, 0.05, 0.1),
        max_points_per_voxel: int = 5,
        max_voxels_train: int = 16000,
        max_voxels_eval: int = 40000,
        num_point_features: int = 4,
        vfe: str = "mean",
        vfe_filters: Sequence[int] = (32, 64),
        backbone_channels: Sequence[int] = (16, 32, 64, 64, 128),
        backbone_z_paddings: Sequence[int] = (1, 1, 0),
        bev_layer_nums: Sequence[int] = (5, 5),
        bev_layer_strides: Sequence[int] = (1, 2),
        bev_num_filters: Sequence[int] = (128, 256),
        bev_upsample_strides: Sequence[int] = (1, 2),
        bev_num_upsample_filters: Sequence[int] = (256, 256),
        bn_momentum: float = 0.01,
        anchor_sizes: Sequence[Sequence[float]] = ((3.9, 1.6, 1.56), (0.8, 0.6, 1.73), (1.76, 0.6, 1.73)),
        anchor_bottom_heights: Sequence[float] = (-1.78, -0.6, -0.6),
        anchor_rotations: Sequence[float] = (0.0, 1.57079633),
        matched_thresholds: Sequence[float] = (0.6, 0.5, 0.5),
        unmatched_thresholds: Sequence[float] = (0.45, 0.35, 0.35),
        angle_encoding: str = "residual",
        num_dir_bins: int = 2,
        dir_offset: float = 0.78539816,
        loss_weights: Sequence[float] = (1.0, 2.0, 0.2),
        code_weights: Sequence[float] | None = None,
        hard_negative_weight: float = 1.0,
        hard_negative_score: float = 0.3,
        lr: float = 0.003,
        weight_decay: float = 0.01,
        div_factor: float = 10.0,
        pct_start: float = 0.4,
        score_thresh: float = 0.1,
        nms_thresh: float = 0.01,
        nms_pre_max: int = 4096,
        nms_post_max: int = 500,
        per_class_nms: bool = False,
        vertical_refinement: bool = False,
        off_ground_score_factor: float = 1.0,
        eval_classes: Sequence[str] | None = None,
        result_dir: str | None = None,
        num_threads: int | None = None,
        log_images: int = 1,
    ):
        super().__init__()
        # Run-time options stay out of the checkpoint: Lightning's CLI lets the hyperparameters stored in a
        # --ckpt_path checkpoint override the command line, so a stored result_dir would win over a new one.
        self.save_hyperparameters(ignore=["result_dir", "num_threads", "log_images"])
        self.result_dir = result_dir
        self.num_threads = num_threads
        self.log_images = log_images
        self.class_names = list(class_names)
        self.point_cloud_range = [float(v) for v in point_cloud_range]
        self.voxel_size = [float(v) for v in voxel_size]
        k = len(self.class_names)
        for name, value in (("anchor_sizes", anchor_sizes), ("anchor_bottom_heights", anchor_bottom_heights),
                            ("matched_thresholds", matched_thresholds),
                            ("unmatched_thresholds", unmatched_thresholds)):
            if len(value) != k:
                raise ValueError(f"model.{name}: expected one value per class ({k}: {self.class_names}), "
                                 f"got {len(value)}")
        if len(loss_weights) != 3:
            raise ValueError(f"model.loss_weights: expected [cls, box, dir], got {list(loss_weights)}")
        nx, ny, nz = (int(v) for v in grid_size(self.voxel_size, self.point_cloud_range))

        self.coder = ResidualCoder(angle_encoding)
        if code_weights is not None and (len(code_weights) != self.coder.code_size
                                         or not all(math.isfinite(w) and w >= 0 for w in code_weights)):
            raise ValueError(f"model.code_weights: expected {self.coder.code_size} finite values >= 0 for "
                             f"angle_encoding {angle_encoding!r}, got {list(code_weights)}")
        if not (math.isfinite(off_ground_score_factor) and 0 <= off_ground_score_factor <= 1):
            raise ValueError("model.off_ground_score_factor: expected a value in [0, 1], got "
                             f"{off_ground_score_factor}")
        if off_ground_score_factor != 1 and not vertical_refinement:
            raise ValueError("model.off_ground_score_factor needs model.vertical_refinement: true (it uses the "
                             "refinement's ground estimates)")
        self.vfe = build_vfe(vfe, num_point_features, list(vfe_filters), self.voxel_size, self.point_cloud_range,
                             bn_momentum)
        self.backbone3d = SparseBackbone3D(self.vfe.out_channels, (nx, ny, nz), list(backbone_channels),
                                           list(backbone_z_paddings), bn_momentum)
        self.bev_backbone = BEVBackbone(self.backbone3d.bev_channels, list(bev_layer_nums), list(bev_layer_strides),
                                        list(bev_num_filters), list(bev_upsample_strides),
                                        list(bev_num_upsample_filters), bn_momentum)
        feature_size = (round(ny / 8 / self.bev_backbone.stride), round(nx / 8 / self.bev_backbone.stride))
        anchors, anchor_class = generate_anchors(self.point_cloud_range, feature_size,
                                                 [list(s) for s in anchor_sizes], list(anchor_rotations),
                                                 list(anchor_bottom_heights))
        h, w, a, _ = anchors.shape
        self.register_buffer("anchors", anchors.reshape(-1, 7), persistent=False)
        self.register_buffer("anchor_class", anchor_class.repeat(h * w), persistent=False)
        self.head = AnchorHead(self.bev_backbone.out_channels, a, k, self.coder.code_size, num_dir_bins)
        self._eval_records: list[tuple[str, list, list]] = []

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
        max_voxels = self.hparams.max_voxels_train if self.training else self.hparams.max_voxels_eval
        with torch.no_grad():
            voxels, coords, num_points = hard_voxelize(points, batch, self.voxel_size, self.point_cloud_range,
                                                       self.hparams.max_points_per_voxel, max_voxels)
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
        labels, boxes = [], []
        for b, l in zip(gt_boxes, gt_labels):
            t = assign_targets(self.anchors, self.anchor_class, b, l, list(self.hparams.matched_thresholds),
                               list(self.hparams.unmatched_thresholds))
            labels.append(t.labels)
            boxes.append(torch.where((t.labels > 0)[:, None], t.matched_boxes, self.anchors))
        labels = torch.stack(labels)
        matched = torch.stack(boxes)
        box_targets = self.coder.encode(matched, self.anchors[None])
        dir_targets = None
        if self.hparams.num_dir_bins > 0:
            dir_targets = direction_targets(matched[..., 6], self.hparams.dir_offset, self.hparams.num_dir_bins)
        w_cls, w_box, w_dir = self.hparams.loss_weights
        return detection_losses(preds, labels, box_targets, dir_targets,
                                sin_difference=self.hparams.angle_encoding == "residual",
                                cls_weight=w_cls, box_weight=w_box, dir_weight=w_dir,
                                hard_negative_weight=self.hparams.hard_negative_weight,
                                hard_negative_score=self.hparams.hard_negative_score,
                                code_weights=self.hparams.code_weights)

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
        hp = self.hparams
        out = []
        for i in range(preds["cls"].shape[0]):
            boxes, scores, labels = decode_frame(
                preds["cls"][i].float(), preds["box"][i].float(),
                preds["dir"][i].float() if "dir" in preds else None, self.anchors, self.coder,
                dir_offset=hp.dir_offset, score_thresh=hp.score_thresh, nms_thresh=hp.nms_thresh,
                nms_pre_max=hp.nms_pre_max, nms_post_max=hp.nms_post_max, per_class_nms=hp.per_class_nms)
            boxes, scores = boxes.detach(), scores.detach()
            if hp.get("vertical_refinement", False):
                if points is None or batch is None:
                    raise ValueError("model.vertical_refinement needs the frames' points: detect(preds, points, batch)")
                frame_points = points[batch == i].float()
                offsets = ground_offsets(frame_points, boxes)
                boxes = refine_vertical(frame_points, boxes, offsets)
                factor = hp.get("off_ground_score_factor", 1.0)
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
        """Set CPU threads and check that the data module agrees on classes and range."""
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        for name in ("class_names", "point_cloud_range"):
            ours, theirs = getattr(self, name), getattr(datamodule, name, None)
            if theirs is not None and [*theirs] != [*ours]:
                raise ValueError(f"model.{name} {ours} differs from data.{name} {list(theirs)}: set both to the "
                                 "same value in the config")

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
        if batch_idx < self.log_images and self.global_rank == 0:
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
        classes = tuple(self.hparams.eval_classes or self.class_names)
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
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, betas=(0.95, 0.99),
                                      weight_decay=self.hparams.weight_decay)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total < 1:
            raise ValueError("trainer: set max_epochs or max_steps so the one-cycle schedule knows its length")
        # OneCycleLR, compressed into max_time when that would cut the run short (so a slow machine still anneals)
        scheduler = BudgetOneCycleLR(
            optimizer, lambda: trainer_progress(self.trainer, 0), max_lr=self.hparams.lr, total_steps=int(total),
            pct_start=self.hparams.pct_start, div_factor=self.hparams.div_factor, base_momentum=0.85,
            max_momentum=0.95)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _write_png(path: Path, image) -> None:
    """Write an (H, W, 3) uint8 image atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
