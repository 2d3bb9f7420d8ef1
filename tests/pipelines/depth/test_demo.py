"""The depth stage of ``geo3d demo`` on zoo weights: its numbers are ``scripts/bench_depth.py``'s on the same real
frames and weights (the card's benchmark), each beside the card's, and its pictures."""

from __future__ import annotations

import pytest
from PIL import Image

from pipelines.depth.demo import run_stage
from tests.demo_zoo import tiny_depth, write_zoo
from tests.scripts import load_script


def _bench_depth():
    return load_script("bench_depth")


def test_depth_stage_gives_the_benchmarks_numbers_beside_the_card(shared_data, tmp_path, monkeypatch):
    zoo_dir = write_zoo(tmp_path / "zoo", {"omni_dc": tiny_depth()},
                        {"omni_dc": {"KITTI frame RMSE mm, IP-Basic": (2196.0, 1.0),  # the README's IP-Basic number
                                     "KITTI frame MAE mm, model": (1.0, 0.5)}})  # a model this tiny is far off
    monkeypatch.setenv("GEO3D_ZOO_DIR", str(zoo_dir))
    result = run_stage(tmp_path / "report" / "depth")
    assert result.title == "depth"

    bench = _bench_depth()
    args = type("Args", (), {"shared": shared_data / "depth", "ckpt": zoo_dir / "weights" / "omni_dc.ckpt"})()
    means = bench.mean_metrics(bench.real_rows(args, ["model", "ip_basic", "linear"]))
    names = {"kitti": "KITTI frame", "100 points (its own)": "indoor 100 points", "random:500": "indoor random 500",
             "lidar:16": "indoor LiDAR 16"}
    methods = {"model": "model", "ip_basic": "IP-Basic", "linear": "linear"}
    checks = {c.metric: c for c in result.card}
    assert len(checks) == 24 and len(means) >= 24
    for key, value in means.items():
        data, pattern, method, metric = key.split("/")
        if metric not in ("rmse_mm", "mae_mm"):
            continue
        card_name = f"{names['kitti' if data == 'kitti' else pattern]} {metric[:-3].upper()} mm, {methods[method]}"
        assert checks[card_name].demo == pytest.approx(value, rel=1e-6), card_name
        assert result.metrics[f"{data}/{pattern}/{method}/{metric[:-3]}_m"] == pytest.approx(value / 1000, abs=1e-4)
    assert checks["KITTI frame RMSE mm, IP-Basic"].agrees is True
    assert checks["KITTI frame MAE mm, model"].agrees is False
    assert checks["indoor LiDAR 16 MAE mm, linear"].card is None
    assert "| RMSE (m) | model | IP-Basic | linear |" in result.text
    assert "| kitti: kitti lidar (its own) | " in result.text and "| MAE (m) |" in result.text

    assert [p.name for p in result.images] == ["depth_kitti.png", "depth_indoor.png"]
    for png in result.images:
        assert png.parent == tmp_path / "report"
        with Image.open(png) as im:
            assert im.width >= 320 and im.height > im.width // 4


def test_depth_stage_without_the_shared_frames_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("GEO3D_SHARED_DATA", str(tmp_path / "nothing"))
    result = run_stage(tmp_path / "report" / "depth")
    assert "skipped" in result.text and str(tmp_path / "nothing" / "depth") in result.text
    assert result.card == () and result.images == []
