"""Error analysis: matching, label replacement checked against the KITTI evaluation of the labels themselves,
box agreement against by-hand numbers, the bootstrap's determinism, and the script's report and bad input."""

from __future__ import annotations

import dataclasses

import pytest

from geo3d.io.kitti import KittiObject, write_label
from pipelines.detection.error_analysis import (
    FIELDS,
    bootstrap_ap,
    box_agreement,
    match_to_labels,
    oracle_aps,
    replace_fields,
)
from pipelines.detection.kitti_eval import kitti_eval
from tests.scripts import load_script


def _car(x: float, z: float, h: float = 1.5, y: float = 1.7, score: float | None = None) -> KittiObject:
    return KittiObject("Car", 0.0, 0, 0.0, (100.0, 100.0, 200.0, 180.0), (h, 1.6, 3.9), (x, y, z), 0.2, score)


def _frames(n: int = 24) -> list[list[KittiObject]]:
    """Labels: two cars per frame, heights varying. (KITTI's R40 samples recall at the scores of the true positives:
    with fewer than 40 labels even perfect detections score below 100.)"""
    return [[_car(-3.0 + 0.25 * i, 10.0 + i, h=1.4 + 0.01 * i), _car(4.0, 25.0 - i, h=1.6)] for i in range(n)]


def _scored(labels) -> list[list[KittiObject]]:
    """The labels as detections, each with its own score (tied scores blur KITTI's recall sampling)."""
    return [[dataclasses.replace(g, score=0.95 - 0.01 * (2 * i + k)) for k, g in enumerate(frame)]
            for i, frame in enumerate(labels)]


def _detections(labels, bottom_shift: float = 0.0) -> list[list[KittiObject]]:
    """Detections at the labels, bottoms raised by ``bottom_shift`` metres, all 1.5 m tall."""
    return [[dataclasses.replace(d, location=(d.location[0], d.location[1] - bottom_shift, d.location[2]),
                                 dimensions=(1.5, 1.6, 3.9)) for d in frame] for frame in _scored(labels)]


def test_match_to_labels():
    labels = [[_car(0.0, 10.0), _car(3.0, 10.0), dataclasses.replace(_car(0.5, 10.0), type="Van")]]
    dets = [[_car(0.4, 10.0, score=0.9), _car(2.2, 10.0, score=0.9), _car(3.1, 10.3, score=0.1),
             dataclasses.replace(_car(0.0, 10.0, score=0.9), type="Pedestrian")]]
    assert match_to_labels(labels, dets) == [[0, 1, 1, None]]  # the Van and the Pedestrian are not Cars
    assert match_to_labels(labels, dets, min_score=0.5) == [[0, 1, None, None]]
    assert match_to_labels(labels, dets, max_distance=0.5) == [[0, None, 1, None]]


def test_replace_fields():
    d, g = _car(1.0, 10.0, h=1.4, y=1.9), dataclasses.replace(_car(1.2, 10.5, h=1.6, y=1.7), rotation_y=1.0)
    r = replace_fields(d, g, ("bottom",))
    assert r.location == (1.0, 1.7, 10.0) and r.dimensions == d.dimensions
    r = replace_fields(d, g, FIELDS)
    assert (r.location, r.dimensions, r.rotation_y) == (g.location, g.dimensions, g.rotation_y)
    assert r.score == d.score and r.bbox == d.bbox
    with pytest.raises(ValueError, match="unknown fields"):
        replace_fields(d, g, ("size",))


def test_oracle_recovers_what_the_replaced_error_costs():
    labels = _frames()
    perfect = _scored(labels)
    reference = kitti_eval(labels, perfect, classes=("Car",), metrics=("bev", "3d"))
    assert reference["Car_3d_R40_moderate"] == pytest.approx(100.0)
    sunk = _detections(labels, bottom_shift=-0.6)  # bottoms 0.6 m low, heights all 1.5
    plain, bottom, both, heading = oracle_aps(labels, sunk, [(), ("bottom",), ("bottom", "height"), ("heading",)])
    assert plain["3d"] < 50 and plain["bev"] == pytest.approx(100.0)
    assert both["3d"] == pytest.approx(100.0)
    assert plain["3d"] < bottom["3d"] <= 100.0
    assert heading["3d"] == pytest.approx(plain["3d"])  # headings were right already


def test_box_agreement_by_hand():
    labels = _frames(4)
    agreement = box_agreement(labels, _detections(labels, bottom_shift=0.1))
    h = [1.4, 1.6, 1.41, 1.6, 1.42, 1.6, 1.43, 1.6]
    assert agreement["height"]["count"] == 8
    assert agreement["height"]["pred_std"] == 0.0 and agreement["height"]["correlation"] != agreement["height"][
        "correlation"]  # NaN: a constant prediction
    assert agreement["height"]["error_mean"] == pytest.approx(sum(1.5 - v for v in h) / 8)
    assert agreement["bottom"]["error_mean"] == pytest.approx(0.1)  # raised by 0.1 m (camera y points down)
    assert agreement["bottom"]["error_std"] == pytest.approx(0.0, abs=1e-12)
    assert agreement["top"]["error_mean"] == pytest.approx(0.1 + sum(1.5 - v for v in h) / 8)
    assert agreement["width"]["error_median_abs"] == 0.0
    assert box_agreement(labels, [[] for _ in labels]) == {}


def test_bootstrap_is_deterministic_and_zero_for_perfect_detections():
    labels = _frames()
    sunk = _detections(labels, bottom_shift=0.3)
    a, b = bootstrap_ap(labels, sunk, draws=20, seed=3), bootstrap_ap(labels, sunk, draws=20, seed=3)
    assert a == b and a["p05"] <= a["p95"] and a["std"] > 0
    perfect = _scored(labels)
    p = bootstrap_ap(labels, perfect, draws=10)
    assert p["ap"] == pytest.approx(100.0) and p["std"] == pytest.approx(0.0, abs=1e-9)


def _script():
    return load_script("detection_error_analysis")


def test_script_report_and_bad_input(tmp_path, capsys):
    labels = _frames()
    (tmp_path / "training" / "label_2").mkdir(parents=True)
    (tmp_path / "results").mkdir()
    for i, (gt, dt) in enumerate(zip(labels, _detections(labels, bottom_shift=-0.6))):
        write_label(tmp_path / "training" / "label_2" / f"{i:06d}.txt", gt)
        write_label(tmp_path / "results" / f"{i:06d}.txt", dt)
    script = _script()
    assert script.main([str(tmp_path / "results"), str(tmp_path), "--draws", "5", "--out",
                        str(tmp_path / "errors.md")]) == 0
    text = (tmp_path / "errors.md").read_text()
    assert "| bottom and height | 100.00 | 100.00 |" in text and "Bootstrap over frames (5 draws)" in text
    assert capsys.readouterr().out == text
    (tmp_path / "training" / "label_2" / "000002.txt").unlink()  # a result frame without its label
    assert script.main([str(tmp_path / "results"), str(tmp_path), "--draws", "0"]) == 2
    err = capsys.readouterr().err
    assert "label_2" in err and "000002.txt" in err
    assert script.main([str(tmp_path / "nothing"), str(tmp_path)]) == 2
    assert "nothing" in capsys.readouterr().err
