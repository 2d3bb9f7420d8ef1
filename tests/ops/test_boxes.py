"""ops.boxes: rotated IoU and NMS against shapely references and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ops.boxes as ob
from geo3d.errors import InputError
from ops.boxes import batched_nms_rotated, boxes_iou_3d, boxes_iou_bev, boxes_overlap_bev, nms_rotated
from ops.reference.boxes import (
    iou_3d_reference,
    iou_bev_reference,
    nms_rotated_reference,
    overlap_bev_reference,
)


def _random_boxes(n: int, seed: int, extent: float = 10.0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([extent, extent, 1.0]).double()
    size = 0.5 + 3 * torch.rand(n, 3, generator=g, dtype=torch.float64)
    yaw = (torch.rand(n, 1, generator=g, dtype=torch.float64) - 0.5) * 4 * math.pi
    return torch.cat([centre, size, yaw], 1).to(dtype)


def _detections(n_objects: int, per_object: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Jittered detections around objects: boxes (N, 7) float32 and scores (N,)."""
    g = torch.Generator().manual_seed(seed)
    objects = _random_boxes(n_objects, seed, extent=30.0, dtype=torch.float32).repeat_interleave(per_object, 0)
    jitter = torch.randn(objects.shape, generator=g) * torch.tensor([0.4, 0.4, 0.1, 0.2, 0.1, 0.1, 0.2])
    return objects + jitter.abs() * (jitter.sign() + (jitter == 0)), torch.rand(len(objects), generator=g)


def _box(x=0.0, y=0.0, z=0.0, dx=2.0, dy=2.0, dz=2.0, yaw=0.0) -> list[float]:
    return [x, y, z, dx, dy, dz, yaw]


# ---------------------------------------------------------------------------------------------------- IoU


def test_identical_rotated_boxes_have_iou_one():
    # OpenPCDet #972: the KITTI numba kernel returns ~0 here.
    yaw = torch.linspace(-2 * math.pi, 2 * math.pi, 721)
    g = torch.Generator().manual_seed(0)
    boxes = torch.cat([(torch.rand(721, 3, generator=g) - 0.5) * 160, 0.3 + 4 * torch.rand(721, 3, generator=g),
                       yaw[:, None]], 1)
    for iou in (boxes_iou_bev(boxes, boxes).diagonal(), boxes_iou_3d(boxes, boxes).diagonal()):
        assert iou.dtype == torch.float32
        assert float((iou - 1).abs().max()) <= 1e-6


def test_identical_boxes_at_exact_multiples_of_45_degrees():
    yaw = torch.arange(-16, 17, dtype=torch.float64) * math.pi / 4
    boxes = torch.stack([torch.tensor(_box(3.0, -2.0, 0.5, 4.0, 1.8, 1.5, float(a)), dtype=torch.float64) for a in yaw])
    iou = boxes_iou_bev(boxes, boxes).diagonal()
    assert float((iou - 1).abs().max()) <= 1e-9


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_shapely_on_random_boxes(seed):
    a, b = _random_boxes(70, seed), _random_boxes(50, seed + 10)
    ref_bev = iou_bev_reference(a.numpy(), b.numpy())
    assert (ref_bev > 0).sum() > 300  # many overlapping pairs
    np.testing.assert_allclose(boxes_iou_bev(a, b).numpy(), ref_bev, rtol=0, atol=1e-8)
    np.testing.assert_allclose(boxes_iou_3d(a, b).numpy(), iou_3d_reference(a.numpy(), b.numpy()), rtol=0, atol=1e-8)
    np.testing.assert_allclose(boxes_overlap_bev(a, b).numpy(), overlap_bev_reference(a.numpy(), b.numpy()),
                               rtol=0, atol=1e-7)


