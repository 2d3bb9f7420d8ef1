"""The surface stage of ``geo3d demo``: batch reconstruction with metrics and the real room (when present)."""

from __future__ import annotations

import json

import geo3d.cli.demo as cli_demo


def test_demo_stage_writes_its_report_section(tmp_path):
    report = cli_demo.Report(tmp_path)
    cli_demo.stage_surface(tmp_path, report)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["surface"]
    assert metrics["scans"] >= 2 and metrics["views_per_scan"] == 8
    for method in ("tsdf", "poisson"):
        assert 0 < metrics[f"{method}_chamfer_x_diag"] < 0.05 and 0 < metrics[f"{method}_fscore"] <= 1
    text = (tmp_path / "report.md").read_text()
    assert "## surface" in text and "| mean |" in text
    assert (tmp_path / "surface_blob_100.png").stat().st_size > 1000
    assert (tmp_path / "surface" / "tsdf" / "summary.csv").is_file()
