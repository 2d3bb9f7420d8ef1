"""The surface stage of ``geo3d demo`` on zoo weights: its per-scan numbers are ``scripts/bench_surface.py``'s on the
same scan and weights (the card's benchmark), the means sit beside the card's, and the real room is fused."""

from __future__ import annotations

import json
import shutil

import pytest

from geo3d.report import Report
from pipelines.surface.demo import run_stage
from tests.demo_zoo import tiny_refiner, write_zoo
from tests.scripts import load_script

SMALL_SCAN = {"frames": 3, "width": 80, "height": 60}
POINTS = 3000


def _bench_surface():
    return load_script("bench_surface")


def test_surface_stage_gives_the_benchmarks_numbers_beside_the_card(tmp_path, monkeypatch):
    zoo_dir = write_zoo(tmp_path / "zoo", {"surface_unet": tiny_refiner()},
                        {"surface_unet": {"F-score, raw TSDF": (2.0, 1e-3)}})  # an impossible F-score: disagrees
    monkeypatch.setenv("GEO3D_ZOO_DIR", str(zoo_dir))
    report = tmp_path / "report"
    result = run_stage(report / "surface", held_out=(("blob", 100),), scan=SMALL_SCAN, points=POINTS)
    metrics = result.metrics
    assert result.title == "surface" and metrics["scans"] == 1 and metrics["views_per_scan"] == 3

    # the benchmark script on the scan the stage generated, with the same weights
    data = tmp_path / "bench"
    shutil.copytree(report / "surface" / "scans" / "blob_100", data / "val" / "blob_100")
    assert _bench_surface().main(["--data", str(data), "--frames", "3", "--checkpoint",
                                  str(zoo_dir / "weights" / "surface_unet.ckpt"),
                                  "--points", str(POINTS), "--out", str(tmp_path / "bench_out")]) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "bench_out" / "bench_surface.json").read_text())}
    for method in ("tsdf", "refined"):
        assert metrics[f"{method}_chamfer_x_diag"] == pytest.approx(rows[method]["chamfer_rel"], rel=1e-6)
        assert metrics[f"{method}_fscore"] == pytest.approx(rows[method]["fscore"], rel=1e-6)
    # the fusion of the object (3 views of 80 x 60 leave parts unseen); the refined mesh adds the band's borders
    assert 0 < metrics["tsdf_chamfer_x_diag"] < 0.1 and 0.2 < metrics["tsdf_fscore"] <= 1
    assert metrics["refined_chamfer_x_diag"] != metrics["tsdf_chamfer_x_diag"]
    checks = {c.metric: c for c in result.card}
    assert set(checks) == {"Chamfer (x diagonal), raw TSDF", "F-score, raw TSDF", "Chamfer (x diagonal), refined",
                           "F-score, refined"}
    assert checks["F-score, raw TSDF"].agrees is False and checks["F-score, refined"].card is None

    assert result.images[:2] == [report / "surface_raw_tsdf.png", report / "surface_refined.png"]
    assert all(image.parent == report and image.stat().st_size > 1000 for image in result.images)
    if "7scenes_frames" in metrics:  # the real frames are in ../shared/data: the room is rendered last
        assert result.images[-1] == report / "surface_7scenes.png" and len(result.images) == 3
        assert metrics["7scenes_frames"] == 25 and metrics["7scenes_triangles"] > 100_000
    Report(report).add(result)
    text = (report / "report.md").read_text()
    assert "## surface" in text and "| **mean** |" in text and "![surface_refined](surface_refined.png)" in text
    assert json.loads((report / "metrics.json").read_text())["surface"] == json.loads(json.dumps(metrics))


def test_surface_stage_without_the_bunny_compares_nothing_with_the_card(tmp_path, monkeypatch):
    monkeypatch.setenv("GEO3D_ZOO_DIR", str(write_zoo(tmp_path / "zoo", {"surface_unet": tiny_refiner()})))
    monkeypatch.setenv("GEO3D_SHARED_DATA", str(tmp_path / "nothing"))
    result = run_stage(tmp_path / "report" / "surface", held_out=(("bunny", 100), ("blob", 100)), scan=SMALL_SCAN,
                       points=POINTS)
    assert result.metrics["scans"] == 1 and result.card == ()
    assert "bunny.ply" in result.text and result.metrics["7scenes"].startswith("skipped")
