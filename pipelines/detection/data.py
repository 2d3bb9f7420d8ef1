"""KITTI object data for the detector: a dataset of LiDAR frames and a Lightning data module.

Reads ``<data_dir>/training/{velodyne,label_2,calib,image_2}`` with ``<data_dir>/ImageSets/<split>.txt``
split files (or every velodyne file for the split name ``"all"``) through ``geo3d.io.kitti``. Each
frame is cropped to the camera field of view (KITTI labels only what the left camera sees) and to the
point-cloud range; ground-truth boxes are kept when their class is in ``class_names`` and their centre
lies in the range. Training frames are augmented (``augment.py``). Batches pack the points of all
frames with a batch index, as the voxelizer expects; the original label objects and calibration ride
along for the KITTI evaluation and for writing results. In DDP, Lightning gives every loader a
``DistributedSampler``; the evaluation gathers and de-duplicates frames across ranks (``module.py``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from geo3d.errors import InputError
from geo3d.io.kitti import objects_to_boxes_lidar, points_in_image_fov, read_frame, read_split
from pipelines.detection.augment import AugmentConfig, GTDatabase, augment_frame


def list_frames(data_dir: str | os.PathLike, split: str) -> list[str]:
    """Frame ids of a split.

    Args:
        data_dir: the dataset folder holding ``training/`` and ``ImageSets/``.
        split: a split name (``ImageSets/<split>.txt``) or ``"all"`` (every ``training/velodyne/*.bin``).

    Returns:
        Frame ids such as ``"000042"``, in file order (sorted for ``"all"``).

    Raises:
        InputError: the split file or the velodyne folder is missing, or the split is empty.
    """
    root = Path(data_dir)
    velodyne = root / "training" / "velodyne"
    if not velodyne.is_dir():
        raise InputError(root, "not a KITTI object folder: expected training/velodyne/ (and label_2/, calib/)")
    if split == "all":
        ids = sorted(p.stem for p in velodyne.glob("*.bin"))
        source: Path = velodyne
    else:
        source = root / "ImageSets" / f"{split}.txt"
        if not source.is_file():
            raise InputError(source, "split file missing (expected one frame id per line, or use split 'all')")
        ids = read_split(source)
    if not ids:
        raise InputError(source, "split has no frames")
    return ids


def crop_points(points: np.ndarray, point_cloud_range: list[float]) -> np.ndarray:
    """Points inside the range.

    Args:
        points: (N, C) ``x, y, z, ...`` metres.
        point_cloud_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]``; the max edges are excluded.

    Returns:
        (N', C) the points inside.
    """
    lo, hi = np.asarray(point_cloud_range[:3]), np.asarray(point_cloud_range[3:])
    inside = ((points[:, :3] >= lo) & (points[:, :3] < hi)).all(axis=1)
    return points[inside]


def boxes_in_range(boxes: torch.Tensor, point_cloud_range: list[float]) -> torch.Tensor:
    """(M,) bool: box centre inside the range in x and y (boxes: (M, 7) float32)."""
    xmin, ymin, _, xmax, ymax, _ = point_cloud_range
    return (boxes[:, 0] >= xmin) & (boxes[:, 0] < xmax) & (boxes[:, 1] >= ymin) & (boxes[:, 1] < ymax)


class KittiDetectionDataset(Dataset):
    """LiDAR frames of one split, cropped and (for training) augmented.

    Args:
        data_dir: the dataset folder.
        frame_ids: the frames to serve.
        class_names: classes to detect, e.g. ``["Car"]``; labels index into it.
        point_cloud_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]`` metres.
        fov_only: keep only the points that project into the left camera image.
        require_labels: raise if a frame has no ``label_2`` file (train/val/test); prediction does not.
        augment: augmentations for training, or None.
        database: objects for ground-truth sampling, or None.
        split_dir: the folder under ``data_dir`` holding ``velodyne/``, ``calib/``, ... (``"training"``).

    Each item is a dict: ``frame_id`` str, ``points`` (N, 4) float32 ``x, y, z, reflectance``,
    ``gt_boxes`` (M, 7) float32, ``gt_labels`` (M,) int64, ``annos`` (the label file's objects, all
    types, or None), ``calib`` (KittiCalib), ``image_size`` (width, height).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        frame_ids: list[str],
        class_names: list[str],
        point_cloud_range: list[float],
        fov_only: bool = True,
        require_labels: bool = True,
        augment: AugmentConfig | None = None,
        database: GTDatabase | None = None,
        split_dir: str = "training",
    ):
        self.root = Path(data_dir)
        self.split_dir = split_dir
        self.frame_ids = list(frame_ids)
        self.class_names = list(class_names)
        self.point_cloud_range = list(point_cloud_range)
        self.fov_only = fov_only
        self.require_labels = require_labels
        self.augment = augment
        self.database = database
        self._check_files()

    def _check_files(self) -> None:
        base = self.root / self.split_dir
        needed = [("velodyne", ".bin"), ("calib", ".txt")] + ([("label_2", ".txt")] if self.require_labels else [])
        for folder, ext in needed:
            missing = [i for i in self.frame_ids if not (base / folder / f"{i}{ext}").is_file()]
            if missing:
                raise InputError(
                    base / folder, f"{len(missing)} frame(s) of the split have no {folder} file, e.g. {missing[0]}{ext}"
                )

    def __len__(self) -> int:
        return len(self.frame_ids)

    def load(self, index: int, fov_only: bool | None = None) -> dict:
        """Read and crop one frame, without augmentation (the item layout of the class docstring).

        ``fov_only`` overrides the dataset's setting (the ground-truth database skips the field-of-view
        test: labelled objects are in the image anyway, and the projection is the costly part of loading).
        """
        frame = read_frame(self.root, self.frame_ids[index], split_dir=self.split_dir)
        points = frame.points
        if self.fov_only if fov_only is None else fov_only:
            points = points[points_in_image_fov(points[:, :3], frame.calib, frame.image_size)]
        points = torch.from_numpy(np.ascontiguousarray(crop_points(points, self.point_cloud_range)))
        boxes = torch.zeros(0, 7)
        labels = torch.zeros(0, dtype=torch.int64)
        if frame.objects is not None:
            gt = objects_to_boxes_lidar(frame.objects, frame.calib, self.class_names)
            keep = boxes_in_range(gt.boxes, self.point_cloud_range)
            boxes, labels = gt.boxes[keep], gt.labels[keep]
        return {
            "frame_id": frame.frame_id,
            "points": points,
            "gt_boxes": boxes,
            "gt_labels": labels,
            "annos": frame.objects,
            "calib": frame.calib,
            "image_size": frame.image_size,
        }

    def __getitem__(self, index: int) -> dict:
        item = self.load(index)
        if self.augment is None:
            return item
        # One generator per item, seeded from torch's RNG: Lightning seeds it per worker and per run.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        points, boxes, labels = augment_frame(
            item["points"], item["gt_boxes"], item["gt_labels"], self.augment, rng, self.database
        )
        points = torch.from_numpy(crop_points(points.numpy(), self.point_cloud_range))
        keep = boxes_in_range(boxes, self.point_cloud_range)
        item.update(points=points, gt_boxes=boxes[keep], gt_labels=labels[keep])
        return item

    def build_database(self, min_points: int) -> GTDatabase:
        """Cut every labelled object of this split out of its frame (for ground-truth sampling).

        Args:
            min_points: objects with fewer LiDAR points are skipped.

        Returns:
            The :class:`GTDatabase`.
        """
        items = (self.load(i, fov_only=False) for i in range(len(self)))
        frames = ((it["points"], it["gt_boxes"], it["gt_labels"]) for it in items)
        return GTDatabase.build(frames, min_points)


def collate_frames(items: list[dict]) -> dict:
    """Pack frames into a batch.

    Args:
        items: dataset items.

    Returns:
        ``points`` (N, 4) float32 of all frames, ``batch`` (N,) int64 frame index of each point,
        ``batch_size`` int, and per-frame lists ``gt_boxes`` [(M_i, 7)], ``gt_labels`` [(M_i,)],
        ``frame_id``, ``annos``, ``calib``, ``image_size``.
    """
    points = [it["points"] for it in items]
    return {
        "points": torch.cat(points),
        "batch": torch.cat([torch.full((len(p),), i, dtype=torch.int64) for i, p in enumerate(points)]),
        "batch_size": len(items),
        "gt_boxes": [it["gt_boxes"] for it in items],
        "gt_labels": [it["gt_labels"] for it in items],
        "frame_id": [it["frame_id"] for it in items],
        "annos": [it["annos"] for it in items],
        "calib": [it["calib"] for it in items],
        "image_size": [it["image_size"] for it in items],
    }


@dataclass(frozen=True)
class SplitSettings:
    """Which split each stage reads: a name (``ImageSets/<name>.txt``) or ``"all"`` (every velodyne file).

    Attributes:
        train: the training split.
        val: the validation split.
        test: the split of ``geo3d test``.
        predict: the split of ``geo3d predict``.
    """

    train: str = "train"
    val: str = "val"
    test: str = "val"
    predict: str = "val"


@dataclass(frozen=True)
class AugmentSettings:
    """Training-only augmentations (``augment.AugmentConfig``; ground-truth sampling is :class:`GTSamplingSettings`).

    Attributes:
        flip_x: random mirror across x.
        rotation_range: ``[lo, hi]`` radians of the random global rotation.
        scale_range: ``[lo, hi]`` of the random global scaling.
        point_dropout: largest share of points dropped per frame (drawn per frame in ``[0, point_dropout]``,
            e.g. 0.2); 0 disables.
        point_jitter_std: gaussian noise on every point's x, y, z, metres (e.g. 0.015); 0 disables.
        intensity_gain_range: ``[lo, hi]`` per-frame reflectance gain (e.g. ``[0.8, 1.2]``); ``[1, 1]`` disables.
        intensity_noise_std: per-point additive reflectance noise (e.g. 0.03), clipped to [0, 1]; 0 disables.
    """

    flip_x: bool = True
    rotation_range: tuple[float, float] = (-0.78539816, 0.78539816)
    scale_range: tuple[float, float] = (0.95, 1.05)
    point_dropout: float = 0.0
    point_jitter_std: float = 0.0
    intensity_gain_range: tuple[float, float] = (1.0, 1.0)
    intensity_noise_std: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rotation_range", "scale_range", "intensity_gain_range"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2:
                raise ValueError(f"data.augment.{name}: expected [lo, hi], got {list(value)}")
            object.__setattr__(self, name, value)
        self.config({})  # AugmentConfig checks the values

    def config(self, sample_counts: dict[int, int], sample_align_ground: bool = False) -> AugmentConfig:
        """The :class:`~pipelines.detection.augment.AugmentConfig` of these settings and the ground-truth sampling
        ``sample_counts`` (class index -> boxes per frame).

        Raises:
            ValueError: a value out of its range (the message names ``data.augment.<field>``).
        """
        try:
            return AugmentConfig(
                flip_x=bool(self.flip_x), rotation_range=self.rotation_range, scale_range=self.scale_range,
                sample_counts=sample_counts, sample_align_ground=bool(sample_align_ground),
                point_dropout=float(self.point_dropout), point_jitter_std=float(self.point_jitter_std),
                intensity_gain_range=self.intensity_gain_range, intensity_noise_std=float(self.intensity_noise_std))
        except ValueError as err:
            raise ValueError(f"data.augment.{err}") from None


@dataclass(frozen=True)
class GTSamplingSettings:
    """Ground-truth sampling: objects cut from the training split pasted into training frames.

    Attributes:
        counts: class name -> boxes per frame after sampling (e.g. ``{"Car": 15}``); empty disables it.
        min_points: database objects need at least this many points.
        align_ground: move each pasted object vertically onto the ground around it in its new frame (for scenes
            whose ground is not one plane, e.g. ``geo3d synth kitti``'s sloping terrain).
    """

    counts: dict[str, int] = field(default_factory=dict)
    min_points: int = 5
    align_ground: bool = False


# Checkpoints may hold these (torch.load(weights_only=True) rebuilds only allow-listed classes); the module stores
# them in its hyper-parameters as plain dicts anyway.
torch.serialization.add_safe_globals([SplitSettings, AugmentSettings, GTSamplingSettings])


class KittiDataModule(pl.LightningDataModule):
    """KITTI object splits for fit / validate / test / predict.

    Args:
        data_dir: folder with ``training/{velodyne,label_2,calib[,image_2]}`` and ``ImageSets/``.
        class_names: classes to detect (the CLI links it to ``model.class_names``).
        point_cloud_range: ``[xmin, ymin, zmin, xmax, ymax, zmax]`` metres (linked to ``model.point_cloud_range``).
        splits: the split of each stage.
        batch_size: training frames per batch (per process under DDP).
        eval_batch_size: frames per batch for validate / test / predict.
        num_workers: data loader worker processes.
        fov_only: keep only points inside the left camera's view.
        augment: training augmentations.
        gt_sampling: ground-truth sampling.

    Raises:
        ValueError: no class, a malformed range, sampling counts of classes not in ``class_names``.
    """

    def __init__(
        self,
        data_dir: str,
        class_names: list[str] | tuple[str, ...] = ("Car", "Pedestrian", "Cyclist"),
        point_cloud_range: list[float] | tuple[float, ...] = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0),
        splits: SplitSettings = SplitSettings(),
        batch_size: int = 4,
        eval_batch_size: int = 4,
        num_workers: int = 0,
        fov_only: bool = True,
        augment: AugmentSettings = AugmentSettings(),
        gt_sampling: GTSamplingSettings = GTSamplingSettings(),
    ):
        super().__init__()
        self.save_hyperparameters()
        # Plain dicts in the checkpoint (as the CLI's own config): loading one needs no class of this file.
        self.hparams.update(splits=asdict(splits), augment=asdict(augment), gt_sampling=asdict(gt_sampling))
        self.data_dir = data_dir
        self.splits = splits
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.fov_only = fov_only
        self.gt_sampling = gt_sampling
        self.class_names = list(class_names)
        self.point_cloud_range = [float(v) for v in point_cloud_range]
        if not self.class_names:
            raise ValueError("data.class_names: expected at least one class")
        r = self.point_cloud_range
        if len(r) != 6 or not all(r[i] < r[i + 3] for i in range(3)):
            raise ValueError(f"data.point_cloud_range: expected [xmin, ymin, zmin, xmax, ymax, zmax], got {r}")
        unknown = [k for k in gt_sampling.counts if k not in self.class_names]
        if unknown:
            raise ValueError(f"data.gt_sampling.counts: classes {unknown} are not in class_names {self.class_names}")
        self.augment = augment.config({self.class_names.index(k): int(v) for k, v in gt_sampling.counts.items()},
                                      gt_sampling.align_ground)
        self.datasets: dict[str, KittiDetectionDataset] = {}

    def _dataset(self, split: str, train: bool = False, require_labels: bool = True) -> KittiDetectionDataset:
        return KittiDetectionDataset(
            self.data_dir,
            list_frames(self.data_dir, split),
            self.class_names,
            self.point_cloud_range,
            fov_only=self.fov_only,
            require_labels=require_labels,
            augment=self.augment if train else None,
        )

    def setup(self, stage: str) -> None:
        """Build the datasets a stage needs (and the ground-truth database for ``fit``)."""
        if stage == "fit":
            train = self._dataset(self.splits.train, train=True)
            if self.augment.sample_counts:
                train.database = train.build_database(self.gt_sampling.min_points)
            self.datasets["train"] = train
            self.datasets["val"] = self._dataset(self.splits.val)
        elif stage == "validate":
            self.datasets["val"] = self._dataset(self.splits.val)
        elif stage == "test":
            self.datasets["test"] = self._dataset(self.splits.test)
        elif stage == "predict":
            self.datasets["predict"] = self._dataset(self.splits.predict, require_labels=False)

    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[name],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_frames,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.eval_batch_size, shuffle=False)
