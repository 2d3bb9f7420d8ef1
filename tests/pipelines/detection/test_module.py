"""SecondDetector: forward/backward on a tiny synthetic batch, overfitting one scene, config checks."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ops.boxes import boxes_iou_bev
from pipelines.detection.module import (
    SETTINGS_GROUPS,
    AnchorSettings,
    BackboneSettings,
    LossSettings,
    PostProcessSettings,
    SecondDetector,
    VoxelSettings,
)

RANGE = [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]
TINY = dict(
    class_names=["Car"], point_cloud_range=RANGE, voxels=VoxelSettings(size=(0.2, 0.2, 0.2), max_voxels_train=20000),
    backbone=BackboneSettings(channels=(8, 8, 16, 16, 16), z_paddings=(1, 1, 1), bev_layer_nums=(1, 1),
                              bev_layer_strides=(1, 2), bev_num_filters=(16, 32), bev_upsample_strides=(1, 2),
                              bev_num_upsample_filters=(16, 16)),
    anchors=AnchorSettings(sizes=((3.9, 1.6, 1.56),), bottom_heights=(-1.73,), matched_thresholds=(0.6,),
                           unmatched_thresholds=(0.45,)),
)


def _with(**groups) -> dict:
    """TINY with fields of its groups replaced, e.g. ``_with(anchors={"angle_encoding": "sincos"})``."""
    out = dict(TINY)
    for name, fields in groups.items():
        out[name] = dataclasses.replace(out[name], **fields) if name in out else SETTINGS_GROUPS[name](**fields)
    return out


def _surface_points(box: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """Points on the four sides and the top of a box (a crude LiDAR-like car shell)."""
    u = torch.rand(n, 3, generator=g) - 0.5
    face = torch.randint(0, 5, (n,), generator=g)
    u[face == 0, 0], u[face == 1, 0], u[face == 2, 1], u[face == 3, 1], u[face == 4, 2] = 0.5, -0.5, 0.5, -0.5, 0.5
    local = u * box[3:6]
    c, s = math.cos(box[6]), math.sin(box[6])
    xy = torch.stack([local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c], 1)
    return torch.cat([xy + box[:2], local[:, 2:] + box[2]], 1)


def _scene(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor([[8.0, 3.0, -0.95, 3.9, 1.6, 1.56, 0.3], [15.0, -4.0, -0.95, 4.2, 1.7, 1.5, 2.0],
                          [20.0, 6.0, -0.95, 3.7, 1.6, 1.5, -1.2]])
    ground = torch.rand(3000, 3, generator=g) * torch.tensor([25.0, 25.0, 0.0]) + torch.tensor([0.0, -12.5, -1.73])
    pts = torch.cat([ground] + [_surface_points(b, 400, g) for b in boxes])
    return torch.cat([pts, torch.rand(len(pts), 1, generator=g)], 1), boxes


@pytest.mark.parametrize("vfe, encoding", [("mean", "residual"), ("stacked", "sincos")])
def test_forward_backward(vfe, encoding):
    torch.manual_seed(0)
    model = SecondDetector(**_with(backbone={"vfe": vfe, "vfe_filters": (8, 16)}, anchors={"angle_encoding": encoding}))
    p0, b0 = _scene(0)
    p1, b1 = _scene(1)
    points = torch.cat([p0, p1])
    batch = torch.cat([torch.zeros(len(p0), dtype=torch.long), torch.ones(len(p1), dtype=torch.long)])
    preds = model(points, batch, 2)
    n_anchors = 128 // 8 * (128 // 8) * 2
    code = 8 if encoding == "sincos" else 7
    assert preds["cls"].shape == (2, n_anchors, 1) and preds["box"].shape == (2, n_anchors, code)
    assert preds["dir"].shape == (2, n_anchors, 2)
    losses = model.compute_losses(preds, [b0, b1], [torch.zeros(3, dtype=torch.long)] * 2)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    model.eval()
    with torch.no_grad():
        detections = model.detect(model(points, batch, 2))
    assert len(detections) == 2 and detections[0].class_names == ("Car",)


def test_overfits_one_scene():
    """The whole chain (assignment, encoding, losses, decoding, direction, NMS) is consistent."""
    torch.manual_seed(0)
    model = SecondDetector(**_with(optim={"lr": 0.01}))
    points, boxes = _scene(0)
    batch = torch.zeros(len(points), dtype=torch.long)
    labels = torch.zeros(3, dtype=torch.long)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        losses = model.compute_losses(model(points, batch, 1), [boxes], [labels])
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    with torch.no_grad():  # still in train mode: 40 steps are too few for BatchNorm's running statistics
        det = model.detect(model(points, batch, 1))[0]
    confident = det[det.scores > 0.3]
    assert len(confident) == 3, det
    iou = boxes_iou_bev(confident.boxes, boxes)
    assert (iou.max(dim=0).values > 0.7).all(), iou
    # headings right, not flipped by pi
    best = iou.argmax(dim=0)
    dyaw = torch.remainder(confident.boxes[best, 6] - boxes[:, 6] + math.pi, 2 * math.pi) - math.pi
    assert (dyaw.abs() < 0.3).all(), dyaw


def test_bad_model_config():
    with pytest.raises(ValueError, match="anchors.sizes: expected one value per class"):
        SecondDetector(**{**TINY, "class_names": ["Car", "Pedestrian"]})
    with pytest.raises(ValueError, match="multiple of voxel_size"):
        SecondDetector(**_with(voxels={"size": [0.3, 0.3, 0.2]}))
    with pytest.raises(ValueError, match="code_weights: expected 8 finite values >= 0 for angle_encoding 'sincos'"):
        SecondDetector(**_with(anchors={"angle_encoding": "sincos"}, losses={"code_weights": [1.0] * 7}))
    with pytest.raises(ValueError, match="losses.code_weights: expected 7 finite values >= 0"):
        SecondDetector(**_with(losses={"code_weights": [1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0]}))
    with pytest.raises(ValueError, match=r"losses.weights: expected \[cls, box, dir\]"):
        LossSettings(weights=(1.0, 2.0))
    with pytest.raises(ValueError, match=r"off_ground_score_factor: expected a value in \[0, 1\], got 1.5"):
        PostProcessSettings(vertical_refinement=True, off_ground_score_factor=1.5)
    with pytest.raises(ValueError, match="off_ground_score_factor needs model.postprocess.vertical_refinement: true"):
        PostProcessSettings(off_ground_score_factor=0.0)


def test_settings_are_frozen_tuples_saved_in_the_hyperparameters():
    model = SecondDetector(**_with(postprocess={"score_thresh": 0.2}))
    assert model.hparams.voxels == VoxelSettings(size=[0.2, 0.2, 0.2], max_voxels_train=20000)  # lists become tuples
    assert model.hparams.postprocess.score_thresh == 0.2 and model.hparams.class_names == ["Car"]
    assert "runtime" not in model.hparams and "result_dir" not in model.hparams  # run-time options are not saved
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.hparams.optim.lr = 1.0
