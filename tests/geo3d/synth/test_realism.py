"""The realism statistics (synthetic vs real LiDAR) against independent computations, and the script."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geo3d.io.kitti import objects_to_boxes_lidar, read_calib, read_label
from geo3d.synth.realism import (
    DISTANCE_BINS,
    compare_statistics,
    dataset_statistics,
    fit_ground_plane,
    fit_power_law,
)
from geo3d.types import box_corners
from tests.scripts import load_script


@pytest.fixture(scope="module")
def synth3(tmp_path_factory) -> Path:
    """Three synthetic KITTI frames."""
    from geo3d.synth.kitti import generate_kitti

    return Path(generate_kitti(tmp_path_factory.mktemp("synth3"), frames=3, val_frames=0, seed=0, workers=1,
                               progress=False))


def _in_view(points: np.ndarray, calib, width: int, height: int) -> np.ndarray:
    """Camera-view test written out from the calibration matrices (P2 R0 Tr_velo_to_cam)."""
    velo = np.c_[points[:, :3].astype(np.float64), np.ones(len(points))]
    rect = (np.asarray(calib.R0_rect) @ (np.asarray(calib.Tr_velo_to_cam) @ velo.T)).T
    uvw = (np.asarray(calib.P2) @ np.c_[rect, np.ones(len(rect))].T).T
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    return (rect[:, 2] > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)


def _brute_force_counts(points: np.ndarray, boxes: torch.Tensor) -> list[int]:
    """Points inside each rotated box: shapely's polygon test on the bottom face, then the z interval."""
    shapely = pytest.importorskip("shapely")
    counts = []
    for box, corners in zip(boxes.double().numpy(), box_corners(boxes.double()).numpy()):
        polygon = shapely.Polygon(corners[:4, :2])
        zmin, zmax = box[2] - box[5] / 2, box[2] + box[5] / 2
        near = (np.abs(points[:, 0] - box[0]) < 5) & (np.abs(points[:, 1] - box[1]) < 5)
        p = points[near].astype(np.float64)
        inside = shapely.intersects_xy(polygon, p[:, 0], p[:, 1]) & (p[:, 2] >= zmin) & (p[:, 2] <= zmax)
        counts.append(int(inside.sum()))
    return counts


