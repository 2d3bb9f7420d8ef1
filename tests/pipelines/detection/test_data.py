"""KittiDataModule / dataset: cropping, class filtering, batching, and clear errors on malformed input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo3d.errors import InputError
from geo3d.io.kitti import read_velodyne
from pipelines.detection.data import (
    AugmentSettings,
    GTSamplingSettings,
    KittiDataModule,
    KittiDetectionDataset,
    collate_frames,
    list_frames,
)

RANGE = [0.0, -20.0, -3.0, 40.0, 20.0, 1.0]


def _expected_points(root):
    """Points of frame 0 in the image (hand projection, see conftest CALIB) and in the range."""
    p = read_velodyne(root / "training" / "velodyne" / "000000.bin").astype(np.float64)
    depth = p[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 621.0 + 720.0 * -p[:, 1] / depth
        v = 187.5 + 720.0 * -p[:, 2] / depth
    fov = (depth > 0) & (u >= 0) & (u < 1242) & (v >= 0) & (v < 375)
    lo, hi = np.array(RANGE[:3]), np.array(RANGE[3:])
    inside = ((p[:, :3] >= lo) & (p[:, :3] < hi)).all(1)
    return p[fov & inside]


def test_item_is_cropped_and_filtered(hand_kitti):
    ds = KittiDetectionDataset(hand_kitti, ["000000"], ["Car"], RANGE)
    item = ds[0]
    expected = _expected_points(hand_kitti)
    assert 0 < len(expected) < 200  # some points ahead fall below the image
    np.testing.assert_allclose(np.sort(item["points"][:, 0].numpy()), np.sort(expected[:, 0]), rtol=1e-6)
    # Car at (15, 0) kept; the Pedestrian (other class) and the car at 150 m (out of range) dropped.
    assert item["gt_labels"].tolist() == [0]
    torch.testing.assert_close(item["gt_boxes"][0, :3], torch.tensor([15.0, 0.0, -1.0]), atol=1e-5, rtol=0)
    assert [o.type for o in item["annos"]] == ["Car", "Pedestrian", "DontCare", "Car"]  # all kept for eval
    ds2 = KittiDetectionDataset(hand_kitti, ["000000"], ["Car", "Pedestrian"], RANGE)
    assert ds2[0]["gt_labels"].tolist() == [0, 1]


def test_collate(hand_kitti):
    ds = KittiDetectionDataset(hand_kitti, ["000000", "000001"], ["Car"], RANGE)
    batch = collate_frames([ds[0], ds[1]])
    n0 = len(ds[0]["points"])
    assert batch["points"].shape == (2 * n0, 4) and batch["batch_size"] == 2
    assert batch["batch"].tolist() == [0] * n0 + [1] * n0
    assert batch["frame_id"] == ["000000", "000001"] and len(batch["gt_boxes"]) == 2


def test_datamodule_stages_and_split_all(hand_kitti):
    dm = KittiDataModule(str(hand_kitti), class_names=["Car"], point_cloud_range=RANGE, batch_size=1,
                         gt_sampling=GTSamplingSettings(counts={"Car": 3}))
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 1 and len(dm.datasets["val"]) == 1
    assert len(dm.datasets["train"].database) == 1  # the one in-range car with >= 5 points
    batch = next(iter(dm.train_dataloader()))
    assert batch["batch_size"] == 1
    assert list_frames(hand_kitti, "all") == ["000000", "000001"]


def test_bad_config_values():
    with pytest.raises(ValueError, match="point_cloud_range"):
        KittiDataModule("x", point_cloud_range=[0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"data.gt_sampling.counts: classes \['Van'\] are not in class_names"):
        KittiDataModule("x", class_names=["Car"], gt_sampling=GTSamplingSettings(counts={"Van": 3}))


def test_missing_folder_split_and_files(hand_kitti, tmp_path):
    with pytest.raises(InputError, match="training/velodyne"):
        list_frames(tmp_path / "nowhere", "train")
    with pytest.raises(InputError, match="test.txt: split file missing"):
        list_frames(hand_kitti, "test")
    (hand_kitti / "training" / "label_2" / "000001.txt").unlink()
    with pytest.raises(InputError, match=r"label_2: 1 frame\(s\) of the split have no label_2 file, e.g. 000001"):
        KittiDetectionDataset(hand_kitti, ["000000", "000001"], ["Car"], RANGE)
    # Prediction does not need labels.
    ds = KittiDetectionDataset(hand_kitti, ["000001"], ["Car"], RANGE, require_labels=False)
    assert ds[0]["annos"] is None and len(ds[0]["gt_boxes"]) == 0


def test_malformed_files_name_the_file(hand_kitti):
    velodyne = hand_kitti / "training" / "velodyne" / "000000.bin"
    velodyne.write_bytes(velodyne.read_bytes()[:-6])
    ds = KittiDetectionDataset(hand_kitti, ["000000", "000001"], ["Car"], RANGE)
    with pytest.raises(InputError, match="000000.bin: truncated"):
        ds[0]
    label = hand_kitti / "training" / "label_2" / "000001.txt"
    label.write_text("Car 0 0 0 1 2 3 4 1.5 1.6\n")
    with pytest.raises(InputError, match=r"000001.txt: line 1: expected 15 or 16 columns, got 10"):
        ds[1]
    calib = hand_kitti / "training" / "calib" / "000001.txt"
    calib.write_text("P2: 1 2 3\n")
    with pytest.raises(InputError, match="calib/000001.txt"):
        ds[1]


def test_sensor_noise_init_args_reach_training_items_only(hand_kitti):
    augment = AugmentSettings(point_dropout=0.5, point_jitter_std=0.02, intensity_gain_range=[0.5, 0.5],
                              intensity_noise_std=0.0, flip_x=False, rotation_range=[0, 0], scale_range=[1, 1])
    dm = KittiDataModule(str(hand_kitti), class_names=["Car"], point_cloud_range=RANGE, augment=augment)
    assert (dm.augment.point_dropout, dm.augment.point_jitter_std) == (0.5, 0.02)
    assert dm.augment.intensity_gain_range == (0.5, 0.5) and dm.hparams.augment["point_dropout"] == 0.5
    assert not dm.augment.sample_align_ground
    assert KittiDataModule(str(hand_kitti), class_names=["Car"], point_cloud_range=RANGE,
                           gt_sampling=GTSamplingSettings(align_ground=True)).augment.sample_align_ground
    dm.setup("fit")
    clean = dm.datasets["val"].load(0)  # the same frame's file, unaugmented (train and val are copies)
    torch.manual_seed(0)
    item = dm.datasets["train"][0]
    torch.manual_seed(0)
    again = dm.datasets["train"][0]
    assert torch.equal(item["points"], again["points"])  # seeded: the same augmentation
    assert 0 < len(item["points"]) < len(clean["points"])  # up to half dropped
    assert item["points"].dtype == torch.float32 and item["points"].shape[1] == 4
    torch.testing.assert_close(item["gt_boxes"], clean["gt_boxes"], rtol=0, atol=0)  # boxes untouched
    # intensities halved, positions moved by centimetres: match each kept point to its nearest clean point
    d = torch.cdist(item["points"][:, :3], clean["points"][:, :3])
    nearest = d.argmin(1)
    assert float(d.min(1).values.max()) < 0.15
    torch.testing.assert_close(item["points"][:, 3], clean["points"][nearest, 3] * 0.5, rtol=0, atol=1e-6)
    val = dm.datasets["val"][0]
    assert torch.equal(val["points"], clean["points"])  # validation is never augmented


def test_bad_sensor_noise_values():
    for bad, name in (({"point_dropout": 1.5}, "point_dropout"), ({"point_jitter_std": -0.01}, "point_jitter_std"),
                      ({"intensity_gain_range": [1.2, 0.8]}, "intensity_gain_range"),
                      ({"intensity_gain_range": [1.0]}, "intensity_gain_range")):
        with pytest.raises(ValueError, match=f"data.augment.{name}"):
            AugmentSettings(**bad)
