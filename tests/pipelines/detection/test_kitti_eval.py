"""KITTI evaluation against hand-computed cases.

Most cases use frames with one Car each: the GT is "easy" (2D height 60 px, not occluded or truncated)
and a detection is either an exact copy (IoU 1 in every metric) or far away (IoU 0). With one GT per
frame the official threshold sampling can be followed by hand; R40 needs at least 41 valid GTs to reach
100, so "perfect" sets use 41 frames.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch

from geo3d.io.kitti import KittiObject
from geo3d.types.boxes import box_corners
from ops.boxes import boxes_iou_3d, boxes_iou_bev
from pipelines.detection.kitti_eval import (
    box2d_overlap,
    camera_to_z_up_boxes,
    format_kitti_table,
    interpolated_ap,
    kitti_eval,
    score_thresholds,
)

CAR_HWL = (1.5, 1.6, 3.9)


def car(x: float = 0.0, z: float = 20.0, ry: float = 0.3, top: float = 150.0, height: float = 60.0,
        occluded: int = 0, truncated: float = 0.0, kind: str = "Car", score: float | None = None,
        alpha: float = 0.1, left: float = 500.0) -> KittiObject:
    """A Car-sized object with a 2D box ``height`` px tall (the 3D box is unrelated to the 2D one)."""
    return KittiObject(kind, truncated, occluded, alpha, (left, top, left + 1.5 * height, top + height), CAR_HWL,
                       (x, 1.6, z), ry, score)


def detect(obj: KittiObject, score: float) -> KittiObject:
    """An exact copy of ``obj`` as a detection."""
    return dataclasses.replace(obj, score=score)


def far_away(score: float) -> KittiObject:
    """A Car detection overlapping none of the :func:`car` boxes, in 2D or 3D."""
    return car(x=-30.0, z=60.0, left=50.0, top=300.0, score=score)


def perfect_frames(n: int = 41, obj=car) -> tuple[list, list]:
    """``n`` frames with one object each, detected exactly, scores 0.5 ... 0.9."""
    gts = [[obj()] for _ in range(n)]
    dts = [[detect(f[0], 0.5 + 0.4 * i / n)] for i, f in enumerate(gts)]
    return gts, dts


def values(results: dict[str, float], cls: str = "Car", metrics=("bbox", "bev", "3d"), level: str = "moderate",
           points: str = "R40") -> list[float]:
    return [results[f"{cls}_{m}_{points}_{level}"] for m in metrics]


# ------------------------------------------------------------------------------------- geometry helpers

def devkit_corners(loc, hwl, ry) -> np.ndarray:
    """(8, 3) corners in the camera frame, written from the KITTI devkit's definition."""
    h, w, length = hwl
    xs = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * length / 2
    ys = np.array([0, 0, 0, 0, -1, -1, -1, -1]) * h
    zs = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    rot = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    return (rot @ np.stack([xs, ys, zs])).T + np.asarray(loc)


def test_camera_to_z_up_boxes_hand_case():
    box = camera_to_z_up_boxes([[1.0, 2.0, 10.0]], [[1.5, 1.6, 4.0]], [0.0])
    np.testing.assert_allclose(box, [[10.0, -1.0, -1.25, 4.0, 1.6, 1.5, -math.pi / 2]])


def test_camera_to_z_up_boxes_maps_devkit_corners():
    rng = np.random.default_rng(0)
    loc = rng.uniform(-10, 30, (20, 3))
    hwl = rng.uniform(0.5, 5, (20, 3))
    ry = rng.uniform(-math.pi, math.pi, 20)
    z_up = camera_to_z_up_boxes(loc, hwl, ry)
    ours = box_corners(torch.from_numpy(z_up)).numpy()
    for i in range(20):
        cam = devkit_corners(loc[i], hwl[i], ry[i])
        expected = np.stack([cam[:, 2], -cam[:, 0], -cam[:, 1]], axis=1)  # X = z, Y = -x, Z = -y
        # Same 8 points, whatever their order.
        dist = np.linalg.norm(ours[i][:, None] - expected[None], axis=-1)
        assert dist.min(axis=1).max() < 1e-9 and dist.min(axis=0).max() < 1e-9