def test_matches_shapely_on_jittered_detections():
    boxes, _ = _detections(10, 12, seed=3)
    ref = iou_bev_reference(boxes.numpy(), boxes.numpy())
    np.testing.assert_allclose(boxes_iou_bev(boxes, boxes).numpy(), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("yaw", [0.0, 0.3, math.pi / 4, 1.0, math.pi / 2, 2.5, -3.0])
def test_touching_boxes_have_zero_iou(yaw):
    c, s = math.cos(yaw), math.sin(yaw)
    a = torch.tensor([_box(1.0, 2.0, 0.0, 4.0, 2.0, 1.0, yaw)], dtype=torch.float64)
    # One box further along the box's x axis (shares an edge), one diagonally (shares a corner).
    edge = torch.tensor([_box(1.0 + 4 * c, 2.0 + 4 * s, 0.0, 4.0, 2.0, 1.0, yaw)], dtype=torch.float64)
    corner = torch.tensor([_box(1 + 4 * c - 2 * s, 2 + 4 * s + 2 * c, 0.0, 4.0, 2.0, 1.0, yaw)], dtype=torch.float64)
    for other in (edge, corner):
        assert float(boxes_iou_bev(a, other)) <= 1e-6
        assert float(boxes_iou_3d(a, other)) <= 1e-6


@pytest.mark.parametrize("inner_yaw", [0.0, 0.4, math.pi / 4, 2.0])
def test_box_inside_another(inner_yaw):
    outer = torch.tensor([_box(5.0, 5.0, 1.0, 10.0, 6.0, 4.0, 0.7)], dtype=torch.float64)
    inner = torch.tensor([_box(5.3, 4.8, 1.2, 2.0, 1.0, 1.0, inner_yaw)], dtype=torch.float64)
    assert float(boxes_overlap_bev(inner, outer)) == pytest.approx(2.0, abs=1e-9)
    assert float(boxes_iou_bev(inner, outer)) == pytest.approx(2.0 / 60.0, abs=1e-9)
    assert float(boxes_iou_bev(outer, inner)) == pytest.approx(2.0 / 60.0, abs=1e-9)
    assert float(boxes_iou_3d(inner, outer)) == pytest.approx(2.0 / 240.0, abs=1e-9)


@pytest.mark.parametrize("yaw", [0.0, 0.5, math.pi / 2, -2.0])
def test_parallel_edges_hand_computed(yaw):
    # Same yaw, shifted by (1, 0.5) along the box's own axes: overlap (4 - 1) x (2 - 0.5) = 4.5 m^2.
    c, s = math.cos(yaw), math.sin(yaw)
    a = torch.tensor([_box(0.0, 0.0, 0.0, 4.0, 2.0, 2.0, yaw)], dtype=torch.float64)
    b = torch.tensor([_box(1.0 * c - 0.5 * s, 1.0 * s + 0.5 * c, 0.0, 4.0, 2.0, 2.0, yaw)], dtype=torch.float64)
    assert float(boxes_overlap_bev(a, b)) == pytest.approx(4.5, abs=1e-9)
    assert float(boxes_iou_bev(a, b)) == pytest.approx(4.5 / (16 - 4.5), abs=1e-9)


def test_square_and_45_degree_square_make_an_octagon():
    a = torch.tensor([_box()], dtype=torch.float64)
    b = torch.tensor([_box(yaw=math.pi / 4)], dtype=torch.float64)
    octagon = 8 * (math.sqrt(2) - 1)  # side-2 square intersected with itself rotated by 45 degrees
    assert float(boxes_overlap_bev(a, b)) == pytest.approx(octagon, abs=1e-9)
    assert float(boxes_iou_bev(a, b)) == pytest.approx(octagon / (8 - octagon), abs=1e-9)


def test_iou_3d_hand_computed():
    a = torch.tensor([_box()])
    b = torch.tensor([_box(x=1.0, z=0.5)])  # BEV overlap 2 m^2, z overlap 1.5 m
    assert float(boxes_iou_3d(a, b)) == pytest.approx(3.0 / 13.0, abs=1e-7)
    above = torch.tensor([_box(z=2.0)])  # touching in z
    assert float(boxes_iou_3d(a, above)) == 0.0
    assert float(boxes_iou_bev(a, above)) == pytest.approx(1.0, abs=1e-7)


def test_far_apart_boxes_are_exactly_zero():
    a = torch.tensor([_box(), _box(yaw=0.7)])
    b = torch.tensor([_box(x=50.0), _box(y=-3.0, yaw=0.2)])
    assert boxes_iou_bev(a, b).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert boxes_iou_3d(a, b).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_empty_inputs():
    boxes = _random_boxes(5, 0)
    empty = torch.zeros(0, 7)
    assert boxes_iou_bev(empty, boxes).shape == (0, 5)
    assert boxes_iou_3d(boxes, empty).shape == (5, 0)
    assert boxes_overlap_bev(empty, empty).shape == (0, 0)
    for keep in (nms_rotated(empty, torch.zeros(0), 0.5),
                 batched_nms_rotated(empty, torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)):
        assert keep.dtype == torch.int64 and keep.shape == (0,)


def test_zero_size_box_gives_zero_not_nan():
    a = torch.tensor([_box(dx=0.0, dy=0.0)])
    assert boxes_iou_bev(a, a).tolist() == [[0.0]]
    assert boxes_iou_3d(a, torch.tensor([_box()])).tolist() == [[0.0]]


def test_output_dtype_follows_input():
    boxes = _random_boxes(4, 0)
    assert boxes_iou_bev(boxes, boxes).dtype == torch.float64
    assert boxes_iou_3d(boxes.float(), boxes.float()).dtype == torch.float32


def test_small_chunks_give_the_same_matrix(monkeypatch):
    a, b = _random_boxes(40, 5), _random_boxes(30, 6)
    expected = boxes_iou_bev(a, b)
    monkeypatch.setattr(ob, "CHUNK_PAIRS", 7)
    assert torch.equal(boxes_iou_bev(a, b), expected)


@pytest.mark.parametrize(
    "a, match",
    [
        (torch.zeros(3, 6), r"a: expected shape \(N, 7\)"),
        (torch.zeros(3, 7, dtype=torch.int64), "floating-point"),
        (torch.tensor([_box(x=float("nan"))]), "NaN"),
        (torch.tensor([_box(dx=-1.0)]), "sizes"),
        (np.zeros((3, 7)), "torch.Tensor"),
    ],
)
def test_iou_rejects_bad_input(a, match):
    with pytest.raises(InputError, match=match):
        boxes_iou_bev(a, torch.zeros(0, 7))


# ---------------------------------------------------------------------------------------------------- NMS


@pytest.mark.parametrize("block", [16, None])
@pytest.mark.parametrize("threshold", [0.01, 0.1, 0.5, 0.8])
def test_nms_matches_reference(threshold, block, monkeypatch):
    if block:
        monkeypatch.setattr(ob, "NMS_BLOCK", block)  # many blocks: kept boxes suppress across blocks
    boxes, scores = _detections(20, 8, seed=4)
    boxes = torch.cat([boxes, _random_boxes(40, 9, extent=30.0, dtype=torch.float32)])
    scores = torch.cat([scores, torch.rand(40, generator=torch.Generator().manual_seed(9)) * 0.5])
    keep = nms_rotated(boxes, scores, threshold)
    assert keep.dtype == torch.int64
    assert keep.tolist() == nms_rotated_reference(boxes.numpy(), scores.numpy(), threshold)
    assert 20 <= len(keep) < len(boxes)


def test_nms_hand_computed_and_score_ties():
    boxes = torch.tensor([_box(), _box(x=0.2), _box(x=5.0), _box(x=5.1, yaw=0.1)])
    scores = torch.tensor([0.5, 0.9, 0.7, 0.7])  # tie between 2 and 3: lower index first
    assert nms_rotated(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms_rotated(boxes, scores, 0.99).tolist() == [1, 2, 3, 0]


def test_nms_suppresses_only_above_threshold():
    # The inner box lies strictly inside the outer one: IoU = 2 / 8 = 0.25 exactly.
    boxes = torch.tensor([_box(dx=4.0, dy=2.0, yaw=0.3), _box(dx=1.0, dy=2.0, yaw=0.3)], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8])
    assert float(boxes_iou_bev(boxes, boxes)[0, 1]) == 0.25
    assert nms_rotated(boxes, scores, 0.25).tolist() == [0, 1]
    assert nms_rotated(boxes, scores, 0.2499).tolist() == [0]


def test_nms_pre_and_post_max_size():
    boxes, scores = _detections(15, 6, seed=5)
    order = torch.argsort(scores, descending=True, stable=True)
    full = nms_rotated(boxes, scores, 0.2)
    assert torch.equal(nms_rotated(boxes, scores, 0.2, post_max_size=4), full[:4])
    top = order[:30]
    expected = top[torch.tensor(nms_rotated_reference(boxes[top].numpy(), scores[top].numpy(), 0.2))]
    assert torch.equal(nms_rotated(boxes, scores, 0.2, pre_max_size=30), expected)
    assert nms_rotated(boxes, scores, 0.2, pre_max_size=0).tolist() == []


def test_nms_clips_only_candidate_pairs(monkeypatch):
    boxes, scores = _detections(40, 5, seed=6)
    clipped = []
    clip_area = ob._clip_area
    monkeypatch.setattr(ob, "_clip_area", lambda a, b, size: clipped.append(len(a)) or clip_area(a, b, size))
    keep = nms_rotated(boxes, scores, 0.1)
    n = len(boxes)
    assert 0 < sum(clipped) < n * (n - 1) / 2 / 10  # far fewer than all pairs
    assert keep.tolist() == nms_rotated_reference(boxes.numpy(), scores.numpy(), 0.1)


def test_batched_nms_is_class_aware():
    boxes = torch.tensor([_box(), _box(x=0.1), _box(x=0.2)])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms_rotated(boxes, scores, 0.5).tolist() == [0]
    assert batched_nms_rotated(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("block", [16, None])
def test_batched_nms_matches_reference(block, monkeypatch):
    if block:
        monkeypatch.setattr(ob, "NMS_BLOCK", block)
    boxes, scores = _detections(20, 8, seed=7)
    labels = torch.randint(0, 3, (len(boxes),), generator=torch.Generator().manual_seed(7))
    keep = batched_nms_rotated(boxes, scores, labels, 0.1)
    assert keep.tolist() == nms_rotated_reference(boxes.numpy(), scores.numpy(), 0.1, labels.numpy())
    assert len(keep) > len(nms_rotated(boxes, scores, 0.1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scores": torch.rand(2)}, r"scores: expected a float tensor of shape \(3,\)"),
        ({"scores": torch.tensor([0.1, float("nan"), 0.2])}, "finite"),
        ({"iou_threshold": None}, "iou_threshold"),
        ({"pre_max_size": -1}, "pre_max_size"),
        ({"post_max_size": 2.5}, "post_max_size"),
        ({"labels": torch.zeros(3)}, "labels: expected an int64"),
        ({"labels": torch.zeros(2, dtype=torch.int64)}, r"labels: expected shape \(3,\)"),
    ],
)
def test_nms_rejects_bad_input(kwargs, match):
    args = {"boxes": _random_boxes(3, 0), "scores": torch.rand(3), "labels": torch.zeros(3, dtype=torch.int64),
            "iou_threshold": 0.5} | kwargs
    with pytest.raises(InputError, match=match):
        batched_nms_rotated(**args)


# ---------------------------------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
def test_cuda_matches_cpu():
    a, b = _random_boxes(60, 0, dtype=torch.float32), _random_boxes(40, 1, dtype=torch.float32)
    for fn in (boxes_iou_bev, boxes_iou_3d, boxes_overlap_bev):
        out = fn(a.cuda(), b.cuda())
        assert out.is_cuda
        torch.testing.assert_close(out.cpu(), fn(a, b), rtol=0, atol=1e-6)
    boxes, scores = _detections(20, 8, seed=8)
    labels = torch.arange(len(boxes)) % 3
    keep = nms_rotated(boxes.cuda(), scores.cuda(), 0.1)
    assert keep.is_cuda and torch.equal(keep.cpu(), nms_rotated(boxes, scores, 0.1))
    keep = batched_nms_rotated(boxes.cuda(), scores.cuda(), labels.cuda(), 0.1)
    assert torch.equal(keep.cpu(), batched_nms_rotated(boxes, scores, labels, 0.1))