@pytest.mark.parametrize("which", ["real", "synth"])
def test_dataset_statistics_match_independent_counts(which, synth3, request):
    if which == "real":  # skips when the shared data are absent
        folder = request.getfixturevalue("shared_data") / "kitti" / "training"
    else:
        folder = synth3 / "training"
    stats = dataset_statistics(folder)
    ids = sorted(p.stem for p in (folder / "velodyne").glob("*.bin"))
    assert stats["frame_ids"] == ids
    assert stats["points_per_frame"] == [(folder / "velodyne" / f"{i}.bin").stat().st_size // 16 for i in ids]
    expected_cars, ranges = [], []
    for i, frame_id in enumerate(ids):
        points = np.fromfile(folder / "velodyne" / f"{frame_id}.bin", dtype=np.float32).reshape(-1, 4)
        calib = read_calib(folder / "calib" / f"{frame_id}.txt")
        width, height = Image.open(folder / "image_2" / f"{frame_id}.png").size
        view = _in_view(points, calib, width, height)
        assert stats["points_in_view_per_frame"][i] == int(view.sum())
        ranges.append(np.sqrt((points[view, :3].astype(np.float64) ** 2).sum(1)))
        visible = [o for o in read_label(folder / "label_2" / f"{frame_id}.txt") if o.type != "Car" or o.occluded == 0]
        cars = objects_to_boxes_lidar(visible, calib, ("Car",)).boxes
        for box, n in zip(cars, _brute_force_counts(points, cars)):
            expected_cars.append((frame_id, math.hypot(float(box[0]), float(box[1])), n))
    got = [(c["frame_id"], c["distance_m"], c["points"]) for c in stats["cars"]]
    assert [(f, n) for f, _, n in got] == [(f, n) for f, _, n in expected_cars]
    assert [d for _, d, _ in got] == pytest.approx([d for _, d, _ in expected_cars], abs=1e-4)
    if which == "real":  # the shared frames' four Cars (58.8, 13, 38 and 51 m in the camera's z)
        assert len(got) == 4 and all(n > 0 for _, _, n in got)
    for row, (lo, hi) in zip(stats["distance_bins"], DISTANCE_BINS):
        sel = [n for _, d, n in expected_cars if lo <= d < hi]
        assert row["cars"] == len(sel)
        assert row["median_points"] == (float(np.median(sel)) if sel else None)
    ranges = np.concatenate(ranges)
    edges = np.array(stats["histograms"]["range_m"]["edges"])
    share = np.histogram(ranges, edges)[0] / len(ranges)
    np.testing.assert_allclose(stats["histograms"]["range_m"]["share"], share, atol=1e-12)
    assert stats["medians"]["range_m"] == pytest.approx(float(np.median(ranges)), rel=1e-9)
    # KITTI's sensor is 1.73 m above a nearly level ground; the synthetic ground is at -1.73 m too
    for _, _, nz, d in stats["ground_planes"]:
        assert nz > math.cos(math.radians(5)) and 1.5 < d < 2.0


def test_fit_ground_plane_recovers_a_tilted_plane_among_clutter():
    rng = np.random.default_rng(1)
    n = np.array([0.03, -0.05, 1.0])
    n /= np.linalg.norm(n)
    d = 1.73
    xy = rng.uniform([-40, -40], [40, 40], size=(30000, 2))
    z = -(n[0] * xy[:, 0] + n[1] * xy[:, 1] + d) / n[2] + rng.normal(0, 0.02, len(xy))
    ground = np.c_[xy, z]
    walls = np.c_[rng.uniform(-40, 40, 8000), np.full(8000, 12.0), rng.uniform(-1.7, 6, 8000)]
    boxes = np.c_[rng.uniform(5, 30, 5000), rng.uniform(-8, 8, 5000), rng.uniform(-1.0, 0.0, 5000)]
    below = np.c_[rng.uniform(-20, 20, 300), rng.uniform(-20, 20, 300), rng.uniform(-4, -3, 300)]  # multipath
    plane = fit_ground_plane(np.concatenate([ground, walls, boxes, below]), seed=0)
    assert np.degrees(np.arccos(plane[:3] @ n)) < 0.3
    assert plane[3] == pytest.approx(d, abs=0.01)
    again = fit_ground_plane(np.concatenate([ground, walls, boxes, below]), seed=0)
    np.testing.assert_array_equal(plane, again)


def test_fit_power_law_and_compare_flags():
    d = np.array([5.0, 10.0, 20.0, 40.0, 80.0])
    fit = fit_power_law(d, 3.0e5 / d ** 2.2)
    assert fit["a"] == pytest.approx(3.0e5, rel=1e-9) and fit["b"] == pytest.approx(2.2, rel=1e-9)
    assert fit_power_law(np.array([10.0]), np.array([5.0])) is None
    assert fit_power_law(np.array([10.0, 20.0]), np.array([0.0, 5.0])) is None  # zero-point cars are left out

    def stats(points, medians, fitted, share):
        return {"mean_points": points, "mean_points_in_view": points / 6, "medians": medians,
                "distance_bins": [{"bin": f"{lo:g}-{hi:g}", "cars": 1 if m else 0, "median_points": m}
                                  for (lo, hi), m in zip(DISTANCE_BINS, fitted[0])],
                "fitted_points": dict(zip(("10", "20", "40"), fitted[1])),
                "histograms": {k: {"share": share} for k in ("range_m", "height_m", "intensity")}}

    medians = {"range_m": 10.0, "height_m": 0.1, "intensity": 0.25}
    real = stats(100.0, medians, ([None, 600.0, None, None, 50.0], [1000.0, 300.0, 50.0]), [0.5, 0.5, 0.0])
    synth = stats(130.0, medians, ([2000.0, 500.0, 90.0, 40.0, 30.0], [1200.0, 300.0, 20.0]), [0.0, 0.5, 0.5])
    out = compare_statistics(real, synth)
    rows = {r["statistic"]: r for r in out["rows"]}
    assert rows["points per frame (mean)"]["relative"] == pytest.approx(0.3) and rows["points per frame (mean)"]["flag"]
    assert rows["points on a car, 10-20 m (median)"]["relative"] == pytest.approx(-1 / 6)
    assert rows["points on a car, 10-20 m (median)"]["flag"] is False
    assert rows["points on a car, 0-10 m (median)"]["flag"] is None
    assert out["flagged"] == ["points per frame (mean)", "points in camera view per frame (mean)",
                              "points on a car, 40-60 m (median)", "points on a car at 40 m (fitted a / d^b)"]
    assert out["histogram_distance"]["range_m"] == pytest.approx(0.5)


def test_script_writes_table_json_and_plot(shared_data, synth3, tmp_path, capsys):
    script = load_script("synth_vs_real")
    out = tmp_path / "out"
    real = shared_data / "kitti" / "training"
    assert script.main(["--real", str(real), "--synth", str(synth3), "--frames", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| points per frame (mean) |" in printed and "over 25%" in printed
    saved = json.loads((out / "realism.json").read_text())
    assert saved["synth"]["frame_ids"] == ["000000", "000001"] and len(saved["real"]["frame_ids"]) == 3
    assert (out / "realism.md").read_text().count("\n| points on a car") == 8
    image = np.asarray(Image.open(out / "realism.png").convert("RGB"))
    assert image.shape == (840, 1200, 3) and (image != 255).any(-1).mean() > 0.02
    assert script.main(["--real", str(tmp_path / "missing"), "--synth", str(synth3), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("synth_vs_real: error:") and "missing" in err and "\n" not in err
    assert script.main(["--real", str(real), "--synth", str(tmp_path), "--out", str(out)]) == 2
    assert "not a KITTI object folder" in capsys.readouterr().err