def test_mapping_puts_length_along_the_heading():
    """ry = 0 means length along camera x: a 1 m shift along x keeps (4 - 1) / (4 + 1) of the footprint."""
    a = camera_to_z_up_boxes([[0.0, 1.0, 20.0]], [[1.5, 2.0, 4.0]], [0.0])
    b = camera_to_z_up_boxes([[1.0, 1.0, 20.0]], [[1.5, 2.0, 4.0]], [0.0])
    up = camera_to_z_up_boxes([[0.0, 0.25, 20.0]], [[1.5, 2.0, 4.0]], [0.0])  # 0.75 m higher (y down)
    bev = boxes_iou_bev(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    iou3d = boxes_iou_3d(torch.from_numpy(a).float(), torch.from_numpy(up).float())
    assert float(bev) == pytest.approx(0.6, abs=1e-5)
    assert float(iou3d) == pytest.approx(0.75 / 2.25, abs=1e-5)


def test_box2d_overlap_hand_values():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [2.0, 2.0, 4.0, 4.0]])
    np.testing.assert_allclose(box2d_overlap(a, b), [[50 / 150, 0.0, 4 / 100]])
    np.testing.assert_allclose(box2d_overlap(b, a, over_first_area=True), [[0.5], [0.0], [1.0]])


# ------------------------------------------------------------------------------- curve building blocks

def test_score_thresholds_sample_every_other_tp_when_twice_as_many_gt():
    # 80 GTs: the recall step 1/80 is half the sample step 1/40, so TP ranks 1, 2, 4, 6, ..., 40 are kept.
    scores = np.linspace(0.99, 0.60, 40)
    kept = score_thresholds(scores, 80)
    np.testing.assert_allclose(kept, scores[[0, *range(1, 40, 2)]])


def test_score_thresholds_keep_every_tp_up_to_41_gt():
    scores = np.linspace(0.9, 0.5, 41)
    np.testing.assert_allclose(score_thresholds(scores[::-1], 41), scores)


def test_interpolated_ap_hand_curve():
    # Precision 1, 0.5, 0.8, 0.25 at the first four thresholds: max to the right is 1, 0.8, 0.8, 0.25.
    r11, r40 = interpolated_ap(np.array([1.0, 0.5, 0.8, 0.25]))
    assert r11 == pytest.approx(100 / 11)
    assert r40 == pytest.approx((0.8 + 0.8 + 0.25) / 40 * 100)


# ---------------------------------------------------------------------------------------- evaluation

def test_perfect_predictions_give_100_for_every_class_metric_and_difficulty():
    gts, dts = [], []
    for i in range(42):
        frame = [car(x=-8.0), car(x=0.0, kind="Pedestrian", left=700.0), car(x=8.0, kind="Cyclist", left=900.0)]
        gts.append(frame)
        dts.append([detect(o, 0.3 + 0.01 * i + 0.001 * k) for k, o in enumerate(frame)])
    results = kitti_eval(gts, dts)
    assert len(results) == 3 * 4 * 2 * 3 * 2  # classes x (3 metrics + aos) x R11/R40 x difficulties x sets
    for key, value in results.items():
        assert value == pytest.approx(100.0), key


@pytest.mark.parametrize("ry", [0.0, 0.4, math.pi / 4, math.pi / 2, 2.5, -1.2, math.pi])
def test_identical_rotated_boxes_match(ry):
    gts, dts = perfect_frames(obj=lambda: car(ry=ry))
    assert values(kitti_eval(gts, dts, classes=("Car",))) == pytest.approx([100.0] * 3)


