"""The splatting stage of ``geo3d demo`` with a tiny budget: data, training, evaluation, turntable, viewer PNG."""

from __future__ import annotations

import json

import geo3d.cli.demo as cli_demo
import pipelines.splatting.demo as splatting_demo


def test_demo_stage_writes_its_report_section(tmp_path, monkeypatch):
    fast = splatting_demo.run_splatting_demo
    monkeypatch.setattr(splatting_demo, "run_splatting_demo",
                        lambda out: fast(out, max_seconds=6.0, res=32))
    report = cli_demo.Report(tmp_path)
    cli_demo.stage_splatting(tmp_path, report)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["splatting"]
    assert metrics["train_views"] == 4 and metrics["test_views"] == 10
    assert 0 < metrics["steps"] and 5.0 < metrics["test_psnr_db"] < 60.0
    assert (tmp_path / metrics["turntable_gif"]).is_file()
    text = (tmp_path / "report.md").read_text()
    assert "## splatting" in text and "splatting_gaussians.png" in text
    assert (tmp_path / "splatting_gaussians.png").stat().st_size > 1000
    assert (tmp_path / "splatting" / "model" / "gaussians.ply").is_file()
