"""The surface stage of ``geo3d demo``: batch reconstruction with metrics and the real room (when present)."""

from __future__ import annotations

import json

from geo3d.report import Report
from pipelines.surface.demo import run_stage


def test_demo_stage_writes_its_report_section(tmp_path):
    result = run_stage(tmp_path / "surface")
    assert result.title == "surface"
    assert all(image.parent == tmp_path and image.stat().st_size > 1000 for image in result.images)
    shown = ["blob_100", "bunny_100"] if result.metrics["scans"] == 3 else ["blob_100", "torus_knot_100"]  # sorted
    assert result.images[:2] == [tmp_path / f"surface_{name}.png" for name in shown]
    if "7scenes_frames" in result.metrics:  # the real frames are in ../shared/data: the room is rendered last
        assert result.images[-1] == tmp_path / "surface_7scenes.png" and len(result.images) == 3
    metrics = result.metrics
    assert metrics["scans"] >= 2 and metrics["views_per_scan"] == 8
    for method in ("tsdf", "poisson"):
        # the stage's means are the means of the per-scene metrics.json (object diagonal 1 m: metres = x diagonal)
        rows = [json.loads(p.read_text()) for p in sorted((tmp_path / "surface" / method).glob("*/metrics.json"))]
        assert len(rows) == metrics["scans"]
        assert metrics[f"{method}_chamfer_x_diag"] == sum(r["chamfer"] for r in rows) / len(rows)
        assert metrics[f"{method}_fscore"] == sum(r["fscore"] for r in rows) / len(rows)
        assert 0 < metrics[f"{method}_chamfer_x_diag"] < 0.05
    Report(tmp_path).add(result)
    text = (tmp_path / "report.md").read_text()
    assert "## surface" in text and "| mean |" in text and "![surface_blob_100](surface_blob_100.png)" in text
    assert json.loads((tmp_path / "metrics.json").read_text())["surface"] == json.loads(json.dumps(metrics))
    assert (tmp_path / "surface" / "tsdf" / "summary.csv").is_file()