def test_shifted_box_is_a_false_positive_and_a_miss():
    gt = car(x=0.0, ry=0.0)
    shifted = dataclasses.replace(gt, location=(1.5, 1.6, 20.0), score=0.9)  # BEV IoU (3.9-1.5)/(3.9+1.5) < 0.7
    results = kitti_eval([[gt]], [[shifted]], classes=("Car",))
    assert values(results, points="R11", metrics=("bev", "3d")) == [0.0, 0.0]
    # The 2D box is unchanged: one TP out of one GT gives precision 1 at the first of 41 points only.
    assert results["Car_bbox_R11_moderate"] == pytest.approx(100 / 11)
    assert results["Car_bbox_R40_moderate"] == 0.0

    # With a second, correctly detected GT at a lower score, the shifted box is a FP above the
    # one threshold (0.5): precision 1 / 2 there, so R11 = 0.5 / 11.
    other = car(x=5.0)
    results = kitti_eval([[gt], [other]], [[shifted], [detect(other, 0.5)]], classes=("Car",))
    assert results["Car_bev_R11_moderate"] == pytest.approx(0.5 / 11 * 100)
    assert results["Car_bbox_R11_moderate"] == pytest.approx(100 / 11)


def test_duplicate_detection_is_a_false_positive():
    gts, dts = perfect_frames()
    # A second copy of the last GT, scoring just above the lowest TP score (0.5): the GT keeps its first
    # copy, and the duplicate is a FP at the lowest of the 41 thresholds only, where precision is 41 / 42.
    dts[40].append(detect(gts[40][0], 0.501))
    results = kitti_eval(gts, dts, classes=("Car",))
    assert values(results, points="R40") == pytest.approx([(39 + 41 / 42) / 40 * 100] * 3)
    assert values(results, points="R11") == pytest.approx([(10 + 41 / 42) / 11 * 100] * 3)


def test_score_ordering_matters():
    gts, dts = perfect_frames()
    high = [f + ([far_away(0.95)] if i == 0 else []) for i, f in enumerate(dts)]
    low = [f + ([far_away(0.05)] if i == 0 else []) for i, f in enumerate(dts)]
    assert values(kitti_eval(gts, high, classes=("Car",))) == pytest.approx([100 * 41 / 42] * 3)
    assert values(kitti_eval(gts, low, classes=("Car",))) == pytest.approx([100.0] * 3)


def test_hand_made_precision_recall_curve_r11_vs_r40():
    # 80 GTs. By descending score: 20 TPs, 20 FPs, 20 TPs; 20 GTs are missed.
    gts = [[car()] for _ in range(80)]
    dts = [[detect(gts[i][0], 0.99 - 0.01 * i)] for i in range(20)]
    dts += [[far_away(0.79 - 0.01 * i)] for i in range(20)]
    dts += [[detect(gts[40 + i][0], 0.59 - 0.01 * i)] for i in range(20)]
    dts += [[] for _ in range(20)]
    # Thresholds at TP ranks k = 1, 2, 4, ..., 40 (see the score_thresholds test): index j >= 1 holds
    # k = 2j. Precision is 1 for k <= 20 (j <= 10) and k / (k + 20) after, rising to 40 / 60; max to
    # the right: 1 for j <= 10, 2/3 for j = 11 ... 20, 0 beyond.
    r11 = (3 * 1.0 + 3 * 2 / 3) / 11 * 100  # points 0, 4, 8 | 12, 16, 20
    r40 = (10 * 1.0 + 10 * 2 / 3) / 40 * 100  # points 1..10 | 11..20
    results = kitti_eval(gts, dts, classes=("Car",))
    assert values(results, points="R11") == pytest.approx([r11] * 3)
    assert values(results, points="R40") == pytest.approx([r40] * 3)


