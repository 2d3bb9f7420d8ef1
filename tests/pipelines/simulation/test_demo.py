"""The simulation stage of ``geo3d demo`` on a small benchmark: its trajectories are the data set's test split, and
its numbers are the ones ``geo3d test`` gives for the same weights (what the cards carry)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from geo3d.report import Report
from geo3d.synth.particles import generate_particles
from pipelines.simulation.data import SimulationDataModule
from pipelines.simulation.demo import CARD_NAMES, METRICS, benchmark_test_trajectories, run_stage
from tests.demo_zoo import tiny_giorom, write_zoo

SMALL = {"dim": 2, "trajectories": 3, "particles": 64, "steps": 30, "seed": 5}
"""A benchmark set small enough for a test: splits (1, 1, 1), 24 rollout steps after the 6 history frames."""


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory) -> dict:
    """``geo3d synth particles`` with :data:`SMALL`, elastic and sand: the folders of the cards' kind of data."""
    root = tmp_path_factory.mktemp("particles")
    return {material: generate_particles(root / material, material=material, progress=False, **SMALL)
            for material in ("elastic", "sand")}


def test_benchmark_test_trajectories_are_the_data_sets_test_split(small_sets):
    data = SimulationDataModule(str(small_sets["sand"]), batch_size=1)
    data.setup("test")
    (written,) = [data.test_set[i] for i in range(len(data.test_set))]
    (again,) = benchmark_test_trajectories("sand", **SMALL)
    assert torch.equal(again["positions"], written["positions"])
    assert torch.equal(again["particle_types"], written["particle_types"].long())
    assert torch.equal(again["bounds"], written["bounds"].float()) and again["dt"] == pytest.approx(written["dt"])


def _geo3d_test(model, folder) -> dict[str, float]:
    """``geo3d test``'s metrics of ``model`` on ``folder``'s test split (what the cards' evaluation runs)."""
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.test(model, datamodule=SimulationDataModule(str(folder), batch_size=1), verbose=False)
    return metrics


def test_stage_numbers_are_geo3d_tests_and_sit_beside_the_cards(small_sets, tmp_path, monkeypatch):
    models, expected, cards = {}, {}, {}
    for name, material in (("giorom_elastic", "elastic"), ("giorom_sand", "sand")):
        data = SimulationDataModule(str(small_sets[material]), batch_size=1)
        models[name] = tiny_giorom(data.statistics, data.radius)
        expected[name] = _geo3d_test(models[name], small_sets[material])
        # the card: geo3d test's numbers (logged as float32: 1e-6 relative), one deliberately off by far more
        cards[name] = {f"{CARD_NAMES[k]}, model": (expected[name][f"test/{k}"], 1e-6 * abs(expected[name][f"test/{k}"]))
                       for k in METRICS}
    cards["giorom_sand"]["test 20-step MSE, model"] = (2 * expected["giorom_sand"]["test/mse_20"], 1e-12)
    monkeypatch.setenv("GEO3D_ZOO_DIR", str(write_zoo(tmp_path / "zoo", models, cards)))

    result = run_stage(tmp_path / "report" / "simulation", benchmark=SMALL)
    metrics = result.metrics
    for name, material in (("giorom_elastic", "elastic"), ("giorom_sand", "sand")):
        assert metrics[f"{material}_rollout_steps"] == SMALL["steps"] - 6
        for key in METRICS:
            assert math.isfinite(metrics[f"{material}_giorom_{key}"])
            assert metrics[f"{material}_giorom_{key}"] == pytest.approx(expected[name][f"test/{key}"], rel=1e-5)
            assert metrics[f"{material}_constant_velocity_{key}"] == pytest.approx(
                expected[name][f"test/baseline_{key}"], rel=1e-5)
    checks = {(c.model, c.metric): c for c in result.card}
    assert len(checks) == 2 * 2 * len(METRICS)  # model and baseline, both entries
    assert checks[("giorom_sand", "test 20-step MSE, model")].agrees is False
    judged = [c for c in result.card if c.card is not None]
    assert len(judged) == 2 * len(METRICS) and sum(c.agrees for c in judged) == len(judged) - 1
    assert all(c.card is None and c.agrees is None for c in result.card if "constant velocity" in c.metric)

    (gif,) = result.images
    assert gif == tmp_path / "report" / "simulation_rollout.gif"
    with Image.open(gif) as im:
        assert im.n_frames > 1
    report = Report(tmp_path / "report")
    report.add(result)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| giorom_sand | test 20-step MSE, model |" in text and "| **no** |" in text