def test_occluded_gt_is_ignored_for_easy_and_moderate_counted_for_hard():
    gts, dts = perfect_frames()
    hidden = car(x=5.0, occluded=2)
    detected = kitti_eval(gts + [[hidden]], dts + [[detect(hidden, 0.99)]], classes=("Car",))
    missed = kitti_eval(gts + [[hidden]], dts + [[]], classes=("Car",))
    for level in ("easy", "moderate"):
        # Its detection is neither a TP nor a FP, and missing it is not a FN.
        assert values(detected, level=level) == pytest.approx([100.0] * 3)
        assert values(missed, level=level) == pytest.approx([100.0] * 3)
    assert values(detected, level="hard") == pytest.approx([100.0] * 3)  # 42 valid GTs, all found
    # Hard: 42 GTs, 41 TPs. The sampling keeps 40 thresholds (TP rank 32 is skipped: recall 32/42 is
    # farther from the sample 31/40 than 33/42 is), all at precision 1: R40 = 39/40, R11 = 10/11.
    assert values(missed, level="hard") == pytest.approx([100 * 39 / 40] * 3)
    assert values(missed, level="hard", points="R11") == pytest.approx([100 * 10 / 11] * 3)


def test_low_detection_is_ignored_below_the_minimum_height():
    gts, dts = perfect_frames()
    low = car(x=-30.0, z=60.0, left=50.0, top=300.0, height=30.0, score=0.95)  # a 30 px tall false positive
    results = kitti_eval(gts, [f + ([low] if i == 0 else []) for i, f in enumerate(dts)], classes=("Car",))
    assert values(results, level="easy") == pytest.approx([100.0] * 3)  # below 40 px: ignored
    assert values(results, level="moderate") == pytest.approx([100 * 41 / 42] * 3)  # above 25 px: a FP


def test_van_is_ignored_for_car_but_a_truck_is_not():
    gts, dts = perfect_frames()
    for kind, expected in (("Van", 100.0), ("Truck", 100 * 41 / 42)):
        other = car(x=5.0, kind=kind)
        results = kitti_eval(gts + [[other]], dts + [[detect(dataclasses.replace(other, type="Car"), 0.99)]],
                             classes=("Car",))
        assert values(results) == pytest.approx([expected] * 3), kind


def test_dontcare_suppresses_a_detection_inside_it():
    gts, dts = perfect_frames()
    region = KittiObject("DontCare", -1, -1, -10, (40.0, 290.0, 200.0, 400.0), (-1, -1, -1),
                         (-1000, -1000, -1000), -10)
    inside = far_away(0.95)  # 2D box (50, 300, 140, 360): inside the region
    frames = [f + ([region] if i == 0 else []) for i, f in enumerate(gts)]
    with_fp = [f + ([inside] if i == 0 else []) for i, f in enumerate(dts)]
    results = kitti_eval(frames, with_fp, classes=("Car",))
    assert results["Car_bbox_R40_moderate"] == pytest.approx(100.0)
    # kitti_object_eval_python applies DontCare to the bbox metric only; the C++ devkit to all.
    assert values(results, metrics=("bev", "3d")) == pytest.approx([100 * 41 / 42] * 2)
    everywhere = kitti_eval(frames, with_fp, classes=("Car",), dontcare_all_metrics=True)
    assert values(everywhere) == pytest.approx([100.0] * 3)
    # Control: without the region the same detection is a false positive.
    assert kitti_eval(gts, with_fp, classes=("Car",))["Car_bbox_R40_moderate"] == pytest.approx(100 * 41 / 42)


def test_aos_weights_true_positives_by_orientation():
    gts, dts = perfect_frames()
    turned = [[dataclasses.replace(f[0], alpha=f[0].alpha + math.pi / 2)] for f in dts]
    results = kitti_eval(gts, turned, classes=("Car",))
    assert results["Car_bbox_R40_moderate"] == pytest.approx(100.0)
    assert results["Car_aos_R40_moderate"] == pytest.approx(50.0)  # (1 + cos(pi / 2)) / 2
    no_alpha = [[dataclasses.replace(f[0], alpha=-10.0)] for f in dts]
    assert "Car_aos_R40_moderate" not in kitti_eval(gts, no_alpha, classes=("Car",))


def test_loose_overlaps_accept_a_box_at_iou_0_6():
    gt = car(x=0.0, ry=0.0)
    gts = [[gt] for _ in range(41)]
    # 1 m along the 3.9 m length: BEV IoU 2.9 / 4.9 = 0.59, between the loose 0.5 and the strict 0.7.
    dts = [[dataclasses.replace(gt, location=(1.0, 1.6, 20.0), score=0.5 + 0.01 * i)] for i in range(41)]
    results = kitti_eval(gts, dts, classes=("Car",), metrics=("bev",))
    assert results["Car_bev_R40_moderate"] == 0.0
    assert results["Car_bev_R40_moderate_loose"] == pytest.approx(100.0)


def test_class_without_valid_gt_scores_zero():
    gts, dts = perfect_frames()
    results = kitti_eval(gts, dts, classes=("Pedestrian",), metrics=("3d",))
    assert set(results.values()) == {0.0}


def test_format_kitti_table():
    gts, dts = perfect_frames()
    table = format_kitti_table(kitti_eval(gts, dts, classes=("Car", "Pedestrian")))
    lines = table.splitlines()
    assert lines[0].split() == ["Car", "AP_R11@0.70,", "0.70,", "0.70", "easy", "moderate", "hard"]
    assert lines[1].split() == ["bbox", "AP", "100.0000", "100.0000", "100.0000"]
    assert "Car AP_R40@0.70, 0.50, 0.50" in table
    assert "Pedestrian AP_R40@0.50, 0.25, 0.25" in table
    assert len(lines) == 2 * 4 * 5  # classes x (R11, R40) x (strict, loose) x (title + 4 rows)


def test_bad_input_raises_value_errors_naming_the_field():
    gts, dts = perfect_frames(n=2)
    with pytest.raises(ValueError, match="dt_annos: expected one list per frame"):
        kitti_eval(gts, dts[:1])
    with pytest.raises(ValueError, match=r"dt_annos\[1\]\[0\].score"):
        kitti_eval(gts, [dts[0], [dataclasses.replace(dts[1][0], score=None)]])
    with pytest.raises(ValueError, match="classes: expected names among"):
        kitti_eval(gts, dts, classes=("Bus",))
    with pytest.raises(ValueError, match="metrics: expected names among"):
        kitti_eval(gts, dts, metrics=("2d",))
    with pytest.raises(ValueError, match=r"gt_annos\[0\]\[0\]: expected finite"):
        kitti_eval([[dataclasses.replace(gts[0][0], rotation_y=float("nan"))], gts[1]], dts)


def test_200_frames_of_10_objects_take_seconds():
    rng = np.random.default_rng(0)
    gts, dts = [], []
    for _ in range(200):
        frame = [car(x=float(rng.uniform(-20, 20)), z=float(rng.uniform(5, 60)), ry=float(rng.uniform(-3, 3)),
                     kind=str(rng.choice(["Car", "Pedestrian", "Cyclist"])), left=float(rng.uniform(0, 1100)),
                     height=float(rng.uniform(20, 120)), occluded=int(rng.integers(0, 3))) for _ in range(10)]
        gts.append(frame)
        dts.append([detect(o, float(rng.uniform())) for o in frame])
    kitti_eval(gts[:1], dts[:1])  # compile (or load) the numba kernels first
    start = time.perf_counter()
    results = kitti_eval(gts, dts)
    elapsed = time.perf_counter() - start
    assert results["Car_3d_R40_moderate"] == pytest.approx(100.0)
    assert elapsed < 20.0  # typically ~1 s; a pure-Python matching loop takes minutes
